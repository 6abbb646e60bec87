"""The report study's embedded default: notebook 05 alone on the default params meets every `report.`
expectation (findings from the image, ICD codes from the EHR, nothing from the mean image)."""

import json
import time

import pytest
from conftest import assert_run_layout

from brainvlm.app.params import read_params
from brainvlm.app.report import check_expectations
from brainvlm.app.runner import run
from brainvlm.core import jsonio
from brainvlm.core.paths import PARAMS_DIR
from brainvlm.eval import reportmetrics
from brainvlm.studies import report

NOTEBOOK_LIMIT_S = 180  # the budget for notebook 05 alone on the default params, 2 CPU cores


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    start = time.perf_counter()
    run(PARAMS_DIR / "default.yaml", run_name="default", reports_dir=reports, only="05")
    return reports / "default", time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.alone
def test_default_report_run_meets_every_expectation_in_time(default_run):
    folder, seconds = default_run
    assert_run_layout(folder, "05_train_report_curriculum")  # what the ci run checks for the brain notebooks
    metrics = json.loads((folder / "metrics" / "05_train_report_curriculum.json").read_text())
    expect = {k: v for k, v in read_params(PARAMS_DIR / "default.yaml")["expect"].items()
              if k.startswith("report.")}
    rows = check_expectations(metrics, expect)  # raises with the measured numbers
    assert {r["metric"] for r in rows} == set(expect)  # notebook 05 measures every report expectation
    for name in ("ehr_on_minus_off_icd_ehr_micro_f1", "curriculum_minus_constant_chexpert14_micro_f1_u0"):
        assert metrics[f"report.{name}_lo"] <= metrics[f"report.{name}"] <= metrics[f"report.{name}_hi"]
    assert seconds <= NOTEBOOK_LIMIT_S, f"notebook 05 took {seconds:.0f} s on the default params"


@pytest.mark.slow
@pytest.mark.alone
def test_published_predictions_recompute_the_metrics(default_run):
    folder, _ = default_run
    test = report.of_mode(jsonio.read_jsonl(folder / "data" / "report" / "test.jsonl"), "image_ehr")
    metrics = json.loads((folder / "metrics" / "05_train_report_curriculum.json").read_text())
    groups = {"icd_image": ["I51.7", "J90", "J18.9"], "icd_ehr": ["E11.9", "I10", "J44.9", "I48.91"]}
    answers = {}
    for tag in ("curriculum_ehr_on", "curriculum_ehr_off"):
        rows = jsonio.read_jsonl(folder / "predictions" / f"05_report_{tag}.jsonl")
        by_id = {r["id"]: r["prediction"] for r in rows}
        assert len(rows) == len(test) and set(by_id) == {s["id"] for s in test}
        answers[tag] = reportmetrics.count_table(test, [by_id[s["id"]] for s in test], groups)
    on = reportmetrics.headline(answers["curriculum_ehr_on"], list(groups))
    off = reportmetrics.headline(answers["curriculum_ehr_off"], list(groups))
    assert on["chexpert14_micro_f1_u0"] == pytest.approx(metrics["report.curriculum_chexpert14_micro_f1_u0"])
    assert on["icd_ehr_micro_f1"] - off["icd_ehr_micro_f1"] == pytest.approx(
        metrics["report.ehr_on_minus_off_icd_ehr_micro_f1"])
