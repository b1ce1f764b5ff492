#!/usr/bin/env bash
# Stage 2 (paper Sec. 3.3): masked ECG-sentence pre-training on MIMIC-IV-ECG, the original README's command.
# Writes checkpoints/pretrain/MIMIC-IV/checkpoint-200.pth, which the fine-tuning scripts read by default.
#
# Settings, each taken from the environment when set there (e.g. NPROC=2 bash scripts/pretrain/MIMIC-IV.sh):
#   TOKENIZER_WEIGHT  the VQ-HBR checkpoint; default: what scripts/vqhbr/MIMIC-IV.sh writes. The released
#                     tokenizer: TOKENIZER_WEIGHT=hf://PKUDigitalHealth/HeartLang/<file> or the downloaded path
#   NPROC        processes (GPUs); MASTER_PORT: torchrun's rendezvous port; OMP_NUM_THREADS: threads per process
#   DATA_DIR     the tokenised MIMIC-IV folder; OUTPUT_DIR: checkpoints and log.txt; LOG_DIR: TensorBoard
# Extra flags are passed through to run_heartlang_pretraining.py (e.g. --epochs 10 or --dry_run).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-32}
NPROC=${NPROC:-8}
MASTER_PORT=${MASTER_PORT:-49207}
TOKENIZER_WEIGHT=${TOKENIZER_WEIGHT:-checkpoints/vqhbr/MIMIC-IV/checkpoint-100.pth}
DATA_DIR=${DATA_DIR:-datasets/ecg_datasets/MIMIC-IV_QRS}
OUTPUT_DIR=${OUTPUT_DIR:-checkpoints/pretrain/MIMIC-IV}
LOG_DIR=${LOG_DIR:-log/pretrain/MIMIC-IV}
# export CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7

torchrun --nnodes=1 --master_port=$MASTER_PORT --nproc_per_node=$NPROC run_heartlang_pretraining.py \
    --dataset_dir "$DATA_DIR" \
    --output_dir "$OUTPUT_DIR" \
    --log_dir "$LOG_DIR" \
    --model HeartLang \
    --tokenizer_model vqhbr \
    --tokenizer_weight "$TOKENIZER_WEIGHT" \
    --batch_size 64 \
    --lr 5e-4 \
    --warmup_epochs 5 \
    --clip_grad 3.0 \
    --layer_scale_init_value 0.1 \
    --opt_betas 0.9 0.98 \
    --opt_eps 1e-8 \
    --epochs 200 \
    --save_ckpt_freq 10 \
    --codebook_size 8192 \
    --codebook_dim 128 \
    --gradient_accumulation_steps 1 \
    --world_size $NPROC \
    "$@"
