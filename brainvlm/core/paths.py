"""Project paths: every path in brainvlm is built from these constants, never from the working directory."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # brainvlm/core/paths.py -> the repository
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PARAMS_DIR = PROJECT_ROOT / "params"
# Runs are written under reports/; BRAINVLM_REPORTS_DIR moves that root (the tests use it, so that a notebook run
# as stored never touches a person's reports/). A relative value is taken from the project root.
REPORTS_DIR = PROJECT_ROOT / os.environ.get("BRAINVLM_REPORTS_DIR", "reports")
CACHE_DIR = PROJECT_ROOT / ".cache"
