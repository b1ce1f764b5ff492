#!/usr/bin/env bash
# Quick-start command 2: set up .venv and run the lint check and the whole test suite (CPU, ~minutes).
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k tokenizer`. Tests run in 2 pytest-xdist
# workers (PYTEST_WORKERS=N to change, 0 = in one process); the end-to-end tests share one pipeline run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/setup_env.sh
echo "[tests] ruff check"
python -m ruff check .
echo "[tests] pytest"
set +e
workers="${PYTEST_WORKERS:-2}"
if [ "$workers" -gt 0 ]; then
    python -m pytest -n "$workers" "$@"
else
    python -m pytest "$@"
fi
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    # Exit code 5 = no test was collected: with this repository that means a broken selection or layout,
    # never success.
    echo "error: pytest collected no tests (exit code 5); check the -k/path selection or tests/ layout" >&2
fi
exit "$rc"
