"""Label model of the synthetic cohort: SCP-ECG statements per record and the statement table.

PTB-XL (Wagner et al. 2020) labels a record with SCP-ECG statements and a likelihood
(``scp_codes``, e.g. ``{'NORM': 100.0, 'SR': 0.0}``); ``scp_statements.csv`` says which
statements are diagnostic (with their superclass / subclass), form or rhythm. The
downstream tasks of the paper (Sec. 4.1: super, sub, form, rhythm) are built from these
two files, so the synthetic cohort writes both. The rows below are written from the
public SCP-ECG definitions of the statements we simulate; they are not copied.

Every statement is tied to a signal effect in :mod:`datasets.synthetic.signal`, so the
labels are learnable: diagnostic statements change the beat morphology, form statements
name the visible feature of that change, rhythm statements set rate and regularity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from datasets.synthetic.signal import DIAGNOSTIC_CODES, RHYTHMS, SUPERCLASSES

# Probability of each primary superclass, and of a second (non-NORM) superclass on top.
PRIMARY_PROBS = {"NORM": 0.40, "MI": 0.15, "STTC": 0.15, "CD": 0.15, "HYP": 0.15}
SECOND_CLASS_PROB = 0.25
# Rhythm mix: NORM records never carry AFIB (PTB-XL would not call such an ECG normal).
RHYTHM_PROBS_NORM = {"SR": 0.80, "SBRAD": 0.12, "STACH": 0.08, "AFIB": 0.0}
RHYTHM_PROBS_ABNORMAL = {"SR": 0.55, "SBRAD": 0.12, "STACH": 0.15, "AFIB": 0.18}
# Form statement that names the visible feature of a diagnostic statement.
FORM_OF = {"IMI": "QWAVE", "ASMI": "QWAVE", "ISC_": "STD_", "NDT": "INVT", "LVH": "VCLVH"}

SCP_COLUMNS = [
    "description",
    "diagnostic",
    "form",
    "rhythm",
    "diagnostic_class",
    "diagnostic_subclass",
    "Statement Category",
    "SCP-ECG Statement Description",
    "AHA code",
    "aECG REFID",
    "CDISC Code",
    "DICOM Code",
]
# code: (description, diagnostic, form, rhythm, superclass, subclass, category)
_STATEMENTS = {
    "NORM": ("normal ECG", 1, 0, 0, "NORM", "NORM", "Normal/abnormal"),
    "IMI": ("inferior myocardial infarction", 1, 0, 0, "MI", "IMI", "Myocardial Infarction"),
    "ASMI": ("anteroseptal myocardial infarction", 1, 0, 0, "MI", "AMI", "Myocardial Infarction"),
    "ISC_": ("non-specific ischemic", 1, 0, 0, "STTC", "ISC_", "ST-T changes"),
    "NDT": ("non-diagnostic T abnormalities", 1, 1, 0, "STTC", "STTC", "ST-T changes"),
    "CLBBB": ("complete left bundle branch block", 1, 0, 0, "CD", "CLBBB", "Conduction disturbances"),
    "CRBBB": ("complete right bundle branch block", 1, 0, 0, "CD", "CRBBB", "Conduction disturbances"),
    "LVH": ("left ventricular hypertrophy", 1, 0, 0, "HYP", "LVH", "Ventricular Hypertrophy"),
    "QWAVE": ("Q waves present", 0, 1, 0, "", "", "QRS morphology"),
    "STD_": ("non-specific ST depression", 0, 1, 0, "", "", "ST-T changes"),
    "INVT": ("inverted T-waves", 0, 1, 0, "", "", "ST-T changes"),
    "VCLVH": ("voltage criteria (QRS) for left ventricular hypertrophy", 0, 1, 0, "", "", "QRS morphology"),
    "SR": ("sinus rhythm", 0, 0, 1, "", "", "Rhythm"),
    "SBRAD": ("sinus bradycardia", 0, 0, 1, "", "", "Rhythm"),
    "STACH": ("sinus tachycardia", 0, 0, 1, "", "", "Rhythm"),
    "AFIB": ("atrial fibrillation", 0, 0, 1, "", "", "Rhythm"),
}
_CODES_OF_CLASS = {c: sorted(k for k, v in DIAGNOSTIC_CODES.items() if v == c) for c in SUPERCLASSES}


def scp_statements_frame() -> pd.DataFrame:
    """The statement table in PTB-XL's ``scp_statements.csv`` layout (code as unnamed index column)."""
    rows = {}
    for code, (desc, diag, form, rhythm, cls, sub, category) in _STATEMENTS.items():
        rows[code] = [
            desc,
            1.0 if diag else np.nan,
            1.0 if form else np.nan,
            1.0 if rhythm else np.nan,
            cls or np.nan,
            sub or np.nan,
            category,
            desc,
            np.nan,
            np.nan,
            np.nan,
            np.nan,
        ]
    return pd.DataFrame.from_dict(rows, orient="index", columns=SCP_COLUMNS)


def sample_statements(rng: np.random.Generator) -> tuple[tuple[str, ...], str, dict[str, float]]:
    """Draw one record's labels.

    Returns:
        codes: diagnostic statements (keys of ``DIAGNOSTIC_CODES``) that shape the signal.
        rhythm: one of ``RHYTHMS``.
        scp_codes: PTB-XL style ``{statement: likelihood}`` (diagnostic 50-100, form / rhythm 0.0,
            as PTB-XL stores them).
    """
    classes = [str(rng.choice(list(PRIMARY_PROBS), p=list(PRIMARY_PROBS.values())))]
    if classes[0] != "NORM" and rng.random() < SECOND_CLASS_PROB:
        others = [c for c in SUPERCLASSES if c not in ("NORM", classes[0])]
        classes.append(str(rng.choice(others)))
    codes = tuple(str(rng.choice(_CODES_OF_CLASS[c])) for c in classes)
    probs = RHYTHM_PROBS_NORM if classes == ["NORM"] else RHYTHM_PROBS_ABNORMAL
    rhythm = str(rng.choice(list(probs), p=list(probs.values())))
    scp: dict[str, float] = {}
    for code in codes:
        scp[code] = 100.0 if code == "NORM" else float(rng.choice([50.0, 80.0, 100.0]))
    for code in codes:
        if code in FORM_OF:
            scp.setdefault(FORM_OF[code], 0.0)
    scp[rhythm] = 0.0
    return codes, rhythm, scp


def superclasses_of(codes: tuple[str, ...]) -> list[str]:
    """Superclasses of the diagnostic statements, in ``SUPERCLASSES`` order."""
    present = {DIAGNOSTIC_CODES[c] for c in codes}
    return [c for c in SUPERCLASSES if c in present]


def report_text(scp_codes: dict[str, float]) -> str:
    """A short free-text report like PTB-XL's ``report`` column (English, lower case)."""
    parts = [_STATEMENTS[c][0].lower() for c in scp_codes if c in RHYTHMS]
    parts += [_STATEMENTS[c][0].lower() for c in scp_codes if c not in RHYTHMS]
    return ". ".join(parts)
