"""Start-up and peak memory of ``mimic_preprocess.py``: this tree versus a baseline commit (docs/preprocessing.md).

Both code trees run on the same MIMIC-IV-ECG-like raw records (``datasets.synthetic.scale``), alternating,
each command in its own process measured by ``benchmarks.common.run_measured``:
* start-up: ``python -c "import datasets.preprocess.mimic"`` (wall and CPU seconds and peak RSS of the
  process; whether torch came with the import), ``--repeats`` times per tree;
* a full run: ``python mimic_preprocess.py`` over the N records (peak RSS of the main process and of the
  process tree with its pool workers, wall and CPU seconds), ``--rounds`` times per tree.
The baseline tree is ``git archive <--baseline_ref>`` unpacked into a temporary folder.

    python -m benchmarks preprocess_startup --baseline_ref <commit> [--n_records 2000] [--label NAME]

Output: a table on stdout and benchmarks/results/preprocess_startup.json, run ``--label``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, add_output_args, run_measured, write_results
from datasets.synthetic.scale import generate_mimic_scale

IMPORT = "import sys, datasets.preprocess.mimic; print(int('torch' in sys.modules))"


def startup(tree: Path) -> dict:
    """Import the preprocessing entry module in a fresh process of ``tree``."""
    res = run_measured([sys.executable, "-c", IMPORT], cwd=tree, env={"PYTHONPATH": str(tree)})
    res["imports_torch"] = res.pop("output").strip().endswith("1")
    return res


def full_run(tree: Path, raw: Path, out: Path, args) -> dict:
    cmd = [sys.executable, "mimic_preprocess.py", "--dataset_path", str(raw), "--output_path", str(out),
           "--batch_size", str(args.batch_size), "--num_workers", str(args.num_workers)]  # fmt: skip
    res = run_measured(cmd, cwd=tree, env={"PYTHONPATH": str(tree)})
    res.pop("output")
    return res


def median(rows: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 3)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        "python -m benchmarks preprocess_startup", description=__doc__.splitlines()[0]
    )
    p.add_argument("--baseline_ref", required=True, help="git commit of the baseline code (required)")
    p.add_argument(
        "--n_records", type=int, default=2000, help="raw records of the full runs (default: %(default)s)"
    )
    p.add_argument(
        "--batch_size", type=int, default=200, help="records per batch_k folder (default: %(default)s)"
    )
    p.add_argument(
        "--num_workers", type=int, default=2, help="processes reading records (default: %(default)s)"
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="start-up measurements per tree (default: %(default)s)"
    )
    p.add_argument("--rounds", type=int, default=2, help="full runs per tree (default: %(default)s)")
    add_output_args(p)
    args = p.parse_args(argv)
    sha = subprocess.run(["git", "rev-parse", args.baseline_ref], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    rows: dict = {"baseline": {"startup": [], "run": []}, "this_tree": {"startup": [], "run": []}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        trees = {"baseline": base, "this_tree": REPO}
        generate_mimic_scale(tmp / "raw", args.n_records, num_workers=args.num_workers)
        for _ in range(args.repeats):
            for name, tree in trees.items():
                rows[name]["startup"].append(startup(tree))
        for r in range(args.rounds):
            for name, tree in trees.items():
                rows[name]["run"].append(full_run(tree, tmp / "raw", tmp / f"out_{name}_{r}", args))
    summary = {
        name: {
            "imports_torch": all(x["imports_torch"] for x in r["startup"]),
            "startup_wall_s": median(r["startup"], "wall_s"),
            "startup_cpu_s": median(r["startup"], "cpu_s"),
            "startup_peak_rss_mb": median(r["startup"], "peak_main_rss_mb"),
            "run_wall_s": median(r["run"], "wall_s"),
            "run_cpu_s": median(r["run"], "cpu_s"),
            "run_peak_main_rss_mb": max(x["peak_main_rss_mb"] for x in r["run"]),
            "run_peak_tree_rss_mb": max(x["peak_rss_mb"] for x in r["run"]),
        }
        for name, r in rows.items()
    }
    result = {
        "what": "mimic_preprocess.py start-up and peak memory, this tree vs a baseline commit, same records",
        "baseline_commit": sha,
        "n_records": args.n_records,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "summary": summary,
        "rows": rows,
    }
    cols = ("startup_wall_s", "startup_cpu_s", "startup_peak_rss_mb", "run_wall_s", "run_cpu_s",
            "run_peak_main_rss_mb", "run_peak_tree_rss_mb")  # fmt: skip
    print(f"{'tree':>10} {'torch':>6} " + " ".join(f"{c:>20}" for c in cols))
    for name, s in summary.items():
        print(f"{name:>10} {str(s['imports_torch']):>6} " + " ".join(f"{s[c]:>20}" for c in cols))
    write_results("preprocess_startup", result, argv, label=args.label, out=args.out)


if __name__ == "__main__":
    main()
