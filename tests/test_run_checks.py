"""Run-level checks of engine/plan.py: ``--eval`` reports only a finished training run whose best checkpoint is
the one it completed with (a run killed after a few epochs is refused, also by ``--eval --dry_run``, until the
training command has finished it; a best checkpoint replaced afterwards is refused), run.json written before
its completion record existed is judged by its newest checkpoint, and a training checkpoint carries the header
that ``modeling.load_model`` reads."""

from __future__ import annotations

import importlib
import json
import os

import pytest
import torch

from modeling import load_model
from tests._train_data import make_downstream
from utils.integrity import StaleOutputError

COMMON = ["--model", "HeartLang_finetune_tiny", "--trainable", "linear", "--nb_classes", "3", "--is_binary",
          "--batch_size", "4", "--num_workers", "0", "--warmup_epochs", "1"]  # fmt: skip


def _main(argv: list) -> dict:
    os.environ["HEARTLANG_NO_PROGRESS"] = "1"
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        os.environ.pop(var, None)
    module = importlib.import_module("run_class_finetuning")
    return module.main(module.get_args_parser().parse_args([str(a) for a in argv]))


@pytest.fixture
def killed(tmp_path, monkeypatch):
    """A 3-epoch linear probe that dies in its second epoch (after epoch 0's checkpoints were written)."""
    import engine.run

    data = make_downstream(tmp_path)
    argv = [*COMMON, "--dataset_dir", data, "--epochs", "3", "--output_dir", tmp_path / "ft"]
    real = engine.run.train_one_epoch

    def dies_in_epoch_1(*args, **kwargs):
        if args[4] == 1:  # the epoch argument
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.run, "train_one_epoch", dies_in_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        _main(argv)
    monkeypatch.setattr(engine.run, "train_one_epoch", real)
    return argv, tmp_path / "ft", tmp_path / "results.csv"


def test_eval_of_a_killed_run_is_refused_until_the_run_is_finished(killed):
    argv, out, csv_path = killed
    assert (out / "checkpoint-best.pth").is_file()
    assert json.loads((out / "run.json").read_text())["stamp"]["state"] == "running"
    with pytest.raises(StaleOutputError, match=r"did not finish \(its newest checkpoint holds epoch 1 of 3"):
        _main([*argv, "--eval", "--results_csv", csv_path])
    assert not csv_path.exists()
    plan = _main([*argv, "--eval", "--dry_run", "--results_csv", csv_path])
    assert not plan["ready"] and "did not finish" in plan["problems"][0]
    _main(argv)  # the training command resumes and finishes the run
    assert json.loads((out / "run.json").read_text())["stamp"]["state"] == "complete"
    assert [json.loads(line)["epoch"] for line in (out / "log.txt").read_text().splitlines()] == [0, 1, 2]
    result = _main([*argv, "--eval", "--results_csv", csv_path])
    assert 0 <= result["macro_auc"] <= 1 and csv_path.is_file()


def test_run_record_without_a_completion_record_is_judged_by_its_checkpoints(killed):
    """run.json of an earlier version has no completion record: a run whose newest checkpoint is its last
    epoch is evaluated, one that stopped earlier is refused."""
    argv, out, csv_path = killed
    record = json.loads((out / "run.json").read_text())
    del record["stamp"]
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(StaleOutputError, match="did not finish"):
        _main([*argv, "--eval", "--results_csv", csv_path])
    _main(argv)
    record = json.loads((out / "run.json").read_text())
    del record["stamp"]
    (out / "run.json").write_text(json.dumps(record))
    assert 0 <= _main([*argv, "--eval", "--results_csv", csv_path])["macro_auc"] <= 1


def test_best_checkpoint_replaced_after_the_run_completed_is_refused(killed):
    argv, out, csv_path = killed
    _main(argv)
    (out / "checkpoint-best.pth").write_bytes((out / "checkpoint.pth").read_bytes())  # the last epoch, not the best
    # The two checkpoints may or may not differ in size: the rule names the file either way (size, else mtime).
    rewritten = r"checkpoint-best\.pth(: \d+ bytes, \d+ when it was completed \(truncated or rewritten\)| was rewritten after)"
    with pytest.raises(StaleOutputError, match=rewritten):
        _main([*argv, "--eval", "--results_csv", csv_path])
    assert not csv_path.exists()


def test_training_checkpoint_carries_the_header_load_model_reads(killed):
    argv, out, _ = killed
    state = torch.load(out / "checkpoint.pth", weights_only=True, map_location="cpu")
    header = state["header"]
    assert header["model_name"] == "HeartLang_finetune_tiny" and header["model_config"]["num_classes"] == 3
    assert header["recipe"] == json.loads((out / "run.json").read_text())["recipe"]
    model = load_model(out / "checkpoint.pth")
    assert model.checkpoint_info.name == "HeartLang_finetune_tiny"
    assert dict(vars(model.config)) == header["model_config"]
