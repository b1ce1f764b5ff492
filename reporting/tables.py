"""Tables from the results CSV (paper Sec. 4: linear probe, test macro ROC-AUC), with intervals.

* :func:`collect_probe_results`: the rows ``--eval`` appended, the last one per run folder (a re-run
  appends again), as ``{task, ratio, init, seed, macro_auc, macro_auprc, *_ci, n_test, caveat, ...}``.
* :func:`paired_differences`: pre-trained minus random init for each (task, ratio, seed) whose two runs
  share a test set, with the paired bootstrap interval (utils.metrics.paired_bootstrap) from the runs'
  predictions files.
* :func:`seed_mean_differences`: with several seeds, the mean over seeds of those paired differences, with
  an interval from resampling the records jointly for every seed (utils.metrics.paired_bootstrap_seeds).
* :func:`probe_table`: Markdown: every run with its intervals, then the paired differences, then (with
  several seeds) mean, standard deviation and the per-seed values, and the seed-mean differences.
* :func:`caveat_note`: the line a table carries when its rows are smoke size (numbers not meaningful).

How to read them: docs/evidence.md. The per-class table of one evaluation (AUC, AUPRC, F1, positives per
class) is ``utils.metrics.format_table``: it is the text form of ``ClassificationReport`` and lives beside it.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

import numpy as np

from reporting.results import NOT_MEANINGFUL, is_meaningful, load_predictions, read_results
from utils.metrics import N_BOOTSTRAP, fold_mean_paired_seeds, paired_bootstrap, paired_bootstrap_seeds

PRE, RANDOM = "pre-trained", "random init"


def _float(value: str) -> float:
    return float(value) if value not in ("", "nan", None) else math.nan


def collect_probe_results(
    results_csv: str | os.PathLike, finetune_root: str | os.PathLike | None = None
) -> list[dict]:
    """Rows of ``results_csv`` (last per ``output_dir``), optionally only those of runs directly under
    ``finetune_root``; sorted by task, ratio, pre-trained first, seed. ``init`` is ``pre-trained`` when the
    run had a ``--finetune`` checkpoint. Interval columns of older files are NaN."""
    latest: dict[str, dict] = {}
    for row in read_results(results_csv):
        out = row["output_dir"]
        if finetune_root is not None and Path(out).resolve().parent != Path(finetune_root).resolve():
            continue
        latest[out] = {
            "task": row["dataset"] if row["subset"] == "all" else row["subset"],  # CPSC2018 / CSN: no subset
            "ratio": float(row["ratio"]),
            "init": PRE if row["finetune"] else RANDOM,
            "seed": int(row["seed"]),
            "macro_auc": _float(row["macro_auc"]),
            "macro_auprc": _float(row["macro_auprc"]),
            "macro_auc_ci": (_float(row["macro_auc_ci_low"]), _float(row["macro_auc_ci_high"])),
            "macro_auprc_ci": (_float(row["macro_auprc_ci_low"]), _float(row["macro_auprc_ci_high"])),
            "bootstrap": row["bootstrap"],
            "n_test": int(row["n_test"]),
            "positives": row["positives"],
            "predictions": row["predictions"],
            "run_id": row["run_id"],
            "output_dir": out,
            "caveat": row["caveat"],
        }
    return sorted(latest.values(), key=lambda r: (r["task"], r["ratio"], r["init"] != PRE, r["seed"]))


def caveat_note(rows: list[dict]) -> str:
    """One line when any row is smoke size (or demo size), else ''."""
    smoke = [r["caveat"] for r in rows if r.get("caveat") and not is_meaningful(r)]
    if smoke:
        # "not meaningful (smoke size: a; b)" -> reasons a, b, once each over all rows.
        reasons = dict.fromkeys(x for c in smoke for x in c[len(NOT_MEANINGFUL) + 2 : -1].split("; "))
        return f"**These numbers are {NOT_MEANINGFUL}: {'; '.join(reasons)}).**"
    demo = sorted({r["caveat"] for r in rows if r.get("caveat")})
    return ("Note: " + "; ".join(demo) + ".") if demo else ""


def fmt_ci(value: float, ci: tuple[float, float] | None, signed: bool = False) -> str:
    """``0.8123 [0.7801, 0.8420]``; without a (finite) interval just the value."""
    if not math.isfinite(value):
        return "n/a"
    v = f"{value:+.4f}" if signed else f"{value:.4f}"
    if ci is None or not all(math.isfinite(x) for x in ci):
        return v
    return f"{v} [{ci[0]:+.4f}, {ci[1]:+.4f}]" if signed else f"{v} [{ci[0]:.4f}, {ci[1]:.4f}]"


def paired_differences(rows: list[dict], n_boot: int = N_BOOTSTRAP, seed: int = 0) -> list[dict]:
    """Pre-trained minus random init per (task, ratio, seed) where both runs exist.

    The interval comes from resampling the shared test records jointly (both runs' predictions files must
    hold the same labels in the same order); without predictions (older files) only the difference of the
    two macro values is given and ``paired`` is False."""
    runs: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        runs.setdefault((r["task"], r["ratio"], r["seed"]), {})[r["init"]] = r
    out = []
    for (task, ratio, seed_), pair in sorted(runs.items()):
        if PRE not in pair or RANDOM not in pair:
            continue
        a, b = pair[PRE], pair[RANDOM]
        d = {"task": task, "ratio": ratio, "seed": seed_, "n_test": a["n_test"], "pre_auc": a["macro_auc"],
             "random_auc": b["macro_auc"], "pre_auprc": a["macro_auprc"], "random_auprc": b["macro_auprc"],
             "macro_auc_diff": a["macro_auc"] - b["macro_auc"], "macro_auprc_diff": a["macro_auprc"] - b["macro_auprc"],
             "macro_auc_diff_ci": None, "macro_auprc_diff_ci": None, "paired": False}  # fmt: skip
        if a.get("predictions") and b.get("predictions"):
            pa, pb = load_predictions(a["predictions"]), load_predictions(b["predictions"])
            if pa["labels"].shape != pb["labels"].shape or not np.array_equal(pa["labels"], pb["labels"]):
                raise ValueError(
                    f"{a['output_dir']} and {b['output_dir']}: the test labels differ, so the two runs do not "
                    "share a test set and cannot be paired"
                )
            p = paired_bootstrap(pa["labels"], pa["probs"], pb["probs"], n_boot, seed)
            d.update(
                {
                    k: p[k]
                    for k in (
                        "macro_auc_diff",
                        "macro_auc_diff_ci",
                        "macro_auprc_diff",
                        "macro_auprc_diff_ci",
                    )
                }
            )
            d["paired"], d["bootstrap"] = True, f"plain,{p['n_boot']},seed{p['seed']}"
        out.append(d)
    return out


def _paired_seed_runs(rows: list[dict], min_seeds: int):
    """Per (task, ratio) with at least ``min_seeds`` seeds whose pre-trained and random-init runs share a test
    set (both with predictions files): ``(task, ratio, seeds, labels, pre-trained probs, random probs)``."""
    runs: dict[tuple, dict[int, dict[str, dict]]] = {}
    for r in rows:
        if r.get("predictions"):
            runs.setdefault((r["task"], r["ratio"]), {}).setdefault(r["seed"], {})[r["init"]] = r
    for (task, ratio), by_seed in sorted(runs.items()):
        seeds = sorted(s for s, pair in by_seed.items() if PRE in pair and RANDOM in pair)
        if len(seeds) < min_seeds:
            continue
        labels, pre, rnd = None, [], []
        for s in seeds:
            pa, pb = (load_predictions(by_seed[s][k]["predictions"]) for k in (PRE, RANDOM))
            for p, r in ((pa, by_seed[s][PRE]), (pb, by_seed[s][RANDOM])):
                if labels is None:
                    labels = p["labels"]
                if p["labels"].shape != labels.shape or not np.array_equal(p["labels"], labels):
                    raise ValueError(f"{r['output_dir']}: its test labels differ from the other seeds' runs of "
                                     f"{task} ratio {ratio:g}, so the seeds cannot be paired")  # fmt: skip
            pre.append(pa["probs"])
            rnd.append(pb["probs"])
        yield task, ratio, seeds, labels, pre, rnd


def seed_mean_differences(rows: list[dict], n_boot: int = N_BOOTSTRAP, seed: int = 0) -> list[dict]:
    """Per (task, ratio) with at least two seeds whose pre-trained and random-init runs share a test set (both
    with predictions files): the mean over those seeds of pre-trained minus random init, macro AUC and AUPRC,
    with a 95 % interval from resampling the test records jointly (one resample scores every seed's two runs
    on the same records), and the per-seed differences."""
    out = []
    for task, ratio, seeds, labels, pre, rnd in _paired_seed_runs(rows, 2):
        d = paired_bootstrap_seeds(labels, pre, rnd, n_boot, seed)
        out.append({"task": task, "ratio": ratio, "seeds": seeds, "n_test": int(len(labels)),
                    **{k: v for k, v in d.items() if k != "method"},
                    "bootstrap": f"plain,{d['n_boot']},seed{d['seed']}"})  # fmt: skip
    return out


def fold_mean_differences(
    rows: list[dict], folds_of: dict, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> list[dict]:
    """Rotated folds (``folds_of[task]``: the test fold of each test record, in record order): per (task,
    ratio), the pre-trained and random-init probes scored fold by fold (each fold's head on its own test
    records; mean over folds, then seeds) and their paired difference (utils.metrics.fold_mean_paired_seeds).
    Pooling the folds' predictions instead ranks the heads against each other (docs/evidence.md)."""
    out = []
    for task, ratio, seeds, labels, pre, rnd in _paired_seed_runs(rows, 1):
        if task in folds_of:
            d = fold_mean_paired_seeds(labels, pre, rnd, folds_of[task], n_boot, seed)
            out.append({"task": task, "ratio": ratio, "seeds": seeds, "n_test": int(len(labels)), **d})
    return out


def fold_mean_table(per_fold: list[dict]) -> str:
    """Markdown of :func:`fold_mean_differences`."""
    lines = ["Scored fold by fold (each fold's probe on its own test records; mean over folds, then seeds; "
             "intervals: records resampled within each fold, jointly for both encoders):", "",
             "| task | ratio | folds | seeds | pre-trained macro AUC [95 % CI] | random init macro AUC [95 % CI] | "
             "AUC difference [95 % CI] (per seed) | AUPRC difference [95 % CI] |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in per_fold:
        per_seed = ", ".join(f"{x:+.3f}" for x in r["per_seed_auc_diff"])
        lines.append(f"| {r['task']} ({r['n_test']}) | {r['ratio']:g} | {r['n_folds']} | {len(r['seeds'])} | "
                     f"{fmt_ci(r['macro_auc_a'], r['macro_auc_a_ci'])} | {fmt_ci(r['macro_auc_b'], r['macro_auc_b_ci'])} | "
                     f"{fmt_ci(r['macro_auc_diff'], r['macro_auc_diff_ci'], True)} ({per_seed}) | "
                     f"{fmt_ci(r['macro_auprc_diff'], r['macro_auprc_diff_ci'], True)} |")  # fmt: skip
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.4f} (1 seed)"
    return f"{statistics.mean(vals):.4f} +- {statistics.stdev(vals):.4f}"


def seed_summary(rows: list[dict], diffs: list[dict]) -> list[dict]:
    """Per (task, ratio): per init the per-seed macro AUC / AUPRC, their mean and standard deviation, and the
    per-seed paired differences."""
    out: dict[tuple, dict] = {}
    for r in rows:
        s = out.setdefault((r["task"], r["ratio"]), {"task": r["task"], "ratio": r["ratio"]})
        s.setdefault(r["init"], {"seeds": [], "macro_auc": [], "macro_auprc": []})
        for k in ("macro_auc", "macro_auprc"):
            s[r["init"]][k].append(r[k])
        s[r["init"]]["seeds"].append(r["seed"])
    for d in diffs:
        s = out[(d["task"], d["ratio"])].setdefault(
            "difference", {"seeds": [], "macro_auc": [], "macro_auprc": []}
        )
        s["seeds"].append(d["seed"])
        s["macro_auc"].append(d["macro_auc_diff"])
        s["macro_auprc"].append(d["macro_auprc_diff"])
    return list(out.values())


def probe_table(rows: list[dict], n_boot: int = N_BOOTSTRAP) -> str:
    """Markdown: one line per run (with its intervals), the paired pre-trained - random differences, and with
    several seeds the mean +- std and per-seed values; a smoke-size note first when it applies."""
    note = caveat_note(rows)
    lines = [note, ""] if note else []
    boot = sorted({r["bootstrap"] for r in rows if r.get("bootstrap")})
    lines.append(
        "Intervals: 95 % bootstrap, " + (f"{', '.join(boot)} (resampling, resamples, seed)" if boot else "none in these rows")
        + "; docs/evidence.md says how to read them."
    )  # fmt: skip
    lines += ["", "| task | ratio | init | seed | n_test | macro AUC [95 % CI] | macro AUPRC [95 % CI] |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['ratio']:g} | {r['init']} | {r['seed']} | {r['n_test']} | "
            f"{fmt_ci(r['macro_auc'], r['macro_auc_ci'])} | {fmt_ci(r['macro_auprc'], r['macro_auprc_ci'])} |"
        )
    diffs = paired_differences(rows, n_boot)
    if diffs:
        lines += ["", "Pre-trained minus random init on the same test records (paired bootstrap):", "",
                  "| task | ratio | seed | pre-trained AUC | random init AUC | AUC difference [95 % CI] | "
                  "AUPRC difference [95 % CI] |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for d in diffs:
            lines.append(
                f"| {d['task']} (n_test {d['n_test']}) | {d['ratio']:g} | {d['seed']} | {d['pre_auc']:.4f} | "
                f"{d['random_auc']:.4f} | {fmt_ci(d['macro_auc_diff'], d['macro_auc_diff_ci'], True)} | "
                f"{fmt_ci(d['macro_auprc_diff'], d['macro_auprc_diff_ci'], True)} |"
            )
    summary = [
        s
        for s in seed_summary(rows, diffs)
        if any(len(v["seeds"]) > 1 for k, v in s.items() if isinstance(v, dict))
    ]
    if summary:
        lines += ["", "Over seeds (subset selection and probe seed): mean +- standard deviation, then the per-seed values:", "",
                  "| task | ratio | init | seeds | macro AUC | per seed | macro AUPRC | per seed |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for s in summary:
            for init in (PRE, RANDOM, "difference"):
                if init not in s:
                    continue
                v = s[init]
                per = [", ".join(f"{x:.4f}" for x in v[k]) for k in ("macro_auc", "macro_auprc")]
                lines.append(
                    f"| {s['task']} | {s['ratio']:g} | {init} | {', '.join(map(str, v['seeds']))} | "
                    f"{_mean_std(v['macro_auc'])} | {per[0]} | {_mean_std(v['macro_auprc'])} | {per[1]} |"
                )
    means = seed_mean_differences(rows, n_boot)
    if means:
        lines += ["", "Pre-trained minus random init, mean over seeds (records resampled jointly for every seed):", "",
                  "| task | ratio | seeds | AUC difference [95 % CI] | per seed | AUPRC difference [95 % CI] | per seed |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for m in means:
            per = [", ".join(f"{x:+.4f}" for x in m[k]) for k in ("per_seed_auc_diff", "per_seed_auprc_diff")]
            lines.append(
                f"| {m['task']} (n_test {m['n_test']}) | {m['ratio']:g} | {', '.join(map(str, m['seeds']))} | "
                f"{fmt_ci(m['macro_auc_diff'], m['macro_auc_diff_ci'], True)} | {per[0]} | "
                f"{fmt_ci(m['macro_auprc_diff'], m['macro_auprc_diff_ci'], True)} | {per[1]} |"
            )
    return "\n".join(lines)
