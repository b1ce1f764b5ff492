"""The one timing / reporting helper of the benchmark tool: machine description, results JSON writer,
peak memory of a process tree, and a measured subprocess.

Every results file written through :func:`write_results` carries the command that produced it, the date,
the machine (CPU model, cores, memory, torch, GPU), and the caller's numbers, which include the baseline
measured in the same run. Paths inside a results file are relative (to the repository or to the
benchmark's work folder): a string that looks like an absolute path is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def machine() -> dict:
    """What the numbers were measured on (no host names, no paths)."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        info["memory_gb"] = round(mem_kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        info["cpu"] = platform.processor() or platform.machine()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def relative(path, root: Path = REPO) -> str:
    """``path`` relative to ``root`` (the repository by default), as a POSIX string."""
    return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()


def _absolute_paths(value, where: str = "") -> list[str]:
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _absolute_paths(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [hit for i, v in enumerate(value) for hit in _absolute_paths(v, f"{where}[{i}]")]
    if isinstance(value, str) and any(
        value.startswith("/") or marker in value for marker in (str(REPO), " /", "=/", "/tmp/", "/home/")
    ):
        return [f"{where.lstrip('.')} = {value!r}"]
    return []


def portable_arg(arg: str) -> str:
    """A command-line argument fit for a results file: an absolute path becomes repository-relative, or
    ``<outside the repository>`` when it lies elsewhere (e.g. a temporary work folder)."""
    flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if not value.startswith("/"):
        return arg
    path = Path(value).resolve()
    text = relative(path) if path.is_relative_to(REPO.resolve()) else "<outside the repository>"
    return f"{flag}{eq}{text}"


def add_output_args(parser, label: str = "latest") -> None:
    """``--label`` (the run's name inside the results file; other runs there are kept) and ``--out``."""
    parser.add_argument(
        "--label", default=label, help="run name inside the results file; other runs are kept (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results/<name>.json)")


def write_results(
    name: str, result: dict, argv: list[str] | None = None, label: str = "latest", out: Path | None = None
) -> Path:
    """Store one run in ``benchmarks/results/<name>.json`` (or ``out``) under ``runs[label]``: the command,
    the date, the machine, then ``result``. Runs under other labels stay as they are.

    ``argv``: the subcommand's arguments (default ``sys.argv[1:]``); the command is recorded as
    ``python -m benchmarks <name> ...``. Raises ValueError when any value holds an absolute path."""
    args = sys.argv[1:] if argv is None else argv
    record = {
        "command": " ".join(["python -m benchmarks", name, *map(portable_arg, args)]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        **result,
    }
    bad = _absolute_paths(record)
    if bad:
        raise ValueError(f"results {name}: absolute paths are not stored in results files: {bad}")
    out = Path(out) if out is not None else RESULTS / f"{name}.json"
    stored = json.loads(out.read_text()) if out.is_file() else {}
    runs = stored.get("runs", {})
    runs[label] = record
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": name, "runs": runs}, indent=2) + "\n")
    print(f"results -> {relative(out)} (run {label!r})")
    return out


def read_run(name: str, label: str = "latest") -> dict:
    """One stored run of ``benchmarks/results/<name>.json``."""
    return json.loads((RESULTS / f"{name}.json").read_text())["runs"][label]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except OSError:
        return []


def _status_kb(pid: int, fields=("VmRSS", "RssAnon")) -> dict[str, int]:
    out = dict.fromkeys(fields, 0)
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key = line.split(":", 1)[0]
                if key in out:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def tree_memory_kb(pid: int) -> dict[str, int]:
    """Summed VmRSS and RssAnon (kB) of ``pid`` and all its descendants."""
    total = {"VmRSS": 0, "RssAnon": 0}
    stack = [pid]
    while stack:
        p = stack.pop()
        for k, v in _status_kb(p).items():
            total[k] += v
        stack.extend(_children(p))
    return total


class PeakMemory:
    """Polls a process tree every ``interval`` s in a thread; ``peak_rss_mb`` (resident, file-backed pages of
    memory maps included), ``peak_anon_mb`` (anonymous memory only: what a stage holds itself), and
    ``peak_main_rss_mb`` (the root process alone)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak = {"VmRSS": 0, "RssAnon": 0, "main": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = {**tree_memory_kb(self.pid), "main": _status_kb(self.pid)["VmRSS"]}
            for k in self.peak:
                self.peak[k] = max(self.peak[k], now[k])
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_rss_mb(self) -> float:
        return round(self.peak["VmRSS"] / 1024, 1)

    @property
    def peak_anon_mb(self) -> float:
        return round(self.peak["RssAnon"] / 1024, 1)

    @property
    def peak_main_rss_mb(self) -> float:
        return round(self.peak["main"] / 1024, 1)


def run_measured(cmd: list[str], cwd: Path = REPO, env: dict | None = None, timeout: float | None = None) -> dict:
    """Run ``cmd`` and measure it: wall seconds, CPU seconds (user + system of the whole tree, from
    ``getrusage(RUSAGE_CHILDREN)``), peak tree RSS / anonymous memory / main-process RSS (MB). Raises RuntimeError naming
    the command and its output tail when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    with PeakMemory(proc.pid) as mem:
        output, _ = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{output[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mb": mem.peak_rss_mb,
        "peak_anon_mb": mem.peak_anon_mb,
        "peak_main_rss_mb": mem.peak_main_rss_mb,
        "output": output,
    }


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (apparent size)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
