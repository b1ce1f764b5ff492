"""Label tables and labelled-split writing for the downstream sets (docs/preprocessing.md; paper Sec. 4.1).

* CPSC2018: the 9 classes in the order AF, I-AVB, LBBB, Normal, PAC, PVC, RBBB, STD, STE (the
  alphabetical order of their names), their ICBEB ``REFERENCE.csv`` numbers and their SNOMED-CT
  codes in the PhysioNet/CinC 2020 re-publication.
* CSN: readable names of the SNOMED-CT codes of the CinC 2021 Chapman-Shaoxing-Ningbo headers
  (documentation only; the class columns are the codes themselves).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from utils.artifacts import save_npy, write_json

CPSC_CLASSES: tuple[str, ...] = ("AF", "I-AVB", "LBBB", "Normal", "PAC", "PVC", "RBBB", "STD", "STE")
# REFERENCE.csv numbering of the ICBEB 2018 challenge.
CPSC_REFERENCE_NUMBERS: dict[int, str] = {
    1: "Normal",
    2: "AF",
    3: "I-AVB",
    4: "LBBB",
    5: "RBBB",
    6: "PAC",
    7: "PVC",
    8: "STD",
    9: "STE",
}
# SNOMED-CT codes used for the CPSC 2018 records in the PhysioNet/CinC 2020 headers.
CPSC_SNOMED: dict[str, str] = {
    "164889003": "AF",  # atrial fibrillation
    "270492004": "I-AVB",  # first degree atrioventricular block
    "164909002": "LBBB",  # left bundle branch block
    "426783006": "Normal",  # sinus rhythm
    "284470004": "PAC",  # premature atrial contraction
    "164884008": "PVC",  # ventricular ectopics (the CinC 2020 code of the CPSC PVC class)
    "59118001": "RBBB",  # right bundle branch block
    "429622005": "STD",  # ST depression
    "164931005": "STE",  # ST elevation
}
# Names of common SNOMED-CT codes in the CSN (Chapman-Shaoxing-Ningbo) headers; other codes keep
# their number as their name.
SNOMED_NAMES: dict[str, str] = {
    "164889003": "AF atrial fibrillation",
    "164890007": "AFL atrial flutter",
    "426177001": "SB sinus bradycardia",
    "427084000": "ST sinus tachycardia",
    "426783006": "SR sinus rhythm",
    "427393009": "SA sinus arrhythmia",
    "426761007": "SVT supraventricular tachycardia",
    "713422000": "AT atrial tachycardia",
    "284470004": "PAC premature atrial contraction",
    "164884008": "VEB ventricular ectopics",
    "270492004": "1AVB first degree AV block",
    "59118001": "RBBB right bundle branch block",
    "164909002": "LBBB left bundle branch block",
    "713426002": "IRBBB incomplete right bundle branch block",
    "713427006": "CRBBB complete right bundle branch block",
    "698252002": "NSIVCB nonspecific intraventricular conduction disorder",
    "39732003": "LAD left axis deviation",
    "47665007": "RAD right axis deviation",
    "164873001": "LVH left ventricular hypertrophy",
    "251146004": "LQRSV low QRS voltages",
    "164934002": "TAb T wave abnormal",
    "59931005": "TInv T wave inversion",
    "429622005": "STD ST depression",
    "164931005": "STE ST elevation",
    "55930002": "STC ST changes",
    "164917005": "QAb Q wave abnormal",
    "111975006": "LQT prolonged QT interval",
}


def multi_hot(labels: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """List of label lists -> (N, C) int64 multi-hot in ``classes`` order; unknown labels raise."""
    col = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)), dtype=np.int64)
    for r, labs in enumerate(labels):
        for lab in labs:
            if lab not in col:
                raise KeyError(f"label {lab!r} of row {r} is not one of the classes {list(classes)}")
            y[r, col[lab]] = 1
    return y


def labels_summary(y: np.ndarray, classes: Sequence[str], split_rows: dict[str, np.ndarray]) -> dict:
    """{split: {class: positives}} for the printed / JSON summary."""
    return {s: {c: int(v) for c, v in zip(classes, y[rows].sum(axis=0))} for s, rows in split_rows.items()}


def save_labelled_split(
    out: Path, split: str, x: np.ndarray, y: np.ndarray, ids: np.ndarray, id_name: str
) -> None:
    """Write ``{split}_data.npy`` (N, 12, 1000) float32, ``{split}_labels.npy`` (N, C) int64 and
    ``{split}_{id_name}.npy`` (N,) int64, the source id of each row (PTB-XL's ``ecg_id``)."""
    out.mkdir(parents=True, exist_ok=True)
    if x.ndim != 3 or x.shape[1:] != (12, 1000) or len(x) != len(y):
        raise ValueError(
            f"{out}/{split}: data {x.shape} / labels {y.shape} do not form (N, 12, 1000) + (N, C)"
        )
    save_npy(out / f"{split}_data.npy", np.ascontiguousarray(x, dtype=np.float32))
    save_npy(out / f"{split}_labels.npy", np.asarray(y, dtype=np.int64))
    save_npy(out / f"{split}_{id_name}.npy", np.asarray(ids).astype(np.int64))


def write_classes(out: Path, classes: Sequence[str], names: dict[str, str] | None = None) -> None:
    """classes.json: the label column order, a JSON list of strings (same format for every source).

    With ``names`` (CSN's SNOMED codes), class_names.json maps each class to a readable name.
    """
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "classes.json", list(classes))
    if names is not None:
        write_json(out / "class_names.json", {c: names.get(c, c) for c in classes})
