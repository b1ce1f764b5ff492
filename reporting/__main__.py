"""Plots and tables from finished runs, without Python:

    python -m reporting curves   checkpoints/vqhbr/MIMIC-IV checkpoints/pretrain/MIMIC-IV -o plots/training_curves.png
    python -m reporting codebook checkpoints/vqhbr/MIMIC-IV -o plots/codebook_usage.png
    python -m reporting probes   checkpoints/finetune/* -o plots/probe_val_auc.png
    python -m reporting table    results/finetune_results.csv [--finetune_root checkpoints/finetune]

A run is its output folder (holding ``log.txt``) or the ``log.txt`` itself; it is labelled by its folder name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reporting.plots import plot_codebook_usage, plot_probe_val_auc, plot_training_curves
from reporting.tables import collect_probe_results, probe_table


def _logs(runs: list[Path]) -> dict[str, Path]:
    out = {}
    for run in runs:
        log = run / "log.txt" if run.is_dir() else run
        out[log.parent.name or str(log)] = log
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m reporting", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("curves", "training curves: a row per run, a panel per quantity"),
        ("codebook", "VQ-HBR unused codes and perplexity per epoch"),
        ("probes", "validation macro AUC per epoch of linear probes"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument("runs", nargs="+", type=Path, help="output folders (or their log.txt)")
        s.add_argument("-o", "--output", required=True, type=Path, help="PNG to write")
    t = sub.add_parser(
        "table", help="runs with 95 %% intervals, pre-trained vs random-init differences, seeds (Markdown)"
    )
    t.add_argument("results_csv", type=Path, help="results CSV written by --eval")
    t.add_argument(
        "--finetune_root",
        type=Path,
        default=None,
        help="only runs directly under this folder (default: every run)",
    )
    return p


def main(argv: list[str] | None = None) -> str:
    args = get_args_parser().parse_args(argv)
    if args.command == "table":
        text = probe_table(collect_probe_results(args.results_csv, args.finetune_root))
        print(text)
        return text
    logs = _logs(args.runs)
    if args.command == "curves":
        path = plot_training_curves(logs, args.output)
    elif args.command == "codebook":
        if len(logs) != 1:
            raise SystemExit("codebook takes one VQ-HBR run")
        path = plot_codebook_usage(next(iter(logs.values())), args.output, title=next(iter(logs)))
    else:
        path = plot_probe_val_auc(logs, args.output)
    print(f"wrote {path}")
    return str(path)


if __name__ == "__main__":
    main()
