"""Figures a researcher keeps: training curves, linear-probe validation AUC, codebook usage, ROC curves.

Inputs are the stages' ``log.txt`` files (JSON lines, one object per epoch, written by the three entry
scripts) or the arrays ``--eval`` already holds. Every function writes one PNG and returns its path.

* :func:`plot_training_curves`: one row per stage, one panel per quantity. Train and val of one
  quantity share a panel; two quantities never share a y-axis (loss and accuracy are apart).
* :func:`plot_probe_val_auc`: validation macro AUC per epoch of several linear probes (paper Sec. 4).
* :func:`plot_codebook_usage`: VQ-HBR unused codes and perplexity over epochs (paper Sec. 3.2);
  :func:`plot_code_histogram`: the usage of every code from a checkpoint's ``quantize.cluster_size``.
* :func:`plot_roc`: per-class ROC curves of a test split, one panel per class.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot state and no backend
switch, so this works in a headless run and leaves a notebook's backend alone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from utils.logging import read_jsonl

Log = str | os.PathLike | Sequence[Mapping]
IGNORED_KEYS = frozenset({"epoch", "n_parameters"})
SPLITS = ("train", "val", "test")
# Keys that do not follow "<split>_<quantity>" but belong to a quantity's panel.
ALIASES = {"best_val_auc": ("macro_auc", "best val")}
CODEBOOK_QUANTITIES = ("unused_codes", "perplexity")


def _records(log: Log) -> tuple[list[dict], str]:
    """(records, name for messages) of a log path or an in-memory list of dicts."""
    if isinstance(log, (str, os.PathLike)):
        path = Path(log)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no training log (log.txt is written after every epoch)")
        records = read_jsonl(path)
        if not records:
            raise ValueError(f"{path}: the log is empty (no finished epoch)")
        return records, str(path)
    return [dict(r) for r in log], "log"


def series_key(key: str) -> tuple[str, str] | None:
    """Log key -> (quantity, series label), or None for keys that are not curves.

    ``train_loss`` -> (loss, train); ``val_unused_codes`` -> (unused_codes, val);
    ``train_ema_perplexity`` -> (perplexity, train (EMA)); ``best_val_auc`` -> (macro_auc, best val)."""
    if key in IGNORED_KEYS:
        return None
    if key in ALIASES:
        return ALIASES[key]
    split, sep, rest = key.partition("_")
    if not sep or split not in SPLITS:
        return key, "value"
    if rest.startswith("ema_"):
        return rest[4:], f"{split} (EMA)"
    return rest, split


def group_series(log: Log) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{quantity: {series label: (epochs 1-based, values)}} in first-appearance order.

    Non-numeric values and nulls (a NaN is logged as null) are skipped; a series with no point is dropped."""
    records, _ = _records(log)
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for i, rec in enumerate(records):
        epoch = int(rec.get("epoch", i)) + 1
        for key, value in rec.items():
            sk = series_key(key)
            if sk is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(float(value)):
                continue
            xs, ys = out.setdefault(sk[0], {}).setdefault(sk[1], ([], []))
            xs.append(epoch)
            ys.append(float(value))
    return out


def _save(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def _style(label: str) -> dict:
    return {"ls": "--" if label.startswith(("val", "best")) else "-", "marker": "o", "ms": 3}


def plot_training_curves(
    logs: Mapping[str, Log] | Log,
    out_png: str | os.PathLike,
    quantities: Sequence[str] | None = None,
) -> Path:
    """One row per stage (``{title: log}``, or a single log), one panel per quantity of that stage.

    ``quantities`` keeps only those (in that order); default: every quantity in the log."""
    stages = dict(logs) if isinstance(logs, Mapping) else {"": logs}
    rows = []
    for title, log in stages.items():
        groups = group_series(log)
        names = [q for q in (quantities or list(groups)) if q in groups]
        if not names:
            raise ValueError(f"{title or 'log'}: no curve to plot (quantities {quantities or 'any'})")
        rows.append((title, groups, names))
    ncols = max(len(names) for _, _, names in rows)
    fig = Figure(figsize=(3.4 * ncols, 2.8 * len(rows)))
    for r, (title, groups, names) in enumerate(rows):
        for c, quantity in enumerate(names):
            ax = fig.add_subplot(len(rows), ncols, r * ncols + c + 1)
            for label, (xs, ys) in groups[quantity].items():
                ax.plot(xs, ys, label=label, **_style(label))
            ax.set_title(f"{title}: {quantity}" if title else quantity, fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel(quantity)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return _save(fig, out_png)


def plot_probe_val_auc(
    logs: Mapping[str, Log], out_png: str | os.PathLike, key: str = "val_macro_auc", title: str | None = None
) -> Path:
    """Validation macro AUC per epoch of several probes ``{run label: log}`` on one axis (one quantity).

    Runs whose label contains ``random`` are dashed (the randomly initialised baselines)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    for label, log in logs.items():
        records, name = _records(log)
        pts = [(int(r.get("epoch", i)) + 1, r[key]) for i, r in enumerate(records) if r.get(key) is not None]
        if not pts:
            raise ValueError(f"{name}: no {key!r} in any epoch")
        ax.plot(*zip(*pts), ls="--" if "random" in label else "-", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation macro AUC")
    ax.set_title(title or "linear probe (dashed: random init)")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, out_png)


def plot_codebook_usage(log: Log, out_png: str | os.PathLike, title: str = "VQ-HBR codebook") -> Path:
    """Unused codes and perplexity over epochs from a VQ-HBR ``log.txt`` (train: EMA counts; val: exact)."""
    groups = group_series(log)
    if not any(q in groups for q in CODEBOOK_QUANTITIES):
        name = log if isinstance(log, (str, os.PathLike)) else "log"
        raise ValueError(f"{name}: no codebook usage keys (*unused_codes, *perplexity); is it a VQ-HBR log?")
    return plot_training_curves({title: log}, out_png, quantities=CODEBOOK_QUANTITIES)


def plot_code_histogram(cluster_size: np.ndarray, out_png: str | os.PathLike) -> Path:
    """cluster_size (n_code,): the quantizer's EMA usage counts -> codes sorted by usage + log histogram."""
    usage = np.asarray(cluster_size, dtype=np.float64).ravel()
    order = np.sort(usage)[::-1]
    # "Unused" as the training log counts it: an EMA count that has decayed to (almost) nothing.
    unused = int((usage < 1e-3).sum())
    fig = Figure(figsize=(10, 3.4))
    a, b = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    a.bar(np.arange(len(order)), order, width=1.0)
    a.set_title(f"codes sorted by usage ({len(usage) - unused}/{len(usage)} used)")
    a.set_xlabel("code rank")
    a.set_ylabel("EMA count (quantize.cluster_size)")
    b.hist(np.log10(usage + 1e-6), bins=40)
    b.set_title("log10 usage histogram")
    b.set_xlabel("log10(EMA count + 1e-6)")
    return _save(fig, out_png)


def plot_roc(
    labels: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Per-class ROC curves, one panel per class with its AUC.

    labels: (N, C) multi-hot or (N,) class ids; scores: (N, C) logits or probabilities (ROC depends
    only on the order within a class). A class without a positive or without a negative has no ROC
    curve; its panel says so (the macro AUC leaves it out, as utils.metrics does)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from utils.metrics import to_one_hot

    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {scores.shape}")
    n, n_cls = scores.shape
    y = to_one_hot(labels, n_cls)
    if y.shape != scores.shape:
        raise ValueError(f"labels {y.shape} and scores {scores.shape} differ in shape")
    if len(class_names) != n_cls:
        raise ValueError(f"{len(class_names)} class names for {n_cls} score columns")
    ncols = min(n_cls, 5)
    nrows = math.ceil(n_cls / ncols)
    fig = Figure(figsize=(2.6 * ncols, 2.6 * nrows + 0.6))
    aucs = []
    for c, name in enumerate(class_names):
        ax = fig.add_subplot(nrows, ncols, c + 1)
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
        pos = int(y[:, c].sum())
        if 0 < pos < n:
            fpr, tpr, _ = roc_curve(y[:, c], scores[:, c])
            auc = float(roc_auc_score(y[:, c], scores[:, c]))
            aucs.append(auc)
            ax.plot(fpr, tpr, lw=1.4)
            ax.set_title(f"{name}: AUC {auc:.3f} ({pos}+)", fontsize=8)
        else:
            ax.set_title(f"{name}: no ROC ({pos}+ of {n})", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        if c % ncols == 0:
            ax.set_ylabel("true positive rate", fontsize=7)
        if c >= n_cls - ncols:
            ax.set_xlabel("false positive rate", fontsize=7)
    macro = (
        f"macro AUC {np.mean(aucs):.4f} over {len(aucs)}/{n_cls} classes, {n} records" if aucs else "no AUC"
    )
    fig.suptitle(f"{title}\n{macro}" if title else macro, fontsize=9)
    return _save(fig, path, dpi=100)
