"""Export HeartLang sentence embeddings (CLS and/or mean-pooled) to .npy (paper Sec. 3.3), from a tokenised
data set or from raw ECG records.

    python export_features.py --model HeartLang_finetune_base --checkpoint checkpoints/pretrain/MIMIC-IV/checkpoint-200.pth \
        --dataset_dir datasets/ecg_datasets/PTBXL_QRS/superdiagnostic --split test \
        --output features/ptbxl_super_test.npy --pool both
    python export_features.py --checkpoint checkpoints/pretrain/MIMIC-IV/checkpoint-200.pth --model HeartLang \
        --records physionet.org/files/ptb-xl/1.0.3/records500/00000 --chain mimic --output features/raw.npy

Output: ``--output`` holds (N, D) for ``--pool cls|mean`` and (N, 2, D) for ``both`` ([:, 0] CLS,
[:, 1] mean over real words), rows in the split's order (``--dataset_dir``) or in the order of the
``records`` list of the JSON (``--records``). ``<output>.json`` records when and with which code (UTC,
git commit + dirty flag), the checkpoint (as given, local file, SHA-256), the model actually loaded
(registry name, kind), the recipe flags stored in the checkpoint, the data, the preprocessing chain and
the shape; ``<output stem>_labels.npy`` is a copy of the split's labels when it has any. The export is one
``utils.artifacts.Step`` whose record is ``<output>.json`` (written last, with a stamp of every output): a
rerun first removes every file of the earlier export (an old ``_labels.npy`` never sits beside features
without labels), and every file is written under a temporary name and renamed into place.

``--records`` takes WFDB headers / ``.mat`` files / folders (searched recursively) at any sampling rate
and length; each is preprocessed by ``--chain`` (the chain the checkpoint's training data went through,
inference/records.py), QRS-tokenised and embedded. A record that breaks a rule (unknown leads, too short,
NaN, no beat, unreadable) is skipped; the skipped ones are counted at the end and listed with their
reason in ``<output stem>_skipped.csv``.
The model is loaded by :func:`modeling.load_model` (strict, the training CLIs' loaders); ``--checkpoint``
takes a path or a Hub file, ``hf://PKUDigitalHealth/HeartLang/<file>`` (docs/models.md).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from datasets.preprocess.records import SkipLog, parallel_map
from datasets.preprocess.signal import SignalError
from datasets.qrs.detect import DEFAULT_DETECTOR, DETECTORS
from engine.config import RECIPE_FLAGS
from inference import CHAINS, POOLS, embed_sentences, find_records, read_record, record_sentence
from inference.records import resolve_scaler
from modeling import load_model, read_checkpoint
from reporting.results import format_recipe
from sentences.dataset import build_sentence_dataset, check_fits_model
from utils.artifacts import Step, copy_file, save_npy
from utils.integrity import file_identity, folder_identity, provenance

EXPORT_SETTINGS = ("model", "dataset_dir", "records", "split", "pool", "chain", "scaler", "detector")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("HeartLang feature export")
    p.add_argument("--model", default=None, help="registry name (default: stored in our checkpoints); "
                   "HeartLang or HeartLang_finetune_base for the released weights")  # fmt: skip
    p.add_argument("--checkpoint", required=True,
                   help="pre-training or fine-tuned checkpoint: a path or hf://<org>/<repo>/<file>")  # fmt: skip
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--dataset_dir", help="a *_QRS folder with {split}_data*.npy (this or --records is required)"
    )
    src.add_argument(
        "--records",
        nargs="+",
        help="raw records: WFDB headers (.hea), .mat files, or folders (this or --dataset_dir is required)",
    )
    p.add_argument("--split", default="test", help="split read with --dataset_dir (default: %(default)s)")
    p.add_argument("--output", required=True, type=Path, help="PATH.npy")
    p.add_argument("--pool", default="both", choices=POOLS,
                   help="cls: the CLS token, (N, D); mean: mean over real words, (N, D); both: the two stacked, (N, 2, D) (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--batch_size", default=64, type=int, help="sentences per forward pass (default: %(default)s)"
    )
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    r = p.add_argument_group("raw records (--records)")
    r.add_argument("--chain", default="mimic", choices=list(CHAINS),
                   help="preprocessing of the checkpoint's training data: mimic for pre-trained encoders, "
                   "ptbxl (+ --scaler) / cpsc2018 / csn for probes fine-tuned on that source (default: %(default)s)")  # fmt: skip
    r.add_argument("--scaler", "--preprocessed_dir", dest="scaler", default=None,
                   help="chain ptbxl: scaler.json of the training subset, or the folder holding it "
                   "(datasets/ecg_datasets/PTBXL/<subset> or PTBXL_QRS/<subset>); required by --chain ptbxl (default: none)")  # fmt: skip
    r.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        choices=DETECTORS,
        help="R-peak detector of the QRS tokenizer (xqrs_fast: identical R peaks to wfdb xqrs, compiled) "
        "(default: %(default)s)",
    )
    r.add_argument(
        "--num_workers",
        default=1,
        type=int,
        help="processes reading + tokenising records (default: %(default)s)",
    )
    return p


def checkpoint_recipe(path) -> tuple[dict | None, str]:
    """The corrected-variant flags stored in our checkpoint's ``args`` (None for released files) and their
    one-word form (``official`` / ``corrected:<flags>`` / ``unknown``, as the results CSV writes it)."""
    obj = read_checkpoint(path, mmap=True)  # tensors stay on disk: only the args are read
    ck_args = obj.get("args") if isinstance(obj, Mapping) else None
    if not isinstance(ck_args, Mapping):
        return None, format_recipe(None)
    flags = {k: ck_args[k] for k in RECIPE_FLAGS if k in ck_args}
    return flags, format_recipe(flags if flags or "recipe" in ck_args else None)


def _sentence_of_path(task):
    """Worker: one record path -> ``(name, (x, c, t) | None, reason, detail)``; never raises on bad records."""
    path, chain, stats, detector = task
    try:
        rec = read_record(path)
        return rec.name, record_sentence(rec, chain, stats, detector=detector), "", ""
    except SignalError as exc:
        return str(path), None, exc.reason, exc.detail


def _embed_batches(model, sentences, pool: str, batch_size: int) -> np.ndarray:
    chunks = []
    for start in range(0, len(sentences), batch_size):
        x, c, t = (np.stack(v) for v in zip(*sentences[start : start + batch_size]))
        chunks.append(embed_sentences(model, x, c, t, pool=pool).numpy())
    return np.concatenate(chunks).astype(np.float32)


def _from_records(args, model, out_path: Path) -> tuple[np.ndarray, dict]:
    stats = resolve_scaler(args.chain, args.scaler)  # a wrong chain / scaler stops here, before any record
    paths, dups = find_records(args.records)
    skipped = SkipLog()
    for d in dups:
        skipped.add(d, "duplicate_name", "a record of this name was found earlier under the same folder")
    names, sentences = [], []
    tasks = [(p, args.chain, stats, args.detector) for p in paths]
    for name, sentence, reason, detail in parallel_map(_sentence_of_path, tasks, args.num_workers):
        if sentence is None:
            skipped.add(name, reason, detail)
        else:
            names.append(name)
            sentences.append(sentence)
    skipped_csv = out_path.with_name(out_path.stem + "_skipped.csv")
    skipped.write(skipped_csv)
    report = f"{len(names)} of {len(paths) + len(dups)} records embedded, {len(skipped.rows)} skipped"
    if skipped.rows:
        report += f" {skipped.counts()} (reasons: {skipped_csv})"
    print(report)
    if not names:
        raise SystemExit(f"no record under {args.records} could be embedded: {report}")
    meta = {
        "input": "records", "records": names, "chain": args.chain, "chain_steps": CHAINS[args.chain],
        "scaler": None if stats is None else {"source": str(args.scaler), "mean": stats[0], "std": stats[1]},
        "detector": args.detector, "skipped": len(skipped.rows), "skipped_by_reason": skipped.counts(),
        "skipped_csv": str(skipped_csv),
    }  # fmt: skip
    return _embed_batches(model, sentences, args.pool, args.batch_size), meta


def _from_dataset(args, model, out_path: Path) -> tuple[np.ndarray, dict]:
    # Labels are optional (MIMIC-style folders have none); the arrays are memory-mapped.
    data = build_sentence_dataset(args.dataset_dir, args.split, with_labels=False)
    check_fits_model(data, model.config, f"the checkpoint {args.checkpoint}")  # word sizes, lead / second ids
    n = len(data)
    if n == 0:
        raise ValueError(f"{args.dataset_dir}/{args.split}: the split is empty")
    chunks = []
    for start in range(0, n, args.batch_size):
        items = [data[i] for i in range(start, min(start + args.batch_size, n))]
        x, c, t = (torch.stack([it[k] for it in items]) for k in range(3))
        chunks.append(embed_sentences(model, x, c, t, pool=args.pool).numpy())
    meta = {"input": "dataset_dir", "dataset_dir": str(args.dataset_dir), "split": args.split}
    labels = Path(args.dataset_dir) / f"{args.split}_labels.npy"
    if labels.is_file():
        dst = out_path.with_name(out_path.stem + "_labels.npy")
        copy_file(labels, dst)
        meta["labels"] = str(dst)
    return np.concatenate(chunks).astype(np.float32), meta


def main(args) -> np.ndarray:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(args.checkpoint, args.model, kind=("heartlang", "classifier"), device=device)
    loaded = model.checkpoint_info
    out_path = args.output if args.output.suffix == ".npy" else args.output.with_suffix(".npy")
    step = export_step(args, out_path, loaded.path)
    step.begin()  # every file of an earlier export into this name is removed first
    t0 = time.time()
    feats, data_meta = (_from_records if args.records else _from_dataset)(args, model, out_path)
    save_npy(out_path, feats)
    flags, recipe = checkpoint_recipe(loaded.path)
    meta = {
        **provenance(loaded.path),  # utc, git_commit, git_dirty, checkpoint (local file), checkpoint_sha256
        "checkpoint_spec": str(args.checkpoint), "checkpoint_kind": loaded.kind,
        "model": type(model).__name__, "model_name": loaded.name, "model_name_given": args.model,
        "recipe": recipe, "recipe_flags": flags,
        **data_meta,
        "pool": args.pool, "shape": list(feats.shape),
        "layout": "(N, 2, D): [:, 0] CLS, [:, 1] mean over real words" if args.pool == "both" else "(N, D)",
    }  # fmt: skip
    step.complete(extra=meta)  # <output>.json, last
    print(f"wrote {out_path} {feats.shape} ({args.pool}) in {time.time() - t0:.1f} s")
    return feats


def export_step(args, out_path: Path, checkpoint: Path) -> Step:
    """The export's declaration: settings, the checkpoint and data read, and the files it owns."""
    settings = {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k in EXPORT_SETTINGS
    }
    inputs = {"checkpoint": file_identity(checkpoint)}
    if args.dataset_dir:
        inputs["data"] = folder_identity(args.dataset_dir, f"{args.split}_*.npy")
    stem = out_path.stem
    outputs = (out_path.name, f"{stem}_labels.npy", f"{stem}_skipped.csv")
    return Step("export_features", out_path.parent, f"{stem}.json", settings, inputs, outputs, nest="stamp")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
