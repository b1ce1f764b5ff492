#!/usr/bin/env bash
# Stage 1 (paper Sec. 3.2): VQ-HBR tokenizer on MIMIC-IV-ECG sentences, the original README's command.
# Data: datasets/ecg_datasets/MIMIC-IV_QRS/batch_k/{train,val}_data*.npy (python QRSTokenizer.py --dataset_name MIMIC-IV)
#
# Settings, each taken from the environment when set there (e.g. NPROC=2 bash scripts/vqhbr/MIMIC-IV.sh):
#   NPROC        processes (GPUs); MASTER_PORT: torchrun's rendezvous port; OMP_NUM_THREADS: threads per process
#   DATA_DIR     the tokenised MIMIC-IV folder; OUTPUT_DIR: checkpoints and log.txt; LOG_DIR: TensorBoard
# Extra flags are passed through to run_vqhbr_training.py (e.g. --epochs 10 or --dry_run).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-48}
NPROC=${NPROC:-8}
MASTER_PORT=${MASTER_PORT:-29500}
DATA_DIR=${DATA_DIR:-datasets/ecg_datasets/MIMIC-IV_QRS}
OUTPUT_DIR=${OUTPUT_DIR:-checkpoints/vqhbr/MIMIC-IV/}
LOG_DIR=${LOG_DIR:-log/vqhbr/MIMIC-IV/}
# export CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7

torchrun --nnodes=1 --master_port=$MASTER_PORT --nproc_per_node=$NPROC run_vqhbr_training.py \
    --dataset_dir "$DATA_DIR" \
    --output_dir "$OUTPUT_DIR" \
    --log_dir "$LOG_DIR" \
    --model vqhbr \
    --codebook_n_emd 8192 \
    --codebook_emd_dim 128 \
    --quantize_kmeans_init \
    --batch_size 64 \
    --opt adamw \
    --opt_betas 0.9 0.99 \
    --weight_decay 1e-4 \
    --warmup_epochs 10 \
    --epochs 100 \
    --save_ckpt_freq 10 \
    --world_size $NPROC \
    --val_freq 10 \
    --lr 5e-5 \
    --min_lr 1e-5 \
    "$@"
