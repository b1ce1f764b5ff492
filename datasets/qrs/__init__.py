"""The QRS tokenizer stage (paper Sec. 3.1): ``tokenizer`` (one record -> words), ``detect`` + ``xqrs_kernels``
(R peaks), ``parallel`` (whole arrays), ``summary`` (a split's statistics), ``cli``
(QRSTokenizer.py, ``TokenizerConfig``), ``plot``, ``identity`` (fast == wfdb check).
May import numpy/scipy/wfdb/numba/matplotlib, ``datasets.preprocess``, ``utils``; never ``modeling``, ``engine``."""
