"""Preprocessing of raw ECG sources into the original scripts' on-disk layout (docs/preprocessing.md; paper Sec. 4.1).

Modules: ``config`` (the typed settings of each step), ``signal`` (shared signal ops), ``records`` (I/O, skip log, summaries, process pool),
``npy_writer`` (memory-mapped row writer), ``labels`` (class tables), ``splits`` (iterative
stratification, split files), ``downstream`` (CPSC2018/CSN driver) and one module per source:
``mimic``, ``ptbxl``, ``cpsc2018``, ``csn``. May import numpy/scipy/pandas/wfdb/scikit-learn and ``utils``;
never ``datasets.qrs``, ``datasets.synthetic``, ``modeling`` or ``engine``.
"""

#: The completion records a preprocessing folder may hold (``utils.artifacts.Step``), and the key of the
#: stamp inside each: ``preprocess_stamp.json`` (PTB-XL subsets, CPSC2018, CSN), ``DONE.json`` (MIMIC batches).
COMPLETION_RECORDS = {"preprocess_stamp.json": None, "DONE.json": "stamp"}
