"""The QRS tokenizer stage (paper Sec. 3.1): ``tokenizer`` (one record -> words), ``detect`` + ``xqrs_kernels``
(R peaks), ``parallel`` (whole arrays), ``cli`` (QRSTokenizer.py), ``plot``, ``identity`` (fast == wfdb check).
May import numpy/scipy/wfdb/numba/matplotlib, ``datasets.preprocess``, ``utils``; never ``modeling``, ``engine``."""
