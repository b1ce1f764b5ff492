"""utils/integrity: settings diff, stamps, the output-folder lock (live holder vs dead holder), finite checks,
provenance."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from utils.integrity import (
    BusyOutputDirError,
    NonFiniteError,
    OutputDirLock,
    StaleOutputError,
    check_finite,
    diff_settings,
    digest,
    provenance,
    read_stamp,
    sha256_file,
    write_stamp,
)

HOLDER = """
import sys, time
from utils.integrity import OutputDirLock
lock = OutputDirLock(sys.argv[1]).acquire()  # keep a reference: a collected lock is released
print("locked", flush=True)
time.sleep(60)
"""


def test_diff_settings_names_each_change():
    old = {"seed": 0, "lr": 1e-3, "split_ratio": 1.0}
    new = {"seed": 1, "lr": 1e-3, "finetune": "a.pth", "split_ratio": 1.0}
    assert diff_settings(old, new) == ["finetune: (absent) -> a.pth", "seed: 0 -> 1"]
    assert diff_settings(old, dict(old)) == []
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1}) != digest({"a": 1, "b": 3})


def test_stamp_roundtrip_and_damaged(tmp_path):
    p = write_stamp(tmp_path / "s.json", {"x": [1, 2]})
    assert read_stamp(p) == {"x": [1, 2]}
    assert read_stamp(tmp_path / "none.json") is None
    p.write_text("{trunc")
    with pytest.raises(StaleOutputError, match="s.json is damaged"):
        read_stamp(p)


def _start_holder(folder):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_refuses_live_holder_and_takes_over_after_kill9(tmp_path):
    proc = _start_holder(tmp_path)
    try:
        with pytest.raises(BusyOutputDirError, match=rf"in use by another run .*\"pid\":{proc.pid}"):
            OutputDirLock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with OutputDirLock(tmp_path):  # the dead holder's lock file is left behind but no longer locked
        assert str(os.getpid()) in (tmp_path / ".lock").read_text()
    with OutputDirLock(tmp_path):  # released on exit
        pass


def test_check_finite_numpy_and_torch():
    check_finite(np.zeros(3, np.float32), "ok")
    check_finite(np.arange(3), "ints are always finite")
    a = np.zeros((2, 3), np.float32)
    a[1, 2] = np.inf
    with pytest.raises(NonFiniteError, match=r"record X: 1 non-finite value\(s\).*\(1, 2\)"):
        check_finite(a, "record X")
    with pytest.raises(NonFiniteError, match="weights"):
        check_finite(torch.tensor([0.0, float("nan")]), "weights")


def test_provenance(tmp_path):
    f = tmp_path / "c.pth"
    f.write_bytes(b"abc")
    p = provenance(f)
    assert p["checkpoint_sha256"] == sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert p["utc"].endswith("Z") and time.strftime("%Y") in p["utc"]
    assert len(p["git_commit"]) == 40 or p["git_commit"] == "unknown"
