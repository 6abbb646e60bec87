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
    """Run every notebook on params/ci.yaml once; return the run folder."""
    from brainvlm.app.runner import run

    reports = tmp_path_factory.mktemp("reports")
    run(PARAMS_DIR / "ci.yaml", run_name="ci", reports_dir=reports)
    return reports / "ci"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT
