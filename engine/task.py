"""What a training stage is: one immutable :class:`Task`, and the one evaluation loop of every stage.

A stage file (engine/vqhbr.py, engine/pretrain.py, engine/finetune.py) builds a :class:`Task` from its typed
config: the model, the module that trains, the train and val data, the step, the evaluation, the metric that
picks the best checkpoint, and what a checkpoint stores. engine/run.py runs any such task; nothing is set on
the task after it is built (docs/training.md "A stage is a task").

:func:`collect` / :func:`evaluate` are the evaluation loop of every stage (validation and ``--eval``): the
stage's :class:`Evaluation` says what one batch gives; the loop averages, gathers and sums it over batches and
processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from engine.config import OptimConfig, RunConfig
from engine.loop import Amp, gather_predictions
from sentences.dataset import build_sentence_dataset, check_fits_model
from utils.dist import all_reduce_sum_
from utils.logging import MetricLogger


@dataclass(frozen=True)
class Env:
    """Where a task is built: the device and process, and ``plan=True`` for ``--dry_run`` (the architecture
    and the data only: no weights, tokenizer or caches are read)."""

    device: torch.device = torch.device("cpu")
    rank: int = 0
    world_size: int = 1
    plan: bool = False


@dataclass(frozen=True)
class StageConfig:
    """The typed settings of a stage: the run, the optimizer, and (in a subclass) the stage's own."""

    run: RunConfig
    optim: OptimConfig


@dataclass(frozen=True)
class BatchOut:
    """What one evaluation batch gives: ``meters`` (averaged over batches and processes), ``per_sample``
    arrays (gathered over processes in sample order) and ``totals`` tensors (summed over processes)."""

    meters: dict
    per_sample: tuple = ()
    totals: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """A stage's evaluation: ``step(module, batch) -> BatchOut`` under autocast, no grad; then
    ``finish(meters, per_sample, totals) -> {metric: value}``.

    ``per_sample_shapes``: the trailing shape of each per-sample array; ``totals()``: the zero tensors that
    the batches' totals add to (so a process without samples still takes part in the gather and the sum).
    ``module``: what is evaluated (None: the module that trains, as the run wraps it)."""

    step: Callable[[nn.Module, Any], BatchOut]
    finish: Callable[[dict, tuple, dict], dict] | None = None
    per_sample_shapes: tuple[tuple[int, ...], ...] = ()
    totals: Callable[[], dict] | None = None
    module: nn.Module | None = None


@dataclass(frozen=True)
class FrozenFeatures:
    """A frozen function ``fn(x, c, t) -> (B, dim)`` of a sentence batch, computed without autograd in front of
    the module that trains; ``module`` is put into eval mode while it is cached (``cache=True``)."""

    fn: Callable
    module: nn.Module
    dim: int
    num_classes: int
    cache: bool = False


@dataclass(frozen=True)
class Task:
    """One training stage, declared.

    * ``model`` is what a checkpoint stores (``model.state_dict()``, ``header``); ``trains`` is the module
      the optimizer's step updates and the run wraps in DDP / torch.compile (the model itself or a part).
    * ``step(module, batch) -> (loss, {name: float})`` is called with the wrapped ``trains``.
    * ``evaluation`` runs on ``val_set`` every ``validate_every`` epochs and at the last (0: never);
      ``best_metric`` (highest wins) picks ``checkpoint-best.pth``, logged as ``best_key``.
    * ``train_mode()`` puts the modules into their training modes at the start of every epoch;
      ``epoch_stats()`` adds statistics of the model after each epoch.
    * ``features``: the frozen part in front of ``trains`` (the linear probe's backbone); when it is
      cached, the run computes it once per split after loading the weights, and the step then receives
      ``(feature, label)`` batches.
    * ``prepare_data()`` is work on the inputs that the run does once, after its checks and before the first
      epoch (pre-training: the cached targets).
    * ``inputs``: identity of everything the run reads (part of its fingerprint); ``plan``: what
      ``--dry_run`` adds to its plan; ``adjust_batch``: lower the batch for small training sets.
    """

    name: str
    model: nn.Module
    trains: nn.Module
    train_set: Dataset
    val_set: Dataset | None
    step: Callable[[nn.Module, Any], tuple[torch.Tensor, dict]]
    evaluation: Evaluation
    header: dict
    summary: Callable[[dict], str]
    best_metric: str | None = None
    best_key: str = "best_val"
    validate_every: int = 0
    train_mode: Callable[[], None] | None = None
    epoch_stats: Callable[[], dict] | None = None
    features: FrozenFeatures | None = None
    prepare_data: Callable[[], None] | None = None
    inputs: dict = field(default_factory=dict)
    plan: dict = field(default_factory=dict)
    adjust_batch: bool = False

    def set_train_mode(self) -> None:
        if self.train_mode is not None:
            self.train_mode()
        else:
            self.trains.train()

    def validate_now(self, epoch: int, epochs: int) -> bool:
        every = self.validate_every
        return self.val_set is not None and every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == epochs)


def sentence_sets(dataset_dir: str, run: RunConfig, env: Env) -> tuple[Dataset, Dataset | None]:
    """Train and val sets of the unlabelled sentences of ``dataset_dir`` (VQ-HBR, pre-training): a MIMIC-IV_QRS
    layout (``batch_k`` folders, the recipe's folder list) or one folder; val only when ``--val_freq`` > 0 (and
    not for a plan, which reads only the training set)."""

    def data(split: str) -> Dataset:
        return build_sentence_dataset(dataset_dir, split, with_labels=False,
                                      all_batch_folders=run.recipe["all_batch_folders"])  # fmt: skip

    return data("train"), data("val") if run.val_freq > 0 and not env.plan else None


def check_data_fits(run: RunConfig, model: nn.Module, *datasets) -> None:
    """Sentence shapes and lead / second ids against the model's config (sentences.dataset.check_fits_model):
    a mismatch is refused naming the file before the first step."""
    name = f"--model {run.settings.get('model')}" if run.settings.get("model") else "the model"
    for ds in datasets:
        if ds is not None:
            check_fits_model(ds, model.config, name)


def to_device(batch, device: torch.device) -> list[torch.Tensor]:
    return [v.to(device, non_blocking=True) for v in batch]


# -------------------------------------------------------------------------------- the evaluation loop
@dataclass(frozen=True)
class Collected:
    meters: dict
    per_sample: tuple
    totals: dict


@torch.no_grad()
def collect(evaluation: Evaluation, module: nn.Module, loader, amp: Amp, header: str = "Val") -> Collected:
    """Run ``evaluation.step`` over ``loader`` (a :class:`sentences.loader.ShardSampler` loader: every sample once)
    in eval mode and combine the batches over processes."""
    net = evaluation.module if evaluation.module is not None else module
    net.eval()
    logger = MetricLogger()
    parts: list[list[np.ndarray]] = [[] for _ in evaluation.per_sample_shapes]
    totals = evaluation.totals() if evaluation.totals is not None else {}
    for batch in logger.log_every(loader, header):
        with amp.autocast():
            out = evaluation.step(net, batch)
        logger.update(**out.meters)
        for store, array in zip(parts, out.per_sample):
            store.append(np.asarray(array))
        for key, value in out.totals.items():
            totals[key] += value
    per_sample: tuple = ()
    if parts:
        local = [
            np.concatenate(p) if p else np.zeros((0, *shape), np.float32)
            for p, shape in zip(parts, evaluation.per_sample_shapes)
        ]
        per_sample = gather_predictions(list(loader.sampler), *local)
    logger.synchronize_between_processes()
    for value in totals.values():
        all_reduce_sum_(value)
    return Collected(logger.global_averages(), per_sample, totals)


def evaluate(evaluation: Evaluation, module: nn.Module, loader, amp: Amp, header: str = "Val") -> dict:
    """``{metric: value}`` of one evaluation pass (:func:`collect` + the stage's ``finish``)."""
    done = collect(evaluation, module, loader, amp, header)
    if evaluation.finish is None:
        return done.meters
    return evaluation.finish(done.meters, done.per_sample, done.totals)


class FeatureDataset(Dataset):
    """Cached features (N, D) and labels (N, C); items ``(feature, label)``."""

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int):
        return self.features[i], self.labels[i]


def cache_features(features: FrozenFeatures, loader, device: torch.device, amp: Amp) -> FeatureDataset:
    """The features of a whole split, gathered over processes so that every process holds all of them (the
    loader must use a ShardSampler: ``make_loader(train=False)``)."""
    evaluation = Evaluation(
        step=lambda net, batch: BatchOut({}, (features.fn(*to_device(batch[:3], device)).float().cpu().numpy(),
                                              batch[3].numpy())),
        per_sample_shapes=((features.dim,), (features.num_classes,)), module=features.module,
    )  # fmt: skip
    f, y = collect(evaluation, features.module, loader, amp, "Caching features").per_sample
    return FeatureDataset(f, y)


def dropout_active(model: nn.Module) -> list[str]:
    """Names of the Dropout modules with p > 0 that are in training mode."""
    return sorted(n for n, m in model.named_modules() if isinstance(m, nn.Dropout) and m.p > 0 and m.training)


@dataclass(frozen=True)
class EvalSpec:
    """``--eval`` of a trained run: ``keys`` - the settings the command must share with the training run;
    ``inputs(cfg)`` - identity of the data it reads; ``plan(cfg)`` - what ``--eval --dry_run`` adds to its plan;
    ``test(cfg, env, amp, record) -> dict`` - the test of ``output_dir/checkpoint-best.pth`` (``record``: the
    run's run.json)."""

    name: str
    keys: tuple[str, ...]
    inputs: Callable[[Any], dict]
    plan: Callable[[Any], dict]
    test: Callable[[Any, Env, Amp, dict], dict]
