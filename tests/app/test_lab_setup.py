"""`make`'s JupyterLab set-up: the kernel the notebooks name, .py opened as notebooks, the post-save hook."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jupytext

from brainvlm.app import lab_hooks, lab_setup
from brainvlm.core.paths import NOTEBOOKS_DIR


def test_setup_installs_the_kernel_the_notebooks_name(tmp_path):
    assert lab_setup.main(["--venv", str(tmp_path)]) == 0
    spec = json.loads((tmp_path / "share/jupyter/kernels/brainvlm/kernel.json").read_text())
    assert spec["display_name"] == "brainvlm (.venv)" and spec["argv"][0] == sys.executable
    assert spec["env"]["GOMP_SPINCOUNT"] == "5000"
    named = {jupytext.read(p).metadata["kernelspec"]["name"] for p in NOTEBOOKS_DIR.glob("0*.py")}
    assert named == {lab_setup.KERNEL_NAME}
    overrides = json.loads((tmp_path / "share/jupyter/lab/settings/overrides.json").read_text())
    assert overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["python"] == "Jupytext Notebook"
    assert overrides["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True
    server = json.loads((tmp_path / "etc/jupyter/jupyter_server_config.json").read_text())
    assert server["ContentsManager"]["post_save_hook"] == "brainvlm.app.lab_hooks.refresh_git_entry"


def test_this_environment_has_the_set_up():
    assert (Path(sys.prefix) / "share/jupyter/kernels/brainvlm/kernel.json").is_file(), "run make"


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True).stdout


def test_the_hook_cleans_a_stat_dirty_file_and_leaves_an_edited_one(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "filter.strip.clean", "grep -v '^output'")
    (tmp_path / ".gitattributes").write_text("*.nb filter=strip\n")
    (tmp_path / "a.nb").write_text("cell 1\n")
    (tmp_path / "b.nb").write_text("cell 1\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    (tmp_path / "a.nb").write_text("cell 1\noutput: 42\n")  # outputs only: the tracked content is the same
    (tmp_path / "b.nb").write_text("cell 2\n")  # an edit
    assert git(tmp_path, "status", "--porcelain").splitlines() == [" M a.nb", " M b.nb"]
    assert lab_hooks.refresh_git_entry(os_path=str(tmp_path / "a.nb")).result() is True
    assert lab_hooks.refresh_git_entry(os_path=str(tmp_path / "b.nb")).result() is False
    assert git(tmp_path, "status", "--porcelain").splitlines() == [" M b.nb"]
    assert git(tmp_path, "diff", "--cached") == ""  # nothing staged
    assert lab_hooks.refresh_git_entry(os_path=str(tmp_path / "untracked.nb")).result() is False
