"""One run folder, whoever writes it: the runner, or notebooks run by hand in JupyterLab.

A run folder holds one experiment: the parameters every notebook ran with are recorded in ``provenance.json``
(``notebook_params``), and a notebook that would write into the folder with other values for a parameter an
earlier notebook used is refused with the keys that differ, before it writes anything: it never overwrites part
of a run silently. The runner checks this for each notebook it is about to run.

The runner writes a run's ``index.html``, ``status.json`` and ``provenance.json`` itself. A notebook run by
hand (no runner: ``BRAINVLM_RUNNER`` unset) keeps them current on its own: ``open_notebook`` at its start
(check, mark running) and ``close_notebook`` at its end (record the notebook, its parameters and metrics,
rewrite the index), so ``reports/interactive`` is a normal run folder, and a finished run opened by hand
(``run_dir = "reports/default"``) is extended consistently.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from brainvlm.app.params import declared_parameters, effective_expectations, find_notebook
from brainvlm.app.report import resolve_run_dir
from brainvlm.core.jsonio import read_json

RUNNER_VARIABLE = "BRAINVLM_RUNNER"  # set by the runner for the kernels it starts
PROVENANCE = "provenance.json"
_STARTED: dict[str, float] = {}  # notebook -> start time, in this kernel


class RunFolderError(RuntimeError):
    """A notebook or run that does not fit the run folder it would write into."""


def under_runner() -> bool:
    """Whether this process is a kernel the runner started (else: a notebook run by hand)."""
    return os.environ.get(RUNNER_VARIABLE) == "1"


def recorded_params(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``notebook -> the parameters it ran with`` in this run folder (empty for a new folder)."""
    path = Path(run_dir) / PROVENANCE
    if not path.is_file():
        return {}
    return dict(read_json(path).get("notebook_params") or {})


# Not compared: where the folder is, and each notebook's expectations (its own claims about its results, which
# differ from notebook to notebook and change no file a notebook writes).
NOT_COMPARED = ("run_dir", "expect")


def conflicts(run_dir: Path, params: dict[str, Any]) -> list[str]:
    """``key: recorded (notebook) != new`` for every parameter an earlier notebook ran with another value."""
    found = []
    for notebook, earlier in recorded_params(run_dir).items():
        for key, value in params.items():
            if key in earlier and key not in NOT_COMPARED and earlier[key] != value:
                found.append(f"{key} = {earlier[key]!r} ({notebook}) != {value!r}")
    return sorted(set(found))


def check_fits(run_dir: Path, params: dict[str, Any], who: str) -> None:
    """Refuse ``who`` (a notebook or a run) whose ``params`` differ from what the folder's notebooks ran with.

    Raises:
        RunFolderError: naming the folder, each differing key and what to do.
    """
    found = conflicts(run_dir, params)
    if found:
        shown = "; ".join(found[:8]) + (f"; and {len(found) - 8} more" if len(found) > 8 else "")
        raise RunFolderError(f"{run_dir} holds a run made with other parameters than {who}: {shown}. Nothing was "
                             "written. Give another run folder (run_dir = \"reports/<new name>\", or --run NAME) or "
                             "remove this one to start over.")


def notebook_params(notebook: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """A notebook's parameters as it runs: each name its parameters cell declares, read from ``namespace``."""
    declared = declared_parameters(find_notebook(notebook.split("_", 1)[0]).path)
    return {key: namespace[key] for key in declared if key != "run_dir" and key in namespace}


def open_notebook(run_dir: str | Path, notebook: str, namespace: dict[str, Any]) -> Path:
    """The run folder of a notebook (``resolve_run_dir``), checked to fit the parameters in ``namespace``.

    By hand, the folder is also marked running. Call it at the top of a notebook with ``globals()``.
    Under the runner the check is the runner's: it checked these values (the notebook's defaults overlaid by
    the params it injects) against the folder before it started the kernel (``runner.run``).
    """
    folder = resolve_run_dir(run_dir)
    if under_runner():
        return folder
    check_fits(folder, notebook_params(notebook, namespace), f"{notebook} as it runs now")
    from brainvlm.app.run_status import mark_started

    _STARTED[notebook] = time.perf_counter()
    mark_started(folder, [notebook])
    return folder


def close_notebook(run_dir: Path, notebook: str, namespace: dict[str, Any]) -> None:
    """By hand: record the finished notebook in the run folder (provenance, status, index) and say where.

    Under the runner nothing happens here: the runner records its notebooks itself.
    """
    if under_runner():
        return
    from brainvlm.app.index import write_index
    from brainvlm.app.notebook_result import NotebookResult
    from brainvlm.app.params import discover_notebooks
    from brainvlm.app.provenance import read_metrics, write_provenance
    from brainvlm.app.run_status import mark_ended
    from brainvlm.core.threads import choose_threads

    folder = Path(run_dir)
    path = folder / PROVENANCE
    provenance = read_json(path) if path.is_file() else {}
    per_notebook = {**(provenance.get("notebook_params") or {}), notebook: notebook_params(notebook, namespace)}
    seconds = time.perf_counter() - _STARTED.pop(notebook, time.perf_counter())
    entries = {n["name"]: n for n in provenance.get("notebooks", [])}
    entries[notebook] = {"name": notebook, "status": "ok", "seconds": round(seconds, 2)}
    order = [nb.name for nb in discover_notebooks() if nb.name in entries]
    results = [NotebookResult(name, entries[name]["status"], entries[name]["seconds"],
                              metrics=read_metrics(folder, name)) for name in order]
    params = {key: value for values in per_notebook.values() for key, value in values.items()}
    write_provenance(folder, params, Path("(notebooks run by hand)"), results, choose_threads(),
                     notebook_params=per_notebook)
    index = write_index(folder, results, Path("(notebooks run by hand)"),
                        effective_expectations(params, [nb for nb in discover_notebooks() if nb.name in entries]))
    mark_ended(folder)
    print(f"{notebook} recorded in the run folder {folder.name}: {index.name}, status.json, provenance.json")
