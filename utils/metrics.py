"""Downstream metrics (paper Sec. 4): macro ROC-AUC, macro AUPRC, per-class values, F1 at 0.5, accuracy,
and bootstrap confidence intervals.

The paper's metric is the macro ROC-AUC over classes on the test split. Beside it we report the macro
average precision (AUPRC, scikit-learn's step-wise definition): on imbalanced multi-label sets it moves with
the rare positives that ROC-AUC hides (docs/evidence.md). Small label fractions (1 % of PTB-XL form) leave
classes without a positive (or without a negative) example in a split; ROC-AUC is undefined for them. Such
classes are reported by name and both macro averages are taken over the other classes (scikit-learn raises
on them).

Intervals (:func:`bootstrap_macro`, :func:`paired_bootstrap`): plain (not stratified) resampling of the test
records with replacement, :data:`N_BOOTSTRAP` resamples by default, seeded, 95 % percentile interval. A
resample's macro is taken over the classes defined in that resample, as the point estimate is.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score


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
    macro_auprc: float = float("nan")
    per_class_ap: np.ndarray | None = None  # NaN where the AUC is undefined (the same classes)
    positives: np.ndarray | None = None  # (C,) positives per class in this split

    def as_dict(self, prefix: str = "") -> dict:
        return {
            f"{prefix}macro_auc": self.macro_auc,
            f"{prefix}macro_auprc": self.macro_auprc,
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
    aps = per_class_ap(onehot, probs)
    defined = aucs[~np.isnan(aucs)]
    macro = float(defined.mean()) if defined.size else float("nan")
    macro_ap = float(np.nanmean(aps)) if defined.size else float("nan")
    f1 = f1_score(onehot, preds, average=None, zero_division=0)
    return ClassificationReport(
        macro_auc=macro,
        per_class_auc=aucs,
        undefined_classes=undefined,
        macro_f1=float(np.mean(f1)),
        per_class_f1=np.asarray(f1),
        accuracy=accuracy,
        n_samples=int(onehot.shape[0]),
        macro_auprc=macro_ap,
        per_class_ap=aps,
        positives=onehot.sum(axis=0).astype(np.int64),
    )


def probabilities(scores: np.ndarray, is_binary: bool) -> np.ndarray:
    """Logits (N, C) -> probabilities: sigmoid (multi-label) or softmax over classes (single-label)."""
    scores = np.asarray(scores, dtype=np.float64)
    if is_binary:
        return 1.0 / (1.0 + np.exp(-scores))
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def per_class_ap(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision per class (scikit-learn's definition), NaN where the ROC-AUC is undefined."""
    targets = np.asarray(targets)
    scores = np.asarray(scores, dtype=np.float64)
    if targets.shape != scores.shape:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} differ in shape")
    out = np.full(targets.shape[1], np.nan)
    for c in range(targets.shape[1]):
        pos = int(targets[:, c].sum())
        if 0 < pos < targets.shape[0]:
            out[c] = float(average_precision_score(targets[:, c], scores[:, c]))
    return out


# ------------------------------------------------------------------------------------------ bootstrap
N_BOOTSTRAP = 1000
BOOTSTRAP_METHOD = "plain resampling of test records with replacement, 95 % percentile interval"


def _weighted_macro(
    onehot: np.ndarray, probs: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Macro AUC and macro AUPRC of each resample, given as how often it draws each record.

    counts (B, N): resample b holds record i counts[b, i] times. Per class the records are sorted once by
    score; tied scores form one threshold (as in scikit-learn), so a resample's ROC-AUC (Mann-Whitney with
    ties counted half) and average precision (step-wise sum over its distinct thresholds) are sums over those
    groups. A class without a positive or a negative in a resample is left out of that resample's macros.
    Returns two (B,) arrays (NaN where no class is defined)."""
    n_boot, n = counts.shape
    aucs = np.full((n_boot, onehot.shape[1]), np.nan)
    aps = np.full_like(aucs, np.nan)
    w_all = counts.astype(np.float64)
    for c in range(onehot.shape[1]):
        order = np.argsort(-probs[:, c], kind="mergesort")
        s = probs[order, c]
        y = onehot[order, c].astype(np.float64)
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        w = w_all[:, order]
        pos_g = np.add.reduceat(w * y, starts, axis=1)  # (B, G) positives per tie group, descending score
        all_g = np.add.reduceat(w, starts, axis=1)
        neg_g = all_g - pos_g
        n_pos, n_neg = pos_g.sum(axis=1), neg_g.sum(axis=1)
        ok = (n_pos > 0) & (n_neg > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            below = n_neg[:, None] - np.cumsum(neg_g, axis=1)  # negatives scored strictly lower
            auc = (pos_g * (below + 0.5 * neg_g)).sum(axis=1) / (n_pos * n_neg)
            tp, seen = np.cumsum(pos_g, axis=1), np.cumsum(all_g, axis=1)
            precision = np.where(seen > 0, tp / np.where(seen > 0, seen, 1.0), 0.0)
            ap = (pos_g * precision).sum(axis=1) / n_pos  # recall steps of pos_g / n_pos
        aucs[:, c] = np.where(ok, auc, np.nan)
        aps[:, c] = np.where(ok, ap, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any defined class: NaN
        return np.nanmean(aucs, axis=1), np.nanmean(aps, axis=1)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, n) resampled row indices -> (B, n) how often each record is drawn."""
    rows = idx + n * np.arange(idx.shape[0])[:, None]
    return np.bincount(rows.ravel(), minlength=idx.shape[0] * n).reshape(idx.shape[0], n)


def resample_indices(n: int, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """(n_boot, n) row indices drawn with replacement (plain resampling), seeded."""
    if n < 1:
        raise ValueError("bootstrap needs at least one test record")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_macro(targets: np.ndarray, probs: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """95 % bootstrap intervals of the macro AUC and macro AUPRC of one run.

    targets (N, C) 0/1, probs (N, C) -> ``{macro_auc_ci: (lo, hi), macro_auprc_ci: (lo, hi), n_boot, seed,
    method}``."""
    onehot = np.asarray(targets)
    probs = np.asarray(probs, dtype=np.float64)
    if onehot.shape != probs.shape:
        raise ValueError(f"targets {onehot.shape} and scores {probs.shape} differ in shape")
    auc, ap = _weighted_macro(
        onehot, probs, _counts(resample_indices(len(onehot), n_boot, seed), len(onehot))
    )
    return {"macro_auc_ci": _interval(auc), "macro_auprc_ci": _interval(ap), "n_boot": int(n_boot),
            "seed": int(seed), "method": BOOTSTRAP_METHOD}  # fmt: skip


def macro_scores(targets: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(macro AUC, macro AUPRC) over the classes with a positive and a negative (the point estimates)."""
    onehot = np.asarray(targets)
    auc, ap = _weighted_macro(onehot, np.asarray(probs, dtype=np.float64), np.ones((1, len(onehot))))
    return float(auc[0]), float(ap[0])


def paired_bootstrap(
    targets: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> dict:
    """Difference a - b of two runs on the SAME test records (same rows, same order), with 95 % intervals
    from resampling the records jointly (each resample scores both runs on the same records).

    -> ``{macro_auc_diff, macro_auc_diff_ci: (lo, hi), macro_auprc_diff, macro_auprc_diff_ci, n_boot, seed,
    method}``. An interval that excludes 0 means the difference is larger than the test set's noise."""
    onehot = np.asarray(targets)
    a, b = np.asarray(probs_a, dtype=np.float64), np.asarray(probs_b, dtype=np.float64)
    if not onehot.shape == a.shape == b.shape:
        raise ValueError(f"targets {onehot.shape}, scores {a.shape} and {b.shape} differ in shape")
    counts = _counts(resample_indices(len(onehot), n_boot, seed), len(onehot))
    auc_a, ap_a = _weighted_macro(onehot, a, counts)
    auc_b, ap_b = _weighted_macro(onehot, b, counts)
    (pa_auc, pa_ap), (pb_auc, pb_ap) = macro_scores(onehot, a), macro_scores(onehot, b)
    return {"macro_auc_diff": pa_auc - pb_auc, "macro_auc_diff_ci": _interval(auc_a - auc_b),
            "macro_auprc_diff": pa_ap - pb_ap, "macro_auprc_diff_ci": _interval(ap_a - ap_b),
            "n_boot": int(n_boot), "seed": int(seed), "method": BOOTSTRAP_METHOD}  # fmt: skip


def format_table(report: ClassificationReport, class_names: list[str]) -> str:
    """Plain-text table: one row per class (AUC, AUPRC, F1 at 0.5, positives) and the macro row."""

    def cell(values, c):
        return "n/a" if values is None or np.isnan(values[c]) else f"{values[c]:.4f}"

    lines = [f"{'class':<16}{'AUC':>9}{'AUPRC':>9}{'F1@0.5':>9}{'pos':>7}", "-" * 50]
    for c, name in enumerate(class_names):
        f1 = "" if report.per_class_f1 is None else f"{report.per_class_f1[c]:.4f}"
        pos = "" if report.positives is None else str(int(report.positives[c]))
        lines.append(
            f"{name:<16}{cell(report.per_class_auc, c):>9}{cell(report.per_class_ap, c):>9}{f1:>9}{pos:>7}"
        )
    lines.append("-" * 50)
    lines.append(
        f"{'macro':<16}{report.macro_auc:>9.4f}{report.macro_auprc:>9.4f}{report.macro_f1:>9.4f}"
        f"{report.n_samples:>7}"
    )
    if report.undefined_classes:
        names = ", ".join(class_names[c] for c in report.undefined_classes)
        lines.append(
            f"AUC undefined (no positive or no negative in this split), left out of the macro: {names}"
        )
    return "\n".join(lines)


def paired_bootstrap_seeds(
    targets: np.ndarray,
    probs_a: list[np.ndarray],
    probs_b: list[np.ndarray],
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict:
    """Mean over seeds of (a_s - b_s) on the SAME test records, with a 95 % interval from resampling the
    records jointly (one resample scores the runs of every seed on the same records).

    ``probs_a[s]`` and ``probs_b[s]``: the two runs of seed s. -> ``{macro_auc_diff, macro_auc_diff_ci,
    macro_auprc_diff, macro_auprc_diff_ci, per_seed_auc_diff, per_seed_auprc_diff, n_boot, seed, method}``."""
    onehot = np.asarray(targets)
    if len(probs_a) != len(probs_b) or not probs_a:
        raise ValueError(f"{len(probs_a)} and {len(probs_b)} runs: one pair per seed is needed")
    counts = _counts(resample_indices(len(onehot), n_boot, seed), len(onehot))
    auc_d, ap_d, point_auc, point_ap = [], [], [], []
    for a, b in zip(probs_a, probs_b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if not onehot.shape == a.shape == b.shape:
            raise ValueError(f"targets {onehot.shape}, scores {a.shape} and {b.shape} differ in shape")
        auc_a, ap_a = _weighted_macro(onehot, a, counts)
        auc_b, ap_b = _weighted_macro(onehot, b, counts)
        auc_d.append(auc_a - auc_b)
        ap_d.append(ap_a - ap_b)
        (pa_auc, pa_ap), (pb_auc, pb_ap) = macro_scores(onehot, a), macro_scores(onehot, b)
        point_auc.append(pa_auc - pb_auc)
        point_ap.append(pa_ap - pb_ap)
    return {"macro_auc_diff": float(np.mean(point_auc)), "macro_auc_diff_ci": _interval(np.mean(auc_d, axis=0)),
            "macro_auprc_diff": float(np.mean(point_ap)), "macro_auprc_diff_ci": _interval(np.mean(ap_d, axis=0)),
            "per_seed_auc_diff": point_auc, "per_seed_auprc_diff": point_ap, "n_boot": int(n_boot),
            "seed": int(seed), "method": BOOTSTRAP_METHOD}  # fmt: skip


# ------------------------------------------------------------------------------- per-fold (rotated folds)
FOLD_METHOD = ("mean over test folds of each fold's macro; 95 % percentile interval from resampling the test "
               "records within each fold (plain, with replacement)")  # fmt: skip


def _fold_scores(onehot: np.ndarray, probs: np.ndarray, folds: np.ndarray, n_boot: int, seed: int) -> dict:
    """Per test fold: macro AUC / AUPRC (point) and of ``n_boot`` resamples drawn within the fold (the same
    draws for every run scored with the same ``seed``: paired). -> fold-mean points and (B,) fold-mean arrays."""
    points, boots = [], []
    for k, fold in enumerate(np.unique(folds)):
        idx = np.flatnonzero(folds == fold)
        counts = _counts(resample_indices(len(idx), n_boot, seed + 7919 * k), len(idx))
        points.append(macro_scores(onehot[idx], probs[idx]))
        boots.append(_weighted_macro(onehot[idx], probs[idx], counts))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a fold without any defined class: NaN, left out
        auc = np.nanmean([p[0] for p in points])
        ap = np.nanmean([p[1] for p in points])
        boot_auc = np.nanmean(np.stack([b[0] for b in boots]), axis=0)
        boot_ap = np.nanmean(np.stack([b[1] for b in boots]), axis=0)
    return {"auc": float(auc), "ap": float(ap), "boot_auc": boot_auc, "boot_ap": boot_ap,
            "per_fold_auc": [float(p[0]) for p in points]}  # fmt: skip


def fold_mean_paired_seeds(
    targets: np.ndarray,
    probs_a: list[np.ndarray],
    probs_b: list[np.ndarray],
    folds: np.ndarray,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict:
    """Rotated folds scored fold by fold: each run's macro AUC / AUPRC is the mean over its test folds of the
    fold's macro (every fold's probe is scored only on its own test records, so probes of different
    calibration are never ranked against each other, which pooling their predictions does), and a - b is
    the mean over seeds of the difference. Intervals: the records are resampled within each fold, jointly
    for every run and seed. ``probs_b`` may be empty: then only ``a``'s values are given.

    -> ``{macro_auc_a, macro_auc_a_ci, macro_auprc_a, macro_auprc_a_ci, per_seed_auc_a, [macro_auc_b, ...,
    macro_auc_diff, macro_auc_diff_ci, macro_auprc_diff, macro_auprc_diff_ci, per_seed_auc_diff,
    per_seed_auprc_diff], n_folds, n_boot, seed, method}``."""
    onehot, folds = np.asarray(targets), np.asarray(folds)
    if len(folds) != len(onehot):
        raise ValueError(f"{len(folds)} fold ids for {len(onehot)} test records")
    if probs_b and len(probs_a) != len(probs_b):
        raise ValueError(f"{len(probs_a)} and {len(probs_b)} runs: one pair per seed is needed")
    out = {"n_folds": int(len(np.unique(folds))), "n_boot": int(n_boot), "seed": int(seed), "method": FOLD_METHOD}
    runs = {"a": [_fold_scores(onehot, np.asarray(p, np.float64), folds, n_boot, seed) for p in probs_a]}
    if probs_b:
        runs["b"] = [_fold_scores(onehot, np.asarray(p, np.float64), folds, n_boot, seed) for p in probs_b]
    for name, scores in runs.items():
        out[f"macro_auc_{name}"] = float(np.mean([s["auc"] for s in scores]))
        out[f"macro_auc_{name}_ci"] = _interval(np.mean([s["boot_auc"] for s in scores], axis=0))
        out[f"macro_auprc_{name}"] = float(np.mean([s["ap"] for s in scores]))
        out[f"macro_auprc_{name}_ci"] = _interval(np.mean([s["boot_ap"] for s in scores], axis=0))
        out[f"per_seed_auc_{name}"] = [s["auc"] for s in scores]
    if probs_b:
        a, b = runs["a"], runs["b"]
        out["per_seed_auc_diff"] = [x["auc"] - y["auc"] for x, y in zip(a, b)]
        out["per_seed_auprc_diff"] = [x["ap"] - y["ap"] for x, y in zip(a, b)]
        out["macro_auc_diff"] = float(np.mean(out["per_seed_auc_diff"]))
        out["macro_auprc_diff"] = float(np.mean(out["per_seed_auprc_diff"]))
        out["macro_auc_diff_ci"] = _interval(np.mean([x["boot_auc"] - y["boot_auc"] for x, y in zip(a, b)], axis=0))
        out["macro_auprc_diff_ci"] = _interval(np.mean([x["boot_ap"] - y["boot_ap"] for x, y in zip(a, b)], axis=0))
    return out
