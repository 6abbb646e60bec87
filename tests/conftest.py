"""Shared fixtures, and how the suite shares the machine when it runs on two workers.

The runner executes params/ci.yaml once per test session; tests read its outputs. JupyterLab runs notebook
01 once (Run All in chromium); the browser test and the brain study's evidence test read its run. On two
pytest-xdist workers (``-n 2 --dist loadgroup --no-loadscope-reorder``, as ``make test`` runs it) every test
file is one unit of work, and every test that reads a shared run is in one unit with it, so each run is made
once. Each test gets its share of the cores as torch threads (one per worker on two cores),
the studies' evidence tests included: their defaults hold at any thread count, so they share the machine.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from brainvlm.core.paths import PARAMS_DIR, PROJECT_ROOT
from brainvlm.core.threads import available_cores

DATA = Path(__file__).parent / "data"
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded from a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GOMP_SPINCOUNT", "5000")  # before torch loads: short spinning waits (core.threads)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Small real data sets copied into the repository (each with a SOURCE.md)."""
    return DATA


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory) -> Path:
    """Run the notebooks of params/ci.yaml (the brain study's) once; return the run folder."""
    from brainvlm.app.runner import run

    reports = tmp_path_factory.mktemp("reports")
    run(PARAMS_DIR / "ci.yaml", run_name="ci", reports_dir=reports)
    return reports / "ci"


@pytest.fixture(scope="session")
def lab_run(tmp_path_factory):
    """Notebook 01 by Run All in JupyterLab, once (``jupyterlab_session``): the browser test checks what a person
    sees, and the brain study's evidence test goes on from its run folder with notebook 04."""
    from jupyterlab_session import run_all_in_jupyterlab

    return run_all_in_jupyterlab(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


def run_default(tmp_path_factory, only: str, reports: Path | None = None) -> tuple[Path, float]:
    """Run the notebooks ``only`` (``"01,04"``) as stored, as JupyterLab's Run All does: the committed notebook,
    nothing injected, its kernel (the one the notebook names) started in ``notebooks/``. Their interactive run
    folder goes under a reports root (``BRAINVLM_REPORTS_DIR``; a new temporary one unless ``reports`` names one
    that earlier notebooks of the run wrote), never a person's ``reports/``. Returns the run folder and the
    seconds it took."""
    import papermill

    from brainvlm.app.params import find_notebook
    from brainvlm.app.runner import kernel_environment
    from brainvlm.core.paths import NOTEBOOKS_DIR

    reports = reports or tmp_path_factory.mktemp("reports")
    executed = tmp_path_factory.mktemp("executed")
    start = time.perf_counter()
    with kernel_environment({"BRAINVLM_REPORTS_DIR": str(reports)}):
        for number in only.split(","):
            nb = find_notebook(number)
            papermill.execute_notebook(str(nb.path.with_suffix(".ipynb")), str(executed / f"{nb.name}.ipynb"),
                                       cwd=str(NOTEBOOKS_DIR), progress_bar=False)
    return reports / "interactive", time.perf_counter() - start


def meets_default_expectations(folder: Path, notebook: str, prefix: str) -> dict:
    """A notebook's metrics, checked against every ``prefix`` expectation of the embedded default (the
    notebook's parameters cell), raising with the measured numbers; the notebook must measure each of them."""
    from brainvlm.app.params import declared_parameters
    from brainvlm.app.report import check_expectations
    from brainvlm.core.paths import NOTEBOOKS_DIR

    metrics = json.loads((folder / "metrics" / f"{notebook}.json").read_text())
    declared = declared_parameters(NOTEBOOKS_DIR / f"{notebook}.py")["expect"]
    expect = {k: v for k, v in declared.items() if k.startswith(prefix)}
    assert expect, f"{notebook} declares no {prefix} expectation"
    rows = check_expectations(metrics, expect)
    assert {r["metric"] for r in rows} == set(expect), f"{notebook} does not measure every {prefix} expectation"
    return metrics


SHARED_RUNS = ("ci_run", "lab_run")  # session fixtures whose readers must share a worker with them


def work_unit(item: pytest.Item) -> str:
    """The unit an xdist worker runs whole: a shared run (the ci run, JupyterLab's Run All of 01) with its
    readers, else the test's file."""
    fixtures = getattr(item, "fixturenames", ())
    return next((name for name in SHARED_RUNS if name in fixtures), item.nodeid.split("::")[0])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist workers, group tests into work units (before xdist reads the groups); units that hold tests
    marked ``slow`` go first, so the long ones do not end the run on one worker while the other idles."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one process: the collection order stands
    units: dict[str, int] = {}
    for item in items:
        unit = work_unit(item)
        item.add_marker(pytest.mark.xdist_group(unit))
        rank = 0 if item.get_closest_marker("slow") else 1
        units[unit] = min(units.get(unit, rank), rank)
    order = {unit: position for position, unit in enumerate(units)}
    items.sort(key=lambda item: (units[work_unit(item)], order[work_unit(item)]))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse a two-worker run whose work units were lost: pytest-xdist's ``loadgroup`` writes each test's
    group into its node id, which pytest 9.2 stopped honouring (hence the pin on pytest 9.1)."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or not session.config.getvalue("loadgroup"):
        return
    lost = [item.nodeid for item in session.items if "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(f"{len(lost)} tests have no work unit in their node id under --dist loadgroup "
                                f"(first: {lost[0]}); install the pytest pinned in requirements/lock.txt")


def threads_for_share() -> None:
    """Give a test its share of the cores: the cores over the workers.

    Torch's OpenMP threads spin while they wait; two workers with a thread per core each (four busy threads
    on two cores) run several times slower than one. The share goes to this process's torch and, through
    ``OMP_NUM_THREADS``, to the notebook kernels and other processes the test starts.
    """
    threads = max(1, available_cores() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Setup, call and teardown of each test with its share of the cores."""
    threads_for_share()
    yield
