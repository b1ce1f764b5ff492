"""Downstream metrics (paper Sec. 4): macro ROC-AUC, per-class AUC, F1 at 0.5 and accuracy.

The paper's metric is the macro ROC-AUC over classes on the test split. Small label fractions
(1 % of PTB-XL form) leave classes without a positive (or without a negative) example in a split;
ROC-AUC is undefined for them. We report such classes by name and average over the others instead
of crashing (scikit-learn raises on them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score


@dataclass
class ClassificationReport:
    """Metrics of one split. ``per_class_auc[c]`` is NaN for classes in ``undefined_classes``."""

    macro_auc: float
    per_class_auc: np.ndarray
    undefined_classes: list[int] = field(default_factory=list)
    macro_f1: float = float("nan")
    per_class_f1: np.ndarray | None = None
    accuracy: float = float("nan")
    n_samples: int = 0

    def as_dict(self, prefix: str = "") -> dict:
        return {
            f"{prefix}macro_auc": self.macro_auc,
            f"{prefix}macro_f1": self.macro_f1,
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}n_undefined_auc": len(self.undefined_classes),
        }


def to_one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) int class ids or (N, C) multi-hot -> (N, C) int multi-hot."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels.astype(np.int64)
    out = np.zeros((labels.shape[0], num_classes), dtype=np.int64)
    out[np.arange(labels.shape[0]), labels.astype(np.int64)] = 1
    return out


def per_class_auc(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """targets (N, C) 0/1, scores (N, C) -> (per-class AUC with NaN where undefined, undefined ids)."""
    targets = np.asarray(targets)
    scores = np.asarray(scores, dtype=np.float64)
    if targets.shape != scores.shape:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} differ in shape")
    aucs = np.full(targets.shape[1], np.nan)
    undefined = []
    for c in range(targets.shape[1]):
        positives = int(targets[:, c].sum())
        if positives == 0 or positives == targets.shape[0]:
            undefined.append(c)
            continue
        aucs[c] = roc_auc_score(targets[:, c], scores[:, c])
    return aucs, undefined


def classification_report(targets: np.ndarray, scores: np.ndarray, is_binary: bool) -> ClassificationReport:
    """Metrics from raw model outputs.

    targets: (N, C) multi-hot (or (N,) class ids when not ``is_binary``); scores: (N, C) logits.
    ``is_binary`` (multi-label, BCE): probabilities = sigmoid, F1 per class at 0.5, accuracy is the
    exact-match ratio. Otherwise (single-label, CE): probabilities = softmax, accuracy = top-1,
    F1 on the one-hot of the argmax.
    """
    scores = np.asarray(scores, dtype=np.float64)
    num_classes = scores.shape[1]
    onehot = to_one_hot(targets, num_classes)
    if is_binary:
        probs = 1.0 / (1.0 + np.exp(-scores))
        preds = (probs >= 0.5).astype(np.int64)
        accuracy = float((preds == onehot).all(axis=1).mean()) if len(onehot) else float("nan")
    else:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        preds = to_one_hot(probs.argmax(axis=1), num_classes)
        accuracy = (
            float((probs.argmax(axis=1) == onehot.argmax(axis=1)).mean()) if len(onehot) else float("nan")
        )
    aucs, undefined = per_class_auc(onehot, probs)
    defined = aucs[~np.isnan(aucs)]
    macro = float(defined.mean()) if defined.size else float("nan")
    f1 = f1_score(onehot, preds, average=None, zero_division=0)
    return ClassificationReport(
        macro_auc=macro,
        per_class_auc=aucs,
        undefined_classes=undefined,
        macro_f1=float(np.mean(f1)),
        per_class_f1=np.asarray(f1),
        accuracy=accuracy,
        n_samples=int(onehot.shape[0]),
    )


def format_table(report: ClassificationReport, class_names: list[str]) -> str:
    """Plain-text table: one row per class (AUC, F1, positives) and the macro row."""
    lines = [f"{'class':<16}{'AUC':>9}{'F1@0.5':>9}", "-" * 34]
    for c, name in enumerate(class_names):
        auc = "n/a" if np.isnan(report.per_class_auc[c]) else f"{report.per_class_auc[c]:.4f}"
        f1 = "" if report.per_class_f1 is None else f"{report.per_class_f1[c]:.4f}"
        lines.append(f"{name:<16}{auc:>9}{f1:>9}")
    lines.append("-" * 34)
    lines.append(f"{'macro':<16}{report.macro_auc:>9.4f}{report.macro_f1:>9.4f}")
    if report.undefined_classes:
        names = ", ".join(class_names[c] for c in report.undefined_classes)
        lines.append(
            f"AUC undefined (no positive or no negative in this split), left out of the macro: {names}"
        )
    return "\n".join(lines)
