"""Set up JupyterLab inside a virtual environment (``make`` runs it once, ``make lab`` relies on it).

* a kernel named ``brainvlm`` ("brainvlm (.venv)") installed into the environment itself, so any ``.venv``
  built by ``make`` resolves the name the committed notebooks carry, with that environment's Python;
* the paired ``.py`` notebooks open as notebooks (Jupytext Notebook as the default viewer of Python files);
* the notebook metadata jupytext writes keeps no volatile keys (``jupytext.toml`` in the project);
* after each save, an unchanged notebook leaves ``git status`` clean (``app.lab_hooks``).

Usage: ``python -m brainvlm.app.lab_setup --venv .venv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from brainvlm.core.threads import SPIN_COUNT

KERNEL_NAME = "brainvlm"
KERNEL_DISPLAY_NAME = "brainvlm (.venv)"
# OpenMP threads spin only briefly while they wait, and the tokenizers start no pool (core.threads).
KERNEL_ENV = {"GOMP_SPINCOUNT": SPIN_COUNT, "TOKENIZERS_PARALLELISM": "false"}

POST_SAVE_HOOK = "brainvlm.app.lab_hooks.refresh_git_entry"  # keeps git status clean after a save (see there)
# JupyterLab's documented place for settings defaults of an environment: <prefix>/share/jupyter/lab/settings.
LAB_OVERRIDES = {
    "@jupyterlab/docmanager-extension:plugin": {
        "defaultViewers": {"python": "Jupytext Notebook"},
    },
    # Progress bars survive a reopen of the working copy: widget state is saved with the notebook (git sees it
    # stripped, see .gitattributes).
    "@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True},
    # No news fetched from the internet (clusters and this project's machines have no way out anyway).
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"},
}


def install_kernel(prefix: Path) -> Path:
    """Install the ``brainvlm`` kernel spec into ``prefix`` (idempotent); returns its folder."""
    from ipykernel.kernelspec import install

    folder = Path(install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY_NAME, prefix=str(prefix)))
    spec_path = folder / "kernel.json"
    spec = json.loads(spec_path.read_text())
    spec["env"] = KERNEL_ENV  # set before torch loads in the kernel (core.threads)
    spec_path.write_text(json.dumps(spec, indent=1) + "\n")
    return folder


def write_lab_overrides(prefix: Path) -> Path:
    """Open ``.py`` files as Jupytext notebooks by default (merged into existing overrides)."""
    path = prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = json.loads(path.read_text()) if path.is_file() else {}
    for plugin, values in LAB_OVERRIDES.items():
        settings.setdefault(plugin, {}).update(values)
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return path


def write_server_config(prefix: Path) -> Path:
    """The Jupyter server of this environment runs ``app.lab_hooks.refresh_git_entry`` after every save."""
    path = prefix / "etc" / "jupyter" / "jupyter_server_config.json"  # (a .d folder holds extension switches only)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = json.loads(path.read_text()) if path.is_file() else {}
    config.setdefault("ContentsManager", {})["post_save_hook"] = POST_SAVE_HOOK
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brainvlm.app.lab_setup", description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, default=Path(sys.prefix), help="the environment (default: this one)")
    args = parser.parse_args(argv)
    prefix = args.venv.resolve()
    kernel = install_kernel(prefix)
    overrides = write_lab_overrides(prefix)
    write_server_config(prefix)
    print(f"kernel {KERNEL_NAME!r} ({KERNEL_DISPLAY_NAME}) in {kernel}; JupyterLab settings in {overrides}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
