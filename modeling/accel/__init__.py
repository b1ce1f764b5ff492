"""Speed devices of the models, kept apart from the model code: the models call only ``Dropout`` and
``default_attend`` from here, and one switch decides whether the fast paths run.

* ``dropout.py`` (+ numba ``kernels.py``): torch's dropout distribution with a fast CPU mask generator.
* ``attention.py``: the original's plain attention (the reference), torch's SDPA, and the rule between them.

The switch: ``use_torch_dropout()`` (or ``HEARTLANG_TORCH_DROPOUT=1``) runs the reference everywhere:
torch's own dropout masks and SDPA, i.e. the original's computation with torch's kernels. Off (the
default), the fast CPU dropout and the plain attention with it run where they apply (CPU, float32,
training, eager); everywhere else the two paths are the same code. ``mask_source()`` says which one
a process used (recorded in run.json). May import torch and numba only.
"""

from .attention import AttendFn, default_attend, plain_attend, sdpa_attend
from .dropout import Dropout, dropout, fast_applies, mask_source, use_torch_dropout

__all__ = [
    "AttendFn",
    "Dropout",
    "default_attend",
    "dropout",
    "fast_applies",
    "mask_source",
    "plain_attend",
    "sdpa_attend",
    "use_torch_dropout",
]
