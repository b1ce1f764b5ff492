"""Issue-11 outcome counts of every hostile case, data stages and training stages together.

    python benchmarks/robustness.py               # training suite; data counts from results/robustness_data.json
    python benchmarks/robustness.py --rerun_data  # also rerun benchmarks/robustness_data.py first

Runs tests/test_robustness_training.py through pytest (one parametrisation = one case, tagged
``@case(class, stage, outcome)``), merges the data-stage counts written by benchmarks/robustness_data.py,
and writes benchmarks/results/robustness.json: per issue class the cases tried, their outcomes (refused |
redone | resumed | kept | reported | reported_skipped | skipped_same | stopped) and the stages they hit.
"silently_wrong" counts the cases whose asserted outcome did not hold: it must be 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "robustness.json"
DATA = RESULTS / "robustness_data.json"
SUITE = "tests/test_robustness_training.py"
# issue 11's numbered classes -> the tags of the two suites
ISSUE_CLASSES = {
    "changed_settings": "1. changed settings, old outputs",
    "stale_outputs": "2. changed inputs, old outputs",
    "nonfinite_degenerate": "3. non-finite and degenerate data",
    "concurrent_writers": "4. concurrent writers",
    "bad_arguments": "5. arguments checked up front",
}


def _data_module():
    spec = importlib.util.spec_from_file_location(
        "robustness_data", ROOT / "benchmarks" / "robustness_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT_STAGES = {"run_vqhbr_training.py": "vqhbr", "run_heartlang_pretraining.py": "pretrain",
                 "run_class_finetuning.py": "finetune"}  # fmt: skip


def _stage(case: dict) -> str:
    """A case tagged for every stage (``all``) counts for the stage its parametrisation runs."""
    if case["stage"] == "all":
        for script, stage in SCRIPT_STAGES.items():
            if script in case["case"]:
                return stage
    return case["stage"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rerun_data", action="store_true", help="rerun the data-stage suite first")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    data_module = _data_module()
    if args.rerun_data:
        data_module.main()
    if not DATA.is_file():
        raise SystemExit(f"{DATA} is missing: run python benchmarks/robustness_data.py (or --rerun_data)")
    data = json.loads(DATA.read_text())

    collect = data_module.Collect()
    t0 = time.time()
    rc = pytest.main(["-q", "-p", "no:cacheprovider", SUITE], plugins=[collect])
    training = {
        "suite": SUITE, "cases": len(collect.cases), "silently_wrong": sum(c["passed"] is not True for c in collect.cases),
        "by_class": data_module.summarise(collect.cases, _stage), "case_list": collect.cases, "seconds": round(time.time() - t0, 1),
        "pytest_exit_code": int(rc),
    }  # fmt: skip
    everything = [{**c, "suite": "data"} for c in data["case_list"]]
    everything += [{**c, "suite": "training"} for c in collect.cases]
    merged = data_module.summarise(everything, _stage)
    result = {
        "what": "issue 11: hostile cases per class and their asserted outcome; silently_wrong must be 0",
        "cases": len(everything),
        "silently_wrong": sum(c["passed"] is not True for c in everything),
        "by_class": {ISSUE_CLASSES.get(k, k): merged[k] for k in ISSUE_CLASSES if k in merged},
        "suites": {
            "data": {k: v for k, v in data.items() if k != "case_list"},
            "training": {k: v for k, v in training.items() if k != "case_list"},
        },
        "case_list": everything,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("case_list", "suites")}, indent=1))
    print(f"wrote {OUT}")
    return int(rc) or int(result["silently_wrong"] > 0)


if __name__ == "__main__":
    sys.exit(main())
