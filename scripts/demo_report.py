"""Results table and plots of the end-to-end demo (paper Sec. 4 linear probe; Sec. 3.2 codebook usage).

* :func:`collect_results`: the rows that ``run_class_finetuning.py --eval`` appended to the results CSV,
  the last one per output folder (a resumed demo appends again), as
  ``{task, ratio, init, macro_auc, n_test}``.
* :func:`format_table`: a Markdown table with pre-trained and random-init AUC side by side.
* :func:`write_plots`: training curves from every stage's ``log.txt`` (JSON lines), the VQ-HBR codebook
  usage histogram from the checkpoint's ``quantize.cluster_size``, and the tokenised-record PNG that
  ``QRSTokenizer.py --plot`` wrote.
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np

from utils.logging import read_jsonl


def collect_results(results_csv: Path, finetune_root: Path | None = None) -> list[dict]:
    """Rows of ``results_csv`` (last per ``output_dir``), optionally only those under ``finetune_root``."""
    results_csv = Path(results_csv)
    if not results_csv.is_file():
        raise FileNotFoundError(f"{results_csv}: no results; did the --eval runs finish?")
    latest: dict[str, dict] = {}
    with open(results_csv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out = row["output_dir"]
            if finetune_root is not None and Path(out).resolve().parent != Path(finetune_root).resolve():
                continue
            latest[out] = {
                "task": row["subset"],
                "ratio": float(row["ratio"]),
                "init": "pre-trained" if row["finetune"] else "random init",
                "seed": int(row["seed"]),
                "macro_auc": float(row["macro_auc"]),
                "n_test": int(row["n_test"]),
            }
    return sorted(latest.values(), key=lambda r: (r["task"], r["ratio"], r["init"] != "pre-trained"))


def format_table(rows: list[dict]) -> str:
    """One line per (task, ratio): test macro AUC of the pre-trained and the random-init probe."""
    by_key: dict[tuple[str, float], dict[str, float]] = {}
    n_test: dict[str, int] = {}
    for r in rows:
        by_key.setdefault((r["task"], r["ratio"]), {})[r["init"]] = r["macro_auc"]
        n_test[r["task"]] = r["n_test"]
    lines = [
        "| task | ratio | init | test macro AUC |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['task']} | {r['ratio']:g} | {r['init']} | {r['macro_auc']:.4f} |")
    lines += ["", "| task | ratio | pre-trained | random init | difference |", "|---|---|---|---|---|"]
    for (task, ratio), aucs in sorted(by_key.items()):
        pre, rnd = aucs.get("pre-trained", math.nan), aucs.get("random init", math.nan)
        lines.append(
            f"| {task} (n_test {n_test[task]}) | {ratio:g} | {pre:.4f} | {rnd:.4f} | {pre - rnd:+.4f} |"
        )
    return "\n".join(lines)


def _plot_curves(out_png: Path, panels: list[tuple[str, Path, list[str]]]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(t, p, k) for t, p, k in panels if Path(p).is_file()]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (title, path, keys) in zip(axes[0], panels):
        log = read_jsonl(path)  # a stage's log.txt: one JSON object per epoch
        epochs = [e.get("epoch", i) + 1 for i, e in enumerate(log)]
        for key in keys:
            pts = [(ep, e[key]) for ep, e in zip(epochs, log) if key in e and e[key] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_codebook_usage(vq_checkpoint: Path, out_png: Path) -> Path:
    """Histogram of the VQ-HBR usage counter ``quantize.cluster_size`` (EMA of per-code counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modeling.checkpoint import load_checkpoint_file

    usage = load_checkpoint_file(vq_checkpoint)["quantize.cluster_size"].float().numpy()
    order = np.sort(usage)[::-1]
    # "Unused" as the training log counts it: an EMA count that has decayed to (almost) nothing.
    unused = int((usage < 1e-3).sum())
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    a.bar(np.arange(len(order)), order, width=1.0)
    a.set_title(f"codes sorted by usage ({len(usage) - unused}/{len(usage)} used)")
    a.set_xlabel("code rank")
    a.set_ylabel("EMA count (quantize.cluster_size)")
    b.hist(np.log10(usage + 1e-6), bins=40)
    b.set_title("log10 usage histogram")
    b.set_xlabel("log10(EMA count + 1e-6)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def write_plots(out: Path, vq_checkpoint: Path, ptbxl_qrs: Path) -> list[Path]:
    """All demo plots into ``out/plots``; returns the written paths."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoints"
    written = []
    stages = _plot_curves(
        plots / "training_curves.png",
        [
            ("VQ-HBR", ckpt / "vqhbr" / "log.txt", ["train_rec_loss", "train_quant_loss", "val_rec_loss"]),
            ("pre-training", ckpt / "pretrain" / "log.txt", ["train_loss", "train_mlm_acc"]),
        ],
    )
    written += [stages] if stages else []
    probes = sorted((ckpt / "finetune").glob("*/log.txt"))
    if probes:
        probe_png = _plot_probe_curves(plots / "linear_probe_val_auc.png", probes)
        written.append(probe_png)
    if Path(vq_checkpoint).is_file():
        written.append(plot_codebook_usage(vq_checkpoint, plots / "codebook_usage.png"))
    for png in sorted(Path(ptbxl_qrs).glob("plots/*.png"))[:2]:
        dst = plots / f"tokenised_record_{png.name}"
        shutil.copyfile(png, dst)
        written.append(dst)
    return written


def _plot_probe_curves(out_png: Path, logs: list[Path]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for path in logs:
        log = read_jsonl(path)
        name = path.parent.name
        ax.plot(
            [e["epoch"] + 1 for e in log],
            [e.get("val_macro_auc", math.nan) for e in log],
            ls="-" if "pretrained" in name else "--",
            label=name,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation macro AUC")
    ax.set_title("linear probe (solid: pre-trained, dashed: random init)")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
