"""The report study's embedded default: notebook 05 alone on the default params meets every `report.`
expectation (findings from the image, ICD codes from the EHR, nothing from the mean image)."""

import json

import pytest
from conftest import meets_default_expectations, run_default

from brainvlm.core import jsonio
from brainvlm.eval import reportmetrics
from brainvlm.studies import report


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return run_default(tmp_path_factory, "05")


@pytest.mark.slow
def test_default_report_run_meets_every_expectation(default_run):
    folder, _ = default_run
    metrics = meets_default_expectations(folder, "05_train_report_curriculum", "report.")  # raises with the measured numbers
    for name in ("ehr_on_minus_off_icd_ehr_micro_f1", "curriculum_minus_constant_chexpert14_micro_f1_u0"):
        assert metrics[f"report.{name}_lo"] <= metrics[f"report.{name}"] <= metrics[f"report.{name}_hi"]


@pytest.mark.slow
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
