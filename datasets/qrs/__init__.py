"""The QRS tokenizer stage (paper Sec. 3.1): ``tokenizer`` (one record -> words), ``detect`` (R peaks),
``parallel`` (whole arrays), ``cli`` (QRSTokenizer.py), ``plot``. May import numpy/scipy/wfdb/matplotlib,
``datasets.preprocess.signal`` and ``utils``; never ``modeling`` or ``engine``."""
