"""Which plots the end-to-end demo keeps, and from which of its folders (paper Sec. 3.2 codebook, Sec. 4 probe).

The drawing lives in ``reporting.plots`` and the results table in ``reporting.tables``; this module only
points them at the demo's layout (``<out>/checkpoints/{vqhbr,pretrain,finetune/*}/log.txt``):

* ``plots/training_curves.png``: VQ-HBR and pre-training, one row per stage, one panel per quantity;
* ``plots/codebook_usage_epochs.png``: VQ-HBR unused codes and perplexity over epochs;
* ``plots/codebook_usage.png``: usage of every code from the checkpoint's ``quantize.cluster_size``;
* ``plots/linear_probe_val_auc.png``: every probe's validation macro AUC per epoch;
* ``plots/tokenised_record_*.png``: copies of the PNGs that ``QRSTokenizer.py --plot`` wrote.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from reporting.plots import plot_code_histogram, plot_codebook_usage, plot_probe_val_auc, plot_training_curves


def write_plots(out: Path, vq_checkpoint: Path, ptbxl_qrs: Path) -> list[Path]:
    """All demo plots into ``out/plots``; returns the written paths (stages without a log are left out)."""
    plots = out / "plots"
    ckpt = out / "checkpoints"
    written = []
    stage_logs = {
        name: log
        for name, log in (
            ("VQ-HBR", ckpt / "vqhbr" / "log.txt"),
            ("pre-training", ckpt / "pretrain" / "log.txt"),
        )
        if log.is_file()
    }
    if stage_logs:
        written.append(plot_training_curves(stage_logs, plots / "training_curves.png"))
    if "VQ-HBR" in stage_logs:
        written.append(plot_codebook_usage(stage_logs["VQ-HBR"], plots / "codebook_usage_epochs.png"))
    probes = {p.parent.name: p for p in sorted((ckpt / "finetune").glob("*/log.txt"))}
    if probes:
        written.append(plot_probe_val_auc(probes, plots / "linear_probe_val_auc.png"))
    if Path(vq_checkpoint).is_file():
        from modeling.checkpoint import load_checkpoint_file

        usage = load_checkpoint_file(vq_checkpoint)["quantize.cluster_size"].float().numpy()
        written.append(plot_code_histogram(usage, plots / "codebook_usage.png"))
    for png in sorted(Path(ptbxl_qrs).glob("plots/*.png"))[:2]:
        dst = plots / f"tokenised_record_{png.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, dst)
        written.append(dst)
    return written
