"""Real-data check: pre-train on unlabeled PTB-XL records, probe the labeled ones (paper Sec. 3.2-3.3, Sec. 4).

    python scripts/ptbxl_real_check.py [--ptbxl ../shared/data/ptbxl] [--output_dir real_check_output]

Works on the development subset in ../shared/data and on a PhysioNet download of PTB-XL (the files PhysioNet
ships: ``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/``, ``records500/``).

1. Pre-training records (:func:`unlabeled_records`): the records without a row in ``ptbxl_database.csv``
   (the development subset lists them in ``RECORDS_WITHOUT_METADATA``; otherwise they are found on disk
   under ``records100/``). A full PhysioNet download has a row for every record: then the records of the
   training folds 1-8 are used without their labels, and the probes test on fold 10 only (protocol
   ``fixed``), so that no pre-training record is ever a test record. They are treated like MIMIC-IV-ECG
   (NaN filling, standard lead order, the 0.67-40 Hz band-pass of the MIMIC chain; 100 Hz / 1000 samples
   already), 90/10 train/val, written as ``MIMIC-IV/batch_0``.
2. The labeled records go through the PTB-XL protocol (``python -m datasets.preprocess.ptbxl``,
   superdiagnostic); the CPSC2018 and CSN records (``--cpsc2018``, ``--csn``) through theirs, with the
   published split files' labels and classes (``--split_dir``).
3. ``QRSTokenizer.py`` on all of them, ``run_vqhbr_training.py`` + ``run_heartlang_pretraining.py`` on the
   unlabeled sentences (``*_small`` models, one pre-training run with ``--seed``).
4. Linear probes (scripts/fold_probe.py: the eval-mode cached-feature probe of ``run_class_finetuning.py``,
   in-process) of the pre-trained encoder and, by default, of a randomly initialised one (``--baseline``),
   for every label ratio and probe seed (``--seeds``: training-subset selection, head initialisation and the
   random encoder's draw). Protocol ``rotate`` (the default when the labeled records are not pre-training
   records): every PTB-XL fold 1-10 is the test fold once, the next fold validation, the rest training;
   CPSC2018 and CSN records are dealt into ``--other_folds`` folds and rotated the same way. The test
   predictions of all folds are pooled per (data set, ratio, seed, encoder): one row each in
   ``<output_dir>/results/real_check_results.csv`` with macro AUC, macro AUPRC, per-class values and 95 %
   bootstrap intervals (reporting.results), and pre-trained minus random init as a paired difference, per
   seed and as the mean over seeds (reporting.tables.seed_mean_differences).
5. The tables (reporting.tables.probe_table) and the sizes, settings and timings go to
   ``<output_dir>/ptbxl_real_check.json`` and ``--results_json`` (paths relative to the data or output folder).
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

from reporting.results import read_results, write_result  # noqa: E402
from reporting.tables import (  # noqa: E402
    collect_probe_results,
    fold_mean_differences,
    fold_mean_table,
    paired_differences,
    probe_table,
    seed_mean_differences,
    seed_summary,
)
from scripts.run_demo import Runner, torchrun_prefix  # noqa: E402

DATA = REPO.parent / "shared" / "data"
PT_MODEL, FT_MODEL = "HeartLang_small", "HeartLang_finetune_small"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("HeartLang real-data check (PTB-XL, CPSC2018, CSN)")
    p.add_argument("--ptbxl", default=DATA / "ptbxl", type=Path,
                   help="PTB-XL folder: the development subset or a PhysioNet download (default ../shared/data/ptbxl)")  # fmt: skip
    p.add_argument("--cpsc2018", default=DATA / "cpsc2018", type=Path,
                   help="CPSC2018 records (searched recursively; default ../shared/data/cpsc2018; skipped if absent)")  # fmt: skip
    p.add_argument("--csn", default=DATA / "csn", type=Path,
                   help="CSN records (searched recursively; default ../shared/data/csn; skipped if absent)")  # fmt: skip
    p.add_argument("--split_dir", default=DATA / "splits", type=Path,
                   help="folder with the published icbeb_*.csv / chapman_*.csv split files, labels and classes "
                        "(default ../shared/data/splits)")  # fmt: skip
    p.add_argument("--datasets", nargs="+", default=["ptbxl", "cpsc2018", "csn"], choices=["ptbxl", "cpsc2018", "csn"],
                   help="labeled sets to probe (default all three; a set whose folder is absent is skipped with a note)")  # fmt: skip
    p.add_argument(
        "--output_dir",
        default=Path("real_check_output"),
        type=Path,
        help="every artifact goes here (default: %(default)s)",
    )
    p.add_argument("--vq_epochs", default=8, type=int, help="VQ-HBR epochs (default 8)")
    p.add_argument("--pt_epochs", default=12, type=int, help="pre-training epochs (default 12)")
    p.add_argument(
        "--ft_epochs", default=100, type=int, help="linear-probe epochs (default 100, the original's)"
    )
    p.add_argument(
        "--ratios", nargs="+", default=[0.1, 1.0], type=float, help="label ratios probed (default 0.1 1)"
    )
    p.add_argument("--batch_size", default=32, type=int, help="batch size of every stage (default 32)")
    p.add_argument(
        "--max_unlabeled",
        default=0,
        type=int,
        help="use only the first N pre-training records (default 0: all)",
    )
    p.add_argument(
        "--seed", default=0, type=int, help="seed of the pre-training run and the 90/10 split (default 0)"
    )
    p.add_argument("--seeds", nargs="+", default=[0, 1, 2], type=int,
                   help="probe seeds: training-subset selection, head initialisation, random encoder (default 0 1 2)")  # fmt: skip
    p.add_argument("--protocol", default="auto", choices=["auto", "rotate", "fixed"],
                   help="rotate: every PTB-XL fold tests once; fixed: folds 1-8/9/10; auto (default): rotate unless "
                        "the pre-training records are labeled records")  # fmt: skip
    p.add_argument(
        "--other_folds", default=5, type=int, help="folds dealt to the CPSC2018 / CSN records (default 5)"
    )
    p.add_argument("--baseline", default="random", choices=["random", "none"],
                   help="random (default): also probe a randomly initialised encoder; none: skip it")  # fmt: skip
    p.add_argument(
        "--n_boot", default=1000, type=int, help="bootstrap resamples of each interval (default 1000)"
    )
    p.add_argument("--results_json", default=REPO / "benchmarks" / "results" / "ptbxl_real_check.json", type=Path,
                   help="where the report is also written (default benchmarks/results/ptbxl_real_check.json)")  # fmt: skip
    return p


def relative(path: str | os.PathLike, *roots: Path) -> str:
    """``path`` relative to the first root that holds it, else its last two parts (never an absolute path)."""
    p = Path(path).resolve()
    for root in roots:
        try:
            return str(p.relative_to(Path(root).resolve()))
        except ValueError:
            continue
    return str(Path(*p.parts[-2:]))


# ------------------------------------------------------------------------------------------------- data
def read_database(ptbxl: Path):
    import pandas as pd

    path = ptbxl / "ptbxl_database.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not a PTB-XL folder (PhysioNet ships ptbxl_database.csv at its top)"
        )
    return pd.read_csv(path, index_col="ecg_id")


def unlabeled_records(ptbxl: Path, max_records: int = 0) -> tuple[list[str], str, bool]:
    """(record names relative to ``ptbxl``, where they come from, whether they are labeled records).

    ``RECORDS_WITHOUT_METADATA`` when present (the development subset); else the 100 Hz records on disk that
    have no database row; else (every record has a row: a full PhysioNet download) the records of folds 1-8,
    whose labels are not used."""
    listed = ptbxl / "RECORDS_WITHOUT_METADATA"
    if listed.is_file():
        names, source, labeled = listed.read_text().split(), "RECORDS_WITHOUT_METADATA", False
    else:
        db = read_database(ptbxl)
        with_row = {str(f) for f in db["filename_lr"]}
        on_disk = sorted(
            str(h.relative_to(ptbxl).with_suffix("")) for h in ptbxl.glob("records100/**/*_lr.hea")
        )
        names = [n for n in on_disk if n not in with_row]
        source, labeled = "100 Hz records on disk without a row in ptbxl_database.csv", False
        if not names:
            names = [str(f) for f in db.loc[db["strat_fold"] <= 8, "filename_lr"]]
            source, labeled = "records of folds 1-8 (every record has a row; labels not used)", True
    if not names:
        raise FileNotFoundError(f"{ptbxl}: no record to pre-train on")
    return (names[:max_records] if max_records else names), source, labeled


def build_unlabeled_folder(ptbxl: Path, out: Path, max_records: int, seed: int) -> dict:
    """Pre-training records -> ``out/batch_0/{train,val}_data.npy`` (N, 12, 1000) float32, MIMIC chain."""
    import wfdb

    from datasets.preprocess.signal import bandpass, fill_nonfinite, reorder_leads

    names, source, labeled = unlabeled_records(ptbxl, max_records)
    sigs, failed = [], []
    for name in names:
        try:
            rec = wfdb.rdrecord(str(ptbxl / name))
        except Exception as err:  # a broken file is reported, never zero-filled
            failed.append(f"{name}: {err}")
            continue
        x = reorder_leads(fill_nonfinite(rec.p_signal.T), [s.upper() for s in rec.sig_name])
        sigs.append(bandpass(x).astype(np.float32))
    if not sigs:
        raise SystemExit(
            f"{ptbxl}: none of the {len(names)} pre-training records could be read: {failed[:3]}"
        )
    data = np.stack(sigs)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(data), bool)
    is_val[rng.choice(len(data), size=max(1, round(0.1 * len(data))), replace=False)] = True
    (out / "batch_0").mkdir(parents=True, exist_ok=True)
    np.save(out / "batch_0" / "train_data.npy", data[~is_val])
    np.save(out / "batch_0" / "val_data.npy", data[is_val])
    return {"unlabeled_train": int((~is_val).sum()), "unlabeled_val": int(is_val.sum()), "unreadable": failed,
            "unlabeled_source": source, "unlabeled_are_labeled_records": labeled}  # fmt: skip


def pretrain_unlabeled(args, run: Runner, variant: dict | None = None) -> dict:
    """Stages 1-4: the data folders, the tokenised sentences, VQ-HBR and the pre-trained HeartLang_small.

    Each stage is skipped when its output exists (a re-run resumes). ``variant`` (the ablation,
    scripts/ablation_real.py): ``{name, vq: [flags], pt: [flags], vq_lr, own_vq}``; its runs go to
    ``checkpoints/ablation/<name>/`` (VQ-HBR shared with the original recipe unless it has VQ-HBR flags or
    ``own_vq``).
    Returns the paths and sizes the probes need (also used by scripts/probe_mode_check.py)."""
    out = args.output_dir.resolve()
    data, ckpt = out / "ecg_datasets", out / "checkpoints"
    cores = os.cpu_count() or 1
    py, tr = sys.executable, torchrun_prefix(1)
    run.stage("1/5 pre-training records -> MIMIC-IV-style batch folder")
    sizes_file = data / "MIMIC-IV" / "sizes.json"
    if not sizes_file.is_file():
        sizes = build_unlabeled_folder(args.ptbxl, data / "MIMIC-IV", args.max_unlabeled, args.seed)
        sizes_file.write_text(json.dumps(sizes, indent=1) + "\n")
    sizes = json.loads(sizes_file.read_text())
    print(f"  {sizes['unlabeled_train']} train / {sizes['unlabeled_val']} val ({sizes['unlabeled_source']}), "
          f"{len(sizes['unreadable'])} unreadable")  # fmt: skip
    run.stage("2/5 labeled records -> PTB-XL protocol (superdiagnostic)")
    if not (data / "PTBXL" / "superdiagnostic" / "test_data.npy").is_file():
        run.run([py, "-m", "datasets.preprocess.ptbxl", "--dataset_path", str(args.ptbxl), "--output_path",
                 str(data / "PTBXL"), "--subsets", "superdiagnostic", "--num_workers", str(cores)], "ptbxl_preprocess")  # fmt: skip
    run.stage("3/5 QRS tokenizer")
    for name in ("MIMIC-IV", "PTBXL"):
        run.run([py, "QRSTokenizer.py", "--dataset_name", name, "--data_root", str(data), "--num_workers", str(cores),
                 "--no_progress"], f"tokenize {name}")  # fmt: skip
    variant = variant or {"name": "original", "vq": [], "pt": []}
    own_vq = bool(variant["vq"]) or variant.get("own_vq", False)
    vq_root = ckpt / "ablation" / variant["name"] if own_vq else ckpt
    pt_root = ckpt if variant["name"] == "original" else ckpt / "ablation" / variant["name"]
    run.stage(f"4/5 VQ-HBR and pre-training on the unlabeled sentences ({variant['name']})")
    common = ["--batch_size", str(args.batch_size), "--num_workers", "0", "--seed", str(args.seed)]
    vq_ckpt = vq_root / "vqhbr" / f"checkpoint-{args.vq_epochs}.pth"
    pt_ckpt = pt_root / "pretrain" / f"checkpoint-{args.pt_epochs}.pth"
    run.run([*tr, "run_vqhbr_training.py", "--model", "vqhbr_small", "--codebook_n_emd", "512", "--codebook_emd_dim",
             "32", "--quantize_kmeans_init", "--dataset_dir", str(data / "MIMIC-IV_QRS"), "--output_dir",
             str(vq_root / "vqhbr"), "--epochs", str(args.vq_epochs), "--warmup_epochs", "1", "--lr",
             str(variant.get("vq_lr", 1e-3)), "--min_lr", "1e-4", "--val_freq", str(args.vq_epochs), "--save_ckpt_freq",
             str(args.vq_epochs), *common, *variant["vq"]], f"vqhbr {variant['name']}", done=vq_ckpt)  # fmt: skip
    run.run([*tr, "run_heartlang_pretraining.py", "--model", PT_MODEL, "--tokenizer_model", "vqhbr_small",
             "--tokenizer_weight", str(vq_ckpt), "--codebook_size", "512", "--codebook_dim", "32", "--dataset_dir",
             str(data / "MIMIC-IV_QRS"), "--output_dir", str(pt_root / "pretrain"), "--epochs", str(args.pt_epochs),
             "--warmup_epochs", "1", "--lr", "1e-3", "--clip_grad", "3.0", "--save_ckpt_freq", str(args.pt_epochs),
             *common, *variant["pt"]], f"pretrain {variant['name']}", done=pt_ckpt)  # fmt: skip
    task_dir = data / "PTBXL_QRS" / "superdiagnostic"
    return {"out": out, "ckpt": ckpt, "pt_ckpt": pt_ckpt, "task_dir": task_dir, "sizes": sizes, "data": data,
            "n_classes": int(np.load(task_dir / "train_labels.npy").shape[1])}  # fmt: skip


def ptbxl_pool(data: Path, ptbxl: Path):
    """The labeled PTB-XL records (superdiagnostic) with their ``strat_fold``."""
    from scripts.fold_probe import SPLITS, load_pool

    db = read_database(ptbxl)
    ids = np.concatenate([np.load(data / "PTBXL" / "superdiagnostic" / f"{s}_ecg_ids.npy") for s in SPLITS])
    folds = db.loc[ids, "strat_fold"].to_numpy()
    return load_pool(data / "PTBXL_QRS" / "superdiagnostic", folds, [f"ecg_id {i}" for i in ids])


def other_pool(args, run: Runner, data: Path, name: str, k: int):
    """CPSC2018 / CSN: their preprocessing with the published split files, tokenised, dealt into k folds.
    None (with a note) when the records or the split files are absent."""
    from scripts.fold_probe import SPLITS, load_pool, round_robin_folds

    raw, prefix, module = {
        "CPSC2018": (args.cpsc2018, "icbeb", "cpsc2018"),
        "CSN": (args.csn, "chapman", "csn"),
    }[name]
    files = [args.split_dir / f"{prefix}_{s}.csv" for s in SPLITS]
    missing = [str(p) for p in (raw, *files) if not p.exists()]
    if missing:
        print(f"  {name}: skipped ({', '.join(missing)} not found)")
        return None
    py, cores = sys.executable, str(os.cpu_count() or 1)
    if not (data / name / "test_labels.npy").is_file():
        run.run([py, "-m", f"datasets.preprocess.{module}", "--dataset_path", str(raw), "--output_path",
                 str(data / name), "--split_files", *map(str, files), "--num_workers", cores], f"{module}_preprocess")  # fmt: skip
    run.run([py, "QRSTokenizer.py", "--dataset_name", name, "--data_root", str(data), "--num_workers", cores,
             "--no_progress"], f"tokenize {name}")  # fmt: skip
    root = data / f"{name}_QRS"
    names = [n for s in SPLITS for n in json.loads((root / f"{s}_records.json").read_text())]
    return load_pool(root, round_robin_folds(len(names), k, seed=0), names)


# ----------------------------------------------------------------------------------------------- probes
def probe_pool(
    pool, dataset: str, subset: str, prep: dict, args, csv: Path, pairs, encoders, recipe: dict
) -> list:
    """Pooled-fold probes of every encoder x ratio x seed -> rows appended to ``csv``."""
    import torch

    from scripts.fold_probe import ProbeConfig, build_encoder, extract_features, rotate_probe, rotation
    from sentences.labels import load_class_names

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    names = load_class_names(pool.root, pool.labels.shape[1])
    cfg = ProbeConfig(epochs=args.ft_epochs, batch_size=args.batch_size)
    written = []
    done = {r["output_dir"] for r in read_results(csv)} if csv.is_file() else set()
    for init, ckpt in encoders:
        cache = None
        for seed in args.seeds:
            model = build_encoder(FT_MODEL, pool.labels.shape[1], ckpt, seed)
            if ckpt is None or cache is None:  # the random encoder is drawn anew for every seed
                cache = extract_features(model, pool.root)
            for ratio in args.ratios:
                out = prep["out"] / "probes" / f"{dataset}_{subset}_{init}_{ratio:g}_seed{seed}"
                if (out / "folds.json").is_file() and str(out) in done:
                    print(f"  {out.name}: skipped (pooled result in {csv})", flush=True)  # a re-run resumes
                    continue
                smallest = min(
                    int((pool.folds != t).sum() - (pool.folds == v).sum())
                    for t, v in pairs or rotation(pool.n_folds)
                )
                if ratio < 1 and int(smallest * ratio) < 1:
                    print(
                        f"  {out.name}: skipped (ratio {ratio:g} of {smallest} training records keeps none)",
                        flush=True,
                    )
                    continue
                res = rotate_probe(cache, pool, model.mlp_head, ratio, seed, cfg, pairs)
                out.mkdir(parents=True, exist_ok=True)
                (out / "folds.json").write_text(json.dumps(res["folds"], indent=1) + "\n")
                row = {"dataset": dataset, "subset": subset, "leads": 12, "ratio": ratio, "sampling": "random",
                       "seed": seed, "trainable": "linear", "finetune": "" if ckpt is None else str(ckpt),
                       "macro_f1": "", "accuracy": "", "classes_without_auc": "", "output_dir": str(out)}  # fmt: skip
                w = write_result(csv, row, ckpt, FT_MODEL, recipe, roc=(res["labels"], res["logits"], names))
                written.append(w.row)
                print(f"  {dataset} {subset} {init} ratio {ratio:g} seed {seed}: {len(res['rows'])} test records over "
                      f"{len(res['folds'])} folds, macro AUC {float(w.row['macro_auc']):.4f} "
                      f"[{w.row['macro_auc_ci_low']}, {w.row['macro_auc_ci_high']}]", flush=True)  # fmt: skip
    return written


def portable(rows: list[dict], out: Path) -> list[dict]:
    """Rows without absolute paths (relative to the output folder; checkpoints by name and hash)."""
    keep = ("task", "ratio", "init", "seed", "n_test", "macro_auc", "macro_auc_ci", "macro_auprc", "macro_auprc_ci",
            "bootstrap", "positives", "run_id")  # fmt: skip
    return [{**{k: r[k] for k in keep if k in r}, "output_dir": relative(r["output_dir"], out)} for r in rows]


def main(args) -> dict:
    cores = os.cpu_count() or 1
    run = Runner(False, threads=cores)
    t0 = time.time()
    prep = pretrain_unlabeled(args, run)
    out, data = prep["out"], prep["data"]
    labeled_pretrain = prep["sizes"]["unlabeled_are_labeled_records"]
    protocol = args.protocol if args.protocol != "auto" else ("fixed" if labeled_pretrain else "rotate")
    if protocol == "rotate" and labeled_pretrain:
        raise SystemExit("--protocol rotate would test on pre-training records (every record of this PTB-XL folder "
                         "has a label); use --protocol fixed or auto")  # fmt: skip
    run.stage(
        f"5/5 linear probes ({protocol}), pre-trained"
        + (" and random init" if args.baseline == "random" else "")
    )
    csv = out / "results" / "real_check_results.csv"
    encoders = [("pretrained", prep["pt_ckpt"])] + ([("random", None)] if args.baseline == "random" else [])
    recipe = {"probe_backbone_eval": True}
    sets, t_probe, fold_of = {}, time.time(), {}
    if "ptbxl" in args.datasets:
        pool = ptbxl_pool(data, args.ptbxl)
        fold_of["superdiagnostic"] = pool.folds
        pairs = None if protocol == "rotate" else [(10, 9)]
        probe_pool(pool, "PTBXL", "superdiagnostic", prep, args, csv, pairs, encoders, recipe)
        sets["PTBXL superdiagnostic"] = {"records": len(pool.labels), "folds": int(pool.n_folds),
                                         "protocol": "rotate (test f, validation f+1, train the rest)" if pairs is None
                                         else "fixed (train 1-8, validation 9, test 10)",
                                         "positives": pool.labels.sum(0).tolist()}  # fmt: skip
    for name in [n for n in ("cpsc2018", "csn") if n in args.datasets]:
        key = {"cpsc2018": "CPSC2018", "csn": "CSN"}[name]
        pool = other_pool(args, run, data, key, args.other_folds)
        if pool is None:
            continue
        fold_of[key] = pool.folds
        probe_pool(pool, key, "all", prep, args, csv, None, encoders, recipe)
        sets[key] = {"records": len(pool.labels), "folds": int(pool.n_folds), "records_listed": pool.names,
                     "protocol": "published split files' labels; records dealt into folds, rotated",
                     "positives": pool.labels.sum(0).tolist()}  # fmt: skip
    rows = collect_probe_results(csv, out / "probes")
    per_fold = fold_mean_differences(rows, fold_of, args.n_boot) if protocol == "rotate" else []
    table = (fold_mean_table(per_fold) + "\n\n" if per_fold else "") + probe_table(rows, args.n_boot)
    print(table)
    diffs = paired_differences(rows, args.n_boot)
    report = {
        "command_line": " ".join(["python", "scripts/ptbxl_real_check.py", *sys.argv[1:]]),
        "data": relative(args.ptbxl, DATA, REPO), **{k: v for k, v in prep["sizes"].items() if k != "unreadable"},
        "unreadable": len(prep["sizes"]["unreadable"]), "protocol": protocol, "labeled_sets": sets,
        "models": {"vqhbr": "vqhbr_small", "pretrain": PT_MODEL, "probe": FT_MODEL},
        "epochs": {"vqhbr": args.vq_epochs, "pretrain": args.pt_epochs, "probe": args.ft_epochs},
        "probe": "eval-mode backbone, cached CLS features, in-process (scripts/fold_probe.py)",
        "seeds": {"pretraining": args.seed, "probe": args.seeds}, "ratios": args.ratios,
        "results": portable(rows, out), "paired_differences": diffs, "seed_summary": seed_summary(rows, diffs),
        "seed_mean_differences": seed_mean_differences(rows, args.n_boot), "fold_mean": per_fold,
        "table": table, "seconds": round(time.time() - t0, 1), "probe_seconds": round(time.time() - t_probe, 1),
        "stage_seconds": {label: round(dt, 1) for label, dt in run.timings},
        "load_average": list(os.getloadavg()), "cpu_cores": cores,
    }  # fmt: skip
    for path in (out / "ptbxl_real_check.json", args.results_json):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    (out / "results" / "real_check_table.md").write_text(table + "\n")
    print(f"total {report['seconds']} s; report in {args.results_json}")
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
