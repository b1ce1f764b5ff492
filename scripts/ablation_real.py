"""The original's choices measured on real ECGs: one variant at a time against the original recipe.

    nice -n 10 python scripts/ablation_real.py [--output_dir ablation_output] [--max_unlabeled 300]

Every variant pre-trains on the same unlabeled PTB-XL records with the same budget (``--max_unlabeled``
records, ``--vq_epochs`` VQ-HBR epochs, ``--pt_epochs`` pre-training epochs, ``vqhbr_small`` /
``HeartLang_small``, one pre-training run with ``--seed``; scripts/ptbxl_real_check.pretrain_unlabeled), then
its encoder is probed on the labeled development PTB-XL records with the rotated folds and pooled predictions
of the real-data check (scripts/fold_probe.py; ratio ``--ratio``, probe seeds ``--seeds``). Each row is the
variant minus the original recipe on the same records: the mean over probe seeds of the paired differences
of macro AUC and macro AUPRC, with a 95 % bootstrap interval from resampling the records jointly
(utils.metrics.paired_bootstrap_seeds). An interval that contains 0 is within noise.

Variants (the corrected flag of engine/config.py that differs from the original recipe):

* ``mask_before_conv``: masked words replaced before the token convolution (original: after);
* ``tokenizer_targets_with_ids``: masked-word targets from the tokenizer with lead/time ids (original: without);
* ``padding_attention_mask``: padding words masked out of attention in VQ-HBR, pre-training and the probe
  (original: attended to);
* ``mask_real_words_only``: only real words are masked (original: any position, padding too);
* ``vqhbr_lr_unscaled``: VQ-HBR peak lr = ``--lr`` (original: ``--lr`` x batch / 128; here 1e-3 x 32 / 128);
* ``probe_backbone_train_mode``: the original's train-mode probe (dropout on in the frozen backbone, features
  computed at every step) against the eval-mode probe, both on the original recipe's encoder with
  ``--probe_mode_epochs`` probe epochs (the train-mode probe costs a backbone forward per step);
* ``random_init_encoder``: no pre-training at all (the original's U(-0.1, 0.1) draw), for scale.

All other rows use the eval-mode cached-feature probe (the corrected ``--probe_backbone_eval``) so that 10
folds x seeds stay cheap. The results (no absolute paths) go to ``--results_json``.
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

from scripts.ptbxl_real_check import DATA, FT_MODEL, pretrain_unlabeled, ptbxl_pool  # noqa: E402
from scripts.run_demo import Runner  # noqa: E402

# own_vq: the variant needs its own VQ-HBR run although it passes no VQ-HBR flag (the lr has no flag: --lr is
# 128 / batch times the original's, so that the scaled peak equals the original's --lr).
VARIANTS: dict[str, dict] = {
    "mask_before_conv": {"vq": [], "pt": ["--mask_before_conv"]},
    "tokenizer_targets_with_ids": {"vq": [], "pt": ["--tokenizer_targets_with_ids"]},
    "padding_attention_mask": {"vq": ["--padding_attention_mask"], "pt": ["--padding_attention_mask"], "probe_pad": True},
    "mask_real_words_only": {"vq": [], "pt": ["--mask_real_words_only"]},
    "vqhbr_lr_unscaled": {"vq": [], "pt": [], "vq_lr": 1e-3 * 128 / 32, "own_vq": True},
}  # fmt: skip


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("HeartLang ablation of the original's choices on real PTB-XL records")
    p.add_argument(
        "--ptbxl", default=DATA / "ptbxl", type=Path, help="PTB-XL folder (default ../shared/data/ptbxl)"
    )
    p.add_argument(
        "--output_dir",
        default=Path("ablation_output"),
        type=Path,
        help="every artifact goes here (default: %(default)s)",
    )
    p.add_argument("--max_unlabeled", default=300, type=int, help="pre-training records (default 300)")
    p.add_argument("--vq_epochs", default=2, type=int, help="VQ-HBR epochs of every variant (default 2)")
    p.add_argument(
        "--pt_epochs", default=3, type=int, help="pre-training epochs of every variant (default 3)"
    )
    p.add_argument(
        "--ft_epochs", default=30, type=int, help="eval-mode probe epochs of every variant (default 30)"
    )
    p.add_argument("--probe_mode_epochs", default=5, type=int,
                   help="probe epochs of the train-mode vs eval-mode row (default 5; 0 skips the row)")  # fmt: skip
    p.add_argument("--probe_mode_seeds", nargs="+", default=[0], type=int,
                   help="probe seeds of the train-mode vs eval-mode row (default 0: a backbone forward per step)")  # fmt: skip
    p.add_argument("--ratio", default=1.0, type=float, help="label ratio of the probes (default 1)")
    p.add_argument("--batch_size", default=32, type=int, help="batch size of every stage (default 32)")
    p.add_argument("--seed", default=0, type=int, help="seed of every pre-training run (default 0)")
    p.add_argument("--seeds", nargs="+", default=[0, 1, 2], type=int, help="probe seeds (default 0 1 2)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="variants to run (default all)")  # fmt: skip
    p.add_argument("--n_boot", default=1000, type=int, help="bootstrap resamples (default 1000)")
    p.add_argument("--results_json", default=REPO / "benchmarks" / "results" / "ablation_real.json", type=Path,
                   help="results file (default benchmarks/results/ablation_real.json)")  # fmt: skip
    return p


def probe_seeds(
    pool, ckpt, args, epochs: int, padding: bool = False, train_mode: bool = False, seeds=None
) -> list[np.ndarray]:
    """Pooled test probabilities (N, C) per probe seed of the encoder ``ckpt`` (None: random init)."""
    import torch

    from scripts.fold_probe import ProbeConfig, build_encoder, extract_features, rotate_probe
    from utils.metrics import probabilities

    cfg = ProbeConfig(epochs=epochs, batch_size=args.batch_size)
    out, feats = [], None
    for seed in seeds or args.seeds:
        model = build_encoder(FT_MODEL, pool.labels.shape[1], ckpt, seed, padding_attention_mask=padding)
        if feats is None or ckpt is None:
            feats = extract_features(model, pool.root)
        train_features = None
        if train_mode:
            from sentences.dataset import build_sentence_dataset

            parts = [build_sentence_dataset(pool.root, s) for s in ("train", "val", "test")]
            x = torch.from_numpy(np.concatenate([np.asarray(p.data) for p in parts]).astype(np.float32))
            c = torch.from_numpy(np.concatenate([np.asarray(p.lead_ids) for p in parts]).astype(np.int64))
            t = torch.from_numpy(np.concatenate([np.asarray(p.time_ids) for p in parts]).astype(np.int64))
            model.train()  # the original: the whole classifier in train mode, dropout on in the frozen backbone

            def train_features(rows, model=model, x=x, c=c, t=t):
                with torch.no_grad():
                    return model.forward_features(x[rows], c[rows], t[rows])

        res = rotate_probe(feats, pool, model.mlp_head, args.ratio, seed, cfg, train_features=train_features)
        assert res["rows"].tolist() == list(range(len(pool.labels)))
        out.append(probabilities(res["logits"], True))
    return out


def wait_while_trained_elsewhere(folder: Path, done: Path) -> None:
    """Wait while another process (the real-data check on the same --output_dir) holds ``folder``'s run lock
    and ``done`` does not exist yet; the stage is then skipped here instead of failing on the lock."""
    import fcntl

    lock = folder / ".lock"
    while not done.exists() and lock.exists():
        with open(lock, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                return
            except BlockingIOError:
                pass
        print(f"  waiting: {folder} is being trained by another process", flush=True)
        time.sleep(30)


def row(name: str, labels, var: list, ref: list, args, seeds, what: str, budget: str, folds=None) -> dict:
    from utils.metrics import fold_mean_paired_seeds, macro_scores, paired_bootstrap_seeds

    d = paired_bootstrap_seeds(labels, var, ref, args.n_boot)
    per_fold = None
    if folds is not None:  # each fold's head scored on its own test records (docs/evidence.md: pooling bias)
        f = fold_mean_paired_seeds(labels, var, ref, folds, args.n_boot)
        per_fold = {k: f[k] for k in ("macro_auc_a", "macro_auc_b", "macro_auc_diff", "macro_auc_diff_ci",
                                      "macro_auprc_diff", "macro_auprc_diff_ci", "per_seed_auc_diff",
                                      "per_seed_auprc_diff", "n_folds", "method")}  # fmt: skip
    within = not (d["macro_auc_diff_ci"][0] > 0 or d["macro_auc_diff_ci"][1] < 0)
    within_ap = not (d["macro_auprc_diff_ci"][0] > 0 or d["macro_auprc_diff_ci"][1] < 0)
    return {"variant": name, "what": what, "budget": budget, "seeds": list(seeds),
            "variant_macro_auc": [macro_scores(labels, p)[0] for p in var],
            "reference_macro_auc": [macro_scores(labels, p)[0] for p in ref],
            **{k: v for k, v in d.items() if k not in ("method",)},
            "auc_within_noise": within, "auprc_within_noise": within_ap, "fold_mean": per_fold}  # fmt: skip


def format_fold_table(rows: list[dict]) -> str:
    """The rows scored fold by fold (mean over folds, then seeds; intervals within folds)."""
    lines = ["| variant (vs the original recipe), scored fold by fold | macro AUC: variant - original [95 % CI] | "
             "per seed | macro AUPRC: variant - original [95 % CI] | within noise? |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        f = r.get("fold_mean")
        if not f:
            continue
        auc, ap = f["macro_auc_diff_ci"], f["macro_auprc_diff_ci"]
        noise = "yes" if auc[0] <= 0 <= auc[1] and ap[0] <= 0 <= ap[1] else "no"
        lines.append(f"| {r['variant']} | {f['macro_auc_diff']:+.4f} [{auc[0]:+.4f}, {auc[1]:+.4f}] | "
                     f"{', '.join(f'{x:+.4f}' for x in f['per_seed_auc_diff'])} | {f['macro_auprc_diff']:+.4f} "
                     f"[{ap[0]:+.4f}, {ap[1]:+.4f}] | {noise} |")  # fmt: skip
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    lines = ["| variant (vs the original recipe) | macro AUC: variant - original [95 % CI] | per seed | "
             "macro AUPRC: variant - original [95 % CI] | per seed | within noise? |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        auc, ap = r["macro_auc_diff_ci"], r["macro_auprc_diff_ci"]
        noise = {(True, True): "yes (both intervals contain 0)", (False, False): "no (neither interval contains 0)",
                 (False, True): "AUC no, AUPRC yes", (True, False): "AUC yes, AUPRC no"}[
            (r["auc_within_noise"], r["auprc_within_noise"])]  # fmt: skip
        lines.append(
            f"| {r['variant']} | {r['macro_auc_diff']:+.4f} [{auc[0]:+.4f}, {auc[1]:+.4f}] | "
            f"{', '.join(f'{x:+.4f}' for x in r['per_seed_auc_diff'])} | {r['macro_auprc_diff']:+.4f} "
            f"[{ap[0]:+.4f}, {ap[1]:+.4f}] | {', '.join(f'{x:+.4f}' for x in r['per_seed_auprc_diff'])} | {noise} |"
        )
    return "\n".join(lines)


def main(args) -> dict:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    run = Runner(False, threads=os.cpu_count() or 1)
    t0 = time.time()
    ckpt = args.output_dir.resolve() / "checkpoints"
    # Variants with their own VQ-HBR run first: the original recipe's runs may still be training in another
    # process (the real-data check on the same --output_dir); its folders are waited for, not trained twice.
    order = sorted(args.variants, key=lambda n: not (VARIANTS[n]["vq"] or VARIANTS[n].get("own_vq")))
    variant_ckpts, timings = {}, {}
    for name in order:
        t1 = time.time()
        v = VARIANTS[name]
        if not (v["vq"] or v.get("own_vq")):
            wait_while_trained_elsewhere(ckpt / "vqhbr", ckpt / "vqhbr" / f"checkpoint-{args.vq_epochs}.pth")
        variant_ckpts[name] = pretrain_unlabeled(args, run, {"name": name, **v})["pt_ckpt"]
        timings[f"{name} pre-training"] = round(time.time() - t1, 1)
    wait_while_trained_elsewhere(ckpt / "vqhbr", ckpt / "vqhbr" / f"checkpoint-{args.vq_epochs}.pth")
    wait_while_trained_elsewhere(ckpt / "pretrain", ckpt / "pretrain" / f"checkpoint-{args.pt_epochs}.pth")
    prep = pretrain_unlabeled(args, run)
    if prep["sizes"]["unlabeled_are_labeled_records"]:
        raise SystemExit(
            f"{args.ptbxl}: the pre-training records are labeled records; the rotation would test on them"
        )
    pool = ptbxl_pool(prep["data"], args.ptbxl)
    budget = (f"{prep['sizes']['unlabeled_train']} pre-training records, VQ-HBR {args.vq_epochs} + pre-training "
              f"{args.pt_epochs} epochs, probe {args.ft_epochs} epochs, ratio {args.ratio:g}")  # fmt: skip
    t1 = time.time()
    ref = probe_seeds(pool, prep["pt_ckpt"], args, args.ft_epochs)
    timings["original probes"] = round(time.time() - t1, 1)
    rows = []
    for name in args.variants:
        t1 = time.time()
        v = VARIANTS[name]
        var = probe_seeds(pool, variant_ckpts[name], args, args.ft_epochs, padding=v.get("probe_pad", False))
        what = " ".join(v["vq"] + v["pt"]) or "VQ-HBR --lr x 4"
        rows.append(row(name, pool.labels, var, ref, args, args.seeds, what, budget, pool.folds))
        timings[f"{name} probes"] = round(time.time() - t1, 1)
        print(format_table(rows[-1:]), flush=True)
    if args.probe_mode_epochs:
        t1 = time.time()
        seeds = args.probe_mode_seeds
        ev = probe_seeds(pool, prep["pt_ckpt"], args, args.probe_mode_epochs, seeds=seeds)
        tr = probe_seeds(pool, prep["pt_ckpt"], args, args.probe_mode_epochs, train_mode=True, seeds=seeds)
        rows.append(row("probe_backbone_train_mode", pool.labels, tr, ev, args, seeds,
                        "train-mode vs eval-mode probe backbone", f"probe {args.probe_mode_epochs} epochs",
                        pool.folds))  # fmt: skip
        timings["probe_backbone_train_mode"] = round(time.time() - t1, 1)
        print(format_table(rows[-1:]), flush=True)
    t1 = time.time()
    rnd = probe_seeds(pool, None, args, args.ft_epochs)
    rows.append(
        row("random_init_encoder", pool.labels, rnd, ref, args, args.seeds, "no pre-training", budget, pool.folds)
    )
    timings["random_init_encoder"] = round(time.time() - t1, 1)
    table = format_table(rows) + "\n\n" + format_fold_table(rows)
    print(table)
    report = {
        "command_line": " ".join(["python", "scripts/ablation_real.py", *sys.argv[1:]]),
        "data": "ptbxl (labeled development records, folds 1-10 rotated, pooled)",
        "n_records": int(len(pool.labels)), "classes": pool.labels.shape[1],
        "positives": pool.labels.sum(0).tolist(), "budget": budget, "pretraining_seed": args.seed,
        "probe_seeds": args.seeds, "bootstrap": f"plain resampling of records, {args.n_boot} resamples, seed 0",
        "reference_macro_auc_per_seed": rows[0]["reference_macro_auc"] if rows else [],
        "rows": rows, "table": table, "seconds": round(time.time() - t0, 1), "variant_seconds": timings,
        "stage_seconds": {label: round(dt, 1) for label, dt in run.timings},
        "load_average": list(os.getloadavg()), "cpu_cores": os.cpu_count(),
    }  # fmt: skip
    for path in (args.output_dir / "ablation_real.json", args.results_json):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"total {report['seconds']} s; results in {args.results_json}")
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
