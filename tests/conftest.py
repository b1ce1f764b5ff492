"""Shared pytest fixtures: repository paths, the shared real-data / reference-fixture folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Keep the suite deterministic and light on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


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
