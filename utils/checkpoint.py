"""Training checkpoints moved to :mod:`modeling.checkpoint` (one module for save / resume / load).

transitional: removed when the entry scripts import modeling.checkpoint
"""

from modeling.checkpoint import (  # noqa: F401
    atomic_torch_save,
    auto_resume,
    build_state,
    find_latest_checkpoint,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    save_epoch_checkpoints,
    set_rng_state,
    strip_prefixes,
)
from utils.logging import to_plain  # noqa: F401
