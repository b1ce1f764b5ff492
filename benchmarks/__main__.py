"""``python -m benchmarks <name> [args]``: every benchmark of the project, one subcommand each.

``python -m benchmarks`` lists them; ``python -m benchmarks <name> --help`` shows a subcommand's flags.
Each writes ``benchmarks/results/<file>.json`` through benchmarks/common.py.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one line)
SUBCOMMANDS = {
    "scale": ("benchmarks.scale", "data stages at 1k-50k MIMIC-like records: time, memory, bytes (docs/scale.md)"),
}


def usage() -> str:
    lines = ["usage: python -m benchmarks <name> [args]", "", "subcommands:"]
    lines += [f"  {name:<14} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sys.argv = [f"python -m benchmarks {name}", *rest]
    module.main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
