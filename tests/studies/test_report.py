"""The report study's pieces so far: data by patient, EHR off, the curriculum stages, a short fit, scores."""

from __future__ import annotations

import pandas as pd
import pytest

from brainvlm.core.jsonio import read_jsonl
from brainvlm.data import synthetic_cxr
from brainvlm.data.curriculum import build_records
from brainvlm.studies import report

OBSERVATIONS = ("Cardiomegaly", "Pleural Effusion", "Consolidation", "Support Devices")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("report_run")
    table_path = synthetic_cxr.make_synthetic_cxr(run / "data" / "cxr", n_patients=24, seed=0, progress=False)
    table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
    records = build_records(table, list(synthetic_cxr.EHR_COLUMNS))
    samples = report.to_samples(report.split_records(records, (0.6, 0.2, 0.2), 0), "synthetic")
    report.write_data(samples, run / "data" / "report", str(table_path.parent))
    return run


def params(**over) -> dict:
    base = {"seed": 0, "model": "tiny", "dtype": "float32", "load_in_4bit": False, "report_lora_r": 4,
            "report_lora_alpha": 8, "report_lr": 2.0e-3, "report_batch_size": 4, "report_steps": 4,
            "report_stages": [{"name": "A", "share": 0.5, "mode": "image_only"},
                              {"name": "B", "share": 0.5, "mode": "image_ehr"}],
            "report_ehr_dropout": 0.5, "report_eval_every": 0, "report_save_every": 0, "report_val_samples": 4}
    return {**base, **over}


def test_splits_keep_patients_and_both_stages_of_an_image_together(run_dir):
    manifest = report.read_data(run_dir / "data" / "report")
    samples = {split: read_jsonl(path) for split, path in manifest["files"].items()}
    assert report.audit(samples)["passed"].all()
    assert all(s["metadata"]["stage"] in ("A", "B") for split in samples.values() for s in split)


def test_ehr_off_removes_only_the_patient_data_block(run_dir):
    manifest = report.read_data(run_dir / "data" / "report")
    stage_b = next(s for s in read_jsonl(manifest["files"]["train"]) if s["metadata"]["mode"] == "image_ehr")
    off = report.ehr_off(stage_b)
    texts = [p["text"] for p in off["conversations"][0]["content"] if p["type"] == "text"]
    assert texts == ["Image:", "Answer Impression, CheXpert & ICD."]
    assert "Patient Data:" in stage_b["conversations"][0]["content"][0]["text"]  # the original is untouched
    assert off["conversations"][1] == stage_b["conversations"][1]


def test_settings_are_complete_and_stages_share_the_steps(run_dir):
    with pytest.raises(report.SettingsError, match=r"report settings missing: \['report_lr'\]"):
        report.settings_for({k: v for k, v in params().items() if k != "report_lr"})
    with pytest.raises(report.SettingsError, match="shares must be positive and sum to 1"):
        report.settings_for(params(report_stages=[{"name": "A", "share": 0.7, "mode": "image_only"}]))
    settings = report.settings_for(params(report_steps=10))
    train = read_jsonl(report.read_data(run_dir / "data" / "report")["files"]["train"])
    stages = report.stage_samples(train, settings)
    assert [s.name for s in stages] == ["A", "B"] and [s.max_steps for s in stages] == [5, 5]
    assert all(s["metadata"]["mode"] == "image_only" for s in stages[0].train)
    modes = {s["metadata"]["mode"] for s in stages[1].train}
    assert modes == {"image_ehr", "image_ehr_off"}  # EHR dropout removed some patient-data blocks


def test_a_short_curriculum_fit_runs_both_stages_and_scores_against_the_constant_report(run_dir):
    trained = report.train(params(), "report", run_dir, progress=False)
    assert trained.result.steps == 4 and set(trained.result.log["stage"]) == {"A", "B"}
    manifest = report.read_data(run_dir / "data" / "report")
    train = read_jsonl(manifest["files"]["train"])
    test = [s for s in read_jsonl(manifest["files"]["test"]) if s["metadata"]["mode"] == "image_ehr"]
    answers = report.predict(trained.model, trained.processor, test[:4], run_dir / "p.jsonl",
                             manifest["image_root"], 4, 8, progress=False)
    assert len(answers) == 4
    constant = report.constant_report(train)
    assert constant.startswith("Impression: ") and "\nCheXpert: {" in constant and "\nICD: [" in constant
    references = [s["conversations"][-1]["content"][0]["text"] for s in test]
    image_codes, ehr_codes = set(synthetic_cxr.IMAGE_ICD.values()), set(synthetic_cxr.HISTORY_ICD.values())
    perfect = report.unit_scores(test, references, image_codes, ehr_codes, OBSERVATIONS)
    assert report.micro_f1(perfect, "chexpert") == 1.0 and perfect["icd_parsed"].all()
    flat = report.unit_scores(test, [constant] * len(test), image_codes, ehr_codes, OBSERVATIONS)
    assert report.micro_f1(flat, "chexpert") < 1.0
