#!/usr/bin/env bash
# Stage 1 (paper Sec. 3.2): VQ-HBR tokenizer on MIMIC-IV-ECG sentences, the seed README's command.
# Data: datasets/ecg_datasets/MIMIC-IV_QRS/batch_k/{train,val}_data*.npy (python QRSTokenizer.py --dataset_name MIMIC-IV)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-48}
NPROC=${NPROC:-8}
# export CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7

torchrun --nnodes=1 --nproc_per_node=$NPROC run_vqhbr_training.py \
    --output_dir checkpoints/vqhbr/MIMIC-IV/ \
    --log_dir log/vqhbr/MIMIC-IV/ \
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
