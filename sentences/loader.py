"""Data loaders of the training stages: batch arithmetic, samplers, workers, pinned memory.

* Training: a ``DistributedSampler`` (also for one process, so 1..N ranks share one order logic) that
  drops the last partial batch. # Official behaviour: the shuffle is seeded with 0 whatever --seed is
  (``--sampler_seed_from_seed`` seeds it with --seed).
* Evaluation: a :class:`ShardSampler`: every sample exactly once over the ranks, for exact metrics.
* :func:`fit_batch_size`: the fine-tuning stage's rule for training sets smaller than one batch.
* :func:`batch_indices` / :func:`describe_sample`: which records a batch holds (``"<dir>/train_data.npy row
  17"``), for errors such as a non-finite loss.
"""

from __future__ import annotations

import bisect
import itertools

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from sentences.dataset import collate_sentences


class ShardSampler(Sampler):
    """Evaluation sampler: rank r takes indices r, r + W, ... with NO padding, so gathered
    predictions cover every sample exactly once (DistributedSampler would duplicate some)."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def fit_batch_size(batch_size: int, n_per_process: int) -> int:
    """# Official behaviour (fine-tuning): the batch is halved until it is not larger than the training
    set, and the last partial batch is dropped (1 % of PTB-XL super: 170 records -> 128, one step per
    epoch; 1 % of CPSC2018: 49 -> 32)."""
    if n_per_process < 1:
        raise ValueError("the training split is empty")
    while batch_size > n_per_process:
        batch_size //= 2
    return batch_size


def iters_per_epoch(
    n_train: int, world_size: int, batch_size: int, update_freq: int, max_steps: int = 0
) -> int:
    """Optimizer steps per epoch: ``n_train // world_size`` samples per rank, whole batches only, grouped
    by ``update_freq``; equals the original's ``n_train // (batch_size * world_size * update_freq)``."""
    steps = (n_train // world_size) // batch_size // update_freq
    if max_steps > 0:
        steps = min(steps, max_steps)
    if steps == 0:
        raise ValueError(
            f"an epoch has {n_train} training samples over {world_size} process(es): fewer than one optimizer "
            f"step of batch {batch_size} x update_freq {update_freq}; lower --batch_size or add data"
        )
    return steps


def make_loader(
    dataset: Dataset,
    batch_size: int,
    rank: int,
    world_size: int,
    train: bool,
    num_workers: int = 0,
    pin_memory: bool = False,
    sampler_seed: int = 0,
) -> DataLoader:
    """Training loader (shuffled, drop_last) or evaluation loader (:class:`ShardSampler`)."""
    if train:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=sampler_seed, drop_last=True
        )
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        drop_last=train,
        persistent_workers=False,
        # sentence datasets read a whole batch at once (SentenceDataset.__getitems__): no second copy
        collate_fn=collate_sentences,
    )


def batch_indices(loader: DataLoader, i: int) -> list[int]:
    """Dataset indices of the ``i``-th batch ``loader`` yields in the current epoch (its sampler gives the
    same order again once ``set_epoch`` was called, so this is exact)."""
    batch = next(itertools.islice(iter(loader.batch_sampler), i, None), None)
    return [int(j) for j in batch] if batch is not None else []


def describe_sample(dataset: Dataset, i: int) -> str:
    """Where item ``i`` of ``dataset`` comes from: ``"<root>/<split>_data.npy row r"`` through Subsets (the
    --split_ratio rows) and MIMIC ``batch_k`` concatenations; other datasets: ``"<type> item i"``."""
    if isinstance(dataset, Subset):
        return describe_sample(dataset.dataset, int(dataset.indices[i]))
    parts, offsets = getattr(dataset, "parts", None), getattr(dataset, "offsets", None)
    if parts is not None and offsets is not None:
        k = bisect.bisect_right(offsets, i) - 1
        return describe_sample(parts[k], i - offsets[k])
    root, split = getattr(dataset, "root", None), getattr(dataset, "split", None)
    if root is not None and split is not None:
        return f"{root}/{split}_data.npy row {i}"
    return f"{type(dataset).__name__} item {i}"
