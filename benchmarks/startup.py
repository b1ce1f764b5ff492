"""Start-up and per-process cost of pre-training with 1, 2, 4 processes over 8 batch folders (docs/distributed.md).

    python -m benchmarks startup [--nprocs 1 2 4] [--folders 8] [--per_folder 256] [--model HeartLang]

1. Writes a MIMIC-IV-like tokenised folder (``batch_0 .. batch_{folders-1}``, train split, float32 words and
   int32 ids, written in chunks), a tokenizer checkpoint as VQ-HBR training writes it (full-size ``vqhbr``,
   random weights, with its AdamW state) and computes the cached targets once
   (``python -m engine.targets``), so every launch measures the start-up of a run whose targets exist.
2. For each process count: ``torchrun --standalone --nproc_per_node N run_heartlang_pretraining.py`` (every batch
   folder, ``--all_batch_folders``), each worker started through this script's ``--worker`` mode, which
   records wall-clock times (python up, torch imported, distributed ready, task built (data opened, model, inputs' identity), run
   checked, optimizer, cached targets attached, DDP ready, first training step), the whole-file reads of checkpoints (SHA-256, torch.load) and,
   once a step has finished, the memory of the process and of
   its data-loader workers from ``/proc/<pid>/smaps_rollup`` (RSS, PSS, USS = private pages) and, from
   ``/proc/<pid>/smaps``, what the memory-mapped data files cost: resident, proportional and private (copied)
   bytes. Copied bytes (anonymous pages inside a data mapping) would mean the data was copied into that
   process.
3. Prints one line per process count and writes ``benchmarks/results/startup.json`` (benchmarks/common.py).

Launch-to-first-step is measured from just before torchrun is started to the first call of the training step on
the slowest rank. On a shared 2-core machine N processes share the same 2 cores, so CPU-bound phases
(imports, model construction) stretch with N; the memory numbers do not depend on that.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file by torchrun (--worker)
    sys.path.insert(0, str(ROOT))

from benchmarks.common import add_output_args, write_results  # noqa: E402

PHASES = ["python_up", "torch_imported", "dist_ready", "task_built", "run_checked", "optimizer_ready",
          "targets_ready", "ddp_ready", "first_step"]


# ----------------------------------------------------------------------------------------- worker side
def _rollup(pid: int | str) -> dict:
    """RSS / PSS / USS (private clean + dirty) in bytes from /proc/<pid>/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                fields[parts[0][:-1]] = int(parts[1]) * 1024
    return {"rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0),
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}  # fmt: skip


def _data_maps(pid: int | str, data_root: str) -> dict:
    """Resident, proportional and copied bytes of the mappings of files under ``data_root``. Copied = pages
    of a file mapping that became this process's own anonymous memory (written to, copy-on-write); a
    read-only memory map that is only read has none, however much of it is resident."""
    out = {"files": 0, "rss": 0, "pss": 0, "copied": 0}
    inside = False
    with open(f"/proc/{pid}/smaps", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 5 and "-" in parts[0] and ":" in parts[3]:  # a mapping header line
                inside = len(parts) >= 6 and parts[5].startswith(data_root)
                out["files"] += inside
            elif inside and len(parts) >= 3 and parts[2] == "kB":
                key = {"Rss:": "rss", "Pss:": "pss", "Anonymous:": "copied"}.get(parts[0])
                if key:
                    out[key] += int(parts[1]) * 1024
    return out


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def worker(events_dir: str, data_root: str, script: str, argv: list[str]) -> None:
    """A torchrun worker: run ``script`` with hooks that time its phases and measure its memory."""
    events = {"python_up": time.time()}
    from utils.procs import die_with_launcher

    die_with_launcher()
    import atexit
    import runpy

    import torch  # noqa: F401  (timed: the heaviest import)

    events["torch_imported"] = time.time()
    import engine.run as run

    mem: dict = {}
    steps = {"n": 0}

    def timed(name, fn):
        def wrapper(*a, **k):
            result = fn(*a, **k)
            events.setdefault(name, time.time())
            return result

        return wrapper

    def first_call(name, fn):
        def wrapper(*a, **k):
            events.setdefault(name, time.time())
            return fn(*a, **k)

        return wrapper

    run.init_distributed_mode = timed("dist_ready", run.init_distributed_mode)
    run.check_data_fits = first_call("task_built", run.check_data_fits)  # data opened, model built, inputs known
    run.batch_for = first_call("run_checked", run.batch_for)  # after run.json is checked and written
    run.create_optimizer = timed("optimizer_ready", run.create_optimizer)
    import engine.pretrain

    engine.pretrain.cache_targets = timed("targets_ready", engine.pretrain.cache_targets)
    run.wrap_ddp = timed("ddp_ready", run.wrap_ddp)
    original_epoch = run.train_one_epoch

    def train_one_epoch(module, loader, optimizer, amp, epoch, step_fn, *a, **k):
        def step(*sa, **sk):
            steps["n"] += 1
            if steps["n"] == 1:
                events["first_step"] = time.time()
                cpu = os.times()
                events["cpu_s_to_first_step"] = cpu.user + cpu.system  # this process's CPU seconds so far
            elif steps["n"] == 2:  # one step done: model, optimizer state, loader workers all live
                me = os.getpid()
                kids = _children(me)
                mem.update(main=_rollup(me), data=_data_maps(me, data_root),
                           loader_workers=[_rollup(c) for c in kids],
                           loader_workers_data=[_data_maps(c, data_root) for c in kids])  # fmt: skip
            return step_fn(*sa, **sk)

        return original_epoch(module, loader, optimizer, amp, epoch, step, *a, **k)

    run.train_one_epoch = train_one_epoch

    # Whole-file reads of checkpoints at start-up: SHA-256 (fingerprint, target-cache stamp) and torch.load.
    import utils.integrity

    reads = {"sha256_files": 0, "sha256_bytes": 0, "sha256_s": 0.0, "torch_loads": 0, "torch_load_s": 0.0}
    events["reads"] = reads
    original_sha, original_load = utils.integrity.sha256_file, torch.load

    def sha256_file(path, *a, **k):
        t = time.time()
        try:
            return original_sha(path, *a, **k)
        finally:
            reads["sha256_files"] += 1
            reads["sha256_bytes"] += os.path.getsize(path)
            reads["sha256_s"] += time.time() - t

    def load(*a, **k):
        t = time.time()
        try:
            return original_load(*a, **k)
        finally:
            reads["torch_loads"] += 1
            reads["torch_load_s"] += time.time() - t

    utils.integrity.sha256_file, torch.load = sha256_file, load

    def dump():
        rank = os.environ.get("RANK", "0")
        with open(os.path.join(events_dir, f"rank{rank}.json"), "w", encoding="utf-8") as fh:
            json.dump({"rank": int(rank), "events": events, "memory": mem}, fh)

    atexit.register(dump)
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")


# ---------------------------------------------------------------------------------------- driver side
def write_data(root: Path, folders: int, per_folder: int, seed: int = 0) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed)
    base = root / "MIMIC-IV_QRS"
    for k in range(folders):
        d = base / f"batch_{k}"
        d.mkdir(parents=True, exist_ok=True)
        data = np.lib.format.open_memmap(d / "train_data.npy", "w+", np.float32, (per_folder, 256, 96))
        chans = np.zeros((per_folder, 256), np.int32)
        times = np.zeros((per_folder, 256), np.int32)
        for s in range(0, per_folder, 128):  # chunks: never a whole folder in RAM
            e = min(per_folder, s + 128)
            data[s:e] = rng.standard_normal((e - s, 256, 96), dtype=np.float32)
        n_words = rng.integers(40, 257, size=per_folder)
        for i, n in enumerate(n_words):
            chans[i, :n] = np.arange(n) // 20 % 12 + 1
            times[i, :n] = np.arange(n) % 20 // 2 + 1
            data[i, n:] = 0
        data.flush()
        del data
        np.save(d / "train_data_in_chans.npy", chans)
        np.save(d / "train_data_in_times.npy", times)
    return base


def write_tokenizer(path: Path, name: str) -> Path:
    """A VQ-HBR checkpoint as training writes it (model + AdamW state + epoch), random weights."""
    from dataclasses import asdict

    import torch

    from engine.checkpoint import atomic_torch_save, build_state
    from modeling import create_model

    model = create_model(name)
    optimizer = torch.optim.AdamW(model.parameters())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # allocates the AdamW state a trained checkpoint carries
    atomic_torch_save(build_state(model, 0, optimizer=optimizer, model_config=asdict(model.config)), path)
    return path


def launch(nproc: int, work: Path, data: Path, tokenizer: Path, args) -> dict:
    events_dir = work / f"events_{nproc}"
    events_dir.mkdir(parents=True, exist_ok=True)
    out = work / f"run_{nproc}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "benchmarks/startup.py", "--worker", str(events_dir), str(data), "run_heartlang_pretraining.py",
           "--model", args.model, "--tokenizer_model", args.tokenizer_model, "--tokenizer_weight", str(tokenizer),
           "--dataset_dir", str(data), "--all_batch_folders", "--output_dir", str(out), "--epochs", "1",
           "--max_steps_per_epoch", "2", "--batch_size", str(args.batch_size), "--num_workers", str(args.num_workers),
           "--warmup_epochs", "0", "--val_freq", "0", "--no_save_ckpt"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", HEARTLANG_NO_PROGRESS="1", PYTHONPATH=str(ROOT))
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{nproc} process(es) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    ranks = [json.loads((events_dir / f"rank{r}.json").read_text()) for r in range(nproc)]
    phases = {}
    for name in PHASES:  # seconds since launch, slowest rank
        phases[name] = round(max(r["events"][name] for r in ranks if name in r["events"]) - t0, 2)
    mib = 1 << 20

    def per_rank(key, sub):
        return [round(r["memory"][key][sub] / mib, 1) for r in ranks]

    workers_pss = [round(sum(w["pss"] for w in r["memory"]["loader_workers"]) / mib, 1) for r in ranks]
    workers_uss = [round(sum(w["uss"] for w in r["memory"]["loader_workers"]) / mib, 1) for r in ranks]
    data_copied = sum(r["memory"]["data"]["copied"] for r in ranks) + sum(
        d["copied"] for r in ranks for d in r["memory"]["loader_workers_data"]
    )
    return {
        "processes": nproc,
        "launch_to_first_step_s": phases["first_step"],
        "phases_s": phases,
        "wall_s": round(wall, 1),
        "cpu_s_to_first_step": [round(r["events"]["cpu_s_to_first_step"], 2) for r in ranks],
        "sha256_files_per_rank": [r["events"]["reads"]["sha256_files"] for r in ranks],
        "sha256_mib_all_ranks": round(sum(r["events"]["reads"]["sha256_bytes"] for r in ranks) / (1 << 20), 1),
        "sha256_s_per_rank": [round(r["events"]["reads"]["sha256_s"], 2) for r in ranks],
        "torch_loads_per_rank": [r["events"]["reads"]["torch_loads"] for r in ranks],
        "torch_load_s_per_rank": [round(r["events"]["reads"]["torch_load_s"], 2) for r in ranks],
        "rss_mib": per_rank("main", "rss"),
        "pss_mib": per_rank("main", "pss"),
        "uss_mib": per_rank("main", "uss"),
        "data_map_rss_mib": per_rank("data", "rss"),
        "data_map_pss_mib": per_rank("data", "pss"),
        "data_files_mapped": [r["memory"]["data"]["files"] for r in ranks],
        "data_copied_mib_all_processes": round(data_copied / mib, 2),
        "loader_workers_per_rank": [len(r["memory"]["loader_workers"]) for r in ranks],
        "loader_workers_pss_mib": workers_pss,
        "loader_workers_uss_mib": workers_uss,
        "total_pss_mib": round(sum(r["memory"]["main"]["pss"] for r in ranks) / mib + sum(workers_pss), 1),
    }


def get_args_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser("python -m benchmarks startup", description=__doc__.split("\n")[0])
    ap.add_argument("--nprocs", type=int, nargs="+", default=[1, 2, 4], help="process counts (default: 1 2 4)")
    ap.add_argument("--folders", type=int, default=8, help="batch folders (default: 8)")
    ap.add_argument("--per_folder", type=int, default=256, help="sentences per batch folder (default: 256)")
    ap.add_argument("--model", default="HeartLang", help="model trained (default: HeartLang, full size)")
    ap.add_argument("--tokenizer_model", default="vqhbr", help="tokenizer checkpoint written (default: vqhbr, full size)")
    ap.add_argument("--batch_size", type=int, default=4, help="batch per process (default: 4)")
    ap.add_argument("--num_workers", type=int, default=2, help="data-loader workers per process (default: 2)")
    ap.add_argument("--work_dir", default=None, help="scratch folder (default: a temporary one, removed)")
    add_output_args(ap)
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        work = Path(tmp)
        t = time.time()
        data = write_data(work, args.folders, args.per_folder)
        tokenizer = write_tokenizer(work / "tokenizer.pth", args.tokenizer_model)
        from engine.targets import main as targets_main

        targets_main(["--dataset_dir", str(data), "--tokenizer_model", args.tokenizer_model, "--tokenizer_weight",
                      str(tokenizer), "--splits", "train", "--all_batch_folders"])  # fmt: skip
        data_mib = sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) / (1 << 20)
        tokenizer_mib = tokenizer.stat().st_size / (1 << 20)
        print(f"tokenizer checkpoint ({args.tokenizer_model}, with AdamW state): {tokenizer_mib:.0f} MiB")
        print(f"data: {args.folders} folders x {args.per_folder} sentences = {data_mib:.0f} MiB "
              f"(with targets), prepared in {time.time() - t:.1f} s")  # fmt: skip
        rows = []
        for n in args.nprocs:
            row = launch(n, work, data, tokenizer, args)
            rows.append(row)
            print(f"{n} process(es): launch -> first step {row['launch_to_first_step_s']:.1f} s "
                  f"(phases {row['phases_s']}), CPU s per process {row['cpu_s_to_first_step']}; per process PSS "
                  f"{statistics.mean(row['pss_mib']):.0f} MiB, USS {statistics.mean(row['uss_mib']):.0f} MiB; data maps PSS "
                  f"{statistics.mean(row['data_map_pss_mib']):.1f} MiB/process, copied "
                  f"{row['data_copied_mib_all_processes']:.2f} MiB in all processes; total PSS {row['total_pss_mib']:.0f} MiB; "
                  f"checkpoint SHA-256 per rank {row['sha256_files_per_rank']} ({row['sha256_mib_all_ranks']:.0f} MiB in all)",
                  flush=True)  # fmt: skip
    result = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("work_dir", "out", "label")},
        "data_mib": round(data_mib, 1),
        "tokenizer_checkpoint_mib": round(tokenizer_mib, 1),
        "note": "wall-clock seconds since torchrun was started, slowest rank; memory after one training step",
        "rows": rows,
    }
    write_results("startup", result, argv, label=args.label, out=args.out)
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":  # a torchrun worker of launch()
        worker(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        main()
