"""The optional ``xqrs_fast`` detector must give exactly the reference xqrs R peaks."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.qrs.detect import find_local_peaks_fast, run_detector
from datasets.qrs.tokenizer import detect_r_peaks, tokenize_record

wfdb_peaks = pytest.importorskip("wfdb.processing.peaks")


def _call(fn, sig, radius):
    try:
        return fn(sig, radius)
    except Exception as exc:  # noqa: BLE001 - compare the failure mode too
        return type(exc).__name__


@pytest.mark.parametrize("kind", ["ties", "noise", "plateaus"])
def test_find_local_peaks_matches_wfdb(kind):
    rng = np.random.default_rng({"ties": 0, "noise": 1, "plateaus": 2}[kind])
    for _ in range(400):
        n, r = int(rng.integers(1, 300)), int(rng.integers(1, 30))
        if kind == "ties":
            sig = rng.integers(0, 4, n).astype(np.float64)
        elif kind == "noise":
            sig = rng.normal(size=n)
        else:
            sig = np.repeat(rng.integers(0, 5, n // 5 + 1), 5)[:n].astype(np.float64)
        want, got = _call(wfdb_peaks.find_local_peaks, sig, r), _call(find_local_peaks_fast, sig, r)
        if isinstance(want, str) or isinstance(got, str):
            assert want == got, (n, r)
        else:
            assert want.dtype == got.dtype and np.array_equal(want, got), (n, r, sig)


@pytest.fixture(scope="module")
def ref(ref_fixtures):
    with np.load(ref_fixtures / "tokenizer_ptbxl.npz") as z:
        return {k: z[k] for k in ("input", "edge_input", "all12_data", "all12_in_chans", "all12_in_times")}


def test_fast_detector_identical_on_fixtures(ref):
    from wfdb.processing import qrs as wfdb_qrs

    original = wfdb_qrs.find_local_peaks
    for x in list(ref["input"]) + list(ref["edge_input"]):
        for lead in (0, 6):
            assert np.array_equal(run_detector(x[lead], 100, "xqrs"), run_detector(x[lead], 100, "xqrs_fast"))
    assert wfdb_qrs.find_local_peaks is original  # the swap is undone after each call
    for i in range(0, 64, 9):
        data, chans, times, _ = tokenize_record(ref["input"][i], detector="xqrs_fast")
        assert data.tobytes() == ref["all12_data"][i].tobytes()
        assert np.array_equal(chans, ref["all12_in_chans"][i]) and np.array_equal(
            times, ref["all12_in_times"][i]
        )


def test_fast_detector_nan_and_errors(ref):
    x = ref["input"][0, 0].copy()
    x[300] = np.nan  # non-finite leads use the reference code path: no peak, as the original
    assert detect_r_peaks(x, detector="xqrs_fast")[0].size == 0
    qrs, err = detect_r_peaks(ref["input"][0, 0, :10], detector="xqrs_fast")
    assert qrs.size == 0 and "padlen" in err
    with pytest.raises(ValueError, match="detector"):
        detect_r_peaks(ref["input"][0, 0], detector="pan_tompkins")
