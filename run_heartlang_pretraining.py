"""Stage 2: masked ECG-sentence pre-training of HeartLang (paper Sec. 3.3) under torchrun.

    torchrun --nproc_per_node=8 run_heartlang_pretraining.py --model HeartLang --tokenizer_model vqhbr \
        --tokenizer_weight checkpoints/vqhbr/MIMIC-IV/checkpoint-100.pth ...

The frozen VQ-HBR tokenizer is loaded strictly from ``--tokenizer_weight``. The run itself (plan, output
folder, resume, epochs, checkpoints) is engine/run.py; the recipe (data, model, targets, step, evaluation) is
engine/pretrain.py's ``pretrain_task``; this file is the original scripts' flags.
See docs/training.md.
"""

from __future__ import annotations

from utils.procs import die_with_launcher

die_with_launcher()  # first, before torch is imported: a torchrun worker ends with its launcher

import argparse  # noqa: E402

from engine.config import add_common_args, configs_from_args  # noqa: E402
from engine.pretrain import TARGET_MODES, Pretraining, pretrain_task  # noqa: E402
from engine.run import train  # noqa: E402
from utils.cli import COMPAT  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("HeartLang masked ECG-sentence pre-training", add_help=True)
    add_common_args(parser, "pretrain")
    m = parser.add_argument_group("model")
    m.add_argument(
        "--model",
        default="HeartLang",
        type=str,
        help="registry name: HeartLang, HeartLang_small, HeartLang_tiny (default: %(default)s)",
    )
    m.add_argument("--layer_scale_init_value", default=0.1, type=float,
                   help=COMPAT + ": the HeartLang block has no layer scale")  # fmt: skip
    m.add_argument("--drop_path", default=0.0, type=float, help=COMPAT)
    m.add_argument("--mask_ratio", default=0.5, type=float,
                   help="fraction of the 256 word positions masked per sentence (default: %(default)s)")  # fmt: skip
    t = parser.add_argument_group("tokenizer")
    t.add_argument("--tokenizer_model", default="vqhbr", type=str,
                   help="registry name of the VQ-HBR tokenizer in --tokenizer_weight (default: %(default)s)")  # fmt: skip
    t.add_argument(
        "--tokenizer_weight",
        default="",
        type=str,
        help="VQ-HBR checkpoint: a path or hf://org/repo/file (default: none; required to train)",
    )
    t.add_argument("--codebook_size", default=None, type=int,
                   help="tokenizer codes = HeartLang vocabulary (default: read from --tokenizer_weight; must match it)")  # fmt: skip
    t.add_argument(
        "--codebook_dim",
        default=None,
        type=int,
        help="code dimension (default: read from --tokenizer_weight)",
    )
    t.add_argument("--targets", default="cached", choices=list(TARGET_MODES),
                   help="cached: the tokenizer's targets computed once per data set next to the sentences "
                        "(engine/targets.py) and read by the loader; on_the_fly: a tokenizer forward every step, "
                        "as the original (default: %(default)s)")  # fmt: skip
    d = parser.add_argument_group("data")
    d.add_argument("--dataset_dir", default="datasets/ecg_datasets/MIMIC-IV_QRS", type=str,
                   help="tokenised MIMIC-IV folder (its batch_k subfolders) or one folder of sentences "
                        "(default: %(default)s)")  # fmt: skip
    d.add_argument(
        "--val_freq", default=0, type=int, help="validate every N epochs; 0: never (default: %(default)s)"
    )
    parser.set_defaults(
        lr=5e-4, min_lr=1e-5, opt_betas=[0.9, 0.98], opt_eps=1e-8, weight_decay=0.05, warmup_epochs=5,
        epochs=200, clip_grad=3.0, batch_size=64, save_ckpt_freq=20,
    )  # fmt: skip
    return parser


def build_config(args: argparse.Namespace) -> Pretraining:
    if not 0 < args.mask_ratio < 1:
        raise ValueError(f"--mask_ratio must be in (0, 1), got {args.mask_ratio}")
    run, optim = configs_from_args(args, "pretrain")
    return Pretraining.create(
        run, optim, dataset_dir=args.dataset_dir, model=args.model, tokenizer_model=args.tokenizer_model,
        tokenizer_weight=args.tokenizer_weight, codebook_size=args.codebook_size, codebook_dim=args.codebook_dim,
        mask_ratio=args.mask_ratio, targets=args.targets,
    )  # fmt: skip


def main(args: argparse.Namespace) -> dict:
    return train(build_config(args), pretrain_task)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
