"""Throughput of the synthetic cohort generator (datasets/synthetic/cohort.py).

Baseline in the same run: neurokit2's own 12-lead simulation, ``nk.ecg_simulate(method="multileads")``
at 500 Hz (signal only, no file writing), against our closed-form model (signal only) and the full
writers (signal + WFDB files + CSV) with 1 and 2 worker processes.
Writes benchmarks/results/synthetic.json (``python -m benchmarks synthetic [--label NAME]``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import neurokit2 as nk
import numpy as np

from benchmarks.common import add_output_args, write_results
from datasets.synthetic.cohort import generate_mimic_like, generate_ptbxl_like
from datasets.synthetic.signal import simulate_ecg


def _rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser("python -m benchmarks synthetic", description=__doc__.splitlines()[0])
    p.add_argument("--n_files", type=int, default=200, help="records written per writer (default: %(default)s)")
    p.add_argument("--n_signals", type=int, default=20, help="neurokit2 signals; ours: 10x as many (default: %(default)s)")
    add_output_args(p)
    args = p.parse_args(argv)
    n_files, n_signals = args.n_files, args.n_signals
    res = {
        "neurokit2_multileads_signal_only": _rate(
            lambda n: [
                nk.ecg_simulate(10, sampling_rate=500, method="multileads", random_state=i) for i in range(n)
            ],
            n_signals,
        ),
        "ours_signal_only": _rate(
            lambda n: [simulate_ecg(("NORM",), "SR", np.random.default_rng(i)) for i in range(n)],
            10 * n_signals,
        ),
    }
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            res[f"mimic_files_workers{workers}"] = _rate(
                lambda n, d=d, w=workers: generate_mimic_like(Path(d) / "m", n, 0, w), n_files
            )
            res[f"ptbxl_files_workers{workers}"] = _rate(
                lambda n, d=d, w=workers: generate_ptbxl_like(Path(d) / "p", n, 0, w), n_files
            )
    res = {k: round(v, 1) for k, v in res.items()}
    print(json.dumps({"records_per_second": res}, indent=2))
    write_results("synthetic", {"records_per_second": res, "n_files": n_files}, argv, label=args.label, out=args.out)
    return res


if __name__ == "__main__":
    main()
