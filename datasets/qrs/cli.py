"""Dataset-level driver of the QRS tokenizer (HeartLang Sec. 3.1), behind ``QRSTokenizer.py``.

Reads ``<data_root>/<NAME>/<subset>/{split}_data.npy`` (memory-mapped, (N, 12, T) or (N, T, 12))
and writes ``<output_root>/<NAME>_QRS/<subset>/{split}_data.npy``, ``{split}_data_in_chans.npy``,
``{split}_data_in_times.npy`` plus a summary per split; every other file of the subset folder
(``{split}_labels.npy``, class lists, split CSVs) is copied next to them. A split is skipped only
when its summary's stamp says it was made from the same input file (size and mtime) with the same
settings and its three arrays are intact; otherwise it is redone and the reason printed (so an
interrupted run can simply be restarted, and re-preprocessed inputs are never paired with old sentences).

Before a subset folder is read, the preprocessing step that wrote it must have completed on the files there
now (``utils.artifacts.require_complete`` on its ``preprocess_stamp.json`` / ``DONE.json``): a folder an
interrupted preprocessing rerun left half old, half new is refused, naming the folder and the reason.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.preprocess import COMPLETION_RECORDS
from datasets.preprocess.config import StepConfig
from datasets.preprocess.signal import STANDARD_LEADS
from datasets.qrs.parallel import (
    check_input_dtype,
    format_summary,
    infer_layout,
    split_step,
    tokenize_array,
    tokenizer_settings,
)
from datasets.qrs.plot import lead_name, plot_record
from utils.arrays import check_labels, open_npy
from utils.artifacts import IncompleteInputError, copy_file, require_complete, write_json
from utils.integrity import StaleOutputError


@dataclass(frozen=True)
class TokenizerConfig(StepConfig):
    """``QRSTokenizer.py``'s settings (one field per flag, same name)."""

    dataset_name: str
    data_root: str
    output_root: str | None
    output_name: str | None
    subsets: tuple[str, ...] | None
    splits: tuple[str, ...] | None
    layout: str
    n_leads: int
    overwrite: bool
    used_channels: tuple[str, ...] | None
    fs: int
    max_len: int
    token_len: int
    nan_policy: str
    detector: str
    num_workers: int | None
    chunk_size: int
    no_progress: bool
    plot: int
    plot_lead: int | None


SPLIT_ORDER = ("train", "val", "test")
_INPUT_RE = re.compile(r"^(?!\.)(.+)_data\.npy$")
_OUTPUT_RE = re.compile(r"_data_in_(chans|times)\.npy$")
NOT_COPIED = tuple(COMPLETION_RECORDS)  # describe the preprocessed folder, not the tokenised one


def parse_channels(tokens) -> list[int] | None:
    """``["0", "1,7"]`` or lead names (``["I", "V2"]``) -> ``[0, 1, 7]``; None/empty -> None (all leads)."""
    if not tokens:
        return None
    names = {n.lower(): i for i, n in enumerate(STANDARD_LEADS)}
    out = []
    for tok in ",".join(str(t) for t in tokens).split(","):
        tok = tok.strip()
        if not tok:
            continue
        if tok.lstrip("-").isdigit():
            out.append(int(tok))
        elif tok.lower() in names:
            out.append(names[tok.lower()])
        else:
            raise ValueError(
                f"unknown lead {tok!r} in --used_channels (use indices 0-11 or names {STANDARD_LEADS})"
            )
    if len(set(out)) != len(out):
        raise ValueError(f"--used_channels lists a lead twice: {out}")
    return out


# Reduced-lead sets of the PhysioNet/CinC 2021 challenge that the fine-tuning scripts use (indices into
# I, II, III, aVR, aVL, aVF, V1-V6): a tokenisation with one of them is named <NAME>_QRS_<n>Leads.
REDUCED_LEAD_SETS = {1: [0], 3: [0, 1, 7], 6: [0, 1, 2, 3, 4, 5]}


def default_output_name(dataset_name: str, used_channels, n_leads: int = 12) -> str:
    """Output folder name when ``--output_name`` is not given; a lead subset never lands in the folder of
    all leads (re-tokenising into it would replace the full-lead sentences).

    All leads -> ``<NAME>_QRS``; a reduced set the scripts use -> ``<NAME>_QRS_<n>Leads`` (the folder they
    read); any other subset -> ``<NAME>_QRS_<lead names>`` (e.g. ``PTBXL_QRS_I-V1``)."""
    leads = parse_channels(used_channels)
    if leads is None or leads == list(range(n_leads)):
        return f"{dataset_name}_QRS"
    if REDUCED_LEAD_SETS.get(len(leads)) == leads:
        return f"{dataset_name}_QRS_{len(leads)}Leads"
    names = [STANDARD_LEADS[c] if 0 <= c < len(STANDARD_LEADS) else str(c) for c in leads]
    return f"{dataset_name}_QRS_" + "-".join(names)


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def find_splits(folder: Path) -> list[str]:
    """Splits with a ``{split}_data.npy`` in ``folder``: train, val, test first, then the rest sorted."""
    found = [m.group(1) for p in folder.iterdir() if p.is_file() and (m := _INPUT_RE.match(p.name))]
    return [s for s in SPLIT_ORDER if s in found] + sorted(set(found) - set(SPLIT_ORDER))


def find_subsets(dataset_dir: Path) -> list[str]:
    """Subfolders (natural order: batch_2 before batch_10) holding ``*_data.npy``; "." for the folder itself."""
    if not dataset_dir.is_dir():
        raise FileNotFoundError(
            f"dataset folder {dataset_dir} does not exist (check --data_root/--dataset_name)"
        )
    subsets = ["."] if find_splits(dataset_dir) else []
    subs = [p.name for p in dataset_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    subs = [s for s in subs if not s.endswith(".tmp")]  # a batch still being built (see check_no_partial)
    subsets += [s for s in sorted(subs, key=_natural_key) if find_splits(dataset_dir / s)]
    if not subsets:
        raise FileNotFoundError(f"no *_data.npy in {dataset_dir} or its subfolders")
    return subsets


def copy_side_files(src_dir: Path, dst_dir: Path) -> list[str]:
    """Copy every non-input file (labels, class lists, ...) of ``src_dir``; atomic, skips up-to-date ones."""
    copied = []
    for p in sorted(src_dir.iterdir()):
        if (
            not p.is_file()
            or p.name.startswith(".")
            or p.name in NOT_COPIED
            or _INPUT_RE.match(p.name)
            or _OUTPUT_RE.search(p.name)
        ):
            continue
        dst = dst_dir / p.name
        st = p.stat()
        if (
            not dst.is_symlink()
            and dst.is_file()
            and dst.stat().st_size == st.st_size
            and dst.stat().st_mtime >= st.st_mtime
        ):
            continue
        copy_file(p, dst)  # temp name + rename: a symlink at dst is replaced, never written through
        copied.append(p.name)
    return copied


def _settings(args: TokenizerConfig, used_channels, shape) -> dict:
    lay = infer_layout(shape, args.n_leads, args.layout)
    return tokenizer_settings(
        used_channels, shape, lay, args.fs, args.max_len, args.token_len, args.nan_policy, args.detector
    )


def _finished_summary(
    out_dir: Path, split: str, input_path: Path, settings: dict, input_spec: dict | None = None
) -> tuple[dict | None, list]:
    """``(summary, [])`` when an earlier run finished this split from the same input file with the same
    ``settings`` and its outputs are intact; else ``(None, reasons)`` ([] when nothing was there)."""
    step = split_step(out_dir, split, settings, input_path, input_spec)
    try:
        decision = step.decide()
    except StaleOutputError as exc:  # a damaged summary: redo
        return None, [str(exc)]
    if decision.reuse:
        return step.read()[0], []
    return None, list(decision.reasons)


def check_preprocessed(src: Path) -> dict:
    """The preprocessing step that wrote ``src`` must have completed on the files there now; returns the
    ``specs`` it declared ({} for a folder without a completion record: hand-made arrays, an older version)."""
    stamp = require_complete(src, list(COMPLETION_RECORDS), what="QRSTokenizer.py", nests=COMPLETION_RECORDS)
    if stamp is None:
        print(f"[{src.name}] {src}: no completion record of the preprocessing (made by hand or by an older "
              "version): read as it is")  # fmt: skip
        return {}
    return stamp.get("specs", {})


def check_no_partial(src_root: Path) -> None:
    """A ``batch_k.tmp`` folder is a MIMIC batch whose preprocessing did not finish: the data set is incomplete."""
    partial = sorted(p.name for p in src_root.glob("*.tmp") if p.is_dir())
    if partial:
        raise IncompleteInputError(
            f"{src_root}: {', '.join(partial)} is a batch the preprocessing did not finish (interrupted); "
            f"rerun the preprocessing into {src_root} (it keeps the complete batches), then QRSTokenizer.py"
        )


def input_spec_of(specs: dict, split: str, path: Path, dtype) -> dict:
    """What the preprocessing declared about ``{split}_data.npy`` (dtype, unit), checked against the file."""
    check_input_dtype(dtype, str(path))
    spec = dict(specs.get(f"{split}_data.npy", {}))
    if spec.get("dtype") and spec["dtype"] != str(dtype):
        raise IncompleteInputError(f"{path}: {dtype} samples, but the preprocessing declared {spec['dtype']}")
    return {"dtype": str(dtype), **{k: v for k, v in spec.items() if k in ("unit", "fs")}}


def record_names(src: Path, split: str):
    """``indices -> names`` of the rows of ``src/{split}_data.npy`` from the preprocessing's side files
    (``{split}_records.json``: CPSC2018/CSN; ``{split}_ecg_ids.npy``: PTB-XL; ``records.csv``: MIMIC
    batches); ``row i`` where none exists."""

    def names(indices):
        table = None
        if (src / f"{split}_records.json").is_file():
            table = json.loads((src / f"{split}_records.json").read_text())
        elif (src / f"{split}_ecg_ids.npy").is_file():
            table = [f"ecg_id {int(v)}" for v in open_npy(src / f"{split}_ecg_ids.npy", mmap_mode=None)]
        elif (src / "records.csv").is_file():
            with open(src / "records.csv", newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("split") == split]
            table = {int(r["index"]): r["record"] for r in rows}
        out = []
        for i in indices:
            try:
                out.append(f"{table[i]} (row {i})" if table is not None else f"row {i}")
            except (KeyError, IndexError):
                out.append(f"row {i}")
        return out

    return names


def check_split_labels(src: Path, split: str, n: int) -> None:
    """A split's labels must be multi-hot 0/1 rows, one per record, or the tokenised sentences and the copied
    labels would be paired wrongly."""
    path = src / f"{split}_labels.npy"
    if path.is_file():
        labels = open_npy(path)  # a truncated labels file is named
        check_labels(labels, path)  # 0/1 multi-hot: refused now, not after tokenising at training
        rows = labels.shape[0]
        if rows != n:
            raise SystemExit(
                f"{path} has {rows} rows but {src / f'{split}_data.npy'} has {n} records: the two files come "
                "from different preprocessing runs; rerun the preprocessing of this data set"
            )


def tokenize_dataset(args: TokenizerConfig) -> dict:
    """Run the tokenizer over every selected subset and split of ``args.dataset_name``; returns the summaries."""
    data_root = Path(args.data_root)
    src_root = data_root / args.dataset_name
    dst_root = Path(args.output_root or args.data_root) / (
        args.output_name or default_output_name(args.dataset_name, args.used_channels, args.n_leads)
    )
    subsets = args.subsets or find_subsets(src_root)
    leads = parse_channels(args.used_channels)
    used = list(range(args.n_leads)) if leads is None else leads
    print(f"QRS tokenizer: {src_root} -> {dst_root}; subsets {subsets}; leads {[lead_name(c) for c in used]}")

    check_no_partial(src_root)
    results: dict = {}
    for subset in subsets:
        src, dst = src_root / subset, dst_root / subset
        if not src.is_dir():
            raise FileNotFoundError(f"subset folder {src} does not exist")
        specs = check_preprocessed(src)
        splits = args.splits or find_splits(src)
        dst.mkdir(parents=True, exist_ok=True)
        for split in splits:
            results[f"{subset}/{split}"] = tokenize_split(args, src, dst, subset, split, used, specs)
        copied = copy_side_files(src, dst)
        if copied:
            print(f"[{subset}] copied {', '.join(copied)}")
        if args.plot > 0 and splits:
            _plot_subset(args, src, dst_root / "plots", subset, splits[0], used)

    total = {"records": sum(r["records"] for r in results.values()), "splits": results}
    for k in (
        "truncated_sentences",
        "empty_sentences",
        "records_with_nonfinite_input",
        "records_with_nonfinite_words",
    ):
        total[k] = sum(r.get(k, 0) for r in results.values())
    write_json(dst_root / "tokenizer_summary.json", total)
    print(
        f"done: {total['records']} records, {total['truncated_sentences']} truncated, "
        f"{total['empty_sentences']} empty, {total['records_with_nonfinite_words']} with NaN/inf in words; "
        f"summary in {dst_root / 'tokenizer_summary.json'}"
    )
    return total


def tokenize_split(
    args: TokenizerConfig, src: Path, dst: Path, subset: str, split: str, used: list[int], specs: dict
) -> dict:
    """Tokenise ``src/{split}_data.npy`` into ``dst`` unless an earlier run finished it from the same input
    with the same settings (then its summary is returned; the reason of a redo is printed)."""
    path = src / f"{split}_data.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (splits found: {find_splits(src)})")
    arr = open_npy(path)  # a truncated or non-.npy file is named
    shape, spec = arr.shape, input_spec_of(specs, split, path, arr.dtype)
    key = f"{subset}/{split}"
    check_split_labels(src, split, shape[0])
    done, problems = (
        (None, [])
        if args.overwrite
        else _finished_summary(dst, split, path, _settings(args, used, shape), spec)
    )
    if done is not None:
        print(
            f"[{key}] already tokenised from this input with the same settings: skipped (--overwrite to redo)"
        )
        return done
    if problems:
        print(f"[{key}] redone: " + "; ".join(problems), file=sys.stderr)
    summary = tokenize_array(
        path, dst, split, used_channels=used, num_workers=args.num_workers, chunk_size=args.chunk_size,
        fs=args.fs, max_len=args.max_len, token_len=args.token_len, nan_policy=args.nan_policy,
        detector=args.detector, n_leads=args.n_leads, layout=args.layout, progress=not args.no_progress,
        verbose=False, record_names=record_names(src, split), input_spec=spec,
    )  # fmt: skip
    print(format_summary(summary).replace(f"[{split}]", f"[{key}]", 1))
    return summary


def _plot_subset(
    args: TokenizerConfig, src: Path, plot_dir: Path, subset: str, split: str, used: list[int]
) -> None:
    arr = np.load(src / f"{split}_data.npy", mmap_mode="r")
    lay = infer_layout(arr.shape, args.n_leads, args.layout)
    picks = np.unique(np.linspace(0, len(arr) - 1, num=min(args.plot, len(arr))).astype(int))
    tag = "root" if subset == "." else subset.replace("/", "_")
    for i in picks:
        rec = np.asarray(arr[i]) if lay == "nct" else np.asarray(arr[i]).T
        out = plot_record(
            rec,
            plot_dir / f"{tag}_{split}_{i:06d}.png",
            used_channels=used,
            plot_lead=args.plot_lead,
            title=f"{args.dataset_name}/{subset}/{split} #{i}",
            fs=args.fs,
            max_len=args.max_len,
            token_len=args.token_len,
            nan_policy=args.nan_policy,
            detector=args.detector,
        )
        print(f"plot: {out}")
