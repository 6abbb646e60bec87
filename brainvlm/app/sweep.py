"""Parameter sweeps: a grid of params values times seeds, each point a normal run of ``brainvlm run``.

A sweep is one base params file plus a grid, seeds and, for SLURM, resources (``app.sweep_spec``: every
value checked before anything runs). The layout under ``reports/<sweep>/``:

- ``sweep.json``: grid, seeds, resources, ``--only``, the base params file and its hash, the runs' values;
- ``params/<run>.yaml``: each run's complete params file;
- ``runs/<run>/``: each a normal run folder (its ``status.json`` says running, done or failed);
- ``jobs.json``: where each run was last started (local process, or SLURM job id and log);
- ``logs/<run>.log`` (local runs' output), ``slurm/`` (submitit's scripts and each array task's log);
- ``compare/``: the comparison of the runs (``app.compare``).

Rerunning a sweep skips finished runs, starts failed and missing ones again, and refuses runs whose params
changed since they ran (naming the keys), so a sweep's results never mix two settings. A run's state comes
from its folder's ``status.json`` plus, for SLURM, ``squeue`` (never ``sacct``; see ``app.slurm``).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from brainvlm.app.params import check_params, read_params
from brainvlm.app.run_status import read_status
from brainvlm.app.sweep_spec import Run, SweepError, SweepSpec, canonical, check_spec, expand, params_hash
from brainvlm.core.jsonio import read_json, write_json


# ------------------------------------------------------------------------------------ the layout
@dataclass(frozen=True)
class Layout:
    """The folders and files of one sweep under ``reports/<sweep>/``."""

    folder: Path

    @property
    def sweep_json(self) -> Path:
        return self.folder / "sweep.json"

    @property
    def jobs_json(self) -> Path:
        return self.folder / "jobs.json"

    def params_file(self, name: str) -> Path:
        return self.folder / "params" / f"{name}.yaml"

    def run_dir(self, name: str) -> Path:
        return self.folder / "runs" / name

    @property
    def compare_dir(self) -> Path:
        return self.folder / "compare"

    @property
    def logs_dir(self) -> Path:
        return self.folder / "logs"

    def read_jobs(self) -> dict[str, dict[str, Any]]:
        return read_json(self.jobs_json) if self.jobs_json.is_file() else {}

    def record_jobs(self, jobs: dict[str, dict[str, Any]]) -> None:
        write_json({**self.read_jobs(), **jobs}, self.jobs_json)

    def run_names(self) -> list[str]:
        """The runs of the sweep as ``sweep.json`` lists them."""
        if not self.sweep_json.is_file():
            raise SweepError(f"{self.folder}: no sweep.json; is this a sweep folder (reports/<sweep>/)?")
        return list(read_json(self.sweep_json)["runs"])


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose value differs between two params dicts (added and removed keys included)."""
    return sorted(k for k in set(old) | set(new) if canonical(old.get(k)) != canonical(new.get(k))
                  or (k in old) != (k in new))


def check_unchanged(layout: Layout, runs: list[Run], only: str | None) -> None:
    """Refuse runs that already ran with other params (or another ``--only``) than the sweep gives now.

    Raises:
        SweepError: naming each such run and its changed keys, and what to do.
    """
    problems = []
    earlier = read_json(layout.sweep_json) if layout.sweep_json.is_file() else {}
    for run in runs:
        if read_status(layout.run_dir(run.name)) is None or not layout.params_file(run.name).is_file():
            continue  # nothing ran with the old params: no results to mix
        keys = changed_keys(read_params(layout.params_file(run.name)), run.params)
        if earlier and earlier.get("only") != only:
            keys.append(f"--only ({earlier.get('only')} -> {only})")
        if keys:
            problems.append(f"{run.name}: {', '.join(keys)}")
    if problems:
        raise SweepError(f"sweep {layout.folder.name}: the params of runs that already ran have changed "
                         f"since (run: keys): {'; '.join(problems)}. Their results would mix two settings: "
                         f"restore the params, give the sweep a new --name, or remove those runs' folders "
                         f"under {layout.folder / 'runs'} to run them again")


def write_plan(layout: Layout, spec: SweepSpec, runs: list[Run], base_path: Path, base: dict[str, Any],
               only: str | None, executor: str) -> None:
    """Write ``sweep.json`` and each run's params file (read back to check it round-trips)."""
    for run in runs:
        path = layout.params_file(run.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(run.params, sort_keys=False, allow_unicode=True), encoding="utf-8")
        if changed_keys(read_params(path), run.params):
            raise SweepError(f"{path}: the params do not read back as written: "
                             f"{changed_keys(read_params(path), run.params)}")
    write_json({"grid": spec.grid, "seeds": spec.seeds, "resources": spec.resources, "only": only,
                "executor": executor, "base_params_file": str(base_path),
                "base_params_sha256": params_hash(base),
                "runs": {run.name: run.values for run in runs}}, layout.sweep_json)


def run_command(layout: Layout, name: str, only: str | None) -> list[str]:
    """The ``brainvlm run`` command of one run, the same locally and in a SLURM job."""
    command = [sys.executable, "-m", "brainvlm", "run", "--params", str(layout.params_file(name).resolve()),
               "--run", name, "--reports-dir", str((layout.folder / "runs").resolve())]
    return command + (["--only", only] if only else [])


# ------------------------------------------------------------------------------------- the states
def run_state(run_dir: Path, job: dict[str, Any] | None, queue: dict[str, str] | None) -> dict[str, Any]:
    """A run's state: ``done``, ``failed``, ``running``, ``pending`` (queued, not started) or ``missing``.

    ``queue`` maps SLURM job ids to their ``squeue`` state (None: squeue could not be asked).
    """
    status = read_status(run_dir) or {}
    job = job or {}
    if status.get("state") in ("done", "failed"):
        return status
    if status.get("state") == "running":
        alive = _alive(status, job, queue)
        if alive is None:
            return {**status, "state": "unknown", "error": "squeue could not be asked (see the sweep's log)"}
        if alive:
            return status
        return {**status, "state": "failed", "error": "the run ended without finishing (killed, out of time "
                                                     "or memory?); see its log: " + str(job.get("log", ""))}
    if job.get("executor") == "slurm" and queue is not None and job.get("job_id") in queue:
        started = queue[job["job_id"]] not in ("PENDING", "REQUEUED", "SUSPENDED")  # starting: no status yet
        return {"state": "running" if started else "pending", "slurm_job": job["job_id"]}
    if job.get("executor") == "local" and _local_process_alive(job):
        return {"state": "pending"}
    if job.get("executor") == "slurm" and queue is not None:
        return {"state": "failed", "slurm_job": job.get("job_id"),
                "error": f"job {job.get('job_id')} left the queue before the run started; see its log: "
                         f"{job.get('log', '')} (and the .err file beside it)"}
    if job.get("executor") == "slurm":
        return {"state": "unknown", "error": "squeue could not be asked"}
    return {"state": "missing"}


def _alive(status: dict[str, Any], job: dict[str, Any], queue: dict[str, str] | None) -> bool | None:
    """Whether the process of a ``running`` status still runs: squeue in SLURM, the pid on this host."""
    slurm_job = status.get("slurm_job") or (job.get("job_id") if job.get("executor") == "slurm" else None)
    if slurm_job:
        return None if queue is None else slurm_job in queue
    return _local_process_alive(status)


def _local_process_alive(record: dict[str, Any]) -> bool:
    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def state_line(name: str, state: dict[str, Any]) -> str:
    """One run's line of ``brainvlm sweep --status``."""
    detail = ""
    if state["state"] == "failed":
        detail = str(state.get("error", "")).split("\n")[0]  # the runner's error names notebook and cell
    elif state.get("slurm_job"):
        detail = f"job {state['slurm_job']}"
    return f"  {name:40s} {state['state']:8s} {detail}".rstrip()


# ------------------------------------------------------------------------------------- running
@dataclass
class SweepRequest:
    """A ``brainvlm sweep`` invocation: base params, what to vary, where, and how to run."""

    params_path: Path
    spec: SweepSpec
    name: str
    reports_dir: Path
    only: str | None = None
    executor: str = "local"
    wait: bool = False
    notebooks_dir: Path | None = None


def prepare(request: SweepRequest) -> tuple[Layout, list[Run], dict[str, Any]]:
    """Check everything (base params, grid, seeds, resources, unchanged runs) and expand the runs.

    Raises:
        ParamsError: the base params file does not fit the notebooks (as ``brainvlm run`` says).
        SweepError: a grid key, value, seed or resource that does not fit, or runs whose params changed.
    """
    from brainvlm.app.params import discover_notebooks, run_notebooks
    from brainvlm.core.paths import NOTEBOOKS_DIR

    if request.executor not in ("local", "slurm"):
        raise SweepError(f"--executor {request.executor!r}: choose local or slurm")
    source = str(request.params_path)
    base = read_params(request.params_path)
    every, _ = run_notebooks(base, discover_notebooks(request.notebooks_dir or NOTEBOOKS_DIR), request.only,
                             source=source)
    check_params(base, every, source=source)
    check_spec(request.spec, every, source=f"sweep {request.name}")
    runs = expand(request.spec, base, source=f"sweep {request.name}")
    layout = Layout(Path(request.reports_dir) / request.name)
    check_unchanged(layout, runs, request.only)
    return layout, runs, base


def states(layout: Layout, names: list[str]) -> dict[str, dict[str, Any]]:
    """Each run's state from its folder, and ``squeue`` when a run was submitted to SLURM."""
    from brainvlm.app import slurm

    jobs = layout.read_jobs()
    on_slurm = any(jobs.get(n, {}).get("executor") == "slurm" for n in names)
    queue = slurm.queue_states() if on_slurm else {}
    return {n: run_state(layout.run_dir(n), jobs.get(n), queue) for n in names}


def run_sweep(request: SweepRequest, say=print) -> dict[str, dict[str, Any]]:
    """Run (or submit) the sweep's runs that are missing or failed; return every run's state at the end.

    Locally the runs execute one after another, each notebook's start and end shown prefixed with the
    run's name; on SLURM they are one job array, and with ``wait`` the call returns once none is pending or
    running. Once no run is pending or running the comparison is written, failed runs included and named.
    """
    layout, runs, base = prepare(request)
    before = states(layout, [r.name for r in runs])
    todo = [r for r in runs if before[r.name]["state"] in ("missing", "failed")]
    busy = [r.name for r in runs if before[r.name]["state"] in ("pending", "running", "unknown")]
    write_plan(layout, request.spec, runs, request.params_path, base, request.only, request.executor)
    done = len(runs) - len(todo) - len(busy)
    say(f"sweep {request.name}: {len(runs)} runs: {done} done (skipped), {len(busy)} pending or running "
        f"(left alone), {len(todo)} to run ({request.executor}) -> {layout.folder}/")
    if request.spec.resources and request.executor == "local":
        say(f"resources {request.spec.resources} apply to --executor slurm; local runs ignore them")
    forget_failures(layout, todo)
    if todo and request.executor == "local":
        run_local(layout, todo, request.only, say)
    elif todo:
        submit_slurm(layout, todo, request, say)
    if request.executor == "slurm" and request.wait:
        wait_for(layout, [r.name for r in runs], say)
    after = states(layout, [r.name for r in runs])
    if not any(s["state"] in ("pending", "running") for s in after.values()):
        write_comparison(layout, [r.name for r in runs], after, say)
    return after


def write_comparison(layout: Layout, names: list[str], after: dict[str, dict[str, Any]], say) -> Path | None:
    """Compare every run that left a run folder, failed ones included (the page names them), and say which
    runs failed and which have no run folder to compare; None when no run has one."""
    from brainvlm.app.compare import compare_runs
    from brainvlm.app.console import shown_path

    compared = [n for n in names if (layout.run_dir(n) / "provenance.json").is_file()]
    absent = [n for n in names if n not in compared]
    page = compare_runs([layout.run_dir(n) for n in compared], layout.compare_dir) if compared else None
    failed = [name for name in names if after[name]["state"] == "failed"]
    told = f" ({len(failed)} failed, named on the page)" if failed and page else ""
    shown = shown_path(page) if page else "none written"
    say(f"comparison of {len(compared)} of {len(names)} runs{told}: {shown}")
    for name in failed:
        say(state_line(name, after[name]))
    if absent:
        say(f"  left out, no run folder: {', '.join(absent)}")
    return page


def forget_failures(layout: Layout, runs: list[Run]) -> None:
    """Move a failed run's ``status.json`` aside (``status.failed.json``) before it runs again, so the
    new attempt's state is read, not the old failure's."""
    for run in runs:
        status = layout.run_dir(run.name) / "status.json"
        if status.is_file():
            status.replace(status.with_name("status.failed.json"))


def run_local(layout: Layout, runs: list[Run], only: str | None, say) -> None:
    """Run one after another in this process's working folder, each run's output in ``logs/<run>.log``; show
    each run's start and end, and each of its notebooks' (``app.console.is_notebook_line``) prefixed with the
    run's name."""
    import time

    from brainvlm.app.console import duration, shown_path

    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    log = {run.name: layout.logs_dir / f"{run.name}.log" for run in runs}
    layout.record_jobs({run.name: {"executor": "local", "host": socket.gethostname(), "pid": os.getpid(),
                                   "log": str(log[run.name])} for run in runs})  # pending while this lives
    for i, run in enumerate(runs):
        start = time.perf_counter()
        say(f"[{i + 1}/{len(runs)}] {run.name} started {time.strftime('%H:%M:%S')} "
            f"(log: {shown_path(log[run.name])})")
        run_logged(run_command(layout, run.name, only), log[run.name],
                   lambda line, name=run.name: say(f"  {name} | {line}"))
        state = run_state(layout.run_dir(run.name), None, {})
        took = duration(time.perf_counter() - start)
        say(f"[{i + 1}/{len(runs)}] {state_line(run.name, state).strip()} ({took})")


def run_logged(command: list[str], log: Path, show) -> int:
    """Run ``command``, its output (stdout and stderr) into ``log``; pass its notebook lines to ``show``.

    Returns:
        The command's exit status.
    """
    import subprocess

    from brainvlm.app.console import is_notebook_line

    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   bufsize=1)
        for line in process.stdout:
            handle.write(line)
            if is_notebook_line(line.rstrip("\n")):
                show(line.rstrip())
        return process.wait()


def submit_slurm(layout: Layout, runs: list[Run], request: SweepRequest, say) -> None:
    """Submit the runs as one SLURM job array and record each task's job id and log."""
    from brainvlm.app import slurm

    commands = [run_command(layout, run.name, request.only) for run in runs]
    jobs = slurm.submit(commands, Path.cwd(), layout.folder / "slurm", request.spec.resources,
                        job_name=f"brainvlm-{request.name}")
    layout.record_jobs({run.name: {"executor": "slurm", **job} for run, job in zip(runs, jobs, strict=True)})
    say(f"submitted {len(runs)} runs to SLURM: jobs {', '.join(j['job_id'] for j in jobs)}; "
        f"brainvlm sweep --status --name {request.name} shows their states")


def wait_for(layout: Layout, names: list[str], say, poll_s: float = 5.0) -> None:
    """Return once no run is pending or running (the states from run folders and squeue)."""
    import time

    shown = None
    while True:
        current = states(layout, names)
        counts = {s: sum(v["state"] == s for v in current.values())
                  for s in ("pending", "running", "unknown")}
        if counts["unknown"]:
            raise SweepError(f"sweep {layout.folder.name}: squeue could not be asked; the runs' states are "
                             "unknown (is this a SLURM login node?)")
        if not counts["pending"] and not counts["running"]:
            return
        if counts != shown:
            say(f"waiting: {counts['pending']} pending, {counts['running']} running")
            shown = counts
        time.sleep(poll_s)


def sweep_status(folder: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """``brainvlm sweep --status``: the lines to show and each run's state."""
    layout = Layout(Path(folder))
    names = layout.run_names()
    current = states(layout, names)
    counts = {}
    for state in current.values():
        counts[state["state"]] = counts.get(state["state"], 0) + 1
    head = (f"sweep {layout.folder.name}: {len(names)} runs: "
            + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return [head, *(state_line(n, current[n]) for n in names)], current
