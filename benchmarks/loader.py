"""Data-loader budget of masked pre-training (paper Sec. 3.3): can one loader process feed one GPU?

    python -m benchmarks loader [--folders 4] [--per_folder 1024] [--batch_size 64] [--batches 40]

1. Writes a MIMIC-IV-like tokenised folder (``batch_0, batch_2, ...``: float32 words (N, 256, 96), int32
   lead/time ids, uint16 cached targets) into ``--work_dir`` and opens it as training does
   (``build_sentence_dataset`` + ``sentences.loader.make_loader``: shuffled DistributedSampler, memory maps).
2. Times samples/s of the pre-training loader with 0, 1, 2 worker processes, pinned memory when CUDA is
   there, two ways: ``row`` (one ``__getitem__`` per sentence, the original's way) and ``batch``
   (``__getitems__``: one sorted read per array per batch, our default).
3. Counts the full-size pre-training step's FLOPs per sample with ``torch.utils.flop_counter`` (HeartLang
   forward + backward, targets cached; and with the tokenizer forward on the fly) and prints what one GPU
   and 8 GPUs consume at ``--peak_tflops`` x ``--mfu`` (default: H100 SXM dense bf16 989 TFLOP/s at 40 %).

The files are freshly written, so they sit in the page cache: this measures decoding and copying, not a
cold disk (a cold NVMe read adds ~100 KB per sentence of I/O; see the printed MB/s). Results:
benchmarks/results/loader.json, run ``--label``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import add_output_args, write_results
from engine.pretrain import PretrainStep
from engine.targets import parts_of
from modeling import create_model
from sentences.dataset import build_sentence_dataset
from sentences.loader import make_loader

SENTENCE_BYTES = 256 * 96 * 4 + 2 * 256 * 4 + 256 * 2  # words, lead ids, time ids, targets


def write_folders(root: Path, folders: int, per_folder: int, seed: int = 0) -> Path:
    """``root/MIMIC-IV_QRS/batch_{0,2,3,...}``: batch_1 is left out by the original's folder list, so it is
    not written. Each folder: train split with ``per_folder`` sentences and its uint16 targets."""
    rng = np.random.default_rng(seed)
    base = root / "MIMIC-IV_QRS"
    names = [0] + list(range(2, folders + 1))
    for k in names:
        d = base / f"batch_{k}"
        d.mkdir(parents=True, exist_ok=True)
        data = np.lib.format.open_memmap(d / "train_data.npy", "w+", np.float32, (per_folder, 256, 96))
        for s in range(0, per_folder, 256):  # chunks: never the whole folder in RAM
            e = min(per_folder, s + 256)
            data[s:e] = rng.standard_normal((e - s, 256, 96), dtype=np.float32)
        data.flush()
        del data
        n_real = rng.integers(40, 257, per_folder)
        pos = np.arange(256)[None, :]
        real = pos < n_real[:, None]
        np.save(d / "train_data_in_chans.npy", np.where(real, pos // 20 % 12 + 1, 0).astype(np.int32))
        np.save(d / "train_data_in_times.npy", np.where(real, pos % 20 // 2 + 1, 0).astype(np.int32))
        rng.integers(0, 8192, (per_folder, 256), dtype=np.uint16).tofile(d / "train_targets.u16")
    return base


def open_dataset(folder: Path):
    ds = build_sentence_dataset(folder, "train", with_labels=False)
    for part in parts_of(ds):
        shape = tuple(part.lead_ids.shape)
        part.attach_targets(np.memmap(part.root / "train_targets.u16", dtype="<u2", mode="r", shape=shape))
    return ds


class RowLevel(Dataset):
    """The same dataset without ``__getitems__``: the DataLoader reads one row at a time."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


def time_loader(ds, batch_size: int, workers: int, pin: bool, batches: int) -> dict:
    loader = make_loader(ds, batch_size, 0, 1, True, workers, pin)
    loader.sampler.set_epoch(0)
    t_start = time.perf_counter()
    it = iter(loader)
    next(it)  # worker start-up and the first batch are not steady state
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for _ in range(batches):
        try:
            x, c, t, y = next(it)
        except StopIteration:
            break
        n += x.shape[0]
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    del it
    out = {
        "samples_per_s": n / dt,
        "startup_s": t0 - t_start,
        "samples": n,
        "MB_per_s": n * SENTENCE_BYTES / dt / 1e6,
    }
    if workers == 0:  # all the work is in this process: samples per CPU-second = what one free core delivers
        out["samples_per_cpu_s"] = n / cpu
    return out


def flops_per_sample(batch: int = 2) -> dict:
    """Forward + backward FLOPs per sample of the full-size pre-training step, cached and on the fly."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 256, 96, generator=g)
    c = torch.randint(1, 13, (batch, 256), generator=g)
    t = torch.randint(1, 11, (batch, 256), generator=g)
    tok = create_model("vqhbr").eval().requires_grad_(False)
    model = create_model("HeartLang")
    fly = PretrainStep(tok, torch.device("cpu"))
    cached = PretrainStep(None, torch.device("cpu"), cached=True)
    y = fly.targets(x, c, t)
    out = {}
    for name, step in (("cached", cached), ("on_the_fly", fly)):
        with FlopCounterMode(display=False) as counter:
            loss, _ = step(model, (x, c, t, y))
            loss.backward()
        model.zero_grad(set_to_none=True)
        out[name] = counter.get_total_flops() / batch
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser("python -m benchmarks loader", description=__doc__.splitlines()[0])
    p.add_argument("--folders", type=int, default=4, help="batch_k folders (default: %(default)s)")
    p.add_argument("--per_folder", type=int, default=1024, help="sentences per folder (default: %(default)s)")
    p.add_argument(
        "--batch_size",
        type=int,
        default=64,
        help="per GPU, as the original scripts' pre-training (default: %(default)s)",
    )
    p.add_argument("--batches", type=int, default=40, help="timed batches per setting (default: %(default)s)")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="loader worker counts to time (default: 0 1 2)",
    )
    p.add_argument(
        "--peak_tflops",
        type=float,
        default=989.0,
        help="GPU peak in TFLOP/s for the needed-rate estimate; 989 = H100 SXM dense bf16 (default: %(default)s)",
    )
    p.add_argument(
        "--mfu",
        type=float,
        default=0.40,
        help="model FLOP utilisation assumed for the needed-rate estimate (default: %(default)s)",
    )
    p.add_argument("--gpus", type=int, default=8, help="GPUs the estimate feeds (default: %(default)s)")
    p.add_argument(
        "--work_dir",
        type=Path,
        default=None,
        help="folder for the synthetic data (default: a temporary folder)",
    )
    add_output_args(p)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="loader_bench_", dir=args.work_dir))
    pin = torch.cuda.is_available()
    try:
        t0 = time.time()
        folder = write_folders(tmp, args.folders, args.per_folder)
        print(
            f"wrote {args.folders} batch folders x {args.per_folder} sentences in {time.time() - t0:.1f} s",
            flush=True,
        )
        ds = open_dataset(folder)
        rows = []
        for workers in args.workers:
            for mode in ("row", "batch"):
                r = time_loader(
                    ds if mode == "batch" else RowLevel(ds), args.batch_size, workers, pin, args.batches
                )
                r.update(mode=mode, workers=workers, pin_memory=pin)
                rows.append(r)
                per_cpu = f", {r['samples_per_cpu_s']:.0f} per CPU-second" if "samples_per_cpu_s" in r else ""
                print(f"{mode:5s} reads, {workers} worker(s){' pinned' if pin else ''}: "
                      f"{r['samples_per_s']:8.0f} samples/s ({r['MB_per_s']:.0f} MB/s; start-up {r['startup_s']:.2f} s{per_cpu})",
                      flush=True)  # fmt: skip
        flops = flops_per_sample()
        per_gpu = {k: args.peak_tflops * 1e12 * args.mfu / v for k, v in flops.items()}
        best_one_process = max(r["samples_per_s"] for r in rows if r["workers"] <= 1)
        best_per_core = max(r.get("samples_per_cpu_s", 0.0) for r in rows)
        result = {
            "device": "cpu", "folders": args.folders, "per_folder": args.per_folder,
            "batch_size": args.batch_size, "batches": args.batches, "page_cache": "warm (files just written)",
            "loader": rows, "gflop_per_sample": {k: v / 1e9 for k, v in flops.items()},
            "assumed_gpu": {"peak_tflops": args.peak_tflops, "mfu": args.mfu, "what": "H100 SXM dense bf16"},
            "gpu_samples_per_s": {"one_gpu": per_gpu, f"{args.gpus}_gpus": {k: args.gpus * v for k, v in per_gpu.items()}},
            "one_loader_process_feeds_one_gpu": best_one_process >= per_gpu["cached"],
            "one_free_core_feeds_one_gpu": best_per_core >= per_gpu["cached"], "best_samples_per_cpu_s": best_per_core,
            "load_average": list(os.getloadavg()),
        }  # fmt: skip
        print(f"full-size pre-training step: {flops['cached'] / 1e9:.1f} GFLOP/sample with cached targets, "
              f"{flops['on_the_fly'] / 1e9:.1f} on the fly")  # fmt: skip
        print(f"one GPU at {args.peak_tflops:.0f} TFLOP/s x {args.mfu:.0%} MFU consumes {per_gpu['cached']:.0f} samples/s "
              f"(cached targets); {args.gpus} GPUs {args.gpus * per_gpu['cached']:.0f} samples/s")  # fmt: skip
        print(f"best loader with <= 1 worker: {best_one_process:.0f} samples/s wall -> one loader process "
              f"{'CAN' if result['one_loader_process_feeds_one_gpu'] else 'CANNOT'} feed one GPU on this machine now; "
              f"per CPU-second {best_per_core:.0f} -> one free core {'CAN' if result['one_free_core_feeds_one_gpu'] else 'CANNOT'}")  # fmt: skip
        write_results("loader", result, argv, label=args.label, out=args.out)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
