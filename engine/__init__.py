"""Training engine: ``run`` (the one run lifecycle: plan, output folder, resume, epoch loop, checkpoints, logs),
``config`` (CLI schema -> typed configs), ``loop`` (one epoch, AMP, DDP), ``data`` (loaders) and one module per
stage (``vqhbr``, ``pretrain``, ``finetune``: its step and evaluation). May import modeling, datasets, utils,
reporting; never the entry scripts."""
