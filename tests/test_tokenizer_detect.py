"""The default ``xqrs_fast`` detector must give exactly wfdb's ``xqrs_detect`` R peaks and sentences.

Random signals (noise, spikes, ties, flat, NaN/inf blocks, extreme amplitudes, several rates, both
float widths), a fast subset of every shared real source (the benchmark checks all of them), the
exact path of near-threshold learning decisions, the no-numba fallback and the loud self-check.
"""

from __future__ import annotations

import numpy as np
import pytest

from datasets.qrs import detect as D
from datasets.qrs import xqrs_kernels as K
from datasets.qrs.detect import find_local_peaks_fast, run_detector
from datasets.qrs.tokenizer import detect_r_peaks, detect_r_peaks_batch, tokenize_record, tokenize_records

wfdb_peaks = pytest.importorskip("wfdb.processing.peaks")


def _call(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - compare the failure mode too
        return f"{type(exc).__name__}: {exc}"


def _same(want, got) -> bool:
    if isinstance(want, str) or isinstance(got, str):
        return want == got
    return want.dtype == got.dtype and np.array_equal(want, got)


def _random_signal(rng, kind: str, n: int) -> np.ndarray:
    t = np.arange(n)
    if kind == "noise":
        return rng.normal(size=n)
    if kind == "spikes":  # beat-like spikes at a random, drifting rate plus noise
        x = 0.05 * rng.normal(size=n)
        pos = np.cumsum(rng.integers(n // 30 + 2, n // 8 + 3, size=40))
        x[pos[pos < n]] += rng.uniform(0.5, 2.0, size=(pos < n).sum())
        return x
    if kind == "ties":  # integer levels: many equal local maxima
        return rng.integers(0, 4, n).astype(np.float64)
    if kind == "sine":
        return np.sin(2 * np.pi * t / rng.uniform(20, 200)) ** 21 + 0.02 * rng.normal(size=n)
    if kind == "flat":
        return np.full(n, rng.normal())
    if kind == "steps":
        return np.repeat(rng.normal(size=n // 25 + 1), 25)[:n]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["ties", "noise", "plateaus"])
def test_local_peaks_match_wfdb(kind):
    """Both our peak searches (vectorised fallback, compiled kernel) equal wfdb's find_local_peaks."""
    rng = np.random.default_rng({"ties": 0, "noise": 1, "plateaus": 2}[kind])
    for _ in range(300):
        n, r = int(rng.integers(1, 300)), int(rng.integers(1, 30))
        if kind == "ties":
            sig = rng.integers(0, 4, n).astype(np.float64)
        elif kind == "noise":
            sig = rng.normal(size=n)
        else:
            sig = np.repeat(rng.integers(0, 5, n // 5 + 1), 5)[:n].astype(np.float64)
        want = _call(wfdb_peaks.find_local_peaks, sig, r)
        assert _same(want, _call(find_local_peaks_fast, sig, r)), (n, r)
        if n > 2 * r + 1:  # the kernel's domain (detect.py guarantees it)
            peaks, flat = K.local_peaks(sig, r)
            assert flat == (want.size == 0 and sig.min() == sig.max())
            assert np.array_equal(peaks, want), (n, r)


@pytest.mark.parametrize("fs", [100, 250, 360, 500])
def test_random_signals_identical(fs):
    """Batched xqrs_fast == wfdb per lead (values, dtype, error text) on random signals of all kinds."""
    rng = np.random.default_rng(fs)
    n = 10 * fs
    kinds = ["noise", "spikes", "ties", "sine", "flat", "steps"]
    rows = [_random_signal(rng, k, n) * rng.choice([1e-3, 1.0, 1e3]) for k in kinds for _ in range(4)]
    rows.append(np.zeros(n))
    nan_block = _random_signal(rng, "spikes", n)
    nan_block[n // 3 : n // 3 + 7] = np.nan
    inf_one = _random_signal(rng, "sine", n)
    inf_one[5] = np.inf
    huge = _random_signal(rng, "spikes", n) * 1e300  # overflows in the filters: must fall back
    rows += [nan_block, inf_one, huge]
    for dtype in (np.float64, np.float32):
        with np.errstate(over="ignore"):
            X = np.stack(rows).astype(dtype)  # float32: the 1e300 row becomes inf (a NaN/inf case)
        with np.errstate(all="ignore"):
            got = detect_r_peaks_batch(X, fs, "xqrs_fast")
        for i, (x, g) in enumerate(zip(X, got)):
            want = detect_r_peaks(x, fs, "xqrs")
            assert np.array_equal(want[0], g[0]) and want[1] == g[1], (fs, dtype, i)
            assert g.fallback == (not np.isfinite(x).all() or i == len(rows) - 1), (fs, dtype, i)
        for x in X[:: len(kinds)]:  # the raw detector output too (dtype of an empty result included)
            assert _same(_call(run_detector, x, fs, "xqrs"), _call(run_detector, x, fs, "xqrs_fast"))


def test_short_leads_report_wfdb_errors():
    """Leads too short for wfdb's filters go to wfdb: the same error text, counted as fallback."""
    rng = np.random.default_rng(3)
    for n in (1, 10, 15, 16, 30, 31, 40):
        X = rng.normal(size=(3, n))
        for x, g in zip(X, detect_r_peaks_batch(X, 100)):
            want = detect_r_peaks(x, 100, "xqrs")
            assert want[1] == g[1] and np.array_equal(want[0], g[0]), n
            assert g.fallback == (n < D.xqrs_constants(100).min_len)
    assert "padlen" in detect_r_peaks(np.ones(10) + np.arange(10), 100)[1]
    for dtype in (np.float16, ">f8", np.int16):  # not native float32/64: wfdb decides, same outcome
        X = (rng.normal(size=(2, 1000)) * 100).astype(dtype)
        for x, g in zip(X, detect_r_peaks_batch(X, 100)):
            want = detect_r_peaks(x, 100, "xqrs")
            assert g.fallback and want[1] == g[1] and np.array_equal(want[0], g[0]), dtype
    with pytest.raises(ValueError, match="detector"):
        detect_r_peaks(np.ones(100), detector="pan_tompkins")


def test_compiled_kernels_equal_their_python_source():
    """numba (no fast-math) runs the kernels with the same float64 results as Python does."""
    if not K.HAVE_NUMBA:
        pytest.skip("numba not installed: the kernels are plain Python already")
    rng = np.random.default_rng(7)
    c = D.xqrs_constants(100)
    for _ in range(30):
        sig_i = rng.random(1000) ** 4
        peaks, _ = K.local_peaks(sig_i, 5)
        assert np.array_equal(peaks, K.local_peaks.py_func(sig_i, 5)[0])
        args = (sig_i, peaks, *rng.random(2) * 0.1, 80.0, 0.0, 0.05, 0.0, c.ref_period, c.rr_max)
        assert np.array_equal(K.run_detection(*args), K.run_detection.py_func(*args))


def test_near_threshold_learning_decisions_use_wfdb_arithmetic(ref_fixtures, monkeypatch):
    """Force every learning decision onto the exact path (normalize + np.correlate): same peaks."""
    with np.load(ref_fixtures / "tokenizer_ptbxl.npz") as z:
        X = z["input"][:12, 0]
    calls = []
    exact = D._exact_xcorr_above
    monkeypatch.setattr(K, "XCORR_MARGIN", 10.0)  # read by the Python version of the kernel
    monkeypatch.setattr(K, "learn_beats", getattr(K.learn_beats, "py_func", K.learn_beats))
    monkeypatch.setattr(D, "_exact_xcorr_above", lambda *a: calls.append(1) or exact(*a))
    got = D._fast_batch(X, 100)
    assert len(calls) > 8 * len(X) // 2
    for x, g in zip(X, got):
        assert _same(run_detector(x, 100, "xqrs"), g)


def test_without_numba_every_lead_takes_the_reference_path(ref_fixtures, monkeypatch):
    with np.load(ref_fixtures / "tokenizer_ptbxl.npz") as z:
        X = z["input"][:4, 0]
    monkeypatch.setattr(K, "HAVE_NUMBA", False)
    got = detect_r_peaks_batch(X, 100)
    assert all(g.fallback for g in got)
    for x, g in zip(X, got):
        assert np.array_equal(g[0], detect_r_peaks(x, 100, "xqrs")[0])


def test_self_check_refuses_a_kernel_that_differs(monkeypatch):
    monkeypatch.setattr(D, "_READY", {})
    monkeypatch.setattr(K, "run_detection", lambda *a: np.array([1, 2, 3], dtype=np.int64))
    with pytest.raises(RuntimeError, match="differs from wfdb"):
        D.xqrs_fast_batch(np.random.default_rng(0).normal(size=(2, 1000)), 100)


def test_tokenize_records_equals_tokenize_record(ref_fixtures):
    """The batched path == record by record with wfdb, incl. NaN, flat and interpolated records."""
    with np.load(ref_fixtures / "tokenizer_ptbxl.npz") as z:
        X = np.concatenate([z["input"][:10], z["edge_input"]])
    X = X.copy()
    X[1, 0, 200:230] = np.nan  # NaN in the detection lead
    X[2, 3, 10] = np.inf  # inf in another lead
    X[3, 0] = 0.25  # flat detection lead
    for used in (None, [0], [0, 1, 7], list(range(6, 12))):
        for policy in ("official", "interpolate"):
            got = tokenize_records(X, used, nan_policy=policy)
            for x, g in zip(X, got):
                want = tokenize_record(x, used, nan_policy=policy, detector="xqrs")
                assert want[0].tobytes() == g[0].tobytes()
                assert np.array_equal(want[1], g[1]) and np.array_equal(want[2], g[2])
                assert want[3].reason == g[3].reason and want[3].num_beats == g[3].num_beats
    infos = [g[3] for g in tokenize_records(X)]
    assert [i.detector_fallback for i in infos[:4]] == [False, True, False, False]


def test_fixture_sentences_with_the_default_detector(ref_fixtures):
    with np.load(ref_fixtures / "tokenizer_ptbxl.npz") as z:
        X, data, chans, times = (z[k] for k in ("input", "all12_data", "all12_in_chans", "all12_in_times"))
    for i, (d, c, t, _) in enumerate(tokenize_records(X)):
        assert d.tobytes() == data[i].tobytes(), i
        assert np.array_equal(c, chans[i]) and np.array_equal(t, times[i]), i


def test_real_records_subset_identical(shared_data):
    """Every shared source, every lead subset the scripts use: R peaks and sentences identical.

    A fast subset (every 16th PTB-XL 100 Hz record, all others); benchmarks/tokenizer_bench.py
    runs the same check on every record.
    """
    from datasets.qrs.identity import compare_on_records, shared_real_records

    res = compare_on_records(shared_real_records(shared_data, stride=16))
    assert res["peak_mismatches"] == 0 and res["sentence_mismatches"] == 0, res["examples"]
    assert res["reference_path_leads"] == 0
    for source in ("ptbxl100", "ptbxl500", "cpsc2018", "csn", "mimic_chain(csn)", "wfdb_samples"):
        assert res["by_source"].get(source, 0) > 0, (source, res["by_source"])
    assert res["r_peaks"] > 1000


def test_precomputed_peaks_must_belong_to_the_detection_lead(ref_fixtures):
    with np.load(ref_fixtures / "tokenizer_ptbxl.npz") as z:
        x = z["input"][0]
    det = detect_r_peaks(x[0])
    assert tokenize_record(x, peaks=(det, x[0]))[0].tobytes() == tokenize_record(x)[0].tobytes()
    with pytest.raises(RuntimeError, match="another detection lead"):
        tokenize_record(x, peaks=(det, x[1]))
