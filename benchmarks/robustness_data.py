"""Count the hostile data-stage cases of tests/test_robustness_data.py per issue-11 class and outcome.

    python benchmarks/robustness_data.py        # -> benchmarks/results/robustness_data.json

Runs the suite through pytest and records, for every case (one parametrisation = one case), its class
(stale_outputs | nonfinite_degenerate | bad_arguments), stage, expected outcome (refused | redone |
reported_skipped | skipped_same) and whether the assertion of that exact outcome held. "silently_wrong"
counts cases whose asserted outcome did not hold; it must be 0. The lead merges this file with the
training-stage cases into benchmarks/results/robustness.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "robustness_data.json"


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


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    collect = Collect()
    t0 = time.time()
    rc = pytest.main(["-q", "-p", "no:cacheprovider", "tests/test_robustness_data.py"], plugins=[collect])
    cases = collect.cases
    result = {
        "suite": "tests/test_robustness_data.py",
        "cases": len(cases),
        "silently_wrong": sum(c["passed"] is not True for c in cases),
        "by_class": summarise(cases),
        "case_list": cases,
        "seconds": round(time.time() - t0, 1),
        "pytest_exit_code": int(rc),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "case_list"}, indent=1))
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
