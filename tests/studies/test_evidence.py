"""The brain study's embedded default learns from the images: notebook 01 by Run All in JupyterLab (the
browser test's run, ``lab_run``), then notebook 04 run as stored in the same interactive run folder, meet every
`brain.` expectation of notebook 04's parameters cell.

It shares the machine like every test (torch on its worker's share of the cores): the default holds at any
thread count.
"""

import json

import pytest
from conftest import meets_default_expectations, run_default

from brainvlm.core import jsonio
from brainvlm.studies import controls


@pytest.fixture(scope="module")
def default_run(lab_run, tmp_path_factory):
    lab_run.check_ran()
    return run_default(tmp_path_factory, "04", reports=lab_run.reports)[0]


@pytest.mark.slow
def test_default_run_meets_every_expectation(default_run):
    metrics = meets_default_expectations(default_run, "04_train_lora", "brain.")  # raises with the measured numbers
    assert metrics["brain.n_test"] >= 100
    assert metrics["brain.test_minus_shuffled_images_accuracy_lo"] <= (
        metrics["brain.test_minus_shuffled_images_accuracy"]) <= metrics["brain.test_minus_shuffled_images_accuracy_hi"]
    assert metrics["brain.test_minus_shuffled_images_accuracy"] == pytest.approx(
        metrics["brain.test_accuracy"] - metrics["brain.shuffled_images_accuracy"])


@pytest.mark.slow
def test_test_predictions_let_anyone_recompute_the_accuracy(default_run):
    samples = jsonio.read_jsonl(default_run / "data" / "sex" / "test.jsonl")
    lines = (default_run / "predictions" / "04_sex_test.jsonl").read_text().splitlines()
    predictions = {row["id"]: row["prediction"] for row in map(json.loads, lines)}
    assert len(lines) == len(samples) and set(predictions) == {s["id"] for s in samples}
    table = controls.label_agreement(samples, [predictions[s["id"]] for s in samples],
                                     {"male": ["M"], "female": ["F"]})
    metrics = json.loads((default_run / "metrics" / "04_train_lora.json").read_text())
    assert table["agrees"].mean() == pytest.approx(metrics["brain.test_accuracy"])
