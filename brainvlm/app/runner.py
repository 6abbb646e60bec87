"""Execute a sequence of notebooks with papermill into ``reports/<run>/`` and render the HTML report."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import papermill
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from brainvlm.app.console import Console
from brainvlm.app.index import write_index
from brainvlm.app.notebook_result import NotebookResult, not_run
from brainvlm.app.params import (
    Notebook,
    check_params,
    complete_params,
    discover_notebooks,
    effective_expectations,
    notebook_needs,
    notebook_parameters,
    read_params,
    run_notebooks,
)
from brainvlm.app.provenance import read_metrics, write_provenance
from brainvlm.app.report import expectation_rows
from brainvlm.app.run_folder import RUNNER_VARIABLE, check_fits, recorded_params
from brainvlm.app.run_names import check_run_name
from brainvlm.app.run_status import STATUS_FILE, mark_ended, mark_started, read_status
from brainvlm.app.warning_filter import without_dependency_warnings
from brainvlm.core.jsonio import read_json, write_json
from brainvlm.core.paths import NOTEBOOKS_DIR, REPORTS_DIR
from brainvlm.core.threads import choose_threads, thread_environment

KERNEL = "python3"


class _MultilineParameterLines(logging.Filter):
    """Papermill reads a parameters cell line by line to list its parameters, and calls a line of a multi-line
    literal that holds two ``=`` (an expectation ``"== 0"`` in an ``expect`` dict) unparseable. It only lists
    them; the cell itself runs as written, and ``app.params`` reads it with Python's own parser."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unable to parse line")


logging.getLogger("papermill.translators").addFilter(_MultilineParameterLines())


class NotebookFailed(RuntimeError):
    """A notebook of the run raised; its partial output is kept in the run folder."""


def execute_notebook(nb: Notebook, run_dir: Path, parameters: dict[str, Any],
                     console: Console | None = None) -> NotebookResult:
    """Run one notebook's ``.py`` source with papermill into ``run_dir/<name>.ipynb``.

    ``console`` gives papermill's progress bar and the kernel's arguments (start-up warnings off unless
    verbose).
    """
    console = console or Console()
    output = run_dir / f"{nb.name}.ipynb"
    result = NotebookResult(nb.name)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{nb.name}.ipynb"
        notebook = jupytext.read(nb.path)
        notebook.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, source)
        try:
            papermill.execute_notebook(str(source), str(output), parameters=parameters, kernel_name=KERNEL,
                                       progress_bar=console.progress_bar(nb.name), cwd=str(run_dir),
                                       extra_arguments=console.kernel_arguments())
            result.status = "ok"
        except PapermillExecutionError as exc:
            result.status = "failed"
            result.error = (f"{nb.name}: cell {exc.cell_index} (execution count {exc.exec_count}) raised "
                            f"{exc.ename}: {exc.evalue}")
    result.seconds = time.perf_counter() - start
    result.metrics = read_metrics(run_dir, nb.name)
    return result


def render_html(run_dir: Path, name: str) -> list[Path]:
    """Render ``<name>.html`` (with code) and ``<name>.report.html`` (no input, for papers).

    The report leaves out the warnings of dependencies (``app.warning_filter``); the notebook keeps them.
    """
    notebook = nbformat.read(run_dir / f"{name}.ipynb", as_version=4)
    paths = []
    for suffix, exclude_input in ((".html", False), (".report.html", True)):
        exporter = HTMLExporter(exclude_input=exclude_input, exclude_input_prompt=exclude_input,
                                exclude_output_prompt=exclude_input)
        shown = without_dependency_warnings(notebook) if exclude_input else notebook
        body, _ = exporter.from_notebook_node(shown)
        path = run_dir / f"{name}{suffix}"
        path.write_text(body, encoding="utf-8")
        paths.append(path)
    return paths


def earlier_results(run_dir: Path, every: list[Notebook], results: list[NotebookResult]) -> list[NotebookResult]:
    """This run's results plus, for notebooks it did not run (``--only``), what the folder already holds."""
    path = run_dir / "provenance.json"
    earlier = {n["name"]: n for n in read_json(path)["notebooks"]} if path.is_file() else {}
    mine = {r.name: r for r in results}
    merged = []
    for nb in every:
        if nb.name in mine:
            merged.append(mine[nb.name])
        elif nb.name in earlier:
            old = earlier[nb.name]
            merged.append(NotebookResult(nb.name, f"{old['status']} (earlier)", old["seconds"],
                                         metrics=read_metrics(run_dir, nb.name)))
    return merged


def run(params_path: Path, run_name: str | None = None, only: str | None = None,
        reports_dir: Path = REPORTS_DIR, notebooks_dir: Path = NOTEBOOKS_DIR,
        overrides: dict[str, Any] | None = None, console: Console | None = None,
        threads: int | None = None) -> list[NotebookResult]:
    """Execute the run's notebooks in order; a failure stops only the notebooks that need the failed one.

    Each notebook declares the notebooks it needs (``*Needs: ...*`` in its first markdown cell,
    ``params.notebook_needs``); one whose needed notebook of this run failed or was not run is left out
    (``not run: needs 04``), and every other notebook still runs.

    Args:
        params_path: flat YAML params file; every key must be declared by a notebook of the run. Its
            ``notebooks`` key (a list of numbers) names the notebooks it runs; absent means all.
        run_name: folder under ``reports_dir`` (default: the params file's stem); reused if it exists.
        only: comma-separated notebook numbers or names that narrow the params file's notebooks.
        overrides: keys that replace the file's values (like papermill's ``-p``).
        console: where each notebook's start, end and progress bar are shown (``app.console``); None: nowhere.
        threads: torch threads of the notebooks' kernels (None: ``OMP_NUM_THREADS``, else the cores available
            to this process; ``core.threads``), recorded in ``provenance.json``.

    Raises:
        NotebookFailed: at the end, after writing index, provenance and status, when a notebook failed (named
            with its cell), was not run, or missed an expectation; the message names each.
    """
    check_run_name(run_name)
    params_path = Path(params_path)
    params = {**read_params(params_path), **(overrides or {})}
    discovered = discover_notebooks(notebooks_dir)
    every, notebooks = run_notebooks(params, discovered, only, source=str(params_path))
    check_params(params, every, source=str(params_path))  # --only runs a part of the same params file
    needs = {nb.name: notebook_needs(nb, discovered) for nb in notebooks}
    run_dir = Path(reports_dir) / (run_name or params_path.stem)
    run_dir.mkdir(parents=True, exist_ok=True)
    console = console or Console()
    console.run_started(run_dir, [nb.name for nb in notebooks])
    mark_started(run_dir, [nb.name for nb in notebooks])  # status.json: running, done or failed
    planned = {nb.name: complete_params(nb, params) for nb in notebooks}
    for nb in notebooks:  # a folder holds one experiment: refuse before anything is written
        check_fits(run_dir, planned[nb.name], f"{nb.name} with {params_path}")
    chosen = choose_threads(threads)
    with kernel_environment({**thread_environment(chosen), RUNNER_VARIABLE: "1"}):
        results = execute_all(notebooks, needs, params, run_dir, console)
    results = earlier_results(run_dir, every, results)
    expect = effective_expectations(params, every)
    index = write_index(run_dir, results, params_path, expect)
    ran = {r.name for r in results if r.status == "ok"}
    recorded = {**recorded_params(run_dir), **{name: values for name, values in planned.items() if name in ran}}
    write_provenance(run_dir, params, params_path, results, chosen, notebook_params=recorded)
    console.run_ended(results, index)
    mine = [r for r in results if r.name in needs]
    problems = run_problems(run_dir, mine, results if only is None else None, expect, index)
    record_results(run_dir, mine)
    if problems:
        failed = next((r.name for r in mine if r.status == "failed"), None)
        mark_ended(run_dir, failed, "; ".join(problems))
        raise NotebookFailed("; ".join(problems))
    mark_ended(run_dir)
    return results


def execute_all(notebooks: list[Notebook], needs: dict[str, list[str]], params: dict[str, Any], run_dir: Path,
                console: Console) -> list[NotebookResult]:
    """Execute each notebook in order; leave out one whose needed notebooks (``needs``: name -> names) of
    this run failed or were not run, marking it ``not run: needs 04``."""
    results: dict[str, NotebookResult] = {}
    for i, nb in enumerate(notebooks):
        unmet = [name for name in needs[nb.name] if name in results and results[name].status != "ok"]
        if unmet:
            results[nb.name] = not_run(nb.name, unmet)
            console.notebook_skipped(i + 1, len(notebooks), results[nb.name])
            continue
        console.notebook_started(i + 1, len(notebooks), nb.name)
        parameters = notebook_parameters(params, nb, run_dir.resolve())
        try:
            results[nb.name] = execute_notebook(nb, run_dir, parameters, console)
        except (DeadKernelError, CellTimeoutError) as exc:  # killed, out of memory: this notebook failed
            results[nb.name] = NotebookResult(nb.name, "failed", error=f"{nb.name}: {type(exc).__name__}: {exc}")
        if (run_dir / f"{nb.name}.ipynb").is_file():
            render_html(run_dir, nb.name)
        console.notebook_ended(i + 1, len(notebooks), results[nb.name])
    return list(results.values())


def run_problems(run_dir: Path, mine: list[NotebookResult], everything: list[NotebookResult] | None,
                 expect: dict[str, Any], index: Path) -> list[str]:
    """What makes the run end non-zero: each failed notebook (with its cell and partial output), each
    notebook not run (and why), an expectation no notebook measured (``everything`` given, nothing failed)
    and each unmet expectation.

    Args:
        mine: the results of the notebooks this run executed or left out.
        everything: every notebook's result, earlier runs' included, for the check that each expectation
            was measured; None skips it (a ``--only`` run).
    """
    failed = [r for r in mine if r.status == "failed"]
    problems = [f"{r.error} (partial output: {run_dir / (r.name + '.ipynb')})" for r in failed]
    problems += [f"{r.name} {r.status}" for r in mine if not r.was_run]
    if everything is not None and not problems:
        problems += unmeasured_expectations(expect, everything)
    unmet = unmet_expectations(mine, expect)
    if unmet:  # a result, not a crash: the notebook ran and is reported; the run still ends non-zero
        problems.append(f"expectations not met: {'; '.join(unmet)} (marked in {index})")
    return problems


def record_results(run_dir: Path, results: list[NotebookResult]) -> Path:
    """Add each notebook's outcome to ``status.json`` (``results``: name -> ``ok``, ``failed`` or
    ``not run: needs 04``), so a reader of the folder alone sees what ran."""
    status = read_status(run_dir) or {}
    status["results"] = {r.name: r.status for r in results}
    return write_json(status, Path(run_dir) / STATUS_FILE)


def unmet_expectations(results: list[NotebookResult], expect: dict[str, Any]) -> list[str]:
    """``notebook: metric = measured (expected rule)`` for every expectation a notebook measured and missed."""
    return [f"{r.name}: {row['metric']} = {row['measured']} (expected {row['expected']})"
            for r in results for row in expectation_rows(r.metrics, expect) if row["passed"] is False]


def prepare(params_path: Path, run_name: str | None = None, only: str | None = None,
            reports_dir: Path = REPORTS_DIR, notebooks_dir: Path = NOTEBOOKS_DIR,
            overrides: dict[str, Any] | None = None) -> list[Path]:
    """Write each notebook of the run with the params file's values injected (papermill's prepare-only: a
    cell tagged ``injected-parameters`` after the parameters cell), unexecuted, into the run folder: ready to
    open in JupyterLab and run cell by cell. Nothing runs; the folder is checked to fit as ``run`` checks it.

    Returns:
        The written notebooks, in run order.
    """
    check_run_name(run_name)
    params_path = Path(params_path)
    params = {**read_params(params_path), **(overrides or {})}
    every, notebooks = run_notebooks(params, discover_notebooks(notebooks_dir), only, source=str(params_path))
    check_params(params, every, source=str(params_path))
    run_dir = Path(reports_dir) / (run_name or params_path.stem)
    for nb in notebooks:
        check_fits(run_dir, complete_params(nb, params), f"{nb.name} with {params_path}")
    run_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for nb in notebooks:
            source = Path(tmp) / f"{nb.name}.ipynb"
            nbformat.write(jupytext.read(nb.path), source)
            output = run_dir / f"{nb.name}.ipynb"
            papermill.execute_notebook(str(source), str(output), parameters=notebook_parameters(
                params, nb, run_dir.resolve()), prepare_only=True, progress_bar=False)
            written.append(output)
    return written


@contextlib.contextmanager
def kernel_environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the kernels started inside the block (they inherit this process's
    environment); restore them afterwards."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def unmeasured_expectations(expect: dict[str, Any], results: list[NotebookResult]) -> list[str]:
    """An expectation that no notebook measured is an error, not a silent pass: its message, or none."""
    measured = {key for r in results for key in r.metrics}
    missing = sorted(set(expect) - measured)
    if not missing:
        return []
    return [(f"expect names metrics that no notebook of the run measured: {missing}; "
             f"measured: {sorted(measured)}")]
