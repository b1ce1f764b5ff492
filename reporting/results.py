"""The downstream results CSV (paper Sec. 4: one test macro ROC-AUC per run), traceable row by row.

``run_class_finetuning.py --eval`` appends one row per evaluated run to ``results/finetune_results.csv``.
Besides the task and the metrics, a row records what makes it a fact (docs/training.md, "Results"):

* ``utc``, ``git_commit``, ``git_dirty``: when, and with which code (``dirty``: uncommitted changes);
* ``checkpoint``, ``checkpoint_sha256``: the weights that were evaluated;
* ``model``: the registry name of the model actually built and loaded;
* ``recipe``: ``official`` or ``corrected:<flag>+<flag>`` (the corrected-variant flags that were on);
* ``caveat``: empty, or why the numbers must not be read as results (:func:`smoke_caveat`);
* ``roc_png``: the per-class ROC figure of the run, next to the CSV.

Files written by older versions (15 columns, no provenance) stay readable (:func:`read_results`). A row is
never appended under another header: when the existing file's header differs, the row goes to a sibling
file ``<stem>.schema<N>.csv`` and a message says so; :func:`read_results` reads both.
"""

from __future__ import annotations

import csv
import fcntl
import os
import sys
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np

from utils.integrity import provenance

SCHEMA_VERSION = 2
LEGACY_FIELDS = [
    "dataset", "subset", "leads", "ratio", "sampling", "seed", "trainable", "model", "finetune",
    "macro_auc", "macro_f1", "accuracy", "n_test", "classes_without_auc", "output_dir",
]  # fmt: skip
RESULT_FIELDS = LEGACY_FIELDS + [
    "utc", "git_commit", "git_dirty", "checkpoint", "checkpoint_sha256", "recipe", "caveat", "roc_png",
]  # fmt: skip

# The smoke rule. Below this many test records one record moves the macro AUC by whole points (and a
# class often has a single positive), so such numbers only show that the pipeline ran.
MIN_MEANINGFUL_TEST = 100
# *_tiny: the reference fixtures' size (a few thousand parameters), made for tests.
SMOKE_MODEL_SUFFIXES = ("_tiny",)
# *_small: the CPU demo size; its numbers compare pre-trained with random init, not with the paper.
DEMO_MODEL_SUFFIXES = ("_small",)
NOT_MEANINGFUL = "not meaningful (smoke size"


class WrittenResult(NamedTuple):
    """Where :func:`write_result` put the row (the CSV, or its schema sibling) and the full row."""

    path: Path
    row: dict


def describe_dataset_dir(dataset_dir: str | os.PathLike) -> tuple[str, str]:
    """``.../PTBXL_QRS/form`` -> ("PTBXL", "form"); ``.../CPSC2018_QRS`` (no subset) -> ("CPSC2018", "all")."""
    p = Path(str(dataset_dir).rstrip("/"))
    if "_QRS" in p.name:
        return p.name.split("_QRS")[0], "all"
    return p.parent.name.split("_QRS")[0], p.name


def count_leads(in_chans: np.ndarray) -> int:
    """Number of distinct lead ids (0 = padding excluded) used by a split; ``in_chans``: (N, 256) ints."""
    ids = np.unique(np.asarray(in_chans))
    return int((ids > 0).sum())


def format_recipe(recipe: Mapping[str, object] | None) -> str:
    """``{"padding_attention_mask": True, "mask_before_conv": False}`` -> ``corrected:padding_attention_mask``.

    Flags that are off are left out; every flag off (or an empty dict) is ``official``; a non-boolean
    value is written ``name=value``; ``None`` (the caller does not know) is ``unknown``."""
    if recipe is None:
        return "unknown"
    on = []
    for name in sorted(recipe):
        value = recipe[name]
        if isinstance(value, (bool, np.bool_)):
            if value:
                on.append(name)
        elif value is not None:
            on.append(f"{name}={value}")
    return "corrected:" + "+".join(on) if on else "official"


def smoke_caveat(n_test: int, model_name: str) -> str:
    """Empty when the numbers can be read as a result, else why not.

    * fewer than :data:`MIN_MEANINGFUL_TEST` test records, or a ``*_tiny`` (test-size) model:
      ``not meaningful (smoke size: ...)``;
    * a ``*_small`` (CPU demo size) model: ``demo-size model ...: not comparable with the paper``.
    """
    reasons = []
    if int(n_test) < MIN_MEANINGFUL_TEST:
        reasons.append(f"n_test {int(n_test)} < {MIN_MEANINGFUL_TEST}")
    if str(model_name).endswith(SMOKE_MODEL_SUFFIXES):
        reasons.append(f"{model_name} is a test-size model")
    if reasons:
        return f"{NOT_MEANINGFUL}: {'; '.join(reasons)})"
    if str(model_name).endswith(DEMO_MODEL_SUFFIXES):
        return f"demo-size model {model_name}: not comparable with the paper"
    return ""


def is_meaningful(row: Mapping[str, object]) -> bool:
    """False for a row whose ``caveat`` says smoke size (rows of old files have no caveat: True)."""
    return not str(row.get("caveat", "") or "").startswith(NOT_MEANINGFUL)


def schema_sibling(path: str | os.PathLike) -> Path:
    """``results/finetune_results.csv`` -> ``results/finetune_results.schema2.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.schema{SCHEMA_VERSION}{path.suffix or '.csv'}")


def _append_locked(path: Path, row: Mapping[str, object]) -> str | None:
    """Append under an exclusive lock; returns None when written, else the mismatching header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", newline="", encoding="utf-8") as fh:
        # Several --eval runs may append to one CSV at the same time; the lock keeps rows whole.
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.seek(0)
        header = next(csv.reader(fh), None)
        if header is not None and header != RESULT_FIELDS:
            return ",".join(header)
        fh.seek(0, os.SEEK_END)
        writer = csv.DictWriter(fh, fieldnames=RESULT_FIELDS)
        if header is None:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in RESULT_FIELDS})
        fh.flush()
    return None


def append_result_row(path: str | os.PathLike, row: Mapping[str, object]) -> Path:
    """Append ``row`` (keys of :data:`RESULT_FIELDS`; missing ones are left empty) to the results CSV.

    The header is written when the file is new. When the file exists with another header (an older
    version's), the row goes to :func:`schema_sibling` instead, with a message on stderr, so that no
    column is ever misaligned. Returns the path actually written."""
    path = Path(path)
    other = _append_locked(path, row)
    if other is None:
        return path
    sibling = schema_sibling(path)
    print(
        f"NOTE: {path} has another header ({len(other.split(','))} columns: {other[:120]}...), "
        f"not the current {len(RESULT_FIELDS)} columns; this row goes to {sibling} instead "
        "(reporting.results.read_results reads both files)",
        file=sys.stderr,
    )
    other_sibling = _append_locked(sibling, row)
    if other_sibling is not None:
        raise ValueError(
            f"{sibling} exists with an unexpected header ({other_sibling[:120]}...); "
            f"move it away or pass another --results_csv"
        )
    return sibling


def build_result_row(
    row: Mapping[str, object],
    checkpoint: str | os.PathLike | None,
    model_name: str,
    recipe: Mapping[str, object] | None,
) -> dict:
    """``row`` (task and metrics) + provenance of ``checkpoint`` + model, recipe and caveat columns."""
    prov = provenance(checkpoint)
    dirty = prov.get("git_dirty")
    full = dict(row)
    full.update(
        utc=prov["utc"],
        git_commit=prov["git_commit"],
        git_dirty="" if dirty is None else str(bool(dirty)).lower(),
        checkpoint=prov.get("checkpoint", ""),
        checkpoint_sha256=prov.get("checkpoint_sha256", ""),
        model=model_name,
        recipe=format_recipe(recipe),
        caveat=smoke_caveat(int(row.get("n_test", 0) or 0), model_name),
    )
    return full


def roc_figure_path(results_csv: str | os.PathLike, row: Mapping[str, object]) -> Path:
    """Where the ROC figure of a row goes: ``<csv folder>/roc/<dataset>_<subset>_<run folder>.png``."""
    run = Path(str(row.get("output_dir", "") or "run")).name or "run"
    return Path(results_csv).parent / "roc" / f"{row.get('dataset', '')}_{row.get('subset', '')}_{run}.png"


def write_result(
    results_csv: str | os.PathLike,
    row: Mapping[str, object],
    checkpoint: str | os.PathLike | None,
    model_name: str,
    recipe: Mapping[str, object] | None,
    roc: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
) -> WrittenResult:
    """One traceable row for ``--eval``: provenance added, ROC figure written, row appended.

    row: the task and metric columns (dataset, subset, leads, ratio, ..., n_test, output_dir);
    checkpoint: the evaluated weights (hashed); model_name: the model actually loaded;
    recipe: the corrected-variant flags (``{"padding_attention_mask": False, ...}``);
    roc: ``(labels (N, C), scores (N, C), class_names)`` to draw :func:`reporting.plots.plot_roc` at
    :func:`roc_figure_path`. Returns the CSV actually written and the full row (for a JSON log)."""
    full = build_result_row(row, checkpoint, model_name, recipe)
    if roc is not None:
        from reporting.plots import plot_roc

        labels, scores, class_names = roc
        title = f"{full.get('dataset', '')} {full.get('subset', '')}: {Path(str(full.get('output_dir', ''))).name}"
        if full["caveat"]:
            title += f"\n{full['caveat']}"
        full["roc_png"] = str(
            plot_roc(labels, scores, class_names, roc_figure_path(results_csv, full), title)
        )
    return WrittenResult(append_result_row(results_csv, full), full)


def _read_one(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return []
        missing = [k for k in ("output_dir", "macro_auc") if k not in reader.fieldnames]
        if missing:
            raise ValueError(f"{path}: not a results CSV (no column {', '.join(missing)})")
        rows = [{**{k: "" for k in RESULT_FIELDS}, **{k: (v or "") for k, v in r.items()}} for r in reader]
        if "caveat" not in reader.fieldnames:
            # A file of an older version: apply today's smoke rule so that its tables still say it.
            for r in rows:
                n_test = int(r["n_test"]) if r["n_test"].strip().isdigit() else 0
                r["caveat"] = smoke_caveat(n_test, r["model"])
        return rows


def read_results(path: str | os.PathLike) -> list[dict]:
    """Rows of the results CSV and of its :func:`schema_sibling`, oldest file first, as dicts of strings.

    Every key of :data:`RESULT_FIELDS` is present (empty when the file is an older version's, except
    ``caveat``, which is then computed from ``n_test`` and ``model`` by today's :func:`smoke_caveat`)."""
    path = Path(path)
    files = [p for p in (path, schema_sibling(path)) if p.is_file()]
    if not files:
        raise FileNotFoundError(f"{path}: no results; did the --eval runs finish?")
    return [row for p in files for row in _read_one(p)]
