"""Forward+backward throughput and peak memory of the full-size models (docs/models.md), ours vs the original's kernels.

For each model (vqhbr, HeartLang, HeartLang_finetune_base), batch size and implementation
(``ours``: the models as they are, i.e. SDPA, and on CPU in training the plain attention math with the
fast dropout of modeling/accel; ``original``: ``modeling.accel.plain_attend``, i.e.
``dropout(softmax(q k^T * scale)) v``, with torch's own dropout everywhere, as the original computes it) a
fresh subprocess builds the model, runs ``--warmup`` untimed and ``--iters`` timed training steps (forward,
loss, backward) in train mode, and reports samples/s and the peak resident memory added by the steps
(``resource.getrusage`` peak minus the RSS after building the model). Each configuration runs in its own
process so that peaks do not carry over. Results: printed table and ``benchmarks/results/model.json``.

    python -m benchmarks model --batch_sizes 8 64 --iters 3 [--label NAME]

(run ``current``: ``--models HeartLang --batch_sizes 8 64 --iters 2 --label current``; run
``before_fast_dropout`` was measured before the fast CPU dropout, when the two rows were SDPA vs plain attention)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks.common import REPO, add_output_args, write_results
from modeling import create_model
from modeling.accel import plain_attend, use_torch_dropout
from modeling.transformer import Attention

MODELS = ("vqhbr", "HeartLang", "HeartLang_finetune_base")
IMPLS = ("ours", "original")


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_batch(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 256, 96, generator=g)
    x[:, 200:] = 0.0  # tail padding, as real sentences have
    chans = torch.randint(1, 13, (batch, 256), generator=g)
    times = torch.randint(1, 11, (batch, 256), generator=g)
    chans[:, 200:] = 0
    times[:, 200:] = 0
    return x, chans, times


def train_step(model, name: str, batch, g: torch.Generator) -> None:
    x, c, t = batch
    if name == "vqhbr":
        loss, _ = model(x, c, t)
    elif name == "HeartLang":
        mask = torch.rand(x.shape[:2], generator=g) < 0.5
        target = torch.randint(0, model.config.codebook_size, (int(mask.sum()),), generator=g)
        loss = F.cross_entropy(model(x, mask, c, t), target)
    else:
        target = torch.randint(0, 2, (x.shape[0], model.config.num_classes), generator=g).float()
        loss = F.binary_cross_entropy_with_logits(model(x, c, t), target)
    loss.backward()
    model.zero_grad(set_to_none=True)


def run_one(name: str, batch_size: int, impl: str, warmup: int, iters: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name).train()
    if impl == "original":
        use_torch_dropout(True)  # this child process only
        for module in model.modules():
            if isinstance(module, Attention):
                module.attend = plain_attend
    batch = make_batch(batch_size)
    g = torch.Generator().manual_seed(1)
    base_rss = rss_mib()
    for _ in range(warmup):
        train_step(model, name, batch, g)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        train_step(model, name, batch, g)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    step = sorted(times)[len(times) // 2]
    return {
        "model": name,
        "batch_size": batch_size,
        "impl": impl,
        "step_s_median": step,
        "samples_per_s": batch_size / step,
        "peak_rss_mib": peak,
        "step_peak_extra_mib": peak - base_rss,
        "iters": iters,
    }


def attention_agreement() -> float:
    """Largest |SDPA - plain| on one attention layer of the full HeartLang width, as a sanity check."""
    torch.manual_seed(0)
    attn = Attention(768, 8, 64).eval()
    x = torch.randn(2, 257, 768)
    with torch.no_grad():
        a = attn(x)
        attn.attend = plain_attend
        b = attn(x)
    return float((a - b).abs().max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        "python -m benchmarks model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batch_sizes", type=int, nargs="+", default=[8], help="batch sizes to time (default: 8)"
    )
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=MODELS, help="models to time (default: all)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    add_output_args(parser)
    parser.add_argument("--_child", nargs=3, metavar=("MODEL", "BATCH", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._child:
        name, batch, impl = args._child
        print(json.dumps(run_one(name, int(batch), impl, args.warmup, args.iters)))
        return

    # Other processes on the machine skew the timings: the load average is recorded next to them.
    load_at_start = os.getloadavg()
    rows = []
    for batch in args.batch_sizes:
        for name in args.models:
            for impl in IMPLS:
                cmd = [sys.executable, "-m", "benchmarks", "model", "--_child", name, str(batch), impl]
                cmd += ["--warmup", str(args.warmup), "--iters", str(args.iters)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"benchmark child {name} batch {batch} {impl} failed:\n{proc.stderr[-2000:]}"
                    )
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(
                    f"{name:<24} bs={batch:<3} {impl:<5} {row['samples_per_s']:8.2f} samples/s  "
                    f"step {row['step_s_median']:7.2f} s  peak RSS {row['peak_rss_mib']:8.0f} MiB "
                    f"(+{row['step_peak_extra_mib']:.0f} during steps)",
                    flush=True,
                )
    # Each row of ours next to the original's row of the same model and batch size.
    plain_of = {(r["model"], r["batch_size"]): r for r in rows if r["impl"] == "original"}
    pairs = [(r, plain_of[r["model"], r["batch_size"]]) for r in rows if r["impl"] == "ours"]
    for row, plain in pairs:
        row["speedup_vs_original"] = row["samples_per_s"] / plain["samples_per_s"]
        row["extra_mem_saved_mib"] = plain["step_peak_extra_mib"] - row["step_peak_extra_mib"]
    result = {
        "device": "cpu",
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": os.getloadavg(),
        "sdpa_vs_plain_max_abs_diff": attention_agreement(),
        "rows": rows,
    }
    write_results("model", result, argv, label=args.label, out=args.out)
    print("\n| model | batch | ours samples/s | original samples/s | speed-up | ours +MiB | original +MiB |")
    print("|---|---|---|---|---|---|---|")
    for row, plain in pairs:
        print(
            f"| {row['model']} | {row['batch_size']} | {row['samples_per_s']:.2f} | {plain['samples_per_s']:.2f} | "
            f"{row['speedup_vs_original']:.2f}x | {row['step_peak_extra_mib']:.0f} | {plain['step_peak_extra_mib']:.0f} |"
        )
    print(
        f"SDPA vs plain max |diff| on one full-width attention layer: {result['sdpa_vs_plain_max_abs_diff']:.2e}"
    )


if __name__ == "__main__":
    main()
