"""engine.checkpoint (save / resume): atomic writes, auto-resume picks the newest, RNG round trip,
prefix stripping, strict and finite resume; utils.logging helpers."""

import random

import numpy as np
import pytest
import torch

from engine import checkpoint as C
from modeling.checkpoint import strip_prefixes
from utils.integrity import NonFiniteError
from utils.logging import MetricLogger, SmoothedValue, append_jsonl, read_jsonl, save_args


def _state(model, epoch, **extra):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return C.build_state(model, epoch, args={"lr": 1e-3, "path": C.Path("x")}, optimizer=opt, **extra)


def test_atomic_write_crash_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    C.save_checkpoint(tmp_path, "checkpoint.pth", _state(model, 4))
    real_save = torch.save

    def crash_midway(obj, fh, *a, **k):
        real_save(obj, fh, *a, **k)
        fh.truncate(100)  # a half-written file ...
        raise KeyboardInterrupt("killed while writing")  # ... and the process dies

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint(tmp_path, "checkpoint.pth", _state(torch.nn.Linear(3, 2), 5))
    monkeypatch.setattr(torch, "save", real_save)
    ckpt = C.read_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["epoch"] == 4
    assert torch.equal(ckpt["model"]["weight"], model.weight.detach())
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]  # no temp file left


def test_checkpoint_loads_weights_only_and_has_all_fields(tmp_path):
    model = torch.nn.Linear(3, 2)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    state = C.build_state(model, 1, args={"a": 1}, optimizer=torch.optim.SGD(model.parameters(), 0.1),
                          scaler=scaler, model_config={"depth": 2})  # fmt: skip
    C.save_checkpoint(tmp_path, "checkpoint.pth", state)
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert set(ckpt) >= {"model", "optimizer", "scaler", "epoch", "args", "model_config", "rng"}


def test_auto_resume_picks_newest_epoch(tmp_path):
    model = torch.nn.Linear(3, 2)
    assert C.find_latest_checkpoint(tmp_path) is None
    assert C.auto_resume(tmp_path, model)[0] == 0
    for epoch, name in [(9, "checkpoint-10.pth"), (19, "checkpoint-20.pth"), (4, "checkpoint-5.pth")]:
        C.save_checkpoint(tmp_path, name, _state(model, epoch))
    C.save_checkpoint(tmp_path, "checkpoint-best.pth", _state(model, 50))  # never a resume point
    assert C.find_latest_checkpoint(tmp_path).name == "checkpoint-20.pth"
    C.save_checkpoint(tmp_path, "checkpoint.pth", _state(model, 23))
    assert C.find_latest_checkpoint(tmp_path).name == "checkpoint.pth"
    (tmp_path / "checkpoint-99.pth").write_bytes(b"garbage")  # unreadable: skipped with a warning
    with pytest.warns(UserWarning, match="unreadable"):
        assert C.find_latest_checkpoint(tmp_path).name == "checkpoint.pth"
    start, ckpt = C.auto_resume(tmp_path / "nowhere", model, resume=str(tmp_path / "checkpoint-10.pth"))
    assert start == 10 and ckpt["epoch"] == 9


def test_resume_restores_model_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    random.seed(1)
    np.random.seed(2)
    C.save_checkpoint(tmp_path, "checkpoint.pth", C.build_state(model, 2, optimizer=opt))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    start, _ = C.auto_resume(tmp_path, model2, opt2)
    assert start == 3
    assert torch.equal(model2.weight, model.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_resume_from_another_model_fails_loudly(tmp_path):
    C.save_checkpoint(tmp_path, "checkpoint.pth", C.build_state(torch.nn.Linear(3, 2), 0))
    with pytest.raises(
        ValueError, match=r"(?s)checkpoint.pth.*wrong size.*weight: .* \(2, 3\) vs model \(2, 4\)"
    ):
        C.auto_resume(tmp_path, torch.nn.Linear(4, 2))
    bad = torch.nn.Linear(3, 2)
    with torch.no_grad():
        bad.bias[1] = float("nan")
    C.save_checkpoint(tmp_path, "checkpoint.pth", C.build_state(bad, 1))
    with pytest.raises(NonFiniteError, match=r"checkpoint .*checkpoint.pth: tensor bias"):
        C.auto_resume(tmp_path, torch.nn.Linear(3, 2))


def test_strip_prefixes():
    sd = {"module.a.weight": 1, "_orig_mod.b": 2, "module._orig_mod.c": 3, "d": 4, "_orig_mod.module.e": 5,
          "blocks.module.f": 6}  # fmt: skip
    assert strip_prefixes(sd) == {"a.weight": 1, "b": 2, "c": 3, "d": 4, "e": 5, "blocks.module.f": 6}


def test_logging_helpers(tmp_path):
    v = SmoothedValue(window_size=3)
    for x in [1, 2, 3, 10]:
        v.update(x)
    assert v.median == 3 and v.global_avg == pytest.approx(4.0) and v.max == 10
    ml = MetricLogger()
    seen = list(ml.log_every(range(5), header="test"))
    assert seen == list(range(5))
    ml.update(loss=torch.tensor(2.0), lr=0.1)
    assert ml.global_averages() == {"loss": 2.0, "lr": 0.1}
    append_jsonl(tmp_path / "log.txt", {"epoch": 0, "loss": float("nan")})
    append_jsonl(tmp_path / "log.txt", {"epoch": 1, "loss": 0.5})
    assert read_jsonl(tmp_path / "log.txt") == [{"epoch": 0, "loss": None}, {"epoch": 1, "loss": 0.5}]
    import json

    save_args({"lr": 1e-3, "out": tmp_path}, tmp_path, {"depth": 2})
    payload = json.loads((tmp_path / "args.json").read_text())
    assert payload["args"]["out"] == str(tmp_path) and payload["model_config"] == {"depth": 2}
