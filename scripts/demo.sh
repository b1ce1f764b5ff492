#!/usr/bin/env bash
# Quick start: the whole HeartLang pipeline on a synthetic cohort, on CPU (or every visible GPU).
#   bash scripts/demo.sh                      # minutes on 2 CPU cores (docs/end_to_end.md), all under demo_output/
#   bash scripts/demo.sh --output_dir DIR     # another folder;  --smoke: the smallest run (tiny models)
#   bash scripts/demo.sh --dry_run            # only print the stage commands
# Creates .venv on first use (scripts/setup_env.sh), then runs scripts/run_demo.py with the given flags.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/setup_env.sh
source "$ROOT/scripts/setup_env.sh"
exec python "$ROOT/scripts/run_demo.py" "$@"
