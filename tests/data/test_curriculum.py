"""Curriculum report data: the seed's record shapes through the adapter, the joins, and the builder."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from brainvlm.data.adapters import AdapterError, curriculum
from brainvlm.data.curriculum import build_records, target_text
from brainvlm.data.schema import validate_sample
from brainvlm.eval.answers import parse_chexpert, parse_icd

IMAGE = "files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg"
STAGE_B = {"image": IMAGE, "mode": "image_ehr", "stage": "B",
           "prompt": 'Patient Data: {"age": 71, "sex": "F", "history": "diabetes"}\nImage:<image>\n'
                     "Answer Impression, CheXpert & ICD.",
           "target": 'Impression: No acute process.\nCheXpert: {"No Finding": 1}\nICD: ["E11.9"]'}


def test_a_stage_b_record_becomes_a_report_with_ids_from_the_mimic_path_and_its_ehr():
    sample = curriculum.from_curriculum(STAGE_B, 3, "train", cohort_name="mimic")
    assert sample["id"] == "mimic_report_train_000003" and sample["task"] == "report"
    assert [p["type"] for p in sample["conversations"][0]["content"]] == ["text", "image", "text"]
    assert sample["metadata"] == {"split": "train", "domain": "chest", "stage": "B", "mode": "image_ehr",
                                  "patient_id": "10000032", "study_id": "50414267",
                                  "ehr": {"age": 71, "sex": "F", "history": "diabetes"}}
    assert validate_sample(sample, expected_split="train") == []


def test_explicit_ids_win_and_a_record_without_ids_names_file_and_line(tmp_path):
    record = {**STAGE_B, "image": "images/x.jpg", "subject_id": 7, "study_id": "s9", "stage": "A",
              "mode": "image_only", "prompt": "Image:<image>\nAnswer Impression & CheXpert."}
    sample = curriculum.from_curriculum(record, 1, "val")
    assert (sample["metadata"]["patient_id"], sample["metadata"]["study_id"], sample["metadata"]["ehr"]) == (
        "7", "s9", None)
    path = tmp_path / "curriculum_train.jsonl"
    path.write_text(json.dumps(STAGE_B) + "\n" + json.dumps({**STAGE_B, "image": "images/y.jpg"}) + "\n")
    with pytest.raises(AdapterError, match=re.escape(
            f"{path}:2: no patient and study id; give subject_id and study_id, or an image path "
            "files/pNN/p<patient>/s<study>/<image>.jpg (image is 'images/y.jpg')")):
        curriculum.read_curriculum(path, "train")
    path.write_text(json.dumps({**STAGE_B, "stage": "C"}) + "\n")
    with pytest.raises(AdapterError, match=re.escape(f"{path}:1: stage 'C' unknown; expected one of ['A', 'B']")):
        curriculum.read_curriculum(path, "train")
    path.write_text('{"image": "x"\n')
    with pytest.raises(AdapterError, match=re.escape(f"{path}:1: invalid JSON")):
        curriculum.read_curriculum(path, "train")


def test_ehr_and_chexpert_joins_are_keyed_by_study_id(tmp_path):
    ehr = tmp_path / "ehr_context.jsonl"
    ehr.write_text(json.dumps({"study_id": "50414267", "age": 71, "icd": ["E11.9"]}) + "\n")
    labels = tmp_path / "chexpert_dict.json"
    labels.write_text(json.dumps({"50414267": {"No Finding": 1, "Edema": None}}))
    path = tmp_path / "curriculum_train.jsonl"
    path.write_text(json.dumps(STAGE_B) + "\n")
    joined_ehr, joined_labels = curriculum.read_joins(ehr, labels)
    sample = curriculum.read_curriculum(path, "train", ehr=joined_ehr, chexpert=joined_labels)[0]
    assert sample["metadata"]["ehr_context"] == {"study_id": "50414267", "age": 71, "icd": ["E11.9"]}
    assert sample["metadata"]["chexpert"] == {"No Finding": 1, "Edema": None}
    labels.write_text(json.dumps({"50414267": {"Edema": 2}}))
    with pytest.raises(AdapterError, match=r"study 50414267: labels must be 1, 0, -1 or null, got \{'Edema': 2\}"):
        curriculum.read_joins(None, labels)
    ehr.write_text(json.dumps({"age": 71}) + "\n")
    with pytest.raises(AdapterError, match=re.escape(f"{ehr}:1: EHR record without study_id")):
        curriculum.read_joins(ehr, None)


def reports_table() -> pd.DataFrame:
    return pd.DataFrame([
        {"study_id": "s1", "patient_id": "p1", "image_path": "img/1.png", "impression": "Mild cardiomegaly.",
         "Cardiomegaly": "1", "Edema": "", "Pleural Effusion": "0", "age": "71", "sex": "F",
         "history": "diabetes", "heart_rate": "88.5", "icd_codes": "E11.9; I10"},
        {"study_id": "s2", "patient_id": "p1", "image_path": "img/2.png", "impression": "Possible effusion.",
         "Cardiomegaly": "", "Edema": "", "Pleural Effusion": "-1", "age": "71", "sex": "F", "history": "",
         "heart_rate": "", "icd_codes": ""}])


def test_the_builder_writes_each_image_once_per_stage_with_the_seeds_prompts_and_targets():
    records = build_records(reports_table(), ["age", "sex", "heart_rate", "history"])
    assert [(r["image"], r["stage"], r["mode"]) for r in records] == [
        ("img/1.png", "A", "image_only"), ("img/1.png", "B", "image_ehr"),
        ("img/2.png", "A", "image_only"), ("img/2.png", "B", "image_ehr")]
    a, b = records[0], records[1]
    assert a["prompt"] == "Image:<image>\nAnswer Impression & CheXpert."
    assert a["target"] == 'Impression: Mild cardiomegaly.\nCheXpert: {"Cardiomegaly": 1, "Pleural Effusion": 0}'
    assert b["prompt"] == ('Patient Data: {"age": 71, "sex": "F", "heart_rate": 88.5, "history": "diabetes"}\n'
                           "Image:<image>\nAnswer Impression, CheXpert & ICD.")
    assert b["target"].endswith('\nICD: ["E11.9", "I10"]')
    assert parse_chexpert(b["target"]) == {"Cardiomegaly": 1, "Pleural Effusion": 0}
    assert parse_icd(b["target"]) == frozenset({"E11.9", "I10"})
    assert records[3]["target"] == 'Impression: Possible effusion.\nCheXpert: {"Pleural Effusion": -1}\nICD: []'
    samples = [curriculum.from_curriculum(r, i, "train") for i, r in enumerate(records, 1)]
    assert all(validate_sample(s) == [] for s in samples)
    assert {s["metadata"]["patient_id"] for s in samples} == {"p1"}


def test_the_builder_names_the_row_of_a_bad_label_and_missing_columns():
    table = reports_table()
    table.loc[1, "Edema"] = "2"
    with pytest.raises(AdapterError, match=re.escape("<reports table>, row 1: Edema is '2'; CheXpert labels are "
                                                     "1, 0, -1 or blank")):
        build_records(table, [])
    with pytest.raises(AdapterError, match=r"missing column\(s\) \['impression'\]"):
        build_records(table.drop(columns="impression"), [])
    assert target_text("Clear.", {}) == "Impression: Clear.\nCheXpert: {}"
