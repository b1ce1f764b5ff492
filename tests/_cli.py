"""Capture the argument parser of an entry script or ``python -m`` tool without running it."""

from __future__ import annotations

import argparse
import importlib
import re
import runpy
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser, args: list[str]):
        self.parser, self.args = parser, args


def capture_parser(target: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """Run ``target`` (a path relative to the repository, or ``-m module``) as ``__main__`` until it parses
    its arguments, and return that parser; nothing after the parse runs."""
    return capture_parse(target, ["--help"], monkeypatch)[0]


def capture_parse(
    target: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[argparse.ArgumentParser, list[str]]:
    """Run ``target`` with ``argv`` until a parser is about to parse; return it and the arguments it was
    given (a dispatcher passes the rest of ``argv`` on to its subcommand's parser)."""

    def grab(self, args=None, namespace=None):
        raise _Captured(self, list(sys.argv[1:] if args is None else args))

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_known_args", grab)
        m.setattr(sys, "argv", [target, *argv])
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
                elif re.search(r"^if __name__ == [\"']__main__[\"']:", (ROOT / target).read_text(), re.M):
                    runpy.run_path(str(ROOT / target), run_name="__main__")
                else:  # a module reached through a dispatcher: its parser builder, or its main(argv)
                    module = importlib.import_module(".".join(Path(target).with_suffix("").parts))
                    if hasattr(module, "get_args_parser"):
                        return module.get_args_parser(), list(argv)
                    module.main(list(argv))
        except _Captured as c:
            return c.parser, c.args
    raise AssertionError(f"{target} ran to its end without parsing any arguments")
