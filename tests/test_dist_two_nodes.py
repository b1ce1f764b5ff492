"""The multi-node launch (docs/distributed.md) rehearsed as two nodes on this machine: two torchrun launchers,
``--nnodes 2 --nproc_per_node 1``, c10d rendezvous on localhost, gloo on CPU; tiny models, 2 epochs.

* Same losses as 1 node x 2 processes with the same global batch, for VQ-HBR, pre-training and the linear
  probe. Tolerance: every logged value within 1e-6 relative (observed: bit-identical; both launches have
  ranks 0 and 1 on the same machine, and gloo sums the two ranks in the same order).
* Only global rank 0 writes (checkpoints, logs, lock, run.json, cached targets, results): each worker runs
  under tests/_write_audit.py, which records every write made from Python; the rank-1 worker, which is
  LOCAL_RANK 0 of its node, must have written nothing into the test's folders.
* The output-dir lock and the fingerprint act as on one node; a dead node makes the other exit within
  seconds, a hung one after the collective timeout (HEARTLANG_DIST_TIMEOUT); relaunching both resumes
  from the last checkpoint.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest

from tests._train_data import make_downstream, make_pretrain
from tests._two_nodes import kill_node, run_two_nodes, start_two_nodes, wait_nodes
from tests.conftest import run_torchrun
from utils.integrity import OutputDirLock

pytestmark = [pytest.mark.dist, pytest.mark.slow]

VQ, PT, FT = "run_vqhbr_training.py", "run_heartlang_pretraining.py", "run_class_finetuning.py"
COMMON = ["--batch_size", "4", "--num_workers", "0", "--warmup_epochs", "1", "--epochs", "2"]
FT_EPOCHS = 6  # the probe's epochs take a fraction of a second: enough of them to kill one mid-run
REL = 1e-6  # the stated tolerance of "same losses"


def _argv(stage: str, data, tokenizer: Path | None = None, finetune: Path | None = None) -> list:
    if stage == VQ:
        return [VQ, "--model", "vqhbr_tiny", "--codebook_n_emd", "64", "--codebook_emd_dim", "16",
                "--dataset_dir", data.pre, *COMMON]  # fmt: skip
    if stage == PT:
        return [PT, "--model", "HeartLang_tiny", "--tokenizer_model", "vqhbr_tiny", "--tokenizer_weight", tokenizer,
                "--dataset_dir", data.pre, "--val_freq", "1", *COMMON]  # fmt: skip
    return [FT, "--model", "HeartLang_finetune_tiny", "--trainable", "linear", "--nb_classes", "3", "--is_binary",
            "--dataset_dir", data.down, "--finetune", finetune, *COMMON, "--epochs", FT_EPOCHS]  # fmt: skip


def _audited(argv: list, audit: Path) -> list:
    audit.mkdir(parents=True, exist_ok=True)
    return ["tests/_write_audit.py", audit, *argv]


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.txt").read_text().splitlines()]


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) and [set(x) for x in a] == [set(y) for y in b], (a, b)
    for x, y in zip(a, b):
        for k, v in x.items():
            assert y[k] == (pytest.approx(v, rel=REL, abs=1e-12) if isinstance(v, float) else v), (k, x, y)


class Data:
    def __init__(self, root: Path):
        self.root = root
        self.pre, self.down = make_pretrain(root / "pre"), make_downstream(root / "down")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    return Data(tmp_path_factory.mktemp("two_nodes"))


@pytest.fixture(scope="module")
def one_node(data):
    """The reference: each stage under ``torchrun --standalone --nproc_per_node 2`` (1 node x 2 processes)."""
    out = data.root / "one_node"
    for stage, name in ((VQ, "vq"), (PT, "pt"), (FT, "ft")):
        argv = _argv(stage, data, out / "vq" / "checkpoint.pth", out / "pt" / "checkpoint.pth")
        proc = run_torchrun([str(a) for a in (*argv, "--output_dir", out / name)], nproc=2)
        assert proc.returncode == 0, f"{stage}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def two_nodes(data, one_node):
    """The same commands, each node one process (the tokenizer and the pre-trained checkpoint are the
    reference run's, so every stage starts from the same inputs), then the probe's ``--eval``; every worker
    audited."""
    out = data.root / "two_nodes"
    consoles = {}
    for stage, name in ((VQ, "vq"), (PT, "pt"), (FT, "ft"), (FT, "eval")):
        argv = _argv(stage, data, one_node / "vq" / "checkpoint.pth", one_node / "pt" / "checkpoint.pth")
        argv += ["--output_dir", out / ("ft" if name == "eval" else name)]
        if name == "eval":
            argv += ["--eval", "--results_csv", out / "results.csv"]
        codes, text = run_two_nodes(_audited(argv, data.root / "audit" / name), data.root / "consoles" / name)
        assert codes == [0, 0], f"{name}: {codes}\n{text[-5000:]}"
        consoles[name] = text
    return out, consoles


@pytest.mark.parametrize("name", ["vq", "pt", "ft"])
def test_two_nodes_give_the_losses_of_one_node_with_two_processes(one_node, two_nodes, name):
    out, consoles = two_nodes
    assert "x 2 process(es)" in consoles[name] and "effective batch 8" in consoles[name]
    a, b = _log(one_node / name), _log(out / name)
    assert len(a) == (FT_EPOCHS if name == "ft" else 2)
    _same(a, b)
    # The fingerprint counts processes, not nodes: both folders hold the same run (either can resume the other).
    record = {f: json.loads((f / name / "run.json").read_text()) for f in (one_node, out)}
    assert record[one_node]["digest"] == record[out]["digest"]


def test_only_global_rank_0_writes(data, two_nodes):
    out, _ = two_nodes
    for name in ("vq", "pt", "ft", "eval"):
        seen = {}
        for r in (0, 1):
            rec = json.loads((data.root / "audit" / name / f"rank{r}.json").read_text())
            assert rec["rank"] == r and rec["local_rank"] == 0  # each node's only process is its local rank 0
            seen[r] = {p for _, p in rec["written"] if Path(p).is_relative_to(data.root) and "audit" not in p}
        assert seen[1] == set(), f"{name}: rank 1 (LOCAL_RANK 0 of its node) wrote {sorted(seen[1])}"
        expected = {"vq": {"checkpoint.pth", "log.txt", "run.json", ".lock"}, "pt": {"checkpoint.pth", "log.txt"},
                    "ft": {"checkpoint-best.pth", "log.txt"}, "eval": {"results.csv"}}[name]  # fmt: skip
        assert expected <= {Path(p).name for p in seen[0]}, (name, sorted(seen[0]))
    # Pre-training's cached targets went into the data folder, written by rank 0 (before the run above:
    # the reference run wrote them; the audit shows rank 1 never did).
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 1 and 0 <= float(rows[0]["macro_auc"]) <= 1


def test_busy_folder_and_changed_settings_are_refused_on_both_nodes(data, one_node, tmp_path):
    folder = tmp_path / "vq"
    shutil.copytree(one_node / "vq", folder)
    with OutputDirLock(folder):
        t0 = time.monotonic()
        codes, text = run_two_nodes([*_argv(VQ, data), "--output_dir", folder], tmp_path / "busy", timeout=120)
    assert None not in codes and all(c != 0 for c in codes), codes  # both launchers stopped, none hangs
    assert "BusyOutputDirError" in text and f"{folder} is in use by another run" in text
    assert time.monotonic() - t0 < 100
    codes, text = run_two_nodes([*_argv(VQ, data), "--output_dir", folder, "--lr", "0.01"], tmp_path / "lr")
    assert None not in codes and all(c != 0 for c in codes), codes
    assert "StaleOutputError" in text and "--lr: 5e-05 -> 0.01" in text
    assert _log(folder) == _log(one_node / "vq")  # nothing was changed


def _worker_of(node) -> tuple[int, int]:
    """(pid, RANK) of the training process a launcher started."""
    for _ in range(600):
        try:
            kids = [int(p) for p in Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()]
        except FileNotFoundError:
            kids = []
        for pid in kids:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                return pid, int(rank[0].split(b"=")[1])
        time.sleep(0.05)
    raise AssertionError(f"launcher {node.pid} started no worker")


def _wait_for_epochs(folder: Path, n: int, nodes, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / "log.txt").is_file() and len((folder / "log.txt").read_text().splitlines()) >= n:
            return
        assert all(node.poll() is None for node in nodes), "a node ended before the kill"
        time.sleep(0.05)
    raise AssertionError(f"{folder}: fewer than {n} epochs logged in {timeout} s")


def test_killed_node_stops_the_other_and_relaunch_resumes(data, one_node, tmp_path):
    """kill -9 of the node that holds rank 0 (the writer) once an epoch is logged: the other node exits within
    seconds; relaunching both resumes from checkpoint.pth (only the missing epochs are trained) and ends with
    the log of the uninterrupted 1 node x 2 processes run."""
    folder = tmp_path / "ft"
    argv = _argv(FT, data, finetune=one_node / "pt" / "checkpoint.pth")
    nodes = start_two_nodes([*argv, "--output_dir", folder], tmp_path / "first")
    try:
        ranks = {_worker_of(node)[1]: node for node in nodes}
        _wait_for_epochs(folder, 1, nodes)
        kill_node(ranks[0])
        t_kill = time.monotonic()
        code = wait_nodes([ranks[1]], timeout=60)[0]
        seconds = time.monotonic() - t_kill
    finally:
        for node in nodes:
            kill_node(node)
    log = (tmp_path / "first" / "node0.log").read_text() + (tmp_path / "first" / "node1.log").read_text()
    assert code not in (0, None), log[-3000:]
    assert seconds < 30, f"the surviving node took {seconds:.1f} s to exit"
    done = len(_log(folder))
    assert 1 <= done < FT_EPOCHS
    codes, text = run_two_nodes([*argv, "--output_dir", folder], tmp_path / "second")
    assert codes == [0, 0], text[-4000:]
    trained = [e for e in range(FT_EPOCHS) if f"epoch {e}:" in text]
    assert trained == list(range(done, FT_EPOCHS)), f"the relaunch trained epochs {trained}, {done} were done"
    _same(_log(one_node / "ft"), _log(folder))  # every epoch once, as in the uninterrupted run


def test_hung_node_stops_the_other_after_the_collective_timeout(tmp_path):
    """A node that stops answering (SIGSTOP: alive, its connections open) is noticed only by the collective
    timeout: with HEARTLANG_DIST_TIMEOUT=5 the other node's worker fails after about 5 s (its launcher then
    waits up to torch's own 60 s store timeout for the stopped launcher, which a test need not wait for)."""
    nodes = start_two_nodes(["tests/_dist_timeout_worker.py", tmp_path], tmp_path / "logs",
                            env={"HEARTLANG_DIST_TIMEOUT": "5"})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "waited.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for node in nodes:
            kill_node(node)
    text = (tmp_path / "logs" / "node0.log").read_text() + (tmp_path / "logs" / "node1.log").read_text()
    assert (tmp_path / "waited.json").is_file(), text[-3000:]
    waited = json.loads((tmp_path / "waited.json").read_text())
    assert waited["error"] is not None, waited  # the barrier failed instead of waiting forever
    assert 4.5 <= waited["seconds"] < 30, waited
    assert "collective timeout 5 s (HEARTLANG_DIST_TIMEOUT)" in text
