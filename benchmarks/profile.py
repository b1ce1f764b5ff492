"""Where the time goes: the pre-training step under ``torch.profiler`` and the QRS tokenizer's paths under timers.

    python -m benchmarks profile [--batch_sizes 2 8] [--threads 1] [--records 1569] [--models full] [--label NAME]

Pre-training (full-size models, fp32, CPU, ``--threads`` torch threads), profiled steps after a warm-up, at
each of ``--batch_sizes``, ``--rounds`` interleaved rounds (the median of each share is reported), for
* ``original``: the original's step (benchmarks/train.py's baseline): the frozen tokenizer's forward every step,
  plain matmul-softmax attention, torch's own dropout, torch's default AdamW; and
* ``ours``: our defaults (cached targets, the fast CPU dropout, fused AdamW).
Shares of the step (profiler self time of the ops, over the whole step's time): matrix products (mm, addmm,
bmm, baddbmm, convolution), torch's dropout (bernoulli_ and the dropout ops, forward and backward), the tokenizer
forward and the optimizer step. Also the tokenizer forward's share of the original step's FLOPs
(``torch.utils.flop_counter``). (Dropout alone, torch's against ours: ``python -m benchmarks dropout``.)

QRS tokenizer, on the first ``--records`` real PTB-XL records of shared/data (12 x 1000 at 100 Hz), CPU time:
* the original's way (benchmarks/tokenizer.py's reference path): wfdb's ``xqrs_detect``, timed where the path
  calls it, against the whole path;
* ours in-process (``tokenize_records``): the batched ``xqrs_fast`` detection, timed the same way, against the
  whole path;
* ours with 2 workers (``tokenize_array``, as ``QRSTokenizer.py`` runs it): CPU time of the main process alone.
The tokenizer part is skipped with a note when shared/data holds no PTB-XL records.

Writes benchmarks/results/profile.json, run ``--label``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, record_function
from torch.utils.flop_counter import FlopCounterMode

os.environ.setdefault("HEARTLANG_NO_PROGRESS", "1")

from benchmarks.common import add_output_args, write_results
from benchmarks.tokenizer import SHARED, reference_tokenize
from benchmarks.train import make_batches, original_kernels
from engine.pretrain import PretrainStep
from modeling import create_model
from utils.optim import adamw_kwargs

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm")
# the convolution's leaf kernel differs by build (mkldnn / slow_conv / thnn); every name holding "conv" counts
CONV_MARK = "conv"
DROPOUT_MARKS = ("bernoulli", "dropout")
STEP, TOKENIZER, OPTIMIZER = "profile::step", "profile::tokenizer_forward", "profile::optimizer_step"


def _share(part_us: float, whole_us: float) -> float:
    return round(100.0 * part_us / whole_us, 1) if whole_us else 0.0


def profile_step(model, step_fn, batch, opt, params) -> dict:
    """One step (forward, loss, backward, clipping, AdamW) under torch.profiler: op shares of the step."""
    with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function(STEP):
            loss, _ = step_fn(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 3.0)
            with record_function(OPTIMIZER):
                opt.step()
            opt.zero_grad(set_to_none=True)
    events = prof.key_averages()
    total = next(e.cpu_time_total for e in events if e.key == STEP)
    self_us = {e.key: e.self_cpu_time_total for e in events}
    matmul = sum(v for k, v in self_us.items() if k in MATMUL_OPS or CONV_MARK in k)
    dropout = sum(v for k, v in self_us.items() if any(m in k for m in DROPOUT_MARKS))
    ranges = {e.key: e.cpu_time_total for e in events}
    top = sorted(((v, k) for k, v in self_us.items() if not k.startswith("profile::")), reverse=True)[:8]
    return {
        "step_ms": round(total / 1e3, 1),
        "matrix_products_pct": _share(matmul, total),
        "torch_dropout_pct": _share(dropout, total),
        "tokenizer_forward_pct": _share(ranges.get(TOKENIZER, 0.0), total),
        "optimizer_step_pct": _share(ranges.get(OPTIMIZER, 0.0), total),
        "top_ops_self_pct": {k: _share(v, total) for v, k in top},
    }


def median_row(rounds: list[dict]) -> dict:
    """Median of each share (and of the step time) over the rounds; every round's shares are kept."""
    keys = (
        "step_ms",
        "matrix_products_pct",
        "torch_dropout_pct",
        "tokenizer_forward_pct",
        "optimizer_step_pct",
    )
    row = {k: round(statistics.median(r[k] for r in rounds), 1) for k in keys}
    row["rounds"] = [{k: r[k] for k in keys} for r in rounds]
    row["top_ops_self_pct_first_round"] = rounds[0]["top_ops_self_pct"]
    return row


def pretraining(batch_sizes: list[int], models: str = "full", n_rounds: int = 3) -> dict:
    device = torch.device("cpu")
    suffix = "_tiny" if models == "tiny" else ""
    tok = create_model(f"vqhbr{suffix}").eval().requires_grad_(False)
    model = create_model(f"HeartLang{suffix}")
    params = list(model.parameters())
    fly = PretrainStep(tok, device)
    plain_targets = fly.targets

    def targets(x, c, t):  # the tokenizer forward, as its own profiler range
        with record_function(TOKENIZER):
            return plain_targets(x, c, t)

    fly.targets = targets
    cached = PretrainStep(None, device, cached=True)
    out: dict = {"by_batch_size": {}}
    for bs in batch_sizes:
        warm, batch = make_batches(2, bs, 5, device)
        with torch.no_grad():
            warm_c, batch_c = [(x, c, t, plain_targets(x, c, t)) for x, c, t, _ in (warm, batch)]
        opt_original = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)  # torch's default kernel
        opt_ours = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, **adamw_kwargs("auto", params))
        model.train()
        sides = {
            "original": (fly, warm, batch, opt_original, original_kernels),
            "ours": (cached, warm_c, batch_c, opt_ours, lambda m: contextlib.nullcontext()),
        }
        for step, first, _, opt, kernels in sides.values():  # warm-up
            with kernels(model):
                profile_step(model, step, first, opt, params)
        rounds: dict = {side: [] for side in sides}
        for _ in range(n_rounds):  # interleaved: both sides see the same spells of load
            for side, (step, _, b, opt, kernels) in sides.items():
                with kernels(model):
                    rounds[side].append(profile_step(model, step, b, opt, params))
        row = {side: median_row(rs) for side, rs in rounds.items()}
        out["by_batch_size"][str(bs)] = row
        for side, r in row.items():
            print(f"batch {bs} {side:<8} step {r['step_ms']:8.1f} ms  matrix products {r['matrix_products_pct']:5.1f} %"
                  f"  torch dropout {r['torch_dropout_pct']:5.1f} %  tokenizer forward {r['tokenizer_forward_pct']:5.1f} %"
                  f"  optimizer {r['optimizer_step_pct']:5.1f} %  (median of {n_rounds})", flush=True)  # fmt: skip

    # FLOPs: the tokenizer forward against the whole original step (forward + backward), smallest batch
    x, c, t, _ = make_batches(1, min(batch_sizes), 5, device)[0]
    with FlopCounterMode(display=False) as counter:
        plain_targets(x, c, t)
    tok_flops = counter.get_total_flops()
    with original_kernels(model), FlopCounterMode(display=False) as counter:
        loss, _ = fly(model, (x, c, t, None))
        loss.backward()
    model.zero_grad(set_to_none=True)
    step_flops = counter.get_total_flops()
    out["original_step_gflop_per_sample"] = round(step_flops / min(batch_sizes) / 1e9, 1)
    out["tokenizer_forward_gflop_per_sample"] = round(tok_flops / min(batch_sizes) / 1e9, 1)
    out["tokenizer_forward_pct_of_original_step_flops"] = _share(tok_flops, step_flops)
    print(
        f"tokenizer forward: {out['tokenizer_forward_pct_of_original_step_flops']} % of the original step's FLOPs"
    )

    return out


def ptbxl_heads() -> list[Path]:
    return sorted((SHARED / "data" / "ptbxl" / "records100").rglob("*_lr.hea"))


def first_ptbxl_records(n: int) -> np.ndarray:
    """The first ``n`` real PTB-XL 100 Hz records (sorted path order) as (n, 12, 1000) float32."""
    import wfdb

    return np.stack([wfdb.rdsamp(str(h.with_suffix("")))[0].T.astype(np.float32) for h in ptbxl_heads()[:n]])


def tokenizer(n_records: int, workers: int) -> dict:
    from datasets.qrs.detect import prepare_detector
    from datasets.qrs.parallel import tokenize_array
    from datasets.qrs.tokenizer import tokenize_records

    X = first_ptbxl_records(n_records)
    n = len(X)
    prepare_detector("xqrs_fast", 100)  # wfdb import and kernels, outside the timings
    from wfdb import processing

    import datasets.qrs.tokenizer as qrs_tokenizer

    spent = {"detect": 0.0}

    def timed(fn):  # the detector inside each path, timed where the path calls it
        def call(*a, **kw):
            c0 = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                spent["detect"] += time.process_time() - c0

        return call

    used = list(range(12))
    wfdb_detect, fast_batch = processing.xqrs_detect, qrs_tokenizer.detect_r_peaks_batch
    try:
        processing.xqrs_detect = timed(wfdb_detect)
        c0 = time.process_time()
        for x in X:
            reference_tokenize(x, used)
        ref_total, ref_detect = time.process_time() - c0, spent["detect"]
        spent["detect"] = 0.0
        qrs_tokenizer.detect_r_peaks_batch = timed(fast_batch)
        c0 = time.process_time()
        tokenize_records(X)
        ours_total, fast_detect = time.process_time() - c0, spent["detect"]
    finally:
        processing.xqrs_detect, qrs_tokenizer.detect_r_peaks_batch = wfdb_detect, fast_batch

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "input_data.npy"
        np.save(src, X)
        chunk = max(1, n // (2 * workers))
        c0 = time.process_time()
        s = tokenize_array(
            src, tmp, "profile", num_workers=workers, chunk_size=chunk, progress=False, verbose=False
        )
        main_cpu = time.process_time() - c0
    res = {
        "records": n,
        "input": "the first PTB-XL records100 records of shared/data in sorted path order, 12 x 1000 at 100 Hz",
        "reference_path_cpu_ms_per_record": round(1e3 * ref_total / n, 3),
        "reference_xqrs_detect_cpu_ms_per_record": round(1e3 * ref_detect / n, 3),
        "reference_xqrs_detect_pct": _share(ref_detect, ref_total),
        "ours_in_process_cpu_ms_per_record": round(1e3 * ours_total / n, 3),
        "ours_xqrs_fast_detect_cpu_ms_per_record": round(1e3 * fast_detect / n, 3),
        "ours_xqrs_fast_detect_pct": _share(fast_detect, ours_total),
        "workers": s["num_workers"],
        "ours_workers_main_process_cpu_ms_per_record": round(1e3 * main_cpu / n, 3),
    }
    print(
        f"tokenizer, {n} records: reference {res['reference_path_cpu_ms_per_record']} ms/record, wfdb xqrs_detect "
        f"{res['reference_xqrs_detect_pct']} %; ours {res['ours_in_process_cpu_ms_per_record']} ms/record, "
        f"detection {res['ours_xqrs_fast_detect_cpu_ms_per_record']} ms; {res['workers']} workers: main process "
        f"{res['ours_workers_main_process_cpu_ms_per_record']} ms/record",
        flush=True,
    )
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser("python -m benchmarks profile", description=__doc__.splitlines()[0])
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[2, 8],
                   help="pre-training batch sizes to profile (default: 2 8)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3,
                   help="profiled steps per side and batch size, interleaved; the median is reported (default: %(default)s)")  # fmt: skip
    p.add_argument("--records", type=int, default=1569,
                   help="real PTB-XL records for the tokenizer part; 0 skips it (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes of the tokenizer's parallel row (default: %(default)s)",
    )
    p.add_argument("--models", default="full", choices=["full", "tiny"],
                   help="full: vqhbr + HeartLang as published; tiny: the test sizes (default: %(default)s)")  # fmt: skip
    add_output_args(p)
    args = p.parse_args(argv)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, argv)
    finally:
        torch.set_num_threads(threads_before)


def _run(args, argv) -> dict:
    torch.manual_seed(0)
    result: dict = {
        "threads": args.threads,
        "precision": "fp32",
        "load_average_at_start": list(os.getloadavg()),
    }
    result["models"] = args.models
    result["pretraining"] = pretraining(args.batch_sizes, args.models, args.rounds)
    if args.records > 0 and ptbxl_heads():
        result["tokenizer"] = tokenizer(args.records, args.workers)
    else:
        result["tokenizer"] = {"skipped": "no PTB-XL records in shared/data (or --records 0)"}
        print(f"tokenizer part skipped: {result['tokenizer']['skipped']}")
    result["load_average_at_end"] = list(os.getloadavg())
    write_results("profile", result, argv, label=args.label, out=args.out)
    return result


if __name__ == "__main__":
    main()
