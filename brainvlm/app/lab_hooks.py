"""JupyterLab's post-save hook: a saved notebook whose tracked content did not change leaves ``git status`` clean.

Git sees a notebook through the nbstripout filter (``.gitattributes``): without outputs. But ``git status``
calls a file modified as soon as its size differs from what the index recorded, without running the filter,
so a notebook saved with new outputs shows as modified although ``git diff`` is empty. After each save this
hook asks git for the saved file's tracked content (``git hash-object --path``, through the filter) and, when it
equals the index's, records the file's new state in the index (``git add`` of identical content: nothing is
staged). A file whose tracked content did change (a person edited a cell) is left alone and shows as modified.

``make`` installs the hook into the environment's Jupyter server configuration (``app.lab_setup``).
"""

from __future__ import annotations

import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any


def git(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=False, timeout=60)


def index_blob(folder: Path, name: str) -> str | None:
    """The blob id the index holds for ``name`` (None: untracked, or not in a git checkout)."""
    done = git(folder, "ls-files", "--stage", "--", name)
    fields = done.stdout.split()
    return fields[1] if done.returncode == 0 and len(fields) >= 2 else None


def tracked_content_unchanged(path: Path) -> bool:
    """Whether the file, as git stores it (through its filters), equals the index's version."""
    folder, name = path.parent, path.name
    blob = index_blob(folder, name)
    if blob is None:
        return False
    done = git(folder, "hash-object", f"--path={name}", "--", name)
    return done.returncode == 0 and done.stdout.strip() == blob


def refresh(path: Path) -> bool:
    """Record an unchanged tracked file's new size and time in the index; returns whether it did."""
    if not path.is_file() or not tracked_content_unchanged(path):
        return False
    return git(path.parent, "add", "--", path.name).returncode == 0


# One worker, in order: a save returns at once (jupytext writes the paired file right after; a slow hook would
# make JupyterLab think the file changed on disk), and two refreshes never contend for git's index lock.
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brainvlm-git-refresh")


def refresh_git_entry(model: dict[str, Any] | None = None, os_path: str = "", contents_manager: Any = None,
                      **_: Any) -> Future:
    """Post-save hook: refresh the saved file's index entry in the background (see the module docstring)."""
    return _WORKER.submit(refresh, Path(os_path))
