"""Scale rehearsal of the data stages on MIMIC-IV-ECG-like records (docs/scale.md).

    python -m benchmarks scale [--sizes 1000 10000 50000] [--batch_folders 5] [--work_dir DIR] [--keep]

For each N: writes N raw records in the real MIMIC-IV-ECG layout (``datasets.synthetic.scale``), then runs,
each as its own process with its default workers, as a user would: preprocessing (``mimic_preprocess.py``,
``--batch_size ceil(N / batch_folders)``, so every N gives the same number of ``batch_k`` folders and the
batch grows with N: a stage that holds a whole batch shows it as memory growing with N), the QRS tokenizer
(``QRSTokenizer.py``), the target cache (``python -m engine.targets`` with a tiny random VQ-HBR over every
batch folder, train and val) and one epoch of the pre-training loader over every batch folder (batch 64,
the training default of 4 loader workers (``--num_workers`` when given), cached targets; first a fifth of an
epoch, then the whole epoch, each with fresh workers: the CPU per sample between the two, ``cpu_ms_per_added_sample``,
is the loader's cost per added sample at that size; the stage's CPU time covers both). Per stage: wall seconds, CPU seconds of the
process tree, records/s, CPU ms per record, peak RSS of the process tree (memory-mapped file pages
included) and peak anonymous memory (what the processes hold themselves), and bytes written.
Generated data is deleted after each N unless ``--keep``.
"""

from __future__ import annotations

import argparse
import gc
import math
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_output_args, folder_bytes, run_measured, write_results

STAGES = ("preprocess", "tokenize", "targets", "loader")


def _stage(name: str, n_records: int, measured: dict, out_bytes: int | None, unit_count: int | None = None) -> dict:
    count = unit_count if unit_count is not None else n_records
    row = {k: v for k, v in measured.items() if k != "output"}
    row.update(
        stage=name,
        records=count,
        records_per_s=round(count / measured["wall_s"], 1),
        cpu_ms_per_record=round(1000 * measured["cpu_s"] / count, 3),
    )
    if out_bytes is not None:
        row["bytes_written"] = out_bytes
    return row


def write_tiny_tokenizer(path: Path) -> None:
    """A random ``vqhbr_tiny`` checkpoint (model weights + config), the target cache's tokenizer."""
    import dataclasses

    import torch

    from modeling import create_model

    torch.manual_seed(0)
    model = create_model("vqhbr_tiny")
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, path)


def loader_epoch(dataset_dir: str, batch_size: int, num_workers: int) -> dict:
    """One epoch of the pre-training loader over every batch folder (train split, cached targets)."""
    from engine.targets import open_targets, parts_of
    from sentences.dataset import build_sentence_dataset
    from sentences.loader import make_loader

    ds = build_sentence_dataset(dataset_dir, "train", with_labels=False, all_batch_folders=True)
    for part in parts_of(ds):
        part.attach_targets(open_targets(part, with_ids=False))
    def cpu_s() -> float:  # this process and its joined loader workers
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def epoch(limit: int | None) -> tuple[int, float, float]:
        """(samples, wall s, CPU s incl. the workers, joined at the end) of the epoch's first ``limit``
        samples (all with None)."""
        loader = make_loader(ds, batch_size, 0, 1, True, num_workers, False)
        loader.sampler.set_epoch(0)
        c0, t0, n = cpu_s(), time.perf_counter(), 0
        batches = iter(loader)
        for x, _, _, _ in batches:  # sentences, lead ids, time ids, targets
            n += x.shape[0]
            if limit is not None and n >= limit:
                break
        del batches, loader  # joins the workers, so their CPU time is counted
        gc.collect()
        return n, time.perf_counter() - t0, cpu_s() - c0

    # A fifth of the epoch, then the whole epoch: the CPU per sample between the two is the cost per added
    # sample at this data set size (worker start-up cancels out); it must not grow with N.
    n_part, _, cpu_part = epoch(max(len(ds) // 5, batch_size))
    n, seconds, cpu_all = epoch(None)
    marginal = 1000 * (cpu_all - cpu_part) / (n - n_part) if n > n_part else None
    return {"samples": n, "seconds": round(seconds, 2), "samples_per_s": round(n / seconds, 1), "folders": len(parts_of(ds)),
            "epoch_cpu_s": round(cpu_all, 2), "first_fifth": {"samples": n_part, "cpu_s": round(cpu_part, 2)},
            "cpu_ms_per_added_sample": None if marginal is None else round(marginal, 4)}  # fmt: skip


def run_size(n: int, work: Path, batch_folders: int, num_workers: int | None, loader_batch: int, log=print) -> dict:
    """All stages for ``n`` records under ``work``; returns the per-stage rows."""
    py = sys.executable
    raw, data = work / "raw", work / "data"
    data.mkdir(parents=True, exist_ok=True)
    workers = [] if num_workers is None else ["--num_workers", str(num_workers)]
    gen = run_measured([py, "-m", "datasets.synthetic.scale", "--output_dir", str(raw), "--n_records", str(n),
                        *(workers or ["--num_workers", "2"])])  # fmt: skip
    raw_bytes = folder_bytes(raw)
    batch_size = math.ceil(n / batch_folders)
    rows = {"generate": _stage("generate", n, gen, raw_bytes)}
    log(f"N={n}: generated {raw_bytes / 1e9:.2f} GB in {gen['wall_s']} s")

    pre = run_measured([py, "mimic_preprocess.py", "--dataset_path", str(raw), "--output_path",
                        str(data / "MIMIC-IV"), "--batch_size", str(batch_size), *workers])  # fmt: skip
    rows["preprocess"] = _stage("preprocess", n, pre, folder_bytes(data / "MIMIC-IV"))
    folders = sorted(p.name for p in (data / "MIMIC-IV").glob("batch_*") if p.is_dir())
    log(f"N={n}: preprocessing {pre['wall_s']} s, {len(folders)} batch folders")

    tok = run_measured([py, "QRSTokenizer.py", "--dataset_name", "MIMIC-IV", "--data_root", str(data),
                        "--no_progress", *workers])  # fmt: skip
    qrs = data / "MIMIC-IV_QRS"
    rows["tokenize"] = _stage("tokenize", n, tok, folder_bytes(qrs))
    log(f"N={n}: tokenizer {tok['wall_s']} s")

    weight = work / "vqhbr_tiny.pth"
    write_tiny_tokenizer(weight)
    before = folder_bytes(qrs)
    tgt = run_measured([py, "-m", "engine.targets", "--dataset_dir", str(qrs), "--tokenizer_weight", str(weight),
                        "--tokenizer_model", "vqhbr_tiny", "--all_batch_folders", "--device", "cpu"])  # fmt: skip
    rows["targets"] = _stage("targets", n, tgt, folder_bytes(qrs) - before)
    log(f"N={n}: target cache {tgt['wall_s']} s")

    loader_workers = str(4 if num_workers is None else num_workers)
    load = run_measured([py, "-m", "benchmarks", "scale", "--_loader", str(qrs), str(loader_batch), loader_workers])
    epoch = _last_json(load["output"])
    row = _stage("loader", n, load, None, unit_count=epoch["samples"])
    row.update(samples_per_s=epoch["samples_per_s"], epoch_s=epoch["seconds"], folders=epoch["folders"],
               epoch_cpu_s=epoch["epoch_cpu_s"], first_fifth=epoch["first_fifth"],
               cpu_ms_per_added_sample=epoch["cpu_ms_per_added_sample"])  # fmt: skip
    rows["loader"] = row
    log(f"N={n}: loader {epoch['samples_per_s']} samples/s over {epoch['folders']} folders")
    return {"records": n, "batch_size": batch_size, "batch_folders": folders, "stages": rows}


def write_sentence_split(folder: Path, n: int, seed: int = 0, chunk: int = 1000) -> None:
    """One tokenised train split of ``n`` sentences (256 words x 96 samples, 40-256 real words each, lead and
    second ids), written in chunks (memory stays at one chunk whatever ``n`` is)."""
    import numpy as np

    from utils.arrays import create_npy

    folder.mkdir(parents=True, exist_ok=True)
    data = create_npy(folder / "train_data.npy", np.float32, (n, 256, 96))
    chans = create_npy(folder / "train_data_in_chans.npy", np.int32, (n, 256))
    times = create_npy(folder / "train_data_in_times.npy", np.int32, (n, 256))
    rng = np.random.default_rng(seed)
    word = np.arange(256)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        real = rng.integers(40, 257, size=(rows, 1))
        mask = word[None, :] < real
        data[start : start + rows] = rng.standard_normal((rows, 256, 96), dtype=np.float32) * mask[..., None]
        chans[start : start + rows] = np.where(mask, word // 20 % 12 + 1, 0)
        times[start : start + rows] = np.where(mask, word % 20 // 2 + 1, 0)
    for array in (data, chans, times):
        array.flush()


def target_cache_memory(sizes: list[int], root: Path) -> list[dict]:
    """Peak memory of ``python -m engine.targets`` over ONE split of each size in ``sizes`` (no other part,
    so that only the split's size changes): the stage streams its targets, so it must stay flat."""
    weight = root / "vqhbr_tiny.pth"
    write_tiny_tokenizer(weight)
    rows = []
    for n in sizes:
        folder = root / f"split{n}"
        write_sentence_split(folder / "batch_0", n)
        measured = run_measured([sys.executable, "-m", "engine.targets", "--dataset_dir", str(folder),
                                 "--tokenizer_weight", str(weight), "--tokenizer_model", "vqhbr_tiny",
                                 "--splits", "train", "--device", "cpu"])  # fmt: skip
        rows.append({"sentences": n, **{k: v for k, v in measured.items() if k != "output"}})
        print(f"target cache, one split of {n} sentences: peak anonymous {measured['peak_anon_mb']} MB, "
              f"tree RSS {measured['peak_rss_mb']} MB, {measured['cpu_s']} CPU s", flush=True)  # fmt: skip
        shutil.rmtree(folder)
    return rows


def _last_json(output: str) -> dict:
    import json

    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


def marginal_cpu_ms(small: dict, large: dict) -> float:
    """CPU ms per additional record between two sizes of one stage: the fixed start-up (imports, kernels,
    worker processes) cancels out, so this is the cost that would grow if a stage slowed with N."""
    return 1000 * (large["cpu_s"] - small["cpu_s"]) / (large["records"] - small["records"])


def check_requirements(runs: list[dict]) -> dict:
    """Time per record (CPU ms / record) within 15 % and peak anonymous memory within 20 % from the second
    smallest to the largest N, per stage. With three sizes or more, also the CPU per additional record of
    the last step (second largest -> largest) against the step before it (``marginal_ratio``): CPU per
    record falls with N when a fixed start-up is spread over more records; the marginal cost does not."""
    if len(runs) < 2:
        return {}
    a, b = (runs[1] if len(runs) > 2 else runs[0]), runs[-1]
    out = {}
    for stage in ("generate", *STAGES):
        sa, sb = a["stages"][stage], b["stages"][stage]
        time_ratio = sb["cpu_ms_per_record"] / sa["cpu_ms_per_record"]
        anon_ratio = sb["peak_anon_mb"] / sa["peak_anon_mb"]
        marginal = {}
        if len(runs) > 2:
            s0, s1, s2 = (r["stages"][stage] for r in runs[-3:])
            m01, m12 = marginal_cpu_ms(s0, s1), marginal_cpu_ms(s1, s2)
            marginal = {
                "marginal_cpu_ms_per_record": [round(m01, 3), round(m12, 3)],
                "marginal_ratio": round(m12 / m01, 3) if m01 > 0 else None,
            }
        out[stage] = {
            **marginal,
            "from_to": [a["records"], b["records"]],
            "cpu_per_record_ratio": round(time_ratio, 3),
            "wall_per_record_ratio": round((sb["wall_s"] / b["records"]) / (sa["wall_s"] / a["records"]), 3),
            "peak_anon_ratio": round(anon_ratio, 3),
            "peak_rss_ratio": round(sb["peak_rss_mb"] / sa["peak_rss_mb"], 3),
            "time_ok": abs(time_ratio - 1) <= 0.15,
            "memory_ok": anon_ratio <= 1.20,
        }
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m benchmarks scale", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000],
                   help="numbers of records, one rehearsal each (default: 1000 10000 50000)")  # fmt: skip
    p.add_argument("--batch_folders", type=int, default=5,
                   help="batch_k folders at every N; the batch grows with N (default: %(default)s)")  # fmt: skip
    p.add_argument("--num_workers", type=int, default=None,
                   help="workers of every stage (default: each stage's own default; loader: 4)")  # fmt: skip
    p.add_argument("--work_dir", type=Path, default=None, help="where data is generated (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the generated data (default: deleted after each N)")
    p.add_argument("--loader_batch_size", type=int, default=64, help="pre-training batch (default: %(default)s)")
    p.add_argument("--target_cache_splits", type=int, nargs="+", default=None,
                   help="instead of the rehearsal: the target cache's peak memory over one split of each of these "
                        "numbers of sentences (default: off)")  # fmt: skip
    add_output_args(p)
    p.add_argument("--_loader", nargs=3, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    if args._loader:
        import json

        folder, batch, workers = args._loader
        print(json.dumps(loader_epoch(folder, int(batch), int(workers))))
        return {}
    if args.target_cache_splits:
        root = Path(tempfile.mkdtemp(prefix="heartlang_targets_", dir=args.work_dir))
        try:
            result = {"target_cache_one_split": target_cache_memory(args.target_cache_splits, root)}
        finally:
            shutil.rmtree(root, ignore_errors=True)
        write_results("scale", result, argv, label=args.label, out=args.out)
        return result
    if args.batch_folders < 1:
        raise SystemExit(f"--batch_folders must be positive, got {args.batch_folders}")
    root = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="heartlang_scale_"))
    runs = []
    try:
        for n in args.sizes:
            work = root / f"n{n}"
            if work.exists():
                shutil.rmtree(work)
            runs.append(run_size(n, work, args.batch_folders, args.num_workers, args.loader_batch_size))
            if not args.keep:
                shutil.rmtree(work)
    finally:
        if not args.keep and not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)
    result = {"batch_folders": args.batch_folders, "sizes": runs, "requirements": check_requirements(runs)}
    print_table(runs)
    write_results("scale", result, argv, label=args.label, out=args.out)
    return result


def print_table(runs: list[dict]) -> None:
    print(f"{'N':>7} {'stage':<10} {'wall s':>8} {'rec/s':>8} {'CPU ms/rec':>10} {'RSS MB':>8} {'anon MB':>8} {'GB':>7}")
    for run in runs:
        for stage, row in run["stages"].items():
            gb = row.get("bytes_written", 0) / 1e9
            print(f"{run['records']:>7} {stage:<10} {row['wall_s']:>8} {row['records_per_s']:>8} "
                  f"{row['cpu_ms_per_record']:>10} {row['peak_rss_mb']:>8} {row['peak_anon_mb']:>8} {gb:>7.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
