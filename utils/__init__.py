"""Helpers every stage shares: ``dist`` (torchrun / DDP set-up), ``optim`` (parameter groups, lr schedules),
``logging`` (metric logger, TensorBoard, JSON lines), ``metrics`` (macro AUC), ``integrity`` (fingerprints, stamps,
locks, provenance), ``arrays`` (opening .npy files, write errors naming the file). May import the standard library and third-party packages only: no other project package."""
