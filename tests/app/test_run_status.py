"""The runner writes status.json as a run starts, ends and fails (with the failing notebook and cell)."""

from __future__ import annotations

import json

import nbformat
import pytest

from brainvlm.app.runner import NotebookFailed, run

FAILS_IN_CELL_2 = '''# %% tags=["parameters"]
run_dir: str = ""
fail: bool = True

# %%
x = 1

# %%
if fail:
    raise ValueError("planned failure")
'''


def test_status_json_says_done_or_failed_with_the_notebook_and_cell(tmp_path):
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    (notebooks / "01_fails.py").write_text(FAILS_IN_CELL_2)
    params = tmp_path / "p.yaml"
    params.write_text("fail: true\n")
    with pytest.raises(NotebookFailed):
        run(params, run_name="r", reports_dir=tmp_path / "reports", notebooks_dir=notebooks)
    status = json.loads((tmp_path / "reports" / "r" / "status.json").read_text())
    assert (status["state"], status["notebook"]) == ("failed", "01_fails")
    executed = nbformat.read(tmp_path / "reports" / "r" / "01_fails.ipynb", as_version=4)
    cells = [c for c in executed.cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    assert "raise ValueError" in cells[status["cell"]].source  # papermill's index, before its error banners
    assert "ValueError: planned failure" in status["error"] and status["notebooks"] == ["01_fails"]
    assert status["started"] <= status["ended"]

    params.write_text("fail: false\n")
    run(params, run_name="r", reports_dir=tmp_path / "reports", notebooks_dir=notebooks)
    status = json.loads((tmp_path / "reports" / "r" / "status.json").read_text())
    assert status["state"] == "done" and "error" not in status and status["slurm_job"] is None
