"""Synthetic 12-lead ECG signal model for the demo cohort (paper Sec. 4 data, simulated).

The waveform model follows ECGSYN (McSharry et al. 2003, the model behind
``neurokit2.ecg_simulate``): every beat is a sum of Gaussian waves P, Q, R, S, T
with a timing, a width and an amplitude. Instead of one amplitude table per lead
(neurokit2's ``method="multileads"`` ``gamma`` matrix), each wave here carries a
3-D *heart vector* (x = patient's left, y = inferior, z = anterior) and every lead
is the projection of that vector on the lead axis. This keeps the limb leads
consistent (III = II - I, aVR = -(I + II) / 2, ...) and lets one class effect
(e.g. an inferior infarct vector) show up in exactly the leads a cardiologist
expects (Q waves in II, III, aVF with reciprocal changes in aVL).

Why not call ``nk.ecg_simulate(method="multileads")`` directly (neurokit2 0.2.13):
it min-max scales every lead to [-0.4, 1.2] mV (amplitude classes such as LVH and
the lead-to-lead amplitude pattern are erased), its per-lead ``gamma`` table is fixed,
its RR process is smooth (no irregular atrial-fibrillation rhythm) and it takes
~0.5 s per 10 s record at 500 Hz. The closed-form model is ~100x faster.

Public function: :func:`simulate_ecg` -> ``(12, n)`` float64 in mV, lead order
I, II, III, aVR, aVL, aVF, V1-V6 (:data:`LEADS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.preprocess.signal import STANDARD_LEADS

LEADS = STANDARD_LEADS  # the rows of LEAD_AXES: the lead order of every array the pipeline writes
SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
# SCP-ECG diagnostic statements the model can draw, with their PTB-XL superclass.
DIAGNOSTIC_CODES = {
    "NORM": "NORM",
    "IMI": "MI",
    "ASMI": "MI",
    "ISC_": "STTC",
    "NDT": "STTC",
    "CLBBB": "CD",
    "CRBBB": "CD",
    "LVH": "HYP",
}
RHYTHMS = ("SR", "SBRAD", "STACH", "AFIB")

# Heart-rate ranges (bpm) per rhythm; the gaps between them keep the rhythm labels
# unambiguous from the signal (SBRAD < 60 <= SR <= 100 < STACH).
HR_RANGE = {"SR": (62.0, 95.0), "SBRAD": (42.0, 56.0), "STACH": (106.0, 140.0), "AFIB": (70.0, 130.0)}


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _precordial(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([np.cos(a), 0.0, np.sin(a)])


# Lead axes (12, 3). Limb leads form the Einthoven/Goldberger hexaxial system exactly, so
# the derived leads obey Einthoven's law; precordial leads lie in the horizontal plane,
# from V1 (right-anterior) to V6 (left), with a gain for their proximity to the heart.
_LIMB = np.array(
    [
        [1.0, 0.0, 0.0],  # I
        [0.5, np.sqrt(3) / 2, 0.0],  # II
        [-0.5, np.sqrt(3) / 2, 0.0],  # III
        [-0.75, -np.sqrt(3) / 4, 0.0],  # aVR
        [0.75, -np.sqrt(3) / 4, 0.0],  # aVL
        [0.0, np.sqrt(3) / 2, 0.0],  # aVF
    ]
)
_PRECORDIAL_ANGLE = (115.0, 95.0, 75.0, 55.0, 30.0, 5.0)
_PRECORDIAL_GAIN = (1.1, 1.6, 1.7, 1.6, 1.3, 1.0)
LEAD_AXES = np.vstack(
    [_LIMB] + [g * _precordial(a)[None] for a, g in zip(_PRECORDIAL_ANGLE, _PRECORDIAL_GAIN)]
)

# Electrode -> lead matrix (12, 9) for noise: electrodes RA, LA, LL, V1..V6. Noise is drawn per
# electrode so that it, too, respects the lead algebra of a real recorder.
_E = np.zeros((12, 9))
_E[0, [0, 1]] = [-1, 1]  # I = LA - RA
_E[1, [0, 2]] = [-1, 1]  # II = LL - RA
_E[2, [1, 2]] = [-1, 1]  # III = LL - LA
_E[3, [0, 1, 2]] = [1, -0.5, -0.5]  # aVR
_E[4, [0, 1, 2]] = [-0.5, 1, -0.5]  # aVL
_E[5, [0, 1, 2]] = [-0.5, -0.5, 1]  # aVF
for _i in range(6):  # V_i - Wilson central terminal
    _E[6 + _i, [0, 1, 2]] = -1.0 / 3.0
    _E[6 + _i, 3 + _i] = 1.0
ELECTRODE_TO_LEAD = _E


@dataclass(frozen=True)
class Wave:
    """One Gaussian wave of a beat: centre offset from the R peak (s), width (s), heart vector (mV)."""

    offset: float
    sigma: float
    vector: np.ndarray


def _rotation(frontal_deg: float, horizontal_deg: float) -> np.ndarray:
    """Rotation of the heart vector: about z (frontal-plane axis shift), then about y (horizontal)."""
    a, b = np.deg2rad(frontal_deg), np.deg2rad(horizontal_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]])
    return ry @ rz


def beat_waves(codes: tuple[str, ...], rhythm: str, rng: np.random.Generator) -> list[Wave]:
    """Wave list of one record's beat morphology (offsets at 60 bpm; :func:`simulate_ecg` rescales T).

    Normal template: P (left-inferior), septal q (right-anterior: q in I/V6, r in V1),
    main R (left-inferior-posterior), terminal S, T concordant with R. Class effects:
    CLBBB / CRBBB (CD) = bundle-branch block (QRS 120-160 ms), LVH (HYP) = R x2-2.6,
    IMI / ASMI (MI) = pathological Q (>= 40 ms) + T inversion in the infarct leads,
    ISC_ / NDT (STTC) = ST depression / T inversion in the lateral and inferior leads.
    """
    qrs = rng.uniform(0.8, 1.25)
    width = rng.uniform(0.9, 1.1)
    p = Wave(-rng.uniform(0.13, 0.17), 0.022, rng.uniform(0.08, 0.16) * _unit([0.6, 0.75, 0.2]))
    q = Wave(-0.028 * width, 0.008 * width, 0.25 * qrs * _unit([-0.6, 0.1, 0.8]))
    r = Wave(0.0, 0.011 * width, 1.5 * qrs * _unit([0.6, 0.7, -0.35]))
    s = Wave(0.03 * width, 0.010 * width, 0.45 * qrs * _unit([-0.35, -0.3, -0.88]))
    t = Wave(0.27, 0.055, rng.uniform(0.25, 0.45) * _unit([0.6, 0.6, 0.5]))
    extra: list[Wave] = []

    if "LVH" in codes:  # LVH: Sokolow-Lyon S(V1) + R(V5) > 3.5 mV, slight left axis shift
        gain = rng.uniform(2.0, 2.6)
        r = Wave(r.offset, r.sigma * 1.1, gain * _rotation(-15, 0) @ r.vector)
        s = Wave(s.offset, s.sigma, 1.8 * s.vector)
    if "CLBBB" in codes:  # CLBBB: septum depolarised left-to-right, broad notched R, discordant T
        q = Wave(-0.03, 0.012, 0.3 * _unit([1.0, 0.0, -0.3]))
        r = Wave(0.0, r.sigma * rng.uniform(2.3, 2.8), r.vector)
        extra.append(Wave(0.045, 0.02, 0.7 * r.vector))
        s = Wave(s.offset, s.sigma, 0.0 * s.vector)
        t = Wave(t.offset, t.sigma, -0.35 * _unit(r.vector))
    if "CRBBB" in codes:  # CRBBB: late right-anterior vector -> rsR' in V1, broad S in I and V6
        extra.append(Wave(0.065, 0.022, rng.uniform(0.6, 0.9) * _unit([-0.6, 0.0, 0.8])))
        t = Wave(t.offset, t.sigma, np.linalg.norm(t.vector) * _unit([0.7, 0.6, -0.3]))
    depth = rng.uniform(0.35, 0.6)
    if "IMI" in codes:  # IMI: necrosis vector points away from the inferior wall
        extra.append(Wave(-0.02, 0.016, depth * _unit([0.0, -1.0, 0.0])))
        r = Wave(r.offset, r.sigma, r.vector * np.array([1.0, 0.4, 1.0]))
        t = Wave(t.offset, t.sigma, t.vector * np.array([1.0, -1.0, 1.0]))
    if "ASMI" in codes:  # ASMI: necrosis vector posterior -> QS complexes and inverted T in V1-V3
        extra.append(Wave(-0.02, 0.016, depth * _unit([0.1, 0.0, -1.0])))
        q = Wave(q.offset, q.sigma, 0.1 * q.vector)
        t = Wave(t.offset, t.sigma, t.vector * np.array([1.0, 1.0, -1.5]))
    if "ISC_" in codes:  # ISC_: horizontal ST depression (mirrored as ST elevation in aVR)
        extra.append(Wave(0.13, 0.06, -rng.uniform(0.12, 0.25) * _unit([0.7, 0.6, 0.4])))
        t = Wave(t.offset, t.sigma, 0.5 * t.vector)
    if "NDT" in codes:  # NDT: inverted T in the lateral and inferior leads
        t = Wave(t.offset, t.sigma, -rng.uniform(0.15, 0.3) * _unit([0.7, 0.4, 0.3]))

    rot = _rotation(rng.normal(0.0, 12.0), rng.normal(0.0, 10.0))
    waves = [q, r, s, t, *extra] if rhythm == "AFIB" else [p, q, r, s, t, *extra]
    return [Wave(w.offset, w.sigma, rot @ w.vector) for w in waves]


def beat_times(rhythm: str, hr: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """R-peak times (s) covering [-1.5, duration + 1.5] so the record starts and ends mid-beat.

    Sinus rhythms: RR modulated by respiration (sinus arrhythmia, ~4 %) plus 1 % jitter.
    AFIB: independent, irregularly irregular RR (log-normal, CV ~ 0.2), never < 0.3 s.
    """
    rr_mean = 60.0 / hr
    resp_f, resp_phase = rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi)
    times = [-1.5 + rng.uniform(0.0, rr_mean)]
    while times[-1] < duration + 1.5:
        if rhythm == "AFIB":
            rr = max(0.3, rr_mean * rng.lognormal(-0.02, rng.uniform(0.16, 0.24)))
        else:
            rr = rr_mean * (
                1 + 0.04 * np.sin(2 * np.pi * resp_f * times[-1] + resp_phase) + rng.normal(0, 0.01)
            )
        times.append(times[-1] + rr)
    return np.asarray(times)


def _noise(n: int, fs: float, mains_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Recording noise (12, n) in mV: baseline wander, mains hum, white noise, electrode offset."""
    t = np.arange(n) / fs
    freqs = rng.uniform(0.05, 0.5, size=(9, 3))
    amps = rng.uniform(0.01, 0.06, size=(9, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(9, 3))
    wander = np.einsum("ek,ekn->en", amps, np.sin(2 * np.pi * freqs[..., None] * t + phases[..., None]))
    mains = rng.uniform(0.0, 0.015, size=(9, 1)) * np.sin(
        2 * np.pi * mains_hz * t + rng.uniform(0, 2 * np.pi, (9, 1))
    )
    white = rng.normal(0.0, 1.0, size=(9, n)) * rng.uniform(0.004, 0.012, size=(9, 1))
    offset = rng.uniform(-0.05, 0.05, size=(9, 1))
    return ELECTRODE_TO_LEAD @ (wander + mains + white + offset)


def simulate_ecg(
    codes: tuple[str, ...],
    rhythm: str,
    rng: np.random.Generator,
    fs: float = 500.0,
    duration: float = 10.0,
    mains_hz: float = 50.0,
    hr: float | None = None,
) -> tuple[np.ndarray, float]:
    """One 12-lead record.

    Args:
        codes: SCP-ECG diagnostic statements present (keys of :data:`DIAGNOSTIC_CODES`; ("NORM",) for normal).
        rhythm: one of :data:`RHYTHMS`; sets the rate range and RR regularity (AFIB: no P, f waves).
        rng: the record's own generator (the caller seeds it per record for reproducibility).
        hr: mean heart rate in bpm; drawn from :data:`HR_RANGE` when None.

    Returns:
        signal: (12, round(fs * duration)) float64 in mV, lead order :data:`LEADS`.
        hr: the mean heart rate used (bpm).
    """
    if rhythm not in HR_RANGE:
        raise ValueError(f"unknown rhythm {rhythm!r}; expected one of {RHYTHMS}")
    unknown = set(codes) - set(DIAGNOSTIC_CODES)
    if unknown:
        raise ValueError(
            f"unknown diagnostic codes {sorted(unknown)}; expected a subset of {sorted(DIAGNOSTIC_CODES)}"
        )
    if hr is None:
        hr = float(rng.uniform(*HR_RANGE[rhythm]))
    waves = beat_waves(tuple(codes), rhythm, rng)
    beats = beat_times(rhythm, hr, duration, rng)
    n = int(round(fs * duration))
    t = np.arange(n) / fs

    rr = np.diff(beats, prepend=beats[0] - 60.0 / hr)
    # Repolarisation shortens with rate (Bazett: QT ~ sqrt(RR)); depolarisation does not.
    qt_scale = np.sqrt(np.clip(rr, 0.3, 2.0))
    resp = 1.0 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.15, 0.35) * beats + rng.uniform(0, 2 * np.pi))
    centres, sigmas, vectors = [], [], []
    for w in waves:
        repol = w.offset > 0.1  # ST and T waves
        centres.append(beats + w.offset * (qt_scale if repol else 1.0))
        sigmas.append(np.full_like(beats, w.sigma) * (np.sqrt(qt_scale) if repol else 1.0))
        vectors.append(resp[:, None] * w.vector[None, :])
    centres, sigmas = np.concatenate(centres), np.concatenate(sigmas)
    vectors = np.concatenate(vectors)  # (n_beats * n_waves, 3)
    # Only Gaussians whose +-5 sigma support meets the record contribute; skip the rest.
    keep = (centres + 5 * sigmas > 0) & (centres - 5 * sigmas < duration)
    g = np.exp(-0.5 * ((t[None, :] - centres[keep, None]) / sigmas[keep, None]) ** 2)
    heart = vectors[keep].T @ g  # (3, n)

    if rhythm == "AFIB":  # fibrillatory waves, 4-8 Hz, best seen in V1 and the inferior leads
        f0 = rng.uniform(4.0, 8.0)
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.3 * t))) / fs
        heart += np.outer(rng.uniform(0.04, 0.09) * _unit([-0.3, 0.6, 0.7]), np.sin(phase))
    signal = LEAD_AXES @ heart + _noise(n, fs, mains_hz, rng)
    return signal, hr
