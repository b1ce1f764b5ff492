"""Stage 1: train the VQ-HBR tokenizer (paper Sec. 3.2) under torchrun.

    torchrun --nproc_per_node=8 run_vqhbr_training.py --output_dir checkpoints/vqhbr/MIMIC-IV/ ...

Data: ``--dataset_dir`` (default datasets/ecg_datasets/MIMIC-IV_QRS) with train/val sentences, directly or in
``batch_k/`` folders. The run itself (plan, output folder, resume, epochs, checkpoints) is engine/run.py;
this file is the original scripts' flags and the stage's wiring. See docs/training.md.
"""

from __future__ import annotations

from utils.procs import die_with_launcher

die_with_launcher()  # first, before torch is imported: a torchrun worker ends with its launcher

import argparse  # noqa: E402

from engine.config import add_common_args, configs_from_args  # noqa: E402
from engine.run import train  # noqa: E402
from engine.vqhbr import VQHBRTraining, vqhbr_task  # noqa: E402

# Official behaviour: the original multiplies --lr by (batch_size x world_size) / 128 for this stage only.
LR_BATCH_REFERENCE = 128


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("VQ-HBR training", add_help=True)
    add_common_args(parser, "vqhbr")
    m = parser.add_argument_group("model")
    m.add_argument(
        "--model",
        default="vqhbr",
        type=str,
        help="registry name: vqhbr, vqhbr_small, vqhbr_tiny (default: %(default)s)",
    )
    m.add_argument(
        "--codebook_n_emd", default=8192, type=int, help="number of codebook codes (default: %(default)s)"
    )
    m.add_argument(
        "--codebook_emd_dim", default=128, type=int, help="codebook code dimension (default: %(default)s)"
    )
    m.add_argument("--ema_decay", default=0.99, type=float, help="codebook EMA decay (default: %(default)s)")
    m.add_argument(
        "--quantize_kmeans_init", action="store_true", help="k-means init of the codebook (default: off)"
    )
    m.add_argument(
        "--val_freq",
        default=20,
        type=int,
        help="validate every N epochs and at the end (default: %(default)s)",
    )
    m.add_argument("--dataset_dir", default="datasets/ecg_datasets/MIMIC-IV_QRS", type=str,
                   help="tokenised MIMIC-IV folder (its batch_k subfolders) or one folder of sentences "
                        "(default: %(default)s)")  # fmt: skip
    parser.set_defaults(
        lr=5e-5, min_lr=1e-5, opt_betas=[0.9, 0.99], weight_decay=1e-4, warmup_epochs=10, epochs=100,
        batch_size=64, save_ckpt_freq=20,
    )  # fmt: skip
    return parser


def build_config(args: argparse.Namespace) -> VQHBRTraining:
    for flag, ok in (("codebook_n_emd", args.codebook_n_emd >= 1), ("codebook_emd_dim", args.codebook_emd_dim >= 1),
                     ("ema_decay", 0 <= args.ema_decay < 1)):  # fmt: skip
        if not ok:
            rule = "in [0, 1)" if flag == "ema_decay" else ">= 1"
            raise ValueError(f"--{flag} must be {rule}, got {getattr(args, flag)}")
    run, optim = configs_from_args(args, "vqhbr", lr_batch_reference=LR_BATCH_REFERENCE)
    return VQHBRTraining(
        run, optim, dataset_dir=args.dataset_dir, model=args.model, codebook_size=args.codebook_n_emd,
        codebook_dim=args.codebook_emd_dim, ema_decay=args.ema_decay, kmeans_init=args.quantize_kmeans_init,
    )  # fmt: skip


def main(args: argparse.Namespace) -> dict:
    return train(build_config(args), vqhbr_task)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
