"""One run folder holds one experiment, whether the runner or a person in JupyterLab writes it."""

from __future__ import annotations

import json
import os

import jupytext
import nbformat
import pytest

from brainvlm.app import run_folder
from brainvlm.app.report import checkout_root, resolve_run_dir
from brainvlm.app.runner import prepare, run
from brainvlm.core.paths import PARAMS_DIR, PROJECT_ROOT


@pytest.fixture
def by_hand(monkeypatch):
    monkeypatch.delenv(run_folder.RUNNER_VARIABLE, raising=False)


def test_a_relative_run_dir_is_taken_from_the_project_root_not_the_notebook_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(PROJECT_ROOT / "notebooks")
    relative = os.path.relpath(tmp_path / "run", PROJECT_ROOT)  # as a person writes "reports/default"
    assert resolve_run_dir(relative).resolve() == (tmp_path / "run").resolve()
    assert (tmp_path / "run").is_dir()
    assert checkout_root() == PROJECT_ROOT
    assert not (PROJECT_ROOT / "notebooks" / "reports").exists()


def test_the_checkout_is_found_from_the_notebook_folder(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "brainvlm"\n')
    assert checkout_root(tmp_path / "notebooks") == tmp_path
    assert checkout_root(tmp_path.parent) == PROJECT_ROOT  # elsewhere: the package's own checkout


def test_notebooks_run_by_hand_keep_a_normal_run_folder(by_hand, tmp_path):
    folder = tmp_path / "interactive"
    namespace = {"seed": 0, "n_subjects": 48, "volume_size": 32}
    opened = run_folder.open_notebook(str(folder), "01_generate_data", namespace)
    assert json.loads((opened / "status.json").read_text())["state"] == "running"
    (opened / "metrics").mkdir()
    (opened / "metrics" / "01_generate_data.json").write_text('{"brain.n_subjects": 48}')
    run_folder.close_notebook(opened, "01_generate_data", namespace)
    assert "01_generate_data" in (opened / "index.html").read_text()
    provenance = json.loads((opened / "provenance.json").read_text())
    assert provenance["notebook_params"]["01_generate_data"]["n_subjects"] == 48
    assert provenance["notebooks"][0]["status"] == "ok" and isinstance(provenance["threads"], int)
    assert json.loads((opened / "status.json").read_text())["state"] == "done"
    with pytest.raises(run_folder.RunFolderError, match=r"n_subjects = 48 \(01_generate_data\) != 300. Nothing was "
                                                         r"written"):
        run_folder.open_notebook(str(folder), "01_generate_data", {**namespace, "n_subjects": 300})
    with pytest.raises(run_folder.RunFolderError, match=r"seed = 0 \(01_generate_data\) != 1"):
        run_folder.open_notebook(str(folder), "04_train_lora", {"seed": 1})


def test_each_notebook_keeps_its_own_expectations_in_one_folder(by_hand, tmp_path):
    """``make run`` again, or ``--only 05`` into the default's folder: every notebook declares its own ``expect``,
    and none of them is a parameter the other notebooks ran with."""
    folder = tmp_path / "default"
    brain = {"seed": 0, "expect": {"brain.test_accuracy": ">= 0.90"}}
    opened = run_folder.open_notebook(str(folder), "04_train_lora", brain)
    run_folder.close_notebook(opened, "04_train_lora", brain)
    report = {"seed": 0, "expect": {"report.f1_cardiomegaly": ">= 0.6"}}
    assert run_folder.open_notebook(str(folder), "05_train_report_curriculum", report) == opened
    assert run_folder.conflicts(folder, {**brain, "expect": {}}) == []  # 04 again, its expectations edited
    with pytest.raises(run_folder.RunFolderError, match=r"seed = 0 \(04_train_lora\) != 1"):
        run_folder.open_notebook(str(folder), "05_train_report_curriculum", {**report, "seed": 1})


def test_the_runner_refuses_a_folder_made_with_other_parameters(tmp_path):
    run(PARAMS_DIR / "ci.yaml", run_name="one", reports_dir=tmp_path, only="01")
    before = (tmp_path / "one" / "data" / "manifest.json").read_bytes()
    with pytest.raises(run_folder.RunFolderError, match=r"n_subjects = 48 \(01_generate_data\) != 40"):
        run(PARAMS_DIR / "ci.yaml", run_name="one", reports_dir=tmp_path, only="01", overrides={"n_subjects": 40})
    assert (tmp_path / "one" / "data" / "manifest.json").read_bytes() == before
    run(PARAMS_DIR / "ci.yaml", run_name="one", reports_dir=tmp_path, only="01")  # the same run again: fine


def test_prepare_only_writes_each_notebook_with_the_params_injected(tmp_path):
    written = prepare(PARAMS_DIR / "ci.yaml", run_name="steps", reports_dir=tmp_path)
    assert [p.name for p in written] == [f"{p.stem}.ipynb" for p in sorted((PROJECT_ROOT / "notebooks").glob("0*.py"))]
    first = nbformat.read(written[0], as_version=4)
    injected = [c for c in first.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "n_subjects = 48" in injected[0].source
    assert str((tmp_path / "steps").resolve()) in injected[0].source
    assert all(not c.get("outputs") for c in first.cells if c.cell_type == "code")
    assert first.metadata.kernelspec.name == jupytext.read(PROJECT_ROOT / "notebooks" / "01_generate_data.py"
                                                           ).metadata.kernelspec.name
