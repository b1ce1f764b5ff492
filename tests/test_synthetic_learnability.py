"""Synthetic cohort labels are learnable from the signal, and the class effects are the designed ones."""

from __future__ import annotations

import neurokit2 as nk
import numpy as np
import pytest
from scipy.signal import butter, filtfilt
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from datasets.synthetic.cohort import simulate_cohort
from datasets.synthetic.signal import RHYTHMS, SUPERCLASSES

FS = 100
N_TRAIN, N_TEST = 200, 100


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(N_TRAIN + N_TEST, seed=11, fs=FS)


def _clean(x: np.ndarray) -> np.ndarray:
    b, a = butter(3, [0.67, 40.0], btype="band", fs=FS)
    return filtfilt(b, a, x, axis=-1)


def _r_peaks(lead: np.ndarray) -> np.ndarray:
    _, info = nk.ecg_peaks(lead, sampling_rate=FS)
    return np.asarray(info["ECG_R_Peaks"], dtype=int)


def _rhythm_features(x: np.ndarray) -> list[float]:
    """Heart rate and RR irregularity from neurokit2's R peaks on lead II."""
    rr = np.diff(_r_peaks(x[1])) / FS
    return [60.0 / np.median(rr), np.std(np.diff(rr)) / np.mean(rr)]


def _median_beat(x: np.ndarray) -> np.ndarray:
    """(12 * 70,) median beat, -0.25 s .. +0.45 s around the R peaks found on lead II."""
    peaks = _r_peaks(x[1])
    peaks = peaks[(peaks >= 25) & (peaks < x.shape[1] - 45)]
    beats = np.stack([x[:, p - 25 : p + 45] for p in peaks])
    return np.median(beats, axis=0).ravel()


def test_rhythm_is_learnable_from_heart_rate_and_rr_irregularity(cohort):
    feats = np.array([_rhythm_features(x) for x in _clean(cohort["signals"])])
    y = cohort["rhythm"]
    scaler = StandardScaler().fit(feats[:N_TRAIN])
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(feats[:N_TRAIN]), y[:N_TRAIN])
    acc = (clf.predict(scaler.transform(feats[N_TRAIN:])) == y[N_TRAIN:]).mean()
    majority = np.bincount(y[N_TRAIN:], minlength=len(RHYTHMS)).max() / N_TEST
    assert acc > 0.85 and acc > majority + 0.25, f"rhythm accuracy {acc:.2f} vs majority {majority:.2f}"
    # the designed rate bands: SBRAD < 60 bpm < SR < 100 bpm < STACH
    hr = feats[:, 0]
    assert np.median(hr[y == RHYTHMS.index("SBRAD")]) < 60 < np.median(hr[y == RHYTHMS.index("SR")]) < 100
    assert np.median(hr[y == RHYTHMS.index("STACH")]) > 100


def test_superclasses_are_learnable_by_a_linear_probe_on_median_beats(cohort):
    beats = np.array([_median_beat(x) for x in _clean(cohort["signals"])])
    y = cohort["superclass"]
    scaler = StandardScaler().fit(beats[:N_TRAIN])
    xtr, xte = scaler.transform(beats[:N_TRAIN]), scaler.transform(beats[N_TRAIN:])
    aucs = {}
    for k, name in enumerate(SUPERCLASSES):
        clf = LogisticRegression(C=0.05, max_iter=2000).fit(xtr, y[:N_TRAIN, k])
        aucs[name] = roc_auc_score(y[N_TRAIN:, k], clf.decision_function(xte))
    assert np.mean(list(aucs.values())) > 0.85, aucs
    assert min(aucs.values()) > 0.7, aucs


def test_class_effects_follow_the_design(cohort):
    """LVH raises Sokolow-Lyon voltage; bundle-branch block widens the QRS (a hand-feature check)."""
    x = cohort["signals"]
    y = cohort["superclass"]
    sokolow = -x[:, 6].min(axis=1) + x[:, 10].max(axis=1)  # S in V1 + R in V5 (mV)
    hyp, norm = y[:, SUPERCLASSES.index("HYP")] == 1, y[:, SUPERCLASSES.index("NORM")] == 1
    assert np.median(sokolow[hyp]) > 3.0 > np.median(sokolow[norm])
    # QRS width proxy: samples where the 12-lead spatial velocity exceeds a fraction of its peak.
    vel = np.linalg.norm(np.diff(_clean(x), axis=-1), axis=1)
    width = []
    for v in vel:
        peaks = _r_peaks(v)
        width.append(np.median([(v[max(p - 10, 0) : p + 10] > 0.3 * v[p]).sum() for p in peaks]))
    width = np.asarray(width)
    cd = y[:, SUPERCLASSES.index("CD")] == 1
    assert np.median(width[cd]) > np.median(width[norm]) + 1
