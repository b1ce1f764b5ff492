"""The command-line schema shared by the three training stages and the typed configs the engine takes.

The original scripts' flag names and defaults stay the interface (docs/training.md lists every default that differs from
the original's argparse). The entry script parses argv into a Namespace and converts it ONCE, here, into
:class:`RunConfig` (the run: folders, seed, processes, checkpoints) and :class:`OptimConfig` (AdamW and its
schedule); engine code never reads the Namespace.

The recipe. By default every stage trains as the original code does ("paper-faithful"); each corrected
variant is one flag, and ``--recipe corrected`` switches all of them on at once (an explicit flag always wins:
``--recipe corrected --no_probe_backbone_eval`` keeps the original's train-mode probe):

=============================  ======  ======================================================================
flag                           stages  corrected behaviour (official behaviour in brackets)
=============================  ======  ======================================================================
--padding_attention_mask       all     padding words are masked out of attention [attended to]
--no_decay_embeddings          all     no weight decay on pos_embed, mask/cls tokens, lead/time tables and the
                                       token convolution [only 1-D tensors and biases are exempt]
--sampler_seed_from_seed       all     the training sampler's shuffle is seeded with --seed [always 0]
--all_batch_folders            1, 2    every MIMIC batch_k folder [the original's list skips batch_1]
--mask_before_conv             2       masked words replaced before the token convolution [after]
--mask_real_words_only         2       only real words are masked [padding words too]
--tokenizer_targets_with_ids   2       targets from the tokenizer WITH lead/time ids [without]
--probe_backbone_eval          3       the frozen backbone runs in eval mode (no dropout) while the linear
                                       probe trains; allows --cache_features [train mode: dropout 0.1 on]
=============================  ======  ======================================================================
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from utils.cli import COMPAT, add_switch, negation
from utils.optim import ADAMW_IMPLS

# flag -> (stages it applies to, help). Stages: "vqhbr", "pretrain", "finetune".
RECIPE_FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "padding_attention_mask": (
        ("vqhbr", "pretrain", "finetune"),
        "padding words (lead id 0) are masked out of attention; the original attends to them",
    ),
    "no_decay_embeddings": (
        ("vqhbr", "pretrain", "finetune"),
        "no weight decay on pos_embed, mask/cls tokens, lead/time embedding tables and the token convolution "
        "(the original decays them: only 1-D tensors and biases are exempt)",
    ),
    "sampler_seed_from_seed": (
        ("vqhbr", "pretrain", "finetune"),
        "seed the training sampler's shuffle with --seed (the original always uses 0)",
    ),
    "all_batch_folders": (
        ("vqhbr", "pretrain"),
        "train on every MIMIC batch_k folder (the original's folder list skips batch_1)",
    ),
    "mask_before_conv": (
        ("pretrain",),
        "replace masked words before the token convolution (original: after, so a masked word leaks into "
        "its neighbours' embeddings)",
    ),
    "mask_real_words_only": (("pretrain",), "mask only real words (original: padding words too)"),
    "tokenizer_targets_with_ids": (
        ("pretrain",),
        "give the tokenizer the lead/time ids when computing targets (original: it gets none)",
    ),
    "probe_backbone_eval": (
        ("finetune",),
        "linear probe: the frozen backbone runs in eval mode, dropout off (original: the whole classifier is "
        "in train mode, so backbone dropout 0.1 is on); needed by --cache_features",
    ),
}

# Settings that never change a result: left out of the run fingerprint (docs/robustness.md).
HARMLESS_SETTINGS = frozenset(
    {
        "output_dir", "log_dir", "num_workers", "pin_mem", "device", "resume", "auto_resume", "save_ckpt",
        "save_ckpt_freq", "local_rank", "dist_on_itp", "dist_url", "dry_run", "eval", "results_csv",
        "world_size", "val_freq", "dist_eval", "momentum", "layer_scale_init_value", "drop_path", "warmup_lr",
        # kernels that compute the same function (rounding-level differences, like --device): a run may be
        # resumed with or without them
        "compile", "compile_backend", "adamw_impl",
        # paths whose CONTENT identity is fingerprinted instead (a moved file is the same input)
        "dataset_dir", "finetune", "tokenizer_weight",
    }
)  # fmt: skip


def add_common_args(parser: argparse.ArgumentParser, stage: str) -> None:
    """Flags shared by the three stages (the original scripts' names and their defaults where they have them).

    Help texts use ``%(default)s`` because each stage sets its own defaults (``parser.set_defaults``).
    """
    g = parser.add_argument_group("run")
    g.add_argument("--output_dir", default="",
                   help="folder for checkpoints, log.txt, args.json, run.json and plan.json (required)")  # fmt: skip
    g.add_argument("--log_dir", default=None, help="TensorBoard folder (default: none, no TensorBoard log)")
    g.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available, else cpu)")
    g.add_argument("--seed", default=0, type=int,
                   help="random seed of the model init, masks and data subsets (default: %(default)s)")  # fmt: skip
    g.add_argument("--resume", default="",
                   help="continue deliberately from this checkpoint, even if the run's settings changed "
                        "(default: none)")  # fmt: skip
    add_switch(g, "auto_resume", default=True,
               help="continue from the newest checkpoint in --output_dir when its settings match")  # fmt: skip
    add_switch(g, "save_ckpt", default=True, help="write checkpoints")
    g.add_argument("--save_ckpt_freq", default=20, type=int,
                   help="also keep checkpoint-N.pth every N epochs and at the end (default: %(default)s)")  # fmt: skip
    g.add_argument("--num_workers", default=4, type=int,
                   help="data-loader worker processes per training process (default: %(default)s)")  # fmt: skip
    add_switch(g, "pin_mem", default=True, help="pinned host memory for the loader (GPU only)")
    g.add_argument("--world_size", default=1, type=int,
                   help="processes a --dry_run plans for when not launched by torchrun; torchrun sets the real "
                        "number (default: %(default)s)")  # fmt: skip
    g.add_argument("--local_rank", default=-1, type=int, help=f"{COMPAT} (torchrun's LOCAL_RANK is used)")
    g.add_argument("--dist_on_itp", action="store_true", help=COMPAT)
    g.add_argument("--dist_url", default="env://", help=f"{COMPAT} (torchrun's environment is used)")
    g.add_argument("--dist_eval", action="store_true",
                   help=f"{COMPAT}: evaluation is always sharded over the processes")  # fmt: skip
    g.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "none"],
                   help="GPU mixed precision; ignored on CPU (default: %(default)s)")  # fmt: skip
    g.add_argument("--max_steps_per_epoch", default=0, type=int,
                   help="debugging: cap the optimizer steps per epoch (default: 0, no cap)")  # fmt: skip
    g.add_argument("--dry_run", action="store_true",
                   help="resolve the run, write <output_dir>/plan.json and a summary, and exit without training")  # fmt: skip
    g.add_argument("--update_freq", "--gradient_accumulation_steps", dest="update_freq", default=1, type=int,
                   help="batches accumulated per optimizer step (default: %(default)s)")  # fmt: skip
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the module that trains (docs/training.md 'Speed'); checkpoints keep plain keys")  # fmt: skip
    g.add_argument("--compile_backend", default="inductor",
                   help="torch.compile backend: inductor, or aot_eager / eager, which compile fast (tests) "
                        "(default: %(default)s)")  # fmt: skip
    r = parser.add_argument_group("recipe (default: the original's; docs/training.md)")
    r.add_argument("--recipe", default="official", choices=["official", "corrected"],
                   help="'corrected' switches on every corrected variant below; a variant given explicitly wins "
                        "(default: %(default)s)")  # fmt: skip
    for name, (stages, text) in RECIPE_FLAGS.items():
        if stage in stages:
            # --NAME switches the corrected variant on, its negation keeps the original's behaviour (also
            # under --recipe corrected); not given: --recipe decides.
            add_switch(r, name, default=None,
                       help=f"corrected variant: {text}; --{negation(name)}: the original's behaviour "
                            "(default: as --recipe)")  # fmt: skip
    add_optimizer_args(parser)


def add_optimizer_args(parser: argparse.ArgumentParser) -> None:
    """AdamW and its schedule, shared by the three stages (each stage sets its own defaults)."""
    o = parser.add_argument_group("optimizer")
    o.add_argument("--opt", default="adamw", type=str, help="optimizer; only adamw (default: %(default)s)")
    o.add_argument("--opt_eps", default=1e-8, type=float, help="AdamW epsilon (default: %(default)s)")
    o.add_argument("--opt_betas", default=None, type=float, nargs="+",
                   help="AdamW betas, two numbers (default: %(default)s)")  # fmt: skip
    o.add_argument("--clip_grad", default=None, type=float,
                   help="max gradient norm (default: %(default)s; None: no clipping)")  # fmt: skip
    o.add_argument("--momentum", default=0.9, type=float, help=COMPAT + " (AdamW has no momentum)")
    o.add_argument("--weight_decay", default=0.05, type=float,
                   help="AdamW weight decay (default: %(default)s)")  # fmt: skip
    o.add_argument("--lr", default=5e-4, type=float,
                   help="peak learning rate after warm-up (default: %(default)s)")  # fmt: skip
    o.add_argument("--warmup_lr", default=1e-6, type=float,
                   help=COMPAT + ": the original's warm-up starts at 0")  # fmt: skip
    o.add_argument("--min_lr", default=1e-5, type=float,
                   help="learning rate at the end of the cosine schedule (default: %(default)s)")  # fmt: skip
    o.add_argument("--warmup_epochs", default=5, type=int,
                   help="epochs of linear lr warm-up (default: %(default)s)")  # fmt: skip
    o.add_argument("--warmup_steps", default=-1, type=int,
                   help="optimizer steps of warm-up; overrides --warmup_epochs when > 0 (default: %(default)s)")  # fmt: skip
    o.add_argument("--epochs", default=100, type=int, help="training epochs (default: %(default)s)")
    o.add_argument("--batch_size", default=64, type=int,
                   help="samples per process and step (default: %(default)s)")  # fmt: skip
    o.add_argument("--adamw_impl", default="auto", choices=list(ADAMW_IMPLS),
                   help="AdamW kernel: auto = fused on CPU and CUDA (measured fastest, docs/training.md 'Speed'), "
                        "else foreach; for_loop = torch's per-tensor loop (default: %(default)s)")  # fmt: skip


def resolve_recipe(args: argparse.Namespace, stage: str) -> dict[str, bool]:
    """``{flag: bool}`` of the corrected variants of ``stage``: explicit flags, else ``--recipe``."""
    corrected = args.recipe == "corrected"
    return {
        name: bool(corrected if getattr(args, name, None) is None else getattr(args, name))
        for name, (stages, _) in RECIPE_FLAGS.items()
        if stage in stages
    }


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its per-iteration schedules."""

    lr: float
    min_lr: float
    weight_decay: float
    warmup_epochs: int
    warmup_steps: int
    epochs: int
    batch_size: int  # per process, as requested (a stage may lower it: see sentences.loader.fit_batch_size)
    update_freq: int = 1
    opt: str = "adamw"
    opt_eps: float = 1e-8
    opt_betas: tuple[float, ...] | None = None
    clip_grad: float | None = None
    layer_decay: float = 1.0
    # Official behaviour (VQ-HBR only): the peak lr is --lr * (batch_size * world_size) / 128.
    lr_batch_reference: int | None = None
    no_decay_embeddings: bool = False
    adamw_impl: str = "auto"  # utils.optim.ADAMW_IMPLS


@dataclass(frozen=True)
class RunConfig:
    """Everything about the run that is not the model, the data or the optimizer."""

    stage: str
    output_dir: str
    log_dir: str | None = None
    device: str | None = None
    seed: int = 0
    resume: str = ""
    auto_resume: bool = True
    save_ckpt: bool = True
    save_ckpt_freq: int = 20
    num_workers: int = 4
    pin_mem: bool = True
    planned_world_size: int = 1
    amp: str = "bf16"
    max_steps_per_epoch: int = 0
    dry_run: bool = False
    val_freq: int = 1
    recipe: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # every resolved flag, for args.json / the fingerprint
    compile: bool = False  # torch.compile the module that trains (engine.run)
    compile_backend: str = "inductor"


def configs_from_args(
    args: argparse.Namespace, stage: str, layer_decay: float = 1.0, lr_batch_reference: int | None = None
) -> tuple[RunConfig, OptimConfig]:
    """The one conversion from the parsed Namespace to typed configs (and the checks that need no data)."""
    recipe = resolve_recipe(args, stage)
    checks = [
        (args.epochs >= 1, f"--epochs must be >= 1, got {args.epochs}"),
        (args.batch_size >= 1, f"--batch_size must be >= 1, got {args.batch_size}"),
        (args.update_freq >= 1, f"--update_freq must be >= 1, got {args.update_freq}"),
        (args.lr > 0, f"--lr must be > 0, got {args.lr}"),
        (args.min_lr >= 0, f"--min_lr must be >= 0, got {args.min_lr}"),
        (args.weight_decay >= 0, f"--weight_decay must be >= 0, got {args.weight_decay}"),
        (args.warmup_epochs >= 0, f"--warmup_epochs must be >= 0, got {args.warmup_epochs}"),
        (args.world_size >= 1, f"--world_size must be >= 1, got {args.world_size}"),
        (
            args.max_steps_per_epoch >= 0,
            f"--max_steps_per_epoch must be >= 0, got {args.max_steps_per_epoch}",
        ),
        (args.opt.lower() == "adamw", f"--opt {args.opt!r} is not supported; HeartLang trains with 'adamw'"),
        # A negative max norm would flip every gradient (clip_grad_norm_ scales by max_norm / norm).
        (
            args.clip_grad is None or args.clip_grad > 0,
            f"--clip_grad must be > 0, got {args.clip_grad} (leave it out for no clipping)",
        ),
        (args.opt_eps > 0, f"--opt_eps must be > 0, got {args.opt_eps}"),
        (
            not args.opt_betas or (len(args.opt_betas) == 2 and all(0 <= b < 1 for b in args.opt_betas)),
            f"--opt_betas must be two numbers in [0, 1), got {args.opt_betas}",
        ),
        (args.save_ckpt_freq >= 0, f"--save_ckpt_freq must be >= 0, got {args.save_ckpt_freq}"),
        (bool(args.output_dir), "--output_dir is required"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    settings = {k: v for k, v in vars(args).items()}
    settings.update(recipe)
    run = RunConfig(
        stage=stage, output_dir=args.output_dir, log_dir=args.log_dir, device=args.device, seed=args.seed,
        resume=args.resume, auto_resume=args.auto_resume, save_ckpt=args.save_ckpt,
        save_ckpt_freq=args.save_ckpt_freq, num_workers=args.num_workers, pin_mem=args.pin_mem,
        planned_world_size=args.world_size, amp=args.amp, max_steps_per_epoch=args.max_steps_per_epoch,
        dry_run=args.dry_run, val_freq=getattr(args, "val_freq", 1), recipe=recipe, settings=settings,
        compile=args.compile, compile_backend=args.compile_backend,
    )  # fmt: skip
    optim = OptimConfig(
        lr=args.lr, min_lr=args.min_lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        warmup_steps=args.warmup_steps, epochs=args.epochs, batch_size=args.batch_size,
        update_freq=args.update_freq, opt=args.opt.lower(), opt_eps=args.opt_eps,
        opt_betas=tuple(args.opt_betas) if args.opt_betas else None, clip_grad=args.clip_grad,
        layer_decay=layer_decay, lr_batch_reference=lr_batch_reference,
        no_decay_embeddings=recipe.get("no_decay_embeddings", False), adamw_impl=args.adamw_impl,
    )  # fmt: skip
    return run, optim
