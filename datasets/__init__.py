"""The offline pipeline, in the order it runs: ``synthetic/`` (the demo cohort of raw records), ``preprocess/`` (raw
sources -> arrays), ``qrs/`` (arrays -> ECG sentences). Torch-free; what reads the sentences at run time is ``sentences/``.
May import numpy/scipy/pandas/wfdb/numba and ``utils``; never ``sentences``, ``modeling`` or ``engine``."""
