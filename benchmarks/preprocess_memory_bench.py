"""Peak memory of MIMIC-IV-ECG preprocessing versus the number of records (docs/preprocessing.md).

Writes N synthetic MIMIC-like WFDB records (12 leads, 500 Hz, 5000 samples, MIMIC lead order)
with ``wfdb.wrsamp`` into a temporary folder, then runs, each in its own process:
* ``streaming``: ``mimic_preprocess.py`` (process pool, chunked memmap writer, small --batch_size);
* ``in_memory`` baseline: the same per-record chain over the same pool, but all arrays kept in a
  list and saved with ``np.save`` at the end (what a non-streaming script does).
A sampler polls /proc every 20 ms and records the peak of the summed RSS of the process and
all its descendants (pool workers included), and the peak RSS of the main process alone.

    .venv/bin/python benchmarks/preprocess_memory_bench.py [--sizes 200 800 2000] [--batch_size 200]

Output: a table on stdout and benchmarks/results/preprocess_memory_bench.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import wfdb

REPO = Path(__file__).resolve().parents[1]
MIMIC_ORDER = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def write_cohort(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(5000) / 500.0
    rows = []
    for i in range(n):
        rel = f"files/p{i // 1000:04d}/p{i:08d}/s{i}/{i}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sig = np.sin(2 * np.pi * rng.uniform(0.8, 1.6) * t)[:, None] * rng.uniform(
            0.2, 2, 12
        ) + 0.01 * rng.normal(size=(5000, 12))
        wfdb.wrsamp(
            Path(rel).name,
            fs=500,
            units=["mV"] * 12,
            sig_name=MIMIC_ORDER,
            p_signal=sig,
            fmt=["16"] * 12,
            adc_gain=[200.0] * 12,
            baseline=[0] * 12,
            write_dir=str((root / rel).parent),
        )
        rows.append({"subject_id": i, "study_id": i, "file_name": i, "ecg_time": "2180-01-01", "path": rel})
    with open(root / "record_list.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE_KB
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def _descendants(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
                out += kids
                stack += kids
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def measure(cmd: list[str]) -> dict:
    """Run ``cmd``; peak RSS (MiB) of the tree and of the main process, wall seconds."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = {"tree": 0, "main": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            main = _rss_kb(proc.pid)
            tree = main + sum(_rss_kb(p) for p in _descendants(proc.pid))
            peak["tree"], peak["main"] = max(peak["tree"], tree), max(peak["main"], main)
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    done.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{err[-2000:]}")
    return {
        "peak_rss_tree_mib": round(peak["tree"] / 1024, 1),
        "peak_rss_main_mib": round(peak["main"] / 1024, 1),
        "seconds": round(time.time() - t0, 2),
    }


def in_memory_baseline(dataset: str, out: str, workers: int) -> None:
    """Non-streaming reference: same chain and pool, every array kept in RAM until one np.save."""
    sys.path.insert(0, str(REPO))
    import pandas as pd

    from datasets.preprocess.mimic import process_record
    from datasets.preprocess.records import parallel_map

    paths = [str(Path(dataset) / p) for p in pd.read_csv(Path(dataset) / "record_list.csv")["path"]]
    arrays = [a for a, _, _ in parallel_map(process_record, paths, workers) if a is not None]
    np.save(Path(out) / "all_data.npy", np.stack(arrays))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks/results/preprocess_memory_bench.json",
        help="results file (default: benchmarks/results/preprocess_memory_bench.json)",
    )
    p.add_argument("--_baseline", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._baseline:
        in_memory_baseline(args._baseline[0], args._baseline[1], int(args._baseline[2]))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        write_cohort(raw, max(args.sizes))
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
                    cmd = [
                        sys.executable,
                        __file__,
                        "--_baseline",
                        str(view),
                        str(out),
                        str(args.num_workers),
                    ]
                res = {"mode": mode, "n_records": n, **measure(cmd)}
                res["records_per_s"] = round(n / res["seconds"], 1)
                rows.append(res)
                print(json.dumps(res), flush=True)
    streaming = [r for r in rows if r["mode"] == "streaming"]
    baseline = [r for r in rows if r["mode"] == "in_memory"]
    result = {
        "benchmark": "MIMIC-IV-ECG preprocessing peak RSS vs number of records",
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "streaming_tree_growth_mib": round(
            streaming[-1]["peak_rss_tree_mib"] - streaming[0]["peak_rss_tree_mib"], 1
        ),
        "in_memory_tree_growth_mib": round(
            baseline[-1]["peak_rss_tree_mib"] - baseline[0]["peak_rss_tree_mib"], 1
        ),
        "bytes_per_record_output": 12 * 1000 * 4,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'mode':>10} {'N':>6} {'tree MiB':>9} {'main MiB':>9} {'s':>7} {'rec/s':>7}")
    for r in rows:
        print(f"{r['mode']:>10} {r['n_records']:>6} {r['peak_rss_tree_mib']:>9} {r['peak_rss_main_mib']:>9} "
              f"{r['seconds']:>7} {r['records_per_s']:>7}")  # fmt: skip
    print(f"growth of peak tree RSS from N={args.sizes[0]} to N={args.sizes[-1]}: "
          f"streaming {result['streaming_tree_growth_mib']} MiB, in-memory {result['in_memory_tree_growth_mib']} MiB")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
