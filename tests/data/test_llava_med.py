"""The LLaVA-Med VQA JSONL adapter: valid records, both domain forms, and every malformed record named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.llava_med import read_llava_med, sample_to_record, split_from_name
from brainvlm.data.schema import validate_sample

SEED_RECORD = {"question_id": 101, "image": "test_img_00101.jpg", "pair_id": "test_img_00101",
               "text": "is there evidence of air in the peritoneal cavity?\n<image>",
               "gpt4_answer": "no", "domain": {"abd": True, "chest": False, "head": False}}


def _write(path: Path, *records: dict | str) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _error(tmp_path: Path, *records: dict | str, name: str = "test.jsonl", **kwargs) -> str:
    path = _write(tmp_path / name, *records)
    with pytest.raises(AdapterError) as info:
        read_llava_med(path, **kwargs)
    return str(info.value).replace(str(path), "FILE")


def test_a_seed_record_becomes_a_valid_vqa_sample(tmp_path):
    (sample,) = read_llava_med(_write(tmp_path / "test.jsonl", SEED_RECORD))
    assert validate_sample(sample) == []
    assert sample["id"] == "llava_med_test_000101" and sample["task"] == "vqa"
    assert sample["conversations"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "is there evidence of air in the peritoneal cavity?"},
            {"type": "image", "modality": "other", "image_path": "test_img_00101.jpg"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "no"}]}]
    assert sample["metadata"] == {"split": "test", "domain": "abdomen", "answer_type": "CLOSED",
                                  "question_id": 101, "image": "test_img_00101.jpg",
                                  "dataset": "llava_med", "pair_id": "test_img_00101"}


@pytest.mark.parametrize("domain, expected", [
    ("abd", "abdomen"), ("ABD", "abdomen"), ("abdomen", "abdomen"), (" Chest ", "chest"), ("head", "head"),
    ({"abd": False, "chest": True, "head": False}, "chest"), ({"abdomen": True}, "abdomen"),
    ({"abd": False, "chest": False, "head": True}, "head"),
])
def test_domain_as_string_or_object_of_booleans(tmp_path, domain, expected):
    (sample,) = read_llava_med(_write(tmp_path / "train.jsonl", {**SEED_RECORD, "domain": domain}))
    assert sample["metadata"]["domain"] == expected and sample["metadata"]["split"] == "train"


def test_answer_kinds_token_places_and_string_ids(tmp_path):
    base = {k: v for k, v in SEED_RECORD.items() if k != "gpt4_answer"}
    records = [
        {**base, "question_id": "q-1", "text": "<image>\nWhat organ is shown?",
         "gpt4_answer": " the\tliver "},
        {**base, "question_id": 2, "text": "Is this a CT?", "answer": "Yes."},
        {**base, "question_id": 3, "answer": "no", "gpt4_answer": "no"},
        {**base, "question_id": 4, "answer": "CT", "answer_type": "closed "},
    ]
    a, b, c, d = read_llava_med(_write(tmp_path / "val_chest.jsonl", *records))
    assert a["id"] == "llava_med_val_q-1" and a["metadata"]["question_id"] == "q-1"
    assert [p["type"] for p in a["conversations"][0]["content"]] == ["image", "text"]
    assert a["conversations"][1]["content"][0]["text"] == "the liver"
    assert a["metadata"]["answer_type"] == "OPEN"
    assert [p["type"] for p in b["conversations"][0]["content"]] == ["image", "text"]  # no token: image first
    assert b["metadata"]["answer_type"] == "CLOSED" and c["metadata"]["answer_type"] == "CLOSED"
    assert d["metadata"]["answer_type"] == "CLOSED"
    assert all(validate_sample(s) == [] for s in (a, b, c, d))


@pytest.mark.parametrize("record, message", [
    ({k: v for k, v in SEED_RECORD.items() if k != "image"},
     ("FILE:1: lacks ['image']; a LLaVA-Med VQA record needs question_id, image, text, domain and "
      "gpt4_answer or answer")),
    ({k: v for k, v in SEED_RECORD.items() if k != "gpt4_answer"},
     ("FILE:1: lacks ['gpt4_answer or answer']; a LLaVA-Med VQA record needs question_id, image, text, "
      "domain and gpt4_answer or answer")),
    ({**SEED_RECORD, "domain": {"abd": True, "chest": True, "head": False}},
     ("FILE:1 (question_id 101): domain {'abd': True, 'chest': True, 'head': False} has 2 true entries "
      "['abd', 'chest']; mark exactly one domain true")),
    ({**SEED_RECORD, "domain": {"abd": False, "chest": False, "head": False}},
     ("FILE:1 (question_id 101): domain {'abd': False, 'chest': False, 'head': False} has 0 true entries []; "
      "mark exactly one domain true")),
    ({**SEED_RECORD, "domain": {"abd": 1, "chest": 0, "head": 0}},
     "FILE:1 (question_id 101): domain['abd'] is 1; use true or false"),
    ({**SEED_RECORD, "domain": {"pelvis": True}},
     ("FILE:1 (question_id 101): domain key 'pelvis' is not one of ['abd', 'abdomen', 'chest', 'head']; "
      "rename it or pass domain_names= mapping it to a domain")),
    ({**SEED_RECORD, "domain": "knee"},
     ("FILE:1 (question_id 101): domain 'knee' is not one of ['abd', 'abdomen', 'chest', 'head']; "
      "rename it or pass domain_names= mapping it to a domain")),
    ({**SEED_RECORD, "domain": ["abd"]},
     ("FILE:1 (question_id 101): domain is list; give a string (\"chest\") or an object of booleans "
      "({\"abd\": true, \"chest\": false, \"head\": false})")),
    ({**SEED_RECORD, "gpt4_answer": "  "},
     ("FILE:1 (question_id 101): gpt4_answer is empty; give the reference answer (records without one "
      "cannot be trained on or scored)")),
    ({**SEED_RECORD, "answer": "yes"},
     "FILE:1 (question_id 101): gpt4_answer 'no' and answer 'yes' differ; keep the reference in one of them"),
    ({**SEED_RECORD, "answer_type": "free"},
     ("FILE:1 (question_id 101): answer_type is 'free'; use CLOSED or OPEN, or leave it out (a yes/no "
      "answer is then CLOSED)")),
    ({**SEED_RECORD, "text": "<image> compare <image>"},
     "FILE:1 (question_id 101): text has 2 <image> tokens for one image; keep one"),
    ({**SEED_RECORD, "text": " <image>\n"},
     "FILE:1 (question_id 101): text ' <image>\\n' holds no question; put the question in text"),
    ({**SEED_RECORD, "question_id": True},
     "FILE:1: question_id is True; use an integer or a non-empty string"),
    ({**SEED_RECORD, "image": ""},
     "FILE:1 (question_id 101): image is ''; give the image path relative to the image root"),
])
def test_malformed_records_name_file_line_id_and_what_to_do(tmp_path, record, message):
    assert _error(tmp_path, record) == message


def test_bad_json_repeated_ids_empty_files_and_unknown_splits(tmp_path):
    assert _error(tmp_path, SEED_RECORD, '{"question_id": 2,') == (
        "FILE:2: invalid JSON: Expecting property name enclosed in double quotes (column 19); "
        "check it with `python -m brainvlm validate`")
    assert _error(tmp_path, SEED_RECORD, "[1, 2]") == "FILE:2: expected a JSON object, got list"
    assert _error(tmp_path, SEED_RECORD, {**SEED_RECORD, "text": "again?"}) == (
        "FILE: question_id 101 appears on lines 1 and 2; question ids must be unique within a file")
    assert _error(tmp_path, "", "  ") == "FILE: no records; expected one LLaVA-Med VQA object per line"
    assert _error(tmp_path, SEED_RECORD, name="eval_qa50.jsonl") == (
        "FILE: the file name names no split (train, val or test); pass split=")
    assert _error(tmp_path, SEED_RECORD, name="train_test.jsonl") == (
        "FILE: the file name names no split (train, val or test); pass split=")
    assert _error(tmp_path, SEED_RECORD, split="dev") == "FILE: split='dev'; use train, val or test"


def test_images_are_checked_under_the_image_root(tmp_path):
    (tmp_path / "test_img_00101.jpg").write_bytes(b"jpg")
    path = _write(tmp_path / "test.jsonl", SEED_RECORD)
    assert len(read_llava_med(path, image_root=tmp_path)) == 1
    message = _error(tmp_path, {**SEED_RECORD, "image": "missing.jpg"}, image_root=tmp_path)
    assert message == (f"FILE:1 (question_id 101): image 'missing.jpg' is not under the image root "
                       f"{tmp_path}; check the root or the record's image")
    message = _error(tmp_path, {**SEED_RECORD, "image": "../x.jpg"}, image_root=tmp_path)
    assert message == (f"FILE:1 (question_id 101): image '../x.jpg' lies outside the image root {tmp_path}; "
                       "give a path relative to the root")


def test_custom_domain_names_and_split_words():
    assert split_from_name("data/train_abd.jsonl") == "train"
    assert split_from_name("testset.jsonl") == "test" and split_from_name("x_valid.jsonl") == "val"
    assert split_from_name("llava_med_eval_qa50_qa.jsonl") is None


def test_llava_med_domain_keys_map_through_domain_names(tmp_path):
    record = {**SEED_RECORD, "domain": {"chest_xray": True, "mri": False, "ct_scan": False}}
    names = {"chest_xray": "chest", "mri": "head", "ct_scan": "abdomen"}
    (sample,) = read_llava_med(_write(tmp_path / "test.jsonl", record), domain_names=names, dataset="qa50")
    assert sample["metadata"]["domain"] == "chest" and sample["id"] == "qa50_test_000101"


def test_samples_write_back_as_records_that_read_the_same(tmp_path):
    records = [SEED_RECORD, {**SEED_RECORD, "question_id": 7, "domain": "head", "answer_type": "OPEN",
                             "gpt4_answer": "left frontal lobe"}]
    samples = read_llava_med(_write(tmp_path / "test.jsonl", *records))
    written = [sample_to_record(s) for s in samples]
    assert written[1]["domain"] == {"abd": False, "chest": False, "head": True}
    again = read_llava_med(_write(tmp_path / "again_test.jsonl", *written))
    assert [s["conversations"] for s in again] == [s["conversations"] for s in samples]
    assert [s["metadata"]["domain"] for s in again] == ["abdomen", "head"]
