"""Command-line conventions shared by every entry script and ``python -m`` tool.

* One negation style: a switch is ``--NAME`` (on) and ``--no_NAME`` (off); a switch whose name already
  starts with ``no_`` is negated by dropping it (``--no_decay_embeddings`` / ``--decay_embeddings``), so no
  double negative exists. :func:`add_switch` is the only way the project declares an on/off pair.
* Flags kept only so that the original scripts' commands run unchanged say so with :data:`COMPAT`.
"""

from __future__ import annotations

import argparse

COMPAT = "accepted for compatibility with the original scripts; no effect"


def negation(name: str) -> str:
    """The off-spelling of switch ``name`` (without dashes): ``x`` -> ``no_x``, ``no_x`` -> ``x``."""
    return name[3:] if name.startswith("no_") else f"no_{name}"


class Switch(argparse.Action):
    """``--NAME`` stores True, ``--no_NAME`` (see :func:`negation`) stores False."""

    def __init__(self, option_strings, dest, default=None, help=None, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string == self.option_strings[0])

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def add_switch(
    parser, name: str, *, default: bool | None, help: str, dest: str | None = None
) -> argparse.Action:
    """Declare ``--name`` / ``--<negation(name)>`` on ``parser`` (a parser or an argument group).

    ``default`` None means "not given": the caller resolves it (e.g. from ``--recipe``) and its help says
    how; otherwise " (default: on|off)" is appended, so every switch states its default the same way.
    """
    text = help if default is None else f"{help} (default: {'on' if default else 'off'})"
    return parser.add_argument(
        f"--{name}", f"--{negation(name)}", action=Switch, dest=dest or name, default=default, help=text
    )
