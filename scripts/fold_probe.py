"""Linear probes over rotating folds on small labeled sets (paper Sec. 4 linear probe; docs/evidence.md).

A labeled set too small for a fixed test fold (the development PTB-XL subset: about 300 records; the shared
CPSC2018 and CSN records: 20 and 9) is used fully: every fold is the test fold once, the next fold validation,
the rest training, so every record is tested once per seed, and the test predictions of all folds are pooled
into one metric with its bootstrap interval (reporting.results.write_result).

The probe is the one of ``run_class_finetuning.py --trainable linear --probe_backbone_eval --cache_features``,
run in-process so that 10 folds x seeds x label ratios x encoders need no process each:

* features: the CLS features of the frozen backbone in eval mode (``forward_features``), computed once per
  encoder; the encoder is the pre-trained checkpoint (``modeling.load_model``) or the original's random
  initialisation (every parameter from U(-0.1, 0.1), drawn with the probe seed);
* head: the classifier's own ``mlp_head`` as built under the probe seed; AdamW (weight decay on the weight,
  not the bias), per-step cosine schedule with linear warm-up from 0 (utils.optim.cosine_scheduler),
  BCE-with-logits, batches that drop the last incomplete one, reshuffled every epoch in the order of the
  run's training sampler (``DistributedSampler`` with seed 0 + epoch: the original's sampler seed, whatever
  the probe seed; ``ProbeConfig.sampler_seed_from_seed`` is the corrected ``--sampler_seed_from_seed``);
* selection: validation macro AUC after every epoch; the best epoch's head (first best on ties) scores the
  test fold;
* label ratio: ``sentences.labels.subsample_indices`` (random sampling, the probe seed) on the training
  folds, as ``--split_ratio``.

tests/test_fold_probe_parity.py checks the equality: the same data, seed and flags (``--batch_size`` = the
batch :func:`train_head` picks) through ``run_class_finetuning.py`` and through :func:`rotate_probe` give the
same validation AUC every epoch, the same best epoch and the same test probabilities (within 1e-5).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modeling import create_model, load_model
from sentences.dataset import build_sentence_dataset
from sentences.labels import subsample_indices
from utils.metrics import macro_scores, probabilities
from utils.optim import cosine_scheduler

SPLITS = ("train", "val", "test")


@dataclass
class Pool:
    """All labeled records of a tokenised folder: the three splits concatenated, with a fold per record."""

    root: Path
    labels: np.ndarray  # (N, C) multi-hot
    folds: np.ndarray  # (N,) fold ids 1..K
    names: list[str]  # record names (ecg_id or file name)
    split_sizes: dict[str, int]

    @property
    def n_folds(self) -> int:
        return int(self.folds.max())


def load_pool(root: Path, folds: np.ndarray, names: list[str]) -> Pool:
    """``root/{split}_labels.npy`` of the three splits (train, val, test order) with the given folds."""
    labels, sizes = [], {}
    for split in SPLITS:
        y = np.load(root / f"{split}_labels.npy")
        labels.append(y)
        sizes[split] = int(len(y))
    y = np.concatenate(labels).astype(np.int64)
    if len(y) != len(folds) or len(y) != len(names):
        raise ValueError(f"{root}: {len(y)} labeled records but {len(folds)} folds and {len(names)} names")
    return Pool(root, y, np.asarray(folds, dtype=np.int64), list(names), sizes)


def round_robin_folds(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Folds 1..k for n records: a seeded permutation dealt round robin (sizes differ by at most one)."""
    if n < 3:
        raise ValueError(f"{n} labeled records: a rotation needs at least 3 (train, validation, test)")
    k = max(3, min(k, n))
    order = np.random.default_rng(seed).permutation(n)
    folds = np.empty(n, dtype=np.int64)
    folds[order] = np.arange(n) % k + 1
    return folds


def rotation(n_folds: int) -> list[tuple[int, int]]:
    """(test fold, validation fold) pairs: each fold tests once, the next one validates (fold K -> 1)."""
    return [(f, f % n_folds + 1) for f in range(1, n_folds + 1)]


@torch.no_grad()
def extract_features(model: nn.Module, root: Path, batch_size: int = 64) -> np.ndarray:
    """(N, D) CLS features of the three splits of ``root`` (train, val, test order), backbone in eval mode."""
    model.eval()
    feats = []
    for split in SPLITS:
        ds = build_sentence_dataset(root, split)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
        for x, c, t, _ in loader:
            feats.append(model.forward_features(x, c, t).float().numpy())
    return np.concatenate(feats) if feats else np.zeros((0, model.config.embed_dim), np.float32)


def build_encoder(
    model_name: str,
    n_classes: int,
    checkpoint: str | Path | None,
    seed: int,
    padding_attention_mask: bool = False,
) -> nn.Module:
    """The classifier whose backbone is probed: ``checkpoint`` loaded, or (None) the original's random
    initialisation. Built under ``seed``, so its ``mlp_head`` is the head a probe with that seed starts from."""
    torch.manual_seed(seed)
    kwargs = dict(num_classes=n_classes, padding_attention_mask=padding_attention_mask)
    if checkpoint is not None:
        return load_model(str(checkpoint), name=model_name, kind=("heartlang", "classifier"), **kwargs)
    model = create_model(model_name, **kwargs)
    model.randomly_initialize_weights(-0.1, 0.1)
    return model


@dataclass
class ProbeConfig:
    epochs: int = 100
    lr: float = 5e-3
    min_lr: float = 1e-5
    warmup_epochs: int = 1
    weight_decay: float = 0.05
    batch_size: int = 32
    # False (the original): the training shuffle is seeded with 0 + epoch for every probe seed, as the
    # run's DistributedSampler; True: with the probe seed + epoch (--sampler_seed_from_seed).
    sampler_seed_from_seed: bool = False


def train_head(
    head: nn.Linear,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: ProbeConfig,
    seed: int,
    train_features=None,
) -> tuple[nn.Linear, float, int, list[float]]:
    """The linear probe on cached features -> (best head, its validation macro AUC, its epoch 1-based, the
    validation macro AUC of every epoch).

    ``train_features(rows) -> (B, D) tensor``: features of training rows computed anew at every step (the
    original's train-mode backbone, dropout on); default: the cached ``x_train`` rows."""
    head = copy.deepcopy(head).train()
    # At least three steps per epoch on a small subset (as scripts/run_demo.probe_batch_size).
    batch = max(1, min(cfg.batch_size, len(x_train) // 3))
    steps = len(x_train) // batch
    schedule = cosine_scheduler(cfg.lr, cfg.min_lr, cfg.epochs, steps, cfg.warmup_epochs, 0.0)
    opt = torch.optim.AdamW(
        [
            {"params": [head.weight], "weight_decay": cfg.weight_decay},
            {"params": [head.bias], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    xt, yt = (
        torch.from_numpy(np.asarray(x_train, np.float32)),
        torch.from_numpy(np.asarray(y_train, np.float32)),
    )
    xv = torch.from_numpy(np.asarray(x_val, np.float32))
    sampler_seed = seed if cfg.sampler_seed_from_seed else 0
    best, best_auc, best_epoch, history = copy.deepcopy(head), -np.inf, 0, []
    it = 0
    for epoch in range(cfg.epochs):
        # torch's DistributedSampler (one process, drop_last): randperm under a generator seeded seed + epoch.
        perm = torch.randperm(len(xt), generator=torch.Generator().manual_seed(sampler_seed + epoch))
        for s in range(steps):
            idx = perm[s * batch : (s + 1) * batch]
            for g in opt.param_groups:
                g["lr"] = float(schedule[it])
            feats = xt[idx] if train_features is None else train_features(idx.numpy())
            loss = nn.functional.binary_cross_entropy_with_logits(head(feats), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
        with torch.no_grad():
            auc, _ = macro_scores(y_val, probabilities(head(xv).numpy(), True))
        history.append(float(auc))
        if np.isfinite(auc) and auc > best_auc:
            best, best_auc, best_epoch = copy.deepcopy(head), float(auc), epoch + 1
    return best.eval(), best_auc, best_epoch, history


def rotate_probe(
    features: np.ndarray,
    pool: Pool,
    head: nn.Linear,
    ratio: float,
    seed: int,
    cfg: ProbeConfig,
    pairs: list[tuple[int, int]] | None = None,
    train_features=None,
) -> dict:
    """Probe every (test, validation) fold pair (default: :func:`rotation`); -> ``{logits (N_test, C), labels,
    rows (record indices), folds: [{test, val, n_train, n_test, val_auc, best_epoch}]}`` with the test records
    of all pairs pooled in record order. ``train_features(rows of the pool)``: see :func:`train_head`."""
    n_classes = pool.labels.shape[1]
    logits = np.full((len(pool.labels), n_classes), np.nan)
    done = np.zeros(len(pool.labels), bool)
    info = []
    for test_f, val_f in pairs or rotation(pool.n_folds):
        tr = np.flatnonzero((pool.folds != test_f) & (pool.folds != val_f))
        va, te = np.flatnonzero(pool.folds == val_f), np.flatnonzero(pool.folds == test_f)
        keep = tr[subsample_indices(pool.labels[tr], ratio, "random", seed)] if ratio < 1 else tr
        fn = None if train_features is None else (lambda idx, keep=keep: train_features(keep[idx]))
        best, val_auc, epoch, history = train_head(
            head, features[keep], pool.labels[keep], features[va], pool.labels[va], cfg, seed, fn
        )
        with torch.no_grad():
            logits[te] = best(torch.from_numpy(np.asarray(features[te], np.float32))).numpy()
        done[te] = True
        info.append({"test": test_f, "val": val_f, "n_train": int(len(keep)), "n_val": int(len(va)),
                     "n_test": int(len(te)), "val_auc": round(val_auc, 6), "best_epoch": epoch,
                     "val_auc_per_epoch": [round(a, 6) for a in history]})  # fmt: skip
    rows = np.flatnonzero(done)
    return {"logits": logits[rows], "labels": pool.labels[rows], "rows": rows, "folds": info}
