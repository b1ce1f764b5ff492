"""The pytest suite (CPU, tiny configs); ``conftest.py`` holds the shared fixtures, the one torchrun launcher
and the one end-to-end pipeline run that the end-to-end tests share. May import every project package, the entry
scripts and scripts/; no project code imports tests (helpers: ``_train_data.py``, ``_*_worker.py``)."""
