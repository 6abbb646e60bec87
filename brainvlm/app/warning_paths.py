"""Warnings shown in a notebook name their package, not this machine's paths.

Python prints a warning with the full path of the file that raised it (``/home/me/.venv/lib/python3.11/
site-packages/peft/tuners/tuners_utils.py:1463: UserWarning: ...``): a notebook saved, rendered or put into a
paper would carry the machine's folders. Every notebook imports ``app.report``, which installs this format:
the same warning, its file named from its package down (``peft/tuners/tuners_utils.py:1463: UserWarning``).
Nothing is hidden: brainvlm's own warnings and every dependency's stay visible.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

_ORIGINAL = warnings.formatwarning


def package_relative(filename: str) -> str:
    """A file's path from the folder on ``sys.path`` that holds it (its package down); else the path as given."""
    path = Path(filename)
    best = None
    for entry in sys.path:
        if not entry:
            continue
        try:
            relative = path.relative_to(Path(entry))
        except ValueError:
            continue
        if best is None or len(relative.parts) < len(best.parts):
            best = relative
    return str(best) if best is not None else filename


def format_warning(message, category, filename, lineno, line=None) -> str:
    """``warnings.formatwarning`` with the file named from its package, and without the source line."""
    return f"{package_relative(filename)}:{lineno}: {category.__name__}: {message}\n"


def install() -> None:
    """Show warnings in this process with package-relative file names (idempotent)."""
    warnings.formatwarning = format_warning
