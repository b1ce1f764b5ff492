"""Shared pytest fixtures: repository paths, the shared real-data / reference-fixture folders, the one torchrun
launcher (:func:`run_torchrun`) and the one end-to-end pipeline run that the end-to-end tests share (:func:`demo_smoke`)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Keep the suite deterministic and light on a 2-core machine.
# Under pytest-xdist (scripts/run_tests.sh runs 2 workers) each worker gets one thread: 2 workers x 1 thread
# fill the 2 cores without oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: small subsets of real public ECG data (PTB-XL, CPSC2018, CSN, MIT-BIH)."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"real ECG data folder {path} is absent (it sits beside the repository in the dev setup)")
    return path


@pytest.fixture(scope="session")
def ref_fixtures() -> Path:
    """../shared/fixtures: outputs of the original HeartLang implementation."""
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.skip(
            f"reference fixtures folder {path} is absent (it sits beside the repository in the dev setup)"
        )
    return path


def run_torchrun(args: list[str], nproc: int = 2, timeout: float = 240, env: dict | None = None):
    """Launch ``torchrun --standalone --nproc_per_node=nproc <args>`` on CPU and return the CompletedProcess.

    ``--standalone`` picks a free rendezvous port (``--master_port=0`` hangs with static rendezvous).
    """
    import subprocess

    run_env = dict(os.environ, OMP_NUM_THREADS="1", HEARTLANG_NO_PROGRESS="1")
    run_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), run_env.get("PYTHONPATH", "")]))
    run_env.update(env or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=run_env, cwd=REPO_ROOT)


@dataclass(frozen=True)
class DemoRun:
    """The shared smoke pipeline: ``out`` is its --output_dir, ``log`` its console output."""

    out: Path
    log: str

    def stage_log(self, label: str) -> str:
        """Full output of the demo stage whose label is ``label`` (``<out>/log/stages/NN_<label>.log``)."""
        found = sorted((self.out / "log" / "stages").glob(f"[0-9][0-9]_{label}.log"))
        assert len(found) == 1, f"demo stage log {label!r}: {found}"
        return found[0].read_text()


@pytest.fixture(scope="session")
def demo_smoke(tmp_path_factory) -> DemoRun:
    """``scripts/run_demo.py --smoke --nproc 2``, run ONCE per session and shared by the end-to-end tests.

    Synthetic cohort -> MIMIC-IV and PTB-XL preprocessing -> QRS tokenizer -> VQ-HBR -> pre-training ->
    linear probes (pre-trained and random init) -> --eval -> table and plots; every training stage and every
    --eval under torchrun with 2 gloo processes. Tests read its outputs and must not modify them (runs of
    their own go to their tmp_path). Measured: 160-320 s wall on a shared 2-core machine; the 540 s limit stays
    under pytest's 600 s per-test timeout (which includes fixture set-up).
    """
    import fcntl
    import subprocess

    # Under pytest-xdist every worker has its own session: the run happens once, in the workers' shared
    # temporary folder, and a worker that needs it while another one runs it waits for it (a file lock).
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    home = shared / "demo_smoke_shared"
    home.mkdir(exist_ok=True)
    out, done = home / "demo", home / "console.txt"
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            env = dict(os.environ, OMP_NUM_THREADS="1", HEARTLANG_NO_PROGRESS="1", PYTHONPATH=str(REPO_ROOT))
            cmd = [sys.executable, "scripts/run_demo.py", "--smoke", "--nproc", "2", "--num_workers", "2",
                   "--output_dir", str(out), "--results_json", str(out / "results" / "demo.json")]  # fmt: skip
            proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=540)
            assert proc.returncode == 0, f"smoke demo failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            done.write_text(proc.stdout)
    return DemoRun(out=out, log=done.read_text())
