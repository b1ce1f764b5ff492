"""Real-data check on the PTB-XL subset in ../shared/data/ptbxl (paper Sec. 3.2-3.3 pre-training, Sec. 4 probe).

    python scripts/ptbxl_real_check.py [--ptbxl ../shared/data/ptbxl] [--output_dir real_check_output]

1. The records WITHOUT a database row (unlabeled, ``RECORDS_WITHOUT_METADATA``) are treated like MIMIC-IV-ECG:
   NaN filling, standard lead order and the 0.67-40 Hz band-pass of the MIMIC chain (they are already
   100 Hz / 1000 samples, so no resampling), 90/10 train/val, written as ``MIMIC-IV/batch_0``.
2. The labeled records go through the PTB-XL protocol (``python -m datasets.preprocess.ptbxl``: folds 1-8
   train, 9 val, 10 test; superdiagnostic).
3. ``QRSTokenizer.py`` on both, ``run_vqhbr_training.py`` + ``run_heartlang_pretraining.py`` on the
   unlabeled sentences (``*_small`` models), then the linear probe at the given ratios for the pre-trained
   and a randomly initialised encoder, ``--eval`` each (the demo's stages: scripts/run_demo.py).
4. Test macro AUC of both, with the sizes used, into ``<output_dir>/ptbxl_real_check.json`` and
   ``benchmarks/results/ptbxl_real_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from reporting.tables import collect_probe_results, probe_table  # noqa: E402
from scripts.run_demo import Runner, probe_batch_size, torchrun_prefix  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("HeartLang real-data check on the shared PTB-XL subset")
    p.add_argument("--ptbxl", default=REPO.parent / "shared" / "data" / "ptbxl", type=Path,
                   help="PTB-XL folder (default: ../shared/data/ptbxl next to the repository)")  # fmt: skip
    p.add_argument("--output_dir", default=Path("real_check_output"), type=Path,
                   help="folder for every artifact of the check (default: %(default)s)")  # fmt: skip
    p.add_argument("--vq_epochs", default=8, type=int, help="VQ-HBR epochs (default: %(default)s)")
    p.add_argument("--pt_epochs", default=12, type=int, help="pre-training epochs (default: %(default)s)")
    p.add_argument(
        "--ft_epochs",
        default=100,
        type=int,
        help="linear-probe epochs (default: %(default)s, as the original scripts)",
    )
    p.add_argument("--ratios", nargs="+", default=[0.1, 1.0], type=float,
                   help="label fractions probed (default: 0.1 1.0)")  # fmt: skip
    p.add_argument(
        "--batch_size", default=32, type=int, help="batch size of every stage (default: %(default)s)"
    )
    p.add_argument(
        "--max_unlabeled",
        default=0,
        type=int,
        help="use only the first N unlabeled records (default: 0, all)",
    )
    p.add_argument("--seed", default=0, type=int, help="random seed of every stage (default: %(default)s)")
    p.add_argument(
        "--results_json",
        default=REPO / "benchmarks" / "results" / "ptbxl_real_check.json",
        type=Path,
        help="results file (default: benchmarks/results/ptbxl_real_check.json)",
    )
    return p


def build_unlabeled_folder(ptbxl: Path, out: Path, max_records: int, seed: int) -> dict:
    """Unlabeled PTB-XL records -> ``out/batch_0/{train,val}_data.npy`` (N, 12, 1000) float32, MIMIC chain."""
    import wfdb

    from datasets.preprocess.signal import bandpass, fill_nonfinite, reorder_leads

    names = (ptbxl / "RECORDS_WITHOUT_METADATA").read_text().split()
    if max_records:
        names = names[:max_records]
    sigs, failed = [], []
    for name in names:
        try:
            rec = wfdb.rdrecord(str(ptbxl / name))
        except Exception as err:  # a broken file is reported, never zero-filled
            failed.append(f"{name}: {err}")
            continue
        x = reorder_leads(fill_nonfinite(rec.p_signal.T), [s.upper() for s in rec.sig_name])
        sigs.append(bandpass(x).astype(np.float32))
    data = np.stack(sigs)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(data), bool)
    is_val[rng.choice(len(data), size=max(1, round(0.1 * len(data))), replace=False)] = True
    (out / "batch_0").mkdir(parents=True, exist_ok=True)
    np.save(out / "batch_0" / "train_data.npy", data[~is_val])
    np.save(out / "batch_0" / "val_data.npy", data[is_val])
    return {"unlabeled_train": int((~is_val).sum()), "unlabeled_val": int(is_val.sum()), "unreadable": failed}


def pretrain_unlabeled(args, run: Runner) -> dict:
    """Stages 1-4: the data folders, the tokenised sentences, VQ-HBR and the pre-trained HeartLang_small.

    Each stage is skipped when its output exists (a re-run resumes). Returns the paths and sizes the probes
    need (also used by scripts/probe_mode_check.py, which reuses ONE pre-training run)."""
    out = args.output_dir.resolve()
    data, ckpt = out / "ecg_datasets", out / "checkpoints"
    cores = os.cpu_count() or 1
    py, tr = sys.executable, torchrun_prefix(1)
    run.stage("1/5 unlabeled records -> MIMIC-IV-style batch folder")
    sizes = build_unlabeled_folder(args.ptbxl, data / "MIMIC-IV", args.max_unlabeled, args.seed)
    print(
        f"  {sizes['unlabeled_train']} train / {sizes['unlabeled_val']} val, {len(sizes['unreadable'])} unreadable"
    )
    run.stage("2/5 labeled records -> PTB-XL protocol (superdiagnostic)")
    run.run([py, "-m", "datasets.preprocess.ptbxl", "--dataset_path", str(args.ptbxl), "--output_path",
             str(data / "PTBXL"), "--subsets", "superdiagnostic", "--num_workers", str(cores)], "ptbxl_preprocess")  # fmt: skip
    run.stage("3/5 QRS tokenizer")
    for name in ("MIMIC-IV", "PTBXL"):
        run.run([py, "QRSTokenizer.py", "--dataset_name", name, "--data_root", str(data), "--num_workers", str(cores),
                 "--no_progress"], f"tokenize {name}")  # fmt: skip
    run.stage("4/5 VQ-HBR and pre-training on the unlabeled sentences (vqhbr_small, HeartLang_small)")
    common = ["--batch_size", str(args.batch_size), "--num_workers", "0", "--seed", str(args.seed)]
    vq_ckpt = ckpt / "vqhbr" / f"checkpoint-{args.vq_epochs}.pth"
    pt_ckpt = ckpt / "pretrain" / f"checkpoint-{args.pt_epochs}.pth"
    run.run([*tr, "run_vqhbr_training.py", "--model", "vqhbr_small", "--codebook_n_emd", "512", "--codebook_emd_dim",
             "32", "--quantize_kmeans_init", "--dataset_dir", str(data / "MIMIC-IV_QRS"), "--output_dir",
             str(ckpt / "vqhbr"), "--epochs", str(args.vq_epochs), "--warmup_epochs", "1", "--lr", "1e-3",
             "--min_lr", "1e-4", "--val_freq", str(args.vq_epochs), "--save_ckpt_freq", str(args.vq_epochs), *common],
            "vqhbr", done=vq_ckpt)  # fmt: skip
    run.run([*tr, "run_heartlang_pretraining.py", "--model", "HeartLang_small", "--tokenizer_model", "vqhbr_small",
             "--tokenizer_weight", str(vq_ckpt), "--codebook_size", "512", "--codebook_dim", "32", "--dataset_dir",
             str(data / "MIMIC-IV_QRS"), "--output_dir", str(ckpt / "pretrain"), "--epochs", str(args.pt_epochs),
             "--warmup_epochs", "1", "--lr", "1e-3", "--clip_grad", "3.0", "--save_ckpt_freq", str(args.pt_epochs),
             *common], "pretrain", done=pt_ckpt)  # fmt: skip
    task_dir = data / "PTBXL_QRS" / "superdiagnostic"
    return {"out": out, "ckpt": ckpt, "pt_ckpt": pt_ckpt, "task_dir": task_dir, "sizes": sizes,
            "n_classes": int(np.load(task_dir / "train_labels.npy").shape[1])}  # fmt: skip


def main(args) -> dict:
    cores = os.cpu_count() or 1
    run, tr = Runner(False, threads=cores), torchrun_prefix(1)
    t0 = time.time()
    prep = pretrain_unlabeled(args, run)
    out, ckpt, pt_ckpt, task_dir = prep["out"], prep["ckpt"], prep["pt_ckpt"], prep["task_dir"]
    sizes, n_classes = prep["sizes"], prep["n_classes"]
    run.stage("5/5 linear probe, pre-trained vs random init, --eval")
    results_csv = out / "results" / "finetune_results.csv"
    for ratio in args.ratios:
        for init in ("pretrained", "random"):
            name = f"superdiagnostic_{init}_{ratio:g}"
            batch = probe_batch_size(task_dir, ratio, args.batch_size, 1, args)
            ft = [*tr, "run_class_finetuning.py", "--model", "HeartLang_finetune_small", "--dataset_dir", str(task_dir),
                  "--output_dir", str(ckpt / "finetune" / name), "--trainable", "linear", "--split_ratio", f"{ratio:g}",
                  "--is_binary", "--nb_classes", str(n_classes), "--batch_size", str(batch), "--num_workers", "0",
                  "--seed", str(args.seed)]  # fmt: skip
            ft += ["--finetune", str(pt_ckpt)] if init == "pretrained" else []
            # Eval-mode backbone (corrected recipe) so that the CLS features are computed once; the official
            # train-mode probe is compared with it in scripts/probe_mode_check.py.
            run.run([*ft, "--probe_backbone_eval", "--cache_features", "--lr", "5e-3", "--epochs", str(args.ft_epochs), "--warmup_epochs", "1", "--save_ckpt_freq",
                     str(args.ft_epochs)], f"probe {name}",
                    done=ckpt / "finetune" / name / f"checkpoint-{args.ft_epochs}.pth")  # fmt: skip
            run.run([*ft, "--eval", "--results_csv", str(results_csv)], f"eval {name}")
    rows = collect_probe_results(results_csv, ckpt / "finetune")
    table = probe_table(rows)
    print(table)
    split_sizes = {s: int(np.load(task_dir / f"{s}_labels.npy").shape[0]) for s in ("train", "val", "test")}
    report = {
        "data": str(args.ptbxl), **{k: v for k, v in sizes.items() if k != "unreadable"},
        "unreadable": len(sizes["unreadable"]), "labeled_superdiagnostic": split_sizes, "n_classes": n_classes,
        "models": {"vqhbr": "vqhbr_small", "pretrain": "HeartLang_small", "probe": "HeartLang_finetune_small"},
        "epochs": {"vqhbr": args.vq_epochs, "pretrain": args.pt_epochs, "probe": args.ft_epochs},
        "results": rows, "table": table, "seconds": round(time.time() - t0, 1),
        "stage_seconds": {label: round(dt, 1) for label, dt in run.timings},
    }  # fmt: skip
    for path in (out / "ptbxl_real_check.json", args.results_json):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"total {report['seconds']} s; report in {args.results_json}")
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
