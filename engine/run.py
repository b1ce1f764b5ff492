"""The one run lifecycle of the three training stages (VQ-HBR, pre-training, fine-tuning).

``run_stage(stage)`` does, in order (docs/training.md "Run lifecycle", docs/robustness.md):

1. ``--dry_run``: :func:`make_plan` resolves everything the run would do (processes, batch after any
   adjustment, iterations, per-iteration lr and weight decay, parameter groups, stage extras such as the
   training rows and the active dropout modules), writes ``<output_dir>/plan.json``, prints a summary, and
   returns without training. It needs only the data set (no tokenizer or initial checkpoint).
2. Distributed set-up; rank 0 takes the exclusive lock on ``output_dir`` (utils.integrity.OutputDirLock).
3. The run's fingerprint (every setting that defines the result + the identity of the input data and of
   the initial checkpoints) is compared with ``output_dir/run.json``: a folder made with other settings is
   refused with each differing setting named, unless ``--resume PATH`` asks to continue deliberately.
4. Model, optimizer, lr schedule; resume from the newest checkpoint of the same run.
5. The epoch loop: reseed, train (engine.loop.train_one_epoch with the stage's step), the stage's epoch
   statistics, validation when due, the best checkpoint by the stage's metric, periodic checkpoints,
   ``log.txt`` (JSON lines), TensorBoard, and at the end training-curve plots.

A stage contributes only what is its own: a subclass of :class:`Stage` with its data, model, step and
evaluation (engine/vqhbr.py, engine/pretrain.py, engine/finetune.py).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from datasets.ecg_dataset import build_sentence_dataset, check_fits_model
from engine.config import HARMLESS_SETTINGS, OptimConfig, RunConfig
from engine.data import fit_batch_size, iters_per_epoch, make_loader
from engine.loop import Amp, reseed_epoch, train_one_epoch, wrap_ddp
from modeling.accel import mask_source
from modeling.checkpoint import (
    auto_resume,
    build_state,
    find_latest_checkpoint,
    save_checkpoint,
    save_epoch_checkpoints,
)
from utils.dist import DistInfo, barrier, destroy_distributed, init_distributed_mode, print0, seed_everything
from utils.integrity import (
    OutputDirLock,
    StaleOutputError,
    diff_settings,
    digest,
    provenance,
    read_stamp,
    write_json_atomic,
)
from utils.logging import TensorboardLogger, append_jsonl, read_jsonl, save_args
from utils.optim import create_optimizer, lr_schedule, param_groups_layer_decay, peak_lr

RUN_RECORD = "run.json"


@dataclass
class Context:
    """What a stage's hooks may use once the run is set up."""

    info: DistInfo
    amp: Amp
    run: RunConfig
    batch_size: int

    @property
    def device(self) -> torch.device:
        return self.info.device

    def loader(self, dataset: Dataset, train: bool):
        return make_loader(
            dataset, self.batch_size, self.info.rank, self.info.world_size, train, self.run.num_workers,
            self.run.pin_mem, sampler_seed=self.run.seed if self.run.recipe.get("sampler_seed_from_seed") else 0,
        )  # fmt: skip


class Stage:
    """A training stage: override the hooks; the lifecycle does the rest."""

    name = "stage"
    best_metric: str | None = None  # validation key whose highest value picks checkpoint-best.pth
    best_key = "best_val"  # the log.txt key of the best value so far
    adjust_batch = False  # fine-tuning: halve the batch for small training sets (engine.data.fit_batch_size)
    test_keys: tuple[str, ...] = ()  # settings an evaluation command must share with the training run

    def __init__(self, run: RunConfig, optim: OptimConfig):
        self.run = run
        self.optim = optim

    # data -----------------------------------------------------------------------------------------
    def train_set(self) -> Dataset:
        raise NotImplementedError

    def val_set(self) -> Dataset | None:
        return None

    def inputs_identity(self) -> dict:
        """Identity of everything the run reads (data files, initial checkpoints): part of the fingerprint."""
        return {}

    # model ----------------------------------------------------------------------------------------
    def build_model(self, load_weights: bool) -> nn.Module:
        """The model whose state is checkpointed, with its trainable parameters set (``load_weights=False``:
        the architecture only, for --dry_run)."""
        raise NotImplementedError

    def prepare(self, model: nn.Module, ctx: Context, train_set, val_set):
        """After resume: returns ``(module to optimise/wrap in DDP, train_set, val_set)``."""
        return model, train_set, val_set

    def set_train_mode(self, module: nn.Module) -> None:
        module.train()

    def compile(self, module: nn.Module) -> nn.Module:
        """``--compile``: the module the step calls, compiled (a stage may compile more, e.g. a frozen part)."""
        return torch.compile(module, backend=self.run.compile_backend)

    # step / evaluation ----------------------------------------------------------------------------
    def step(self, module: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def evaluate(self, module: nn.Module, loader, ctx: Context) -> dict:
        raise NotImplementedError

    def validate_now(self, epoch: int) -> bool:
        freq = self.run.val_freq
        return freq > 0 and ((epoch + 1) % freq == 0 or epoch + 1 == self.optim.epochs)

    def epoch_stats(self, model: nn.Module) -> dict:
        return {}

    def plan_extra(self, model: nn.Module, train_set) -> dict:
        return {}

    def test_plan_extra(self) -> dict:
        """What ``--eval --dry_run`` adds to its plan (e.g. the test split's size)."""
        return {}

    def summary(self, stats: dict) -> str:
        return f"epoch {stats['epoch']}: train loss {stats['train_loss']:.4f}"


class UnlabelledSentenceStage(Stage):
    """A stage trained on the unlabelled sentences of ``dataset_dir`` (VQ-HBR, pre-training): a MIMIC-IV_QRS
    layout (``batch_k`` folders, the recipe's folder list) or one folder; the val split is read only when
    ``--val_freq`` > 0."""

    dataset_dir: str

    def _data(self, split: str) -> Dataset:
        return build_sentence_dataset(self.dataset_dir, split, with_labels=False,
                                      all_batch_folders=self.run.recipe["all_batch_folders"])  # fmt: skip

    def train_set(self) -> Dataset:
        return self._data("train")

    def val_set(self) -> Dataset | None:
        return self._data("val") if self.run.val_freq > 0 else None


# ------------------------------------------------------------------------------------------- the plan
def planned_world_size(run: RunConfig) -> int:
    """Under torchrun its WORLD_SIZE; otherwise --world_size (the original README's commands pass 8)."""
    if "TORCHELASTIC_RUN_ID" in os.environ and os.environ.get("WORLD_SIZE"):
        return int(os.environ["WORLD_SIZE"])
    return run.planned_world_size


def batch_for(stage: Stage, n_train: int, world_size: int) -> int:
    if stage.adjust_batch:
        return fit_batch_size(stage.optim.batch_size, n_train // world_size)
    return stage.optim.batch_size


def make_plan(stage: Stage, world_size: int) -> dict:
    """Everything the run would do, from the same functions the run uses."""
    optim = stage.optim
    train_set = stage.train_set()
    batch = batch_for(stage, len(train_set), world_size)
    niter = iters_per_epoch(
        len(train_set), world_size, batch, optim.update_freq, stage.run.max_steps_per_epoch
    )
    model = stage.build_model(load_weights=False)
    groups = param_groups_layer_decay(model, optim.weight_decay, optim.layer_decay, optim.no_decay_embeddings)
    lr = lr_schedule(optim, world_size, niter)
    plan = {
        "stage": stage.name, "world_size": world_size, "batch_size_requested": optim.batch_size,
        "batch_size": batch, "update_freq": optim.update_freq, "effective_batch": batch * optim.update_freq * world_size,
        "n_train": len(train_set), "iters_per_epoch": niter, "epochs": optim.epochs,
        "peak_lr": peak_lr(optim, world_size), "min_lr": optim.min_lr, "warmup_epochs": optim.warmup_epochs,
        "lr": lr.tolist(), "weight_decay": [optim.weight_decay] * len(lr),
        "param_groups": {n: {"weight_decay": g["weight_decay"], "lr_scale": g["lr_scale"]}
                         for g in groups for n in g["param_names"]},
        "recipe": stage.run.recipe,
    }  # fmt: skip
    plan.update(stage.plan_extra(model, train_set))
    return plan


def plan_summary(plan: dict) -> str:
    n_decay = sum(1 for g in plan["param_groups"].values() if g["weight_decay"] > 0)
    lines = [
        f"plan of {plan['stage']}: {plan['world_size']} process(es) x batch {plan['batch_size']}"
        + (f" (requested {plan['batch_size_requested']})" if plan["batch_size"] != plan["batch_size_requested"] else "")
        + f" x update_freq {plan['update_freq']} = effective batch {plan['effective_batch']}",
        f"{plan['n_train']} training samples -> {plan['iters_per_epoch']} optimizer steps per epoch x "
        f"{plan['epochs']} epochs = {len(plan['lr'])} steps",
        f"lr: warm-up {plan['warmup_epochs']} epochs from 0 to {plan['peak_lr']:.3e}, cosine to {plan['min_lr']:.1e}",
        f"{len(plan['param_groups'])} trainable tensors, {n_decay} with weight decay {max(plan['weight_decay'])}",
        "recipe: " + (", ".join(f"{k}={v}" for k, v in plan["recipe"].items()) or "-"),
    ]  # fmt: skip
    if "train_rows" in plan:
        lines.append(f"training rows kept: {len(plan['train_rows'])}")
    if "dropout_active" in plan:
        lines.append(f"dropout modules active during a training step: {len(plan['dropout_active'])}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the fingerprint
def fingerprint(stage: Stage, world_size: int) -> dict:
    """Settings that define the result + the identity of the inputs."""
    settings = {k: v for k, v in stage.run.settings.items() if k not in HARMLESS_SETTINGS}
    settings["processes"] = world_size
    return {"settings": settings, "inputs": stage.inputs_identity()}


def check_run_record(out: Path, fp: dict, explicit_resume: str) -> None:
    """Refuse to continue a folder made by a different run (rank 0)."""
    record = read_stamp(out / RUN_RECORD)
    # What a run leaves that another run must not continue or mix with: checkpoints, the best checkpoint
    # (--eval tests it), and the epoch log (also all a --no_save_ckpt run leaves).
    has_ckpt = (
        find_latest_checkpoint(out) is not None
        or (out / "checkpoint-best.pth").is_file()
        or ((out / "log.txt").is_file() and (out / "log.txt").stat().st_size > 0)
    )
    how = (
        f"Start fresh with another --output_dir (or delete {out}), or continue deliberately with "
        f"--resume {out / 'checkpoint.pth'}."
    )
    if record is None:
        if has_ckpt and not explicit_resume:
            raise StaleOutputError(
                f"{out} holds checkpoints or a log but no {RUN_RECORD}: the settings that made them are "
                f"unknown. {how}"
            )
        return
    old = {**{f"--{k}": v for k, v in record["fingerprint"]["settings"].items()},
           **{f"input {k}": v for k, v in record["fingerprint"]["inputs"].items()}}  # fmt: skip
    new = {
        **{f"--{k}": v for k, v in fp["settings"].items()},
        **{f"input {k}": v for k, v in fp["inputs"].items()},
    }
    changes = diff_settings(old, new)
    changes = [_name_changed_files(c, record["fingerprint"]["inputs"], fp["inputs"]) for c in changes]
    if changes and has_ckpt:
        if explicit_resume:
            print0(
                "WARNING: --resume given: continuing although the settings changed:\n  "
                + "\n  ".join(changes)
            )
            return
        raise StaleOutputError(
            f"{out} holds a run made with other settings or inputs:\n  " + "\n  ".join(changes) + f"\n{how}"
        )


def _name_changed_files(change: str, old: dict, new: dict) -> str:
    """``input dataset: [...] -> [...]`` becomes ``input dataset: 2 file(s) changed: train_labels.npy, ...``."""
    key = change.split(":", 1)[0].removeprefix("input ")
    a, b = old.get(key), new.get(key)
    if not (change.startswith("input ") and isinstance(a, list) and isinstance(b, list)):
        return change
    a = {f.get("name"): f for f in a if isinstance(f, dict)}
    b = {f.get("name"): f for f in b if isinstance(f, dict)}
    names = [f"{n} (removed)" for n in sorted(set(a) - set(b))]
    names += [f"{n} (new)" for n in sorted(set(b) - set(a))]
    names += [f"{n} (rewritten)" for n in sorted(set(a) & set(b)) if a[n] != b[n]]
    more = " ..." if len(names) > 5 else ""
    return f"input {key}: {len(names)} file(s) changed: {', '.join(names[:5])}{more}"


def write_run_record(out: Path, fp: dict, stage: Stage) -> None:
    write_json_atomic(
        out / RUN_RECORD,
        {
            "stage": stage.name,
            "fingerprint": fp,
            "digest": digest(fp),
            "recipe": stage.run.recipe,
            "args": stage.run.settings,
            "dropout_masks": mask_source(),  # modeling/accel: same distribution, not the same masks
            **provenance(),
        },
    )


# ---------------------------------------------------------------------------------------- the run
def run_stage(stage: Stage) -> dict:
    """Run (or plan) ``stage``; returns the last epoch's stats (or the plan)."""
    run = stage.run
    out = Path(run.output_dir)
    if run.dry_run:
        plan = make_plan(stage, planned_world_size(run))
        if int(os.environ.get("RANK", "0")) == 0:
            write_json_atomic(out / "plan.json", plan)
            print(plan_summary(plan) + f"\nwrote {out / 'plan.json'} (dry run: nothing trained)")
        return plan
    info = init_distributed_mode(run.device)
    lock = OutputDirLock(out).acquire() if info.rank == 0 else None
    try:
        stats = _train(stage, info, out)
    finally:
        if lock is not None:
            lock.release()
    destroy_distributed()  # not after an error: its barrier would wait for ranks that are still training
    return stats


def _train(stage: Stage, info: DistInfo, out: Path) -> dict:
    run, optim = stage.run, stage.optim
    seed_everything(run.seed)
    # The data first: a label width that does not match --nb_classes or an empty split is refused before
    # anything is written to output_dir.
    train_set, val_set = stage.train_set(), stage.val_set()
    fp = fingerprint(stage, info.world_size)
    if info.rank == 0:
        check_run_record(out, fp, run.resume)
        write_run_record(out, fp, stage)
    barrier()
    amp = Amp(info.device, run.amp)
    batch = batch_for(stage, len(train_set), info.world_size)
    niter = iters_per_epoch(
        len(train_set), info.world_size, batch, optim.update_freq, run.max_steps_per_epoch
    )
    ctx = Context(info=info, amp=amp, run=run, batch_size=batch)
    model = stage.build_model(load_weights=True).to(info.device)
    check_data_fits(stage, model, train_set, val_set)
    model_config = asdict(model.config)
    optimizer = create_optimizer(model, optim)
    lr_values = lr_schedule(optim, info.world_size, niter)
    start_epoch, ckpt = 0, None
    if run.resume or run.auto_resume:
        start_epoch, ckpt = auto_resume(out, model, optimizer, amp.scaler, resume=run.resume or None)
        if ckpt is not None and not run.resume and ckpt.get("fingerprint", digest(fp)) != digest(fp):
            raise StaleOutputError(
                f"the newest checkpoint in {out} was made by another run (fingerprint differs)"
            )
    best = float(ckpt.get("best_value", -math.inf)) if ckpt else -math.inf
    if info.rank == 0:
        trim_log(out / "log.txt", start_epoch)
    module, train_set, val_set = stage.prepare(model, ctx, train_set, val_set)
    train_loader = ctx.loader(train_set, train=True)
    val_loader = ctx.loader(val_set, train=False) if val_set is not None else None
    ddp = wrap_ddp(module, info)
    if run.compile:
        # DDP first, then compile (torch's recommended order); checkpoints save `model`, never the wrapper.
        ddp = stage.compile(ddp)
    n_params = sum(p.numel() for p in model.parameters())
    print0(
        f"{stage.name}: {n_params / 1e6:.2f} M parameters on {info.device} x {info.world_size} process(es), "
        f"precision {amp.name}; {len(train_set)} training samples, batch {batch} per process"
        f"{f' (requested {optim.batch_size})' if batch != optim.batch_size else ''} x update_freq "
        f"{optim.update_freq} x world {info.world_size} = effective batch {batch * optim.update_freq * info.world_size}"
        f"; {niter} optimizer steps per epoch; peak lr {peak_lr(optim, info.world_size):.3e}"
    )
    done = start_epoch >= optim.epochs
    if done:
        print0(
            f"{out}: all {optim.epochs} epochs are already done with the same settings and inputs; nothing "
            "to train (another --output_dir, or delete this one, to train again)"
        )
    save_args(run.settings, out, model_config)
    tb = TensorboardLogger(run.log_dir)
    stats: dict = {}
    t0 = time.time()
    for epoch in range(start_epoch, optim.epochs):
        reseed_epoch(run.seed, epoch, info.rank)
        train_loader.sampler.set_epoch(epoch)
        stage.set_train_mode(ddp)
        train_stats = train_one_epoch(
            ddp, train_loader, optimizer, amp, epoch, stage.step, lr_values, niter, optim.update_freq,
            optim.clip_grad, tb, f"Epoch [{epoch}]",
        )  # fmt: skip
        train_stats.update(stage.epoch_stats(model))
        stats = {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()}}
        improved = False
        if val_loader is not None and stage.validate_now(epoch):
            val_stats = stage.evaluate(ddp, val_loader, ctx)
            stats.update({f"val_{k}": v for k, v in val_stats.items()})
            tb.update(head="val", step=(epoch + 1) * niter, **val_stats)
            if stage.best_metric is not None:
                value = float(val_stats[stage.best_metric])
                improved = not math.isnan(value) and value > best
                best = value if improved else best
        if stage.best_metric is not None:
            stats[stage.best_key] = best
        if run.save_ckpt:
            state = build_state(model, epoch, run.settings, optimizer, amp.scaler, model_config,
                                fingerprint=digest(fp), best_value=best, recipe=run.recipe)  # fmt: skip
            last = epoch == optim.epochs - 1
            no_best_ever = stage.best_metric is not None and math.isinf(best) and last
            if no_best_ever:
                print0(
                    f"WARNING: validation {stage.best_metric} was undefined in every epoch (the val split has no "
                    "class with both positive and negative records); checkpoint-best.pth = last epoch"
                )
            if improved or no_best_ever:
                save_checkpoint(out, "checkpoint-best.pth", state)
            save_epoch_checkpoints(out, epoch, optim.epochs, run.save_ckpt_freq, state)
        if info.rank == 0:
            append_jsonl(out / "log.txt", stats)
        tb.flush()
        print0(stage.summary(stats))
    if not done:
        print0(f"training time {time.time() - t0:.1f} s")
    tb.close()
    if info.rank == 0 and (out / "log.txt").is_file():
        _plot_curves(out)
    return stats


def check_data_fits(stage: Stage, model: nn.Module, *datasets) -> None:
    """Sentence shapes and lead / second ids against the model's config (datasets.ecg_dataset.check_fits_model):
    a mismatch is refused naming the file before the first step."""
    name = f"--model {stage.run.settings.get('model')}" if stage.run.settings.get("model") else "the model"
    for ds in datasets:
        if ds is not None:
            check_fits_model(ds, model.config, name)


def trim_log(path: Path, start_epoch: int) -> None:
    """Keep only the log lines of epochs before ``start_epoch``: a fresh start drops an earlier attempt's lines,
    a resume drops the lines of epochs that are about to be trained again."""
    if not path.is_file():
        return
    kept = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line) if line.strip() else None
        except ValueError:  # a line cut short by a killed run: its epoch is trained again
            print0(
                f"WARNING: {path} line {n} is damaged (a killed run?); dropped, its epoch is trained again"
            )
            continue
        if record is not None and int(record.get("epoch", -1)) < start_epoch:
            kept.append(record)
    path.unlink()
    for record in kept:
        append_jsonl(path, record)


def _plot_curves(out: Path) -> None:
    """Training curves next to log.txt (reporting.plots), never fatal to a finished run."""
    try:
        from reporting.plots import plot_training_curves
    except ImportError:
        return
    try:
        plot_training_curves(read_jsonl(out / "log.txt"), out / "training_curves.png")
    except Exception as exc:  # noqa: BLE001 - a plot must not turn a finished training into a failure
        print0(f"WARNING: could not plot training curves for {out}: {exc}")


def test_stage(stage: Stage, test_fn) -> dict:
    """``--eval``: ``test_fn(ctx)`` on the trained run in ``output_dir``, refused when the folder was trained
    with other settings or inputs (its result would be reported under the wrong settings). With --dry_run:
    :func:`plan_test` only."""
    run = stage.run
    out = Path(run.output_dir)
    best = out / "checkpoint-best.pth"
    if run.dry_run:
        return plan_test(stage, best)
    if not best.is_file():
        raise FileNotFoundError(f"--eval needs {best}: train first with the same --output_dir")
    info = init_distributed_mode(run.device)
    lock = OutputDirLock(out).acquire() if info.rank == 0 else None
    try:
        record = read_stamp(out / RUN_RECORD)
        if record is None:
            raise StaleOutputError(
                f"{out / RUN_RECORD} is missing: the settings that trained {best} are unknown"
            )
        # Only what defines the tested model and its reported row is compared: the original README's --eval command
        # leaves out the training-only flags (--finetune, --lr, --epochs, ...).
        keys = set(stage.test_keys)
        old = {k: v for k, v in record["fingerprint"]["settings"].items() if k in keys}
        new = {k: v for k, v in fingerprint(stage, info.world_size)["settings"].items() if k in keys}
        changes = diff_settings({f"--{k}": v for k, v in old.items()}, {f"--{k}": v for k, v in new.items()})
        data_now = stage.inputs_identity().get("dataset")
        if data_now != record["fingerprint"]["inputs"].get("dataset"):
            changes.append(
                f"input dataset: the files in {stage.run.settings.get('dataset_dir')} changed since training"
            )
        if changes:
            raise StaleOutputError(
                f"--eval: {out} was trained with other settings or inputs than this command gives:\n  "
                + "\n  ".join(changes)
                + "\nGive the training command's settings (or evaluate another --output_dir)."
            )
        # The model is rebuilt with the recipe it was trained with (e.g. --padding_attention_mask), whatever
        # this command says: the row then reports what was really tested.
        stage.run = replace(run, recipe=record.get("recipe", run.recipe))
        ctx = Context(
            info=info, amp=Amp(info.device, run.amp), run=stage.run, batch_size=stage.optim.batch_size
        )
        result = test_fn(ctx, record)
    finally:
        if lock is not None:
            lock.release()
    destroy_distributed()
    return result


def plan_test(stage: Stage, best: Path) -> dict:
    """``--eval --dry_run``: what the evaluation would read and whether it would start, written to
    ``<output_dir>/plan_eval.json`` (the training run's plan.json is left alone); nothing is evaluated."""
    run = stage.run
    out = Path(run.output_dir)
    record = read_stamp(out / RUN_RECORD)
    problems = [] if best.is_file() else [f"{best} is missing: train first with the same --output_dir"]
    if best.is_file() and record is None:
        problems.append(f"{out / RUN_RECORD} is missing: the settings that trained {best} are unknown")
    plan = {
        "stage": stage.name, "eval": True, "world_size": planned_world_size(run), "checkpoint": str(best),
        "batch_size": stage.optim.batch_size, "recipe": record.get("recipe", run.recipe) if record else run.recipe,
        "ready": not problems, "problems": problems, **stage.test_plan_extra(),
    }  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:
        write_json_atomic(out / "plan_eval.json", plan)
        state = "ready" if plan["ready"] else "NOT ready: " + "; ".join(problems)
        print(f"plan of --eval ({stage.name}): {plan['world_size']} process(es) x batch {plan['batch_size']}; "
              f"{state}\nwrote {out / 'plan_eval.json'} (dry run: nothing evaluated)")  # fmt: skip
    return plan


def dropout_active(model: nn.Module) -> list[str]:
    """Names of the Dropout modules with p > 0 that are in training mode."""
    return sorted(n for n, m in model.named_modules() if isinstance(m, nn.Dropout) and m.p > 0 and m.training)
