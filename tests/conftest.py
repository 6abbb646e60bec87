"""Shared fixtures. The runner executes params/ci.yaml once per test session; tests read its outputs."""

from __future__ import annotations

import os
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
