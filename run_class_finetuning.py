"""Stage 3: linear probing / fine-tuning and evaluation on downstream tasks (paper Sec. 4) under torchrun.

    torchrun --nproc_per_node=1 run_class_finetuning.py --dataset_dir datasets/ecg_datasets/PTBXL_QRS/form \
        --model HeartLang_finetune_base --finetune checkpoints/heartlang_base/checkpoint-200.pth \
        --trainable linear --split_ratio 1 --sampling_method random --is_binary --nb_classes 19 ...
    (the same command with --eval reports the test AUC of output_dir/checkpoint-best.pth)

The run itself (plan, output folder, resume, epochs, checkpoints) is engine/run.py; this file is the original
scripts' flags and the stage's wiring. See docs/training.md.
"""

from __future__ import annotations

from utils.procs import die_with_launcher

die_with_launcher()  # first, before torch is imported: a torchrun worker ends with its launcher

import argparse  # noqa: E402

from engine.config import add_common_args, configs_from_args  # noqa: E402
from engine.finetune import EVAL, Finetuning, finetune_task  # noqa: E402
from engine.run import evaluate_trained, train  # noqa: E402
from sentences.labels import SAMPLING_METHODS  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("HeartLang fine-tuning / linear probing", add_help=True)
    add_common_args(parser, "finetune")
    m = parser.add_argument_group("model")
    m.add_argument("--model", default="HeartLang_finetune_base", type=str,
                   help="classifier registry name (HeartLang_finetune_base, _small, _tiny) (default: %(default)s)")  # fmt: skip
    m.add_argument("--finetune", default="", help="pre-trained HeartLang checkpoint: a path or hf://org/repo/file (default: empty, the official "
                        "random init)")  # fmt: skip
    m.add_argument("--trainable", default="linear", choices=["linear", "all"],
                   help="linear: train only the classification head (linear probe); all: the whole model "
                        "(default: %(default)s)")  # fmt: skip
    m.add_argument("--nb_classes", default=5, type=int,
                   help="number of classes; must match the label files (default: %(default)s)")  # fmt: skip
    m.add_argument(
        "--is_binary",
        action="store_true",
        help="multi-label labels, BCE-with-logits loss (default: off, single-label cross-entropy)",
    )
    m.add_argument(
        "--layer_decay",
        default=0.9,
        type=float,
        help="layer-wise lr decay factor, used with --trainable all (default: %(default)s)",
    )
    m.add_argument("--cache_features", action="store_true",
                   help="linear probe with an eval-mode backbone: compute the CLS features once, train mlp_head on them")  # fmt: skip
    d = parser.add_argument_group("data")
    d.add_argument("--dataset_dir", default="datasets/ecg_datasets/PTBXL_QRS/superdiagnostic", type=str,
                   help="tokenised folder with {train,val,test}_data*.npy and _labels.npy (default: %(default)s)")  # fmt: skip
    d.add_argument(
        "--split_ratio",
        default=1.0,
        type=float,
        help="fraction of the training set used, in (0, 1]; the paper uses 0.01, 0.1, 1 (default: %(default)s)",
    )
    d.add_argument("--sampling_method", default="random", choices=list(SAMPLING_METHODS),
                   help="how --split_ratio picks the training records (docs/training.md) (default: %(default)s)")  # fmt: skip
    e = parser.add_argument_group("evaluation")
    e.add_argument("--eval", action="store_true", help="test output_dir/checkpoint-best.pth and exit")
    e.add_argument(
        "--results_csv",
        default="results/finetune_results.csv",
        help="CSV that --eval appends one row to (default: %(default)s)",
    )
    parser.set_defaults(
        lr=5e-3, min_lr=1e-5, weight_decay=0.05, warmup_epochs=10, epochs=100, batch_size=256, save_ckpt_freq=100,
    )  # fmt: skip
    return parser


def build_config(args: argparse.Namespace) -> Finetuning:
    if args.nb_classes < 1:
        raise ValueError(f"--nb_classes must be >= 1, got {args.nb_classes}")
    if not 0 < args.split_ratio <= 1:
        raise ValueError(f"--split_ratio must be in (0, 1], got {args.split_ratio}")
    if not 0 < args.layer_decay <= 1:
        raise ValueError(f"--layer_decay must be in (0, 1], got {args.layer_decay}")
    # Layer decay only matters when the blocks train (--trainable all); the linear probe trains mlp_head.
    layer_decay = args.layer_decay if args.trainable == "all" else 1.0
    run, optim = configs_from_args(args, "finetune", layer_decay=layer_decay)
    return Finetuning.create(
        run, optim, dataset_dir=args.dataset_dir, model=args.model, nb_classes=args.nb_classes,
        is_binary=args.is_binary, trainable=args.trainable, finetune=args.finetune, split_ratio=args.split_ratio,
        sampling_method=args.sampling_method, cache_features=args.cache_features, results_csv=args.results_csv,
    )  # fmt: skip


def main(args: argparse.Namespace) -> dict:
    cfg = build_config(args)
    return evaluate_trained(cfg, EVAL) if args.eval else train(cfg, finetune_task)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
