"""Masked ECG-sentence pre-training pieces (paper Sec. 3.3).

Half of the 256 word positions of every sentence are masked; HeartLang predicts, for each masked
position, the index of the collective word that the frozen VQ-HBR tokenizer assigns to the unmasked
sentence. Loss: cross-entropy over the masked positions; metric: masked-word accuracy.
:class:`PretrainStep` is the training step (and, with the masks drawn as in training, the validation pass of
``--val_freq``); :func:`pretrain_task` declares the stage for engine.run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.targets import ensure_targets, load_tokenizer, tokenizer_sha256
from engine.task import BatchOut, Env, Evaluation, StageConfig, Task, sentence_sets
from modeling import create_model, make_header, tokenizer_size
from utils.dist import barrier, broadcast_object, print0
from utils.integrity import folder_identity

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
    """``step_fn`` for :func:`engine.loop.train_one_epoch` and the validation pass.

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


def resolve_tokenizer_size(weight: str, codebook_size: int | None, codebook_dim: int | None) -> tuple[int, int]:
    """The tokenizer's (codebook size, code dimension) from its checkpoint; --codebook_size/--codebook_dim,
    when given, must agree. Without a readable checkpoint (a --dry_run) the flags or the original's 8192 x 128."""
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


@dataclass(frozen=True)
class Pretraining(StageConfig):
    """Stage 2's own settings (run_heartlang_pretraining.py); build it with :meth:`create`."""

    dataset_dir: str
    model: str
    tokenizer_model: str
    tokenizer_weight: str
    codebook_size: int  # the tokenizer's codebook = HeartLang's vocabulary
    codebook_dim: int
    mask_ratio: float
    targets: str = "cached"

    @classmethod
    def create(cls, run, optim, *, codebook_size: int | None, codebook_dim: int | None, **settings) -> Pretraining:
        """Up front: the vocabulary is the tokenizer's codebook (read from --tokenizer_weight; the flags, when
        given, must agree; a non-VQ-HBR file is refused here)."""
        if settings.get("targets", "cached") not in TARGET_MODES:
            raise ValueError(f"--targets must be one of {list(TARGET_MODES)}, got {settings['targets']!r}")
        size, dim = resolve_tokenizer_size(settings["tokenizer_weight"], codebook_size, codebook_dim)
        return cls(run, optim, codebook_size=size, codebook_dim=dim, **settings)


def pretrain_task(cfg: Pretraining, env: Env) -> Task:
    """HeartLang predicts the frozen tokenizer's code of every masked word of the unlabelled sentences."""
    recipe = cfg.run.recipe
    train_set, val_set = sentence_sets(cfg.dataset_dir, cfg.run, env)
    # Rank 0 hashes the tokenizer checkpoint for the run's fingerprint and gives the result to the others (N
    # processes would read it N times).
    inputs = {} if env.plan else broadcast_object(pretrain_inputs(cfg) if env.rank == 0 else None)
    model = create_model(cfg.model, codebook_size=cfg.codebook_size, mask_before_conv=recipe["mask_before_conv"],
                         padding_attention_mask=recipe["padding_attention_mask"])  # fmt: skip
    cached = cfg.targets == "cached"
    with_ids = recipe["tokenizer_targets_with_ids"]
    # The targets: read from the per-data-set cache (computed once, after the run's checks), or a frozen
    # tokenizer forward in every step (as the original).
    tokenizer = None if cached or env.plan else load_tokenizer(cfg.tokenizer_model, cfg.tokenizer_weight, env.device)
    # (A plan never calls the step: it is built without a tokenizer.)
    step = PretrainStep(tokenizer, env.device, cfg.mask_ratio, recipe["mask_real_words_only"], with_ids,
                        cached=cached or env.plan)  # fmt: skip
    datasets = [d for d in (train_set, val_set) if d is not None]
    return Task(
        name="pretrain", model=model, trains=model, train_set=train_set, val_set=val_set, step=step,
        evaluation=Evaluation(lambda module, batch: _eval_step(step, module, batch)),
        validate_every=cfg.run.val_freq, summary=summary, inputs=inputs,
        header=make_header(cfg.model, asdict(model.config), recipe),
        prepare_data=(lambda: cache_targets(cfg, env, datasets, with_ids)) if cached and not env.plan else None,
    )  # fmt: skip


def _eval_step(step: PretrainStep, module, batch) -> BatchOut:
    """Validation loss and masked-word accuracy, masks drawn as in training."""
    loss, metrics = step(module, batch)
    return BatchOut({"loss": float(loss), **metrics})


def pretrain_inputs(cfg: Pretraining) -> dict:
    if not cfg.tokenizer_weight:
        raise ValueError("--tokenizer_weight is required: the pre-training targets come from a trained VQ-HBR")
    return {"dataset": folder_identity(cfg.dataset_dir), "tokenizer_sha256": tokenizer_sha256(cfg.tokenizer_weight)}  # the resolved file (hf:// too)


def cache_targets(cfg: Pretraining, env: Env, datasets: list, with_ids: bool) -> None:
    """Rank 0 computes missing or stale cached targets (engine.targets); the others wait, then read."""
    sha = broadcast_object(tokenizer_sha256(cfg.tokenizer_weight) if env.rank == 0 else None)  # one read

    def load():
        return load_tokenizer(cfg.tokenizer_model, cfg.tokenizer_weight, env.device)

    for write in (True, False):  # rank 0 writes first; then every other rank attaches what it wrote
        if (env.rank == 0) == write:
            for ds in datasets:
                ensure_targets(ds, sha, cfg.codebook_size, with_ids, load, env.device, write=write, log=print0)
        barrier()


def summary(stats: dict) -> str:
    return f"epoch {stats['epoch']}: loss {stats['train_loss']:.4f}, masked-word acc {stats['train_mlm_acc']:.4f}"
