"""The validator: one test per rule with its message, whole files with every error located, the CLI."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brainvlm.app.commands.validate import main as main_validate
from brainvlm.core.jsonio import write_jsonl
from brainvlm.core.paths import PROJECT_ROOT
from brainvlm.data.comparison import TaskSpec, build_samples
from brainvlm.data.schema import MODALITIES, TASK_KINDS, ValidationIssue, validate_sample
from brainvlm.data.splits import split_subjects
from brainvlm.data.validate import split_from_name, validate_file, validate_files


def valid_sample(split: str = "train") -> dict:
    return {
        "id": f"ABCD_sex_comparison_{split}_000001", "task": "comparison_categorical",
        "conversations": [
            {"role": "user", "content": [{"type": "text", "text": "Here is a male participant (reference)."},
                                         {"type": "image", "modality": "sMRI", "image_path": "sub-1/T1w.nii.gz"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Understood."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is the sex of this participant?"},
                                         {"type": "image", "modality": "sMRI", "image_path": "sub-2/T1w.nii.gz"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "The participant is female."}]}],
        "metadata": {"split": split, "target_col": "sex", "target": "female", "query_subject": "sub-2",
                     "reference_subjects": ["sub-1"], "reference_targets": ["male"], "domain": "brain"},
    }


def issues_of(sample: dict, **kwargs) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in validate_sample(sample, **kwargs)]


def one_issue(sample: dict, path: str, fragment: str, **kwargs) -> None:
    found = issues_of(sample, **kwargs)
    assert any(p == path and fragment in m for p, m in found), found


@pytest.fixture
def image_root(tmp_path) -> Path:
    root = tmp_path / "images"
    for name in ("sub-1", "sub-2"):
        (root / name).mkdir(parents=True)
        (root / name / "T1w.nii.gz").write_bytes(b"x")
    return root


def test_a_valid_sample_has_no_issues(image_root):
    assert validate_sample(valid_sample(), image_root=image_root, expected_split="train") == []


def turn(i: int):
    return lambda s: s["conversations"][i]


RULES = [  # (mutation, JSON path, message fragment)
    (lambda s: s.pop("id"), "$.id", "required field missing"),
    (lambda s: s.update(id=""), "$.id", "id must be a non-empty string"),
    (lambda s: s.pop("task"), "$.task", "required field missing"),
    (lambda s: s.update(task="segmentation"), "$.task", 'unknown task "segmentation"; expected one of'),
    (lambda s: s.pop("conversations"), "$.conversations", "required field missing"),
    (lambda s: s.update(conversations=[]), "$.conversations", "must be a non-empty list of turns"),
    (lambda s: s.pop("metadata"), "$.metadata", "required field missing"),
    (lambda s: s.update(metadata=[1]), "$.metadata", "metadata must be an object, got a list"),
    (lambda s: s["metadata"].pop("split"), "$.metadata.split", "required field missing"),
    (lambda s: s["metadata"].update(split="validation"), "$.metadata.split", 'unknown split "validation"'),
    (lambda s: s.update(image="x.png"), "$.image", "unknown field 'image'"),
    (lambda s: turn(0)(s).update(role="User"), "$.conversations[0].role", "role 'User' must be lowercase: use 'user'"),
    (lambda s: turn(0)(s).update(role="human"), "$.conversations[0].role", "role 'human' is LLaVA-classic"),
    (lambda s: turn(0)(s).update(role="doctor"), "$.conversations[0].role", 'unknown role "doctor"'),
    (lambda s: turn(0)(s).pop("role"), "$.conversations[0].role", "required field missing"),
    (lambda s: turn(2)(s).update(role="system"), "$.conversations[2].role",
     "a system turn is only allowed as the first turn"),
    (lambda s: s["conversations"].reverse(), "$.conversations[0].role",
     "the first turn (after an optional system turn) must be 'user'"),
    (lambda s: turn(1)(s).update(role="user"), "$.conversations[1].role", "turn 1 must be 'assistant'"),
    (lambda s: s["conversations"].pop(), "$.conversations[2].role",
     "the conversation must end with an assistant turn, got 'user'"),
    (lambda s: turn(1)(s).update(content="Understood."), "$.conversations[1].content", "got a plain string"),
    (lambda s: turn(1)(s).update(content=[]), "$.conversations[1].content", "non-empty list of parts"),
    (lambda s: turn(1)(s).pop("content"), "$.conversations[1].content", "required field missing"),
    (lambda s: turn(1)(s).update(name="bot"), "$.conversations[1].name", "unknown turn field 'name'"),
    (lambda s: turn(0)(s)["content"][1].update(type="image_sMRI"), "$.conversations[0].content[1].type",
     "modality-specific part type 'image_sMRI': use type 'image' with modality 'sMRI'"),
    (lambda s: turn(0)(s)["content"][1].update(type="video"), "$.conversations[0].content[1].type",
     'unknown part type "video"'),
    (lambda s: turn(0)(s)["content"][1].update(modality="T1"), "$.conversations[0].content[1].modality",
     'unknown modality "T1"'),
    (lambda s: turn(0)(s)["content"][1].pop("modality"), "$.conversations[0].content[1].modality",
     "required field missing"),
    (lambda s: turn(0)(s)["content"][1].pop("image_path"), "$.conversations[0].content[1].image_path",
     "required field missing"),
    (lambda s: turn(0)(s)["content"][1].update(image="a"), "$.conversations[0].content[1].image",
     "unknown field 'image' in a image part"),
    (lambda s: turn(0)(s)["content"][0].update(text="<image>\nA male participant."),
     "$.conversations[0].content[0].text", "literal '<image>' in text: images are parts"),
    (lambda s: turn(0)(s)["content"][0].update(text="A scan <image_sMRI>"), "$.conversations[0].content[0].text",
     "modality-specific image token '<image_sMRI>' in text"),
    (lambda s: turn(0)(s)["content"][0].update(text=""), "$.conversations[0].content[0].text",
     "text must be a non-empty string"),
    (lambda s: turn(3)(s)["content"].append(turn(2)(s)["content"][1]), "$.conversations[3].content[1]",
     "assistant turns may not contain images"),
    (lambda s: turn(0)(s)["content"][1].update(image_path="/data/sub-1.nii.gz"),
     "$.conversations[0].content[1].image_path", "absolute image path '/data/sub-1.nii.gz'"),
    (lambda s: turn(0)(s)["content"][1].update(image_path="sub-1/../../etc/x.nii.gz"),
     "$.conversations[0].content[1].image_path", "leaves the image root (..)"),
    (lambda s: turn(0)(s)["content"][1].update(image_path="sub-1\\T1w.nii.gz"),
     "$.conversations[0].content[1].image_path", "contains a backslash"),
    (lambda s: s["metadata"].update(split="val"), "$.id", "the id says split 'train' but metadata.split is 'val'"),
    (lambda s: s["metadata"].update(query_subject="sub-1"), "$.metadata.query_subject",
     "'sub-1' is also one of the reference subjects"),
    (lambda s: s["metadata"].update(reference_subjects=["sub-1", "sub-3"]), "$.metadata.reference_subjects",
     "2 reference subjects but 1 reference image turns"),
    (lambda s: s["metadata"].pop("query_subject"), "$.metadata.query_subject",
     "required field missing for task comparison_categorical"),
    (lambda s: s["metadata"].update(target=1.5), "$.metadata.target",
     "a comparison_categorical target must be a string"),
    (lambda s: s["metadata"].update(reference_targets=[]), "$.metadata.reference_targets",
     "0 reference targets for 1 reference subjects"),
]


@pytest.mark.parametrize("mutate, path, fragment", RULES, ids=[r[2][:40] for r in RULES])
def test_each_rule_reports_its_path_and_message(mutate, path, fragment):
    sample = valid_sample()
    mutate(sample)
    one_issue(sample, path, fragment)


def test_a_system_turn_first_is_fine_and_numerical_targets_must_be_numbers():
    sample = valid_sample()
    sample["conversations"].insert(0, {"role": "system", "content": [{"type": "text", "text": "Be brief."}]})
    assert issues_of(sample) == []
    sample.update(task="comparison_numerical")
    one_issue(sample, "$.metadata.target", "a comparison_numerical target must be a number, got a string")


def test_split_must_match_the_file_name():
    one_issue(valid_sample(), "$.metadata.split", "'train' but the file name says 'test'", expected_split="test")
    assert split_from_name("data/sex/val.jsonl") == "val"
    assert split_from_name("ABCD_sex_comparison_tasks_test.json") == "test"
    assert split_from_name("all.jsonl") is None


def test_images_must_exist_and_stay_inside_the_root(image_root, tmp_path):
    sample = valid_sample()
    sample["conversations"][0]["content"][1]["image_path"] = "sub-9/T1w.nii.gz"
    one_issue(sample, "$.conversations[0].content[1].image_path",
              "image not found under the image root: 'sub-9/T1w.nii.gz'", image_root=image_root)
    outside = tmp_path / "elsewhere.nii.gz"
    outside.write_bytes(b"x")
    (image_root / "link.nii.gz").symlink_to(outside)
    sample["conversations"][0]["content"][1]["image_path"] = "link.nii.gz"
    one_issue(sample, "$.conversations[0].content[1].image_path",
              "resolves outside the image root (through a symlink)", image_root=image_root)
    assert issues_of(sample) == []  # without an image root, files are not looked up


def test_every_error_of_a_file_is_reported_with_line_and_path(tmp_path):
    good, upper, token = valid_sample(), valid_sample(), valid_sample()
    upper["id"] = "ABCD_sex_comparison_train_000002"
    upper["conversations"][2]["role"] = "Assistant"
    token["id"] = "ABCD_sex_comparison_train_000003"
    token["conversations"][0]["content"][0]["text"] = "<image> reference"
    token["metadata"].pop("split")
    lines = [json.dumps(good), json.dumps(upper), "{not json", "", json.dumps(token), json.dumps(good)]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    found = [(i.line, i.sample_id, i.path, i.message.split(";")[0].split(":")[0]) for i in validate_file(path)]
    assert found == [
        (2, "ABCD_sex_comparison_train_000002", "$.conversations[2].role", "role 'Assistant' must be lowercase"),
        (3, None, "$", "invalid JSON"),
        (5, "ABCD_sex_comparison_train_000003", "$.conversations[0].content[0].text", "literal '<image>' in text"),
        (5, "ABCD_sex_comparison_train_000003", "$.metadata.split",
         "required field missing (one of ['train', 'val', 'test'])"),
        (6, "ABCD_sex_comparison_train_000001", "$.id", "duplicate id, first seen at line 1"),
    ]
    table = validate_files([path])
    assert list(table.columns) == ["file", "line", "sample_id", "path", "message"] and len(table) == 5
    assert table["line"].tolist() == [2, 3, 5, 5, 6]


def test_issue_renders_file_line_id_path_message():
    issue = ValidationIssue("val.jsonl", 4, "s1", "$.conversations[0].role", "role 'User' must be lowercase")
    assert str(issue) == "val.jsonl:4 [s1] $.conversations[0].role: role 'User' must be lowercase"
    assert str(ValidationIssue("a.json", None, None, "$", "no samples in the file")) == "a.json [?] $: no samples in the file"
    assert str(validate_sample({"id": "s2"})[0]) == "<sample> [s2] $.task: required field missing"


def test_json_array_pretty_single_and_broken_files(tmp_path):
    array = tmp_path / "ABCD_sex_comparison_tasks_val.json"
    array.write_text(json.dumps([valid_sample("val"), valid_sample("train"), valid_sample("val")], indent=1))
    found = validate_file(array)
    assert [(i.line, i.path, i.message) for i in found] == [
        (None, "$.metadata.split", "'train' but the file name says 'val'"),
        (None, "$.id", "duplicate id, first seen at item 0")]
    single = tmp_path / "sample_01.json"
    single.write_text(json.dumps(valid_sample(), indent=2))
    assert validate_file(single) == []
    empty = tmp_path / "test.jsonl"
    empty.write_text("")
    assert [i.message for i in validate_file(empty)] == ["no samples in the file"]
    assert [i.message for i in validate_file(tmp_path / "none.jsonl")] == ["file not found"]
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe{}")
    assert validate_file(binary)[0].message.startswith("not UTF-8 text")
    assert validate_files([]).empty


def test_cli_prints_every_issue_and_a_summary(tmp_path, image_root, capsys):
    good = write_jsonl([valid_sample()], tmp_path / "train.jsonl")
    assert main_validate([str(good), "--image-root", str(image_root)]) == 0
    assert capsys.readouterr().out == "1 files, 1 samples, 0 errors\n"
    bad = valid_sample("val")
    bad["conversations"][0]["role"] = "User"
    bad_path = write_jsonl([valid_sample("val"), bad], tmp_path / "val.jsonl")
    assert main_validate([str(good), str(bad_path), "--no-check-images"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"{bad_path}:2 [ABCD_sex_comparison_val_000001] $.conversations[0].role: "
                      "role 'User' must be lowercase: use 'user'")
    assert out[-1] == "2 files, 3 samples, 2 errors (image files not checked: --no-check-images)"


def test_the_spec_document_lists_every_kind_and_modality_and_its_example_validates():
    text = (PROJECT_ROOT / "docs" / "sample_format.md").read_text()
    for name in (*TASK_KINDS, *MODALITIES):
        assert f"`{name}`" in text, name
    example = json.loads(re.search(r"```json\n(.*?)```", text, re.DOTALL).group(1))
    assert issues_of(example, expected_split="train") == []


# ------------------------------------------------------------------------------ property tests
@st.composite
def built_samples(draw) -> list[dict]:
    n = draw(st.integers(12, 40))
    numerical = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    subjects = [f"sub-{i:03d}" for i in range(n)]
    cohort = pd.DataFrame({"subject": subjects, "group": [f"g{i // 2}" for i in range(n)],
                           "target": rng.normal(size=n) if numerical else rng.choice(["F", "M", "X"], n),
                           "image": [f"{s}/anat/{s}_T1w.nii.gz" for s in subjects]})
    task_type = "numerical" if numerical else "categorical"
    assignment = split_subjects(cohort, seed=draw(st.integers(0, 99)), task_type=task_type)
    spec = TaskSpec(name="t", task_type=task_type, target_col="y", num_pairs=draw(st.integers(1, 3)),
                    n_references=draw(st.integers(1, 3)), precision=draw(st.integers(0, 3)),
                    modality=draw(st.sampled_from(MODALITIES)))
    return [s for split in build_samples(cohort, assignment, spec, seed=draw(st.integers(0, 99))).values()
            for s in split]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(samples=built_samples())
def test_every_built_sample_validates(samples):
    assert all(validate_sample(s, expected_split=s["metadata"]["split"]) == [] for s in samples)


def _mutations(sample: dict, choice: int, position: int) -> dict:
    sample = copy.deepcopy(sample)
    turns = sample["conversations"]
    i = position % len(turns)
    if choice == 0:
        sample.pop(["id", "task", "conversations", "metadata"][position % 4])
    elif choice == 1:
        turns[i]["role"] = turns[i]["role"].capitalize()
    elif choice == 2:
        part = turns[i]["content"][0]
        part["text"] = part["text"][: position % (len(part["text"]) + 1)] + "<image>" + part["text"][position % (
            len(part["text"]) + 1):]
    else:
        j = (i + 1 + position % (len(turns) - 1)) % len(turns)
        turns[i], turns[j] = turns[j], turns[i]
        if turns[i]["role"] == turns[j]["role"]:
            turns.insert(0, turns.pop())  # a rotation always breaks user-first alternation
    return sample


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(samples=built_samples(), pick=st.integers(0, 10**6), choice=st.integers(0, 3), position=st.integers(0, 999))
def test_mutating_a_valid_sample_always_gives_an_issue(samples, pick, choice, position):
    mutated = _mutations(samples[pick % len(samples)], choice, position)
    assert validate_sample(mutated, expected_split=mutated.get("metadata", {}).get("split")) != []
