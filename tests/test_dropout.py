"""modeling.accel: the fast CPU dropout keeps torch's dropout distribution, scale, gradient and
seeding; the models use it, and everything it does not apply to goes through F.dropout unchanged."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modeling import accel as D
from modeling import create_model
from modeling.accel import default_attend, plain_attend, sdpa_attend
from modeling.transformer import Attention


def _scale(p: float) -> torch.Tensor:
    return torch.tensor(1.0 / (1.0 - p), dtype=torch.float32)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_values_and_gradient(p):
    assert D.fast_applies(torch.zeros(1), p, True)
    n = 1_000_001  # odd: the last element of the last hash pair is handled
    x = (torch.randn(n) + 3.0).requires_grad_(True)  # no exact zeros, so y != 0 <=> kept
    torch.manual_seed(0)
    y = D.dropout(x, p, True)
    kept = y != 0
    # keep rate 1 - p within 6 standard deviations of a Binomial(n, 1 - p)
    assert abs(kept.double().mean().item() - (1 - p)) < 6 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(y[kept], x.detach()[kept] * _scale(p))  # torch's factor float32(1 / (1 - p))
    g = torch.randn(n)
    y.backward(g)
    assert torch.equal(x.grad, torch.where(kept, g * _scale(p), torch.zeros(())))


def test_draws_are_independent_between_neighbours_and_calls():
    x = torch.ones(2_000_000)
    torch.manual_seed(1)
    a = (D.dropout(x, 0.5, True) != 0).double()
    b = (D.dropout(x, 0.5, True) != 0).double()
    n = a.numel()
    bound = 6 / math.sqrt(n)  # correlation of independent fair coins: sd 1/sqrt(n)
    for lag in (1, 2, 3, 64):  # lag 1 pairs the two halves of one hash
        assert abs(torch.corrcoef(torch.stack([a[:-lag], a[lag:]]))[0, 1].item()) < bound * math.sqrt(n / (n - lag))
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < bound
    # all four patterns of element pairs (2i, 2i + 1) are equally frequent (chi-square, 3 dof, p ~ 1e-6)
    pairs = (a[0::2] * 2 + a[1::2]).long()
    counts = torch.bincount(pairs, minlength=4).double()
    expected = counts.sum() / 4
    assert ((counts - expected) ** 2 / expected).sum().item() < 30.0


def test_seeded_by_torch_generator_with_and_without_grad():
    x = torch.randn(4, 257, 96, requires_grad=True)
    torch.manual_seed(3)
    a = D.dropout(x, 0.1, True)
    torch.manual_seed(3)
    with torch.no_grad():
        b = D.dropout(x, 0.1, True)
    assert torch.equal(a, b)  # the no-mask kernel draws the same masks
    assert not torch.equal(a, D.dropout(x, 0.1, True))  # the next call draws new ones
    torch.manual_seed(3)
    assert torch.equal(a, D.dropout(x.detach().transpose(0, 1).contiguous().transpose(0, 1), 0.1, True))


def test_where_it_does_not_apply_it_is_torch_dropout():
    x = torch.randn(64, 96)
    assert D.dropout(x, 0.1, False) is x and D.dropout(x, 0.0, True) is x
    for case in (x.double(), x.bfloat16()):  # other dtypes: F.dropout, bit for bit
        assert not D.fast_applies(case, 0.1, True)
        torch.manual_seed(5)
        ours = D.dropout(case, 0.1, True)
        torch.manual_seed(5)
        assert torch.equal(ours, F.dropout(case, 0.1, True))
    with D.use_torch_dropout():
        assert not D.fast_applies(x, 0.1, True)
        torch.manual_seed(5)
        ours = D.dropout(x, 0.1, True)
    assert D.fast_applies(x, 0.1, True)  # restored on exit
    torch.manual_seed(5)
    assert torch.equal(ours, F.dropout(x, 0.1, True))
    assert not D.fast_applies(x, 1.0, True)


def test_compiled_graphs_use_torch_dropout(monkeypatch):
    x = torch.randn(8, 16)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not D.fast_applies(x, 0.1, True)


def test_models_use_it_and_attention_matches_sdpa():
    model = create_model("HeartLang_tiny", codebook_size=64)
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(isinstance(m, D.Dropout) for m in drops)
    attn = next(m for m in model.modules() if isinstance(m, Attention))
    assert attn.attend is default_attend
    q, k, v = (torch.randn(2, 2, 257, 16) for _ in range(3))
    mask = torch.rand(2, 1, 1, 257) > 0.3
    mask[..., 0] = True
    # the original's formula, bit for bit (scale 1/4 is a power of two, so pre-scaling q is exact)
    original = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * 0.25, dim=-1), v)
    assert torch.equal(plain_attend(q, k, v, None, 0.0, 0.25), original)
    for m in (None, mask):
        # without dropout the plain (original) attention and SDPA agree to float rounding
        assert torch.allclose(plain_attend(q, k, v, m, 0.0, 0.25), sdpa_attend(q, k, v, m, 0.0, 0.25), atol=2e-6)
    # with dropout on CPU: the plain math + fast dropout; its masks come from the torch generator
    torch.manual_seed(7)
    a = default_attend(q, k, v, None, 0.1, 0.25)
    torch.manual_seed(7)
    assert torch.equal(a, plain_attend(q, k, v, None, 0.1, 0.25))
    with D.use_torch_dropout():  # torch's dropout: SDPA, as before
        torch.manual_seed(7)
        b = default_attend(q, k, v, None, 0.1, 0.25)
        torch.manual_seed(7)
        assert torch.equal(b, sdpa_attend(q, k, v, None, 0.1, 0.25))


def test_train_step_is_reproducible_and_learns():
    """A tiny HeartLang trains with the fast dropout: same seed, same losses; the loss goes down."""
    from engine.pretrain import random_masking

    x = torch.randn(8, 256, 96)
    targets = torch.randint(0, 64, (8, 256))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_model("HeartLang_tiny", codebook_size=64).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(15):
            mask = random_masking(x)
            loss = F.cross_entropy(model(x, mask_bool_matrix=mask), targets[mask])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        runs.append(losses)
    assert runs[0] == runs[1]
    assert runs[0][-1] < runs[0][0]


def test_non_finite_values_propagate_as_with_torch():
    """torch's dropout multiplies by its noise, so a dropped NaN or inf gives NaN: a non-finite activation is never
    silently zeroed (the run's NaN checks still see it). The same holds forward and backward here."""
    x = torch.full((4096,), float("nan"))
    x[::2] = float("inf")
    x.requires_grad_(True)
    torch.manual_seed(2)
    y = D.dropout(x, 0.5, True)
    assert not torch.isfinite(y).any()
    assert y[1::2].isnan().all()  # NaN in, NaN out, kept or dropped
    assert y[0::2].isinf().any() and y[0::2].isnan().any()  # a kept inf stays inf, a dropped one becomes NaN
    y.backward(torch.full_like(y, float("nan")))
    assert x.grad.isnan().all()  # the backward multiplies too: NaN * 0 stays NaN
