"""Downstream fine-tuning / linear probing and evaluation pieces (paper Sec. 4).

* ``--trainable linear``: only ``mlp_head`` is trained; the frozen backbone computes the CLS feature
  without autograd. # Official behaviour: the original calls ``model.train(True)`` on the whole
  classifier, so the frozen backbone's dropout (0.1) and embedding dropout are ON while the head trains;
  ``--probe_backbone_eval`` (corrected) keeps it in eval mode, which also makes ``--cache_features`` valid.
* ``--trainable all``: every parameter trains, with layer-wise lr decay (utils.optim).
* Loss: BCE-with-logits for multi-label (``--is_binary``), cross-entropy on the argmax class otherwise.
* Metric: macro ROC-AUC over classes (utils.metrics), the paper's number; it picks checkpoint-best.pth.
* :func:`finetune_task` declares the stage for engine.run; ``--eval`` is :data:`EVAL`
  (:func:`eval_checkpoint`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from engine.loop import Amp
from engine.task import (
    BatchOut,
    Env,
    EvalSpec,
    Evaluation,
    FrozenFeatures,
    StageConfig,
    Task,
    check_data_fits,
    collect,
    dropout_active,
)
from modeling import create_model, load_model, make_header
from modeling.hub import checkpoint_sha256
from reporting.results import count_leads, describe_dataset_dir, write_result
from sentences.dataset import build_sentence_dataset
from sentences.labels import load_class_names, subsample_indices
from sentences.loader import make_loader
from utils.dist import broadcast_object, is_main_process, print0
from utils.integrity import folder_identity
from utils.logging import TensorboardLogger, append_jsonl
from utils.metrics import classification_report, format_table


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


@dataclass(frozen=True)
class Finetuning(StageConfig):
    """Stage 3's own settings (run_class_finetuning.py); build it with :meth:`create`."""

    dataset_dir: str
    model: str
    nb_classes: int
    is_binary: bool
    trainable: str  # "linear" (probe: mlp_head only) | "all"
    finetune: str  # the pre-trained checkpoint ("": the official random init)
    split_ratio: float
    sampling_method: str
    cache_features: bool = False
    results_csv: str = ""

    @classmethod
    def create(cls, run, optim, **settings) -> Finetuning:
        cfg = cls(run, optim, **settings)
        if cfg.trainable not in ("linear", "all"):
            raise ValueError(f"--trainable must be 'linear' or 'all', got {cfg.trainable!r}")
        if cfg.cache_features and not (cfg.trainable == "linear" and run.recipe["probe_backbone_eval"]):
            raise ValueError(
                "--cache_features needs --trainable linear and a backbone in eval mode (--probe_backbone_eval or "
                "--recipe corrected): the original's train-mode backbone gives other features every epoch"
            )
        return cfg


def labelled_split(cfg: Finetuning, split: str):
    ds = build_sentence_dataset(cfg.dataset_dir, split)
    labels = np.asarray(ds.labels)
    if labels.ndim != 2 or labels.shape[1] != cfg.nb_classes:
        raise ValueError(
            f"{cfg.dataset_dir}/{split}_labels.npy has {labels.shape[-1] if labels.ndim == 2 else labels.shape} "
            f"label columns but --nb_classes is {cfg.nb_classes}: set --nb_classes to the label width"
        )
    if len(ds) == 0:
        raise ValueError(f"{cfg.dataset_dir}: the {split} split has 0 records; rerun the preprocessing")
    return ds


def finetune_inputs(cfg: Finetuning) -> dict:
    ident = {"dataset": folder_identity(cfg.dataset_dir)}
    if cfg.finetune:
        ident["finetune_sha256"] = checkpoint_sha256(cfg.finetune)  # the resolved file (hf:// too)
    return ident


def build_classifier(cfg: Finetuning, load_weights: bool) -> nn.Module:
    """The classifier with its initial weights (``load_weights=False``: the architecture only, for a plan)."""
    kwargs = dict(num_classes=cfg.nb_classes, padding_attention_mask=cfg.run.recipe["padding_attention_mask"])
    if load_weights and cfg.finetune:
        # A VQ-HBR (or otherwise wrong) checkpoint, NaN/inf weights or other sizes are refused here.
        model = load_model(cfg.finetune, name=cfg.model, kind=("heartlang", "classifier"), **kwargs)
        print0(f"loaded pre-trained backbone from {cfg.finetune}")
    else:
        model = create_model(cfg.model, **kwargs)
        if load_weights:
            # Official behaviour: without --finetune the original re-draws EVERY parameter from
            # U(-0.1, 0.1) (fixtures README item 7); it defines the "no pre-training" baseline.
            model.randomly_initialize_weights(-0.1, 0.1)
            print0("no --finetune: every parameter drawn from U(-0.1, 0.1) (official random init)")
    set_trainable(model, cfg.trainable)
    return model


def finetune_task(cfg: Finetuning, env: Env) -> Task:
    """A linear probe (``mlp_head`` on the frozen backbone's CLS feature) or full fine-tuning, scored by the
    validation macro AUC."""
    full = labelled_split(cfg, "train")
    keep = subsample_indices(np.asarray(full.labels), cfg.split_ratio, cfg.sampling_method, cfg.run.seed)
    print0(f"training on {len(keep)} of {len(full)} records ({cfg.sampling_method}, ratio {cfg.split_ratio})")
    train_set = Subset(full, keep.tolist())
    val_set = None if env.plan else labelled_split(cfg, "val")  # a plan reads only the training set
    # Rank 0 hashes the --finetune checkpoint for the run's fingerprint and gives the result to the others.
    inputs = {} if env.plan else broadcast_object(finetune_inputs(cfg) if env.rank == 0 else None)
    model = build_classifier(cfg, load_weights=not env.plan)
    linear, probe_eval = cfg.trainable == "linear", cfg.run.recipe["probe_backbone_eval"]

    def train_mode() -> None:
        model.train()  # Official behaviour: model.train(True) on the whole classifier
        if linear and probe_eval:
            model.backbone.eval()

    features = None
    if linear:
        fn = model.forward_features
        if cfg.run.compile and not cfg.cache_features and not env.plan:
            # The probe's cost is the frozen backbone's forward (the step calls it directly): compile it too.
            fn = torch.compile(fn, backend=cfg.run.compile_backend)
        features = FrozenFeatures(fn, model, model.config.embed_dim, cfg.nb_classes, cache=cfg.cache_features)
    plan = {}
    if env.plan:
        train_mode()
        plan = {"train_rows": keep.tolist(), "dropout_active": dropout_active(model)}
    return Task(
        name="finetune", model=model, trains=model.mlp_head if linear else model, train_set=train_set,
        val_set=val_set, step=FinetuneStep(env.device, cfg.is_binary, features), features=features,
        evaluation=classification(env.device, cfg.is_binary, cfg.nb_classes,
                                  None if cfg.cache_features else model),
        best_metric="macro_auc", best_key="best_val_auc", validate_every=1, train_mode=train_mode,
        summary=summary, header=make_header(cfg.model, asdict(model.config), cfg.run.recipe), inputs=inputs,
        plan=plan, adjust_batch=True,  # Official behaviour: sentences.loader.fit_batch_size
    )  # fmt: skip


@dataclass(frozen=True)
class FinetuneStep:
    """The training step: sentences through the classifier (``--trainable all``), the frozen backbone's
    feature without autograd then ``mlp_head`` (linear probe), or cached features through ``mlp_head``."""

    device: torch.device
    is_binary: bool
    features: FrozenFeatures | None = None

    def __call__(self, module, batch):
        *inputs, y = (v.to(self.device, non_blocking=True) for v in batch)
        if len(inputs) == 1:  # cached features
            logits = module(inputs[0])
        elif self.features is not None:
            with torch.no_grad():  # the frozen backbone: no autograd graph, whatever its mode
                feats = self.features.fn(*inputs)
            logits = module(feats)
        else:
            x, c, t = inputs
            logits = module(x, lead_ids=c, time_ids=t)
        return compute_loss(logits, y, self.is_binary), {}


def classification(device, is_binary: bool, n_classes: int, model: nn.Module | None) -> Evaluation:
    """Mean loss, then macro ROC-AUC (utils.metrics) of the logits of the whole split, gathered in sample
    order. ``model``: the classifier evaluated (None: the module that trains, on cached features)."""

    def step(module, batch) -> BatchOut:
        logits, y = forward_batch(module, batch, device)
        return BatchOut({"loss": compute_loss(logits, y, is_binary)}, (logits.float().cpu().numpy(), y.cpu().numpy()))

    def finish(meters: dict, per_sample: tuple, totals: dict) -> dict:
        logits, labels = per_sample
        return {"loss": meters.get("loss", float("nan")), **classification_report(labels, logits, is_binary).as_dict()}

    return Evaluation(step, finish, per_sample_shapes=((n_classes,), (n_classes,)), module=model)


def summary(stats: dict) -> str:
    return (f"epoch {stats['epoch']}: train loss {stats['train_loss']:.4f}, val macro AUC "
            f"{stats['val_macro_auc']:.4f} (best {stats['best_val_auc']:.4f})")  # fmt: skip


# --eval ----------------------------------------------------------------------------------------------
def eval_plan(cfg: Finetuning) -> dict:
    """What ``--eval --dry_run`` adds: the test split's size."""
    return {"n_test": len(labelled_split(cfg, "test")), "nb_classes": cfg.nb_classes}


def eval_checkpoint(cfg: Finetuning, env: Env, amp: Amp, record: dict) -> dict:
    """Test macro AUC of ``output_dir/checkpoint-best.pth``: table on stdout, one row in ``--results_csv``."""
    out = Path(cfg.run.output_dir)
    best = out / "checkpoint-best.pth"
    model = load_model(best, name=cfg.model, kind="classifier", device=env.device, num_classes=cfg.nb_classes,
                       padding_attention_mask=cfg.run.recipe["padding_attention_mask"])  # fmt: skip
    test_set = labelled_split(cfg, "test")
    check_data_fits(cfg.run, model, test_set)
    loader = make_loader(test_set, cfg.optim.batch_size, env.rank, env.world_size, False, cfg.run.num_workers,
                         cfg.run.pin_mem)  # fmt: skip
    evaluation = classification(env.device, cfg.is_binary, cfg.nb_classes, model)
    done = collect(evaluation, model, loader, amp, "Test")
    logits, labels = done.per_sample
    report = classification_report(labels, logits, cfg.is_binary)
    stats = {"loss": done.meters.get("loss", float("nan")), **report.as_dict()}
    names = load_class_names(cfg.dataset_dir, cfg.nb_classes)
    print0(f"test of {best} on {cfg.dataset_dir} ({report.n_samples} records)\n" + format_table(report, names))
    dataset, subset = describe_dataset_dir(cfg.dataset_dir)
    row = {
        "dataset": dataset, "subset": subset, "leads": count_leads(test_set.lead_ids), "ratio": cfg.split_ratio,
        "sampling": cfg.sampling_method, "seed": cfg.run.seed, "trainable": cfg.trainable,
        "finetune": record["args"].get("finetune", ""), "macro_auc": f"{report.macro_auc:.6f}",
        "macro_f1": f"{report.macro_f1:.6f}", "accuracy": f"{report.accuracy:.6f}", "n_test": report.n_samples,
        "classes_without_auc": ";".join(names[c] for c in report.undefined_classes), "output_dir": str(out),
    }  # fmt: skip
    if is_main_process():
        written = write_result(cfg.results_csv, row, best, cfg.model, record.get("recipe", cfg.run.recipe),
                               roc=(labels, logits, names), is_binary=cfg.is_binary)  # fmt: skip
        append_jsonl(out / "test_log.txt", {**stats, **written.row})
        tb = TensorboardLogger(cfg.run.log_dir)
        tb.update(head="test", step=0, **stats)
        tb.close()
        print0(f"appended to {written.path}; ROC curves: {written.row.get('roc_png', '')}")
    return {**stats, "per_class_auc": report.per_class_auc.tolist()}


# What an --eval command must share with the training run (the original scripts' --eval command leaves out the
# training-only flags).
EVAL = EvalSpec(
    name="finetune", keys=("model", "nb_classes", "is_binary", "trainable", "split_ratio", "sampling_method", "seed"),
    inputs=finetune_inputs, plan=eval_plan, test=eval_checkpoint,
)
