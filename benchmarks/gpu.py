"""One GPU check of the three training stages: AMP bf16 / fp16, SDPA vs plain attention, --compile, model FLOPs
utilisation (MFU), and a 1-node NCCL data-parallel training of each stage. Prepared for one node of H100/H200s;
about 10-15 minutes there (--budget_s stops it in time). Not yet run on a GPU: every GPU figure is unmeasured.

    python -m benchmarks gpu                            # on the GPU machine
    python -m benchmarks gpu --device cpu --models tiny --steps 1 --warmup 0 --compile_backend eager
                                                        # the CPU dry path (tests/test_benchmarks_tool.py runs it)

For each stage (VQ-HBR; pre-training with cached targets and with targets on the fly, as the original; linear
probe in the original's train mode; full fine-tuning) and each of bf16 / fp16 x SDPA / plain attention it times
``--steps`` optimizer steps (after ``--warmup``) of the engine's pieces: engine.loop.Amp (autocast + GradScaler
for fp16), the stage's step function, fused AdamW (utils.optim.adamw_kwargs), gradient clipping 3.0. Then bf16 +
SDPA again under torch.compile (compile time = first step minus a steady step). FLOPs per step are counted once
per stage with torch.utils.flop_counter; MFU = achieved FLOP/s / ``--peak_tflops`` (default from the GPU name:
H100/H200 989 dense bf16/fp16, A100 312). Also: peak GPU memory per configuration, the largest |bf16 - fp32|
and |fp16 - fp32| of the pre-training logits on one batch, and SDPA vs plain agreement.

Data-parallel run (``--ddp_steps``, default 300; 0 skips it): for each of VQ-HBR, pre-training (cached targets),
linear probe (train mode) and full fine-tuning, in bf16 and in fp16, ``torchrun --standalone --nproc_per_node
<GPUs>`` runs ``--ddp_steps`` steps of DistributedDataParallel training (``--ddp_backend nccl``; each rank its
own batch of ``--batch_size``); rank 0 reports the median step time, global samples/s, MFU per GPU and the
largest rank's peak memory (``ddp`` rows). The CPU dry path runs it with ``--ddp_backend gloo``.
Results: benchmarks/results/gpu.json, run ``--label`` (and a table on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

os.environ.setdefault("HEARTLANG_NO_PROGRESS", "1")

from benchmarks.common import REPO, add_output_args, write_results
from engine.finetune import compute_loss, set_trainable
from engine.loop import Amp
from engine.pretrain import PretrainStep
from engine.vqhbr import vqhbr_step
from modeling import create_model
from modeling.accel import plain_attend, sdpa_attend
from modeling.transformer import Attention
from utils.optim import adamw_kwargs

STAGES = ("vqhbr", "pretrain_cached", "pretrain_on_the_fly", "probe_train_mode", "finetune_all")
DDP_STAGES = ("vqhbr", "pretrain_cached", "probe_train_mode", "finetune_all")
PEAKS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def set_attention(model, impl: str) -> None:
    for m in model.modules():
        if isinstance(m, Attention):
            m.attend = plain_attend if impl == "plain" else sdpa_attend


def names(models: str) -> dict:
    if models == "tiny":
        return {"vqhbr": ("vqhbr_tiny", {}), "heartlang": ("HeartLang_tiny", {}),
                "classifier": ("HeartLang_finetune_tiny", {"num_classes": 5})}  # fmt: skip
    return {"vqhbr": ("vqhbr", {}), "heartlang": ("HeartLang", {}),
            "classifier": ("HeartLang_finetune_base", {"num_classes": 5})}  # fmt: skip


def build(stage: str, models: str, device):
    """(trained module, step_fn(module, batch), batch transform) of ``stage``."""
    n = names(models)
    if stage == "vqhbr":
        return create_model(n["vqhbr"][0]).to(device), lambda m, b: vqhbr_step(m, b, device), None
    if stage.startswith("pretrain"):
        model = create_model(n["heartlang"][0]).to(device)
        tok = create_model(n["vqhbr"][0]).to(device).eval().requires_grad_(False)
        tok.quantize.all_reduce_fn = lambda tensor: None
        fly = PretrainStep(tok, device)
        if stage == "pretrain_on_the_fly":
            return model, fly, None

        def with_targets(b):
            with torch.no_grad():
                return (*b[:3], fly.targets(*b[:3]))

        return model, PretrainStep(None, device, cached=True), with_targets
    name, kw = n["classifier"]
    model = create_model(name, **kw).to(device)
    set_trainable(model, "linear" if stage == "probe_train_mode" else "all")
    if stage == "probe_train_mode":

        def probe(m, b):  # as engine.finetune.FinetuneStep: backbone without autograd, head trained
            x, c, t, y = b
            with torch.no_grad():
                feats = model.forward_features(x, c, t)
            return compute_loss(m(feats), y, True), {}

        return model, probe, None

    def full(m, b):
        x, c, t, y = b
        return compute_loss(m(x, lead_ids=c, time_ids=t), y, True), {}

    return model, full, None


def make_batch(batch: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 256, 96, generator=g)
    c = torch.randint(1, 13, (batch, 256), generator=g)
    t = torch.randint(1, 11, (batch, 256), generator=g)
    c[:, 200:] = 0  # tail padding, as real sentences have
    t[:, 200:] = 0
    y = (torch.rand(batch, 5, generator=g) < 0.3).float()
    return tuple(v.to(device) for v in (x, c, t, y))


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def count_flops(model, step_fn, batch, stage) -> float:
    trained = model.mlp_head if stage == "probe_train_mode" else model
    with FlopCounterMode(display=False) as counter:
        loss, _ = step_fn(trained, batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def time_config(stage, args, device, precision, attention, compiled) -> dict:
    torch.manual_seed(0)
    model, step_fn, transform = build(stage, args.models, device)
    set_attention(model, attention)
    batch = make_batch(args.batch_size, device)
    batch = transform(batch) if transform else batch
    trained = model.mlp_head if stage == "probe_train_mode" else model
    params = [p for p in trained.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, **adamw_kwargs("auto", params))
    amp = Amp(device, precision)
    net = torch.compile(trained, backend=args.compile_backend) if compiled else trained
    model.train()  # Official behaviour (probe): the whole classifier in train mode
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def one():
        with amp.autocast():
            loss, _ = step_fn(net, batch)
        amp.scaler.scale(loss).backward()
        amp.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        amp.scaler.step(opt)
        amp.scaler.update()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    t0 = time.perf_counter()
    loss = one()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(args.warmup):
        one()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = one()
    sync(device)
    step_s = (time.perf_counter() - t0) / args.steps
    row = {"stage": stage, "precision_requested": precision, "precision": amp.name, "attention": attention,
           "compiled": compiled, "batch_size": args.batch_size, "step_s": step_s,
           "samples_per_s": args.batch_size / step_s, "first_step_s": first, "last_loss": loss}  # fmt: skip
    if device.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


@torch.no_grad()
def precision_agreement(args, device) -> dict:
    """Largest |logit difference| of the pre-training model in bf16 / fp16 autocast vs fp32, one batch; and
    the share of cached-target words whose code changes under fp16 autocast (the original's way)."""
    torch.manual_seed(0)
    n = names(args.models)
    model = create_model(n["heartlang"][0]).to(device).eval()
    tok = create_model(n["vqhbr"][0]).to(device).eval()
    tok.quantize.all_reduce_fn = lambda tensor: None
    x, c, t, _ = make_batch(args.batch_size, device)
    ref = model(x, lead_ids=c, time_ids=t).float()
    codes = tok.get_codebook_indices(x)
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            got = model(x, lead_ids=c, time_ids=t).float()
            got_codes = tok.get_codebook_indices(x)
        out[f"{name}_max_abs_logit_diff"] = float((got - ref).abs().max())
        out[f"{name}_target_words_changed"] = float((got_codes != codes).float().mean())
    set_attention(model, "plain")
    out["plain_vs_sdpa_max_abs_logit_diff"] = float(
        (model(x, lead_ids=c, time_ids=t).float() - ref).abs().max()
    )
    return out


def mfu(flops_per_step: float, step_s: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation of one device: its achieved FLOP/s over its dense peak; None without a peak.
    In data-parallel training every device does ``flops_per_step`` (its own batch) per step."""
    if not peak_tflops:
        return None
    return flops_per_step / step_s / (peak_tflops * 1e12)


def ddp_worker(stage: str, precision: str, args) -> dict | None:
    """One torchrun process of a 1-node data-parallel run of ``stage``: ``--ddp_steps`` optimizer steps (after
    ``--warmup``) on its own random batch, DDP gradient all-reduce, the engine's Amp and fused AdamW. Rank 0
    returns the row: median step time, global samples/s, MFU per GPU, peak memory (largest rank)."""
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(args.ddp_backend)
    world, rank = dist.get_world_size(), dist.get_rank()
    try:
        torch.manual_seed(0)
        model, step_fn, transform = build(stage, args.models, device)
        batch = make_batch(args.batch_size, device, seed=rank)
        batch = transform(batch) if transform else batch
        flops = count_flops(model, step_fn, batch, stage)
        trained = model.mlp_head if stage == "probe_train_mode" else model
        params = [p for p in trained.parameters() if p.requires_grad]
        net = torch.nn.parallel.DistributedDataParallel(trained, device_ids=[local] if device.type == "cuda" else None)
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, **adamw_kwargs("auto", params))
        amp = Amp(device, precision)
        model.train()  # Official behaviour (probe): the whole classifier in train mode
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times, loss = [], float("nan")
        for i in range(args.warmup + args.ddp_steps):
            t0 = time.perf_counter()
            with amp.autocast():
                out, _ = step_fn(net, batch)
            amp.scaler.scale(out).backward()
            amp.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 3.0)
            amp.scaler.step(opt)
            amp.scaler.update()
            opt.zero_grad(set_to_none=True)
            sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
                loss = float(out.detach())
        peak = torch.tensor([torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0], device=device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        step_s = statistics.median(times)
        row = {"stage": stage, "precision_requested": precision, "precision": amp.name, "backend": args.ddp_backend,
               "world_size": world, "batch_per_rank": args.batch_size, "steps": len(times), "step_s": step_s,
               "step_s_mean": statistics.fmean(times), "samples_per_s": world * args.batch_size / step_s,
               "gflop_per_step_per_rank": flops / 1e9, "mfu": mfu(flops, step_s, args.peak), "last_loss": loss,
               "peak_mem_gib_max_rank": float(peak.item()) if device.type == "cuda" else None}  # fmt: skip
        return row if rank == 0 else None
    finally:
        dist.destroy_process_group()


def ddp_runs(args, peak: float | None, t_start: float, res: dict) -> None:
    """``torchrun --standalone --nproc_per_node N`` per stage and precision; rank 0's row of each."""
    nproc = args.nproc or max(1, torch.cuda.device_count())
    for stage in args.ddp_stages:
        for precision in ("bf16", "fp16"):
            if time.time() - t_start > args.budget_s:
                res["skipped"].append(f"ddp {stage} {precision}: out of --budget_s")
                continue
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                   "-m", "benchmarks", "gpu", "--_ddp_worker", stage, precision, "--device", args.device,
                   "--models", args.models, "--batch_size", str(args.batch_size), "--warmup", str(args.warmup),
                   "--ddp_steps", str(args.ddp_steps), "--ddp_backend", args.ddp_backend,
                   "--peak_tflops", str(peak or 0)]  # fmt: skip
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"ddp run {stage} {precision} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
            row = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
            res["ddp"].append(row)
            print(f"ddp {row['world_size']}x {stage:18s} {row['precision']:5s} step {row['step_s'] * 1e3:8.1f} ms "
                  f"{row['samples_per_s']:9.1f} samples/s" + (f"  MFU {row['mfu']:.1%}" if row["mfu"] else "")
                  + (f"  {row['peak_mem_gib_max_rank']:.1f} GiB" if row["peak_mem_gib_max_rank"] else ""), flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser("python -m benchmarks gpu", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="torch device (default: %(default)s)")
    p.add_argument(
        "--models",
        default="full",
        choices=["full", "tiny"],
        help="full: the paper's sizes; tiny: a fast check of the script (default: %(default)s)",
    )
    p.add_argument(
        "--batch_size",
        type=int,
        default=64,
        help="per-GPU batch, as the original scripts (default: %(default)s)",
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps per setting (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (default: %(default)s)")
    p.add_argument("--stages", nargs="+", default=list(STAGES), help="stages to time (default: all)")
    p.add_argument(
        "--compile_backend", default="inductor", help="torch.compile backend (default: %(default)s)"
    )
    p.add_argument(
        "--peak_tflops",
        type=float,
        default=None,
        help="the GPU's dense bf16 peak in TFLOP/s for MFU (default: looked up from the device name)",
    )
    p.add_argument(
        "--budget_s",
        type=float,
        default=900,
        help="skip what is left after this many seconds (default: %(default)s)",
    )
    p.add_argument("--ddp_steps", type=int, default=300,
                   help="steps of the 1-node data-parallel run of each stage; 0 skips it (default: %(default)s)")  # fmt: skip
    p.add_argument("--ddp_stages", nargs="*", default=list(DDP_STAGES),
                   help="stages of the data-parallel run (default: " + " ".join(DDP_STAGES) + ")")  # fmt: skip
    p.add_argument("--nproc", type=int, default=None, help="processes of the data-parallel run (default: one per GPU)")
    p.add_argument("--ddp_backend", default="nccl", help="process-group backend (default: %(default)s; gloo on CPU)")
    p.add_argument("--_ddp_worker", nargs=2, default=None, help=argparse.SUPPRESS)
    add_output_args(p)
    args = p.parse_args(argv)
    if args._ddp_worker:
        args.peak = args.peak_tflops or None
        row = ddp_worker(*args._ddp_worker, args)
        if row is not None:
            print(json.dumps(row), flush=True)
        return row or {}
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device here: run on the GPU machine, or use --device cpu --models tiny for the dry path"
        )
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    peak = args.peak_tflops or next((v for k, v in PEAKS.items() if gpu and k in gpu), None)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.time()
    res = {"device": str(device), "gpu": gpu, "models": args.models, "batch_size": args.batch_size, "steps": args.steps, "peak_tflops": peak,
           "rows": [], "skipped": [], "ddp": []}  # fmt: skip
    flops = {}
    for stage in args.stages:
        torch.manual_seed(0)
        model, step_fn, transform = build(stage, args.models, device)
        batch = make_batch(args.batch_size, device)
        flops[stage] = count_flops(model, step_fn, transform(batch) if transform else batch, stage)
        del model
    res["gflop_per_step"] = {k: v / 1e9 for k, v in flops.items()}
    configs = [(s, pr, at, False) for s in args.stages for pr in ("bf16", "fp16") for at in ("sdpa", "plain")]
    configs += [(s, "bf16", "sdpa", True) for s in args.stages]
    for stage, precision, attention, compiled in configs:
        if time.time() - t_start > args.budget_s:
            res["skipped"].append(f"{stage} {precision} {attention} compiled={compiled}: out of --budget_s")
            continue
        torch._dynamo.reset()
        row = time_config(stage, args, device, precision, attention, compiled)
        row["tflops"] = flops[stage] / row["step_s"] / 1e12
        row["mfu"] = row["tflops"] / peak if peak else None
        res["rows"].append(row)
        print(f"{stage:20s} {row['precision']:5s} {attention:5s} {'compiled' if compiled else 'eager   '} "
              f"{row['samples_per_s']:9.1f} samples/s  {row['tflops']:7.2f} TFLOP/s"
              + (f"  MFU {row['mfu']:.1%}" if row["mfu"] is not None else "")
              + (f"  first step {row['first_step_s']:.1f} s" if compiled else "")
              + (f"  {row['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in row else ""), flush=True)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.ddp_steps > 0:
        ddp_runs(args, peak, t_start, res)
    res["agreement"] = precision_agreement(args, device)
    res["wall_s"] = time.time() - t_start
    print(json.dumps(res["agreement"]))
    print(f"{res['wall_s']:.0f} s ({len(res['rows'])} configurations, {len(res['skipped'])} skipped)")
    write_results("gpu", res, argv, label=args.label, out=args.out)
    return res


if __name__ == "__main__":
    main()
