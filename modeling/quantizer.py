"""Norm-EMA vector quantizer of VQ-HBR (paper Sec. 3.2, "collective ECG words").

Inputs and codes are L2-normalised; each input takes the nearest code (Euclidean distance on the unit
sphere); the codebook is an EMA (``decay``) of the L2-normalised cluster means; the gradient passes
straight through (``z + (z_q - z).detach()``); the loss is the commitment term
``beta * MSE(z_q.detach(), z)``. With ``kmeans_init`` the codebook is initialised by 10 iterations of
cosine k-means on the first batch.

State-dict keys are the original's: ``cluster_size`` (buffer, EMA code usage), ``embedding.weight``,
``embedding.cluster_size``, ``embedding.embed_avg`` (``requires_grad=False`` parameters) and
``embedding.initted`` (buffer).

Precision: VQHBR.encode calls the quantizer with autocast disabled, so distances, the EMA update and k-means
run in fp32 whatever the training precision. The original runs its quantizer under the caller's autocast
(fp16 distance and cluster-sum matmuls on a GPU); a deliberate, GPU-only difference (docs/training.md).

Distributed training: usage counts and cluster sums are summed over ranks by an injected
``all_reduce_fn`` (default: ``utils.dist.all_reduce_sum_``, i.e. ``torch.distributed.all_reduce`` when
a process group with more than one process exists, otherwise nothing is called); k-means runs on
rank 0 and is broadcast by ``broadcast_fn`` so that every rank starts from the same codebook (the
original ran it on every rank independently, so the ranks disagreed).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from utils.dist import all_reduce_sum_, get_rank, get_world_size

TensorFn = Callable[[torch.Tensor], None]


def l2norm(t: torch.Tensor) -> torch.Tensor:
    return F.normalize(t, p=2, dim=-1)


def default_broadcast(tensor: torch.Tensor) -> None:
    """In-place broadcast from rank 0; a no-op with one process or no process group."""
    if get_world_size() > 1:
        dist.broadcast(tensor, src=0)


def kmeans(
    samples: torch.Tensor, num_clusters: int, num_iters: int = 10, use_cosine_sim: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd k-means. samples: (n, d) -> means (num_clusters, d), bins (num_clusters,) int64.

    The initial means are ``samples[torch.randperm(n)[:k]]`` drawn from the global torch RNG (or
    ``randint`` with replacement when n < k). Empty clusters keep their previous mean.
    """
    n, dim = samples.shape
    if n >= num_clusters:
        means = samples[torch.randperm(n, device=samples.device)[:num_clusters]]
    else:
        means = samples[torch.randint(0, n, (num_clusters,), device=samples.device)]
    bins = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(num_iters):
        if use_cosine_sim:
            dists = samples @ means.t()
        else:
            dists = -(samples.unsqueeze(1) - means.unsqueeze(0)).pow(2).sum(dim=-1)
        buckets = dists.max(dim=-1).indices
        bins = torch.bincount(buckets, minlength=num_clusters)
        zero_mask = bins == 0
        new_means = samples.new_zeros(num_clusters, dim)
        new_means.scatter_add_(0, buckets.unsqueeze(1).expand(-1, dim), samples)
        new_means = new_means / bins.masked_fill(zero_mask, 1).unsqueeze(1)
        if use_cosine_sim:
            new_means = l2norm(new_means)
        means = torch.where(zero_mask.unsqueeze(1), means, new_means)
    return means, bins


class EmbeddingEMA(nn.Module):
    """Codebook holder with the original's key tree. weight: (codebook_size, codebook_dim), unit rows once
    initialised."""

    def __init__(self, codebook_size: int, codebook_dim: int, kmeans_init: bool = False) -> None:
        super().__init__()
        weight = (
            torch.zeros(codebook_size, codebook_dim)
            if kmeans_init
            else l2norm(torch.randn(codebook_size, codebook_dim))
        )
        self.weight = nn.Parameter(weight, requires_grad=False)
        # Official behaviour: cluster_size and embed_avg are dead state (never read by the forward);
        # they are kept so that released checkpoints load strictly. k-means writes cluster_size.
        self.cluster_size = nn.Parameter(torch.zeros(codebook_size), requires_grad=False)
        self.embed_avg = nn.Parameter(weight.clone(), requires_grad=False)
        self.register_buffer("initted", torch.tensor([0.0 if kmeans_init else 1.0]))


class NormEMAVectorQuantizer(nn.Module):
    """z: (..., codebook_dim) -> (z_q (..., codebook_dim), loss (), indices (prod(...),) int64)."""

    def __init__(
        self,
        codebook_size: int,
        codebook_dim: int,
        beta: float = 1.0,
        decay: float = 0.99,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        all_reduce_fn: TensorFn | None = None,
        broadcast_fn: TensorFn | None = None,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.beta = beta
        self.decay = decay
        self.kmeans_iters = kmeans_iters
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.embedding = EmbeddingEMA(codebook_size, codebook_dim, kmeans_init)
        self.all_reduce_fn: TensorFn = all_reduce_fn or all_reduce_sum_
        self.broadcast_fn: TensorFn = broadcast_fn or default_broadcast

    @torch.no_grad()
    def init_codebook_(self, samples: torch.Tensor) -> None:
        """Cosine k-means on the (already normalised) first batch, identical on every rank.

        samples: (n, codebook_dim). Rank 0's result is broadcast; with one process this is exactly the
        original's init. Writes embedding.weight, embedding.cluster_size (= bins) and initted.
        """
        if bool(self.embedding.initted.item()):
            return
        rank = get_rank()
        weight = torch.empty_like(self.embedding.weight)
        bins = torch.empty_like(self.embedding.cluster_size)
        if rank == 0:
            means, counts = kmeans(
                samples.detach(), self.codebook_size, self.kmeans_iters, use_cosine_sim=True
            )
            weight.copy_(means)
            bins.copy_(counts)
        self.broadcast_fn(weight)
        self.broadcast_fn(bins)
        self.embedding.weight.data.copy_(weight)
        self.embedding.cluster_size.data.copy_(bins)
        self.embedding.initted.fill_(1.0)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = l2norm(z)
        z_flat = z.reshape(-1, self.codebook_dim)
        self.init_codebook_(z_flat)
        codebook = self.embedding.weight
        # Squared distances |z|^2 + |e|^2 - 2 z.e; argmin takes the first index on ties, as the original.
        d = z_flat.pow(2).sum(dim=1, keepdim=True) + codebook.pow(2).sum(dim=1) - 2 * z_flat @ codebook.t()
        indices = torch.argmin(d, dim=1)
        # F.embedding copies, so z_q keeps the codebook from before the EMA update below.
        z_q = F.embedding(indices, codebook).view_as(z)
        with torch.no_grad():
            bins = torch.bincount(indices, minlength=self.codebook_size).to(z_flat.dtype)
            self.all_reduce_fn(bins)
            # Official behaviour: the usage counter is EMA-updated in eval mode as well (every forward,
            # including get_codebook_indices while computing pre-training targets).
            self.cluster_size.mul_(self.decay).add_(bins, alpha=1 - self.decay)
            if self.training:
                self._ema_update_(z_flat, indices, bins)
        loss = self.beta * F.mse_loss(z_q.detach(), z)
        z_q = z + (z_q - z).detach()
        return z_q, loss, indices

    def _ema_update_(self, z_flat: torch.Tensor, indices: torch.Tensor, bins: torch.Tensor) -> None:
        """weight = l2norm(d * weight + (1-d) * l2norm(cluster mean)); unused codes keep their direction.

        z_flat: (n, codebook_dim) normalised inputs, indices: (n,), bins: (codebook_size,) global counts.
        """
        zero_mask = bins == 0
        embed_sum = z_flat.new_zeros(self.codebook_size, self.codebook_dim)
        embed_sum.index_add_(0, indices, z_flat.detach())
        self.all_reduce_fn(embed_sum)
        mean = l2norm(embed_sum / bins.masked_fill(zero_mask, 1.0).unsqueeze(1))
        weight = self.embedding.weight.data
        mean = torch.where(zero_mask.unsqueeze(1), weight, mean)
        weight.mul_(self.decay).add_(mean, alpha=1 - self.decay)
        weight.copy_(l2norm(weight))
