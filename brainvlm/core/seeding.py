"""One call at the top of every notebook and entry point makes a run repeatable."""

from __future__ import annotations

import os
import random

import numpy as np


def set_seed(seed: int, deterministic: bool = True, threads: int | None = None, with_torch: bool = True) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels.

    Args:
        seed: the run's seed.
        deterministic: use deterministic algorithms where torch has them (warn-only where it has none).
        threads: torch intra-op threads (None leaves torch's choice).
        with_torch: False leaves torch unloaded, for code that never uses it (the data notebooks): importing
            torch only to seed it costs about 1.5 s.
    """
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    if not with_torch:
        return
    try:
        import torch
    except ImportError:  # data notebooks work without torch
        return
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
