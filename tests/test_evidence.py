"""The embedded default learns from the images: notebook 04's thresholds, measured on the default params."""

import json

import pytest

from brainvlm import controls, tasks
from brainvlm.params import read_params
from brainvlm.paths import PARAMS_DIR
from brainvlm.report import check_expectations
from brainvlm.runner import run


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    run(PARAMS_DIR / "default.yaml", run_name="default", reports_dir=reports, only="01,04")
    return reports / "default"


@pytest.mark.slow
def test_default_run_meets_every_expectation(default_run):
    metrics = json.loads((default_run / "metrics" / "04_train_lora.json").read_text())
    expect = read_params(PARAMS_DIR / "default.yaml")["expect"]
    rows = check_expectations(metrics, expect)  # raises with the measured numbers
    assert {r["metric"] for r in rows} == set(expect)
    assert metrics["n_test"] >= 100


@pytest.mark.slow
def test_test_predictions_let_anyone_recompute_the_accuracy(default_run):
    samples = tasks.read_jsonl(default_run / "data" / "sex" / "test.jsonl")
    lines = (default_run / "predictions" / "04_sex_test.jsonl").read_text().splitlines()
    predictions = {row["id"]: row["prediction"] for row in map(json.loads, lines)}
    assert len(lines) == len(samples) and set(predictions) == {s["id"] for s in samples}
    table = controls.label_agreement(samples, [predictions[s["id"]] for s in samples],
                                     {"male": ["M"], "female": ["F"]})
    metrics = json.loads((default_run / "metrics" / "04_train_lora.json").read_text())
    assert table["agrees"].mean() == pytest.approx(metrics["test_accuracy"])
