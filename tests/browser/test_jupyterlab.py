"""JupyterLab as a person meets it: notebook 01 opened from its .py, Run All, save (``lab_run`` in conftest.py,
``tests/jupyterlab_session.py``), and what that leaves: every cell run without an error, the outputs saved in
the working copy, ``git status`` clean, an interactive run folder that says the notebook is done.
"""

from __future__ import annotations

import json

import pytest
from jupyterlab_session import NOTEBOOK, git


@pytest.mark.slow
def test_run_all_in_jupyterlab_leaves_git_clean(lab_run):
    lab_run.check_ran()
    seen = json.loads(lab_run.stdout.strip().splitlines()[-1])
    assert seen["cells"] > 5 and seen["executed"] == seen["cells"], seen
    assert not seen["errors"], seen["errors"]
    assert not seen["dialogs"], seen["dialogs"]
    assert lab_run.screenshot.stat().st_size > 10_000
    saved = json.loads((lab_run.checkout / NOTEBOOK).with_suffix(".ipynb").read_text())
    outputs = [o for c in saved["cells"] for o in c.get("outputs", [])]
    assert outputs and not [o for o in outputs if o["output_type"] == "error"], "Run All was not saved, or failed"
    assert git(lab_run.checkout, "status", "--porcelain") == "", "opening, running and saving changed tracked files"
    interactive = lab_run.interactive
    assert (interactive / "metrics" / "01_generate_data.json").is_file()
    assert json.loads((interactive / "status.json").read_text())["state"] == "done"
    assert "01_generate_data" in (interactive / "index.html").read_text()
