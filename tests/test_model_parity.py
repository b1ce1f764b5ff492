"""Numerical parity with the original implementation: every entry of fixtures/tiny_*_io.pt."""

from __future__ import annotations

import pytest
import torch

from modeling import HeartLang, HeartLangClassifier, NormEMAVectorQuantizer, create_model, kmeans
from modeling.vqhbr import VQHBR

ATOL, RTOL, GRAD_ATOL = 1e-5, 1e-4, 1e-6


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=RTOL)


def load_fixture(ref_fixtures, name: str):
    weights = torch.load(ref_fixtures / f"tiny_{name}.pt", weights_only=True)
    io = torch.load(ref_fixtures / f"tiny_{name}_io.pt", weights_only=True)
    return weights["state_dict"], io


@pytest.fixture(scope="module")
def vq(ref_fixtures):
    state, io = load_fixture(ref_fixtures, "vqhbr")

    def fresh(train: bool = False) -> VQHBR:
        model = create_model("vqhbr_tiny")
        model.load_state_dict(state, strict=True)
        return model.train(train)

    return fresh, io, state


def test_vqhbr_encoder_outputs(vq):
    fresh, io, _ = vq
    m = fresh()
    x, c, t = io["x"], io["in_chans"], io["in_times"]
    with torch.no_grad():
        close(m.encoder(x, c, t, return_all_tokens=True), io["encoder_all_tokens"])
        feats = m.encoder(x, c, t, return_qrs_tokens=True)
        close(feats, io["encoder_features"])
        close(m.encoder(x, c, t), io["encoder_mean"])
        close(m.encoder(x, return_qrs_tokens=True), io["encoder_features_no_chans_times"])
        close(m.encode_task_layer(feats), io["to_quantizer_features"])
    # Padding is judged from content: sample 3 has all-zero words with non-zero ids.
    zero_pos = io["synthetic_zero_word_positions_sample3"]
    assert (c[3, zero_pos] > 0).all() and (feats[3, zero_pos] == 0).all()


def test_vqhbr_encode_decode_indices(vq):
    fresh, io, _ = vq
    m = fresh()
    x, c, t = io["x"], io["in_chans"], io["in_times"]
    with torch.no_grad():
        quantize, embed_ind, loss = m.encode(x, c, t)
        close(quantize, io["quantize"])
        assert torch.equal(embed_ind, io["embed_ind"])
        close(loss, io["quant_loss_encode"])
        assert torch.equal(m.get_codebook_indices(x, c, t), io["codebook_indices"])
        assert torch.equal(m.get_codebook_indices(x), io["codebook_indices_no_chans_times"])
        close(m.get_codebook_quantize(x, c, t), io["codebook_quantize"])
        close(m.decoder(io["quantize"], c, t, return_qrs_tokens=True), io["decoder_features"])
        close(m.decode(io["quantize"], c, t), io["reconstruction"])


def test_vqhbr_eval_forward_loss_and_usage_counter(vq):
    fresh, io, _ = vq
    m = fresh()
    x, c, t = io["x"], io["in_chans"], io["in_times"]
    close(m.quantize.cluster_size, io["eval_cluster_size_before"])
    codebook = m.quantize.embedding.weight.clone()
    with torch.no_grad():
        loss, log = m(x, c, t)
    close(loss, io["loss"])
    assert set(log) == {"val/quant_loss", "val/rec_loss", "val/total_loss"}
    for key in ("quant_loss", "rec_loss", "total_loss"):
        assert log[f"val/{key}"] == pytest.approx(io[key].item(), rel=RTOL, abs=ATOL)
    # Official behaviour: eval mode still moves the usage EMA, never the codebook.
    close(m.quantize.cluster_size, io["eval_cluster_size_after_one_forward"])
    assert torch.equal(m.quantize.embedding.weight, codebook)


def test_vqhbr_train_step(vq):
    fresh, io, _ = vq
    m = fresh(train=True)
    x, c, t = io["x"], io["in_chans"], io["in_times"]
    close(m.quantize.embedding.weight, io["train_codebook_before"])
    loss, log = m(x, c, t)
    loss.backward()
    close(loss, io["train_loss"])
    assert log["train/quant_loss"] == pytest.approx(io["train_quant_loss"].item(), rel=RTOL, abs=ATOL)
    assert log["train/rec_loss"] == pytest.approx(io["train_rec_loss"].item(), rel=RTOL, abs=ATOL)
    q = m.quantize
    close(q.embedding.weight, io["train_codebook_after"])
    close(q.cluster_size, io["train_cluster_size_after"])
    assert torch.equal(q.embedding.embed_avg, io["train_embed_avg_after"])
    assert torch.equal(q.embedding.cluster_size, io["train_embedding_cluster_size_after"])
    grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
    assert [n for n, g in grads.items() if g is None] == io["train_params_without_grad"]
    assert set(grads) == set(io["train_grads"])
    for name, grad in grads.items():
        close(grad, io["train_grads"][name], atol=GRAD_ATOL)


@pytest.mark.parametrize("prefix", ["ema099", "ema05"])
def test_quantizer_ema_step(vq, prefix):
    _, io, _ = vq
    q = NormEMAVectorQuantizer(64, 16, beta=1.0, decay=io[f"{prefix}_decay"]).train()
    q.embedding.weight.data.copy_(io[f"{prefix}_codebook_before"])
    z_q, loss, indices = q(io[f"{prefix}_z"])
    assert torch.equal(indices, io[f"{prefix}_indices"])
    close(z_q, io[f"{prefix}_z_q"])
    close(loss, io[f"{prefix}_loss"])
    close(q.embedding.weight, io[f"{prefix}_codebook_after"])
    close(q.cluster_size, io[f"{prefix}_cluster_size_after"])


def test_kmeans_bit_exact(vq):
    _, io, _ = vq
    torch.manual_seed(io["kmeans_seed"])
    means, bins = kmeans(io["kmeans_samples"], 64, 10, use_cosine_sim=True)
    assert torch.equal(means, io["kmeans_means"])
    assert torch.equal(bins, io["kmeans_bins"])


def test_kmeans_quantizer_init_and_first_step(vq):
    _, io, _ = vq
    q = NormEMAVectorQuantizer(64, 16, beta=1.0, decay=0.99, kmeans_init=True).train()
    before = q.state_dict()
    assert list(before) == list(io["kmeans_quantizer_state_before"])
    for key, value in io["kmeans_quantizer_state_before"].items():
        assert torch.equal(before[key], value), key
    torch.manual_seed(io["kmeans_seed"])
    z_q, loss, indices = q(io["ema099_z"])
    assert torch.equal(indices, io["kmeans_quantizer_indices"])
    close(z_q, io["kmeans_quantizer_z_q"])
    close(loss, io["kmeans_quantizer_loss"])
    after = q.state_dict()
    for key, value in io["kmeans_quantizer_state_after"].items():
        close(after[key], value)
    assert torch.equal(
        after["embedding.cluster_size"], io["kmeans_quantizer_state_after"]["embedding.cluster_size"]
    )


def test_heartlang_outputs(ref_fixtures):
    state, io = load_fixture(ref_fixtures, "heartlang")
    m: HeartLang = create_model("HeartLang_tiny")
    m.load_state_dict(state, strict=True)
    m.eval()
    x, c, t, mask = io["x"], io["in_chans"], io["in_times"], io["mask"]
    assert int(mask.sum()) == 4 * 128
    with torch.no_grad():
        logits = m(x, mask, c, t)
        close(logits, io["logits"])
        close(m(x, mask, c, t, return_qrs_tokens=True), io["features_words"])
        close(m(x, mask, c, t, return_all_tokens=True), io["features_all"])
        close(m(x, None, c, t, return_all_tokens=True), io["features_all_nomask"])
        close(m(x, return_all_tokens=True), io["features_all_no_chans_times"])
    labels = io["labels"]
    assert torch.equal(labels, io["vqhbr_input_ids"][mask])
    close(torch.nn.functional.cross_entropy(logits, labels), io["ce_loss"])
    assert (logits.argmax(-1) == labels).float().mean().item() == pytest.approx(io["mlm_acc"].item())


def test_heartlang_targets_from_tiny_vqhbr(vq, ref_fixtures):
    fresh, _, _ = vq
    _, io = load_fixture(ref_fixtures, "heartlang")
    assert torch.equal(fresh().get_codebook_indices(io["x"]), io["vqhbr_input_ids"])


def test_classifier_outputs(ref_fixtures):
    state, io = load_fixture(ref_fixtures, "classifier")
    m: HeartLangClassifier = create_model("HeartLang_finetune_tiny", num_classes=5)
    m.load_state_dict(state, strict=True)
    m.eval()
    x, c, t = io["x"], io["in_chans"], io["in_times"]
    with torch.no_grad():
        close(m(x, c, t), io["logits"])
        close(m.forward_features(x, c, t), io["cls_features"])
        close(m(x), io["logits_no_chans_times"])
    assert m.backbone.lm_head.out_features == 1024
