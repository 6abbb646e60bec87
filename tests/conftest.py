"""Shared fixtures, and how the suite shares the machine when it runs on two workers.

The runner executes params/ci.yaml once per test session; tests read its outputs. On two
pytest-xdist workers (``-n 2 --dist loadgroup --no-loadscope-reorder``; not yet the README's test command)
every test file is one unit of work, and every test that reads the ci run is in one unit with it, so the
run is made once. Tests marked ``alone`` (the studies' evidence tests, whose issues give the time of a
notebook run alone on the machine) hold the machine exclusively: while one runs, the other worker waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from brainvlm.core.paths import PARAMS_DIR, PROJECT_ROOT

DATA = Path(__file__).parent / "data"
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded from a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
def project_root() -> Path:
    return PROJECT_ROOT


def assert_run_layout(folder: Path, notebook: str) -> None:
    """A runner's outputs for one notebook: the executed notebook, both HTML renderings, its metrics, its main
    figure marked and shown on the run's index page."""
    import json

    for suffix in (".ipynb", ".html", ".report.html"):
        assert (folder / f"{notebook}{suffix}").is_file(), f"{notebook}{suffix}"
    assert (folder / "metrics" / f"{notebook}.json").is_file()
    marked = json.loads((folder / "figures" / "main.json").read_text())
    figure = marked[notebook[:2]]
    assert (folder / "figures" / f"{figure}.png").is_file()
    assert f'src="figures/{figure}.png"' in (folder / "index.html").read_text()


def work_unit(item: pytest.Item) -> str:
    """The unit an xdist worker runs whole: the ci run with its readers, else the test's file."""
    return "ci_run" if "ci_run" in getattr(item, "fixturenames", ()) else item.nodeid.split("::")[0]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist workers, group tests into work units (before xdist reads the groups); units that hold tests
    marked ``alone`` or ``slow`` go first, so the long ones do not end the run on one worker while the other
    idles."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one process: the collection order stands
    units: dict[str, int] = {}
    for item in items:
        unit = work_unit(item)
        item.add_marker(pytest.mark.xdist_group(unit))
        rank = 0 if item.get_closest_marker("alone") else 1 if item.get_closest_marker("slow") else 2
        units[unit] = min(units.get(unit, rank), rank)
    order = {unit: position for position, unit in enumerate(units)}
    items.sort(key=lambda item: (units[work_unit(item)], order[work_unit(item)]))


@contextlib.contextmanager
def share_of_machine(alone: bool) -> Iterator[None]:
    """Hold the machine shared, or exclusively for an ``alone`` test, across the xdist workers of one run.

    Two ``flock`` files: a gate that an exclusive holder keeps closed (so shared holders cannot overtake it)
    and the lock itself. Outside xdist there is one process and nothing to share.
    """
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        yield
        return
    base = Path(tempfile.gettempdir()) / f"brainvlm-tests-{run}"
    with open(f"{base}.gate", "a") as gate, open(f"{base}.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Setup, call and teardown of each test under its share of the machine."""
    with share_of_machine(alone=item.get_closest_marker("alone") is not None):
        yield
