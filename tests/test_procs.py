"""utils.procs: a torchrun worker whose launcher is already gone stops at once instead of training alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utils import procs

REPO = Path(__file__).resolve().parents[1]

# The grandchild waits until its parent (the "launcher") has exited, reports its new parent, then calls
# die_with_launcher() as an entry script's first line does and reports whether it is still alive.
GRANDCHILD = r"""
import os, sys, time
out = sys.argv[1]
for _ in range(200):
    if os.getppid() != int(sys.argv[2]):
        break
    time.sleep(0.02)
open(out + ".ppid", "w").write(str(os.getppid()))
from utils.procs import die_with_launcher
die_with_launcher()
time.sleep(0.2)
open(out + ".alive", "w").write("alive")
"""

LAUNCHER = r"""
import os, subprocess, sys
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], str(os.getpid())], start_new_session=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux-only")
def test_an_orphaned_torchrun_worker_stops_at_once(tmp_path):
    out = str(tmp_path / "worker")
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "test", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", LAUNCHER, GRANDCHILD, out], env=env, check=True, timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and not Path(out + ".ppid").exists():
        time.sleep(0.05)
    assert Path(out + ".ppid").exists(), "the worker never started"
    new_parent = int(Path(out + ".ppid").read_text() or 0)
    if new_parent != 1 or not procs._reparented_to_init(1):
        pytest.skip(f"orphans are adopted by PID {new_parent} here (a subreaper), not by a non-Python init")
    time.sleep(2.0)
    assert not Path(out + ".alive").exists(), "an orphaned worker kept running"


def test_outside_torchrun_nothing_is_set(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert procs.die_with_launcher() is False


def test_init_is_recognised_and_a_python_pid1_is_not_an_orphan(monkeypatch, tmp_path):
    assert procs._reparented_to_init(os.getppid()) is (os.getppid() == 1 and procs._reparented_to_init(1))
    assert procs._reparented_to_init(12345) is False  # a live parent that is not init
    fake = tmp_path / "cmdline"
    real_open = open

    def fake_open(path, *a, **k):
        return real_open(fake, *a, **k) if path == "/proc/1/cmdline" else real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    fake.write_bytes(b"/sbin/tini\0--\0bash\0")
    assert procs._reparented_to_init(1) is True
    fake.write_bytes(b"/usr/bin/python3.11\0/usr/bin/torchrun\0train.py\0")  # torchrun as a container's PID 1
    assert procs._reparented_to_init(1) is False
