"""Runtime data: the tokenised ECG sentences as training, evaluation and feature export read them.
``dataset`` (memory-mapped sentence Datasets, MIMIC ``batch_k`` folders, checks against the model), ``labels`` (0/1 check, class names,
label-fraction subsets)
and ``loader`` (loaders, samplers, batch arithmetic). The offline pipeline that writes the sentences is ``datasets/``.
May import torch, numpy, ``utils`` and the split algorithm ``datasets.preprocess.splits`` (``--split_ratio``); nothing
else of ``datasets``, never ``modeling``, ``engine``, ``inference`` or ``reporting``."""
