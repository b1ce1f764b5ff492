"""Stage 1: train the VQ-HBR tokenizer (paper Sec. 3.2) under torchrun.

    torchrun --nproc_per_node=8 run_vqhbr_training.py --output_dir checkpoints/vqhbr/MIMIC-IV/ ...

Data: ``--dataset_dir`` (default datasets/ecg_datasets/MIMIC-IV_QRS) with train/val sentences,
directly or in ``batch_k/`` folders. See docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

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
from engine.vqhbr import ema_usage_stats, evaluate, vqhbr_step
from modeling import create_model
from utils.checkpoint import build_state, save_epoch_checkpoints
from utils.dist import destroy_distributed, init_distributed_mode, print0, seed_everything
from utils.logging import TensorboardLogger, append_jsonl, save_args


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("VQ-HBR training", add_help=True)
    add_common_args(parser)
    m = parser.add_argument_group("model")
    m.add_argument(
        "--model", default="vqhbr", type=str, help="registry name (vqhbr, vqhbr_small, vqhbr_tiny)"
    )
    m.add_argument("--codebook_n_emd", default=8192, type=int, help="number of codes")
    m.add_argument("--codebook_emd_dim", default=128, type=int, help="code dimension")
    m.add_argument("--ema_decay", default=0.99, type=float, help="codebook EMA decay")
    m.add_argument("--quantize_kmeans_init", action="store_true", help="k-means init of the codebook")
    m.add_argument("--val_freq", default=20, type=int, help="validate every N epochs (and at the end)")
    m.add_argument("--dataset_dir", default="datasets/ecg_datasets/MIMIC-IV_QRS", type=str)
    m.add_argument("--update_freq", "--gradient_accumulation_steps", dest="update_freq", default=1, type=int)
    parser.set_defaults(
        lr=5e-5, min_lr=1e-5, opt_betas=[0.9, 0.99], weight_decay=1e-4, warmup_epochs=10, epochs=100,
        batch_size=64, save_ckpt_freq=20,
    )  # fmt: skip
    return parser


def main(args) -> dict:
    info = init_distributed_mode(args)
    seed_everything(args.seed)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    model = create_model(
        args.model, n_code=args.codebook_n_emd, code_dim=args.codebook_emd_dim, decay=args.ema_decay,
        quantize_kmeans_init=args.quantize_kmeans_init, padding_attention_mask=args.padding_attention_mask,
    ).to(info.device)  # fmt: skip
    model_config = dataclasses.asdict(model.config)
    train_set = build_sentence_dataset(args.dataset_dir, "train", with_labels=False)
    val_set = build_sentence_dataset(args.dataset_dir, "val", with_labels=False)
    train_loader = make_loader(train_set, args, info, train=True)
    val_loader = make_loader(val_set, args, info, train=False)
    niter = steps_per_epoch(train_loader, args.update_freq, args.max_steps_per_epoch)
    amp = Amp(info.device, args.amp)
    print_run_header(args, info, len(train_set), niter, amp, print0)
    n_parameters = sum(p.numel() for p in model.parameters())
    print0(f"model {args.model}: {n_parameters / 1e6:.2f} M parameters")

    optimizer, lr_values, start_epoch, _ = setup_optimization(args, model, niter, amp)
    ddp = wrap_ddp(model, info)
    save_args(args, args.output_dir, model_config)
    tb = TensorboardLogger(args.log_dir)
    step_fn = lambda net, batch: vqhbr_step(net, batch, info.device)  # noqa: E731
    stats: dict = {}
    t0 = time.time()
    for epoch in range(start_epoch, args.epochs):
        reseed_epoch(args.seed, epoch, info.rank)
        train_loader.sampler.set_epoch(epoch)
        ddp.train()
        train_stats = train_one_epoch(
            ddp, train_loader, optimizer, amp, epoch, args, step_fn, lr_values, niter, tb, f"Epoch [{epoch}]"
        )
        train_stats.update(ema_usage_stats(model))
        stats = {"epoch": epoch, "n_parameters": n_parameters}
        stats.update({f"train_{k}": v for k, v in train_stats.items()})
        if (epoch + 1) % args.val_freq == 0 or epoch + 1 == args.epochs:
            val_stats = evaluate(ddp, val_loader, info.device, amp)
            stats.update({f"val_{k}": v for k, v in val_stats.items()})
            tb.update(head="val", step=(epoch + 1) * niter, **val_stats)
            print0(f"epoch {epoch}: val rec_loss {val_stats.get('rec_loss', float('nan')):.5f}, "
                   f"unused codes {val_stats['unused_codes']}, perplexity {val_stats['perplexity']:.1f}")  # fmt: skip
        tb.update(head="codebook", step=(epoch + 1) * niter, **ema_usage_stats(model))
        if args.save_ckpt:
            state = build_state(model, epoch, args, optimizer, amp.scaler, model_config)
            save_epoch_checkpoints(args.output_dir, epoch, args.epochs, args.save_ckpt_freq, state)
        append_jsonl(Path(args.output_dir) / "log.txt", stats)
        tb.flush()
    print0(f"training time {time.time() - t0:.1f} s; last epoch stats: {json.dumps(stats, default=str)}")
    tb.close()
    destroy_distributed()
    return stats


if __name__ == "__main__":
    main(get_args_parser().parse_args())
