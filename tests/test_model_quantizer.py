"""NormEMA quantizer invariants: unit-norm codes, straight-through gradient, EMA step by hand,
no collective with one process, identical codebooks on 2 gloo ranks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modeling.quantizer import NormEMAVectorQuantizer
from tests.conftest import run_torchrun


def make_quantizer(n=16, d=8, decay=0.9, **kw) -> NormEMAVectorQuantizer:
    torch.manual_seed(0)
    return NormEMAVectorQuantizer(n, d, beta=1.0, decay=decay, **kw)


def test_codes_are_unit_norm_and_nearest():
    q = make_quantizer().eval()
    z = torch.randn(2, 30, 8)
    z_q, loss, idx = q(z)
    assert torch.allclose(z_q.norm(dim=-1), torch.ones(2, 30), atol=1e-6)
    assert torch.allclose(q.embedding.weight.norm(dim=-1), torch.ones(16), atol=1e-6)
    # Nearest code on the sphere = largest cosine similarity.
    cos = F.normalize(z, dim=-1).reshape(-1, 8) @ q.embedding.weight.t()
    assert torch.equal(idx, cos.argmax(dim=1))
    assert torch.allclose(loss, F.mse_loss(z_q, F.normalize(z, dim=-1)))


def test_straight_through_gradient():
    q = make_quantizer().train()
    z = torch.randn(2, 30, 8, requires_grad=True)
    z_q, _, _ = q(z)
    upstream = torch.randn_like(z_q)
    (z_q * upstream).sum().backward()
    # d z_q / d z = d l2norm(z) / d z: the codebook lookup is skipped in the backward pass.
    z2 = z.detach().clone().requires_grad_(True)
    (F.normalize(z2, dim=-1) * upstream).sum().backward()
    assert torch.allclose(z.grad, z2.grad, atol=1e-7)
    assert not q.embedding.weight.requires_grad


def test_ema_step_against_hand_computation():
    decay = 0.7
    q = make_quantizer(decay=decay).train()
    w0 = q.embedding.weight.clone()
    z = torch.randn(4, 10, 8)
    _, _, idx = q(z)
    zn = F.normalize(z, dim=-1).reshape(-1, 8)
    onehot = F.one_hot(idx, 16).float()
    bins = onehot.sum(0)
    mean = F.normalize((zn.t() @ onehot / bins.clamp(min=1)).t(), dim=-1)
    mean[bins == 0] = w0[bins == 0]
    expected = F.normalize(decay * w0 + (1 - decay) * mean, dim=-1)
    assert (bins == 0).any() and (bins > 0).any()
    assert torch.allclose(q.embedding.weight, expected, atol=1e-6)
    assert torch.allclose(q.cluster_size, (1 - decay) * bins)


def test_eval_mode_updates_usage_but_not_codebook():
    q = make_quantizer(decay=0.5).eval()
    w0 = q.embedding.weight.clone()
    _, _, idx = q(torch.randn(2, 20, 8))
    assert torch.equal(q.embedding.weight, w0)
    assert torch.allclose(q.cluster_size, 0.5 * torch.bincount(idx, minlength=16).float())


def test_no_collective_with_one_process(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a collective was called with a single process")

    monkeypatch.setattr(torch.distributed, "all_reduce", boom)
    monkeypatch.setattr(torch.distributed, "broadcast", boom)
    q = make_quantizer(kmeans_init=True).train()
    q(torch.randn(2, 40, 8))
    q.eval()(torch.randn(2, 40, 8))
    assert float(q.embedding.initted) == 1.0


def test_injected_all_reduce_sees_counts_and_sums():
    seen = []
    q = make_quantizer(all_reduce_fn=lambda t: seen.append(t.shape)).train()
    q(torch.randn(2, 5, 8))
    assert seen == [torch.Size([16]), torch.Size([16, 8])]


@pytest.mark.dist
@pytest.mark.slow
def test_two_ranks_share_codebook(tmp_path, repo_root):
    proc = run_torchrun([str(repo_root / "tests" / "_model_dist_worker.py"), str(tmp_path)], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert not torch.equal(r0["z_last"], r1["z_last"])  # the ranks really saw different data
    assert torch.equal(r0["after_init"], r1["after_init"])
    assert torch.equal(r0["init_bins"], r1["init_bins"])
    assert torch.equal(r0["after_steps"], r1["after_steps"])
    assert torch.equal(r0["cluster_size"], r1["cluster_size"])
    assert not torch.equal(r0["after_init"], r0["after_steps"])
    # Without the broadcast each rank runs its own k-means (the original's behaviour): they disagree.
    assert not torch.equal(r0["control_after_init"], r1["control_after_init"])


def test_quantizer_runs_in_fp32_under_16_bit_autocast():
    """Deliberate difference (docs/training.md): under a 16-bit autocast the original's quantizer matmuls run in
    16 bits; ours stay fp32 (bf16 autocast on CPU stands in for the GPU's)."""
    from modeling import create_model

    torch.manual_seed(0)
    model = create_model("vqhbr_tiny").train()
    seen = {}
    linear = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, inp, out: seen.update(encoder_linear=out.dtype))
    model.quantize.register_forward_hook(lambda m, inp, out: seen.update(z=inp[0].dtype, z_q=out[0].dtype))
    x = torch.randn(2, 256, 96)
    before = model.quantize.embedding.weight.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.encode(x)
    # autocast is really on in the encoder; the quantizer's input, output and codebook stay fp32
    assert seen == {"encoder_linear": torch.bfloat16, "z": torch.float32, "z_q": torch.float32}
    assert model.quantize.embedding.weight.dtype == torch.float32
    assert not torch.equal(before, model.quantize.embedding.weight)  # one (fp32) EMA step happened
