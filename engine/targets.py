"""Cached pre-training targets (paper Sec. 3.3): the frozen VQ-HBR's code index of every word, once per data set.

The target of a word is ``tokenizer.get_codebook_indices(sentence)`` of the UNMASKED sentence: it depends on
the sentence (and, with ``--tokenizer_targets_with_ids``, on its lead/time ids, which are also fixed per
sentence) and on the tokenizer's weights, never on the mask, the epoch or the model being trained. So instead
of a full tokenizer forward in every pre-training step (the original's way, ``--targets on_the_fly``), the
targets are computed once and read by the loader (``--targets cached``, the default).

Files, next to the sentences of each split (each ``batch_k`` folder of a MIMIC layout has its own):

* ``{split}_targets.u16`` (official: tokenizer without ids) or ``{split}_targets_with_ids.u16``: a raw
  little-endian uint16 memory map of shape (N, L); a ``.u16`` file, not ``.npy``, so that the data set's
  identity (``utils.integrity.folder_identity``: ``**/*.npy``) does not change when targets are written.
* ``{split}_targets[_with_ids].json``: the completion record (``utils.artifacts.Step``, :func:`targets_step`):
  the tokenizer checkpoint's SHA-256, the identity (size, mtime) of the three sentence files, shape, dtype,
  precision. A file whose record does not match (another tokenizer, rewritten sentences, a damaged or
  rewritten file, an interrupted write) is recomputed, with the reason printed; it is never reused silently.

Precision: targets are computed in fp32 (autocast off), whatever ``--amp`` says. On CPU that is exactly what
the on-the-fly path computes (CPU training is fp32). # Official behaviour: the original computes targets on
the fly under the run's fp16 autocast on GPU, so a few words near a tie between two codes may get the other
code there; the cached fp32 targets are the tokenizer's own answer (docs/training.md "Cached targets").

Command (optional; a pre-training run with ``--targets cached`` writes missing files itself on rank 0):

    python -m engine.targets --dataset_dir datasets/ecg_datasets/MIMIC-IV_QRS \
        --tokenizer_weight checkpoints/vqhbr/MIMIC-IV/checkpoint-100.pth [--splits train val]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modeling import load_model, tokenizer_size
from modeling.hub import checkpoint_sha256
from sentences.dataset import ConcatSentenceDataset, SentenceDataset, build_sentence_dataset
from utils.arrays import check_free_space, naming_write_errors
from utils.artifacts import Step, atomic_path
from utils.integrity import file_identity

TARGET_DTYPE = np.dtype("<u2")
STAGE = "pretrain_targets"


def target_files(folder: Path, split: str, with_ids: bool) -> tuple[Path, Path]:
    """(``{split}_targets[_with_ids].u16``, its stamp ``.json``) in ``folder``."""
    stem = f"{split}_targets" + ("_with_ids" if with_ids else "")
    return folder / f"{stem}.u16", folder / f"{stem}.json"


def tokenizer_sha256(weight: str) -> str:
    """SHA-256 of the tokenizer checkpoint ``weight`` (a path or an hf:// spec): what ties targets to it."""
    return checkpoint_sha256(weight)


def load_tokenizer(name: str, weight: str, device) -> nn.Module:
    """Frozen VQ-HBR from ``weight`` (a path or an hf:// spec), strictly; another kind of checkpoint or
    NaN/inf weights are refused (modeling.load_model)."""
    tokenizer = load_model(weight, name=name, kind="vqhbr", device=device)
    for p in tokenizer.parameters():
        p.requires_grad_(False)
    return tokenizer.eval()


def parts_of(dataset) -> list[SentenceDataset]:
    """The single-folder datasets of a :func:`build_sentence_dataset` result."""
    if isinstance(dataset, ConcatSentenceDataset):
        return list(dataset.parts)
    if isinstance(dataset, SentenceDataset):
        return [dataset]
    raise TypeError(f"cached targets need a sentence dataset, got {type(dataset).__name__}")


def targets_step(part: SentenceDataset, tokenizer_sha256: str, codebook_size: int, with_ids: bool) -> Step:
    """The declaration of ``part``'s cached targets: what they are computed from and with, the file they are."""
    names = [f"{part.split}_data.npy", f"{part.split}_data_in_chans.npy", f"{part.split}_data_in_times.npy"]
    sentences = {"files": [file_identity(part.root / n, part.root) for n in names]}
    settings = {
        "tokenizer_sha256": tokenizer_sha256, "with_ids": bool(with_ids), "codebook_size": int(codebook_size),
        "shape": list(part.lead_ids.shape), "dtype": TARGET_DTYPE.str, "precision": "fp32",
    }  # fmt: skip
    path, record = target_files(part.root, part.split, with_ids)
    return Step(STAGE, part.root, record.name, settings, {"sentences": sentences}, (path.name,))


def problems(part: SentenceDataset, tokenizer_sha256: str, codebook_size: int, with_ids: bool) -> list[str]:
    """Why the cached targets of ``part`` cannot be reused ([] = they can)."""
    decision = targets_step(part, tokenizer_sha256, codebook_size, with_ids).decide()
    return [] if decision.reuse else list(decision.reasons) or ["not computed yet"]


def open_targets(part: SentenceDataset, with_ids: bool) -> np.ndarray:
    """The (N, L) uint16 memory map of ``part``'s targets (read-only)."""
    path, _ = target_files(part.root, part.split, with_ids)
    return np.memmap(path, dtype=TARGET_DTYPE, mode="r", shape=tuple(part.lead_ids.shape))


def quiet_tokenizer(tokenizer: nn.Module) -> nn.Module:
    """The frozen tokenizer's quantizer sums its (unused) usage counter over ranks in every forward; a
    targets computation runs on ONE rank, so that collective would hang: make it local."""
    quantize = getattr(tokenizer, "quantize", None)
    if quantize is not None and hasattr(quantize, "all_reduce_fn"):
        quantize.all_reduce_fn = lambda tensor: None
    return tokenizer


@torch.no_grad()
def compute_targets(
    tokenizer: nn.Module, part: SentenceDataset, with_ids: bool, device: torch.device, batch_size: int = 256
) -> Iterator[np.ndarray]:
    """Code indices of ``part``'s sentences in order, ``batch_size`` sentences at a time ((rows, L) int64
    chunks, fp32): a stream, so a batch folder of any size is never held in memory."""
    n = len(part.lead_ids)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        x = torch.from_numpy(np.array(part.data[start:stop], dtype=np.float32)).to(device)
        with torch.autocast(device_type=device.type, enabled=False):
            if with_ids:
                c = torch.from_numpy(np.array(part.lead_ids[start:stop], dtype=np.int64)).to(device)
                t = torch.from_numpy(np.array(part.time_ids[start:stop], dtype=np.int64)).to(device)
                ids = tokenizer.get_codebook_indices(x, c, t)
            else:
                # Official behaviour: targets from the tokenizer WITHOUT lead/time ids (engine.pretrain).
                ids = tokenizer.get_codebook_indices(x)
        yield ids.cpu().numpy()


def write_targets(
    part: SentenceDataset, chunks: Iterable[np.ndarray], tokenizer_sha256: str, codebook_size: int, with_ids: bool
) -> Path:
    """Write the target ``chunks`` ((rows, L) each, in sentence order) as ``part``'s uint16 memory map (temp
    file + rename) and then its completion record; a chunk that does not check stops the write, and nothing
    is left under the final name."""
    n, length = part.lead_ids.shape
    step = targets_step(part, tokenizer_sha256, codebook_size, with_ids)
    path = part.root / step.outputs[0]
    step.begin()  # the record says "running" until complete(); the old file is removed
    check_free_space(path, n * length * np.dtype(TARGET_DTYPE).itemsize)  # before hours of tokenizer forwards
    with atomic_path(path) as tmp, naming_write_errors(path), open(tmp, "wb") as fh:
        rows = 0
        for chunk in chunks:  # one chunk at a time: a batch folder is never held in memory
            if chunk.ndim != 2 or chunk.shape[1] != length:
                raise ValueError(f"{part.root}/{part.split}: targets {chunk.shape}, sentences {part.lead_ids.shape}")
            if chunk.size and (chunk.min() < 0 or chunk.max() >= codebook_size):
                raise ValueError(
                    f"{part.root}/{part.split}: target outside [0, {codebook_size}): tokenizer output is wrong"
                )
            fh.write(np.ascontiguousarray(chunk, dtype=TARGET_DTYPE).tobytes())
            rows += len(chunk)
        if rows != n:
            raise ValueError(f"{part.root}/{part.split}: targets for {rows} sentences, sentences {part.lead_ids.shape}")
    step.complete()
    return path


def ensure_targets(
    dataset, tokenizer_sha256: str, codebook_size: int, with_ids: bool, load_tokenizer, device: torch.device,
    write: bool = True, batch_size: int = 256, log=print,
) -> None:  # fmt: skip
    """Attach cached targets to every part of ``dataset``; compute (``write=True``) those that are missing or
    stale, naming the reason. ``load_tokenizer()`` is called at most once, only when something is computed.
    With ``write=False`` (ranks other than 0, after rank 0 wrote) a missing or stale file is an error."""
    if codebook_size > np.iinfo(TARGET_DTYPE).max + 1:
        raise ValueError(
            f"codebook of {codebook_size} codes does not fit uint16 targets; use --targets on_the_fly"
        )
    tokenizer = None
    for part in parts_of(dataset):
        reasons = problems(part, tokenizer_sha256, codebook_size, with_ids)
        path, _ = target_files(part.root, part.split, with_ids)
        if reasons:
            if not write:
                raise RuntimeError(
                    f"cached targets {path} are not usable after rank 0 wrote them: {reasons[0]}"
                )
            if not os.access(part.root, os.W_OK):
                raise PermissionError(
                    f"cannot write cached targets into {part.root} (read-only); run `python -m engine.targets` "
                    "where it is writable, or train with --targets on_the_fly"
                )
            if path.exists() or target_files(part.root, part.split, with_ids)[1].exists():
                log(f"cached targets {path} are stale ({'; '.join(reasons)}): recomputing")
            if tokenizer is None:
                tokenizer = quiet_tokenizer(load_tokenizer())
            t0 = time.time()
            write_targets(part, compute_targets(tokenizer, part, with_ids, device, batch_size),
                          tokenizer_sha256, codebook_size, with_ids)  # fmt: skip
            log(f"wrote {path} ({len(part)} sentences, {time.time() - t0:.1f} s)")
        part.attach_targets(open_targets(part, with_ids))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser("python -m engine.targets", description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset_dir",
        required=True,
        help="tokenised MIMIC-IV folder (batch_k subfolders) or one sentence folder (required)",
    )
    p.add_argument(
        "--tokenizer_weight", required=True, help="VQ-HBR checkpoint: a path or hf://org/repo/file (required)"
    )
    p.add_argument(
        "--tokenizer_model", default="vqhbr", help="registry name of the tokenizer (default: %(default)s)"
    )
    p.add_argument(
        "--splits",
        nargs="+",
        default=["train", "val"],
        help="splits to compute targets for (default: train val)",
    )
    p.add_argument(
        "--all_batch_folders",
        action="store_true",
        help="also batch_1, as the corrected recipe (default: off)",
    )
    p.add_argument("--tokenizer_targets_with_ids", action="store_true",
                   help="targets from the tokenizer WITH lead/time ids, as the corrected recipe (default: off)")  # fmt: skip
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda | cpu (default: cuda when available, else cpu)")  # fmt: skip
    p.add_argument(
        "--batch_size", type=int, default=256, help="sentences per tokenizer forward (default: %(default)s)"
    )
    args = p.parse_args(argv)
    device = torch.device(args.device)
    sha = tokenizer_sha256(args.tokenizer_weight)
    size, _ = tokenizer_size(args.tokenizer_weight)
    for split in args.splits:
        ds = build_sentence_dataset(args.dataset_dir, split, with_labels=False,
                                    all_batch_folders=args.all_batch_folders)  # fmt: skip
        ensure_targets(ds, sha, size, args.tokenizer_targets_with_ids,
                       lambda: load_tokenizer(args.tokenizer_model, args.tokenizer_weight, device), device,
                       batch_size=args.batch_size)  # fmt: skip
        print(f"{split}: cached targets of {len(ds)} sentences up to date")


if __name__ == "__main__":
    main()
