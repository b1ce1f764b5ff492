"""Run under torchrun with 2 processes: rank 1 stops itself (SIGSTOP: alive, connections open, silent),
rank 0 enters a barrier and must fail after the collective timeout (HEARTLANG_DIST_TIMEOUT). Rank 0 writes
the seconds it waited to ``<out>/waited.json``."""

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import dist as D  # noqa: E402

out = Path(sys.argv[1])
info = D.init_distributed_mode(device="cpu")
if info.rank == 1:
    os.kill(os.getpid(), signal.SIGSTOP)
t0 = time.monotonic()
try:
    D.barrier()
    error = None
except Exception as exc:  # noqa: BLE001 - the test reads what happened
    error = f"{type(exc).__name__}: {exc}"
(out / "waited.json").write_text(json.dumps({"seconds": time.monotonic() - t0, "error": error}))
sys.exit(1 if error else 0)
