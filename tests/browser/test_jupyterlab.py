"""JupyterLab as a person meets it: `make lab`'s server, notebook 01 opened from its .py, Run All, save.

The notebook runs as stored (the embedded default) in a copy of the working tree made into its own git
repository with the nbstripout filter ``make`` configures, so ``git status`` there shows what a person's
checkout would show after the session. The interactive run folder goes to a temporary reports root.
Needs Debian's chromium and tests/browser's locked playwright-core (``make test`` installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from brainvlm.core.paths import PROJECT_ROOT

HERE = Path(__file__).parent
CHROMIUM = Path("/usr/bin/chromium")
DRIVER = HERE / "node_modules" / "playwright-core"
NOTEBOOK = "notebooks/01_generate_data.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True).stdout


def copy_of_checkout(target: Path) -> Path:
    """The working tree (tracked and not ignored files) as a fresh repository, with the notebook filter ``make`` sets up."""
    files = git(PROJECT_ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        source = PROJECT_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git(target, "init", "-q")
    git(target, "config", "user.email", "tests@brainvlm")
    git(target, "config", "user.name", "tests")
    strip = Path(sys.prefix) / "bin" / "nbstripout"
    git(target, "config", "filter.nbstripout.clean",
        f'{strip} --keep-id --extra-keys "metadata.language_info metadata.widgets"')
    git(target, "config", "filter.nbstripout.smudge", "cat")
    git(target, "add", "-A")
    git(target, "commit", "-q", "-m", "copy")
    assert git(target, "status", "--porcelain") == ""
    return target


def wait_for_server(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process.poll() is not None:
            raise AssertionError(f"jupyter lab exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"jupyter lab did not answer at {url}")


@pytest.mark.slow
def test_run_all_in_jupyterlab_leaves_git_clean(tmp_path):
    assert CHROMIUM.is_file(), "Debian's chromium is missing: run `make test` as root (it installs it with apt)"
    assert DRIVER.is_dir(), "playwright-core is missing: `make test` installs it (npm ci in tests/browser)"
    checkout = copy_of_checkout(tmp_path / "checkout")
    settings = tmp_path / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosaveInterval": 5}))
    port, token = free_port(), "browser-test"
    env = {**os.environ, "BRAINVLM_REPORTS_DIR": str(tmp_path / "reports"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--notebook-dir={checkout}", "--allow-root"]
    server = subprocess.Popen(command, cwd=checkout, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "lab.log", "w"))
    try:
        wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server)
        screenshot = tmp_path / "jupyterlab_01_run_all.png"
        done = subprocess.run(["node", str(HERE / "run_all.mjs"),
                               f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}", str(screenshot), "400"],
                              cwd=HERE, capture_output=True, text=True, timeout=480, check=False)
        assert done.returncode == 0, done.stderr[-3000:] + (tmp_path / "lab.log").read_text()[-2000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["cells"] > 5 and seen["executed"] == seen["cells"], seen
    assert not seen["errors"], seen["errors"]
    assert not seen["dialogs"], seen["dialogs"]
    assert screenshot.stat().st_size > 10_000
    saved = json.loads((checkout / NOTEBOOK).with_suffix(".ipynb").read_text())
    outputs = [o for c in saved["cells"] for o in c.get("outputs", [])]
    assert outputs and not [o for o in outputs if o["output_type"] == "error"], "Run All was not saved, or failed"
    assert git(checkout, "status", "--porcelain") == "", "opening, running and saving changed tracked files"
    interactive = tmp_path / "reports" / "interactive"
    assert (interactive / "metrics" / "01_generate_data.json").is_file()
    assert json.loads((interactive / "status.json").read_text())["state"] == "done"
    assert "01_generate_data" in (interactive / "index.html").read_text()
