"""Corrected-variant flags (mask before conv, padding attention mask) and shape tests over sizes / lead subsets."""

from __future__ import annotations

import pytest
import torch

from modeling import create_model


def sentence(batch=2, n_words=256, n_real=120, leads=(1, 2, 3), seed=0):
    """Random sentence with ``n_real`` real words and zero padding: x (B, N, 96), chans, times (B, N)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(batch, n_words, 96)
    x[:, :n_real] = torch.randn(batch, n_real, 96, generator=g)
    per_lead = -(-n_real // len(leads))
    chans = torch.zeros(batch, n_words, dtype=torch.long)
    times = torch.zeros(batch, n_words, dtype=torch.long)
    for i in range(n_real):
        chans[:, i] = leads[i // per_lead]
        times[:, i] = 1 + (i % per_lead) * 10 // per_lead
    return x, chans, times


def test_mask_before_conv_stops_leak_into_neighbours():
    x, c, t = sentence(batch=1)
    mask = torch.zeros(1, 256, dtype=torch.bool)
    mask[0, 50] = True
    x_changed = x.clone()
    x_changed[0, 50] += 5.0  # only the masked word's samples change
    for flag, leaks in ((False, True), (True, False)):
        torch.manual_seed(0)
        m = create_model("HeartLang_tiny", mask_before_conv=flag).eval()
        with torch.no_grad():
            a = m(x, mask, c, t, return_qrs_tokens=True)
            b = m(x_changed, mask, c, t, return_qrs_tokens=True)
        assert torch.allclose(a, b, atol=1e-6) is not leaks, f"mask_before_conv={flag}"


@pytest.mark.parametrize("name", ["HeartLang_tiny", "HeartLang_finetune_tiny", "vqhbr_tiny"])
def test_padding_attention_mask_isolates_real_words(name):
    x, c, t = sentence(batch=1, n_real=100)
    x_changed = x.clone()
    x_changed[0, 100:] = 0.0
    # Give the padding words (lead id 0) a time id: their tokens change, which words are padding does not.
    c_changed, t_changed = c.clone(), t.clone()
    t_changed[0, 100:] = 5
    for flag in (False, True):
        torch.manual_seed(0)
        m = create_model(name, padding_attention_mask=flag).eval()
        with torch.no_grad():
            if name.startswith("vqhbr"):
                a = m.encoder(x, c, t, return_qrs_tokens=True)[:, :100]
                b = m.encoder(x_changed, c_changed, t_changed, return_qrs_tokens=True)[:, :100]
            elif "finetune" in name:
                a, b = m(x, c, t), m(x_changed, c_changed, t_changed)
            else:
                a = m(x, None, c, t, return_qrs_tokens=True)[:, :100]
                b = m(x_changed, None, c_changed, t_changed, return_qrs_tokens=True)[:, :100]
        assert torch.allclose(a, b, atol=1e-5) is flag, f"{name} padding_attention_mask={flag}"


def test_padding_attention_mask_from_content_without_ids():
    x, _, _ = sentence(batch=1, n_real=100)
    torch.manual_seed(0)
    m = create_model("HeartLang_tiny", padding_attention_mask=True).eval()
    with torch.no_grad():
        a = m(x, return_qrs_tokens=True)[:, :100]
        # Masking a padding word changes its token; with the flag the real words must not notice.
        mask = torch.zeros(1, 256, dtype=torch.bool)
        mask[0, 200] = True
        b = m(x, mask, return_qrs_tokens=True)[:, :100]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


SIZES = [
    "vqhbr_tiny",
    "HeartLang_tiny",
    "HeartLang_finetune_tiny",
    "HeartLang_small",
    "HeartLang_finetune_small",
]
LEADS = [(1,), (1, 2, 8), tuple(range(1, 13))]


@pytest.mark.parametrize("name", SIZES)
@pytest.mark.parametrize("leads", LEADS, ids=["1lead", "3leads", "12leads"])
def test_output_shapes(name, leads):
    x, c, t = sentence(batch=2, n_real=min(256, 20 * len(leads)), leads=leads)
    torch.manual_seed(0)
    m = create_model(name).eval()
    cfg = m.config
    with torch.no_grad():
        if name.startswith("vqhbr"):
            ids = m.get_codebook_indices(x, c, t)
            assert ids.shape == (2, 256) and ids.dtype == torch.long and int(ids.max()) < cfg.codebook_size
            quantize, _, _ = m.encode(x, c, t)
            assert quantize.shape == (2, 256, cfg.codebook_dim)
            assert m.decode(quantize, c, t).shape == (2, 256, 96)
            assert m.encoder(x, c, t).shape == (2, cfg.embed_dim)
            loss, log = m(x, c, t)
            assert loss.ndim == 0 and set(log) == {"val/quant_loss", "val/rec_loss", "val/total_loss"}
        elif "finetune" in name:
            assert m(x, c, t).shape == (2, cfg.num_classes)
            assert m.forward_features(x, c, t).shape == (2, cfg.embed_dim)
        else:
            mask = torch.zeros(2, 256, dtype=torch.bool)
            mask[:, ::2] = True
            assert m(x, mask, c, t).shape == (256, cfg.codebook_size)
            assert m(x, mask, c, t, return_all_tokens=True).shape == (2, 257, cfg.embed_dim)
            assert m(x, None, c, t, return_qrs_tokens=True).shape == (2, 256, cfg.embed_dim)


def test_train_mode_backward_reaches_every_parameter():
    x, c, t = sentence()
    for name in ("vqhbr_tiny", "HeartLang_tiny"):
        torch.manual_seed(0)
        m = create_model(name).train()
        if name.startswith("vqhbr"):
            loss, log = m(x, c, t)
            assert set(log) == {"train/quant_loss", "train/rec_loss", "train/total_loss"}
        else:
            mask = torch.rand(2, 256) < 0.5
            loss = torch.nn.functional.cross_entropy(
                m(x, mask, c, t), torch.randint(0, 64, (int(mask.sum()),))
            )
        loss.backward()
        missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == []


def test_sentence_longer_than_model_is_rejected():
    m = create_model("HeartLang_tiny", seq_len=64)
    with pytest.raises(ValueError, match="at most 64"):
        m(torch.randn(1, 65, 96), return_all_tokens=True)
