"""--compile (torch.compile) parity and speed of the three training stages, on CPU or GPU.

    python -m benchmarks compile [--backend inductor] [--steps 20] [--full_batch 8] [--full_stages pretrain]

1. Parity on the tiny models (``vqhbr_tiny``, ``HeartLang_tiny`` with cached targets, ``HeartLang_finetune_tiny``
   with every parameter trained): the same initial weights and batches, ``--steps`` AdamW steps eager and
   compiled (``torch._inductor.config.fallback_random``: dropout draws from the same generator as eager).
   Reported: max |output difference| of one eval-mode forward before training, and the max relative
   difference of the loss curves. Tolerances: outputs 1e-4 absolute, loss curve 1e-3 relative.
2. Speed at full size: compile time (first step) and steady-state step time, compiled vs eager, in the same
   run. Results: benchmarks/results/compile.json, run ``--label``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HEARTLANG_NO_PROGRESS", "1")

from benchmarks.common import add_output_args, write_results
from engine.finetune import compute_loss, forward_batch
from engine.pretrain import PretrainStep
from engine.vqhbr import vqhbr_step
from modeling import create_model

OUT_TOL, LOSS_RTOL = 1e-4, 1e-3
CLOCK = [time.perf_counter]  # --clock cpu: process CPU time (robust on a shared machine; OMP_NUM_THREADS=1)


def batches(n: int, b: int, codes: int, device, seed: int = 0) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(b, 256, 96, generator=g)
        c = torch.randint(1, 13, (b, 256), generator=g)
        t = torch.randint(1, 11, (b, 256), generator=g)
        y = torch.randint(0, codes, (b, 256), generator=g)  # cached targets (pre-training)
        out.append(tuple(v.to(device) for v in (x, c, t, y)))
    return out


def stage(name: str, size: str, device):
    """(model, step_fn, forward_fn for the parity check)."""
    tiny = size == "tiny"
    if name == "vqhbr":
        model = create_model("vqhbr_tiny" if tiny else "vqhbr")
        return (
            model.to(device),
            lambda m, b: vqhbr_step(m, b, device),
            lambda m, b: m.get_codebook_indices(*b[:3]),
        )
    if name == "pretrain":
        model = create_model("HeartLang_tiny" if tiny else "HeartLang").to(device)
        step = PretrainStep(None, device, cached=True)
        return model, step, lambda m, b: m(b[0], lead_ids=b[1], time_ids=b[2])
    model = create_model("HeartLang_finetune_tiny" if tiny else "HeartLang_finetune_base", num_classes=5).to(
        device
    )

    def step(m, b):
        x, c, t, y = b
        logits, yy = forward_batch(m, (x, c, t, (y[:, :5] % 2).float()), device)
        return compute_loss(logits, yy, True), {}

    return model, step, lambda m, b: m(b[0], lead_ids=b[1], time_ids=b[2])


def train(model, step_fn, data, compiled: bool, backend: str, device) -> tuple[list[float], float, float]:
    """Losses of len(data) steps; (losses, first-step wall seconds, steady-state seconds per step (--clock))."""
    net = torch.compile(model, backend=backend) if compiled else model
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.05)
    model.train()
    losses, times = [], []
    wall0 = time.perf_counter()
    for i, b in enumerate(data):
        t0 = CLOCK[0]()
        loss, _ = step_fn(net, b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(CLOCK[0]() - t0)
        if i == 0:
            first_wall = time.perf_counter() - wall0  # compile workers are other processes: wall time here
    steady = times[1:] or times
    return losses, first_wall, sum(steady) / len(steady)


def parity(name: str, args, device) -> dict:
    torch.manual_seed(0)
    model, step_fn, fwd = stage(name, "tiny", device)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    codes = getattr(model.config, "codebook_size", 64) or 64
    data = batches(args.steps, 4, codes, device)
    model.eval()
    with torch.no_grad():
        ref = fwd(model, data[0])
        torch._dynamo.reset()
        got = fwd(torch.compile(model, backend=args.backend), data[0])
    out_diff = float((ref.float() - got.float()).abs().max())
    curves = {}
    for compiled in (False, True):
        model.load_state_dict(init)
        torch.manual_seed(1)
        torch._dynamo.reset()
        curves[compiled] = train(model, step_fn, data, compiled, args.backend, device)
    eager, comp = curves[False][0], curves[True][0]
    rel = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(eager, comp))
    r = {"max_abs_output_diff": out_diff, "loss_curve_max_rel_diff": rel, "eager_losses": eager,
         "compiled_losses": comp, "within_tolerance": out_diff <= OUT_TOL and rel <= LOSS_RTOL}  # fmt: skip
    print(f"parity {name:9s}: outputs {out_diff:.2e}, loss curve rel {rel:.2e} over {len(eager)} steps "
          f"({'OK' if r['within_tolerance'] else 'OUTSIDE TOLERANCE'})", flush=True)  # fmt: skip
    return r


def speed(name: str, args, device) -> dict:
    torch.manual_seed(0)
    model, step_fn, _ = stage(name, "full", device)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    data = batches(args.full_steps + 1, args.full_batch, 8192, device)
    r = {}
    for compiled in (False, True):
        model.load_state_dict(init)
        torch._dynamo.reset()
        _, first, steady = train(model, step_fn, data, compiled, args.backend, device)
        r["compiled" if compiled else "eager"] = {"first_step_wall_s": first, "steady_step_s": steady,
                                                  "samples_per_s": args.full_batch / steady}  # fmt: skip
    r["speedup"] = r["eager"]["steady_step_s"] / r["compiled"]["steady_step_s"]
    r["compile_time_wall_s"] = r["compiled"]["first_step_wall_s"] - r["eager"]["first_step_wall_s"]
    print(f"speed  {name:9s}: eager {r['eager']['samples_per_s']:.2f} samples/s, compiled "
          f"{r['compiled']['samples_per_s']:.2f} ({r['speedup']:.2f}x), compile time {r['compile_time_wall_s']:.0f} s (wall)",
          flush=True)  # fmt: skip
    return r


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser("python -m benchmarks compile", description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="inductor", help="torch.compile backend (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="parity steps on tiny models (default: %(default)s)")
    p.add_argument(
        "--stages",
        nargs="*",
        default=["vqhbr", "pretrain", "finetune_all"],
        help="stages of the parity check (default: vqhbr pretrain finetune_all)",
    )
    p.add_argument(
        "--full_stages",
        nargs="*",
        default=["pretrain"],
        help="stages timed at full model size (default: pretrain)",
    )
    p.add_argument(
        "--full_batch", type=int, default=8, help="batch size of the full-size timing (default: %(default)s)"
    )
    p.add_argument(
        "--full_steps", type=int, default=3, help="timed steps at full size (default: %(default)s)"
    )
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cuda | cpu (default: cuda when available, else cpu)",
    )
    p.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall: elapsed time; cpu: process CPU time (default: %(default)s)",
    )
    add_output_args(p)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.backend == "inductor":
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True  # dropout: the eager generator, so the curves are comparable
    res = {"device": str(device), "backend": args.backend, "clock": args.clock, "tolerances": {"output_abs": OUT_TOL, "loss_rel": LOSS_RTOL},
           "load_average_before": list(os.getloadavg()), "parity": {}, "speed": {}}  # fmt: skip
    for name in args.stages:
        res["parity"][name] = parity(name, args, device)
    for name in args.full_stages:
        res["speed"][name] = speed(name, args, device)
    res["load_average_after"] = list(os.getloadavg())
    write_results("compile", res, argv, label=args.label, out=args.out)
    return res


if __name__ == "__main__":
    main()
