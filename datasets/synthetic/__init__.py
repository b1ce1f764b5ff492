"""Synthetic 12-lead cohort in the raw MIMIC-IV-ECG / PTB-XL formats (demo, tests): ``signal`` (closed-form
beats), ``labels`` (SCP statements), ``cohort`` (record writers, CLI). May import numpy/scipy/pandas/wfdb,
``datasets.preprocess`` and ``utils``; never ``datasets.qrs``, ``modeling`` or ``engine``."""
