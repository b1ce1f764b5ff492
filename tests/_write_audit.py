"""Run a training entry script as a torchrun worker and record every file-system write of this process.

    torchrun ... tests/_write_audit.py AUDIT_DIR SCRIPT [flags...]

Python's audit hooks (PEP 578) see every ``open`` for writing, rename/replace, remove, mkdir and rmdir made
from Python (torch.save, numpy.save, json, TensorBoard: everything this project writes goes through them).
At exit the absolute paths go to ``AUDIT_DIR/rank<RANK>.json``, with the process's RANK and LOCAL_RANK, so a
test can check that only global rank 0 writes into the run's folders.
"""

from __future__ import annotations

import os
import sys

from utils.procs import die_with_launcher

die_with_launcher()  # as the entry scripts do, before anything heavy is imported

import atexit  # noqa: E402
import json  # noqa: E402
import runpy  # noqa: E402

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.rename": 2, "os.remove": 1, "os.mkdir": 1, "os.rmdir": 1, "os.truncate": 1,
                "os.link": 2, "os.symlink": 2, "shutil.rmtree": 1, "shutil.move": 2}  # fmt: skip
written: list[list[str]] = []


def _path(p) -> str | None:
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if isinstance(p, str | os.PathLike):
        return os.path.abspath(os.fspath(p))
    return None  # a file descriptor


def _hook(event: str, args: tuple) -> None:
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(int(flags or 0) & _WRITE_FLAGS)
        if writes and (p := _path(path)) is not None:
            written.append([event, p])
    elif event in _PATH_EVENTS:
        for a in args[: _PATH_EVENTS[event]]:
            if (p := _path(a)) is not None:
                written.append([event, p])


def _dump(audit_dir: str) -> None:
    rank = os.environ.get("RANK", "0")
    record = {"rank": int(rank), "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
              "group_rank": os.environ.get("GROUP_RANK"), "written": written}  # fmt: skip
    with open(os.path.join(audit_dir, f"rank{rank}.json"), "w", encoding="utf-8") as fh:
        json.dump(record, fh)


if __name__ == "__main__":
    audit_dir, script = sys.argv[1], sys.argv[2]
    sys.argv = [script, *sys.argv[3:]]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    atexit.register(_dump, audit_dir)
    sys.addaudithook(_hook)
    runpy.run_path(script, run_name="__main__")
