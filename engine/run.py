"""The one run of every training stage: ``train(cfg, build)`` runs the :class:`engine.task.Task` that
``build(cfg, env)`` declares; ``evaluate_trained(cfg, spec)`` is ``--eval`` (docs/training.md "Run lifecycle").

``train`` does, in order:

1. ``--dry_run``: the task is built for planning (architecture and data only) and engine.plan writes
   ``<output_dir>/plan.json``; nothing is trained.
2. Distributed set-up; rank 0 takes the exclusive lock on ``output_dir`` (engine.plan.owned).
3. The task is built (data, model with its initial weights, step, evaluation); the run's fingerprint is
   compared with ``output_dir/run.json`` (engine.plan.RunRecord): a folder made with other settings is refused
   with each differing setting named, unless ``--resume PATH`` asks to continue deliberately.
4. Optimizer, lr schedule; resume from the newest checkpoint of the same run; the task's data preparation
   (cached targets) and cached features.
5. The epoch loop: reseed, train (engine.loop.train_one_epoch with the task's step), the task's epoch
   statistics, validation when due (engine.task.evaluate), the best checkpoint by the task's metric,
   periodic checkpoints, ``log.txt`` (JSON lines), TensorBoard; at the end run.json's record says complete,
   and the training curves are drawn.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from engine.checkpoint import auto_resume, build_state, save_checkpoint, save_epoch_checkpoints
from engine.loop import Amp, reseed_epoch, train_one_epoch, wrap_ddp
from engine.plan import (
    RunRecord,
    batch_for,
    fingerprint,
    make_plan,
    owned,
    plan_eval,
    plan_summary,
    planned_world_size,
    write_plan,
)
from engine.task import Env, EvalSpec, StageConfig, Task, cache_features, check_data_fits, evaluate
from sentences.loader import iters_per_epoch, make_loader
from utils.dist import DistInfo, barrier, destroy_distributed, init_distributed_mode, print0, seed_everything
from utils.integrity import digest
from utils.logging import TensorboardLogger, append_jsonl, read_jsonl, save_args
from utils.optim import create_optimizer, lr_schedule, peak_lr

Build = Callable[[StageConfig, Env], Task]


def train(cfg: StageConfig, build: Build) -> dict:
    """Run (or plan) the task ``build(cfg, env)``; returns the last epoch's stats (or the plan)."""
    run, optim = cfg.run, cfg.optim
    out = Path(run.output_dir)
    if run.dry_run:
        world_size = planned_world_size(run)
        task = build(cfg, Env(world_size=world_size, plan=True))
        plan = make_plan(task, run, optim, world_size)
        write_plan(out, plan, "plan.json", plan_summary(plan), "trained")
        return plan
    info = init_distributed_mode(run.device)
    with owned(out, info.rank):
        stats = _train(cfg, build, info, out)
    destroy_distributed()  # not after an error: its barrier would wait for ranks that are still training
    return stats


@dataclass
class _Loop:
    """What the epoch loop works with once the task is set up."""

    task: Task
    module: torch.nn.Module  # task.trains, wrapped (DDP, torch.compile)
    optimizer: torch.optim.Optimizer
    amp: Amp
    train_loader: object
    val_loader: object
    lr_values: object
    niter: int
    fp: dict
    start_epoch: int
    best: float


def _train(cfg: StageConfig, build: Build, info: DistInfo, out: Path) -> dict:
    run, optim = cfg.run, cfg.optim
    seed_everything(run.seed)
    # The data first (in the builder): a label width that does not match --nb_classes or an empty split is
    # refused before anything is written to output_dir.
    task = build(cfg, Env(info.device, info.rank, info.world_size))
    check_data_fits(run, task.model, task.train_set, task.val_set)
    fp = fingerprint(run, task.inputs, info.world_size)
    record = RunRecord(out)
    if info.rank == 0:
        record.claim(fp, task.name, run)
    barrier()
    loop = _set_up(task, run, optim, info, out, fp, record)
    save_args(run.settings, out, asdict(task.model.config))
    if loop.start_epoch >= optim.epochs:
        print0(
            f"{out}: all {optim.epochs} epochs are already done with the same settings and inputs; nothing "
            "to train (another --output_dir, or delete this one, to train again)"
        )
    t0 = time.time()
    stats = _epochs(loop, run, optim, info, out)
    if loop.start_epoch < optim.epochs:
        print0(f"training time {time.time() - t0:.1f} s")
    if info.rank == 0:
        record.finish(fp, task.name, run)
        if (out / "log.txt").is_file():
            _plot_curves(out)
    return stats


def _set_up(task: Task, run, optim, info: DistInfo, out: Path, fp: dict, record: RunRecord) -> _Loop:
    """Optimizer, schedule, resume, data preparation, loaders, DDP / compile; the start-up line."""
    amp = Amp(info.device, run.amp)
    batch = batch_for(task, optim, info.world_size)
    niter = iters_per_epoch(len(task.train_set), info.world_size, batch, optim.update_freq, run.max_steps_per_epoch)
    model = task.model.to(info.device)
    optimizer = create_optimizer(model, optim)
    lr_values = lr_schedule(optim, info.world_size, niter)
    start_epoch, ckpt = 0, None
    if run.resume or run.auto_resume:
        start_epoch, ckpt = auto_resume(out, model, optimizer, amp.scaler, resume=run.resume or None)
        record.check_resumed(ckpt, fp, explicit=bool(run.resume))
    best = float(ckpt.get("best_value", -math.inf)) if ckpt else -math.inf
    if info.rank == 0:
        trim_log(out / "log.txt", start_epoch)
    if task.prepare_data is not None:
        task.prepare_data()

    def loader(dataset, train: bool):
        return make_loader(dataset, batch, info.rank, info.world_size, train, run.num_workers, run.pin_mem,
                           sampler_seed=run.seed if run.recipe.get("sampler_seed_from_seed") else 0)  # fmt: skip

    train_set, val_set = task.train_set, task.val_set
    if task.features is not None and task.features.cache:
        # The frozen part gives the same features every epoch: computed once, after resuming, from the weights
        # actually used; the module that trains then reads them.
        train_set = cache_features(task.features, loader(train_set, False), info.device, amp)
        val_set = cache_features(task.features, loader(val_set, False), info.device, amp) if val_set else None
    module = wrap_ddp(task.trains, info)
    if run.compile:
        # DDP first, then compile (torch's recommended order); checkpoints save the model, never the wrapper.
        module = torch.compile(module, backend=run.compile_backend)
    print0(
        f"{task.name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters on {info.device} x "
        f"{info.world_size} process(es), precision {amp.name}; {len(train_set)} training samples, batch {batch} "
        f"per process{f' (requested {optim.batch_size})' if batch != optim.batch_size else ''} x update_freq "
        f"{optim.update_freq} x world {info.world_size} = effective batch {batch * optim.update_freq * info.world_size}"
        f"; {niter} optimizer steps per epoch; peak lr {peak_lr(optim, info.world_size):.3e}"
    )
    val_loader = loader(val_set, False) if val_set is not None else None
    return _Loop(task, module, optimizer, amp, loader(train_set, True), val_loader, lr_values, niter, fp,
                 start_epoch, best)  # fmt: skip


def _epochs(loop: _Loop, run, optim, info: DistInfo, out: Path) -> dict:
    task, tb, stats = loop.task, TensorboardLogger(run.log_dir), {}
    for epoch in range(loop.start_epoch, optim.epochs):
        reseed_epoch(run.seed, epoch, info.rank)
        loop.train_loader.sampler.set_epoch(epoch)
        task.set_train_mode()
        train_stats = train_one_epoch(
            loop.module, loop.train_loader, loop.optimizer, loop.amp, epoch, task.step, loop.lr_values, loop.niter,
            optim.update_freq, optim.clip_grad, tb, f"Epoch [{epoch}]",
        )  # fmt: skip
        train_stats.update(task.epoch_stats() if task.epoch_stats is not None else {})
        stats = {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()}}
        improved = False
        if loop.val_loader is not None and task.validate_now(epoch, optim.epochs):
            val_stats = evaluate(task.evaluation, loop.module, loop.val_loader, loop.amp)
            stats.update({f"val_{k}": v for k, v in val_stats.items()})
            tb.update(head="val", step=(epoch + 1) * loop.niter, **val_stats)
            if task.best_metric is not None:
                value = float(val_stats[task.best_metric])
                improved = not math.isnan(value) and value > loop.best
                loop.best = value if improved else loop.best
        if task.best_metric is not None:
            stats[task.best_key] = loop.best
        if run.save_ckpt:
            _save(loop, run, optim, epoch, improved, out)
        if info.rank == 0:
            append_jsonl(out / "log.txt", stats)
        tb.flush()
        print0(task.summary(stats))
    tb.close()
    return stats


def _save(loop: _Loop, run, optim, epoch: int, improved: bool, out: Path) -> None:
    task = loop.task
    state = build_state(task.model, epoch, run.settings, loop.optimizer, loop.amp.scaler, asdict(task.model.config),
                        header=task.header, fingerprint=digest(loop.fp), best_value=loop.best,
                        recipe=run.recipe)  # fmt: skip
    no_best_ever = task.best_metric is not None and math.isinf(loop.best) and epoch == optim.epochs - 1
    if no_best_ever:
        print0(
            f"WARNING: validation {task.best_metric} was undefined in every epoch (the val split has no "
            "class with both positive and negative records); checkpoint-best.pth = last epoch"
        )
    if improved or no_best_ever:
        save_checkpoint(out, "checkpoint-best.pth", state)
    save_epoch_checkpoints(out, epoch, optim.epochs, run.save_ckpt_freq, state)


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


def evaluate_trained(cfg: StageConfig, spec: EvalSpec) -> dict:
    """``--eval``: ``spec.test`` on the finished run in ``output_dir``, refused when the folder was trained with
    other settings or inputs (its result would be reported under the wrong settings) or did not finish. With
    --dry_run: engine.plan.plan_eval only."""
    run = cfg.run
    out = Path(run.output_dir)
    best = out / "checkpoint-best.pth"
    if run.dry_run:
        return plan_eval(spec.name, run, cfg.optim.batch_size, spec.plan(cfg))
    if not best.is_file():
        raise FileNotFoundError(f"--eval needs {best}: train first with the same --output_dir")
    info = init_distributed_mode(run.device)
    with owned(out, info.rank):
        fp = fingerprint(run, spec.inputs(cfg), info.world_size)
        record = RunRecord(out).admit_eval(spec.keys, fp, run.settings.get("dataset_dir"))
        # The model is rebuilt with the recipe it was trained with (e.g. --padding_attention_mask), whatever
        # this command says: the row then reports what was really tested.
        cfg = replace(cfg, run=replace(run, recipe=record.get("recipe", run.recipe)))
        env = Env(info.device, info.rank, info.world_size)
        result = spec.test(cfg, env, Amp(info.device, run.amp), record)
    destroy_distributed()
    return result
