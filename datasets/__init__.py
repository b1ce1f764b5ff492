"""Data, in the order the pipeline reads it: ``preprocess/`` (raw sources -> arrays), ``qrs/`` (arrays ->
ECG sentences), ``synthetic/`` (the demo cohort), ``ecg_dataset`` (memory-mapped sentence Datasets).
May import numpy/scipy/pandas/wfdb/torch and ``utils``; never ``modeling`` or ``engine``."""
