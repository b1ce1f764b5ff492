"""Outcome counts of every hostile case, data stages and training stages together (docs/robustness.md).

    python -m benchmarks robustness --data_only    # the data-stage suite -> run "data_stages"
    python -m benchmarks robustness                # the training suite, merged with the stored data-stage run
    python -m benchmarks robustness --rerun_data   # both suites

Runs tests/test_robustness_data.py / tests/test_robustness_training.py through pytest (one parametrisation =
one case, tagged ``@case(class, stage, outcome)``) and stores, in benchmarks/results/robustness.json, per class
the cases tried, their outcomes (refused | redone | resumed | kept | reported | reported_skipped |
skipped_same | stopped) and the stages they hit. "silently_wrong" counts the cases whose asserted outcome did
not hold: it must be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import pytest

from benchmarks.common import REPO, add_output_args, read_run, write_results

DATA_SUITE = "tests/test_robustness_data.py"
SUITE = "tests/test_robustness_training.py"
# the numbered hostile-case classes -> the tags of the two suites
CLASSES = {
    "changed_settings": "1. changed settings, old outputs",
    "stale_outputs": "2. changed inputs, old outputs",
    "nonfinite_degenerate": "3. non-finite and degenerate data",
    "concurrent_writers": "4. concurrent writers",
    "bad_arguments": "5. arguments checked up front",
}


class Collect:
    def __init__(self) -> None:
        self.cases: list[dict] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self._items[report.nodeid]["passed"] = report.outcome == "passed"

    def pytest_collection_modifyitems(self, items) -> None:
        self._items = {}
        for item in items:
            tag = getattr(item.function, "robustness", None)
            if tag is not None:
                rec = {"case": item.nodeid.split("::", 1)[1], **tag, "passed": None}
                self._items[item.nodeid] = rec
                self.cases.append(rec)
            else:
                self._items[item.nodeid] = {}


def summarise(cases: list[dict], stage_of=lambda case: case["stage"]) -> dict:
    """``{class: {cases, outcomes, stages, failed}}`` of tagged cases (``stage_of`` names a case's stage)."""
    by_class: dict = {}
    for c in cases:
        entry = by_class.setdefault(
            c["class"], {"cases": 0, "outcomes": Counter(), "stages": Counter(), "failed": 0}
        )
        entry["cases"] += 1
        entry["outcomes"][c["outcome"]] += 1
        entry["stages"][stage_of(c)] += 1
        entry["failed"] += c["passed"] is not True
    return {
        k: {**v, "outcomes": dict(v["outcomes"]), "stages": dict(v["stages"])} for k, v in by_class.items()
    }


SCRIPT_STAGES = {"run_vqhbr_training.py": "vqhbr", "run_heartlang_pretraining.py": "pretrain",
                 "run_class_finetuning.py": "finetune"}  # fmt: skip


def _stage(case: dict) -> str:
    """A case tagged for every stage (``all``) counts for the stage its parametrisation runs."""
    if case["stage"] == "all":
        for script, stage in SCRIPT_STAGES.items():
            if script in case["case"]:
                return stage
    return case["stage"]


def run_suite(path: str, stage_of=lambda case: case["stage"]) -> dict:
    """Run one hostile suite; its cases with their tags and whether the asserted outcome held."""
    collect = Collect()
    t0 = time.time()
    rc = pytest.main(["-q", "-p", "no:cacheprovider", path], plugins=[collect])
    return {
        "suite": path, "cases": len(collect.cases), "silently_wrong": sum(c["passed"] is not True for c in collect.cases),
        "by_class": summarise(collect.cases, stage_of), "case_list": collect.cases, "seconds": round(time.time() - t0, 1),
        "pytest_exit_code": int(rc),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser("python -m benchmarks robustness", description=__doc__.splitlines()[0])
    p.add_argument("--data_only", action="store_true", help="run the data-stage suite only (run data_stages)")
    p.add_argument("--rerun_data", action="store_true", help="rerun the data-stage suite first")
    add_output_args(p)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.chdir(REPO)
    if args.data_only or args.rerun_data:
        data = run_suite(DATA_SUITE)
        write_results("robustness", data, argv, label="data_stages", out=args.out)
        print(json.dumps({k: v for k, v in data.items() if k != "case_list"}, indent=1))
        if args.data_only:
            return data["pytest_exit_code"] or int(data["silently_wrong"] > 0)
    try:
        data = read_run("robustness", "data_stages")
    except (OSError, KeyError):
        raise SystemExit("no stored data-stage run: python -m benchmarks robustness --data_only (or --rerun_data)") from None
    training = run_suite(SUITE, _stage)
    everything = [{**c, "suite": "data"} for c in data["case_list"]]
    everything += [{**c, "suite": "training"} for c in training["case_list"]]
    merged = summarise(everything, _stage)
    result = {
        "what": "hostile cases per class and their asserted outcome; silently_wrong must be 0",
        "cases": len(everything),
        "silently_wrong": sum(c["passed"] is not True for c in everything),
        "by_class": {CLASSES.get(k, k): merged[k] for k in CLASSES if k in merged},
        "suites": {
            "data": {k: v for k, v in data.items() if k not in ("case_list", "command", "machine")},
            "training": {k: v for k, v in training.items() if k != "case_list"},
        },
        "case_list": everything,
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("case_list", "suites")}, indent=1))
    write_results("robustness", result, argv, label=args.label, out=args.out)
    return training["pytest_exit_code"] or int(result["silently_wrong"] > 0)


if __name__ == "__main__":
    sys.exit(main())
