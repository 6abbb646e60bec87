"""Execute a sequence of notebooks with papermill into ``reports/<run>/`` and render the HTML report."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import papermill
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from brainvlm.app.console import Console
from brainvlm.app.index import write_index
from brainvlm.app.notebook_result import NotebookResult
from brainvlm.app.params import (
    Notebook,
    check_params,
    discover_notebooks,
    notebook_parameters,
    read_params,
    run_notebooks,
)
from brainvlm.app.run_status import mark_ended, mark_started
from brainvlm.app.warning_filter import without_dependency_warnings
from brainvlm.core.jsonio import read_json, write_json
from brainvlm.core.paths import NOTEBOOKS_DIR, PROJECT_ROOT, REPORTS_DIR
from brainvlm.core.threads import choose_threads, thread_environment

KERNEL = "python3"
PACKAGES = ("brainvlm", "torch", "transformers", "peft", "accelerate", "tokenizers", "nibabel", "nilearn",
            "numpy", "pandas", "seaborn", "papermill", "jupytext", "pycocoevalcap")


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


def read_metrics(run_dir: Path, name: str) -> dict[str, Any]:
    """A notebook's headline metrics, or an empty dict when it wrote none."""
    path = run_dir / "metrics" / f"{name}.json"
    return read_json(path) if path.is_file() else {}


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


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> dict[str, Any]:
    """The repository's commit and whether the tree had uncommitted changes."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def input_hashes(params: dict[str, Any], run_dir: Path) -> dict[str, str]:
    """Hashes of input tables named in params and of every JSONL written under the run."""
    hashes = {}
    for key, value in sorted(params.items()):
        if isinstance(value, str) and value and Path(value).is_file():
            hashes[f"params.{key}"] = sha256_file(Path(value))
    for path in sorted(run_dir.rglob("*.jsonl")):
        hashes[path.relative_to(run_dir).as_posix()] = sha256_file(path)
    return hashes


def write_provenance(run_dir: Path, params: dict[str, Any], params_path: Path,
                     results: list[NotebookResult], threads: int | None = None) -> Path:
    """Write ``provenance.json``: code version, packages, torch threads, params, input and output hashes.

    Results are byte-identical for the same params, seed and thread count; ``threads`` records the last.
    """
    return write_json({
        "git": git_commit(),
        "packages": package_versions(),
        "threads": threads,
        "params_file": str(params_path),
        "params": params,
        "notebooks": [{"name": r.name, "status": r.status, "seconds": round(r.seconds, 2)} for r in results],
        "hashes": input_hashes(params, run_dir),
    }, run_dir / "provenance.json")


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
    """Execute the run's notebooks in order; stop at the first failure.

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
        NotebookFailed: naming the failing notebook and cell, after writing index and provenance.
    """
    params_path = Path(params_path)
    params = {**read_params(params_path), **(overrides or {})}
    every, notebooks = run_notebooks(params, discover_notebooks(notebooks_dir), only, source=str(params_path))
    check_params(params, every, source=str(params_path))  # --only runs a part of the same params file
    run_dir = Path(reports_dir) / (run_name or params_path.stem)
    run_dir.mkdir(parents=True, exist_ok=True)
    results = [NotebookResult(nb.name) for nb in notebooks]
    console = console or Console()
    console.run_started(run_dir, [nb.name for nb in notebooks])
    mark_started(run_dir, [nb.name for nb in notebooks])  # status.json: running, done or failed
    chosen = choose_threads(threads)
    with kernel_environment(thread_environment(chosen)):
        for i, nb in enumerate(notebooks):
            console.notebook_started(i + 1, len(notebooks), nb.name)
            parameters = notebook_parameters(params, nb, run_dir.resolve())
            results[i] = execute_notebook(nb, run_dir, parameters, console)
            render_html(run_dir, nb.name)
            console.notebook_ended(i + 1, len(notebooks), results[i])
            if results[i].status != "ok":
                break
    results = earlier_results(run_dir, every, results)
    index = write_index(run_dir, results, params_path, params.get("expect") or {})
    write_provenance(run_dir, params, params_path, results, chosen)
    console.run_ended(results, index)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        mark_ended(run_dir, failed[0].name, failed[0].error)
        raise NotebookFailed(failed[0].error + f" (partial output: {run_dir / (failed[0].name + '.ipynb')})")
    if only is None:
        try:
            check_all_measured(params.get("expect") or {}, results)
        except NotebookFailed as exc:
            mark_ended(run_dir, None, str(exc))
            raise
    mark_ended(run_dir)
    return results


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


def check_all_measured(expect: dict[str, Any], results: list[NotebookResult]) -> None:
    """An expectation that no notebook measured is an error, not a silent pass."""
    measured = {key for r in results for key in r.metrics}
    missing = sorted(set(expect) - measured)
    if missing:
        raise NotebookFailed(f"expect names metrics that no notebook of the run measured: {missing}; "
                             f"measured: {sorted(measured)}")
