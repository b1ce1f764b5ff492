"""What a run is, before and around its training: plan, output-folder lock, fingerprint, run record.

* ``--dry_run``: :func:`make_plan` resolves everything the run would do (processes, batch after any
  adjustment, iterations, per-iteration lr and weight decay, parameter groups, the task's extras such as the
  training rows and the active dropout modules) from the same functions the run uses; :func:`write_plan`
  writes ``<output_dir>/plan.json`` and prints a summary. ``--eval --dry_run``: :func:`plan_eval`.
* :func:`owned` - rank 0 holds the exclusive lock on ``output_dir`` (utils.integrity.OutputDirLock).
* :class:`RunRecord` - ``output_dir/run.json``: the run's fingerprint (every setting that defines the result
  + the identity of the inputs), provenance, and its completion record (the run is a utils.artifacts.Step).
  Its checks decide whether a folder may be continued, resumed from, or evaluated (docs/robustness.md
  "Training stages").
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from engine.checkpoint import epoch_of, find_latest_checkpoint
from engine.config import HARMLESS_SETTINGS, OptimConfig, RunConfig
from engine.task import Task
from modeling.accel import mask_source
from sentences.loader import fit_batch_size, iters_per_epoch
from utils.artifacts import RUNNING, IncompleteInputError, Step, record_state, require_complete
from utils.dist import print0
from utils.integrity import (
    OutputDirLock,
    StaleOutputError,
    diff_settings,
    digest,
    provenance,
    read_stamp,
    write_json_atomic,
)
from utils.optim import lr_schedule, param_groups_layer_decay, peak_lr

RUN_RECORD = "run.json"
BEST = "checkpoint-best.pth"


# ------------------------------------------------------------------------------------------- the plan
def planned_world_size(run: RunConfig) -> int:
    """Under torchrun its WORLD_SIZE; otherwise --world_size (the original scripts' commands pass 8)."""
    if "TORCHELASTIC_RUN_ID" in os.environ and os.environ.get("WORLD_SIZE"):
        return int(os.environ["WORLD_SIZE"])
    return run.planned_world_size


def batch_for(task: Task, optim: OptimConfig, world_size: int) -> int:
    if task.adjust_batch:
        return fit_batch_size(optim.batch_size, len(task.train_set) // world_size)
    return optim.batch_size


def make_plan(task: Task, run: RunConfig, optim: OptimConfig, world_size: int) -> dict:
    """Everything the run would do, from the same functions the run uses."""
    n_train = len(task.train_set)
    batch = batch_for(task, optim, world_size)
    niter = iters_per_epoch(n_train, world_size, batch, optim.update_freq, run.max_steps_per_epoch)
    groups = param_groups_layer_decay(task.model, optim.weight_decay, optim.layer_decay, optim.no_decay_embeddings)
    lr = lr_schedule(optim, world_size, niter)
    return {
        "stage": task.name, "world_size": world_size, "batch_size_requested": optim.batch_size,
        "batch_size": batch, "update_freq": optim.update_freq, "effective_batch": batch * optim.update_freq * world_size,
        "n_train": n_train, "iters_per_epoch": niter, "epochs": optim.epochs,
        "peak_lr": peak_lr(optim, world_size), "min_lr": optim.min_lr, "warmup_epochs": optim.warmup_epochs,
        "lr": lr.tolist(), "weight_decay": [optim.weight_decay] * len(lr),
        "param_groups": {n: {"weight_decay": g["weight_decay"], "lr_scale": g["lr_scale"]}
                         for g in groups for n in g["param_names"]},
        "recipe": run.recipe, **task.plan,
    }  # fmt: skip


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


def write_plan(out: Path, plan: dict, name: str, summary: str, what: str) -> None:
    """``out/name`` (rank 0) and the summary on stdout."""
    if int(os.environ.get("RANK", "0")) == 0:
        write_json_atomic(out / name, plan)
        print(f"{summary}\nwrote {out / name} (dry run: nothing {what})")


def plan_eval(name: str, run: RunConfig, batch_size: int, extra: dict) -> dict:
    """``--eval --dry_run``: what the evaluation would read and whether it would start, written to
    ``<output_dir>/plan_eval.json`` (the training run's plan.json is left alone); nothing is evaluated."""
    out = Path(run.output_dir)
    best = out / "checkpoint-best.pth"
    record = RunRecord(out).read()
    problems = [] if best.is_file() else [f"{best} is missing: train first with the same --output_dir"]
    if best.is_file() and record is None:
        problems.append(f"{out / RUN_RECORD} is missing: the settings that trained {best} are unknown")
    elif best.is_file():
        problems += RunRecord(out).unfinished(record)
    plan = {
        "stage": name, "eval": True, "world_size": planned_world_size(run), "checkpoint": str(best),
        "batch_size": batch_size, "recipe": record.get("recipe", run.recipe) if record else run.recipe,
        "ready": not problems, "problems": problems, **extra,
    }  # fmt: skip
    state = "ready" if plan["ready"] else "NOT ready: " + "; ".join(problems)
    summary = f"plan of --eval ({name}): {plan['world_size']} process(es) x batch {plan['batch_size']}; {state}"
    write_plan(out, plan, "plan_eval.json", summary, "evaluated")
    return plan


# ------------------------------------------------------------------------------------------- the lock
@contextlib.contextmanager
def owned(out: Path, rank: int):
    """Rank 0 holds the exclusive lock on ``out`` for the block (another live run there is refused)."""
    lock = OutputDirLock(out).acquire() if rank == 0 else None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


# ------------------------------------------------------------------------------------ the run record
def fingerprint(run: RunConfig, inputs: dict, world_size: int) -> dict:
    """Settings that define the result + the identity of the inputs."""
    settings = {k: v for k, v in run.settings.items() if k not in HARMLESS_SETTINGS}
    settings["processes"] = world_size
    return {"settings": settings, "inputs": inputs}


class RunRecord:
    """``out/run.json``: what made the run in ``out``, and the checks that compare a command with it.

    The run is a step of the one artifact rule (utils.artifacts.Step, declared by :meth:`step`): run.json
    carries its completion record under ``stamp`` (``running`` from the start, ``complete`` with the identity
    of ``checkpoint-best.pth`` after the last epoch); checkpoints are kept across reruns (resume). Beside it:
    the fingerprint, the recipe, every resolved flag and provenance."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / RUN_RECORD

    def read(self) -> dict | None:
        return read_stamp(self.path)

    def step(self, fp: dict, stage: str) -> Step:
        return Step(stage, self.out, RUN_RECORD, {"run": digest(fp)}, outputs=(BEST,), nest="stamp",
                    keep_outputs=True)  # fmt: skip

    def claim(self, fp: dict, stage: str, run: RunConfig) -> None:
        """Training (rank 0): refuse a folder made by a different run, then record this one as running."""
        self._admit_training(fp, run.resume)
        self.step(fp, stage).begin(extra=self._about(fp, stage, run))

    def finish(self, fp: dict, stage: str, run: RunConfig) -> None:
        """Every epoch is trained: the record says complete (rank 0); ``--eval`` may now report the run."""
        self.step(fp, stage).complete(extra=self._about(fp, stage, run))

    @staticmethod
    def _about(fp: dict, stage: str, run: RunConfig) -> dict:
        return {"stage": stage, "fingerprint": fp, "digest": digest(fp), "recipe": run.recipe, "args": run.settings,
                "dropout_masks": mask_source(),  # modeling/accel: same distribution, not the same masks
                **provenance()}  # fmt: skip

    def check_resumed(self, ckpt: dict | None, fp: dict, explicit: bool) -> None:
        """The newest checkpoint found in the folder must come from this run (an explicit --resume is kept)."""
        if ckpt is not None and not explicit and ckpt.get("fingerprint", digest(fp)) != digest(fp):
            raise StaleOutputError(
                f"the newest checkpoint in {self.out} was made by another run (fingerprint differs)"
            )

    def _admit_training(self, fp: dict, explicit_resume: str) -> None:
        out, record = self.out, self.read()
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
        changes = [_name_changed_files(c, record["fingerprint"]["inputs"], fp["inputs"])
                   for c in diff_settings(_flat(record["fingerprint"]), _flat(fp))]  # fmt: skip
        if changes and has_ckpt:
            if explicit_resume:
                print0("WARNING: --resume given: continuing although the settings changed:\n  " + "\n  ".join(changes))
                return
            raise StaleOutputError(
                f"{out} holds a run made with other settings or inputs:\n  " + "\n  ".join(changes) + f"\n{how}"
            )

    def admit_eval(self, keys: tuple[str, ...], fp: dict, dataset_dir: str) -> dict:
        """``--eval``: the record of a finished run trained with this command's settings (``keys``: those
        that define the tested model and its reported row) on the same data; else refused."""
        out, record = self.out, self.read()
        best = out / "checkpoint-best.pth"
        if record is None:
            raise StaleOutputError(f"{self.path} is missing: the settings that trained {best} are unknown")
        # The original scripts' --eval command leaves out the training-only flags (--finetune, --lr, --epochs, ...).
        old = {f"--{k}": v for k, v in record["fingerprint"]["settings"].items() if k in keys}
        new = {f"--{k}": v for k, v in fp["settings"].items() if k in keys}
        changes = diff_settings(old, new)
        if fp["inputs"].get("dataset") != record["fingerprint"]["inputs"].get("dataset"):
            changes.append(f"input dataset: the files in {dataset_dir} changed since training")
        if changes:
            raise StaleOutputError(
                f"--eval: {out} was trained with other settings or inputs than this command gives:\n  "
                + "\n  ".join(changes) + "\nGive the training command's settings (or evaluate another --output_dir)."
            )  # fmt: skip
        unfinished = self.unfinished(record)
        if unfinished:
            raise StaleOutputError(f"--eval: {unfinished[0]}")
        return record

    def unfinished(self, record: dict) -> list[str]:
        """Why the run of ``record`` is not a finished run whose best checkpoint is as it completed it ([] =
        it is): utils.artifacts.require_complete on run.json's record. A run.json written before the record
        existed is judged by its newest checkpoint's epoch."""
        epochs = int(record["fingerprint"]["settings"].get("epochs", 0))
        latest = find_latest_checkpoint(self.out)
        done = epoch_of(latest) + 1 if latest is not None else None
        if "stamp" in record:
            try:
                require_complete(self.out, [RUN_RECORD], [BEST], "--eval", nests={RUN_RECORD: "stamp"})
                return []
            except IncompleteInputError as exc:
                if record_state(record["stamp"]) != RUNNING:
                    return [str(exc)]  # e.g. checkpoint-best.pth rewritten after the run completed
        elif done is None or done >= epochs:
            return []
        trained = f"its newest checkpoint holds epoch {done} of {epochs}" if done else "no epoch is finished"
        return [
            f"the training run in {self.out} did not finish ({trained}; killed, or still running): its "
            f"{BEST} is not the run's result. Rerun the training command to finish it (it resumes where it "
            "stopped), then --eval."
        ]


def _flat(fp: dict) -> dict:
    return {**{f"--{k}": v for k, v in fp["settings"].items()}, **{f"input {k}": v for k, v in fp["inputs"].items()}}


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
