"""VQ-HBR training loop pieces (paper Sec. 3.2, vector-quantised heartbeat reconstruction).

Loss = MSE reconstruction of every word (padding included) + commitment loss, both computed by
``VQHBR.forward(x, lead_ids, time_ids) -> (loss, log)``. Besides the losses we report
codebook usage: the number of unused codes and the perplexity ``exp(H(p))`` of the code distribution
``p`` (8192 = every code equally used, 1 = collapse). :class:`VQHBRStage` plugs these into engine.run.
"""

from __future__ import annotations

import math

import torch

from engine.loop import Amp, unwrap
from engine.run import Context, UnlabelledSentenceStage
from modeling import create_model
from utils.dist import all_reduce_sum_
from utils.integrity import folder_identity
from utils.logging import MetricLogger


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


@torch.no_grad()
def evaluate(model, loader, device: torch.device, amp: Amp) -> dict:
    """Validation losses and exact code usage (bincount of ``get_codebook_indices`` over the split,
    summed over ranks)."""
    model.eval()
    net = unwrap(model)
    n_code = net.quantize.cluster_size.numel()
    counts = torch.zeros(n_code, dtype=torch.float64, device=device)
    logger = MetricLogger()
    for x, c, t, _ in logger.log_every(loader, "Val"):
        x, c, t = x.to(device), c.to(device), t.to(device)
        with amp.autocast():
            # Official behaviour: the quantizer updates its usage EMA even in eval mode; we keep it.
            _, log = net(x, lead_ids=c, time_ids=t)
            ids = net.get_codebook_indices(x, c, t)
        counts += torch.bincount(ids.reshape(-1), minlength=n_code).double()
        logger.update(**_strip(log))
    logger.synchronize_between_processes()
    all_reduce_sum_(counts)
    out = logger.global_averages()
    out.update(usage_stats(counts.cpu()))
    return out


class VQHBRStage(UnlabelledSentenceStage):
    """Stage 1 for engine.run: VQ-HBR on the unlabeled sentences of ``dataset_dir``."""

    name = "vqhbr"

    def __init__(self, run, optim, dataset_dir: str, model: str, codebook_size: int, codebook_dim: int,
                 ema_decay: float, kmeans_init: bool):  # fmt: skip
        super().__init__(run, optim)
        self.dataset_dir = dataset_dir
        self.model_name = model
        self.model_kwargs = dict(
            codebook_size=codebook_size, codebook_dim=codebook_dim, decay=ema_decay, quantize_kmeans_init=kmeans_init,
            padding_attention_mask=run.recipe["padding_attention_mask"],
        )  # fmt: skip

    def inputs_identity(self) -> dict:
        return {"dataset": folder_identity(self.dataset_dir)}

    def build_model(self, load_weights: bool):
        return create_model(self.model_name, **self.model_kwargs)

    def step(self, module, batch):
        return vqhbr_step(module, batch, self.device)

    def prepare(self, model, ctx: Context, train_set, val_set):
        self.device = ctx.device
        return model, train_set, val_set

    def evaluate(self, module, loader, ctx: Context) -> dict:
        return evaluate(module, loader, ctx.device, ctx.amp)

    def epoch_stats(self, model) -> dict:
        return ema_usage_stats(model)

    def summary(self, stats: dict) -> str:
        text = f"epoch {stats['epoch']}: train rec_loss {stats.get('train_rec_loss', float('nan')):.5f}"
        if "val_unused_codes" in stats:
            text += (f", val rec_loss {stats.get('val_rec_loss', float('nan')):.5f}, unused codes "
                     f"{stats['val_unused_codes']}, perplexity {stats['val_perplexity']:.1f}")  # fmt: skip
        return text
