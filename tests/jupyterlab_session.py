"""Notebook 01 by Run All in JupyterLab, once per test session (the ``lab_run`` fixture of conftest.py): `make
lab`'s server, notebook 01 opened from its .py in Debian's chromium (driven by tests/browser's locked
playwright-core; ``make test`` installs both), every cell run, saved, past autosave, screenshotted.

The notebook runs as stored (the embedded default) in a copy of the working tree made into its own git
repository with the nbstripout filter ``make`` configures, so ``git status`` there shows what a person's
checkout would show after the session. The interactive run folder goes to a temporary reports root, where the
brain study's evidence test goes on with notebook 04 (``tests/studies/test_evidence.py``), as a person who
explored 01 in JupyterLab would.
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
from dataclasses import dataclass
from pathlib import Path

from brainvlm.core.paths import PROJECT_ROOT

HERE = Path(__file__).parent / "browser"
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


@dataclass(frozen=True)
class LabRun:
    """What Run All in JupyterLab left: the checkout's copy, the reports root, the driver's output, the server log."""

    checkout: Path
    reports: Path
    screenshot: Path
    returncode: int
    stdout: str
    stderr: str
    lab_log: str

    @property
    def interactive(self) -> Path:
        """The interactive run folder notebook 01 wrote."""
        return self.reports / "interactive"

    def check_ran(self) -> None:
        """Raise with the driver's and the server's last words unless the driver ended well."""
        assert self.returncode == 0, self.stderr[-3000:] + self.lab_log[-2000:]


def run_all_in_jupyterlab(folder: Path) -> LabRun:
    """Start JupyterLab on a copy of the checkout, Run All on notebook 01 in chromium, save; stop the server."""
    assert CHROMIUM.is_file(), "Debian's chromium is missing: run `make test` as root (it installs it with apt)"
    assert DRIVER.is_dir(), "playwright-core is missing: `make test` installs it (npm ci in tests/browser)"
    checkout = copy_of_checkout(folder / "checkout")
    settings = folder / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosaveInterval": 5}))
    port, token = free_port(), "browser-test"
    env = {**os.environ, "BRAINVLM_REPORTS_DIR": str(folder / "reports"),
           "JUPYTERLAB_SETTINGS_DIR": str(folder / "settings"), "JUPYTER_RUNTIME_DIR": str(folder / "runtime")}
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--notebook-dir={checkout}", "--allow-root"]
    log = folder / "lab.log"
    screenshot = folder / "jupyterlab_01_run_all.png"
    with open(log, "w") as server_log:
        server = subprocess.Popen(command, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=server_log)
        try:
            wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server)
            done = subprocess.run(["node", str(HERE / "run_all.mjs"),
                                   f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}", str(screenshot),
                                   "400"], cwd=HERE, capture_output=True, text=True, timeout=480, check=False)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return LabRun(checkout, folder / "reports", screenshot, done.returncode, done.stdout, done.stderr,
                  log.read_text())
