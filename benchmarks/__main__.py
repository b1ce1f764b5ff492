"""``python -m benchmarks <name> [args]``: every benchmark of the project, one subcommand each.

``python -m benchmarks`` lists them; ``python -m benchmarks <name> --help`` shows a subcommand's flags.
Each writes ``benchmarks/results/<file>.json`` through benchmarks/common.py.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one line)
SUBCOMMANDS = {
    "dropout": ("benchmarks.dropout", "dropout forward on CPU: the models' fast dropout vs torch's F.dropout"),
    "model": ("benchmarks.model", "forward+backward of the full-size models vs the original's kernels"),
    "train": (
        "benchmarks.train",
        "training step of every stage: engine vs a bare loop with the original's kernels",
    ),
    "compile": ("benchmarks.compile", "--compile: parity on tiny models, speed at full size"),
    "loader": ("benchmarks.loader", "pre-training loader samples/s vs what GPUs consume"),
    "tokenizer": ("benchmarks.tokenizer", "QRS tokenizer vs the original's way on real PTB-XL; exactness"),
    "preprocess_memory": ("benchmarks.preprocess_memory", "MIMIC preprocessing peak memory vs records"),
    "preprocess_startup": (
        "benchmarks.preprocess_startup",
        "MIMIC preprocessing start-up and peak memory vs a baseline commit",
    ),
    "synthetic": ("benchmarks.synthetic", "synthetic cohort generator throughput vs neurokit2"),
    "scale": ("benchmarks.scale", "data stages at 1k-50k MIMIC-like records: time, memory, bytes"),
    "crash_resume": ("benchmarks.crash_resume", "kill -9 of each data stage mid-run, rerun: identical outputs, what is redone"),
    "startup": ("benchmarks.startup", "launch to first training step and memory per process, 1/2/4 processes"),
    "robustness": ("benchmarks.robustness", "outcome counts of every hostile case"),
    "probe_mode": ("benchmarks.probe_mode", "linear probe: train-mode vs eval-mode backbone on real PTB-XL"),
    "contention": (
        "benchmarks.contention",
        "training on cores other jobs use: OpenMP's default vs passive wait policy",
    ),
    "profile": (
        "benchmarks.profile",
        "where the time goes: pre-training step ops (torch.profiler), QRS tokenizer paths",
    ),
    "gpu": (
        "benchmarks.gpu",
        "GPU: AMP bf16/fp16, SDPA vs plain, --compile, MFU, NCCL training of each stage",
    ),
}


def usage() -> str:
    lines = ["usage: python -m benchmarks <name> [args]", "", "subcommands:"]
    lines += [f"  {name:<18} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sys.argv = [f"python -m benchmarks {name}", *rest]
    rc = module.main(rest)
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
