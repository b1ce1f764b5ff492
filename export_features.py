"""Export HeartLang sentence embeddings (CLS and/or mean-pooled) of a tokenised data set to .npy (paper Sec. 3.3).

    python export_features.py --model HeartLang_finetune_base --checkpoint checkpoints/heartlang.pth \
        --dataset_dir datasets/ecg_datasets/PTBXL_QRS/superdiagnostic --split test \
        --output features/ptbxl_super_test.npy --pool both

Output: ``--output`` holds (N, D) for ``--pool cls|mean`` and (N, 2, D) for ``both`` ([:, 0] CLS,
[:, 1] mean over real words), rows in the split's order; ``<output>.json`` records the model, checkpoint,
data and shape, and ``<output stem>_labels.npy`` a copy of the split's labels when it has any.
The model is loaded by :func:`modeling.api.load_pretrained` (strict, the training CLIs' loaders).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from datasets.ecg_dataset import build_sentence_dataset
from inference import POOLS, embed_sentences
from modeling import load_pretrained


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("HeartLang feature export")
    p.add_argument("--model", default=None, help="registry name (default: stored in our checkpoints); "
                   "HeartLang or HeartLang_finetune_base for the released weights")  # fmt: skip
    p.add_argument("--checkpoint", required=True, help="pre-training or fine-tuned checkpoint")
    p.add_argument("--dataset_dir", required=True, help="a *_QRS folder with {split}_data*.npy")
    p.add_argument("--split", default="test")
    p.add_argument("--output", required=True, type=Path, help="PATH.npy")
    p.add_argument("--pool", default="both", choices=POOLS)
    p.add_argument("--batch_size", default=64, type=int)
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    return p


def main(args) -> np.ndarray:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_pretrained(args.checkpoint, model=args.model, device=device)
    # Labels are optional (MIMIC-style folders have none); the arrays are memory-mapped.
    data = build_sentence_dataset(args.dataset_dir, args.split, with_labels=False)
    n = len(data)
    if n == 0:
        raise ValueError(f"{args.dataset_dir}/{args.split}: the split is empty")
    out_path = args.output if args.output.suffix == ".npy" else args.output.with_suffix(".npy")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    chunks = []
    for start in range(0, n, args.batch_size):
        items = [data[i] for i in range(start, min(start + args.batch_size, n))]
        x, c, t = (torch.stack([it[k] for it in items]) for k in range(3))
        chunks.append(embed_sentences(model, x, c, t, pool=args.pool).numpy())
    feats = np.concatenate(chunks).astype(np.float32)
    np.save(out_path, feats)
    meta = {
        "model": type(model).__name__, "model_name": args.model, "checkpoint": str(args.checkpoint),
        "dataset_dir": str(args.dataset_dir), "split": args.split, "pool": args.pool, "shape": list(feats.shape),
        "layout": "(N, 2, D): [:, 0] CLS, [:, 1] mean over real words" if args.pool == "both" else "(N, D)",
    }  # fmt: skip
    labels = Path(args.dataset_dir) / f"{args.split}_labels.npy"
    if labels.is_file():
        dst = out_path.with_name(out_path.stem + "_labels.npy")
        shutil.copyfile(labels, dst)
        meta["labels"] = str(dst)
    out_path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out_path} {feats.shape} ({args.pool}) from {n} records in {time.time() - t0:.1f} s")
    return feats


if __name__ == "__main__":
    main(get_args_parser().parse_args())
