"""Two torchrun launchers on this machine as two nodes (``--nnodes 2 --nproc_per_node 1``, c10d rendezvous on
localhost, gloo on CPU): the multi-node launch of docs/distributed.md, rehearsed without a second machine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(extra: dict | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HEARTLANG_NO_PROGRESS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        env.pop(var, None)
    env.update(extra or {})
    return env


def node_cmd(args: list, port: int, run_id: str) -> list[str]:
    """One node's launcher: the command each node of a real cluster runs (docs/distributed.md)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--rdzv_backend", "c10d", "--rdzv_endpoint", f"localhost:{port}", "--rdzv_id", run_id,
            *map(str, args)]  # fmt: skip


def _die_with_the_test() -> None:
    """In the launcher, before exec: Linux sends it SIGTERM when the test process dies (pytest killed), and
    torchrun stops its workers on SIGTERM, so no launcher outlives an interrupted test run."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the launchers end at their own collective timeout


def start_two_nodes(args: list, logs: Path, env: dict | None = None) -> list[subprocess.Popen]:
    """Start both launchers, each in its own process group (so a test can kill a whole "node");
    their output goes to ``logs/node0.log`` and ``logs/node1.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    port, run_id = free_port(), uuid.uuid4().hex[:8]
    nodes = []
    for i in range(2):
        with open(logs / f"node{i}.log", "w") as fh:
            nodes.append(subprocess.Popen(node_cmd(args, port, run_id), cwd=REPO_ROOT, env=worker_env(env),
                                          stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=_die_with_the_test))  # fmt: skip
    return nodes


def processes(node: subprocess.Popen) -> list[int]:
    """The launcher and every process under it (torchrun starts its workers in their own process group, so
    a signal to the launcher's group does not reach them)."""
    found, todo = [], [node.pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def signal_node(node: subprocess.Popen, sig: int) -> None:
    """``sig`` to the launcher and its workers at once (SIGKILL: a node that dies; SIGSTOP: one that hangs)."""
    for pid in processes(node):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_node(node: subprocess.Popen) -> None:
    signal_node(node, signal.SIGKILL)
    node.wait()


def wait_nodes(nodes: list[subprocess.Popen], timeout: float) -> list[int | None]:
    """Return codes of both launchers; a launcher still running after ``timeout`` seconds is killed (None)."""
    deadline = time.monotonic() + timeout
    codes = []
    for node in nodes:
        try:
            codes.append(node.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            kill_node(node)
            codes.append(None)
    return codes


def run_two_nodes(args: list, logs: Path, env: dict | None = None, timeout: float = 240) -> tuple[list, str]:
    """Both launchers to the end: (return codes, both nodes' output)."""
    nodes = start_two_nodes(args, logs, env)
    try:
        codes = wait_nodes(nodes, timeout)
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_node(node)
    return codes, "\n".join((logs / f"node{i}.log").read_text() for i in range(2))
