"""utils.dist under a real 2-process torchrun (gloo on CPU) and as a plain single process."""

import json

import pytest
import torch

from tests.conftest import run_torchrun
from utils import dist as D


def test_single_process_is_rank0_world1_without_process_group(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    info = D.init_distributed_mode(device="cpu")
    assert (info.rank, info.world_size, info.distributed) == (0, 1, False)
    assert not torch.distributed.is_initialized()
    # No collective may be called with one process: make any call explode.
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda *a, **k: pytest.fail("collective called"))
    assert D.all_reduce_mean(3.0) == 3.0
    assert D.broadcast_object({"a": 1}) == {"a": 1}
    t = torch.ones(2)
    assert D.all_reduce_sum_(t) is t
    D.barrier()
    assert D.is_main_process()


def test_world_size_without_master_addr_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        D.init_distributed_mode(device="cpu")


def test_collective_timeout_default_env_and_bad_values(monkeypatch):
    monkeypatch.delenv(D.TIMEOUT_ENV, raising=False)
    assert D.collective_timeout_s() == D.DEFAULT_TIMEOUT_S == 1800
    monkeypatch.setenv(D.TIMEOUT_ENV, "7200")
    assert D.collective_timeout_s() == 7200
    assert D.collective_timeout_s(30) == 30  # an explicit value wins
    for bad in ("soon", "0", "-5"):
        monkeypatch.setenv(D.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=D.TIMEOUT_ENV):
            D.collective_timeout_s()


def test_seed_everything_differs_per_rank():
    assert D.seed_everything(5, rank=0) == 5
    a = torch.rand(3)
    assert D.seed_everything(5, rank=1) == 6
    b = torch.rand(3)
    D.seed_everything(5, rank=0)
    assert torch.equal(a, torch.rand(3)) and not torch.equal(a, b)


@pytest.mark.dist
def test_two_process_torchrun_gloo(tmp_path, repo_root):
    proc = run_torchrun([str(repo_root / "tests" / "_dist_utils_worker.py"), str(tmp_path)], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, seen in enumerate(ranks):
        assert seen["rank"] == r and seen["local_rank"] == r
        assert seen["world_size"] == 2 and seen["distributed"] and seen["backend"] == "gloo"
        assert seen["is_main"] == (r == 0)
        assert seen["seed"] == 100 + r
        assert seen["mean"] == pytest.approx(1.5)
        assert seen["tensor_mean"] == pytest.approx([0.5] * 3)
        assert seen["synced_loss_avg"] == pytest.approx(0.5)
    assert ranks[0]["draw"] != ranks[1]["draw"]  # per-rank seeds
    for seen in ranks:
        assert seen["broadcast"] == {"from_rank": 0, "draw": ranks[0]["draw"]}
    assert proc.stdout.count("only-rank-0-prints") == 1 and "rank=0" in proc.stdout
