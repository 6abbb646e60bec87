"""A run goes on past a failed notebook and past an unmet expectation, and a sweep compares its runs when one
failed: real notebooks on params/ci.yaml.

One run (module fixture) executes 04, 05 and 07 with two problems: notebook 04 finds no data (01 is not part
of the run, so nothing stops 04 from starting, and it raises), and notebook 05 is given an expectation it
cannot meet. 07 needs 04, so it is not run; 05 stands alone, so it runs after the failed notebook, and its
unmet expectation is a result of the run. That a notebook after an unmet expectation still runs is shown with
small notebooks of the test's own (``tests/app/test_runner.py``). About 45 s on 2 busy CPU cores (04 fails in
about 10 s, 05 takes about 35 s at ``params/ci.yaml``'s sizes).
"""

from __future__ import annotations

import io
import json
import re

import pytest
import yaml

from brainvlm.app.console import Console
from brainvlm.app.runner import NotebookFailed, run
from brainvlm.app.sweep import SweepRequest, run_sweep
from brainvlm.app.sweep_spec import SweepSpec
from brainvlm.core.paths import PARAMS_DIR

UNMET = {"expect": {"report.n_test": ">= 100000"}}  # 05 measures a few dozen test images
NOT_RUN_07 = "not run: needs 04"


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory):
    """The run folder, the console's text and the error the run ended with."""
    reports = tmp_path_factory.mktemp("reports")
    console = Console(stream=io.StringIO())
    with pytest.raises(NotebookFailed) as ended:
        run(PARAMS_DIR / "ci.yaml", run_name="partial", only="04,05,07", reports_dir=reports,
            overrides=UNMET, console=console)
    return reports / "partial", console.stream.getvalue(), str(ended.value)


def test_an_unmet_expectation_in_05_is_shown_and_ends_the_run_non_zero(partial_run):
    run_dir, shown, error = partial_run
    assert "05_train_report_curriculum " in shown
    assert (run_dir / "metrics" / "05_train_report_curriculum.json").is_file()
    assert "expectations not met: 05_train_report_curriculum: report.n_test = " in error
    assert "(expected >= 100000)" in error
    page = (run_dir / "index.html").read_text(encoding="utf-8")
    assert "<td>report.n_test</td>" in page and "✗ not met" in page
    assert "1 expectation not met" in page


def test_a_failed_04_marks_07_not_run_and_05_still_runs(partial_run):
    run_dir, shown, error = partial_run
    assert error.startswith("04_train_lora: cell ") and "run notebook 01_generate_data for this run first" in error
    assert f"07_evaluate {NOT_RUN_07}" in error
    lines = [line.split() for line in shown.splitlines() if line.startswith("[")]
    ends = {words[1]: " ".join(words[2:]) for words in lines if words[2] != "started"}
    assert ends["04_train_lora"].startswith("failed") and ends["07_evaluate"] == NOT_RUN_07
    assert ends["05_train_report_curriculum"].startswith("ok")
    assert not (run_dir / "07_evaluate.ipynb").exists()
    provenance = json.loads((run_dir / "provenance.json").read_text())
    outcomes = {n["name"]: n["status"] for n in provenance["notebooks"]}
    assert outcomes == {"04_train_lora": "failed", "05_train_report_curriculum": "ok", "07_evaluate": NOT_RUN_07}
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["notebook"]) == ("failed", "04_train_lora")
    assert status["results"] == outcomes
    page = (run_dir / "index.html").read_text(encoding="utf-8")
    assert f"<td class='status'>{NOT_RUN_07}</td>" in page
    assert "1 of 3 notebooks finished · 04_train_lora failed · 07_evaluate not run: needs 04" in page


def test_a_sweep_with_a_failed_run_writes_its_comparison_and_names_the_run(tmp_path):
    base = yaml.safe_load((PARAMS_DIR / "ci.yaml").read_text())
    base.update(n_subjects=24, tasks=[task for task in base["tasks"] if task["name"] == "sex"])
    params = tmp_path / "base.yaml"
    params.write_text(yaml.safe_dump(base, sort_keys=False))
    said: list[str] = []
    request = SweepRequest(params, SweepSpec({"check_images": ["exists", "bogus"]}), "s", tmp_path / "reports",
                           only="01")
    states = run_sweep(request, say=said.append)
    assert {name: state["state"] for name, state in states.items()} == {
        "check_images=exists": "done", "check_images=bogus": "failed"}
    shown = "\n".join(said)
    assert "[1/2] check_images=exists started" in shown
    assert "  check_images=exists | [1/1] 01_generate_data" in shown  # each notebook, prefixed by its run
    assert any(line.startswith("  check_images=bogus | [1/1] 01_generate_data") and "failed" in line
               for line in said), shown
    assert re.search(r"^\[2/2\] check_images=bogus +failed +01_generate_data: cell \d+ .*CohortError", shown,
                     re.MULTILINE)
    page = tmp_path / "reports" / "s" / "compare" / "index.html"
    assert f"comparison of 2 of 2 runs (1 failed, named on the page): {page}\n  check_images=bogus " in shown
    assert said[-1].split()[:3] == ["check_images=bogus", "failed", "01_generate_data:"]
    text = page.read_text(encoding="utf-8")
    assert "Note: run check_images=bogus failed (notebook 01_generate_data, cell" in text
    assert "run check_images=bogus has no metrics" in text
