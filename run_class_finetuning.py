"""Stage 3: linear probing / fine-tuning and evaluation on downstream tasks (paper Sec. 4) under torchrun.

    torchrun --nproc_per_node=1 run_class_finetuning.py --dataset_dir datasets/ecg_datasets/PTBXL_QRS/form \
        --model HeartLang_finetune_base --finetune checkpoints/heartlang_base/checkpoint-200.pth \
        --trainable linear --split_ratio 1 --sampling_method random --is_binary --nb_classes 19 ...
    (the same command with --eval reports the test AUC of output_dir/checkpoint-best.pth)

See docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from datasets.ecg_dataset import build_sentence_dataset, load_class_names, subsample_indices
from engine.common import (
    Amp,
    add_common_args,
    make_loader,
    print_run_header,
    reseed_epoch,
    setup_optimization,
    steps_per_epoch,
    train_one_epoch,
    wrap_ddp,
)
from engine.finetune import (
    FinetuneStep,
    append_result_row,
    count_leads,
    describe_dataset_dir,
    evaluate,
    extract_features,
    set_train_mode,
    set_trainable,
)
from modeling import create_model
from modeling.checkpoint import load_checkpoint_file, load_pretrained_into_classifier, load_state_dict_strict
from utils.checkpoint import build_state, save_checkpoint, save_epoch_checkpoints
from utils.dist import destroy_distributed, init_distributed_mode, is_main_process, print0, seed_everything
from utils.logging import TensorboardLogger, append_jsonl, save_args
from utils.metrics import format_table


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("HeartLang fine-tuning / linear probing", add_help=True)
    add_common_args(parser)
    m = parser.add_argument_group("model")
    m.add_argument("--model", default="HeartLang_finetune_base", type=str)
    m.add_argument("--finetune", default="", help="pre-training checkpoint (empty: official random init)")
    m.add_argument("--trainable", default="linear", choices=["linear", "all"])
    m.add_argument("--nb_classes", default=5, type=int)
    m.add_argument(
        "--is_binary", action="store_true", help="multi-label: BCE-with-logits (else cross-entropy)"
    )
    m.add_argument("--layer_decay", default=0.9, type=float)
    m.add_argument(
        "--cache_features",
        action="store_true",
        help="linear probe: compute the frozen backbone's CLS features once and train mlp_head on them",
    )
    m.add_argument("--update_freq", "--gradient_accumulation_steps", dest="update_freq", default=1, type=int)
    d = parser.add_argument_group("data")
    d.add_argument("--dataset_dir", default="datasets/ecg_datasets/PTBXL_QRS/super_class", type=str)
    d.add_argument(
        "--split_ratio", default=1.0, type=float, help="share of the training set used (0.01/0.1/1)"
    )
    d.add_argument("--sampling_method", default="random", choices=["random", "stratified"])
    e = parser.add_argument_group("evaluation")
    e.add_argument("--eval", action="store_true", help="test output_dir/checkpoint-best.pth and exit")
    e.add_argument(
        "--results_csv", default="results/finetune_results.csv", help="--eval appends one row here"
    )
    parser.set_defaults(
        lr=5e-3, min_lr=1e-6, weight_decay=0.05, warmup_epochs=10, epochs=100, batch_size=256, save_ckpt_freq=100,
    )  # fmt: skip
    return parser


def build_model(args, device: torch.device) -> torch.nn.Module:
    model = create_model(
        args.model, num_classes=args.nb_classes, padding_attention_mask=args.padding_attention_mask
    )
    if args.finetune:
        load_pretrained_into_classifier(model, load_checkpoint_file(args.finetune))
        print0(f"loaded pre-trained backbone from {args.finetune}")
    elif not args.eval:
        # Official behaviour: without --finetune the original re-draws EVERY parameter from U(-0.1, 0.1)
        # (fixtures README item 7); it defines the "no pre-training" baseline.
        model.randomly_initialize_weights(-0.1, 0.1)
        print0("no --finetune: every parameter drawn from U(-0.1, 0.1) (official random init)")
    return model.to(device)


def run_eval(args, info, model, amp) -> dict:
    """Test macro AUC of ``output_dir/checkpoint-best.pth``: table on stdout, one row in the CSV."""
    best = Path(args.output_dir) / "checkpoint-best.pth"
    if not best.is_file():
        raise FileNotFoundError(f"--eval needs {best}: train first with the same --output_dir")
    load_state_dict_strict(model, load_checkpoint_file(best))
    test_set = build_sentence_dataset(args.dataset_dir, "test")
    loader = make_loader(test_set, args, info, train=False)
    stats, report = evaluate(model, loader, info.device, amp, args.is_binary, "Test")
    names = load_class_names(args.dataset_dir, args.nb_classes)
    print0(
        f"test of {best} on {args.dataset_dir} ({report.n_samples} records)\n" + format_table(report, names)
    )
    dataset, subset = describe_dataset_dir(args.dataset_dir)
    row = {
        "dataset": dataset, "subset": subset, "leads": count_leads(test_set.chans), "ratio": args.split_ratio,
        "sampling": args.sampling_method, "seed": args.seed, "trainable": args.trainable, "model": args.model,
        "finetune": args.finetune, "macro_auc": f"{report.macro_auc:.6f}", "macro_f1": f"{report.macro_f1:.6f}",
        "accuracy": f"{report.accuracy:.6f}", "n_test": report.n_samples,
        "classes_without_auc": ";".join(names[c] for c in report.undefined_classes), "output_dir": args.output_dir,
    }  # fmt: skip
    if is_main_process():
        append_result_row(args.results_csv, row)
        append_jsonl(Path(args.output_dir) / "test_log.txt", {**stats, **row})
        print0(f"appended to {args.results_csv}")
    return {**stats, "per_class_auc": report.per_class_auc.tolist()}


def main(args) -> dict:
    info = init_distributed_mode(args)
    seed_everything(args.seed)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    amp = Amp(info.device, args.amp)
    model = build_model(args, info.device)
    model_config = dataclasses.asdict(model.config)
    if args.eval:
        out = run_eval(args, info, model, amp)
        destroy_distributed()
        return out

    if args.cache_features and args.trainable != "linear":
        raise ValueError(
            "--cache_features needs --trainable linear: a backbone that trains changes its features"
        )
    set_trainable(model, args.trainable)
    train_full = build_sentence_dataset(args.dataset_dir, "train")
    keep = subsample_indices(np.asarray(train_full.labels), args.split_ratio, args.sampling_method, args.seed)
    train_set = Subset(train_full, keep.tolist())
    val_set = build_sentence_dataset(args.dataset_dir, "val")
    print0(
        f"training on {len(train_set)} of {len(train_full)} records ({args.sampling_method}, ratio {args.split_ratio})"
    )
    train_loader = make_loader(train_set, args, info, train=True)
    val_loader = make_loader(val_set, args, info, train=False)
    niter = steps_per_epoch(train_loader, args.update_freq, args.max_steps_per_epoch)
    print_run_header(args, info, len(train_set), niter, amp, print0)

    # Layer decay only matters when the blocks train (--trainable all); the linear probe trains mlp_head.
    layer_decay = args.layer_decay if args.trainable == "all" else 1.0
    optimizer, lr_values, start_epoch, ckpt = setup_optimization(args, model, niter, amp, layer_decay)
    best_auc = float(ckpt.get("best_val_auc", -math.inf)) if ckpt else -math.inf
    train_model = model
    if args.cache_features:
        # The frozen backbone in eval mode gives the same CLS feature every epoch: compute it once (after
        # resuming, from the weights actually used) and train mlp_head alone on the cached features.
        train_set = extract_features(model, make_loader(train_set, args, info, train=False), info.device, amp)
        val_set = extract_features(model, val_loader, info.device, amp)
        train_loader = make_loader(train_set, args, info, train=True)
        val_loader = make_loader(val_set, args, info, train=False)
        train_model = model.mlp_head
    ddp = wrap_ddp(train_model, info)
    save_args(args, args.output_dir, model_config)
    tb = TensorboardLogger(args.log_dir)
    step_fn = FinetuneStep(info.device, args.is_binary)
    stats: dict = {}
    t0 = time.time()
    for epoch in range(start_epoch, args.epochs):
        reseed_epoch(args.seed, epoch, info.rank)
        train_loader.sampler.set_epoch(epoch)
        set_train_mode(ddp, args.trainable)
        train_stats = train_one_epoch(
            ddp, train_loader, optimizer, amp, epoch, args, step_fn, lr_values, niter, tb, f"Epoch [{epoch}]"
        )
        val_stats, _ = evaluate(ddp, val_loader, info.device, amp, args.is_binary, "Val")
        tb.update(head="val", step=(epoch + 1) * niter, **val_stats)
        auc = val_stats["macro_auc"]
        improved = not math.isnan(auc) and auc > best_auc
        if improved:
            best_auc = auc
        stats = {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()}}
        stats.update({f"val_{k}": v for k, v in val_stats.items()}, best_val_auc=best_auc)
        if args.save_ckpt:
            state = build_state(
                model, epoch, args, optimizer, amp.scaler, model_config, best_val_auc=best_auc
            )
            # A val split where no class has both positives and negatives has no AUC in any epoch: keep
            # the last epoch as the "best" so --eval still works, and say so loudly.
            no_auc_ever = math.isinf(best_auc) and epoch == args.epochs - 1
            if no_auc_ever:
                print0(
                    f"WARNING: validation macro AUC was undefined in every epoch ({args.dataset_dir} val split "
                    "has no class with both positive and negative records); checkpoint-best.pth = last epoch"
                )
            if improved or no_auc_ever:
                save_checkpoint(args.output_dir, "checkpoint-best.pth", state)
            save_epoch_checkpoints(args.output_dir, epoch, args.epochs, args.save_ckpt_freq, state)
        append_jsonl(Path(args.output_dir) / "log.txt", stats)
        tb.flush()
        print0(
            f"epoch {epoch}: train loss {train_stats['loss']:.4f}, val macro AUC {auc:.4f} (best {best_auc:.4f})"
        )
    print0(f"training time {time.time() - t0:.1f} s; best val macro AUC {best_auc:.4f}")
    tb.close()
    destroy_distributed()
    return stats


if __name__ == "__main__":
    main(get_args_parser().parse_args())
