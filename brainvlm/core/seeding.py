"""One call at the top of every notebook and entry point makes a run repeatable."""

from __future__ import annotations

import os
import random

import numpy as np

from brainvlm.core.threads import choose_threads, use_threads


def set_seed(seed: int, deterministic: bool = True, threads: int | None = None, with_torch: bool = True) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels.

    Args:
        seed: the run's seed.
        deterministic: use deterministic algorithms where torch has them (warn-only where it has none).
        threads: torch intra-op threads (None: ``OMP_NUM_THREADS``, else the cores available to this process;
            see ``core.threads``).
        with_torch: False leaves torch unloaded, for code that never uses it (the data notebooks): importing
            torch only to seed it costs about 1.5 s.
    """
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    use_threads(threads)
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
    torch.set_num_threads(choose_threads(threads))
