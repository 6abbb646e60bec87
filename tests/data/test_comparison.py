"""Comparison samples: pools respected, determinism, counts, templates, files, examples and adapters."""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from brainvlm.core import jsonio
from brainvlm.data import comparison
from brainvlm.data.adapters import AdapterError, curriculum, llava
from brainvlm.data.comparison import DEFAULT_PROMPTS, TaskError, TaskSpec, build_samples
from brainvlm.data.schema import validate_sample
from brainvlm.data.splits import SPLITS, split_subjects

SEX = {"name": "sex", "task_type": "categorical", "target_col": "sex"}
BMI = {"name": "bmi", "task_type": "numerical", "target_col": "BMI_z", "target_name": "BMI z-score"}


def make_cohort(n: int, numerical: bool = False, seed: int = 0, classes=("female", "male")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    subjects = [f"sub-{i:04d}" for i in range(1, n + 1)]
    targets = rng.normal(size=n) if numerical else rng.choice(list(classes), n)
    return pd.DataFrame({"subject": subjects, "group": subjects, "target": targets,
                         "image": [f"{s}/anat/{s}_T1w.nii.gz" for s in subjects],
                         "row": np.arange(2, n + 2), "session": None})


def build(n: int = 60, numerical: bool = False, seed: int = 0, **spec) -> tuple[pd.DataFrame, dict]:
    cohort = make_cohort(n, numerical)
    assignment = split_subjects(cohort, seed=seed, task_type="numerical" if numerical else "categorical")
    entry = {**(BMI if numerical else SEX), **spec}
    return assignment, build_samples(cohort, assignment, TaskSpec.from_dict(entry), seed=seed)


def image_paths(sample: dict) -> list[str]:
    return [p["image_path"] for t in sample["conversations"] for p in t["content"] if p["type"] == "image"]


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    texts = []
    for seed, name in ((0, "a"), (0, "b"), (1, "c")):
        _, samples = build(seed=seed)
        texts.append(jsonio.write_jsonl(samples["train"], tmp_path / name / "train.jsonl").read_bytes())
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_queries_and_references_come_from_their_own_split_pools():
    assignment, samples = build(n=80, num_pairs=3, n_references=2)
    where = assignment.set_index("subject")[["split", "pool"]].apply(tuple, axis=1).to_dict()
    for split in SPLITS:
        assert samples[split]
        for sample in samples[split]:
            meta = sample["metadata"]
            assert where[meta["query_subject"]] == (split, "query")
            assert all(where[r] == (split, "reference") for r in meta["reference_subjects"])
            paths = image_paths(sample)
            assert paths[-1].startswith(meta["query_subject"] + "/")
            assert [p.split("/")[0] for p in paths[:-1]] == meta["reference_subjects"]


def test_num_pairs_samples_per_query_subject_and_ids():
    assignment, samples = build(num_pairs=4, cohort_name="ABCD")
    for split in SPLITS:
        queries = assignment[(assignment["split"] == split) & (assignment["pool"] == "query")]["subject"]
        counts = Counter(s["metadata"]["query_subject"] for s in samples[split])
        assert counts == {q: 4 for q in queries}
        assert [s["id"] for s in samples[split]] == [
            f"ABCD_sex_comparison_{split}_{n:06d}" for n in range(1, len(samples[split]) + 1)]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_references_give_2k_plus_2_turns(k):
    _, samples = build(n=90, n_references=k)
    for sample in samples["train"]:
        assert len(sample["conversations"]) == 2 * k + 2
        assert [t["role"] for t in sample["conversations"]] == ["user", "assistant"] * (k + 1)
        meta = sample["metadata"]
        assert len(meta["reference_subjects"]) == len(set(meta["reference_subjects"])) == k
        assert len(meta["reference_targets"]) == k


def test_a_query_gets_distinct_references_when_the_pool_allows():
    _, samples = build(n=200, num_pairs=3, n_references=2, same_class_fraction=0.5)
    by_query: dict[str, list[str]] = {}
    for sample in samples["train"]:
        by_query.setdefault(sample["metadata"]["query_subject"], []).extend(
            sample["metadata"]["reference_subjects"])
    assert all(len(refs) == len(set(refs)) == 6 for refs in by_query.values())


def test_categorical_conversation_reads_as_specified():
    _, samples = build()
    sample = next(s for s in samples["train"] if s["metadata"]["pair_type"] == "different_class"
                  and s["metadata"]["target"] == "female")
    texts = [p["text"] for t in sample["conversations"] for p in t["content"] if p["type"] == "text"]
    assert texts == ["Here is a T1-weighted brain scan of a male participant (reference).", "Understood.",
                     "Compare this scan with the reference. What is the sex of this participant?",
                     "Based on the comparison, the participant is female."]
    assert sample["task"] == "comparison_categorical"
    assert sample["metadata"]["reference_targets"] == ["male"] and sample["metadata"]["domain"] == "brain"
    assert sample["conversations"][0]["content"][1] == {
        "type": "image", "modality": "sMRI", "image_path": image_paths(sample)[0]}


@pytest.mark.parametrize("precision", [0, 2, 3])
def test_numerical_values_use_precision_in_text_and_metadata(precision):
    cohort = make_cohort(60, numerical=True)
    _, samples = build(numerical=True, precision=precision)
    truth = cohort.set_index("subject")["target"]
    for sample in samples["val"]:
        meta = sample["metadata"]
        assert meta["target"] == round(float(truth[meta["query_subject"]]), precision) + 0.0
        answer = sample["conversations"][-1]["content"][0]["text"]
        assert answer == ("Based on the comparison, the BMI z-score of this participant is "
                          f"{comparison.format_value(meta['target'], precision)}.")
        shown = answer.rsplit(" ", 1)[1].rstrip(".")
        assert len(shown.split(".")[1]) == precision if precision else "." not in shown
        assert "pair_type" not in meta and sample["task"] == "comparison_numerical"


def test_format_value_never_writes_negative_zero():
    assert comparison.format_value(-0.001, 2) == "0.00" and comparison.format_value(-0.006, 2) == "-0.01"
    assert comparison.format_value(0.424, 2) == "0.42" and comparison.format_value(3.0, 0) == "3"


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_same_class_share_matches_same_class_fraction(fraction):
    _, samples = build(n=200, num_pairs=3, same_class_fraction=fraction)
    types = Counter(s["metadata"]["pair_type"] for s in samples["train"])
    assert abs(types["same_class"] / len(samples["train"]) - fraction) < 0.01
    for s in samples["train"]:
        same = [r == s["metadata"]["target"] for r in s["metadata"]["reference_targets"]]
        assert s["metadata"]["pair_type"] == ("same_class" if all(same) else "different_class")


def test_a_class_without_references_falls_back_to_what_exists():
    cohort = make_cohort(40)
    assignment = split_subjects(cohort, seed=0)
    refs = assignment["pool"] == "reference"
    cohort.loc[cohort["subject"].isin(assignment.loc[refs, "subject"]), "target"] = "male"
    samples = build_samples(cohort, assignment, TaskSpec.from_dict({**SEX, "same_class_fraction": 0.5}))
    for s in samples["train"]:
        expected = "same_class" if s["metadata"]["target"] == "male" else "different_class"
        assert s["metadata"]["pair_type"] == expected


def test_three_classes_and_mixed_pairs():
    cohort = make_cohort(120, classes=("AD", "CN", "MCI"))
    assignment = split_subjects(cohort, seed=0)
    samples = build_samples(cohort, assignment, TaskSpec(**SEX, n_references=3, same_class_fraction=0.5))
    assert {s["metadata"]["pair_type"] for s in samples["train"]} == {"same_class", "different_class", "mixed"}


def test_prompts_override_defaults_key_by_key():
    spec = TaskSpec(**SEX, prompts={"reference_ack": "Noted: {label} reference."}, modality_name="T2-weighted")
    assert spec.templates == {**DEFAULT_PROMPTS["categorical"], "reference_ack": "Noted: {label} reference."}
    cohort = make_cohort(40)
    sample = build_samples(cohort, split_subjects(cohort), spec)["test"][0]
    label = sample["metadata"]["reference_targets"][0]
    assert sample["conversations"][1]["content"][0]["text"] == f"Noted: {label} reference."
    assert "T2-weighted" in sample["conversations"][0]["content"][0]["text"]


@pytest.mark.parametrize("prompts, fragment", [
    ({"query": "What is {labl}?"}, r"prompts\.query uses unknown placeholder \{labl\}"),
    ({"query": "Is it {label}?"}, r"prompts\.query uses unknown placeholder \{label\}"),
    ({"answer": "It is {value}."}, r"prompts\.answer uses unknown placeholder \{value\}"),
    ({"answer": "It is {label:>5}."}, r"prompts\.answer: write \{label\} without a format"),
    ({"reference": "a {label"}, r"prompts\.reference is not a valid template"),
    ({"greeting": "hi"}, r"unknown prompt key\(s\) \['greeting'\]"),
])
def test_bad_templates_name_the_template_key(prompts, fragment):
    with pytest.raises(TaskError, match=fragment):
        TaskSpec.from_dict({**SEX, "prompts": prompts})


def test_from_dict_names_unknown_and_missing_keys():
    with pytest.raises(TaskError, match=r"task 'sex': unknown key\(s\) \['n_pairs'\]; known keys"):
        TaskSpec.from_dict({**SEX, "n_pairs": 3})
    with pytest.raises(TaskError, match=r"missing required key\(s\) \['target_col'\]"):
        TaskSpec.from_dict({"name": "sex", "task_type": "categorical"})
    with pytest.raises(TaskError, match="task_type must be one of"):
        TaskSpec.from_dict({**SEX, "task_type": "ordinal"})
    with pytest.raises(TaskError, match="modality must be one of"):
        TaskSpec.from_dict({**SEX, "modality": "T1"})
    with pytest.raises(TaskError, match="num_pairs must be an integer >= 1, got 0"):
        TaskSpec.from_dict({**SEX, "num_pairs": 0})


def test_cohort_and_assignment_must_hold_the_same_subjects():
    cohort = make_cohort(30)
    assignment = split_subjects(cohort)
    with pytest.raises(TaskError, match=r"1 subject\(s\) in the cohort but not the split assignment: \['sub-0031'\]"):
        build_samples(pd.concat([cohort, make_cohort(31).iloc[[30]]]), assignment, TaskSpec(**SEX))


def test_examples_cover_the_variety_and_reruns_leave_only_them(tmp_path):
    _, samples = build(n=90)
    (tmp_path / "sample_99_stale.json").write_text("{}")
    paths = comparison.write_examples(samples, tmp_path, n=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths) and len(paths) == 10
    chosen = [json.loads(p.read_text()) for p in paths]
    assert {s["metadata"]["split"] for s in chosen} == set(SPLITS)
    assert {(s["metadata"]["pair_type"], s["metadata"]["target"]) for s in chosen} == {
        (p, t) for p in ("same_class", "different_class") for t in ("female", "male")}
    first = chosen[0]["metadata"]
    assert paths[0].name == f"sample_01_train_{first['query_subject']}_{first['pair_type']}_{first['target']}.json"
    assert paths[0].read_text().startswith('{\n  "conversations": [')
    again = comparison.write_examples(samples, tmp_path, n=10)
    assert [p.read_bytes() for p in again] == [json.dumps(s, indent=2, sort_keys=True).encode() + b"\n"
                                              for s in chosen]


def test_abcd_scale_is_fast():
    cohort = make_cohort(11_000)
    start = time.perf_counter()
    assignment = split_subjects(cohort, seed=1234, reference_fraction=0.5)
    samples = build_samples(cohort, assignment, TaskSpec(**SEX, num_pairs=3), seed=1234)
    seconds = time.perf_counter() - start
    assert sum(map(len, samples.values())) == 3 * (assignment["pool"] == "query").sum()
    assert seconds < 5.0, f"split + build of 11,000 subjects took {seconds:.2f} s"


# ------------------------------------------------------------------------------------- adapters
def test_llava_classic_images_become_parts_in_order():
    record = {"id": 7, "images": ["a.png", "b.png"], "answer_type": "CLOSED",
              "conversations": [{"from": "human", "value": "<image>\nLeft, then <image> right: same organ?"},
                                {"from": "gpt", "value": "yes"}]}
    sample = llava.from_llava_classic(record, "test", modality="ct")
    assert sample["id"] == "7" and sample["task"] == "vqa"
    assert sample["conversations"][0]["content"] == [
        {"type": "image", "modality": "ct", "image_path": "a.png"},
        {"type": "text", "text": "Left, then"},
        {"type": "image", "modality": "ct", "image_path": "b.png"},
        {"type": "text", "text": "right: same organ?"}]
    assert sample["conversations"][1] == {"role": "assistant", "content": [{"type": "text", "text": "yes"}]}
    assert sample["metadata"] == {"split": "test", "answer_type": "CLOSED"}
    assert validate_sample(sample, expected_split="test") == []


def test_llava_classic_without_token_puts_the_image_first_and_checks_counts():
    record = {"id": "q1", "image": "x.jpg", "conversations": [{"from": "human", "value": "Which plane?"},
                                                               {"from": "gpt", "value": "axial"}]}
    assert llava.from_llava_classic(record, "train")["conversations"][0]["content"][0]["image_path"] == "x.jpg"
    bad = {**record, "conversations": [{"from": "human", "value": "<image><image>?"}, {"from": "gpt", "value": "a"}]}
    with pytest.raises(AdapterError, match="LLaVA record 'q1': 2 <image> tokens for 1 images"):
        llava.from_llava_classic(bad, "train")
    with pytest.raises(AdapterError, match=r"conversations\[1\]\.from is 'bot'"):
        llava.from_llava_classic({**record, "conversations": [record["conversations"][0], {"from": "bot"}]}, "val")
