"""Peak memory of MIMIC-IV-ECG preprocessing versus the number of records (docs/preprocessing.md).

Writes N MIMIC-IV-ECG-like raw records (``datasets.synthetic.scale``) into a temporary folder, then runs,
each in its own process:
* ``streaming``: ``mimic_preprocess.py`` (process pool, chunked memmap writer, small --batch_size);
* ``in_memory`` baseline: the same per-record chain over the same pool, but all arrays kept in a
  list and saved with ``np.save`` at the end (what a non-streaming script does).
``benchmarks.common.run_measured`` polls /proc every 20 ms: the peak of the summed RSS of the process and all
its descendants (pool workers included), their anonymous memory, and the peak RSS of the main process alone.

    python -m benchmarks preprocess_memory [--sizes 200 800 2000] [--batch_size 200] [--label NAME]

Output: a table on stdout and benchmarks/results/preprocess_memory.json, run ``--label``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_args, run_measured, write_results
from datasets.synthetic.scale import generate_mimic_scale


def in_memory_baseline(dataset: str, out: str, workers: int) -> None:
    """Non-streaming reference: same chain and pool, every array kept in RAM until one np.save."""
    import pandas as pd

    from datasets.preprocess.mimic import process_record
    from datasets.preprocess.records import parallel_map

    paths = [str(Path(dataset) / p) for p in pd.read_csv(Path(dataset) / "record_list.csv")["path"]]
    arrays = [a for a, _, _ in parallel_map(process_record, paths, workers) if a is not None]
    np.save(Path(out) / "all_data.npy", np.stack(arrays))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser("python -m benchmarks preprocess_memory", description=__doc__.splitlines()[0])
    p.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=[200, 800, 2000],
        help="record counts to measure (default: 200 800 2000)",
    )
    p.add_argument(
        "--batch_size", type=int, default=200, help="records per output batch (default: %(default)s)"
    )
    p.add_argument(
        "--num_workers", type=int, default=2, help="processes reading records (default: %(default)s)"
    )
    add_output_args(p)
    p.add_argument("--_baseline", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._baseline:
        in_memory_baseline(args._baseline[0], args._baseline[1], int(args._baseline[2]))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        generate_mimic_scale(raw, max(args.sizes), num_workers=args.num_workers)
        all_rows = (raw / "record_list.csv").read_text().splitlines()
        for n in args.sizes:
            sub = Path(tmp) / f"list_{n}"
            sub.mkdir()
            for mode in ("streaming", "in_memory"):
                out = Path(tmp) / f"out_{mode}_{n}"
                out.mkdir()
                if mode == "streaming":
                    (sub / "record_list.csv").write_text("\n".join(all_rows[: n + 1]) + "\n")
                    cmd = [sys.executable, "mimic_preprocess.py", "--dataset_path", str(raw), "--output_path", str(out),
                           "--record_list", str(sub / "record_list.csv"), "--batch_size", str(args.batch_size),
                           "--num_workers", str(args.num_workers)]  # fmt: skip
                else:
                    view = Path(tmp) / f"view_{n}"
                    view.mkdir()
                    (view / "files").symlink_to(raw / "files")
                    (view / "record_list.csv").write_text("\n".join(all_rows[: n + 1]) + "\n")
                    cmd = [sys.executable, "-m", "benchmarks", "preprocess_memory", "--_baseline", str(view), str(out),
                           str(args.num_workers)]  # fmt: skip
                measured = run_measured(cmd)
                measured.pop("output")
                res = {"mode": mode, "n_records": n, **measured}
                res["records_per_s"] = round(n / res["wall_s"], 1)
                rows.append(res)
                print(json.dumps(res), flush=True)
    streaming = [r for r in rows if r["mode"] == "streaming"]
    baseline = [r for r in rows if r["mode"] == "in_memory"]
    result = {
        "what": "MIMIC-IV-ECG preprocessing peak RSS vs number of records",
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "rows": rows,
        "streaming_tree_growth_mb": round(streaming[-1]["peak_rss_mb"] - streaming[0]["peak_rss_mb"], 1),
        "in_memory_tree_growth_mb": round(baseline[-1]["peak_rss_mb"] - baseline[0]["peak_rss_mb"], 1),
        "bytes_per_record_output": 12 * 1000 * 4,
    }
    print(f"{'mode':>10} {'N':>6} {'tree MB':>9} {'main MB':>9} {'s':>7} {'rec/s':>7}")
    for r in rows:
        print(f"{r['mode']:>10} {r['n_records']:>6} {r['peak_rss_mb']:>9} {r['peak_main_rss_mb']:>9} "
              f"{r['wall_s']:>7} {r['records_per_s']:>7}")  # fmt: skip
    print(f"growth of peak tree RSS from N={args.sizes[0]} to N={args.sizes[-1]}: "
          f"streaming {result['streaming_tree_growth_mb']} MB, in-memory {result['in_memory_tree_growth_mb']} MB")  # fmt: skip
    write_results("preprocess_memory", result, argv, label=args.label, out=args.out)


if __name__ == "__main__":
    main()
