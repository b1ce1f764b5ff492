"""The mixed-precision path of engine.loop.train_one_epoch, exercised on CPU.

On a GPU the engines run under ``torch.autocast`` (bf16 by default, fp16 with a GradScaler); no GPU is
available to the test suite, so these tests force the same ``Amp`` object into its enabled states on
CPU (PyTorch supports CPU autocast and a CPU GradScaler) and train the tiny VQ-HBR and HeartLang
through the real step functions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import OptimConfig
from engine.loop import Amp, train_one_epoch
from engine.pretrain import PretrainStep
from engine.vqhbr import vqhbr_step
from modeling import create_model
from utils.optim import create_optimizer


def _batches(n: int = 2, b: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(b, 256, 96, generator=g)
        x[:, 180:] = 0.0
        c = torch.randint(1, 13, (b, 256), generator=g)
        t = torch.randint(1, 11, (b, 256), generator=g)
        c[:, 180:] = 0
        t[:, 180:] = 0
        out.append((x, c, t, torch.zeros(b)))
    return out


def _amp(mode: str) -> Amp:
    amp = Amp(torch.device("cpu"), "none")  # CPU: disabled by design ...
    amp.enabled, amp.name = True, mode  # ... forced on to exercise the GPU code path
    amp.dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    amp.scaler = torch.amp.GradScaler("cpu", enabled=mode == "fp16", init_scale=2.0**8)
    with amp.autocast():  # really reduced precision inside the context
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == amp.dtype
    return amp


def _args(**kw):
    base = dict(lr=1e-3, min_lr=1e-5, weight_decay=0.05, warmup_epochs=0, warmup_steps=-1, epochs=1, batch_size=4,
                opt_betas=(0.9, 0.98), opt_eps=1e-8, clip_grad=3.0, update_freq=1)  # fmt: skip
    base.update(kw)
    return OptimConfig(**base)


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_vqhbr_trains_under_autocast(mode):
    torch.manual_seed(0)
    model = create_model("vqhbr_tiny").train()
    args = _args()
    opt = create_optimizer(model, args)
    amp = _amp(mode)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train_one_epoch(model, _batches(), opt, amp, 0, lambda m, b: vqhbr_step(m, b, torch.device("cpu")),
                            np.full(2, 1e-3), 2, args.update_freq, args.clip_grad)  # fmt: skip
    assert np.isfinite(stats["loss"]) and np.isfinite(stats["grad_norm"])
    after = model.state_dict()
    assert not torch.equal(before["encoder.transformer.layers.0.0.to_qkv.weight"],
                           after["encoder.transformer.layers.0.0.to_qkv.weight"])  # fmt: skip
    # The quantizer runs outside autocast: codebook and usage stay fp32 and unit-norm.
    w = after["quantize.embedding.weight"]
    assert w.dtype == torch.float32
    assert torch.allclose(w.norm(dim=-1), torch.ones(w.shape[0]), atol=1e-5)
    if mode == "fp16":
        assert amp.scaler.get_scale() > 0  # the scaler stepped (and would back off on inf)


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_pretraining_step_under_autocast(mode):
    torch.manual_seed(0)
    tokenizer = create_model("vqhbr_tiny").eval()
    model = create_model("HeartLang_tiny").train()
    args = _args(update_freq=2)
    opt = create_optimizer(model, args)
    step = PretrainStep(tokenizer, torch.device("cpu"))
    stats = train_one_epoch(model, _batches(4), opt, _amp(mode), 0, step, np.full(2, 1e-3), 2, args.update_freq,
                            args.clip_grad)  # fmt: skip
    assert np.isfinite(stats["loss"]) and 0.0 <= stats["mlm_acc"] <= 1.0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
