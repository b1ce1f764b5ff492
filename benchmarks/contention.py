"""Training on cores that other jobs also use: torch's OpenMP wait policy under contention (docs/install.md).

    python -m benchmarks contention [--threads 2] [--busy 0 2] [--steps 40] [--rounds 3]

A fixed amount of training work (forward + backward + SGD step of one ``nn.TransformerEncoderLayer``,
d_model 256, 4 heads, a batch of 16 sequences of 128 tokens: the matrix products that dominate the models'
steps) runs in a fresh process with ``--threads`` torch threads, once with OpenMP's default wait policy
(waiting threads spin for a while) and once with ``OMP_WAIT_POLICY=PASSIVE`` (they sleep), while ``--busy``
other processes each keep a core busy (a Python loop that ends when the benchmark does). The two policies are timed interleaved, ``--rounds``
times each; the median wall time of each setting is reported with the slowdown against the idle default
(the baseline, same run). Writes benchmarks/results/contention.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.common import REPO, add_output_args, write_results

WORK = """
import json, sys, time, torch
torch.manual_seed(0)
torch.set_num_threads({threads})
layer = torch.nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True)
opt = torch.optim.SGD(layer.parameters(), lr=1e-3)
x = torch.randn(16, 128, 256)
layer(x).sum().backward()  # warm-up
t0 = time.perf_counter()
for _ in range({steps}):
    opt.zero_grad()
    layer(x).sum().backward()
    opt.step()
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""
POLICIES = {"default": None, "PASSIVE": "PASSIVE"}


def timed(threads: int, steps: int, policy: str | None) -> float:
    """Wall seconds of the fixed work in a fresh process with ``OMP_WAIT_POLICY=policy`` (unset: None)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", WORK.format(threads=threads, steps=steps)], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])["seconds"]


# A busy loop that ends by itself when this process dies (its parent changes): none outlives the benchmark.
BUSY = "import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent:\n    pass"


def start_busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY, str(os.getpid())]) for _ in range(n)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser("python -m benchmarks contention", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads of the timed process (default: %(default)s)")
    p.add_argument("--busy", type=int, nargs="+", default=[0, os.cpu_count() or 1],
                   help="numbers of other busy processes, one setting each (default: 0 and the number of cores)")  # fmt: skip
    p.add_argument("--steps", type=int, default=40, help="training steps of the fixed work (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="timed runs per setting (default: %(default)s)")
    add_output_args(p)
    args = p.parse_args(argv)
    rows = []
    for busy in args.busy:
        hogs = start_busy(busy)
        try:
            time.sleep(0.5 if busy else 0)
            times: dict[str, list[float]] = {name: [] for name in POLICIES}
            for _ in range(args.rounds):  # interleaved, so a change of the machine's load hits both
                for name, policy in POLICIES.items():
                    times[name].append(timed(args.threads, args.steps, policy))
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        for name in POLICIES:
            rows.append({"busy_processes": busy, "wait_policy": name, "seconds": round(statistics.median(times[name]), 3),
                         "all_seconds": [round(t, 3) for t in times[name]]})  # fmt: skip
    base = next((r["seconds"] for r in rows if r["busy_processes"] == 0 and r["wait_policy"] == "default"), None)
    for r in rows:
        r["slowdown_vs_idle_default"] = round(r["seconds"] / base, 2) if base else None
        print(f"{r['busy_processes']} busy, {r['wait_policy']:8s}: {r['seconds']:.2f} s"
              + (f" ({r['slowdown_vs_idle_default']:.2f}x the idle default)" if base else ""), flush=True)  # fmt: skip
    result = {"threads": args.threads, "steps": args.steps, "rounds": args.rounds, "cores": os.cpu_count(),
              "rows": rows}  # fmt: skip
    write_results("contention", result, argv, label=args.label, out=args.out)
    return result


if __name__ == "__main__":
    main()
