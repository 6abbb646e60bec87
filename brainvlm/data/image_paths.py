"""Image paths are relative to an image root and may not leave it: the one check of the resolved path.

A path can leave the root lexically (``../x``, ``/abs``) or through a symlink inside the root that
points elsewhere. The cohort builder, the validator and the collator all call :func:`leaves_root`, so
an image is accepted or refused alike at every stage.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path


def leaves_lexically(relative: str) -> bool:
    """An absolute path, a drive letter, or ``..`` that climbs above the start."""
    text = relative.replace("\\", "/")
    normal = posixpath.normpath(text)
    return (text.startswith("/") or re.match(r"^[A-Za-z]:", text) is not None or normal == ".."
            or normal.startswith("../"))


def leaves_root(root: str | Path, relative: str) -> bool:
    """Whether ``root / relative``, with every symlink followed, lies outside ``root`` (resolved too)."""
    if leaves_lexically(relative):
        return True
    resolved_root = Path(root).resolve()
    return not (Path(root) / relative).resolve().is_relative_to(resolved_root)
