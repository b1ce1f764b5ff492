"""Linear probe with the original's train-mode backbone vs an eval-mode backbone, on real PTB-XL records.

    python -m benchmarks probe_mode [--output_dir real_check_output] [--seeds 0 1 2] [--ratios 0.1 1]

The paper's probe (the original's epoch loop calls ``model.train(True)`` on the whole classifier) trains the
head on features of a frozen backbone whose dropout 0.1 and embedding dropout 0.1 are ON: every epoch sees
other, noisier features than the eval-mode features the test is scored on. This script measures what that
costs, reusing ONE pre-training run (``scripts/ptbxl_real_check.py`` stages 1-4, skipped when its outputs
exist in ``--output_dir``):

1. For every ratio x seed: the linear probe (``HeartLang_finetune_small`` from the pre-trained checkpoint)
   in the official train mode (the backbone runs on the fly under ``torch.no_grad``) and in eval mode
   (``--probe_backbone_eval --cache_features``), then ``--eval`` of each: test macro AUC.
2. Speed of the original README's probe command on CPU (its flags: ``HeartLang_finetune_base``, batch 256, lr 5e-3,
   10 warm-up of 100 epochs, ``--num_workers`` default) in both modes. Eval mode is timed over all 100 epochs;
   train mode, whose epochs all cost the same, over ``--speed_epochs`` and ``1`` epoch, and the 100-epoch
   command is projected from the per-epoch time (the difference of the two runs, so start-up is counted once).
3. ``benchmarks/results/probe_mode.json`` (run ``--label``) and a table on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

from benchmarks.common import REPO, relative, write_results
from scripts.ptbxl_real_check import get_args_parser as real_check_parser
from scripts.ptbxl_real_check import pretrain_unlabeled
from scripts.run_demo import Runner, probe_batch_size, torchrun_prefix

MODES = {
    "train": [],  # official: the whole classifier in train mode, backbone dropout on, features on the fly
    "eval": ["--probe_backbone_eval", "--cache_features"],  # corrected: eval-mode backbone, cached features
}


def get_args_parser():
    p = real_check_parser()
    p.description = "linear probe: the original's train-mode backbone vs an eval-mode backbone"
    p.prog = "python -m benchmarks probe_mode"
    p.set_defaults(results_json=None)  # default: benchmarks/results/probe_mode.json
    p.add_argument(
        "--label", default="latest", help="run name inside benchmarks/results/probe_mode.json (default: %(default)s)"
    )
    # --seeds (probe seeds; pre-training uses --seed; default: 0 1 2) comes from the real-data check's parser.
    p.add_argument(
        "--speed_epochs",
        default=4,
        type=int,
        help="epochs of the timed train-mode run of the original scripts' command (default: %(default)s)",
    )
    p.add_argument(
        "--no_speed", action="store_true", help="skip the speed measurement of the original scripts' command"
    )
    return p


def last_test_auc(run_dir: Path) -> float:
    """Test macro AUC of the last ``--eval`` of ``run_dir`` (its test_log.txt)."""
    lines = (run_dir / "test_log.txt").read_text().strip().splitlines()
    return float(json.loads(lines[-1])["macro_auc"])


def probe_runs(args, run: Runner, prep: dict) -> list[dict]:
    tr, task_dir = torchrun_prefix(1), prep["task_dir"]
    root = prep["ckpt"] / "probe_mode"
    rows = []
    for ratio in args.ratios:
        for seed in args.seeds:
            for mode, flags in MODES.items():
                name = f"{mode}_{ratio:g}_seed{seed}"
                out = root / name
                batch = probe_batch_size(task_dir, ratio, args.batch_size, 1, SimpleNamespace(seed=seed))
                ft = [*tr, "run_class_finetuning.py", "--model", "HeartLang_finetune_small", "--dataset_dir",
                      str(task_dir), "--output_dir", str(out), "--trainable", "linear", "--split_ratio", f"{ratio:g}",
                      "--is_binary", "--nb_classes", str(prep["n_classes"]), "--batch_size", str(batch),
                      "--num_workers", "0", "--seed", str(seed), "--finetune", str(prep["pt_ckpt"]), *flags]  # fmt: skip
                t0 = time.time()
                run.run([*ft, "--lr", "5e-3", "--epochs", str(args.ft_epochs), "--warmup_epochs", "1",
                         "--save_ckpt_freq", str(args.ft_epochs)], f"probe {name}",
                        done=out / f"checkpoint-{args.ft_epochs}.pth")  # fmt: skip
                train_s = time.time() - t0
                run.run([*ft, "--eval", "--results_csv", str(root / "finetune_results.csv")], f"eval {name}")
                rows.append({"mode": mode, "ratio": ratio, "seed": seed, "batch_size": batch,
                             "test_macro_auc": last_test_auc(out), "probe_seconds": round(train_s, 1)})  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for ratio in sorted({r["ratio"] for r in rows}):
        per = {
            m: [r["test_macro_auc"] for r in rows if r["ratio"] == ratio and r["mode"] == m] for m in MODES
        }
        diffs = [
            t - e
            for t, e in zip(
                [r["test_macro_auc"] for r in rows if r["ratio"] == ratio and r["mode"] == "train"],
                [r["test_macro_auc"] for r in rows if r["ratio"] == ratio and r["mode"] == "eval"],
            )
        ]
        item = {"ratio": ratio, "n_seeds": len(per["train"])}
        for m, v in per.items():
            item[f"{m}_mean"] = statistics.mean(v)
            item[f"{m}_std"] = statistics.stdev(v) if len(v) > 1 else 0.0
        item["train_minus_eval_per_seed"] = diffs
        item["train_minus_eval_mean"] = statistics.mean(diffs)
        out.append(item)
    return out


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:])
        raise SystemExit(f"timed command failed ({proc.returncode}): {' '.join(cmd)}")
    return time.time() - t0


def seed_command_speed(args, run: Runner, prep: dict) -> dict:
    """samples/s of the original README's probe command (full-size classifier, random init: speed does not depend on
    the weights and no full-size pre-trained checkpoint is used here) on the real superdiagnostic folder."""
    import numpy as np

    from sentences.loader import fit_batch_size

    task_dir, root = prep["task_dir"], prep["ckpt"] / "seed_speed"
    shutil.rmtree(root, ignore_errors=True)  # timed from scratch every time
    n_train = int(np.load(task_dir / "train_labels.npy", mmap_mode="r").shape[0])
    n_val = int(np.load(task_dir / "val_labels.npy", mmap_mode="r").shape[0])
    batch = fit_batch_size(256, n_train)
    per_epoch = (n_train // batch) * batch  # drop_last
    seed_cmd = [*torchrun_prefix(1), "run_class_finetuning.py", "--dataset_dir", str(task_dir),
                "--model", "HeartLang_finetune_base", "--trainable", "linear", "--split_ratio", "1",
                "--sampling_method", "random", "--weight_decay", "0.05", "--batch_size", "256", "--lr", "5e-3",
                "--update_freq", "1", "--warmup_epochs", "10", "--layer_decay", "0.9", "--save_ckpt_freq", "100",
                "--seed", "0", "--is_binary", "--nb_classes", str(prep["n_classes"]), "--world_size", "1"]  # fmt: skip
    env = dict(run.env)
    result = {"command": "the original README's linear-probe command (no --finetune), --dataset_dir PTBXL_QRS/superdiagnostic",
              "n_train": n_train, "n_val": n_val, "batch_size": batch, "train_samples_per_epoch": per_epoch,
              "threads": env.get("OMP_NUM_THREADS")}  # fmt: skip
    # eval mode: cached features, the whole 100-epoch command
    t_eval = timed([*seed_cmd, "--epochs", "100", "--output_dir", str(root / "eval"), "--no_auto_resume",
                    *MODES["eval"]], env)  # fmt: skip
    result["eval_mode"] = {
        "epochs": 100,
        "wall_s": round(t_eval, 1),
        "samples_per_s": round(100 * per_epoch / t_eval, 1),
    }
    # train mode: every epoch runs the backbone; time E and 1 epochs, project 100
    e = args.speed_epochs
    t_e = timed(
        [*seed_cmd, "--epochs", str(e), "--output_dir", str(root / f"train{e}"), "--no_auto_resume"], env
    )
    t_1 = timed([*seed_cmd, "--epochs", "1", "--output_dir", str(root / "train1"), "--no_auto_resume"], env)
    epoch_s = (t_e - t_1) / (e - 1)
    projected = t_1 + 99 * epoch_s
    result["train_mode"] = {
        "timed_epochs": [1, e], "wall_s": [round(t_1, 1), round(t_e, 1)], "seconds_per_epoch": round(epoch_s, 2),
        "projected_100_epoch_wall_s": round(projected, 1), "samples_per_s": round(100 * per_epoch / projected, 1),
        "samples_per_s_steady": round(per_epoch / epoch_s, 1),
    }  # fmt: skip
    return result


def table(summary: list[dict], rows: list[dict]) -> str:
    lines = ["| ratio | train-mode backbone (official) | eval-mode backbone (corrected) | train - eval |",
             "|---|---|---|---|"]  # fmt: skip
    for s in summary:
        lines.append(f"| {s['ratio']:g} | {s['train_mean']:.4f} +- {s['train_std']:.4f} | "
                     f"{s['eval_mean']:.4f} +- {s['eval_std']:.4f} | {s['train_minus_eval_mean']:+.4f} |")  # fmt: skip
    lines += ["", "| mode | ratio | seed | batch | test macro AUC |", "|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['ratio']:g} | {r['seed']} | {r['batch_size']} | {r['test_macro_auc']:.4f} |"
              for r in rows]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    if args.speed_epochs < 2:
        raise SystemExit("--speed_epochs must be >= 2 (the per-epoch time is a difference of two runs)")
    cores = os.cpu_count() or 1
    run = Runner(False, threads=cores)
    t0 = time.time()
    prep = pretrain_unlabeled(args, run)
    run.stage(f"probes: {len(args.ratios)} ratios x {len(args.seeds)} seeds x train/eval-mode backbone")
    rows = probe_runs(args, run, prep)
    summary = summarise(rows)
    text = table(summary, rows)
    print(text)
    speed = None
    if not args.no_speed:
        run.stage("speed of the original README's probe command, both modes (CPU)")
        speed = seed_command_speed(args, run, prep)
        print(json.dumps(speed, indent=2))
    report = {
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average_at_end": os.getloadavg(),
        "data": relative(args.ptbxl), "task": "PTB-XL superdiagnostic (shared subset, folds 1-8/9/10)",
        "sizes": {k: v for k, v in prep["sizes"].items() if k != "unreadable"},
        "pretraining": {"vqhbr": "vqhbr_small", "pretrain": "HeartLang_small", "max_unlabeled": args.max_unlabeled,
                        "vq_epochs": args.vq_epochs,
                        "pt_epochs": args.pt_epochs, "batch_size": args.batch_size, "seed": args.seed,
                        "checkpoint": relative(prep["pt_ckpt"], args.output_dir)},
        "probe": {"model": "HeartLang_finetune_small", "epochs": args.ft_epochs, "lr": 5e-3, "warmup_epochs": 1,
                  "modes": {m: " ".join(f) or "(official defaults)" for m, f in MODES.items()}},
        "rows": rows, "summary": summary, "table": text, "seed_command_speed": speed,
        "seconds": round(time.time() - t0, 1), "stage_seconds": {label: round(dt, 1) for label, dt in run.timings},
    }  # fmt: skip
    print(f"total {report['seconds']} s")
    write_results("probe_mode", report, argv, label=args.label, out=args.results_json)
    return report


if __name__ == "__main__":
    main()
