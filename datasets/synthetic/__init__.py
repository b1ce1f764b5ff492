"""Synthetic 12-lead cohort in the raw MIMIC-IV-ECG / PTB-XL formats (demo, tests): ``signal`` (closed-form
beats), ``labels`` (SCP statements), ``cohort`` (record writers, CLI). Imports numpy/pandas/wfdb and
``datasets.preprocess.records`` only."""
