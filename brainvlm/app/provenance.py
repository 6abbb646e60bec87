"""A run folder's ``provenance.json`` and ``metrics/``: what ran, with which code, packages, threads and params,
and what it measured."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainvlm.core.jsonio import read_json, write_json
from brainvlm.core.paths import PROJECT_ROOT

if TYPE_CHECKING:
    from brainvlm.app.notebook_result import NotebookResult

PACKAGES = ("brainvlm", "torch", "transformers", "peft", "accelerate", "tokenizers", "nibabel", "nilearn",
            "numpy", "pandas", "seaborn", "papermill", "jupytext", "pycocoevalcap")


def read_metrics(run_dir: Path, name: str) -> dict[str, Any]:
    """A notebook's headline metrics, or an empty dict when it wrote none."""
    path = run_dir / "metrics" / f"{name}.json"
    return read_json(path) if path.is_file() else {}


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
                     results: list[NotebookResult], threads: int | None = None,
                     notebook_params: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write ``provenance.json``: code version, packages, torch threads, params, input and output hashes.

    Results are byte-identical for the same params, seed and thread count; ``threads`` records the last.
    ``notebook_params`` (notebook -> the parameters it ran with) is what ``app.run_folder`` checks a later
    notebook against.
    """
    return write_json({
        "git": git_commit(),
        "packages": package_versions(),
        "threads": threads,
        "params_file": str(params_path),
        "params": params,
        "notebooks": [{"name": r.name, "status": r.status, "seconds": round(r.seconds, 2)} for r in results],
        "notebook_params": notebook_params or {},
        "hashes": input_hashes(params, run_dir),
    }, run_dir / "provenance.json")
