"""A sweep's runs as one SLURM job array, submitted through submitit; their queue state from ``squeue``.

Each array task runs the run's ``brainvlm run`` command as a subprocess (``run_command``), so a run on the
cluster is the same as a run on a laptop, one process per run. Resources come from the sweep file or
flags (``RESOURCES`` of ``app.sweep``), never from a run's params file, whose keys are the notebooks'.

State: a run's folder says running, done or failed (``app.run_status``); ``squeue`` says which jobs are
still queued or running. Nothing here asks ``sacct``: clusters without an accounting database do not have
it, and submitit's own job states depend on it.
"""

from __future__ import annotations

import getpass
import shlex
import subprocess
from pathlib import Path
from typing import Any

SUBMITIT_PARAMETERS = {"partition": "partition", "gpus": "gpus_per_node", "cpus": "cpus_per_task",
                       "time_min": "time", "account": "account", "array_parallelism": "array_parallelism"}


class SubmissionError(RuntimeError):
    """sbatch refused the jobs (its own message is kept), or there is no sbatch to ask."""


def run_command(command: list[str], cwd: str) -> int:
    """What each array task runs: one ``brainvlm run`` as a subprocess; an error if it fails."""
    completed = subprocess.run(command, cwd=cwd, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} exited with status {completed.returncode}")
    return 0


def executor_parameters(resources: dict[str, Any], job_name: str) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters from a sweep's resources.

    Without ``time_min`` no ``--time`` is given, so the partition's default time limit applies
    (submitit's own default would be 5 minutes).
    """
    parameters: dict[str, Any] = {"job_name": job_name, "time": None}
    for key, value in resources.items():
        if key == "mem_gb":
            parameters["mem"] = f"{value}GB"
        else:
            parameters[SUBMITIT_PARAMETERS[key]] = value
    return parameters


def submit(commands: list[list[str]], cwd: Path, folder: Path, resources: dict[str, Any],
           job_name: str) -> list[dict[str, str]]:
    """Submit one array task per command; return each task's job id and log file.

    Raises:
        SubmissionError: with sbatch's own message, or saying that sbatch is not there.
    """
    import submitit
    from submitit.core.utils import FailedJobError

    executor = submitit.SlurmExecutor(folder=str(folder))
    executor.update_parameters(**executor_parameters(resources, job_name))
    try:
        jobs = executor.map_array(run_command, commands, [str(cwd)] * len(commands))
    except FailedJobError as exc:
        raise SubmissionError(f"sbatch refused the sweep's jobs: {str(exc).strip()}") from None
    except FileNotFoundError:
        raise SubmissionError("sbatch not found: the slurm executor submits from a SLURM login node "
                              "(sbatch on PATH); use --executor local on other machines") from None
    return [{"job_id": str(job.job_id), "log": str(job.paths.stdout)} for job in jobs]


def queue_states(user: str | None = None) -> dict[str, str] | None:
    """Job id (``123_4`` for array tasks) -> state (PENDING, RUNNING, ...) of the user's queued jobs.

    None when squeue cannot be asked (not installed, controller down): the caller says the state is unknown.
    """
    command = ["squeue", "--noheader", "--array", "--format=%i|%T", f"--user={user or getpass.getuser()}"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state
    return states
