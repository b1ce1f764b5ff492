"""Results and their presentation: the results CSV with provenance (``results``), tables (``tables``), plots (``plots``).
May import ``utils``, numpy, pandas, scikit-learn and matplotlib; never ``engine``, ``modeling`` or ``datasets``."""
