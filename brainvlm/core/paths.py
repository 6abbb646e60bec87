"""Project paths: every path in brainvlm is built from these constants, never from the working directory."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # brainvlm/core/paths.py -> the repository
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PARAMS_DIR = PROJECT_ROOT / "params"
REPORTS_DIR = PROJECT_ROOT / "reports"
CACHE_DIR = PROJECT_ROOT / ".cache"
