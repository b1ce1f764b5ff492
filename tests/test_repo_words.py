"""The repository speaks of the project alone, to its users.

Every committed text file is searched for what does not belong in it: tracker numbers (``issue 13``,
``#13``, ``issue_13_...`` keys), words about who worked on it or on which machine, absolute paths of a
machine, and "seed" used for the original project (it reads as ``--seed``: say "the original README" or
"the original scripts").
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".sh", ".txt", ".json", ".toml", ".cfg", ".csv", ".yml", ".yaml", ""}

RULES = {
    "tracker number": re.compile(r"\bissues?[ _-]?\d+|(?<![\w&/#])#\d+\b|\bthe issue's\b", re.I),
    "who worked on it": re.compile(r"\bengineers?\b|\bour (?:development|dev|CI|build)\b[\w ]{0,20}\bmachines?\b", re.I),
    "absolute machine path": re.compile(r"(?<![\w.])/(work|root|home|Users)/\w"),
    "'seed' for the original project": re.compile(
        r"\bthe seed's\b|\bseed (README|scripts?|commands?|interface|layout)\b|\bthe seed (passes|uses|does|gives|puts|keeps|writes|runs)\b"
        r"|\b(as )?in the seed\b(?=[),.;:]|$)|shared/seed\b",
        re.I,
    ),
}
# This file and its rules name the patterns they forbid.
EXEMPT = {"tests/test_repo_words.py"}


def committed_text_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"not a git checkout ({out.stderr.strip()})")
    files = []
    for rel in out.stdout.splitlines():
        path = ROOT / rel
        if rel in EXEMPT or path.suffix not in TEXT_SUFFIXES or not path.is_file():
            continue
        files.append(rel)
    return files


def problems_in(text: str, where: str) -> list[str]:
    """Each line is searched together with the start of the next one, so a phrase wrapped over two lines
    is found too (and reported at the line where it starts)."""
    found = []
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        nxt = lines[n].lstrip().lstrip("#*/ ") if n < len(lines) else ""
        joined = f"{line} {nxt[:40]}"
        for rule, pattern in RULES.items():
            m = pattern.search(joined)
            if m and m.start() < len(line):
                found.append(f"{where}:{n}: {rule}: {m.group(0)!r} in {line.strip()[:140]!r}")
    return found


def test_committed_text_speaks_of_the_project_alone():
    problems = []
    for rel in committed_text_files():
        try:
            text = (ROOT / rel).read_text()
        except UnicodeDecodeError:
            continue
        problems += problems_in(text, rel)
    assert not problems, f"{len(problems)} line(s):\n" + "\n".join(problems)


def test_rules_catch_each_kind():
    bad = [
        "see issue 13 for the goal", "(#7)", '"issue_13_original_rec_s": 127', "other engineers' jobs",
        "on our development and CI machines", '"data": "/work/shared/data/ptbxl"', "/home/user/x",
        "the seed's commands", "the seed README", "as in the seed)", "../shared/seed/*.txt", "the seed passes 8", "the issue's setting",
        "flags the seed\n  keeps but nothing reads",
    ]  # fmt: skip
    for line in bad:
        assert problems_in(line, "x"), line
    good = [
        "--seed 0 sets the random seed", "the mask is regenerated from the seed, never stored", "## 3. Paper table",
        "the original README's commands", "row 3 of the table", "physionet.org/files/ptb-xl/1.0.3",
        "seed 0 (the sampler's seed)", "`--seed` and the data", "drawn and the seed.",
        "one resample scores every seed's runs on the same records",
    ]  # fmt: skip
    for line in good:
        assert not problems_in(line, "x"), line
