"""VQ-HBR training loop pieces (paper Sec. 3.2, vector-quantised heartbeat reconstruction).

Loss = MSE reconstruction of every word (padding included) + commitment loss, both computed by
``VQHBR.forward(x, lead_ids, time_ids) -> (loss, log)``. Besides the losses we report
codebook usage: the number of unused codes and the perplexity ``exp(H(p))`` of the code distribution
``p`` (8192 = every code equally used, 1 = collapse). :func:`vqhbr_task` declares the stage for engine.run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from engine.loop import unwrap
from engine.task import BatchOut, Env, Evaluation, StageConfig, Task, sentence_sets, to_device
from modeling import create_model, make_header
from utils.integrity import folder_identity


def _strip(log: dict) -> dict:
    """``{"train/rec_loss": v}`` -> ``{"rec_loss": v}`` (the split is in the meter's context)."""
    return {k.split("/", 1)[-1]: float(v) for k, v in log.items() if k.split("/", 1)[-1] != "total_loss"}


def vqhbr_step(model, batch, device: torch.device):
    """One forward: ``batch = (x (B,256,96), in_chans (B,256), in_times (B,256), _)``."""
    x, c, t, _ = batch
    x = x.to(device, non_blocking=True)
    c = c.to(device, non_blocking=True)
    t = t.to(device, non_blocking=True)
    loss, log = model(x, lead_ids=c, time_ids=t)
    return loss, _strip(log)


def usage_stats(counts: torch.Tensor) -> dict:
    """counts (n_code,) assignments -> unused codes and perplexity of the usage distribution."""
    counts = counts.double()
    total = counts.sum()
    if total <= 0:
        return {"unused_codes": int(counts.numel()), "perplexity": float("nan")}
    p = counts / total
    nz = p[p > 0]
    entropy = float(-(nz * nz.log()).sum())
    return {"unused_codes": int((counts == 0).sum()), "perplexity": math.exp(entropy)}


def ema_usage_stats(model) -> dict:
    """Usage from the quantizer's EMA ``cluster_size`` buffer (cheap, available after every epoch).

    A code counts as unused when its EMA count is below 1e-3 of one assignment, i.e. it has not been
    chosen for several hundred steps (0.99^700 < 1e-3)."""
    cluster_size = unwrap(model).quantize.cluster_size.detach().double().cpu()
    stats = usage_stats(torch.where(cluster_size < 1e-3, torch.zeros_like(cluster_size), cluster_size))
    return {"ema_unused_codes": stats["unused_codes"], "ema_perplexity": stats["perplexity"]}


def evaluation(model, device: torch.device) -> Evaluation:
    """Validation losses and exact code usage: a bincount of ``get_codebook_indices`` over the split, summed
    over processes."""
    n_code = model.quantize.cluster_size.numel()

    def step(module, batch) -> BatchOut:
        x, c, t = to_device(batch[:3], device)
        # Official behaviour: the quantizer updates its usage EMA even in eval mode; we keep it.
        _, log = model(x, lead_ids=c, time_ids=t)
        ids = model.get_codebook_indices(x, c, t)
        return BatchOut(_strip(log), totals={"counts": torch.bincount(ids.reshape(-1), minlength=n_code).double()})

    def finish(meters: dict, per_sample: tuple, totals: dict) -> dict:
        return {**meters, **usage_stats(totals["counts"].cpu())}

    return Evaluation(step, finish, totals=lambda: {"counts": torch.zeros(n_code, dtype=torch.float64, device=device)},
                      module=model)  # fmt: skip


@dataclass(frozen=True)
class VQHBRTraining(StageConfig):
    """Stage 1's own settings (run_vqhbr_training.py)."""

    dataset_dir: str
    model: str
    codebook_size: int
    codebook_dim: int
    ema_decay: float
    kmeans_init: bool


def vqhbr_task(cfg: VQHBRTraining, env: Env) -> Task:
    """VQ-HBR reconstructs every word of the unlabelled sentences of ``dataset_dir`` through its codebook."""
    train_set, val_set = sentence_sets(cfg.dataset_dir, cfg.run, env)
    model = create_model(cfg.model, codebook_size=cfg.codebook_size, codebook_dim=cfg.codebook_dim, decay=cfg.ema_decay,
                         quantize_kmeans_init=cfg.kmeans_init,
                         padding_attention_mask=cfg.run.recipe["padding_attention_mask"])  # fmt: skip
    return Task(
        name="vqhbr", model=model, trains=model, train_set=train_set, val_set=val_set,
        step=lambda module, batch: vqhbr_step(module, batch, env.device),
        evaluation=evaluation(model, env.device), validate_every=cfg.run.val_freq,
        epoch_stats=lambda: ema_usage_stats(model), summary=summary,
        header=make_header(cfg.model, asdict(model.config), cfg.run.recipe),
        inputs={} if env.plan else {"dataset": folder_identity(cfg.dataset_dir)},
    )  # fmt: skip


def summary(stats: dict) -> str:
    text = f"epoch {stats['epoch']}: train rec_loss {stats.get('train_rec_loss', float('nan')):.5f}"
    if "val_unused_codes" in stats:
        text += (f", val rec_loss {stats.get('val_rec_loss', float('nan')):.5f}, unused codes "
                 f"{stats['val_unused_codes']}, perplexity {stats['val_perplexity']:.1f}")  # fmt: skip
    return text
