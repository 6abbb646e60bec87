"""Run and sweep names: one folder name under the reports folder, never a path that leads out of it."""

from __future__ import annotations

from pathlib import Path


class RunNameError(ValueError):
    """A run or sweep name that is not one folder name; the message names the flag and the value."""


def check_run_name(name: str | None, flag: str = "--run") -> None:
    """Refuse an empty name, a name with a slash or backslash, ``.``/``..``, or an absolute path.

    ``reports/<name>/`` is where a run writes; ``--run ../x`` or ``--run /abs`` would write elsewhere.

    Raises:
        RunNameError: naming ``flag`` and the value.
    """
    if name is None:
        return
    if name.strip() in ("", ".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
        raise RunNameError(f"{flag} {name!r}: a run name is one folder name under the reports folder (letters, "
                           "digits, '_', '-', '.'), not a path; to write elsewhere use --reports-dir")
