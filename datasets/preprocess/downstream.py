"""Shared driver of the labelled 500 Hz sources, CPSC2018 and CSN (docs/preprocessing.md; paper Sec. 4.1).

A source module finds its records, reads their labels and names its signal chain; this module
then makes (or reads) the train/val/test split, runs the chain over a process pool and streams
the rows into

    <output_path>/{train,val,test}_data.npy     (N, 12, 1000) float32
                  {train,val,test}_labels.npy   (N, C) int64 multi-hot
                  {train,val,test}_records.json record names, row order
                  classes.json, splits/{train,val,test}.csv, skipped_records.csv, summary.json

The written ``splits/*.csv`` have the format ``--split_files`` accepts, so a run is repeatable.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from datasets.preprocess.config import DownstreamConfig
from datasets.preprocess.labels import labels_summary, multi_hot, write_classes
from datasets.preprocess.npy_writer import ChunkedNpyWriter
from datasets.preprocess.records import (
    SkipLog,
    default_num_workers,
    parallel_map,
    read_icbeb_mat,
    read_wfdb,
    write_summary,
)
from datasets.preprocess.signal import (
    STANDARD_LEADS,
    TARGET_LEN,
    SignalError,
    check_record,
    finite_float32,
    reorder_leads,
)
from datasets.preprocess.splits import (
    DEFAULT_FRACTIONS,
    SPLIT_NAMES,
    iterative_stratification,
    read_split_csv,
    resolve_split_files,
    split_file_format,
    write_split_csv,
)
from utils.artifacts import Step, save_npy, write_json
from utils.integrity import digest, files_identity

SOURCE_FS = 500.0
STAMP_FILE = "preprocess_stamp.json"  # the completion record (utils.artifacts.Step), written last
#: Every file a labelled-source run writes into its folder (a rerun removes them all first).
OUTPUTS = (
    *(f"{s}_{k}" for s in SPLIT_NAMES for k in ("data.npy", "labels.npy", "records.json")),
    "classes.json", "class_names.json", "splits/*.csv", "skipped_records.csv", "summary.json",
)  # fmt: skip
#: What defines the arrays beyond their bytes (read by the QRS tokenizer).
SPECS = {f"{s}_data.npy": {"dtype": "float32", "shape": "(N, 12, 1000)", "unit": "mV", "fs": 100}
         for s in SPLIT_NAMES}  # fmt: skip


@dataclass(frozen=True)
class RecordRef:
    """One raw record: ``kind`` is "wfdb" (``path`` without extension) or "icbeb_mat" (``path`` to the .mat)."""

    name: str
    path: str
    kind: str


def add_common_args(
    p: argparse.ArgumentParser, default_out: str, paper_prefix: str | None = None
) -> argparse.ArgumentParser:
    """Flags shared by the labelled sources; ``paper_prefix`` names the paper's split files
    (``icbeb`` / ``chapman``) that ``--split_files paper`` resolves to."""
    p.add_argument("--dataset_path", required=True, type=Path, help="folder searched recursively for records")
    p.add_argument("--output_path", default=Path(default_out), type=Path,
                   help="output folder (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--split_files",
        nargs="+",
        default=None,
        metavar="CSV",
        help="TRAIN.csv VAL.csv TEST.csv (ours, or the paper's icbeb_*/chapman_* files as published), or "
        "'paper' for the paper's split; labels and classes then come from the files (default: a stratified "
        "split by --fractions and --seed)",
    )
    p.set_defaults(paper_split_prefix=paper_prefix)
    p.add_argument(
        "--fractions",
        nargs=3,
        type=float,
        default=list(DEFAULT_FRACTIONS),
        help="train, val and test fractions of the stratified split (default: 0.7 0.1 0.2)",
    )
    p.add_argument("--seed", default=42, type=int, help="seed of the stratified split (default: %(default)s)")
    p.add_argument("--num_workers", default=default_num_workers(), type=int,
                   help="processes reading records (default: all cores)")  # fmt: skip
    return p


def load_standard_500hz(ref: RecordRef) -> np.ndarray:
    """Raw record -> (12, T) float64 in mV, standard lead order, checked to be 500 Hz and finite."""
    if ref.kind == "icbeb_mat":
        sig = read_icbeb_mat(ref.path)  # stored in standard order, 500 Hz
    else:
        sig, names, fs, _ = read_wfdb(ref.path)
        if fs != SOURCE_FS:
            raise SignalError("wrong_fs", f"{ref.path}: fs {fs:g} Hz, expected {SOURCE_FS:g}")
        sig = reorder_leads(sig, names)
    return check_record(sig, ref.path)  # NaN/inf, > 1000 mV (header gain), flat record: skipped


def _process(
    task: tuple[RecordRef, Callable[[np.ndarray], np.ndarray]],
) -> tuple[np.ndarray | None, str, str]:
    ref, chain = task
    try:
        return finite_float32(chain(load_standard_500hz(ref)), ref.path), "", ""
    except SignalError as exc:
        return None, exc.reason, exc.detail or ref.path


def _header(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh), [])


def plan_splits(
    args: DownstreamConfig,
    refs: Sequence[RecordRef],
    labels: dict[str, list[str]],
    classes: Sequence[str],
    skipped: SkipLog,
    split_report: dict | None = None,
) -> tuple[dict[str, list[RecordRef]], dict[str, np.ndarray], list[str], str]:
    """Records and multi-hot labels per split, from --split_files or a stratified split.

    With split files, records listed but absent under --dataset_path are skipped as ``missing_file``
    (counted per split in ``split_report`` and printed with their names), never silently dropped.
    """
    split_report = {} if split_report is None else split_report
    by_name = {r.name: r for r in refs}
    if args.split_files:
        paths, source = resolve_split_files(args.split_files, args.paper_split_prefix)
        plan, ys, classes_seen, seen_in = {}, {}, None, {}
        for split, path in zip(SPLIT_NAMES, paths):
            names, y, cls = read_split_csv(path)
            if classes_seen is not None and cls != classes_seen:
                raise SystemExit(f"split file {path} has other class columns than {paths[0]}")
            classes_seen = cls
            for n in names:
                if n in seen_in:
                    raise SystemExit(f"record {n} is listed in both {seen_in[n].name} and {path.name}")
                seen_in[n] = path
            present = [i for i, n in enumerate(names) if n in by_name]
            missing = [n for n in names if n not in by_name]
            for n in missing:
                skipped.add(n, "missing_file", f"listed in {path.name}, not found under {args.dataset_path}")
            if missing:
                shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
                print(
                    f"{path.name}: {len(missing)} of {len(names)} listed records not found under "
                    f"{args.dataset_path} ({shown}; all in skipped_records.csv as missing_file)"
                )
            split_report[split] = {
                "file": str(path),
                "format": split_file_format(_header(path))[0],
                "listed": len(names),
                "found": len(present),
                "missing": len(missing),
            }
            plan[split] = [by_name[names[i]] for i in present]
            ys[split] = y[present]
        listed = {r.name for rs in plan.values() for r in rs}
        for r in refs:
            if r.name not in listed:
                skipped.add(r.name, "not_in_split_files", r.path)
        return plan, ys, list(classes_seen), source
    labelled = [r for r in refs if labels.get(r.name)]
    for r in refs:
        if not labels.get(r.name):
            skipped.add(r.name, "no_label", f"{r.path}: no label among the classes")
    y = multi_hot([labels[r.name] for r in labelled], classes)
    folds = iterative_stratification(y, args.fractions, args.seed) if labelled else [np.arange(0)] * 3
    plan = {s: [labelled[i] for i in idx] for s, idx in zip(SPLIT_NAMES, folds)}
    ys = {s: y[idx] for s, idx in zip(SPLIT_NAMES, folds)}
    return (
        plan,
        ys,
        list(classes),
        f"iterative_stratification seed={args.seed} fractions={list(args.fractions)}",
    )


def build(
    args: DownstreamConfig,
    source: str,
    refs: Sequence[RecordRef],
    labels: dict[str, list[str]],
    classes: Sequence[str],
    chain: Callable[[np.ndarray], np.ndarray],
    extra: dict | None = None,
    class_names: dict[str, str] | None = None,
) -> dict:
    """Split, process and write one labelled source; returns (and writes) the summary."""
    t0 = time.time()
    out: Path = args.output_path
    skipped = SkipLog()
    split_report: dict = {}
    plan, ys, classes, split_source = plan_splits(args, refs, labels, classes, skipped, split_report)
    n_planned = sum(len(v) for v in plan.values())
    if n_planned == 0:
        raise SystemExit(
            f"{source}: no usable record under {args.dataset_path} (see {out}/skipped_records.csv)"
        )
    step = declare(args, source, refs, plan, ys, classes, split_source, chain)
    decision = step.decide()
    if decision.reuse and (out / "summary.json").is_file():
        print(f"{source}: {out} already holds these records, split and settings, outputs intact: skipped")
        return json.loads((out / "summary.json").read_text())
    if not decision.fresh:
        print(f"{source}: {out} redone: " + decision.explain())
    step.begin()  # running until complete(); every file of the earlier run removed
    counts, label_counts = {}, {}
    with tqdm(total=n_planned, desc=source, unit="rec", dynamic_ncols=True) as pbar:
        for split in SPLIT_NAMES:
            refs_s, y = plan[split], ys[split]
            writer = ChunkedNpyWriter(
                out / f"{split}_data.npy", len(refs_s), (len(STANDARD_LEADS), TARGET_LEN)
            )
            keep = np.zeros(len(refs_s), dtype=bool)
            tasks = [(r, chain) for r in refs_s]
            for i, (arr, reason, detail) in enumerate(parallel_map(_process, tasks, args.num_workers)):
                if arr is None:
                    skipped.add(refs_s[i].name, reason, detail)
                else:
                    writer.append(arr)
                    keep[i] = True
                pbar.update(1)
            counts[split] = writer.close()
            names = [r.name for r, k in zip(refs_s, keep) if k]
            save_npy(out / f"{split}_labels.npy", y[keep].astype(np.int64))
            write_json(out / f"{split}_records.json", names, indent=None)
            write_split_csv(out / "splits" / f"{split}.csv", names, y[keep], classes)
            label_counts[split] = labels_summary(y[keep], classes, {split: np.arange(keep.sum())})[split]
    write_classes(out, classes, class_names)
    skipped.write(out / "skipped_records.csv")
    summary = {
        "source": source,
        "records_in": len(refs),
        "records_out": counts,
        "n_classes": len(classes),
        "split": split_source,
        **({"split_files": split_report} if split_report else {}),
        "skipped": len(skipped.rows),
        "skipped_by_reason": skipped.counts(),
        "label_counts": label_counts,
        **(extra or {}),
        "seconds": round(time.time() - t0, 2),
    }
    write_summary(out / "summary.json", summary)
    step.complete()  # last: the record of every output file
    return summary


def declare(args: DownstreamConfig, source, refs, plan, ys, classes, split_source, chain) -> Step:
    """The step's declaration. What defines the outputs: the planned records and labels per split (from
    split files, labels, classes and seed alike), the chain, and the size/mtime of every raw record file."""
    raw = [p for r in refs for p in _record_files(r)]
    settings = {
        "source": source,
        "split": split_source,
        "classes": list(classes),
        "plan_sha256": digest(
            {s: [[r.name for r in plan[s]], np.asarray(ys[s]).tolist()] for s in SPLIT_NAMES}
        ),
        "chain": getattr(chain, "__name__", repr(chain)),
    }
    inputs = {"records": files_identity(raw, args.dataset_path)}
    return Step(f"{source}_preprocess", args.output_path, STAMP_FILE, settings, inputs, OUTPUTS, SPECS)


def _record_files(ref: RecordRef) -> list[str]:
    if ref.kind == "icbeb_mat":
        return [ref.path]
    return [ref.path + s for s in (".hea", ".mat", ".dat") if Path(ref.path + s).exists()]
