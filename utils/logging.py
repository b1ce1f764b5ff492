"""Logging for the training stages: smoothed metrics, progress bars, TensorBoard, JSON lines.

* ``MetricLogger.log_every(iterable, header)`` wraps a loader in a tqdm bar on
  rank 0 (plain iteration elsewhere) and shows the smoothed meters.
* ``TensorboardLogger`` writes scalars under ``log_dir`` on rank 0 only.
* ``append_jsonl`` writes one dict per line to ``output_dir/log.txt``.
* ``save_args`` writes the resolved args and model config to ``output_dir/args.json``.
* ``to_plain`` turns args / configs into plain types (also used for checkpoints).
"""

from __future__ import annotations

import json
import math
import os
import sys
from argparse import Namespace
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from utils.dist import all_reduce_sum_, is_main_process


def to_plain(value: Any) -> Any:
    """Args / configs as plain JSON types (dict, list, str, int, float, bool, None), which both JSON
    and ``torch.load(weights_only=True)`` accept; anything else becomes its ``str``."""
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


class SmoothedValue:
    """A window-median / global-average tracker of a scalar series."""

    def __init__(self, window_size: int = 20, fmt: str = "{median:.4f} ({global_avg:.4f})"):
        self.deque: deque[float] = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self.fmt = fmt

    def update(self, value: float, n: int = 1) -> None:
        value = float(value)
        self.deque.append(value)
        self.count += n
        self.total += value * n

    def synchronize_between_processes(self) -> None:
        """Sum count/total over ranks (the window stays local)."""
        t = torch.tensor([self.count, self.total], dtype=torch.float64)
        all_reduce_sum_(t)
        self.count, self.total = int(t[0].item()), float(t[1].item())

    @property
    def median(self) -> float:
        if not self.deque:
            return math.nan
        return float(torch.tensor(list(self.deque)).median().item())

    @property
    def avg(self) -> float:
        return sum(self.deque) / len(self.deque) if self.deque else math.nan

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else math.nan

    @property
    def max(self) -> float:
        return max(self.deque) if self.deque else math.nan

    @property
    def value(self) -> float:
        return self.deque[-1] if self.deque else math.nan

    def __str__(self) -> str:
        return self.fmt.format(
            median=self.median, avg=self.avg, global_avg=self.global_avg, max=self.max, value=self.value
        )


class MetricLogger:
    """Named ``SmoothedValue`` meters plus a rank-0 progress bar."""

    def __init__(self, delimiter: str = "  ", window_size: int = 20):
        self.meters: dict[str, SmoothedValue] = defaultdict(lambda: SmoothedValue(window_size))
        self.delimiter = delimiter

    def update(self, **kwargs) -> None:
        for name, value in kwargs.items():
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                value = value.item()
            self.meters[name].update(float(value))

    def add_meter(self, name: str, meter: SmoothedValue) -> None:
        self.meters[name] = meter

    def __getattr__(self, attr):
        meters = self.__dict__.get("meters", {})
        if attr in meters:
            return meters[attr]
        raise AttributeError(f"{type(self).__name__} has no attribute {attr!r}")

    def __str__(self) -> str:
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())

    def synchronize_between_processes(self) -> None:
        for meter in self.meters.values():
            meter.synchronize_between_processes()

    def global_averages(self) -> dict[str, float]:
        return {name: meter.global_avg for name, meter in self.meters.items()}

    def log_every(self, iterable, header: str = "", print_freq: int = 10, total: int | None = None):
        """Iterate with a tqdm bar on rank 0 whose postfix shows the smoothed meters."""
        if total is None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        disable = not is_main_process() or os.environ.get("HEARTLANG_NO_PROGRESS") == "1"
        # One iterator, made here: tqdm.auto's bar calls iter() in its constructor and again when iterated, so a
        # DataLoader handed to it directly started its worker processes twice per epoch (the first set idle).
        iterator = iter(iterable)
        bar = tqdm(iterator, total=total, desc=header, disable=disable, dynamic_ncols=True, file=sys.stdout)
        for i, item in enumerate(bar):
            yield item
            if not disable and (i % max(print_freq, 1) == 0 or (total is not None and i == total - 1)):
                bar.set_postfix_str(
                    self.delimiter.join(f"{k} {m.median:.4g}" for k, m in self.meters.items()), refresh=False
                )
        bar.close()


class TensorboardLogger:
    """TensorBoard scalars on rank 0; a no-op elsewhere or when ``log_dir`` is None."""

    def __init__(self, log_dir: str | os.PathLike | None):
        self.writer = None
        self.step = 0
        if log_dir and is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(log_dir))

    def set_step(self, step: int | None = None) -> None:
        self.step = self.step + 1 if step is None else int(step)

    def update(self, head: str = "scalar", step: int | None = None, **kwargs) -> None:
        if self.writer is None:
            return
        for key, value in kwargs.items():
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                value = value.item()
            self.writer.add_scalar(f"{head}/{key}", float(value), self.step if step is None else step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON dict as a line (rank 0 only); NaN/inf become null, not invalid JSON."""
    if not is_main_process():
        return

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({k: clean(v) for k, v in to_plain(record).items()}) + "\n")
        fh.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def save_args(args, output_dir: str | os.PathLike, model_config: dict | None = None) -> Path | None:
    """Write the resolved args (and the model config) to ``output_dir/args.json`` on rank 0."""
    if not is_main_process():
        return None
    path = Path(output_dir) / "args.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"args": to_plain(args)}
    if model_config is not None:
        payload["model_config"] = to_plain(model_config)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
