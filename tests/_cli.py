"""Capture the argument parser of an entry script or ``python -m`` tool without running it."""

from __future__ import annotations

import argparse
import runpy
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def capture_parser(target: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """Run ``target`` (a path relative to the repository, or ``-m module``) as ``__main__`` until it parses
    its arguments, and return that parser; nothing after the parse runs."""

    def grab(self, args=None, namespace=None):
        raise _Captured(self)

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_known_args", grab)
        m.setattr(sys, "argv", [target, "--help"])
        m.syspath_prepend(str(ROOT))
        try:
            with warnings.catch_warnings():
                # running a module its package already imported is what this capture does on purpose
                warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
                if target.startswith("-m "):
                    runpy.run_module(target[3:], run_name="__main__", alter_sys=False)
                elif Path(target).name == "__main__.py":
                    package = ".".join(Path(target).parent.parts)
                    runpy.run_module(package, run_name="__main__", alter_sys=False)
                else:
                    runpy.run_path(str(ROOT / target), run_name="__main__")
        except _Captured as c:
            return c.parser
    raise AssertionError(f"{target} ran to its end without parsing any arguments")
