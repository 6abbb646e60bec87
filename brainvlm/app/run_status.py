"""A run folder's ``status.json``: whether its run is running, done or failed, and where it failed.

The runner writes it as a run starts, ends and fails, so anything that only sees the run folder (a sweep's
``--status``, a run on another machine or in a SLURM job) knows the run's state without asking a scheduler.
A failed run's file names the failing notebook and cell; a running run's names the host and process, and
the SLURM job when it runs in one.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from brainvlm.core.jsonio import read_json, write_json

STATUS_FILE = "status.json"
STATES = ("running", "done", "failed")
CELL = re.compile(r": cell (\d+) ")  # runner.execute_notebook's error: "<notebook>: cell 12 (execution ..."


def now() -> str:
    """The time in UTC, ISO format, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def slurm_job() -> str | None:
    """The SLURM job this process runs in (``123_4`` for an array task), or None outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run folder's status, or None when no run has started there."""
    path = Path(run_dir) / STATUS_FILE
    return read_json(path) if path.is_file() else None


def mark_started(run_dir: Path, notebooks: list[str]) -> Path:
    """Write ``running``: the notebooks to run, the start time, the host, process and SLURM job."""
    return write_json({"state": "running", "notebooks": notebooks, "started": now(),
                       "host": socket.gethostname(), "pid": os.getpid(), "slurm_job": slurm_job()},
                      Path(run_dir) / STATUS_FILE)


def mark_ended(run_dir: Path, notebook: str | None = None, error: str = "") -> Path:
    """Write ``done``, or ``failed`` when an ``error`` is given (with the failing notebook and cell)."""
    status = read_status(run_dir) or {}
    status.update({"state": "failed" if error else "done", "ended": now()})
    if error:
        match = CELL.search(error)
        status.update({"notebook": notebook, "cell": int(match.group(1)) if match else None, "error": error})
    return write_json(status, Path(run_dir) / STATUS_FILE)
