"""Reproduce the paper's linear-probe table (Table 1, paper Sec. 4.2) from a pre-trained HeartLang checkpoint.

    python scripts/reproduce_paper.py --finetune checkpoints/pretrain/MIMIC-IV/checkpoint-200.pth --seeds 0 1 2
    python scripts/reproduce_paper.py --table_only            # re-assemble the table from the results CSV

For every task (PTB-XL super / sub / form / rhythm, CPSC2018, CSN) x label ratio (1 %, 10 %, 100 %) x seed it
runs the original README's linear-probe command (``torchrun run_class_finetuning.py --trainable linear ...`` with
the flags of ``scripts/finetune/*/12Leads/*linear_prob.sh``), then the same command with ``--eval``, which
appends the test macro AUC, macro AUPRC and their bootstrap intervals to ``--results_csv``. By default every
probe is also run on a randomly initialised encoder (the original's U(-0.1, 0.1) draw, no ``--finetune``),
probed the same way: the baseline that says what pre-training adds (``--baseline none`` skips it). Finished
runs are skipped, so an interrupted reproduction resumes. Finally the rows are collected into
``<output_dir>/table.md``: the paper-style table (mean +- std over seeds in %, pre-trained and random init
side by side, the paper's numbers, Table 1, beside them), then every run with its 95 % intervals, the paired
pre-trained - random differences with their intervals and the per-seed values (reporting.tables;
docs/evidence.md says how to read them).

Data: the tokenised folders under ``--data_root`` (``PTBXL_QRS/<subset>``, ``CPSC2018_QRS``, ``CSN_QRS``),
made by the preprocessing scripts and ``QRSTokenizer.py`` (docs/preprocessing.md, docs/tokenizer.md).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from reporting.results import read_results  # noqa: E402
from reporting.tables import PRE, RANDOM, caveat_note, collect_probe_results, probe_table  # noqa: E402
from scripts.run_demo import default_nproc, torchrun_prefix  # noqa: E402
from sentences.labels import SAMPLING_METHODS  # noqa: E402

# key -> (row label, dataset folder under --data_root, paper Table 1 linear probe {ratio: macro AUC %}).
TASKS: dict[str, tuple[str, str, dict[float, float]]] = {
    "ptbxl_super": ("PTB-XL super", "PTBXL_QRS/superdiagnostic", {0.01: 78.94, 0.1: 85.59, 1.0: 87.52}),
    "ptbxl_sub": ("PTB-XL sub", "PTBXL_QRS/subdiagnostic", {0.01: 64.68, 0.1: 79.34, 1.0: 88.91}),
    "ptbxl_form": ("PTB-XL form", "PTBXL_QRS/form", {0.01: 58.70, 0.1: 63.99, 1.0: 80.23}),
    "ptbxl_rhythm": ("PTB-XL rhythm", "PTBXL_QRS/rhythm", {0.01: 62.08, 0.1: 76.22, 1.0: 90.34}),
    "cpsc2018": ("CPSC2018", "CPSC2018_QRS", {0.01: 60.44, 0.1: 66.26, 1.0: 77.87}),
    "csn": ("CSN", "CSN_QRS", {0.01: 57.94, 0.1: 68.93, 1.0: 82.49}),
}
RATIOS = (0.01, 0.1, 1.0)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Reproduce the HeartLang linear-probe table")
    p.add_argument("--finetune", default="checkpoints/pretrain/MIMIC-IV/checkpoint-200.pth",
                   help="pre-trained HeartLang checkpoint: ours, or the released one as a path or "
                        "hf://org/repo/file (default: %(default)s, what scripts/pretrain/MIMIC-IV.sh writes)")  # fmt: skip
    p.add_argument(
        "--model", default="HeartLang_finetune_base", help="classifier registry name (default: %(default)s)"
    )
    p.add_argument("--data_root", default="datasets/ecg_datasets", type=Path,
                   help="folder holding the tokenised data sets (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--output_dir",
        default="checkpoints/reproduce",
        type=Path,
        help="one folder per run under it (default: %(default)s)",
    )
    p.add_argument("--results_csv", default=None, type=Path, help="default: <output_dir>/results.csv")
    p.add_argument(
        "--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="tasks (default: all)"
    )
    p.add_argument("--ratios", nargs="+", default=list(RATIOS), type=float,
                   help="label fractions (default: 0.01 0.1 1)")  # fmt: skip
    p.add_argument("--seeds", nargs="+", default=[0, 1, 2], type=int,
                   help="probe seeds: training-subset selection and probe initialisation (default: 0 1 2)")  # fmt: skip
    p.add_argument("--baseline", default="random", choices=["random", "none"],
                   help="random: also probe a randomly initialised encoder the same way; none: skip it "
                        "(default: %(default)s)")  # fmt: skip
    p.add_argument("--sampling_method", default="random", choices=list(SAMPLING_METHODS),
                   help="how --split_ratio picks the training records (default: %(default)s)")  # fmt: skip
    p.add_argument("--nproc", default=None, type=int, help="torchrun processes (default: GPUs, else 1)")
    s = p.add_argument_group("schedule (the original scripts' linear-probe flags)")
    s.add_argument("--epochs", default=100, type=int, help="probe epochs (default: %(default)s)")
    s.add_argument("--warmup_epochs", default=10, type=int, help="warm-up epochs (default: %(default)s)")
    s.add_argument(
        "--batch_size", default=256, type=int, help="batch size per process (default: %(default)s)"
    )
    s.add_argument("--lr", default=5e-3, type=float, help="peak learning rate (default: %(default)s)")
    s.add_argument(
        "--weight_decay", default=0.05, type=float, help="AdamW weight decay (default: %(default)s)"
    )
    s.add_argument("--num_workers", default=4, type=int, help="data-loader workers (default: %(default)s)")
    s.add_argument(
        "--extra",
        default="",
        help="more flags for run_class_finetuning.py, one quoted string (default: none)",
    )
    p.add_argument("--dry_run", action="store_true", help="print the commands only")
    p.add_argument("--table_only", action="store_true", help="only assemble the table from the CSV")
    return p


def run_name(args, task: str, ratio: float, seed: int, random_init: bool = False) -> str:
    """Everything that defines the run is in its folder name: task, ratio, sampling, seed, the initial
    checkpoint (``random_init`` for the baseline) and any extra flags (a rerun with another checkpoint never
    reuses an earlier folder)."""
    init = "random_init" if random_init else f"{Path(args.finetune).parent.name}_{Path(args.finetune).stem}"
    extra = re.sub(r"[^A-Za-z0-9.]+", "_", args.extra).strip("_")
    return f"{task}_linear_{ratio:g}_{args.sampling_method}_seed{seed}_{init}" + (
        f"_{extra}" if extra else ""
    )


def probe_commands(
    args, task: str, ratio: float, seed: int, nproc: int, random_init: bool = False
) -> tuple[list[str], list[str], Path]:
    """(train command, eval command, the checkpoint that marks a finished training run); ``random_init``:
    the same probe without ``--finetune`` (the original's random initialisation)."""
    _, folder, _ = TASKS[task]
    dataset_dir = args.data_root / folder
    out = args.output_dir / run_name(args, task, ratio, seed, random_init)
    labels = dataset_dir / "train_labels.npy"
    if not labels.is_file() and not args.dry_run:
        raise FileNotFoundError(f"{labels}: tokenise {folder} first (QRSTokenizer.py; docs/tokenizer.md)")
    # The class count is read from the data (the original scripts hard-code the full data sets' counts).
    n_classes = int(np.load(labels, mmap_mode="r").shape[1]) if labels.is_file() else 0
    common = [*torchrun_prefix(nproc), "run_class_finetuning.py",
              "--dataset_dir", str(dataset_dir), "--output_dir", str(out), "--model", args.model,
              *([] if random_init else ["--finetune", str(args.finetune)]), "--trainable", "linear", "--split_ratio", f"{ratio:g}",
              "--sampling_method", args.sampling_method, "--batch_size", str(args.batch_size),
              "--seed", str(seed), "--is_binary", "--nb_classes", str(n_classes),
              "--num_workers", str(args.num_workers), "--world_size", str(nproc)]  # fmt: skip
    train = [*common, "--lr", str(args.lr), "--weight_decay", str(args.weight_decay), "--update_freq", "1",
             "--warmup_epochs", str(args.warmup_epochs), "--epochs", str(args.epochs), "--layer_decay", "0.9",
             "--save_ckpt_freq", str(args.epochs), *shlex.split(args.extra)]  # fmt: skip
    evaluate = [*common, "--eval", "--results_csv", str(args.results_csv)]
    return train, evaluate, out / f"checkpoint-{args.epochs}.pth"


def latest_rows(results_csv: Path, output_dir: Path) -> dict[str, dict]:
    """{run folder: its last row} for the runs directly under ``output_dir`` (a re-evaluated run replaces
    its earlier row). Old CSVs without the provenance columns are read too (reporting.results)."""
    if not Path(results_csv).is_file():
        raise FileNotFoundError(f"{results_csv}: no results yet; run without --table_only first")
    latest: dict[str, dict] = {}
    for row in read_results(results_csv):
        out = Path(row["output_dir"])
        if out.resolve().parent == Path(output_dir).resolve():
            latest[str(out.resolve())] = row
    return latest


def collect(results_csv: Path, output_dir: Path, init: str = PRE) -> dict[tuple[str, float], list[float]]:
    """{(task key, ratio): [test macro AUC % per seed]} from the last row of each run under ``output_dir``
    whose encoder was ``init`` (pre-trained: a ``--finetune`` checkpoint; random init: none)."""
    by_folder = {folder.replace("_QRS", "").lower(): key for key, (_, folder, _) in TASKS.items()}
    table: dict[tuple[str, float], list[float]] = {}
    for out, row in latest_rows(results_csv, output_dir).items():
        if (PRE if row["finetune"] else RANDOM) != init:
            continue
        folder = row["dataset"] if row["subset"] == "all" else f"{row['dataset']}/{row['subset']}"
        key = by_folder.get(folder.lower())
        if key is None:
            raise ValueError(f"{results_csv}: row of {out} has an unknown data set {folder!r}")
        table.setdefault((key, float(row["ratio"])), []).append(100.0 * float(row["macro_auc"]))
    return table


def _mean_std(vals: list[float]) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.2f} (n=1)"
    return f"{np.mean(vals):.2f} +- {float(np.std(vals, ddof=1)):.2f} (n={len(vals)})"


def format_table(
    results: dict[tuple[str, float], list[float]],
    ratios=RATIOS,
    baseline: dict[tuple[str, float], list[float]] | None = None,
) -> str:
    """Markdown: one row per task, per ratio 'ours mean +- std (n) | paper'; with ``baseline`` (the random-init
    probes) 'ours | random init | paper'."""
    cols = ("ours", "random init", "paper") if baseline is not None else ("ours", "paper")
    head = "| task | " + " | ".join(f"{r * 100:g} % {c}" for r in ratios for c in cols) + " |"
    lines = [head, "|---|" + "---|" * len(cols) * len(ratios)]
    for key, (label, _, paper) in TASKS.items():
        if not any((key, r) in results or (key, r) in (baseline or {}) for r in ratios):
            continue
        cells = []
        for r in ratios:
            cells.append(_mean_std(results.get((key, r), [])))
            if baseline is not None:
                cells.append(_mean_std(baseline.get((key, r), [])))
            cells.append(f"{paper.get(r, math.nan):.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args) -> str | None:
    args.results_csv = args.results_csv or args.output_dir / "results.csv"
    if not args.table_only:
        nproc = args.nproc or default_nproc()
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        )
        inits = (False, True) if args.baseline == "random" else (False,)
        for task in args.tasks:
            for ratio in args.ratios:
                for seed in args.seeds:
                    for random_init in inits:
                        train, evaluate, done = probe_commands(args, task, ratio, seed, nproc, random_init)
                        for cmd, skip in ((train, done.is_file()), (evaluate, False)):
                            print("$ " + shlex.join(cmd), flush=True)
                            if skip:
                                print(f"  (skipped: {done} exists)")
                            if args.dry_run or skip:
                                continue
                            proc = subprocess.run(cmd, cwd=REPO, env=env)
                            if proc.returncode != 0:
                                name = run_name(args, task, ratio, seed, random_init)
                                raise SystemExit(f"{name} failed (exit {proc.returncode})")
    if args.dry_run:
        return None
    ratios = tuple(sorted(set(args.ratios)))
    baseline = collect(args.results_csv, args.output_dir, RANDOM)
    table = format_table(collect(args.results_csv, args.output_dir), ratios, baseline or None)
    note = (f"Linear probe, test macro ROC-AUC %, mean +- std over seeds; pre-trained checkpoint "
            f"{args.finetune}; random init: the same probe on the original's random initialisation; "
            "paper: HeartLang Table 1 (one seed).")  # fmt: skip
    caveat = caveat_note(list(latest_rows(args.results_csv, args.output_dir).values()))
    details = probe_table(collect_probe_results(args.results_csv, args.output_dir))
    text = (f"{caveat}\n\n" if caveat else "") + f"{note}\n\n{table}\n\n## Every run\n\n{details}\n"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "table.md").write_text(text)
    print(text)
    return table


if __name__ == "__main__":
    main(get_args_parser().parse_args())
