"""Downstream fine-tuning / linear probing and evaluation pieces (paper Sec. 4).

* ``--trainable linear``: only ``mlp_head`` is trained; the backbone is frozen and kept in eval mode
  (no dropout), which is what a linear probe of the pre-trained features means.
* ``--trainable all``: every parameter trains, with layer-wise lr decay (utils.optim).
* Loss: BCE-with-logits for multi-label (``--is_binary``), cross-entropy on the argmax class otherwise.
* Metric: macro ROC-AUC over classes (utils.metrics), the paper's number.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from engine.common import Amp, gather_predictions, unwrap
from utils.logging import MetricLogger
from utils.metrics import ClassificationReport, classification_report


def set_trainable(model: nn.Module, trainable: str) -> list[str]:
    """Freeze according to ``--trainable``; return the names left trainable.

    The backbone's ``lm_head`` is never used by the classifier (it exists so that checkpoints load
    strictly), so it is always frozen: an unused trainable parameter would also break DDP.
    """
    if trainable not in ("linear", "all"):
        raise ValueError(f"--trainable must be 'linear' or 'all', got {trainable!r}")
    names = []
    for name, p in model.named_parameters():
        keep = (
            name.startswith("mlp_head.")
            if trainable == "linear"
            else not name.startswith("backbone.lm_head.")
        )
        p.requires_grad_(keep)
        if keep:
            names.append(name)
    return names


def set_train_mode(model: nn.Module, trainable: str) -> None:
    """model.train(), but a frozen backbone (linear probe) stays in eval mode (no dropout)."""
    model.train()
    net = unwrap(model)
    if trainable == "linear" and hasattr(net, "backbone"):  # (with cached features only the head is here)
        net.backbone.eval()


def compute_loss(logits: torch.Tensor, y: torch.Tensor, is_binary: bool) -> torch.Tensor:
    """logits (B, C); y (B, C) multi-hot float. BCE for multi-label, else CE on argmax(y)."""
    logits = logits.float()
    if is_binary:
        return F.binary_cross_entropy_with_logits(logits, y.float())
    return F.cross_entropy(logits, y.argmax(dim=-1) if y.ndim == 2 else y.long())


def forward_batch(model, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, C), labels) of one batch: sentences ``(x, c, t, y)`` through the classifier, or cached
    CLS features ``(f, y)`` through the head alone (``--cache_features``)."""
    *inputs, y = (v.to(device, non_blocking=True) for v in batch)
    if len(inputs) == 1:
        return model(inputs[0]), y
    x, c, t = inputs
    return model(x, in_chan_matrix=c, in_time_matrix=t), y


class FinetuneStep:
    """``step_fn`` for :func:`engine.common.train_one_epoch`."""

    def __init__(self, device: torch.device, is_binary: bool):
        self.device = device
        self.is_binary = is_binary

    def __call__(self, model, batch):
        logits, y = forward_batch(model, batch, self.device)
        return compute_loss(logits, y, self.is_binary), {}


class FeatureDataset(Dataset):
    """Cached CLS features (N, D) and labels (N, C); items ``(feature, label)``."""

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int):
        return self.features[i], self.labels[i]


@torch.no_grad()
def extract_features(model, loader, device: torch.device, amp: Amp) -> FeatureDataset:
    """CLS features of a whole split from the frozen backbone (eval mode), gathered over ranks so that
    every rank holds the complete cached split. The loader must use a ShardSampler
    (``make_loader(train=False)``)."""
    net = unwrap(model)
    net.eval()
    feats, labels = [], []
    for x, c, t, y in MetricLogger().log_every(loader, "Caching features"):
        with amp.autocast():
            f = net.forward_features(x.to(device), c.to(device), t.to(device))
        feats.append(f.float().cpu().numpy())
        labels.append(y.numpy())
    dim = net.config.embed_dim
    f = np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)
    y = np.concatenate(labels) if labels else np.zeros((0, net.config.num_classes), np.float32)
    f, y = gather_predictions(list(loader.sampler), f, y)
    return FeatureDataset(f, y)


@torch.no_grad()
def predict(model, loader, device: torch.device, amp: Amp, is_binary: bool, header: str = "Eval"):
    """Logits and labels of the whole split, gathered over ranks in sample order, plus the mean loss.

    The loader must use :class:`engine.common.ShardSampler` (``make_loader(train=False)``: every sample
    exactly once)."""
    model.eval()
    logger = MetricLogger()
    all_logits, all_labels = [], []
    for batch in logger.log_every(loader, header):
        with amp.autocast():
            logits, y = forward_batch(model, batch, device)
        logger.update(loss=compute_loss(logits, y, is_binary))
        all_logits.append(logits.float().cpu().numpy())
        all_labels.append(y.cpu().numpy())
    net = unwrap(model)
    n_cls = net.out_features if isinstance(net, nn.Linear) else net.mlp_head.out_features
    logits = np.concatenate(all_logits) if all_logits else np.zeros((0, n_cls), np.float32)
    labels = np.concatenate(all_labels) if all_labels else np.zeros((0, n_cls), np.float32)
    logits, labels = gather_predictions(list(loader.sampler), logits, labels)
    logger.synchronize_between_processes()
    return logits, labels, logger.global_averages().get("loss", float("nan"))


def evaluate(
    model, loader, device, amp: Amp, is_binary: bool, header: str = "Eval"
) -> tuple[dict, ClassificationReport]:
    logits, labels, loss = predict(model, loader, device, amp, is_binary, header)
    report = classification_report(labels, logits, is_binary)
    stats = {"loss": loss, **report.as_dict()}
    return stats, report


def describe_dataset_dir(dataset_dir: str) -> tuple[str, str]:
    """``.../PTBXL_QRS/form`` -> ("PTBXL", "form"); ``.../CPSC2018_QRS`` (no subset) -> ("CPSC2018", "all")."""
    p = Path(dataset_dir.rstrip("/"))
    if "_QRS" in p.name:
        return p.name.split("_QRS")[0], "all"
    return p.parent.name.split("_QRS")[0], p.name


RESULT_FIELDS = [
    "dataset", "subset", "leads", "ratio", "sampling", "seed", "trainable", "model", "finetune",
    "macro_auc", "macro_f1", "accuracy", "n_test", "classes_without_auc", "output_dir",
]  # fmt: skip


def append_result_row(path: str | os.PathLike, row: dict) -> Path:
    """Append one row to the results CSV (header written when the file is new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=RESULT_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in RESULT_FIELDS})
    return path


def count_leads(in_chans: np.ndarray) -> int:
    """Number of distinct lead ids (0 = padding excluded) used by a split."""
    ids = np.unique(np.asarray(in_chans))
    return int((ids > 0).sum())
