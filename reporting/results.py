"""The downstream results CSV (paper Sec. 4: one test macro ROC-AUC per run), traceable row by row.

``run_class_finetuning.py --eval`` appends one row per evaluated run to ``results/finetune_results.csv``.
Besides the task and the metrics, a row records what makes it a fact (docs/training.md, "Results"):

* ``utc``, ``git_commit``, ``git_dirty``: when, and with which code (``dirty``: uncommitted changes);
* ``checkpoint``, ``checkpoint_sha256``: the weights that were evaluated;
* ``model``: the registry name of the model actually built and loaded;
* ``recipe``: ``official`` or ``corrected:<flag>+<flag>`` (the corrected-variant flags that were on);
* ``caveat``: empty, or why the numbers must not be read as results (:func:`smoke_caveat`);
* ``roc_png``: the per-class ROC figure of the run, next to the CSV;
* ``run_id``: a short hash of the run's absolute output folder; the ROC figure and the predictions file carry
  it in their names, so two runs whose folders share a last name never share a file;
* ``macro_auprc``, ``per_class_auc``, ``per_class_auprc``, ``positives`` (``NAME=value;...``) and the 95 %
  bootstrap intervals ``macro_auc_ci_low/high``, ``macro_auprc_ci_low/high`` with ``bootstrap`` (how they
  were drawn: resampling, number of resamples, seed; utils.metrics);
* ``predictions``: ``<csv folder>/predictions/<...>.npz`` with the test labels and probabilities, from which
  tables compute paired differences (pre-trained vs random init on the same records) and pooled metrics.

Files written by older versions (15 columns, no provenance; 23 columns, no intervals) stay readable
(:func:`read_results`). A row is never appended under another header: when the existing file's header
differs, the row goes to a sibling file ``<stem>.schema<N>.csv`` and a message says so; :func:`read_results`
reads the file and every ``.schema<N>`` sibling. A row that does not have one field per column (a file edited
by hand whose last line lost its newline, so that the next row was glued onto it) is an error naming the file
and line, never a silently dropped row; appending first ends an unterminated last line.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np

from utils.integrity import provenance
from utils.metrics import N_BOOTSTRAP, bootstrap_macro, classification_report, probabilities, to_one_hot

SCHEMA_VERSION = 3
LEGACY_FIELDS = [
    "dataset", "subset", "leads", "ratio", "sampling", "seed", "trainable", "model", "finetune",
    "macro_auc", "macro_f1", "accuracy", "n_test", "classes_without_auc", "output_dir",
]  # fmt: skip
RESULT_FIELDS = LEGACY_FIELDS + [
    "utc", "git_commit", "git_dirty", "checkpoint", "checkpoint_sha256", "recipe", "caveat", "roc_png",
]  # fmt: skip
SCHEMA2_FIELDS = list(RESULT_FIELDS)
RESULT_FIELDS = SCHEMA2_FIELDS + [
    "run_id", "macro_auprc", "macro_auc_ci_low", "macro_auc_ci_high", "macro_auprc_ci_low", "macro_auprc_ci_high",
    "bootstrap", "per_class_auc", "per_class_auprc", "positives", "predictions",
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


def schema_sibling(path: str | os.PathLike, version: int = SCHEMA_VERSION) -> Path:
    """``results/finetune_results.csv`` -> ``results/finetune_results.schema3.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.schema{version}{path.suffix or '.csv'}")


def schema_siblings(path: str | os.PathLike) -> list[Path]:
    """The existing ``<stem>.schema<N>.csv`` files beside ``path``, oldest version first."""
    path = Path(path)
    pattern = re.compile(re.escape(path.stem) + r"\.schema(\d+)" + re.escape(path.suffix or ".csv") + "$")
    found = [(int(m.group(1)), p) for p in path.parent.glob(f"{path.stem}.schema*")
             if (m := pattern.match(p.name)) and p.is_file()]  # fmt: skip
    return [p for _, p in sorted(found)]


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
        end = fh.seek(0, os.SEEK_END)
        if end and os.pread(fh.fileno(), 1, end - 1) not in (b"\n", b"\r"):
            # A hand-edited file whose last line lost its newline: end it, or this row is glued onto it.
            fh.write("\n")
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
        "(reporting.results.read_results reads the file and its .schema<N> siblings)",
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


def run_id(output_dir: str | os.PathLike) -> str:
    """12 hex digits of the SHA-256 of the run's absolute output folder: tells apart runs whose folders share
    a last name (``a/probe`` and ``b/probe``)."""
    return hashlib.sha256(str(Path(str(output_dir or "run")).resolve()).encode()).hexdigest()[:12]


def _run_file_stem(row: Mapping[str, object]) -> str:
    run = Path(str(row.get("output_dir", "") or "run")).name or "run"
    rid = row.get("run_id") or run_id(str(row.get("output_dir", "") or "run"))
    return f"{row.get('dataset', '')}_{row.get('subset', '')}_{run}_{rid}"


def roc_figure_path(results_csv: str | os.PathLike, row: Mapping[str, object]) -> Path:
    """Where the ROC figure of a row goes: ``<csv folder>/roc/<dataset>_<subset>_<run folder>_<run_id>.png``."""
    return Path(results_csv).parent / "roc" / f"{_run_file_stem(row)}.png"


def predictions_path(results_csv: str | os.PathLike, row: Mapping[str, object]) -> Path:
    """``<csv folder>/predictions/<dataset>_<subset>_<run folder>_<run_id>.npz`` (labels, probabilities)."""
    return Path(results_csv).parent / "predictions" / f"{_run_file_stem(row)}.npz"


def _named(values, names: list[str], fmt: str) -> str:
    return ";".join(f"{n}={'' if v != v else format(v, fmt)}" for n, v in zip(names, values))


def metric_columns(labels: np.ndarray, logits: np.ndarray, class_names: list[str], is_binary: bool,
                   n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict:  # fmt: skip
    """The metric columns of a row from the test labels and the model's outputs (logits):
    macro AUC and AUPRC, per-class values and positives, and the bootstrap intervals."""
    report = classification_report(labels, logits, is_binary)
    probs = probabilities(logits, is_binary)
    ci = bootstrap_macro(to_one_hot(labels, probs.shape[1]), probs, n_boot, seed) if len(probs) else None
    cols = {
        "macro_auc": f"{report.macro_auc:.6f}", "macro_auprc": f"{report.macro_auprc:.6f}",
        "per_class_auc": _named(report.per_class_auc, class_names, ".4f"),
        "per_class_auprc": _named(report.per_class_ap, class_names, ".4f"),
        "positives": _named(report.positives, class_names, "d"), "n_test": report.n_samples,
    }  # fmt: skip
    if ci is not None:
        cols.update(
            macro_auc_ci_low=f"{ci['macro_auc_ci'][0]:.6f}", macro_auc_ci_high=f"{ci['macro_auc_ci'][1]:.6f}",
            macro_auprc_ci_low=f"{ci['macro_auprc_ci'][0]:.6f}", macro_auprc_ci_high=f"{ci['macro_auprc_ci'][1]:.6f}",
            bootstrap=f"plain,{ci['n_boot']},seed{ci['seed']}",
        )  # fmt: skip
    return cols


def write_result(
    results_csv: str | os.PathLike,
    row: Mapping[str, object],
    checkpoint: str | os.PathLike | None,
    model_name: str,
    recipe: Mapping[str, object] | None,
    roc: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
    is_binary: bool = True,
) -> WrittenResult:
    """One traceable row for ``--eval``: provenance added, metrics with intervals, ROC figure and predictions
    file written, row appended.

    row: the task and metric columns (dataset, subset, leads, ratio, ..., n_test, output_dir);
    checkpoint: the evaluated weights (hashed); model_name: the model actually loaded;
    recipe: the corrected-variant flags (``{"padding_attention_mask": False, ...}``);
    roc: ``(labels (N, C), logits (N, C), class_names)``: the metric columns are computed from them
    (:func:`metric_columns`; ``is_binary``: sigmoid, else softmax), :func:`reporting.plots.plot_roc` is drawn at
    :func:`roc_figure_path` and the labels and probabilities are saved at :func:`predictions_path`.
    Returns the CSV actually written and the full row (for a JSON log)."""
    full = build_result_row(row, checkpoint, model_name, recipe)
    full["run_id"] = run_id(str(full.get("output_dir", "") or "run"))
    if roc is not None:
        from reporting.plots import plot_roc

        labels, scores, class_names = roc
        full.update(metric_columns(labels, scores, list(class_names), is_binary))
        full["caveat"] = smoke_caveat(int(full.get("n_test") or 0), model_name)  # n_test of these predictions
        sha = str(full.get("checkpoint_sha256", ""))[:12]
        title = f"{full.get('dataset', '')} {full.get('subset', '')}: {full.get('output_dir', '')}"
        title += f"\nrun {full['run_id']}" + (f", checkpoint sha256 {sha}" if sha else "")
        if full["caveat"]:
            title += f"\n{full['caveat']}"
        full["roc_png"] = str(
            plot_roc(labels, scores, class_names, roc_figure_path(results_csv, full), title)
        )
        pred = predictions_path(results_csv, full)
        pred.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(pred, probs=probabilities(scores, is_binary).astype(np.float32),
                            labels=np.asarray(labels), class_names=np.asarray(list(class_names)),
                            output_dir=np.asarray(str(full.get("output_dir", ""))))  # fmt: skip
        full["predictions"] = str(pred)
    return WrittenResult(append_result_row(results_csv, full), full)


def load_predictions(path: str | os.PathLike) -> dict:
    """A predictions file of :func:`write_result` -> ``{labels (N, C), probs (N, C), class_names, output_dir}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions file (written by --eval since the intervals exist)")
    with np.load(path, allow_pickle=False) as z:
        return {"labels": z["labels"], "probs": z["probs"].astype(np.float64),
                "class_names": [str(c) for c in z["class_names"]], "output_dir": str(z["output_dir"])}  # fmt: skip


def _read_one(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        missing = [k for k in ("output_dir", "macro_auc") if k not in header]
        if missing:
            raise ValueError(f"{path}: not a results CSV (no column {', '.join(missing)})")
        rows = []
        for values in reader:
            if not values:
                continue
            if len(values) != len(header):
                raise ValueError(
                    f"{path}, line {reader.line_num}: {len(values)} fields, the header has {len(header)}; "
                    "was the file edited by hand (a line that lost its newline glues two rows together)? "
                    "Repair that line; no row is dropped silently"
                )
            rows.append({**{k: "" for k in RESULT_FIELDS}, **dict(zip(header, values))})
        if "caveat" not in header:
            # A file of an older version: apply today's smoke rule so that its tables still say it.
            for r in rows:
                n_test = int(r["n_test"]) if r["n_test"].strip().isdigit() else 0
                r["caveat"] = smoke_caveat(n_test, r["model"])
        return rows


def read_results(path: str | os.PathLike) -> list[dict]:
    """Rows of the results CSV and of its ``.schema<N>`` siblings, oldest file first, as dicts of strings.

    Every key of :data:`RESULT_FIELDS` is present (empty when the file is an older version's, except
    ``caveat``, which is then computed from ``n_test`` and ``model`` by today's :func:`smoke_caveat`).
    A row with another number of fields than its header raises ValueError naming the file and line."""
    path = Path(path)
    files = [p for p in (path, *schema_siblings(path)) if p.is_file()]
    if not files:
        raise FileNotFoundError(f"{path}: no results; did the --eval runs finish?")
    return [row for p in files for row in _read_one(p)]
