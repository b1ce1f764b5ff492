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
    atomic_file,
    check_finite,
    damaged_outputs,
    diff_settings,
    digest,
    files_identity,
    make_stamp,
    npy_identity,
    provenance,
    read_stamp,
    sha256_file,
    stale_reasons,
    stamp_problems,
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


def test_atomic_file_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    with atomic_file(target, "wb", fsync=True) as fh:
        fh.write(b"one")
    assert target.read_bytes() == b"one"
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_file(target, "wb") as fh:
            fh.write(b"two, half written")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"one" and sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]
    with atomic_file(target) as fh:  # text mode, UTF-8
        fh.write("drei é")
    assert target.read_text(encoding="utf-8") == "drei é"


def test_data_stamps_name_changed_inputs_settings_and_damaged_outputs(tmp_path):
    a, b = tmp_path / "a.hea", tmp_path / "b.hea"
    a.write_text("x")
    b.write_text("y")
    np.save(tmp_path / "out.npy", np.zeros((4, 3), np.float32))
    outputs = [npy_identity(tmp_path / "out.npy", tmp_path)]
    assert outputs[0]["shape"] == [4, 3] and outputs[0]["dtype"] == "float32"
    old = make_stamp("s", {"seed": 0}, {"records": files_identity([a, b], tmp_path)}, outputs)
    same = make_stamp("s", {"seed": 0}, {"records": files_identity([a, b], tmp_path)}, outputs)
    assert stale_reasons(old, same) == [] and damaged_outputs(tmp_path, outputs) == []
    b.write_text("longer")
    new = make_stamp("s", {"seed": 1}, {"records": files_identity([a, b, tmp_path / "c.hea"], tmp_path)}, [])
    assert stale_reasons(old, new) == [
        "setting seed: 0 -> 1",
        "input records: 2 file(s) changed: c.hea (new), b.hea",
    ]
    big = make_stamp("s", {}, {"records": files_identity([a, b], tmp_path, list_limit=1)}, [])
    assert "files" not in big["inputs"]["records"]
    a.write_text("changed")
    again = make_stamp("s", {}, {"records": files_identity([a, b], tmp_path, list_limit=1)}, [])
    assert stale_reasons(big, again) == ["input records: 2 -> 2 files, identity (size/mtime) differs"]
    assert stale_reasons(None, again)[0].startswith("no stamp")
    with open(tmp_path / "out.npy", "r+b") as fh:  # truncated after completion
        fh.truncate(100)
    assert damaged_outputs(tmp_path, outputs) == [
        f"{tmp_path / 'out.npy'}: 100 bytes, {outputs[0]['size']} when it was completed (truncated or rewritten)"
    ]
    assert stamp_problems(tmp_path, old, same) == [
        damaged_outputs(tmp_path, outputs)[0].join(["damaged output ", ""])
    ]
    (tmp_path / "out.npy").unlink()
    assert damaged_outputs(tmp_path, outputs) == [f"{tmp_path / 'out.npy'}: missing"]


def _start_holder(folder):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, env=env, text=True
    )
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
    assert (
        p["checkpoint_sha256"]
        == sha256_file(f)
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert p["utc"].endswith("Z") and time.strftime("%Y") in p["utc"]
    assert len(p["git_commit"]) == 40 or p["git_commit"] == "unknown"
