"""Process set-up that must happen before anything heavy is imported. Standard library only.

:func:`die_with_launcher`: a torchrun worker asks Linux to end it when its launcher dies (``prctl``
PR_SET_PDEATHSIG). The training entry scripts call it on their first line, before torch is imported, so
the window in which a ``kill -9`` of the launcher leaves an orphan worker is Python's start-up (tens of ms),
and a worker that finds itself already orphaned stops at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def _reparented_to_init(ppid: int) -> bool:
    """True when the parent is PID 1 and PID 1 is not Python (a launcher that died before we checked
    leaves its workers to init; torchrun running as a container's PID 1 is Python and is not mistaken)."""
    if ppid != 1:
        return False
    try:
        with open("/proc/1/cmdline", "rb") as fh:
            argv0 = fh.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return b"python" not in os.path.basename(argv0).lower()


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies. Returns False where unsupported
    (other OS). When the parent is already gone (it died between fork and this call, or before: we were
    reparented to init), ``sig`` is sent at once."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        parent = os.getppid()
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except OSError:
        return False
    ppid = os.getppid()
    if ppid != parent or _reparented_to_init(ppid):
        os.kill(os.getpid(), sig)
    return True


def die_with_launcher() -> bool:
    """Under torchrun: :func:`set_parent_death_signal` (SIGTERM). Elsewhere nothing; returns whether it was set."""
    return launched_by_torchrun() and set_parent_death_signal()
