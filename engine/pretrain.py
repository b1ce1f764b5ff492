"""Masked ECG-sentence pre-training pieces (paper Sec. 3.3).

Half of the 256 word positions of every sentence are masked; HeartLang predicts, for each masked
position, the index of the collective word that the frozen VQ-HBR tokenizer assigns to the unmasked
sentence. Loss: cross-entropy over the masked positions; metric: masked-word accuracy.
:class:`PretrainStep` is the training step; :func:`evaluate` the validation pass (``--val_freq``);
:class:`PretrainStage` plugs them into engine.run.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.loop import Amp
from engine.run import Context, UnlabelledSentenceStage
from engine.targets import ensure_targets, tokenizer_sha256
from modeling import create_model
from modeling.checkpoint import load_model, tokenizer_size
from utils.dist import barrier, print0
from utils.integrity import folder_identity
from utils.logging import MetricLogger

# --targets: read the frozen tokenizer's targets from a per-data-set cache (default) or compute them every step.
TARGET_MODES = ("cached", "on_the_fly")


def random_masking(x: torch.Tensor, mask_ratio: float = 0.5) -> torch.Tensor:
    """Boolean mask (B, L), True = masked, exactly ``L - int(L * (1 - mask_ratio))`` per row.

    x: (B, L, W). MAE-style: uniform noise per position, argsort, keep the ``int(L * (1 - ratio))``
    positions with the smallest noise. Bit-identical to the original for the same RNG state
    (fixtures/tiny_heartlang_io.pt ``mask``).
    # Official behaviour: positions are drawn over all L = 256 words, padding included, so a short
    # sentence has fewer than half of its real words masked (and some masked "words" are padding).
    """
    b, length = x.shape[:2]
    len_keep = int(length * (1 - mask_ratio))
    noise = torch.rand(b, length, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(b, length, device=x.device)
    mask[:, :len_keep] = 0
    return torch.gather(mask, dim=1, index=ids_restore).bool()


def random_masking_real_words(
    x: torch.Tensor, in_chans: torch.Tensor, mask_ratio: float = 0.5
) -> torch.Tensor:
    """Corrected variant (``--mask_real_words_only``): mask ``int(n_real * ratio)`` of the REAL words
    of each sentence (``in_chans > 0``), never padding. x: (B, L, W), in_chans: (B, L) -> (B, L) bool."""
    real = in_chans > 0
    noise = torch.rand(real.shape, device=x.device)
    # Padding sorts last, so the ranks 0 .. n_real - 1 belong to real words.
    noise = torch.where(real, noise, torch.full_like(noise, 2.0))
    ranks = torch.argsort(torch.argsort(noise, dim=1), dim=1)
    n_mask = (real.sum(dim=1).float() * mask_ratio).floor().long()
    return ranks < n_mask[:, None]


class PretrainStep:
    """``step_fn`` for :func:`engine.common.train_one_epoch` and the validation pass.

    tokenizer: frozen VQ-HBR (eval mode, no grad). ``targets_with_ids`` selects the corrected variant
    that gives the tokenizer the lead/time ids. ``cached``: the batch's 4th element holds the cached
    (B, 256) targets (engine.targets, ``--targets cached``) and the tokenizer is not called (may be None).
    """

    def __init__(
        self,
        tokenizer: nn.Module | None,
        device: torch.device,
        mask_ratio: float = 0.5,
        mask_real_words_only: bool = False,
        targets_with_ids: bool = False,
        cached: bool = False,
    ):
        if tokenizer is None and not cached:
            raise ValueError("PretrainStep needs the tokenizer unless the targets are cached")
        self.tokenizer = tokenizer
        self.device = device
        self.mask_ratio = mask_ratio
        self.mask_real_words_only = mask_real_words_only
        self.targets_with_ids = targets_with_ids
        self.cached = cached

    @torch.no_grad()
    def targets(self, x: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, 256) long codebook indices of the unmasked sentence."""
        if self.targets_with_ids:
            return self.tokenizer.get_codebook_indices(x, c, t)
        # Official behaviour: the original pre-training engine calls get_codebook_indices(x) WITHOUT
        # the lead/time ids, although VQ-HBR was trained with them (--tokenizer_targets_with_ids fixes it).
        return self.tokenizer.get_codebook_indices(x)

    def __call__(self, model, batch):
        x, c, t, cached = batch
        x = x.to(self.device, non_blocking=True)
        c = c.to(self.device, non_blocking=True)
        t = t.to(self.device, non_blocking=True)
        if self.mask_real_words_only:
            mask = random_masking_real_words(x, c, self.mask_ratio)
        else:
            mask = random_masking(x, self.mask_ratio)
        if self.cached:
            if not torch.is_tensor(cached) or cached.shape != mask.shape:
                raise ValueError("--targets cached: the batch carries no (B, 256) cached targets")
            labels = cached.to(self.device, non_blocking=True).long()[mask]
        else:
            labels = self.targets(x, c, t)[mask]
        logits = model(x, mask_bool_matrix=mask, lead_ids=c, time_ids=t)
        loss = F.cross_entropy(logits.float(), labels)
        acc = (logits.detach().argmax(-1) == labels).float().mean()
        return loss, {"mlm_acc": float(acc)}


@torch.no_grad()
def evaluate(model, loader, step_fn: PretrainStep, amp: Amp) -> dict:
    """Validation loss and masked-word accuracy (rank-averaged), masks drawn as in training."""
    model.eval()
    logger = MetricLogger()
    for batch in logger.log_every(loader, "Val"):
        with amp.autocast():
            loss, metrics = step_fn(model, batch)
        logger.update(loss=float(loss), **metrics)
    logger.synchronize_between_processes()
    return logger.global_averages()


def load_tokenizer(name: str, weight: str, device) -> nn.Module:
    """Frozen VQ-HBR from ``weight`` (a path or an hf:// spec), strictly; another kind of checkpoint or
    NaN/inf weights are refused (modeling.checkpoint.load_model)."""
    tokenizer = load_model(weight, name=name, kind="vqhbr", device=device)
    for p in tokenizer.parameters():
        p.requires_grad_(False)
    return tokenizer.eval()


def resolve_tokenizer_size(weight: str, codebook_size: int | None, codebook_dim: int | None) -> tuple[int, int]:
    """The tokenizer's (codebook size, code dimension) from its checkpoint; --codebook_size/--codebook_dim,
    when given, must agree. Without a readable checkpoint (a --dry_run) the flags or the original README's 8192 x 128."""
    if not weight or not (weight.startswith("hf://") or Path(weight).is_file()):
        return codebook_size or 8192, codebook_dim or 128
    size, dim = tokenizer_size(weight)
    for flag, given, actual in (("--codebook_size", codebook_size, size), ("--codebook_dim", codebook_dim, dim)):
        if given is not None and given != actual:
            raise ValueError(
                f"{flag} {given} does not match the tokenizer {weight} ({actual}): drop the flag (the size is "
                "read from the checkpoint) or give the matching --tokenizer_weight"
            )
    return size, dim


class PretrainStage(UnlabelledSentenceStage):
    """Stage 2 for engine.run: HeartLang predicts the frozen tokenizer's codes of masked words."""

    name = "pretrain"

    def __init__(self, run, optim, dataset_dir: str, model: str, tokenizer_model: str, tokenizer_weight: str,
                 codebook_size: int | None, codebook_dim: int | None, mask_ratio: float,
                 targets: str = "cached"):  # fmt: skip
        super().__init__(run, optim)
        if targets not in TARGET_MODES:
            raise ValueError(f"--targets must be one of {list(TARGET_MODES)}, got {targets!r}")
        self.targets = targets
        self.dataset_dir = dataset_dir
        self.model_name, self.tokenizer_model, self.tokenizer_weight = (
            model,
            tokenizer_model,
            tokenizer_weight,
        )
        # Up front: the vocabulary is the tokenizer's codebook (read from --tokenizer_weight; the flags, when
        # given, must agree; a non-VQ-HBR file is refused here).
        codebook_size, codebook_dim = resolve_tokenizer_size(tokenizer_weight, codebook_size, codebook_dim)
        self.codebook_size, self.codebook_dim, self.mask_ratio = codebook_size, codebook_dim, mask_ratio

    def inputs_identity(self) -> dict:
        if not self.tokenizer_weight:
            raise ValueError(
                "--tokenizer_weight is required: the pre-training targets come from a trained VQ-HBR"
            )
        return {
            "dataset": folder_identity(self.dataset_dir),
            "tokenizer_sha256": tokenizer_sha256(self.tokenizer_weight),  # the resolved file (hf:// too)
        }

    def build_model(self, load_weights: bool):
        r = self.run.recipe
        return create_model(self.model_name, codebook_size=self.codebook_size, mask_before_conv=r["mask_before_conv"],
                            padding_attention_mask=r["padding_attention_mask"])  # fmt: skip

    def prepare(self, model, ctx: Context, train_set, val_set):
        r = self.run.recipe
        with_ids = r["tokenizer_targets_with_ids"]
        tokenizer = None
        if self.targets == "cached":
            self._cache_targets(ctx, [d for d in (train_set, val_set) if d is not None], with_ids)
        else:
            tokenizer = load_tokenizer(self.tokenizer_model, self.tokenizer_weight, ctx.device)
        self.step = PretrainStep(tokenizer, ctx.device, self.mask_ratio, r["mask_real_words_only"], with_ids,
                                 cached=self.targets == "cached")  # fmt: skip
        return model, train_set, val_set

    def _cache_targets(self, ctx: Context, datasets: list, with_ids: bool) -> None:
        """Rank 0 computes missing or stale cached targets (engine.targets); the others wait, then read."""
        sha = tokenizer_sha256(self.tokenizer_weight)
        size = self.codebook_size or resolve_tokenizer_size(self.tokenizer_weight, None, None)[0]

        def load():
            return load_tokenizer(self.tokenizer_model, self.tokenizer_weight, ctx.device)

        for write in (True, False):  # rank 0 writes first; then every other rank attaches what it wrote
            if (ctx.info.rank == 0) == write:
                for ds in datasets:
                    ensure_targets(ds, sha, size, with_ids, load, ctx.device, write=write, log=print0)
            barrier()

    def evaluate(self, module, loader, ctx: Context) -> dict:
        return evaluate(module, loader, self.step, ctx.amp)

    def summary(self, stats: dict) -> str:
        return f"epoch {stats['epoch']}: loss {stats['train_loss']:.4f}, masked-word acc {stats['train_mlm_acc']:.4f}"
