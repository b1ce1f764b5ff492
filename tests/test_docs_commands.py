"""Every shell command of README.md and docs/*.md is checked against the code, in a fast CPU form.

The fenced ``bash`` blocks are collected and split into commands. Per command:

* ``python X.py ...``, ``python -m pkg ...``, ``torchrun ... X.py ...``: the script or module exists and its
  own argument parser accepts the arguments (flags, choices, required ones); with ``...`` in the command
  (an elided part) only the flags given are checked to exist;
* ``bash scripts/X.sh ...``: the script exists and is valid bash, and every project command inside it
  (with its defaults, the environment the doc sets and the doc's extra arguments) passes the same check;
* paths: a data-set folder must be one the preprocessing or the tokenizer writes (name, subset), a
  checkpoint one a stage writes, a repository file must exist, and no command names a folder only the
  development setup has (``../shared``) or an absolute machine path;
* ``hf ...``: the subcommand and its flags exist (``hf <subcommand> --help``); any other program must be a
  known general tool (so a removed one such as ``huggingface-cli`` fails);
* ``python`` blocks: every ``from X import a, b`` resolves.

A command that cannot be checked here carries ``# untested: <reason>`` on its line (or a block is
preceded by ``<!-- untested: <reason> -->``); the reason is required. Commands must sit in ``bash`` blocks:
an unlabelled block that holds one fails the test.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from tests._cli import capture_parse

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
UNTESTED = re.compile(r"#\s*untested:\s*(.*)$")
BLOCK_UNTESTED = re.compile(r"<!--\s*untested:\s*(.*?)\s*-->\s*$")
# General tools a documented command may call besides the project's own (not checked further).
GENERAL_TOOLS = {
    "cd", "cp", "ls", "mkdir", "rm", "mv", "cat", "echo", "export", "source", "wget", "curl", "unzip",
    "git", "pip", "conda", "nvidia-smi", "tensorboard", "nproc", "du", "head", "tail",
}  # fmt: skip
EXTERNAL_MODULES = {"pytest", "ruff", "pip", "venv", "torch.utils.collect_env"}
# Where the original README places a downloaded released checkpoint (its fine-tuning command reads it).
RELEASED_PLACE = "checkpoints/heartlang_base/checkpoint-200.pth"
TRACKED_TOPS = {"scripts", "docs", "benchmarks", "tests", "modeling", "engine", "datasets", "utils",
                "inference", "reporting", "requirements.txt", "requirements-dev.txt", "pyproject.toml"}  # fmt: skip


@dataclass
class Command:
    doc: str
    line: int
    text: str
    untested: str | None = None


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    body: str
    untested: str | None = None
    commands: list[Command] = field(default_factory=list)


def blocks(path: Path) -> list[Block]:
    out, lines, i = [], path.read_text().splitlines(), 0
    rel = path.relative_to(ROOT).as_posix()
    while i < len(lines):
        m = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        untested = BLOCK_UNTESTED.search(prev)
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            j += 1
        out.append(Block(rel, i + 2, m.group(1), "\n".join(lines[i + 1 : j]), untested and untested.group(1)))
        i = j + 1
    return out


def commands(block: Block) -> list[Command]:
    """Logical lines of a bash block (continuations joined), with their ``# untested:`` reason."""
    out, buf, start, reason = [], "", 0, None
    for k, raw in enumerate(block.body.splitlines()):
        line = raw.rstrip()
        if not buf:
            start = block.line + k
        m = UNTESTED.search(line)
        if m:
            reason = m.group(1).strip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        text = re.sub(r"(^|\s)#.*$", "", buf).strip()
        if text:
            out.append(
                Command(block.doc, start, text, block.untested if block.untested is not None else reason)
            )
        buf, reason = "", None
    return out


ALL_BLOCKS = [b for doc in DOCS for b in blocks(doc)]
BASH_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("bash", "sh", "shell", "console")]
ALL_COMMANDS = [c for b in BASH_BLOCKS for c in commands(b)]


def simple_commands(text: str) -> list[list[str]]:
    lex = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    out, cur = [], []
    for tok in lex:
        if tok in (";", "&&", "||", "|", "&"):
            out.append(cur)
            cur = []
        else:
            cur.append(tok)
    out.append(cur)
    return [c for c in out if c]


# --- what the pipeline writes -------------------------------------------------------------------------


def script_defaults(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(?:export )?(\w+)=\$\{\1:-\"?([^}\"]*)\"?\}", text, re.M))


@cache
def written_checkpoints() -> set[str]:
    """The last checkpoint of each pre-training stage script (checkpoint-<epochs>.pth in its OUTPUT_DIR)."""
    out = {RELEASED_PLACE}
    for stage in ("vqhbr", "pretrain"):
        text = (ROOT / "scripts" / stage / "MIMIC-IV.sh").read_text()
        epochs = re.search(r"^\s+--epochs (\d+)", text, re.M).group(1)
        out.add(f"{script_defaults(text)['OUTPUT_DIR'].rstrip('/')}/checkpoint-{epochs}.pth")
    return out


@cache
def written_datasets() -> dict[str, set[str] | None]:
    """Folder name under datasets/ecg_datasets -> its subsets (None: records directly in it or batch_k)."""
    from datasets.preprocess.ptbxl import SUBSETS
    from datasets.qrs.cli import REDUCED_LEAD_SETS, default_output_name

    raw: dict[str, set[str] | None] = {"MIMIC-IV": None}  # the original README's --output_path
    for mod in ("ptbxl", "cpsc2018", "csn"):
        parser = importlib.import_module(f"datasets.preprocess.{mod}").get_args_parser()
        default = next(a.default for a in parser._actions if a.dest == "output_path")
        raw[Path(default).name] = set(SUBSETS) if mod == "ptbxl" else None
    out = dict(raw)
    for name, subsets in raw.items():
        for chans in [None, *REDUCED_LEAD_SETS.values()]:
            out[default_output_name(name, None if chans is None else [str(c) for c in chans])] = subsets
    return out


def path_problems(tok: str) -> list[str]:
    if tok.startswith("-") or "://" in tok or "<" in tok or "$" in tok:
        return []
    if re.match(r"^(/work/|/root/|/home/|/Users/)", tok):
        return [f"absolute machine path {tok}"]
    if tok.startswith("../shared") or "/shared/data" in tok:
        return [f"{tok}: a folder only the development setup has; name a download (e.g. physionet.org/...)"]
    parts = Path(tok).parts
    finetuned = re.match(
        r"^checkpoints/finetune/[^/]+/finetune_[^/]+/checkpoint-best\.pth$", tok
    )  # CKPT_ROOT
    if tok.endswith(".pth") and tok not in written_checkpoints() and not finetuned:
        return [f"checkpoint {tok} is written by no stage (written: {sorted(written_checkpoints())})"]
    if len(parts) >= 3 and parts[:2] == ("datasets", "ecg_datasets"):
        known = written_datasets()
        if parts[2] not in known:
            return [
                f"{tok}: no preprocessing or tokenizer writes a data set named {parts[2]!r} ({sorted(known)})"
            ]
        subsets = known[parts[2]]
        if len(parts) >= 4 and subsets is not None and not any(ch in parts[3] for ch in "*?"):
            if parts[3] not in subsets:
                return [f"{tok}: {parts[2]} has no subset {parts[3]!r} ({sorted(subsets)})"]
        return []
    if parts and parts[0] in TRACKED_TOPS and "." in parts[-1] and not any(ch in tok for ch in "*?"):
        if not (ROOT / tok).exists():
            return [f"{tok} does not exist in the repository"]
    return []


# --- checking one command -------------------------------------------------------------------------


def parse_problems(target: str, args: list[str], monkeypatch) -> list[str]:
    """``target`` (path or ``-m module``) accepts ``args``: flags, choices, required ones."""
    if target.startswith("-m "):
        if target[3:] in EXTERNAL_MODULES or target[3:].split(".")[0] in EXTERNAL_MODULES:
            return []
        if importlib.util.find_spec(target[3:]) is None:
            return [f"python {target}: no such module"]
    elif not (ROOT / target).is_file():
        return [f"{target} does not exist"]
    args = [re.sub(r"<[^>]*>", "PLACEHOLDER", a) for a in args]
    parser, args = capture_parse(target, args, monkeypatch)  # a dispatcher hands its subcommand the rest
    if "..." in args:  # an elided command: only the flags given must exist
        known = {o for a in parser._actions for o in a.option_strings}
        return [f"{target}: unknown flag {a.split('=')[0]}" for a in args
                if a.startswith("--") and a.split("=")[0] not in known]  # fmt: skip
    err: list[str] = []

    def error(message):
        err.append(f"{target}: {message}")
        raise SystemExit(2)

    monkeypatch.setattr(parser, "error", error)
    for action in parser._actions:  # sub-parsers report through their own error()
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                monkeypatch.setattr(sub, "error", error)
    try:
        ns = parser.parse_args(args)
    except SystemExit:
        return err or [f"{target}: exits while parsing {args}"]
    if target == "QRSTokenizer.py" and ns.dataset_name not in written_datasets():
        return [f"QRSTokenizer.py --dataset_name {ns.dataset_name}: no preprocessing writes that folder "
                f"({sorted(k for k in written_datasets() if '_QRS' not in k)})"]  # fmt: skip
    return []


def python_target(tokens: list[str]) -> tuple[str, list[str]] | None:
    """``python [opts] X.py args`` / ``python -m mod args`` / ``torchrun [opts] X.py args`` -> (target, args)."""
    rest = tokens[1:]
    if tokens[0] == "torchrun":
        k = next((i for i, t in enumerate(rest) if t.endswith(".py")), None)
        return None if k is None else (rest[k], rest[k + 1 :])
    if rest[:1] == ["-m"] and len(rest) > 1:
        return f"-m {rest[1]}", rest[2:]
    if rest and rest[0].endswith(".py"):
        return rest[0].removeprefix("./"), rest[1:]
    return None


def script_problems(script: str, env: dict[str, str], extra: list[str], monkeypatch) -> list[str]:
    path = ROOT / script
    if not path.is_file():
        return [f"{script} does not exist"]
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    if syntax.returncode:
        return [f"{script}: {syntax.stderr.strip()}"]
    text = path.read_text().replace("\\\n", " ")
    values = {**script_defaults(text), **env, "ROOT": "."}
    problems, passes_args = [], False
    for line in text.splitlines():
        line = line.strip()
        loop = re.match(r"^for (\w+) in (.+); do$", line)
        if loop:  # the loop variable takes the first value of its list
            words = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), ""), loop.group(2)).split()
            values[loop.group(1)] = words[0].strip('"') if words else ""
        if line.startswith("#") or not re.match(r"^(exec\s+)?(python|torchrun)\b", line):
            continue
        line = line.removeprefix("exec").strip()
        passes_args |= '"$@"' in line
        line = line.replace('"$@"', " ".join(shlex.quote(a) for a in extra))
        line = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), "PLACEHOLDER"), line)
        tokens = shlex.split(line)
        target = python_target(tokens)
        if target is not None:
            problems += parse_problems(target[0].removeprefix("./"), target[1], monkeypatch)
    if extra and not passes_args and script != "scripts/fetch_paper_splits.sh":
        problems.append(f"{script} takes no arguments, but the doc passes {extra}")
    return problems


@cache
def hf_help(sub: tuple[str, ...]) -> str | None:
    exe = shutil.which("hf")
    if exe is None:
        return None
    run = subprocess.run([exe, *sub, "--help"], capture_output=True, text=True, timeout=60)
    return run.stdout if run.returncode == 0 else None


def command_problems(cmd: Command, monkeypatch) -> list[str]:
    problems = []
    text = re.sub(r"<[^>]*>", lambda m: m.group(0).replace(" ", "_"), cmd.text)  # <a placeholder> is one word
    for tokens in simple_commands(text):
        env = {}
        while tokens and re.match(r"^\w+=", tokens[0]):
            key, _, value = tokens.pop(0).partition("=")
            env[key] = value
        if not tokens:
            continue
        prog = tokens[0]
        for tok in tokens[1:]:
            problems += path_problems(tok)
        problems += [p for v in env.values() for p in path_problems(v)]
        if prog in ("python", "python3", "torchrun"):
            target = python_target(tokens)
            if target is None:
                problems.append(f"cannot tell which script {' '.join(tokens)} runs")
            else:
                problems += parse_problems(*target, monkeypatch)
        elif prog in ("bash", "sh"):
            problems += script_problems(tokens[1], env, tokens[2:], monkeypatch)
        elif prog == "hf":
            sub = tuple(t for t in tokens[1:3] if re.match(r"^[a-z-]+$", t))
            while sub and hf_help(sub) is None:
                sub = sub[:-1]
            text = hf_help(sub) if sub else None
            if text is None:
                problems.append(f"hf {' '.join(tokens[1:3])}: no such hf command (or hf is not installed)")
            else:
                problems += [
                    f"hf {' '.join(sub)}: no flag {t}" for t in tokens if t.startswith("--") and t not in text
                ]
        elif prog not in GENERAL_TOOLS:
            problems.append(f"{prog}: not a project command nor a known general tool")
    return problems


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=[f"{c.doc}:{c.line}" for c in ALL_COMMANDS])
def test_documented_command(cmd, monkeypatch):
    if cmd.untested is not None:
        assert cmd.untested.strip(), f"{cmd.doc}:{cmd.line}: '# untested:' needs a reason"
        pytest.skip(f"marked untested in {cmd.doc}: {cmd.untested}")
    problems = command_problems(cmd, monkeypatch)
    assert not problems, f"{cmd.doc}:{cmd.line}: {cmd.text}\n  " + "\n  ".join(problems)


def test_commands_are_in_bash_blocks():
    """A command in an unlabelled or text block would escape the check above."""
    hidden = [f"{b.doc}:{b.line + k}: {line.strip()}" for b in ALL_BLOCKS if b.lang not in ("bash", "sh", "shell",
              "console", "python", "bibtex", "json") for k, line in enumerate(b.body.splitlines())
              if re.match(r"^\s*(python3?|bash|torchrun|pip|hf|huggingface-cli)\s", line)]  # fmt: skip
    assert not hidden, "put these commands in a ```bash block:\n" + "\n".join(hidden)


PY_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "python"]


@pytest.mark.parametrize("block", PY_BLOCKS, ids=[f"{b.doc}:{b.line}" for b in PY_BLOCKS])
def test_python_snippet_imports_resolve(block):
    tree = ast.parse(block.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            mod = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(mod, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                    f"{block.doc}:{block.line}: {node.module} has no {alias.name}"
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            problems = path_problems(node.value)  # checkpoints and data folders a stage writes
            assert not problems, f"{block.doc}:{block.line}: " + "; ".join(problems)


def test_the_checker_catches_broken_commands(monkeypatch):
    """Each class of breakage the test exists for is reported (so a checker that passes everything fails)."""
    bad = {
        "python QRSTokenizer.py --dataset_name PTB-XL": "no preprocessing writes",
        "python no_such_script.py --x 1": "does not exist",
        "python -m datasets.no_such_module": "no such module",
        "python run_class_finetuning.py --output_dir o --no_such_flag": "unrecognized arguments",
        "python run_class_finetuning.py --output_dir o --trainable half": "invalid choice",
        "python run_class_finetuning.py --output_dir o --finetune checkpoints/heartlang.pth": "written by no stage",
        "python run_class_finetuning.py --dataset_dir datasets/ecg_datasets/PTBXL_QRS/nope": "has no subset",
        "python export_features.py --checkpoint x --records ../shared/data/ptbxl --output f.npy": "development",
        "bash scripts/no_such.sh": "does not exist",
        "bash scripts/demo.sh --no_such_flag": "unrecognized arguments",
        "FINETUNE=checkpoints/x.pth bash scripts/finetune/CSN/12Leads/base_csn_linear_prob.sh": "written by no stage",
        "huggingface-cli download PKUDigitalHealth/HeartLang": "not a project command",
        "python run_vqhbr_training.py --output_dir o ... --no_such_flag": "unknown flag",
    }
    for text, want in bad.items():
        problems = "\n".join(command_problems(Command("x", 0, text), monkeypatch))
        assert want in problems, (text, problems)
    good = "python run_class_finetuning.py --dataset_dir datasets/ecg_datasets/PTBXL_QRS_3Leads/form --output_dir o"
    assert command_problems(Command("x", 0, good), monkeypatch) == []
    assert commands(Block("x", 1, "bash", "a \\\n  b  # untested: why\nc"))[0].untested == "why"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces -> '-')."""
    out, in_code = set(), False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*#*$", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return out


def test_relative_links_resolve():
    """Every relative link of README.md and docs/*.md points to an existing file (and heading)."""
    broken = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_readme_stage_scripts_run_with_dry_run(tmp_path):
    """The README's stage scripts run for real, as shell scripts, with ``--dry_run``: each
    inner command resolves its run and writes its plan (the settings come from the scripts' environment
    variables, the data is a sparse copy of the layout the original README's commands read)."""
    from tests.test_seed_commands import _seed_layout

    _seed_layout(tmp_path)
    data = tmp_path / "datasets" / "ecg_datasets"
    # torchrun's rendezvous is tested elsewhere (tests/test_train_stages.py); here one process runs each
    # command directly, so the test stays fast: a stand-in torchrun drops its own options and runs python.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "torchrun").write_text(
        '#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec python "$@"\n'
    )
    (bin_dir / "torchrun").chmod(0o755)
    base = {
        k: v for k, v in __import__("os").environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    }
    base.update(NPROC="1", OMP_NUM_THREADS="1", HEARTLANG_NO_PROGRESS="1", PYTHONPATH=str(ROOT))
    base["PATH"] = f"{bin_dir}:{base['PATH']}"
    runs = {
        "scripts/vqhbr/MIMIC-IV.sh": dict(DATA_DIR=str(data / "MIMIC-IV_QRS"), OUTPUT_DIR=str(tmp_path / "vq"),
                                          LOG_DIR=str(tmp_path / "log_vq")),
        "scripts/pretrain/MIMIC-IV.sh": dict(DATA_DIR=str(data / "MIMIC-IV_QRS"), OUTPUT_DIR=str(tmp_path / "pt"),
                                             LOG_DIR=str(tmp_path / "log_pt")),
        "scripts/finetune/PTBXL/12Leads/form/base_form_linear_prob.sh": dict(
            DATA_DIR=str(data / "PTBXL_QRS" / "form"), CKPT_ROOT=str(tmp_path / "ft"), LOG_ROOT=str(tmp_path / "log"),
            RESULTS_CSV=str(tmp_path / "results.csv"), RATIOS="0.1", EXTRA_ARGS="--dry_run"),
    }  # fmt: skip
    for script, env in runs.items():
        extra = [] if "finetune" in script else ["--dry_run"]
        proc = subprocess.run(["bash", script, *extra], cwd=ROOT, env={**base, **env, "MASTER_PORT": str(_free_port())},
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, f"{script}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        assert "dry run: nothing trained" in proc.stdout, proc.stdout[-2000:]
    assert json.loads((tmp_path / "vq" / "plan.json").read_text())["world_size"] == 1
    assert json.loads((tmp_path / "pt" / "plan.json").read_text())["n_train"] == 512
    (ft,) = (tmp_path / "ft").iterdir()
    assert ft.name.startswith("finetune_form_12leads_base_linear_0.1_random_seed0_MIMIC-IV_checkpoint-200")
    assert json.loads((ft / "plan.json").read_text())["iters_per_epoch"] >= 1
    assert not (tmp_path / "results.csv").exists()  # a dry run evaluates nothing
