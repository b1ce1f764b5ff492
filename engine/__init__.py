"""Training engine: ``run`` (the one run lifecycle: plan, output folder, resume, epoch loop, checkpoints, logs),
``config`` (CLI schema -> typed configs), ``loop`` (one epoch, AMP, DDP) and one module per
stage (``vqhbr``, ``pretrain``, ``finetune``: its step and evaluation). Reads its data through ``sentences``
(Datasets, loaders). May import modeling, sentences, utils, reporting; never ``datasets`` or the entry scripts."""
