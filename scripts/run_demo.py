"""One-command demo of the whole HeartLang pipeline (paper Sec. 3.1-3.3 and the Sec. 4 linear probe).

    python scripts/run_demo.py [--output_dir demo_output] [--size smoke|small|medium]

Stages (each prints the exact command it runs, so the real CLIs can be copied from the log):

1. ``python -m datasets.synthetic``            synthetic cohort in the raw MIMIC-IV-ECG / PTB-XL formats
2. ``mimic_preprocess.py``                     MIMIC-IV path (500 Hz WFDB -> batch_k/{train,val}_data.npy)
   ``python -m datasets.preprocess.ptbxl``     PTB-XL path (Strodthoff folds and label sets)
3. ``QRSTokenizer.py`` for both                ECG sentences of heartbeat words (+ ``--plot``)
4. ``torchrun run_vqhbr_training.py``          VQ-HBR heartbeat tokenizer (``vqhbr_small``)
5. ``torchrun run_heartlang_pretraining.py``   masked sentence pre-training (``HeartLang_small``)
6. ``torchrun run_class_finetuning.py``        linear probe at split ratio 0.01 / 0.1 / 1 for the
   pre-trained AND a randomly initialised encoder, then ``--eval`` of each (results CSV)
7. table (task, ratio, init, test macro AUC) and plots (training curves, codebook usage, a tokenised record)

Everything goes under ``--output_dir``. Runs on CPU (1 process per ~2 cores) or on every visible GPU.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from reporting.tables import collect_probe_results, paired_differences, probe_table  # noqa: E402
from scripts.demo_report import write_plots  # noqa: E402

# Cohort and schedule per --size. "small" is the default demo (< 10 min on 2 CPU cores, measured in
# docs/end_to_end.md); "smoke" is the integration test's (seconds per stage, numbers meaningless; run with
# --nproc 2 by tests/conftest.py: batch 8 leaves each of 2 ranks a step of the 21 MIMIC training records).
SIZES: dict[str, dict] = {
    "smoke": dict(n_mimic=24, n_ptbxl=60, vq_epochs=1, pt_epochs=1, ft_epochs=2, ft_warmup=1, batch=8,
                  ratios=(1.0,), tasks=("superdiagnostic",), vq_model="vqhbr_tiny",
                  pt_model="HeartLang_tiny", ft_model="HeartLang_finetune_tiny"),
    "small": dict(n_mimic=400, n_ptbxl=1500, vq_epochs=8, pt_epochs=24, ft_epochs=100, ft_warmup=1, batch=32,
                  ratios=(0.01, 0.1, 1.0), tasks=("superdiagnostic",), vq_model="vqhbr_small",
                  pt_model="HeartLang_small", ft_model="HeartLang_finetune_small"),
    "medium": dict(n_mimic=2000, n_ptbxl=2000, vq_epochs=20, pt_epochs=40, ft_epochs=60, ft_warmup=5,
                   batch=64, ratios=(0.01, 0.1, 1.0), tasks=("superdiagnostic", "rhythm"),
                   vq_model="vqhbr_small", pt_model="HeartLang_small", ft_model="HeartLang_finetune_small"),
}  # fmt: skip

TASK_CLASSES = {
    "superdiagnostic": 5,
    "subdiagnostic": 23,
    "form": 19,
    "rhythm": 12,
    "diagnostic": 44,
    "all": 71,
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("HeartLang end-to-end demo on a synthetic cohort")
    p.add_argument(
        "--output_dir",
        default="demo_output",
        type=Path,
        help="every artifact goes here (default: %(default)s)",
    )
    p.add_argument(
        "--size",
        default="small",
        choices=sorted(SIZES),
        help="cohort size and schedule preset (default: %(default)s)",
    )
    p.add_argument("--smoke", action="store_const", const="smoke", dest="size", help="= --size smoke")
    p.add_argument("--tasks", nargs="+", default=None, help="PTB-XL label sets probed (default: per size)")
    p.add_argument(
        "--seed", default=0, type=int, help="random seed of the cohort and every stage (default: %(default)s)"
    )
    p.add_argument("--nproc", default=None, type=int, help="torchrun processes (default: GPUs, else 1)")
    p.add_argument("--num_workers", default=None, type=int, help="data processes (default: CPU cores)")
    p.add_argument("--fresh", action="store_true", help="delete --output_dir first (default: resume)")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--results_json", default=None, type=Path,
                   help="also write the run's stage times and test AUCs here, with the command, date and "
                        "machine, e.g. benchmarks/results/demo.json; the runs already in the file move to its "
                        "earlier_runs (default: none)")  # fmt: skip
    return p


class Runner:
    """Prints and runs the stage commands with the repository on PYTHONPATH; stops on the first failure."""

    def __init__(self, dry_run: bool, threads: int, log_dir: Path | None = None):
        self.dry_run = dry_run
        self.log_dir = log_dir  # the full output of each stage: <log_dir>/<NN>_<label>.log
        self.env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        )
        self.env.setdefault("OMP_NUM_THREADS", str(threads))
        self.env.setdefault("HEARTLANG_NO_PROGRESS", "1")
        self.timings: list[tuple[str, float]] = []

    def stage(self, title: str) -> None:
        print(f"\n=== {title} ===", flush=True)

    def run(self, cmd: list[str], label: str, done: Path | None = None) -> None:
        """Run ``cmd``; skipped (printed, not run) when ``done`` exists: a re-run resumes after the last stage."""
        print("$ " + shlex.join(cmd), flush=True)
        if self.dry_run:
            return
        if done is not None and done.exists():
            print(f"  (skipped: {done} exists)")
            return
        t0 = time.time()
        proc = subprocess.run(
            cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        dt = time.time() - t0
        self.timings.append((label, dt))
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            name = f"{len(self.timings):02d}_{re.sub(r'[^A-Za-z0-9.]+', '_', label)}.log"
            (self.log_dir / name).write_text("$ " + shlex.join(cmd) + "\n" + proc.stdout)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0:
            print("\n".join(lines[-60:]))
            raise SystemExit(f"demo stage '{label}' failed with exit code {proc.returncode} (command above)")
        # Keep the console readable: the last lines of each stage (the full logs are in <output_dir>/log/stages).
        for line in lines[-4:]:
            print("  | " + line)
        print(f"  ({dt:.1f} s)", flush=True)


def torchrun_prefix(nproc: int) -> list[str]:
    """``torchrun --standalone`` (a free rendezvous port: several demos can run side by side)."""
    exe = Path(sys.executable).with_name("torchrun")
    head = [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    return [*head, "--standalone", f"--nproc_per_node={nproc}"]


def probe_batch_size(task_dir: Path, ratio: float, batch: int, nproc: int, args) -> int:
    """Per-process batch that gives at least three steps per epoch on the ``ratio`` share of the train split.

    The training loader drops the last incomplete batch, and 1 % of a small cohort is a handful of records
    (12 in the default demo): one full-size batch would be a single optimizer step per epoch.
    """
    import numpy as np

    from sentences.labels import subsample_indices

    labels_file = task_dir / "train_labels.npy"
    if getattr(args, "dry_run", False) and not labels_file.is_file():
        return batch
    n_keep = len(subsample_indices(np.load(labels_file, mmap_mode="r"), ratio, "random", args.seed))
    return max(1, min(batch, n_keep // (3 * nproc)))


def default_nproc() -> int:
    import torch

    return max(torch.cuda.device_count(), 1)


def main(args) -> list[dict]:
    cfg = dict(SIZES[args.size])
    tasks = tuple(args.tasks or cfg["tasks"])
    out = args.output_dir.resolve()
    if args.fresh and out.exists() and not args.dry_run:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    nproc = args.nproc or default_nproc()
    workers = args.num_workers or cores
    run = Runner(args.dry_run, threads=max(cores // nproc, 1), log_dir=out / "log" / "stages")
    py, tr = sys.executable, torchrun_prefix(nproc)
    raw, data = out / "raw", out / "ecg_datasets"
    ckpt, results_csv = out / "checkpoints", out / "results" / "finetune_results.csv"
    t_start = time.time()
    print(f"HeartLang demo: size {args.size}, {nproc} process(es), output {out}")

    run.stage("1/7 synthetic cohort (raw MIMIC-IV-ECG and PTB-XL formats)")
    if not (raw / "ptbxl" / "ptbxl_database.csv").is_file():
        run.run([py, "-m", "datasets.synthetic", "--output_dir", str(raw), "--n_mimic", str(cfg["n_mimic"]),
                 "--n_ptbxl", str(cfg["n_ptbxl"]), "--seed", str(args.seed), "--num_workers", str(workers)], "synthetic")  # fmt: skip

    run.stage("2/7 preprocessing: MIMIC-IV path and PTB-XL path")
    if not (data / "MIMIC-IV" / "batch_0" / "val_data.npy").is_file():
        run.run([py, "mimic_preprocess.py", "--dataset_path", str(raw / "mimic_iv_ecg"), "--output_path",
                 str(data / "MIMIC-IV"), "--num_workers", str(workers)], "mimic_preprocess")  # fmt: skip
    if not all((data / "PTBXL" / t / "test_data.npy").is_file() for t in tasks):
        run.run([py, "-m", "datasets.preprocess.ptbxl", "--dataset_path", str(raw / "ptbxl"), "--output_path",
                 str(data / "PTBXL"), "--subsets", *tasks, "--num_workers", str(workers)], "ptbxl_preprocess")  # fmt: skip

    run.stage("3/7 QRS tokenizer: ECG sentences of heartbeat words")
    common_tok = ["--data_root", str(data), "--num_workers", str(workers), "--no_progress"]
    run.run([py, "QRSTokenizer.py", "--dataset_name", "MIMIC-IV", *common_tok], "tokenize_mimic")
    run.run([py, "QRSTokenizer.py", "--dataset_name", "PTBXL", "--subsets", *tasks, "--plot", "1", *common_tok],
            "tokenize_ptbxl")  # fmt: skip

    stage_common = ["--batch_size", str(cfg["batch"]), "--num_workers", "0", "--seed", str(args.seed)]
    vq_dir, pt_dir = ckpt / "vqhbr", ckpt / "pretrain"
    vq_model = __import__("modeling").get_config(cfg["vq_model"])
    vq_ckpt = vq_dir / f"checkpoint-{cfg['vq_epochs']}.pth"
    pt_ckpt = pt_dir / f"checkpoint-{cfg['pt_epochs']}.pth"
    run.stage(f"4/7 VQ-HBR tokenizer ({cfg['vq_model']}, {vq_model.codebook_size} codes)")
    run.run([*tr, "run_vqhbr_training.py", "--model", cfg["vq_model"], "--codebook_n_emd", str(vq_model.codebook_size),
             "--codebook_emd_dim", str(vq_model.codebook_dim), "--quantize_kmeans_init", "--dataset_dir",
             str(data / "MIMIC-IV_QRS"), "--output_dir", str(vq_dir), "--log_dir", str(out / "log" / "vqhbr"),
             "--epochs", str(cfg["vq_epochs"]), "--warmup_epochs", "1", "--lr", "1e-3", "--min_lr", "1e-4",
             "--val_freq", str(cfg["vq_epochs"]), "--save_ckpt_freq", str(cfg["vq_epochs"]), *stage_common],
            "vqhbr", done=vq_ckpt)  # fmt: skip

    run.stage(f"5/7 masked ECG-sentence pre-training ({cfg['pt_model']})")
    run.run([*tr, "run_heartlang_pretraining.py", "--model", cfg["pt_model"], "--tokenizer_model", cfg["vq_model"],
             "--tokenizer_weight", str(vq_ckpt), "--codebook_size", str(vq_model.codebook_size), "--codebook_dim",
             str(vq_model.codebook_dim), "--dataset_dir", str(data / "MIMIC-IV_QRS"), "--output_dir", str(pt_dir),
             "--log_dir", str(out / "log" / "pretrain"), "--epochs", str(cfg["pt_epochs"]), "--warmup_epochs", "1",
             "--lr", "1e-3", "--clip_grad", "3.0", "--val_freq", str(cfg["pt_epochs"]),
             "--save_ckpt_freq", str(cfg["pt_epochs"]), *stage_common],
            "pretrain", done=pt_ckpt)  # fmt: skip

    run.stage("6/7 linear probe: pre-trained vs randomly initialised encoder, then --eval")
    for task in tasks:
        for ratio in cfg["ratios"]:
            for init in ("pretrained", "random"):
                name = f"{task}_{init}_{ratio:g}"
                batch = probe_batch_size(data / "PTBXL_QRS" / task, ratio, cfg["batch"], nproc, args)
                ft = [*tr, "run_class_finetuning.py", "--model", cfg["ft_model"], "--dataset_dir",
                      str(data / "PTBXL_QRS" / task), "--output_dir", str(ckpt / "finetune" / name), "--trainable",
                      "linear", "--split_ratio", f"{ratio:g}", "--sampling_method", "random", "--is_binary",
                      "--nb_classes", str(TASK_CLASSES[task]), "--batch_size", str(batch), "--num_workers", "0",
                      "--seed", str(args.seed)]  # fmt: skip
                if init == "pretrained":
                    # Also given to --eval (which loads checkpoint-best.pth over it) so that the results
                    # CSV's "finetune" column records which encoder the probe was trained on.
                    ft += ["--finetune", str(pt_ckpt)]
                # The demo probes with the corrected eval-mode backbone (--probe_backbone_eval) so that
                # --cache_features can compute the frozen CLS features once: the original scripts' 100 probe epochs then
                # cost seconds (tested equal to the plain eval-mode probe). The paper-faithful train-mode probe
                # is the default of run_class_finetuning.py (docs/training.md).
                train = [*ft, "--probe_backbone_eval", "--cache_features", "--lr", "5e-3", "--epochs", str(cfg["ft_epochs"]), "--warmup_epochs",
                         str(cfg["ft_warmup"]), "--save_ckpt_freq", str(cfg["ft_epochs"]),
                         "--log_dir", str(out / "log" / "finetune" / name)]  # fmt: skip
                run.run(
                    train,
                    f"probe {name}",
                    done=ckpt / "finetune" / name / f"checkpoint-{cfg['ft_epochs']}.pth",
                )
                run.run([*ft, "--eval", "--results_csv", str(results_csv)], f"eval {name}")

    run.stage("7/7 results and plots")
    if args.dry_run:
        return []
    rows = collect_probe_results(results_csv, ckpt / "finetune")
    table = probe_table(rows)
    print(table)
    (out / "results" / "demo_table.md").write_text(table + "\n")
    for path in write_plots(out, vq_ckpt, data / "PTBXL_QRS"):
        print(f"plot: {path}")
    total = time.time() - t_start
    timing = "\n".join(f"  {label:<40s} {dt:7.1f} s" for label, dt in run.timings)
    print(f"\nstage times:\n{timing}\ntotal {total:.1f} s; everything is under {out}")
    if args.results_json is not None:
        write_results_json(args, run.timings, total, rows, nproc)
    return rows


# What the results file keeps of each probe's row (no paths): macro AUC and AUPRC with their bootstrap
# intervals, the test set's size and positives per class.
PROBE_KEYS = ("task", "ratio", "init", "seed", "n_test", "positives", "macro_auc", "macro_auc_ci", "macro_auprc",
              "macro_auprc_ci", "bootstrap", "run_id")  # fmt: skip


def earlier_runs(path: Path) -> list[dict]:
    """The runs already in the results file ``path``, newest first: a new run is added, none is lost."""
    import json

    if not path.is_file():
        return []
    try:
        old = json.loads(path.read_text())
    except ValueError as exc:
        raise SystemExit(f"{path}: not a results file ({exc}); move it away or choose another --results_json") from None
    return [{k: v for k, v in old.items() if k != "earlier_runs"}, *old.get("earlier_runs", [])]


def write_results_json(args, timings: list[tuple[str, float]], total: float, rows: list[dict], nproc: int) -> None:
    """The run as a results file: command, date, machine, stage seconds, test macro AUC per probe (no paths
    but the repository-relative command)."""
    import datetime
    import platform

    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").is_file() else platform.machine()  # fmt: skip
    def portable(a: str) -> str:  # no absolute path of this machine in a results file
        if not os.path.isabs(a):
            return a
        return os.path.relpath(a, REPO) if Path(a).resolve().is_relative_to(REPO) else "<outside the repository>"

    argv = [portable(a) for a in sys.argv[1:]]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    result = {
        "command": shlex.join(["python", "scripts/run_demo.py", *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": commit.stdout.strip() or None,
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
                    "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "size": args.size, "processes": nproc, "seed": args.seed,
        "total_s": round(total, 1),
        "stage_s": {label: round(dt, 1) for label, dt in timings},
        "test_macro_auc": [{k: r[k] for k in ("task", "ratio", "init", "macro_auc", "n_test")} for r in rows],
        "probes": [{k: r[k] for k in PROBE_KEYS if k in r} for r in rows],
        "paired_differences": paired_differences(rows),
        "table": probe_table(rows),
    }  # fmt: skip
    from utils.artifacts import write_json

    result["earlier_runs"] = earlier_runs(args.results_json)
    write_json(args.results_json, result)  # whole or not at all: the earlier runs are in it
    print(f"results: {args.results_json}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
