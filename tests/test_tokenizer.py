"""QRS tokenizer (Sec. 3.1): exact parity with the original's outputs and the robustness rules."""

from __future__ import annotations

import numpy as np
import pytest

import datasets.qrs.tokenizer as qt
from datasets.qrs.tokenizer import cut_words, detect_r_peaks, tokenize_record

LEAD_SETS = ["all12", "lead0", "leads_0_1_7", "leads_6to11"]


@pytest.fixture(scope="module")
def ref(ref_fixtures):
    with np.load(ref_fixtures / "tokenizer_ptbxl.npz") as z:
        return {k: z[k] for k in z.files}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality (NaN == NaN, +0.0 != -0.0) and same dtype."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("lead_set", LEAD_SETS)
def test_fixture_parity_all_records(ref, lead_set):
    used = ref[f"{lead_set}_used_channels"]
    for i in range(len(ref["input"])):
        data, chans, times, info = tokenize_record(ref["input"][i], used)
        nb = ref[f"{lead_set}_num_beats"][i]
        assert np.array_equal(info.qrs_inds, ref[f"{lead_set}_qrs_inds"][i, :nb]), (lead_set, i)
        assert _same(data, ref[f"{lead_set}_data"][i]), (lead_set, i)
        assert _same(chans, ref[f"{lead_set}_in_chans"][i]), (lead_set, i)
        assert _same(times, ref[f"{lead_set}_in_times"][i]), (lead_set, i)
        assert info.num_words == nb * len(used) and info.truncated == (nb * len(used) > 256)


@pytest.mark.parametrize("case", range(13))
def test_segmentation_corner_cases(ref, case):
    """Hand-made R peaks pin the placement arithmetic (clipping, re-centring, R not at 48)."""
    x = ref["input"][int(ref["seg_record_index"])]
    q = ref["seg_qrs_inds"][case, : ref["seg_num_beats"][case]]
    words = cut_words(x, q)[:256]
    expect = ref["seg_data"][case]
    assert _same(words, expect[: len(words)])
    assert not expect[len(words) :].any()
    # in_chans / in_times for the same peaks, via the full function with the detector patched out.
    orig = qt.detect_r_peaks
    try:
        qt.detect_r_peaks = lambda lead, fs=100, detector="xqrs": (q.astype(np.int64), None)
        data, chans, times, info = tokenize_record(x)
    finally:
        qt.detect_r_peaks = orig
    assert (
        _same(data, expect)
        and _same(chans, ref["seg_in_chans"][case])
        and _same(times, ref["seg_in_times"][case])
    )


def test_r_peak_not_at_48_corner_case(ref):
    """[200, 300, 310]: beat 1 spans 250..305 and its R peak lands at index 50, as in the original."""
    x = ref["input"][0][:1]
    w = cut_words(x, np.array([200, 300, 310]))
    assert w[1, 50] == x[0, 300] and w[1, 55:].sum() == 0 and w[1, 0] == x[0, 250]


@pytest.mark.parametrize("k", range(4))
def test_edge_cases_official_outcome(ref, k):
    """Default mode keeps the original's outcome on every edge case (none crashed it)."""
    data, chans, times, info = tokenize_record(ref["edge_input"][k])
    nb = ref["edge_num_beats"][k]
    assert np.array_equal(info.qrs_inds, ref["edge_qrs_inds"][k, :nb])
    assert _same(data, ref["edge_data"][k]) and _same(chans, ref["edge_in_chans"][k])
    assert _same(times, ref["edge_in_times"][k])
    name = str(ref["edge_names"][k])
    expected_reason = {
        "flat_zero": qt.REASON_FLAT,
        "nan_block_400_450_all_leads_record0": qt.REASON_NONFINITE,
    }.get(name)
    assert info.reason == expected_reason
    if name == "gaussian_noise_seed5":
        assert info.truncated and info.num_words == 300 and (chans > 0).sum() == 256
    if name == "nan_block_400_450_lead5_record0":
        # Official behaviour kept: the aVF words overlapping the NaN block contain NaN.
        assert info.nonfinite_words > 0 and np.isnan(data[chans == 6]).any()


def test_interpolate_policy_removes_nan(ref):
    """nan_policy='interpolate' (not the default) gives finite words and finds beats under a NaN block."""
    rec0 = ref["input"][0]
    x = ref["edge_input"][3]  # NaN only in aVF
    data, chans, _, info = tokenize_record(x, nan_policy="interpolate")
    assert np.isfinite(data).all() and info.nonfinite_input and info.nonfinite_words == 0
    ref_data, *_ = tokenize_record(rec0)
    clean = chans != 6
    assert _same(data[clean], ref_data[clean])  # leads without NaN are untouched
    x_all = ref["edge_input"][1]  # NaN in every lead: the original found no beat
    data, _, _, info = tokenize_record(x_all, nan_policy="interpolate")
    assert info.reason is None and info.num_beats > 0 and np.isfinite(data).all()


def test_robustness_rules_never_raise(ref):
    rec = ref["input"][0]
    # constant non-zero detection lead -> flat, empty sentence
    flat = rec.copy()
    flat[0] = 3.0
    data, chans, times, info = tokenize_record(flat)
    assert info.reason == qt.REASON_FLAT and not data.any() and not chans.any() and not times.any()
    assert info.flat_leads == 1
    # a single NaN in the detection lead stops xqrs (official): counted as non-finite
    one_nan = rec.copy()
    one_nan[0, 500] = np.nan
    assert tokenize_record(one_nan)[3].reason == qt.REASON_NONFINITE
    # inf behaves the same
    one_inf = rec.copy()
    one_inf[0, 500] = np.inf
    assert tokenize_record(one_inf)[3].reason == qt.REASON_NONFINITE
    # too short for xqrs's filters: the original crashed here (wfdb raises); ours catches and reports it
    data, _, _, info = tokenize_record(rec[:, :10])
    assert info.reason == qt.REASON_DETECTOR_ERROR and "padlen" in info.error and not data.any()
    # short but filterable: no beat found
    assert tokenize_record(rec[:, :50])[3].reason == qt.REASON_NO_BEAT
    # extreme amplitudes: same R peaks, words are the scaled samples
    big = (rec * np.float32(1e30)).astype(np.float32)
    d_big, c_big, _, i_big = tokenize_record(big)
    d_ref, c_ref, _, i_ref = tokenize_record(rec)
    assert np.array_equal(i_big.qrs_inds, i_ref.qrs_inds) and np.array_equal(c_big, c_ref)
    assert np.array_equal(d_big, (d_ref * np.float32(1e30)).astype(np.float32))


def test_single_beat_record(ref, monkeypatch):
    monkeypatch.setattr(qt, "detect_r_peaks", lambda lead, fs=100, detector="xqrs": (np.array([500]), None))
    data, chans, times, info = tokenize_record(ref["input"][0], [0, 1, 7])
    assert info.num_beats == 1 and info.num_words == 3 and info.reason is None
    assert chans.tolist()[:4] == [1, 2, 8, 0] and times.tolist()[:4] == [6, 6, 6, 0]
    assert data[0, 48] == ref["input"][0][0, 500]


def test_ranges_and_tail_padding(ref):
    for lead_set in LEAD_SETS:
        used = ref[f"{lead_set}_used_channels"]
        for i in range(0, 64, 7):
            data, chans, times, info = tokenize_record(ref["input"][i], used)
            n = min(info.num_words, 256)
            assert set(np.unique(chans[:n])) <= set(used + 1) and (chans[n:] == 0).all()
            assert times[:n].min() >= 1 and times[:n].max() <= 10 and (times[n:] == 0).all()
            assert not data[n:].any()
            # lead-major order: lead ids never decrease along the sentence
            assert (np.diff(chans[:n]) >= 0).all()


def test_fs_and_bad_arguments(ref):
    with pytest.raises(ValueError, match="used_channels"):
        tokenize_record(ref["input"][0], [12])
    with pytest.raises(ValueError, match="nan_policy"):
        tokenize_record(ref["input"][0], nan_policy="drop")
    with pytest.raises(ValueError, match="n_leads, T"):
        tokenize_record(ref["input"][0][0])


def test_detector_is_float_width_invariant(ref):
    """The fixture README reports float64 input gives the same peaks; so must ours."""
    x = ref["input"][5, 0]
    assert np.array_equal(detect_r_peaks(x)[0], detect_r_peaks(x.astype(np.float64))[0])


def test_real_ptbxl_records_give_fixture_r_peaks(ref, shared_data):
    """wfdb 4.3.1 here vs 4.1.2 in the fixtures: identical R peaks on the real records."""
    wfdb = pytest.importorskip("wfdb")
    root = shared_data / "ptbxl"
    for i, rid in enumerate(ref["record_ids"]):
        sig, _ = wfdb.rdsamp(str(root / rid))
        x = sig.T.astype(np.float32)
        assert np.array_equal(x, ref["input"][i]), rid
        for lead_set, lead in (("all12", 0), ("leads_6to11", 6)):
            nb = ref[f"{lead_set}_num_beats"][i]
            assert np.array_equal(detect_r_peaks(x[lead])[0], ref[f"{lead_set}_qrs_inds"][i, :nb]), rid
