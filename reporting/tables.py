"""Tables from the results CSV (paper Sec. 4: linear probe, test macro ROC-AUC).

* :func:`collect_probe_results`: the rows ``--eval`` appended, the last one per run folder (a re-run
  appends again), as ``{task, ratio, init, seed, macro_auc, n_test, caveat}``.
* :func:`probe_table`: Markdown, pre-trained and randomly initialised encoders side by side.
* :func:`caveat_note`: the line a table carries when its rows are smoke size (numbers not meaningful).

The per-class table of one evaluation (AUC and F1 per class) is ``utils.metrics.format_table``: it is
the text form of ``ClassificationReport`` and lives beside it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from reporting.results import NOT_MEANINGFUL, is_meaningful, read_results


def collect_probe_results(
    results_csv: str | os.PathLike, finetune_root: str | os.PathLike | None = None
) -> list[dict]:
    """Rows of ``results_csv`` (last per ``output_dir``), optionally only those of runs directly under
    ``finetune_root``; sorted by task, ratio, pre-trained first. ``init`` is ``pre-trained`` when the
    run had a ``--finetune`` checkpoint."""
    latest: dict[str, dict] = {}
    for row in read_results(results_csv):
        out = row["output_dir"]
        if finetune_root is not None and Path(out).resolve().parent != Path(finetune_root).resolve():
            continue
        latest[out] = {
            "task": row["subset"],
            "ratio": float(row["ratio"]),
            "init": "pre-trained" if row["finetune"] else "random init",
            "seed": int(row["seed"]),
            "macro_auc": float(row["macro_auc"]) if row["macro_auc"] not in ("", "nan") else math.nan,
            "n_test": int(row["n_test"]),
            "caveat": row["caveat"],
        }
    return sorted(latest.values(), key=lambda r: (r["task"], r["ratio"], r["init"] != "pre-trained"))


def caveat_note(rows: list[dict]) -> str:
    """One line when any row is smoke size (or demo size), else ''."""
    smoke = [r["caveat"] for r in rows if r.get("caveat") and not is_meaningful(r)]
    if smoke:
        # "not meaningful (smoke size: a; b)" -> reasons a, b, once each over all rows.
        reasons = dict.fromkeys(x for c in smoke for x in c[len(NOT_MEANINGFUL) + 2 : -1].split("; "))
        return f"**These numbers are {NOT_MEANINGFUL}: {'; '.join(reasons)}).**"
    demo = sorted({r["caveat"] for r in rows if r.get("caveat")})
    return ("Note: " + "; ".join(demo) + ".") if demo else ""


def probe_table(rows: list[dict]) -> str:
    """One line per run (task, ratio, init), then one line per (task, ratio) with the pre-trained and
    the random-init AUC and their difference; a smoke-size note first when it applies."""
    by_key: dict[tuple[str, float], dict[str, float]] = {}
    n_test: dict[str, int] = {}
    for r in rows:
        by_key.setdefault((r["task"], r["ratio"]), {})[r["init"]] = r["macro_auc"]
        n_test[r["task"]] = r["n_test"]
    note = caveat_note(rows)
    lines = [note, ""] if note else []
    lines += ["| task | ratio | init | test macro AUC |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['ratio']:g} | {r['init']} | {r['macro_auc']:.4f} |")
    lines += ["", "| task | ratio | pre-trained | random init | difference |", "|---|---|---|---|---|"]
    for (task, ratio), aucs in sorted(by_key.items()):
        pre, rnd = aucs.get("pre-trained", math.nan), aucs.get("random init", math.nan)
        lines.append(
            f"| {task} (n_test {n_test[task]}) | {ratio:g} | {pre:.4f} | {rnd:.4f} | {pre - rnd:+.4f} |"
        )
    return "\n".join(lines)
