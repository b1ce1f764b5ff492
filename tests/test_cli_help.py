"""Every user-facing flag of every entry script and ``python -m`` tool explains itself.

The entry points are discovered (every file with a ``__main__`` block, every ``__main__.py``), each one's
argument parser is captured at the moment it would parse, and every flag is checked: it has a help text,
a flag that takes a value names its default (or says it is required, or has no effect), and negations are spelled one way (``--no_NAME``; never
``--no-NAME`` nor a double negative).
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from tests._cli import capture_parser
from utils.cli import add_switch

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"tests", ".venv", ".git", "demo_output", "checkpoints", "log", "results"}
PARSER_WORDS = re.compile(r"argparse|parse_args|get_args_parser")


def _project_files() -> list[Path]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP_DIRS or rel.parts[0].startswith("."):
            continue
        out.append(path)
    return out


def _has_main_block(src: str) -> bool:
    return re.search(r"^if __name__ == [\"']__main__[\"']:", src, re.M) is not None


def _uses_parser(path: Path, src: str) -> bool:
    """The file builds a parser itself or runs ``main`` imported from a project module that does."""
    if PARSER_WORDS.search(src):
        return True
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and node.module and any(a.name == "main" for a in node.names):
            mod = ROOT / Path(*node.module.split("."))
            for cand in (mod.with_suffix(".py"), mod / "__init__.py"):
                if cand.is_file() and PARSER_WORDS.search(cand.read_text()):
                    return True
    return False


def entry_points() -> list[str]:
    """Files run as a program (a ``__main__`` block or ``__main__.py``) and modules that build a parser
    (a subcommand reached through a dispatcher)."""
    out = []
    for path in _project_files():
        src = path.read_text()
        if path.name == "__main__.py" or _has_main_block(src) or "ArgumentParser(" in src:
            out.append(path.relative_to(ROOT).as_posix())
    return out


ENTRIES = entry_points()
# An entry point without any parser takes no flags of its own (e.g. a dispatcher to subcommands, which are
# entries themselves): nothing to check.
WITH_FLAGS = [e for e in ENTRIES if _uses_parser(ROOT / e, (ROOT / e).read_text())]


def iter_parsers(parser: argparse.ArgumentParser, name: str):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from iter_parsers(sub, f"{name} {sub_name}")


def flag_problems(parser: argparse.ArgumentParser, name: str) -> list[str]:
    problems = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        flag = "/".join(action.option_strings) or action.dest
        where = f"{name}: {flag}"
        text = action.help or ""
        if text == argparse.SUPPRESS:
            continue
        if not text.strip():
            problems.append(f"{where}: no help text")
            continue
        for opt in action.option_strings:
            if opt.startswith("--no-") or opt.startswith("--no_no"):
                problems.append(f"{where}: negation spelled {opt} (one style: --no_NAME, no double negative)")
        takes_value = action.nargs != 0 and action.option_strings
        if takes_value and not action.required and not re.search(r"default|no effect|required", text, re.I):
            problems.append(f"{where}: help does not state the default")
        if re.search(r"\bseed'?s? (README|interface|scripts?|commands?)", text):
            problems.append(f"{where}: says 'seed' for the original project ({text!r})")
    return problems


def test_entry_points_are_discovered():
    """The discovery finds the entry points users are told to run (so a broken glob cannot pass)."""
    for must in ("QRSTokenizer.py", "run_class_finetuning.py", "mimic_preprocess.py", "export_features.py",
                 "datasets/preprocess/ptbxl.py", "reporting/__main__.py"):  # fmt: skip
        assert must in WITH_FLAGS


@pytest.mark.parametrize("rel", WITH_FLAGS)
def test_every_flag_has_help(rel, monkeypatch):
    parser = capture_parser(rel, monkeypatch)
    problems = []
    for name, sub in iter_parsers(parser, rel):
        problems += flag_problems(sub, name)
        sub.format_help()  # every help text formats (a bare '%' would raise here)
    assert not problems, "\n".join(problems)


def test_switch_spellings_and_values():
    p = argparse.ArgumentParser("x")
    add_switch(p, "pin_mem", default=True, help="pinned memory")
    add_switch(p, "no_decay_embeddings", default=None, help="corrected variant (default: as --recipe)")
    opts = {a.dest: a.option_strings for a in p._actions}
    assert opts["pin_mem"] == ["--pin_mem", "--no_pin_mem"]
    assert opts["no_decay_embeddings"] == ["--no_decay_embeddings", "--decay_embeddings"]
    assert vars(p.parse_args([])) == {"pin_mem": True, "no_decay_embeddings": None}
    assert vars(p.parse_args(["--no_pin_mem", "--decay_embeddings"])) == {
        "pin_mem": False, "no_decay_embeddings": False}  # fmt: skip
    assert vars(p.parse_args(["--no_pin_mem", "--pin_mem", "--no_decay_embeddings"])) == {
        "pin_mem": True, "no_decay_embeddings": True}  # fmt: skip
    assert "(default: on)" in p.format_help()
    assert not flag_problems(p, "x")


def test_checker_catches_a_bad_flag():
    p = argparse.ArgumentParser("x")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=3, help="training epochs")
    p.add_argument("--cool", action=argparse.BooleanOptionalAction, help="on / off")
    p.add_argument("--momentum", default=0.9, help="kept for the " + "se" + "ed's interface (default 0.9)")
    problems = "\n".join(flag_problems(p, "x"))
    assert "--lr: no help text" in problems
    assert "--epochs: help does not state the default" in problems
    assert "negation spelled --no-cool" in problems
    assert "says 'seed'" in problems
