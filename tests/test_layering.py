"""Import rules between the packages (docs/ARCHITECTURE.md "Import rules"), checked on the source with ast.

Every ``import`` / ``from ... import`` in a package's modules (also those inside functions, and relative
ones) must name only the project packages the rule allows; third-party modules are not restricted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Package (or sub-package) -> the project packages its modules may import. The most specific key applies.
ALLOWED: dict[str, set[str]] = {
    "utils": {"utils"},
    "modeling": {"modeling", "utils"},
    "datasets": {"datasets", "utils"},
    "sentences": {"sentences", "datasets.preprocess.splits", "utils"},
    "datasets.preprocess": {"datasets.preprocess", "utils"},
    "datasets.qrs": {"datasets.qrs", "datasets.preprocess", "utils"},
    "datasets.synthetic": {"datasets.synthetic", "datasets.preprocess", "utils"},
    "reporting": {"reporting", "utils"},
    "inference": {"inference", "modeling", "datasets", "utils"},
    "engine": {"engine", "modeling", "sentences", "reporting", "utils"},
}


def project_names(root: Path) -> set[str]:
    """Top-level names that are this project's: folders and root modules (entry scripts)."""
    names = {p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    names |= {p.stem for p in root.glob("*.py")}
    return names - {".venv", "build", "dist"}


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``path``; ``from a import b`` yields ``a.b`` (b may be a
    module), relative imports are resolved against the file's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(root, path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [
                (node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base) for alias in node.names
            ]
    return found


def rule_for(module: str) -> tuple[str, set[str]] | None:
    keys = [k for k in ALLOWED if module == k or module.startswith(k + ".")]
    if not keys:
        return None
    key = max(keys, key=len)
    return key, ALLOWED[key]


def allowed(target: str, allow: set[str]) -> bool:
    return any(target == a or target.startswith(a + ".") for a in allow)


def violations(root: Path, packages: list[str] | None = None) -> list[str]:
    """'file:line: <package> imports <module>' for every import that breaks its package's rule."""
    projects = project_names(root)
    out = []
    for top in packages or sorted({k.split(".")[0] for k in ALLOWED}):
        for path in sorted((root / top).rglob("*.py")):
            module = module_name(root, path)
            rule = rule_for(module)
            if rule is None:
                continue
            key, allow = rule
            for line, target in imported_modules(root, path):
                if target.split(".")[0] not in projects:
                    continue  # standard library / third party
                if not allowed(target, allow):
                    out.append(f"{path.relative_to(root)}:{line}: {key} imports {target}")
    return out


@pytest.mark.parametrize("package", sorted({k.split(".")[0] for k in ALLOWED}))
def test_package_imports_follow_the_rules(package):
    assert (REPO / package / "__init__.py").is_file(), package
    assert violations(REPO, [package]) == []


def test_every_package_folder_says_what_lives_there_and_what_it_may_import():
    for init in sorted(REPO.glob("*/__init__.py")) + sorted(REPO.glob("*/*/__init__.py")):
        if ".venv" in init.parts:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "may import" in doc.lower(), f"{init.relative_to(REPO)}: docstring must say what it may import"
    for folder in ("scripts", "benchmarks"):
        assert "may import" in (REPO / folder / "README.md").read_text(encoding="utf-8").lower(), folder


def test_the_checker_finds_a_forbidden_import(tmp_path):
    for pkg in ("utils", "modeling", "engine", "datasets", "datasets/qrs"):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "modeling" / "ok.py").write_text("import torch\nfrom utils import dist\nfrom . import ok\n")
    (tmp_path / "modeling" / "bad.py").write_text("def f():\n    from engine.loop import train_one_epoch\n")
    (tmp_path / "datasets" / "qrs" / "bad.py").write_text("from ..synthetic import cohort\nimport modeling\n")
    (tmp_path / "utils" / "bad.py").write_text("from datasets import qrs\n")
    assert violations(tmp_path) == [
        "datasets/qrs/bad.py:1: datasets.qrs imports datasets.synthetic.cohort",
        "datasets/qrs/bad.py:2: datasets.qrs imports modeling",
        "modeling/bad.py:2: modeling imports engine.loop.train_one_epoch",
        "utils/bad.py:1: utils imports datasets.qrs",
    ]


def module_of(root: Path, target: str) -> str | None:
    """The project module an import names: the longest dotted prefix that is a file or a package."""
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:n])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return ".".join(parts[:n])
    return None


def import_cycles(root: Path) -> list[list[str]]:
    """Every import cycle between the project's modules (imports inside functions count too): the strongly
    connected components of the import graph with more than one module, each sorted."""
    projects = project_names(root)
    paths = [p for p in root.rglob("*.py") if p.relative_to(root).parts[0] in projects and ".venv" not in p.parts]
    graph: dict[str, set[str]] = {}
    for path in paths:
        name = module_name(root, path)
        targets = {module_of(root, t) for _, t in imported_modules(root, path) if t.split(".")[0] in projects}
        graph[name] = {t for t in targets if t and t != name}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def test_no_import_cycles():
    assert import_cycles(REPO) == []


def test_the_checker_finds_an_import_cycle(tmp_path):
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "__init__.py").write_text("")
    (tmp_path / "engine" / "a.py").write_text("from engine.b import f\n")
    (tmp_path / "engine" / "b.py").write_text("def f():\n    from engine import c\n")
    (tmp_path / "engine" / "c.py").write_text("from .a import g\n")
    (tmp_path / "engine" / "d.py").write_text("import engine.a\n")
    assert import_cycles(tmp_path) == [["engine.a", "engine.b", "engine.c"]]
