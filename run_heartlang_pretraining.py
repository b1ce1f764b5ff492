"""Stage 2: masked ECG-sentence pre-training of HeartLang (paper Sec. 3.3) under torchrun.

    torchrun --nproc_per_node=8 run_heartlang_pretraining.py --model HeartLang --tokenizer_model vqhbr \
        --tokenizer_weight checkpoints/vqhbr/MIMIC-IV/checkpoint-100.pth ...

The frozen VQ-HBR tokenizer is loaded strictly from ``--tokenizer_weight``. See docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from datasets.ecg_dataset import build_sentence_dataset
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
from engine.pretrain import PretrainStep, evaluate
from modeling import create_model
from modeling.checkpoint import load_checkpoint_file, load_state_dict_strict
from utils.checkpoint import build_state, save_epoch_checkpoints
from utils.dist import destroy_distributed, init_distributed_mode, print0, seed_everything
from utils.logging import TensorboardLogger, append_jsonl, save_args


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("HeartLang masked ECG-sentence pre-training", add_help=True)
    add_common_args(parser)
    m = parser.add_argument_group("model")
    m.add_argument(
        "--model", default="HeartLang", type=str, help="registry name (HeartLang, HeartLang_small, ...)"
    )
    m.add_argument("--layer_scale_init_value", default=0.1, type=float,
                   help="kept for the seed's interface; the HeartLang block has no layer scale")  # fmt: skip
    m.add_argument("--drop_path", default=0.0, type=float, help="kept for the seed's interface (unused)")
    m.add_argument("--mask_ratio", default=0.5, type=float)
    m.add_argument("--mask_before_conv", action="store_true",
                   help="corrected variant: replace masked words before the token convolution (official: after, "
                   "so a masked word leaks into its neighbours' embeddings)")  # fmt: skip
    m.add_argument("--mask_real_words_only", action="store_true",
                   help="corrected variant: mask only real words (default: official, padding included)")  # fmt: skip
    t = parser.add_argument_group("tokenizer")
    t.add_argument("--tokenizer_model", default="vqhbr", type=str)
    t.add_argument("--tokenizer_weight", default="", type=str, help="VQ-HBR checkpoint (required)")
    t.add_argument("--codebook_size", default=8192, type=int, help="tokenizer codes = HeartLang vocabulary")
    t.add_argument("--codebook_dim", default=128, type=int)
    t.add_argument("--tokenizer_targets_with_ids", action="store_true",
                   help="corrected variant: give the tokenizer the lead/time ids (official: it gets none)")  # fmt: skip
    d = parser.add_argument_group("data")
    d.add_argument("--dataset_dir", default="datasets/ecg_datasets/MIMIC-IV_QRS", type=str)
    d.add_argument("--gradient_accumulation_steps", "--update_freq", dest="update_freq", default=1, type=int)
    d.add_argument("--val_freq", default=0, type=int, help="validate every N epochs (0: never)")
    parser.set_defaults(
        lr=5e-4, min_lr=1e-5, opt_betas=[0.9, 0.98], opt_eps=1e-8, weight_decay=0.05, warmup_epochs=5,
        epochs=200, clip_grad=3.0, batch_size=64, save_ckpt_freq=20,
    )  # fmt: skip
    return parser


def load_tokenizer(args, device: torch.device) -> torch.nn.Module:
    """Frozen VQ-HBR from ``--tokenizer_weight``, strictly (every key, every shape)."""
    if not args.tokenizer_weight:
        raise ValueError(
            "--tokenizer_weight is required: the pre-training targets come from a trained VQ-HBR"
        )
    tokenizer = create_model(args.tokenizer_model, n_code=args.codebook_size, code_dim=args.codebook_dim)
    load_state_dict_strict(tokenizer, load_checkpoint_file(args.tokenizer_weight))
    tokenizer.to(device).eval()
    for p in tokenizer.parameters():
        p.requires_grad_(False)
    return tokenizer


def main(args) -> dict:
    info = init_distributed_mode(args)
    seed_everything(args.seed)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(args, info.device)
    model = create_model(
        args.model, vocab_size=args.codebook_size, mask_before_conv=args.mask_before_conv,
        padding_attention_mask=args.padding_attention_mask,
    ).to(info.device)  # fmt: skip
    model_config = dataclasses.asdict(model.config)
    train_set = build_sentence_dataset(args.dataset_dir, "train", with_labels=False)
    train_loader = make_loader(train_set, args, info, train=True)
    niter = steps_per_epoch(train_loader, args.update_freq, args.max_steps_per_epoch)
    amp = Amp(info.device, args.amp)
    print_run_header(args, info, len(train_set), niter, amp, print0)
    print0(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; "
           f"tokenizer {args.tokenizer_model} from {args.tokenizer_weight}")  # fmt: skip

    optimizer, lr_values, start_epoch, _ = setup_optimization(args, model, niter, amp)
    ddp = wrap_ddp(model, info)
    save_args(args, args.output_dir, model_config)
    tb = TensorboardLogger(args.log_dir)
    step_fn = PretrainStep(
        tokenizer, info.device, args.mask_ratio, args.mask_real_words_only, args.tokenizer_targets_with_ids
    )
    val_loader = None
    if args.val_freq > 0:
        val_set = build_sentence_dataset(args.dataset_dir, "val", with_labels=False)
        val_loader = make_loader(val_set, args, info, train=False)
    stats: dict = {}
    t0 = time.time()
    for epoch in range(start_epoch, args.epochs):
        reseed_epoch(args.seed, epoch, info.rank)
        train_loader.sampler.set_epoch(epoch)
        ddp.train()
        train_stats = train_one_epoch(
            ddp, train_loader, optimizer, amp, epoch, args, step_fn, lr_values, niter, tb, f"Epoch [{epoch}]"
        )
        stats = {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()}}
        if val_loader is not None and ((epoch + 1) % args.val_freq == 0 or epoch + 1 == args.epochs):
            val_stats = evaluate(ddp, val_loader, step_fn, amp)
            stats.update({f"val_{k}": v for k, v in val_stats.items()})
            tb.update(head="val", step=(epoch + 1) * niter, **val_stats)
        if args.save_ckpt:
            state = build_state(model, epoch, args, optimizer, amp.scaler, model_config)
            save_epoch_checkpoints(args.output_dir, epoch, args.epochs, args.save_ckpt_freq, state)
        append_jsonl(Path(args.output_dir) / "log.txt", stats)
        tb.flush()
        print0(f"epoch {epoch}: loss {train_stats['loss']:.4f}, masked-word acc {train_stats['mlm_acc']:.4f}")
    print0(f"training time {time.time() - t0:.1f} s")
    tb.close()
    destroy_distributed()
    return stats


if __name__ == "__main__":
    main(get_args_parser().parse_args())
