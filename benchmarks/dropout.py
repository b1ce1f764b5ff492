"""Dropout forward on CPU: the models' fast dropout (``modeling.accel.dropout``) against torch's
``F.dropout``, the baseline, measured in the same run.

Shapes: (2, 257, 1024), the activations of a block at batch 2, and (8, 8, 257, 257), the attention weights
at batch 8; p = 0.1, float32, training mode, output allocation included. For each thread count the two are
timed interleaved, ``--repeats`` times each; the best (lowest) time of each is reported, by wall clock and by
the process's CPU time (``time.process_time``, all threads), and the JSON keeps every repeat.
Writes benchmarks/results/dropout.json (``python -m benchmarks dropout [--label NAME]``).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from benchmarks.common import add_output_args, write_results
from modeling.accel import dropout as fast_dropout

SHAPES = {
    "block activations (2, 257, 1024)": (2, 257, 1024),
    "attention weights (8, 8, 257, 257)": (8, 8, 257, 257),
}


def _time(fn, x) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn(x)
    return (time.perf_counter() - w0) * 1e3, (time.process_time() - c0) * 1e3


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser("python -m benchmarks dropout", description=__doc__.splitlines()[0])
    p.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default: 1 2)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=15,
        help="timed calls of each kernel per setting (default: %(default)s)",
    )
    add_output_args(p)
    args = p.parse_args(argv)
    paths = {
        "ours": lambda x: fast_dropout(x, 0.1, True),
        "torch F.dropout (baseline)": lambda x: F.dropout(x, 0.1, True),
    }
    rows, load_start = [], [round(v, 1) for v in os.getloadavg()]
    for threads in args.threads:
        torch.set_num_threads(threads)
        for shape_name, shape in SHAPES.items():
            x = torch.randn(shape)
            for fn in paths.values():  # warm-up (numba compile, allocator)
                fn(x)
            times = {name: [] for name in paths}
            for _ in range(args.repeats):
                for name, fn in paths.items():
                    times[name].append(_time(fn, x))
            base_wall = min(w for w, _ in times["torch F.dropout (baseline)"])
            base_cpu = min(c for _, c in times["torch F.dropout (baseline)"])
            for name, ts in times.items():
                wall, cpu = min(w for w, _ in ts), min(c for _, c in ts)
                rows.append({
                    "threads": threads, "shape": shape_name, "path": name,
                    "best_wall_ms": round(wall, 3), "best_cpu_ms": round(cpu, 3),
                    "speedup_wall": round(base_wall / wall, 2), "speedup_cpu": round(base_cpu / cpu, 2) if cpu else None,
                    "all_wall_ms": [round(w, 3) for w, _ in ts],
                })  # fmt: skip
                print(f"{threads} thread(s)  {shape_name:<38} {name:<28} wall {wall:8.2f} ms  cpu {cpu:8.2f} ms  "
                      f"{base_wall / wall:5.2f}x wall")  # fmt: skip
    load = {"at_start": load_start, "at_end": [round(v, 1) for v in os.getloadavg()]}
    result = {"p": 0.1, "dtype": "float32", "repeats": args.repeats, "load_average": load, "rows": rows}
    write_results("dropout", result, argv,
                  label=args.label, out=args.out)  # fmt: skip
    return {"rows": rows}
