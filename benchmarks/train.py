"""Training throughput of the three stages at full model size (paper Sec. 3.2, 3.3, 4).

    python -m benchmarks train [--batch_size 2] [--steps 3] [--device cpu|cuda] [--label NAME]

For each stage (VQ-HBR, masked pre-training, linear probe, full fine-tuning) it times
* ``engine``: our ``engine.loop.train_one_epoch`` (autocast, accumulation logic, lr schedule,
  clipping, meters) over an in-memory loader, with our optimizer (``--adamw_impl auto``: fused), and
* ``baseline``: a bare PyTorch loop doing the original's forward / backward / AdamW step with the original's
  kernels (plain matmul-softmax attention, torch's own dropout, torch's default AdamW; pre-training with
  targets computed on the fly), in the same run.
Extra rows: ``pretrain_cached`` (our default ``--targets cached``: the batch carries the targets, no tokenizer
forward; its baseline is the original's on-the-fly step) and ``probe_cached_features`` (``--cache_features``:
mlp_head on cached CLS features). ``adamw`` times one optimizer step of the pre-training model's 44.6 M
parameters with each kernel. Model FLOPs per step are counted once with
``torch.utils.flop_counter`` and turned into achieved TFLOP/s; on CUDA also into model FLOPs
utilisation against ``--peak_tflops`` (default: H100 SXM dense bf16, 989). Each round times the baseline
and then ours back to back; reported: the ratio of the best round of each side and the median of the
per-round ratios (``--steps 1 --rounds 8`` pairs single steps, the least load-sensitive comparison on a
shared machine). Results: benchmarks/results/train.json, run ``--label``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from argparse import Namespace

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

os.environ.setdefault("HEARTLANG_NO_PROGRESS", "1")  # timing output stays readable (no tqdm bars)

from benchmarks.common import add_output_args, write_results
from engine.config import OptimConfig
from engine.finetune import compute_loss, forward_batch, set_trainable
from engine.loop import Amp, train_one_epoch
from engine.pretrain import PretrainStep
from engine.vqhbr import vqhbr_step
from modeling import create_model
from modeling.accel import plain_attend, use_torch_dropout
from modeling.transformer import Attention
from utils.optim import adamw_kwargs, create_optimizer

# --clock: wall time (perf_counter) or this process's CPU time (process_time; with OMP_NUM_THREADS=1 it is the
# compute a step costs, robust on a machine shared with other jobs, where wall time is mostly waiting).
CLOCK = [time.perf_counter]


def make_batches(n: int, batch_size: int, n_classes: int, device: torch.device, seed: int = 0) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(batch_size, 256, 96, generator=g)
        c = torch.randint(1, 13, (batch_size, 256), generator=g)
        t = torch.randint(1, 11, (batch_size, 256), generator=g)
        y = (torch.rand(batch_size, n_classes, generator=g) < 0.3).float()
        out.append(tuple(v.to(device) for v in (x, c, t, y)))
    return out


def stages(device: torch.device):
    """name -> factory of (model, step_fn factory, train-mode setter[, baseline step_fn, batch transform])."""

    def tokenizer():
        return create_model("vqhbr").to(device).eval().requires_grad_(False)

    def vq():
        return create_model("vqhbr").to(device), lambda: lambda m, b: vqhbr_step(m, b, device), None

    def pretrain():
        tok = tokenizer()
        return create_model("HeartLang").to(device), lambda: PretrainStep(tok, device), None

    def pretrain_cached():
        tok = tokenizer()
        fly = PretrainStep(tok, device)

        def with_targets(batch):  # what the loader yields with --targets cached: the targets in slot 4
            x, c, t, _ = batch
            return x, c, t, fly.targets(x, c, t)

        model = create_model("HeartLang").to(device)
        return model, lambda: PretrainStep(None, device, cached=True), None, fly, with_targets

    def probe_cached():
        head = torch.nn.Linear(768, 5).to(device)

        def features(batch):  # --cache_features: (CLS feature, label) items
            return torch.randn(batch[0].shape[0], 768, device=device), batch[3]

        def step(m, b):
            logits, y = forward_batch(m, b, device)
            return compute_loss(logits, y, True), {}

        return head, lambda: step, None, None, features

    def finetune(trainable):
        def build():
            m = create_model("HeartLang_finetune_base", num_classes=5).to(device)
            set_trainable(m, trainable)

            def step(mm, b):
                logits, y = forward_batch(mm, b, device)
                return compute_loss(logits, y, True), {}

            # Official behaviour: model.train(True) on the whole classifier (frozen backbone included).
            return m, lambda: step, lambda mm: mm.train()

        return build

    return {
        "vqhbr": vq,
        "pretrain": pretrain,
        "pretrain_cached": pretrain_cached,
        # our defaults + --compile (inductor): the baseline stays the original's eager on-the-fly step
        "pretrain_cached_compiled": pretrain_cached,
        "finetune_linear": finetune("linear"),
        "probe_cached_features": probe_cached,
        "finetune_all": finetune("all"),
    }


def time_adamw(device: torch.device, rounds: int, steps: int = 3) -> dict:
    """ms per AdamW step over the pre-training model's parameters, per kernel (interleaved, best of rounds)."""
    model = create_model("HeartLang").to(device)
    params = list(model.parameters())
    g = torch.Generator().manual_seed(0)
    for q in params:
        q.grad = torch.randn(q.shape, generator=g).to(device)
    best = {}
    for _ in range(rounds):
        for impl in ("for_loop", "foreach", "fused"):
            opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, **adamw_kwargs(impl, params))
            opt.step()
            sync(device)
            t0 = CLOCK[0]()
            for _ in range(steps):
                opt.step()
            sync(device)
            best[impl] = min(best.get(impl, float("inf")), (CLOCK[0]() - t0) / steps * 1e3)
    return {f"{k}_ms_per_step": v for k, v in best.items()}


def count_flops(model, step_fn, batch, amp: Amp) -> int:
    with FlopCounterMode(display=False) as counter:
        with amp.autocast():
            loss, _ = step_fn(model, batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_engine(model, step_fn, batches, amp, args_ns, set_mode, net=None) -> float:
    """``net``: the module the step calls (torch.compile(model) for the ``*_compiled`` rows)."""
    optim = OptimConfig(lr=args_ns.lr, min_lr=args_ns.lr, weight_decay=args_ns.weight_decay, warmup_epochs=0,
                        warmup_steps=-1, epochs=1, batch_size=1, clip_grad=args_ns.clip_grad, layer_decay=0.9)  # fmt: skip
    opt = create_optimizer(model, optim)
    lr_values = np.full(len(batches), args_ns.lr)
    (set_mode or (lambda m: m.train()))(model)
    net = net if net is not None else model
    train_one_epoch(
        net, batches[:1], opt, amp, 0, step_fn, lr_values, 1, 1, optim.clip_grad
    )  # warm-up (+ compile)
    sync(amp_device(amp))
    t0 = CLOCK[0]()
    train_one_epoch(net, batches, opt, amp, 0, step_fn, lr_values, len(batches), 1, optim.clip_grad)
    sync(amp_device(amp))
    return CLOCK[0]() - t0


def amp_device(amp: Amp) -> torch.device:
    return torch.device(amp.device_type)


@contextlib.contextmanager
def original_kernels(model):
    """The original's kernels for the baseline: plain matmul-softmax attention (lucidrains-style, what the
    original's Attention computes) and torch's own dropout masks (bernoulli_), restored afterwards."""
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    saved = [m.attend for m in attns]
    for m in attns:
        m.attend = plain_attend
    try:
        with use_torch_dropout(True):
            yield
    finally:
        for m, attend in zip(attns, saved):
            m.attend = attend


def time_baseline(model, step_fn, batches, amp, args_ns, set_mode) -> float:
    with original_kernels(model):
        return _time_baseline(model, step_fn, batches, amp, args_ns, set_mode)


def _time_baseline(model, step_fn, batches, amp, args_ns, set_mode) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    # torch's default AdamW kernel, as the original builds it
    opt = torch.optim.AdamW(params, lr=args_ns.lr, weight_decay=args_ns.weight_decay)
    (set_mode or (lambda m: m.train()))(model)

    def one(batch):
        with amp.autocast():
            loss, _ = step_fn(model, batch)
        amp.scaler.scale(loss).backward()
        amp.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, args_ns.clip_grad)
        amp.scaler.step(opt)
        amp.scaler.update()
        opt.zero_grad(set_to_none=True)

    one(batches[0])
    sync(amp_device(amp))
    t0 = CLOCK[0]()
    for b in batches:
        one(b)
    sync(amp_device(amp))
    return CLOCK[0]() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser("python -m benchmarks train", description=__doc__.splitlines()[0])
    p.add_argument("--batch_size", type=int, default=2, help="batch size (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (default: %(default)s)")
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cuda | cpu (default: cuda when available, else cpu)",
    )
    p.add_argument(
        "--amp",
        default="bf16",
        choices=["bf16", "fp16", "none"],
        help="GPU mixed precision (default: %(default)s)",
    )
    p.add_argument(
        "--peak_tflops", type=float, default=989.0, help="GPU peak in TFLOP/s for MFU (default: %(default)s)"
    )
    p.add_argument("--stages", nargs="+", default=None, help="stages to time (default: all)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help='wall: elapsed time; cpu: process CPU time (use with OMP_NUM_THREADS=1 on a shared machine) (default: %(default)s)')  # fmt: skip
    add_output_args(p)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    amp = Amp(device, args.amp)
    ns = Namespace(
        opt="adamw",
        lr=1e-4,
        weight_decay=0.05,
        opt_betas=[0.9, 0.98],
        opt_eps=1e-8,
        clip_grad=3.0,
        update_freq=1,
    )
    batches = make_batches(args.steps, args.batch_size, 5, device)
    results = {
        "device": str(device), "precision": amp.name, "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds, "clock": args.clock,
        "stages": {}, "load_average_before": list(os.getloadavg()),
    }  # fmt: skip
    for name, build in stages(device).items():
        if args.stages and name not in args.stages:
            continue
        model, make_step, set_mode, *rest = build()
        base_step, transform = (rest + [None, None])[:2]
        step_fn = make_step()
        base_step = base_step or step_fn
        stage_batches = [transform(b) for b in batches] if transform else batches
        net = torch.compile(model) if name.endswith("_compiled") else None
        (set_mode or (lambda m: m.train()))(model)
        flops = count_flops(model, step_fn, stage_batches[0], amp)
        # Interleaved rounds, best of each: the machine may be shared, so single timings are noisy.
        bases, engs = [], []
        for _ in range(args.rounds):
            bases.append(time_baseline(model, base_step, stage_batches, amp, ns, set_mode))
            engs.append(time_engine(model, step_fn, stage_batches, amp, ns, set_mode, net))
        t_base, t_eng = min(bases), min(engs)
        # Each round times the baseline and then ours back to back: the median of the per-round ratios is less
        # sensitive than the ratio of the bests to load that changes between rounds.
        paired = sorted(b / e for b, e in zip(bases, engs))
        r = {
            "params_M": sum(q.numel() for q in model.parameters()) / 1e6,
            "trainable_params_M": sum(q.numel() for q in model.parameters() if q.requires_grad) / 1e6,
            "gflop_per_step": flops / 1e9,
            "engine_steps_per_s": args.steps / t_eng, "engine_samples_per_s": args.steps * args.batch_size / t_eng,
            "baseline_steps_per_s": args.steps / t_base,
            "baseline_samples_per_s": args.steps * args.batch_size / t_base,
            "engine_over_baseline_time": t_eng / t_base, "speedup_over_baseline": t_base / t_eng,
            "speedup_median_of_paired_rounds": statistics.median(paired),
            "speedup_paired_rounds": paired,
            "engine_tflops": flops * args.steps / t_eng / 1e12,
        }  # fmt: skip
        if device.type == "cuda":
            r["mfu"] = r["engine_tflops"] / args.peak_tflops
        results["stages"][name] = r
        print(f"{name:16s} {r['engine_steps_per_s']:.3f} steps/s  {r['engine_samples_per_s']:.2f} samples/s  "
              f"(bare loop {r['baseline_steps_per_s']:.3f} steps/s; engine/bare time {r['engine_over_baseline_time']:.2f}; "
              f"median paired speed-up {r['speedup_median_of_paired_rounds']:.2f}x)  "
              f"{r['gflop_per_step']:.1f} GFLOP/step  {r['engine_tflops'] * 1e3:.1f} GFLOP/s", flush=True)  # fmt: skip
        del model, step_fn, base_step, net
    if not args.stages or "adamw" in args.stages:
        results["adamw"] = time_adamw(device, args.rounds)
        print("adamw ms/step: " + ", ".join(f"{k} {v:.0f}" for k, v in results["adamw"].items()), flush=True)
    results["load_average_after"] = list(os.getloadavg())
    results["note"] = "best of --rounds interleaved rounds; on a shared CPU machine the numbers are noisy"
    write_results("train", results, argv, label=args.label, out=args.out)
    return results


if __name__ == "__main__":
    main()
