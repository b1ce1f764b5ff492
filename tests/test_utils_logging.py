"""utils.logging.MetricLogger.log_every: one iterator per pass (a DataLoader starts its workers once)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from utils.logging import MetricLogger


class CountingIterable:
    def __init__(self, n: int):
        self.n, self.iters = n, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        self.iters += 1
        return iter(range(self.n))


@pytest.mark.parametrize("progress", ["1", "0"])
def test_log_every_iterates_once(monkeypatch, progress):
    monkeypatch.setenv("HEARTLANG_NO_PROGRESS", "1" if progress == "0" else "0")
    data = CountingIterable(5)
    assert list(MetricLogger().log_every(data, "x")) == [0, 1, 2, 3, 4]
    assert data.iters == 1


def test_log_every_starts_the_loader_workers_once(monkeypatch):
    """Every DataLoader iterator draws its workers' base seed from torch's global generator: one draw per pass."""
    monkeypatch.setenv("HEARTLANG_NO_PROGRESS", "1")
    loader = DataLoader(list(range(8)), batch_size=4)
    torch.manual_seed(0)
    list(iter(loader))
    expected = torch.rand(1)
    torch.manual_seed(0)
    assert len(list(MetricLogger().log_every(loader, "x"))) == 2
    assert torch.equal(torch.rand(1), expected)
