"""The run's index page, main figures and the paper-ready report's warning filter, on hand-made run folders
and notebooks (nothing is executed)."""

import json
import re

import matplotlib.pyplot as plt
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from brainvlm.app.index import write_index
from brainvlm.app.notebook_result import not_run
from brainvlm.app.report import (
    ExpectationError,
    check_expectations,
    expectation_rows,
    main_figures,
    save_figure,
    write_metrics,
)
from brainvlm.app.runner import NotebookResult, read_metrics, render_html
from brainvlm.app.warning_filter import without_dependency_warnings
from brainvlm.core.paths import NOTEBOOKS_DIR


def marks(page: str) -> dict[str, str]:
    """metric -> the mark of its expectation row in an index page (held, missed, unclear)."""
    rows = re.findall(r"<tr><td>([^<]+)</td><td>[^<]*</td><td>[^<]*</td><td class='(\w+)'>", page)
    return dict(rows)


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as two notebooks leave it: metrics, a main figure for the first, HTML for both."""
    run_dir = tmp_path / "r"
    write_metrics(run_dir, "04_train_lora", {"test_accuracy": 0.97, "shuffled_accuracy": 0.61, "n_test": 124,
                                            "bmi_mae_ratio": None}, study="brain")
    write_metrics(run_dir, "07_evaluate", {"sex_accuracy": 0.5}, study="brain")
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    save_figure(fig, run_dir, "04_loss_curves")
    save_figure(fig, run_dir, "04_image_controls", main=True)
    plt.close(fig)
    for name in ("04_train_lora", "07_evaluate"):
        (run_dir / f"{name}.html").write_text("<html></html>")
    return run_dir


def test_index_shows_each_expectation_and_whether_it_held(run_folder):
    expect = {"brain.test_accuracy": ">= 0.90", "brain.shuffled_accuracy": "<= 0.60",
              "brain.bmi_mae_ratio": "< 0.9", "brain.sex_accuracy": ">= 0.9", "brain.never_measured": "> 0"}
    results = [NotebookResult(n, "ok", 3.0, metrics=read_metrics(run_folder, n))
               for n in ("04_train_lora", "07_evaluate")]
    page = write_index(run_folder, results, run_folder / "p.yaml", expect).read_text(encoding="utf-8")
    assert marks(page) == {"brain.test_accuracy": "held", "brain.shuffled_accuracy": "missed",
                           "brain.bmi_mae_ratio": "missed", "brain.sex_accuracy": "missed"}
    assert "1 of 3 expectations held" in page and "0 of 1 expectations held" in page
    assert "<td>brain.n_test</td><td>124</td>" in page  # a metric without an expectation is listed too
    assert "<td>brain.bmi_mae_ratio</td><td>—</td>" in page  # a NaN metric (written as null) shows a dash
    assert "never_measured" not in page


def test_a_notebook_not_run_is_marked_and_links_to_no_earlier_file(run_folder):
    results = [NotebookResult("04_train_lora", "failed", 2.0, error="04_train_lora: cell 3 raised ValueError: x"),
               not_run("07_evaluate", ["04_train_lora"])]
    page = write_index(run_folder, results, run_folder / "p.yaml").read_text(encoding="utf-8")
    assert ("<tr class='not-run'><td>07_evaluate<div class='links'></div></td>"
            "<td class='status'>not run: needs 04</td>") in page
    assert 'href="07_evaluate.html"' not in page  # the folder holds an earlier run's 07_evaluate.html
    assert "<p class='outcome bad'>0 of 2 notebooks finished · 04_train_lora failed · 07_evaluate not run: needs 04" \
        in page


def test_the_main_figure_is_a_thumbnail_linking_to_the_report(run_folder):
    assert main_figures(run_folder) == {"04": "04_image_controls"}
    results = [NotebookResult("04_train_lora", "ok", 1.0), NotebookResult("07_evaluate", "ok", 1.0)]
    page = write_index(run_folder, results, run_folder / "p.yaml").read_text(encoding="utf-8")
    assert ('<a href="04_train_lora.report.html"><img class="thumb" src="figures/04_image_controls.png"'
            in page)
    assert page.count("<img") == 1  # 07 marked no main figure


def test_a_later_main_figure_of_a_notebook_replaces_the_earlier_one(run_folder):
    fig = plt.figure()
    save_figure(fig, run_folder, "04_loss_curves", main=True)
    save_figure(fig, run_folder, "07_sex_confusion", main=True)
    with pytest.raises(ValueError, match="must start with the notebook's number"):
        save_figure(fig, run_folder, "controls", main=True)
    plt.close(fig)
    assert json.loads((run_folder / "figures" / "main.json").read_text()) == {
        "04": "04_loss_curves", "07": "07_sex_confusion"}


@pytest.mark.parametrize("path", sorted(NOTEBOOKS_DIR.glob("[0-9]*.py")), ids=lambda p: p.stem)
def test_every_notebook_that_saves_figures_marks_its_main_one(path):
    calls = re.findall(r"save_figure\((.*)\)", path.read_text())
    assert not calls or any("main=" in call for call in calls), f"{path.name}: no save_figure(..., main=True)"


def test_many_metrics_without_expectations_fold_away(tmp_path):
    metrics = {f"report.m{i}": i / 10 for i in range(20)}
    page = write_index(tmp_path, [NotebookResult("05_x", "ok", 1.0, metrics=metrics)], tmp_path / "p.yaml",
                       {"report.m3": ">= 0.3"}).read_text(encoding="utf-8")
    assert marks(page) == {"report.m3": "held"}
    assert "<details><summary>19 other metrics</summary>" in page


def test_expectation_rows_never_raise_and_check_expectations_still_does():
    rows = expectation_rows({"a": 0.5, "b": 1.0}, {"a": ">= 0.9", "b": "about one"})
    assert [(r["metric"], r["passed"]) for r in rows] == [("a", False), ("b", None)]
    with pytest.raises(ExpectationError, match=r"expect\['b'\] = 'about one': write a comparison"):
        check_expectations({"b": 1.0}, {"b": "about one"})


# ---------------------------------------------------------------- the paper-ready report's warning filter
DEPENDENCY_WARNING = ("/venv/lib/python3.11/site-packages/transformers/modeling_utils.py:3312: "
                      "FutureWarning: `is_gradient_checkpointing` is deprecated\n  warnings.warn(\n")
LOGGED = "[2026-11-30 16:52:38,856] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator\n"


def hand_made_notebook() -> nbformat.NotebookNode:
    """A notebook whose outputs mix dependency warnings with the notebook's own prints and an error."""
    cells = [
        new_code_cell("train()", outputs=[
            new_output("stream", name="stderr", text=DEPENDENCY_WARNING + "own progress note\n"),
            new_output("stream", name="stdout", text=LOGGED + "loss 0.12\n"),
            new_output("stream", name="stderr", text="<frozen abc>:1: DeprecationWarning: x\n"),
            new_output("stream", name="stderr", text="WARNING:brainvlm.train.fit:kept, our own logger\n"),
        ]),
        new_code_cell("evaluate()", outputs=[
            new_output("stream", name="stderr", text="/tmp/ipykernel_1/2.py:3: UserWarning: y\n"),
            new_output("stream", name="stderr", text='  warnings.warn("y")\n'),  # the source line comes later
            new_output("error", ename="ValueError", evalue="planned", traceback=["ValueError: planned"]),
        ]),
    ]
    return new_notebook(cells=cells)


def test_dependency_warnings_leave_the_report_and_the_rest_stays():
    notebook = hand_made_notebook()
    clean = without_dependency_warnings(notebook)
    first, second = clean.cells[0].outputs, clean.cells[1].outputs
    assert [o.get("text") for o in first] == ["own progress note\n", "loss 0.12\n",
                                              "WARNING:brainvlm.train.fit:kept, our own logger\n"]
    assert [o["output_type"] for o in second] == ["error"]
    assert notebook.cells[0].outputs[0]["text"].startswith("/venv/")  # the notebook itself keeps them


def test_report_html_has_no_dependency_warnings_and_the_full_html_keeps_them(tmp_path):
    nbformat.write(hand_made_notebook(), tmp_path / "09_x.ipynb")
    full, report = (p.read_text(encoding="utf-8") for p in render_html(tmp_path, "09_x"))
    for text in ("is_gradient_checkpointing", "Setting accelerator", "UserWarning"):
        assert text in full and text not in report, text
    for text in ("own progress note", "loss 0.12", "our own logger", "ValueError: planned"):
        assert text in report, text
