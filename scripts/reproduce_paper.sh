#!/usr/bin/env bash
# Paper Table 1 (linear probe): PTB-XL super/sub/form/rhythm, CPSC2018, CSN x 1/10/100 % x seeds, from one
# pre-trained checkpoint; prints ours (mean +- std) beside the paper's numbers, writes <output_dir>/table.md.
#   bash scripts/reproduce_paper.sh --finetune checkpoints/pretrain/MIMIC-IV/checkpoint-200.pth --seeds 0 1 2
# All flags: python scripts/reproduce_paper.py --help. Needs the tokenised data sets (docs/end_to_end.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/setup_env.sh
source "$ROOT/scripts/setup_env.sh"
exec python "$ROOT/scripts/reproduce_paper.py" "$@"
