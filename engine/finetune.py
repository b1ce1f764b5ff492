"""Downstream fine-tuning / linear probing and evaluation pieces (paper Sec. 4).

* ``--trainable linear``: only ``mlp_head`` is trained; the frozen backbone computes the CLS feature
  without autograd. # Official behaviour: the original calls ``model.train(True)`` on the whole
  classifier, so the frozen backbone's dropout (0.1) and embedding dropout are ON while the head trains;
  ``--probe_backbone_eval`` (corrected) keeps it in eval mode, which also makes ``--cache_features`` valid.
* ``--trainable all``: every parameter trains, with layer-wise lr decay (utils.optim).
* Loss: BCE-with-logits for multi-label (``--is_binary``), cross-entropy on the argmax class otherwise.
* Metric: macro ROC-AUC over classes (utils.metrics), the paper's number; it picks checkpoint-best.pth.
* :class:`FinetuneStage` plugs these into engine.run; ``--eval`` is :meth:`FinetuneStage.test`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from datasets.ecg_dataset import build_sentence_dataset, load_class_names, subsample_indices
from engine.loop import Amp, gather_predictions, unwrap
from engine.run import Context, Stage, check_data_fits, dropout_active
from modeling import create_model
from modeling.checkpoint import load_model, load_state_dict_strict, read_checkpoint, state_dict_of
from modeling.hub import checkpoint_sha256
from reporting.results import count_leads, describe_dataset_dir, write_result
from utils.dist import is_main_process, print0
from utils.integrity import folder_identity
from utils.logging import MetricLogger, TensorboardLogger, append_jsonl
from utils.metrics import ClassificationReport, classification_report, format_table


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
    return model(x, lead_ids=c, time_ids=t), y


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


class FinetuneStage(Stage):
    """Stage 3 for engine.run: linear probe (``trainable='linear'``) or full fine-tuning (``'all'``)."""

    name = "finetune"
    best_metric = "macro_auc"
    best_key = "best_val_auc"
    adjust_batch = True  # Official behaviour: engine.data.fit_batch_size
    test_keys = ("model", "nb_classes", "is_binary", "trainable", "split_ratio", "sampling_method", "seed")

    def __init__(self, run, optim, dataset_dir: str, model: str, nb_classes: int, is_binary: bool,
                 trainable: str, finetune: str, split_ratio: float, sampling_method: str,
                 cache_features: bool = False):  # fmt: skip
        super().__init__(run, optim)
        if trainable not in ("linear", "all"):
            raise ValueError(f"--trainable must be 'linear' or 'all', got {trainable!r}")
        self.probe_eval = run.recipe["probe_backbone_eval"]
        if cache_features and not (trainable == "linear" and self.probe_eval):
            raise ValueError(
                "--cache_features needs --trainable linear and a backbone in eval mode (--probe_backbone_eval or "
                "--recipe corrected): the original's train-mode backbone gives other features every epoch"
            )
        self.dataset_dir, self.model_name, self.nb_classes, self.is_binary = (
            dataset_dir,
            model,
            nb_classes,
            is_binary,
        )
        self.trainable, self.finetune, self.cache = trainable, finetune, cache_features
        self.split_ratio, self.sampling_method = split_ratio, sampling_method
        self.model: nn.Module | None = None
        self.keep: np.ndarray | None = None
        self.features = None  # the compiled backbone feature function under --compile (linear probe)

    # data ------------------------------------------------------------------------------------------
    def _split(self, split: str):
        ds = build_sentence_dataset(self.dataset_dir, split)
        labels = np.asarray(ds.labels)
        if labels.ndim != 2 or labels.shape[1] != self.nb_classes:
            raise ValueError(
                f"{self.dataset_dir}/{split}_labels.npy has {labels.shape[-1] if labels.ndim == 2 else labels.shape} "
                f"label columns but --nb_classes is {self.nb_classes}: set --nb_classes to the label width"
            )
        if len(ds) == 0:
            raise ValueError(f"{self.dataset_dir}: the {split} split has 0 records; rerun the preprocessing")
        return ds

    def train_set(self):
        full = self._split("train")
        self.keep = subsample_indices(
            np.asarray(full.labels), self.split_ratio, self.sampling_method, self.run.seed
        )
        print0(
            f"training on {len(self.keep)} of {len(full)} records ({self.sampling_method}, ratio {self.split_ratio})"
        )
        return Subset(full, self.keep.tolist())

    def val_set(self):
        return self._split("val")

    def inputs_identity(self) -> dict:
        ident = {"dataset": folder_identity(self.dataset_dir)}
        if self.finetune:
            ident["finetune_sha256"] = checkpoint_sha256(self.finetune)  # the resolved file (hf:// too)
        return ident

    # model -----------------------------------------------------------------------------------------
    def build_model(self, load_weights: bool):
        kwargs = dict(
            num_classes=self.nb_classes, padding_attention_mask=self.run.recipe["padding_attention_mask"]
        )
        if load_weights and self.finetune:
            # A VQ-HBR (or otherwise wrong) checkpoint, NaN/inf weights or other sizes are refused here.
            model = load_model(
                self.finetune, name=self.model_name, kind=("heartlang", "classifier"), **kwargs
            )
            print0(f"loaded pre-trained backbone from {self.finetune}")
        else:
            model = create_model(self.model_name, **kwargs)
            if load_weights:
                # Official behaviour: without --finetune the original re-draws EVERY parameter from
                # U(-0.1, 0.1) (fixtures README item 7); it defines the "no pre-training" baseline.
                model.randomly_initialize_weights(-0.1, 0.1)
                print0("no --finetune: every parameter drawn from U(-0.1, 0.1) (official random init)")
        set_trainable(model, self.trainable)
        self.model = model
        return model

    def prepare(self, model, ctx: Context, train_set, val_set):
        self.device, self.amp = ctx.device, ctx.amp
        if self.trainable == "all":
            return model, train_set, val_set
        if self.cache:
            # The frozen backbone in eval mode gives the same CLS feature every epoch: compute it once (after
            # resuming, from the weights actually used) and train mlp_head alone on the cached features.
            train_set = extract_features(model, ctx.loader(train_set, train=False), ctx.device, ctx.amp)
            val_set = extract_features(model, ctx.loader(val_set, train=False), ctx.device, ctx.amp)
        return model.mlp_head, train_set, val_set

    def compile(self, module):
        if self.trainable == "linear" and not self.cache:
            # The probe's cost is the frozen backbone's forward (the step calls it directly): compile it too.
            self.features = torch.compile(self.model.forward_features, backend=self.run.compile_backend)
        return torch.compile(module, backend=self.run.compile_backend)

    def set_train_mode(self, module) -> None:
        self.model.train()  # Official behaviour: model.train(True) on the whole classifier
        if self.trainable == "linear" and self.probe_eval:
            self.model.backbone.eval()

    def step(self, module, batch):
        *inputs, y = (v.to(self.device, non_blocking=True) for v in batch)
        if len(inputs) == 1:  # cached features
            logits = module(inputs[0])
        elif self.trainable == "linear":
            with torch.no_grad():  # the frozen backbone: no autograd graph, whatever its mode
                fn = self.features if self.features is not None else self.model.forward_features
                feats = fn(*inputs)
            logits = module(feats)
        else:
            x, c, t = inputs
            logits = module(x, lead_ids=c, time_ids=t)
        return compute_loss(logits, y, self.is_binary), {}

    def evaluate(self, module, loader, ctx: Context) -> dict:
        net = module if self.cache else self.model
        stats, _ = evaluate(net, loader, ctx.device, ctx.amp, self.is_binary, "Val")
        return stats

    def validate_now(self, epoch: int) -> bool:
        return True

    def plan_extra(self, model, train_set) -> dict:
        self.set_train_mode(model)
        return {"train_rows": self.keep.tolist(), "dropout_active": dropout_active(model)}

    def test_plan_extra(self) -> dict:
        test = self._split("test")
        return {"n_test": len(test), "nb_classes": self.nb_classes}

    def summary(self, stats: dict) -> str:
        return (f"epoch {stats['epoch']}: train loss {stats['train_loss']:.4f}, val macro AUC "
                f"{stats['val_macro_auc']:.4f} (best {stats['best_val_auc']:.4f})")  # fmt: skip

    # --eval ----------------------------------------------------------------------------------------
    def test(self, ctx: Context, record: dict, results_csv: str) -> dict:
        """Test macro AUC of ``output_dir/checkpoint-best.pth``: table on stdout, one row in the CSV."""
        out = Path(self.run.output_dir)
        best = out / "checkpoint-best.pth"
        model = self.build_model(load_weights=False).to(ctx.device)
        state = read_checkpoint(best)
        load_state_dict_strict(model, state_dict_of(state, str(best)))
        test_set = self._split("test")
        check_data_fits(self, model, test_set)
        loader = ctx.loader(test_set, train=False)
        logits, labels, loss = predict(model, loader, ctx.device, ctx.amp, self.is_binary, "Test")
        report = classification_report(labels, logits, self.is_binary)
        stats = {"loss": loss, **report.as_dict()}
        names = load_class_names(self.dataset_dir, self.nb_classes)
        print0(
            f"test of {best} on {self.dataset_dir} ({report.n_samples} records)\n"
            + format_table(report, names)
        )
        dataset, subset = describe_dataset_dir(self.dataset_dir)
        row = {
            "dataset": dataset, "subset": subset, "leads": count_leads(test_set.chans), "ratio": self.split_ratio,
            "sampling": self.sampling_method, "seed": self.run.seed, "trainable": self.trainable,
            "finetune": record["args"].get("finetune", ""), "macro_auc": f"{report.macro_auc:.6f}",
            "macro_f1": f"{report.macro_f1:.6f}", "accuracy": f"{report.accuracy:.6f}", "n_test": report.n_samples,
            "classes_without_auc": ";".join(names[c] for c in report.undefined_classes), "output_dir": str(out),
        }  # fmt: skip
        if is_main_process():
            written = write_result(results_csv, row, best, self.model_name, record.get("recipe", self.run.recipe),
                                   roc=(labels, logits, names))  # fmt: skip
            append_jsonl(out / "test_log.txt", {**stats, **written.row})
            tb = TensorboardLogger(self.run.log_dir)
            tb.update(head="test", step=0, **stats)
            tb.close()
            print0(f"appended to {written.path}; ROC curves: {written.row.get('roc_png', '')}")
        return {**stats, "per_class_auc": report.per_class_auc.tolist()}
