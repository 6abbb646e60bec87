"""Bad inputs on the data side: each class gets a clear error or a counted exclusion, with the exact message."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainvlm.core import jsonio
from brainvlm.data import cohort, comparison, dataset, splits
from brainvlm.data.cohort import CohortError, build_cohort, read_table
from brainvlm.data.comparison import TaskError, TaskSpec
from brainvlm.data.validate import validate_file
from brainvlm.data.volumes import VolumeError, load_volume
from brainvlm.model.collate import CollateConfig, to_hf_conversation

SEX = {"male": ["M"], "female": ["F"]}


def nifti(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def brain(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((6, 6, 6)).astype(np.float32)


@pytest.fixture()
def broken(tmp_path) -> Path:
    """An image root with one good volume and one of each broken kind, at the default pattern."""
    root = tmp_path / "images"
    def at(subject: str) -> Path:
        return root / subject / "anat" / f"{subject}_T1w.nii.gz"
    nifti(at("good"), brain())
    big = np.random.default_rng(1).random((24, 24, 24)).astype(np.float32)  # its header fits the first half
    whole = nifti(tmp_path / "whole.nii.gz", big).read_bytes()
    at("trunc").parent.mkdir(parents=True)
    at("trunc").write_bytes(whole[: len(whole) // 2])  # header intact, data cut short
    at("text").parent.mkdir(parents=True)
    at("text").write_bytes(b"not a NIfTI file at all")
    with_nan = brain(2)
    with_nan[1, 2, 3] = np.nan
    nifti(at("nans"), with_nan)
    nifti(at("zero"), np.zeros((6, 6, 6), np.float32))
    nifti(at("four"), np.random.default_rng(3).random((6, 6, 6, 2)).astype(np.float32))
    return root


# ------------------------------------------------------------------------------------- 1. volumes
@pytest.mark.parametrize("subject, reason, message", [
    ("trunc", "unreadable_image", ("the voxels cannot be read (EOFError: Compressed file ended before the "
                                   "end-of-stream marker was reached); the file is truncated or corrupt")),
    ("text", "unreadable_image", "nibabel cannot read it (ImageFileError: "),
    ("nans", "non_finite_voxels", "1 of 216 voxels are NaN or infinite; brainvlm does not invent values for them"),
    ("zero", "constant_image", "every voxel is 0: an empty or blank scan, which would be shown as a black image"),
    ("four", "wrong_dimensions", "shape (6, 6, 6, 2) is not a 3D volume; only fMRI may be 4D"),
])
def test_every_broken_volume_is_an_error_naming_the_file(broken, subject, reason, message):
    path = broken / subject / "anat" / f"{subject}_T1w.nii.gz"
    with pytest.raises(VolumeError) as caught:
        load_volume(path, "sMRI")
    assert caught.value.reason == reason
    assert str(caught.value).startswith(f"{path}: {message}")


def test_readable_check_reads_the_voxels_and_counts_each_reason(broken, tmp_path):
    subjects = ["good", "trunc", "text", "nans", "zero", "four"]
    table = pd.DataFrame({"participant_id": subjects, "sex": ["M", "F"] * 3})
    built, excluded = build_cohort(table, broken, "sex", "categorical", labels=SEX, check_images="readable")
    assert built["subject"].tolist() == ["good"]
    assert dict(zip(excluded["subject"], excluded["reason"])) == {
        "trunc": "unreadable_image", "text": "unreadable_image", "nans": "non_finite_voxels",
        "zero": "constant_image", "four": "wrong_dimensions"}
    assert excluded.set_index("subject").loc["nans", "detail"].startswith(
        "nans/anat/nans_T1w.nii.gz: 1 of 216 voxels are NaN or infinite")
    summary = cohort.exclusion_summary(excluded)
    assert dict(zip(summary["reason"], summary["count"])) == {
        "unreadable_image": 2, "wrong_dimensions": 1, "non_finite_voxels": 1, "constant_image": 1}
    exists, _ = build_cohort(table, broken, "sex", "categorical", labels=SEX, check_images="exists")
    assert len(exists) == 6  # "exists" costs a stat and opens nothing: the docs say so


def test_collation_names_the_sample_the_json_path_and_the_file(broken):
    sample = {"id": "s-7", "conversations": [
        {"role": "user", "content": [{"type": "text", "text": "Which sex?"},
                                     {"type": "image", "modality": "sMRI", "image_path": "trunc/anat/trunc_T1w.nii.gz"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "male"}]}]}
    with pytest.raises(ValueError) as caught:
        to_hf_conversation(sample, CollateConfig(image_root=str(broken)))
    assert str(caught.value).startswith(
        f"sample s-7: $.conversations[0].content[1].image_path: cannot load 'trunc/anat/trunc_T1w.nii.gz': "
        f"{broken.resolve() / 'trunc/anat/trunc_T1w.nii.gz'}: the voxels cannot be read (EOFError")
    sample["conversations"][0]["content"][1]["image_path"] = "text/anat/text_T1w.nii.gz"
    with pytest.raises(ValueError, match=r"^sample s-7: \$\.conversations\[0\]\.content\[1\]\.image_path: cannot "
                                         r"load 'text/anat/text_T1w\.nii\.gz': .*text_T1w\.nii\.gz: nibabel cannot"):
        to_hf_conversation(sample, CollateConfig(image_root=str(broken)))


# ------------------------------------------------------------------------------------- 2. numbers
def numeric_cohort(values: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    subjects = [f"s{i:02d}" for i in range(len(values))]
    frame = pd.DataFrame({"subject": subjects, "group": subjects, "target": values,
                          "image": [f"{s}.nii.gz" for s in subjects]})
    labels = ["a" if i % 2 else "b" for i in range(len(values))]
    assignment = splits.split_subjects(frame.assign(target=labels), seed=0)
    return frame, assignment


def test_a_target_that_overflows_at_the_tasks_precision_is_an_error():
    frame, assignment = numeric_cohort([1.0e308] + [float(i) for i in range(1, 12)])
    spec = TaskSpec(name="bmi", task_type="numerical", target_col="BMI", num_pairs=1)
    with pytest.raises(TaskError, match=re.escape(
            "task 'bmi': target(s) ['s00 (1e+308)'] are not finite at precision 2 (rounding overflows); a value "
            "this large is a code, not a measurement: set the task's valid_range to exclude it, or fix the table")):
        comparison.build_samples(frame, assignment, spec)


def test_valid_range_excludes_rows_with_their_value_and_suspects_are_listed(tmp_path):
    rows = "".join(f"s{i}\t{v}\n" for i, v in enumerate([21.0, 22.5, 99999, 20.1, -1, 23.0, 19.5, 24.0]))
    table = read_table(write(tmp_path / "t.tsv", "participant_id\tBMI\n" + rows))
    built, excluded = build_cohort(table, tmp_path, "BMI", "numerical", check_images="none")
    suspects = cohort.suspect_values(built)
    assert suspects["subject"].tolist() == ["s2"] and suspects["target"].tolist() == [99999.0]
    built, excluded = build_cohort(table, tmp_path, "BMI", "numerical", check_images="none", valid_range=(10, 80))
    assert excluded[["subject", "row", "reason", "detail"]].values.tolist() == [
        ["s2", 4, "out_of_range", "BMI is 99999, outside valid_range [10, 80]"],
        ["s4", 6, "out_of_range", "BMI is -1, outside valid_range [10, 80]"]]
    with pytest.raises(TaskError, match=r"task 'bmi': valid_range must be \[lo, hi\] with finite lo < hi"):
        TaskSpec(name="bmi", task_type="numerical", target_col="BMI", valid_range=[80, 10])


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_in_samples_are_validation_errors_with_their_line(tmp_path, token):
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "metadata": {"target": ' + token + "}}\n")
    issues = validate_file(path)
    assert [(i.line, i.message.split(";")[0]) for i in issues if i.line == 2] == [
        (2, f"{token} is not valid JSON (numbers must be finite)")]
    with pytest.raises(jsonio.JsonError, match=rf"train\.jsonl:2: {token} is not valid JSON"):
        jsonio.read_jsonl(path)


# ----------------------------------------------------------------------------- 3. image-root escapes
def test_a_symlink_out_of_the_image_root_is_refused_by_the_cohort_as_by_the_validator(tmp_path):
    outside = nifti(tmp_path / "elsewhere" / "x.nii.gz", brain())
    root = tmp_path / "images"
    (root / "s1" / "anat").mkdir(parents=True)
    (root / "s1" / "anat" / "s1_T1w.nii.gz").symlink_to(outside)
    table = pd.DataFrame({"participant_id": ["s1"], "sex": ["M"]})
    with pytest.raises(CohortError, match=re.escape(
            "<table>, line 2: image 's1/anat/s1_T1w.nii.gz' of subject 's1' is a symlink that resolves outside "
            f"the image root ({outside.resolve()}); images must lie inside image_root")):
        build_cohort(table, root, "sex", "categorical", labels=SEX)


# ------------------------------------------------------------------------------- 5. everything excluded
def test_a_missing_image_root_is_named(tmp_path):
    table = pd.DataFrame({"participant_id": ["s1"], "sex": ["M"]})
    with pytest.raises(CohortError, match=re.escape(
            f"<table>: image_root '{tmp_path / 'nowhere'}' is not a folder; set image_root to the folder that "
            "image_pattern paths are relative to")):
        build_cohort(table, tmp_path / "nowhere", "sex", "categorical", labels=SEX)


def test_when_exclusions_leave_too_few_subjects_the_error_counts_them_by_reason(tmp_path):
    rows = "".join(f"s{i}\t{'MF'[i % 2]}\n" for i in range(20)) + "s20\tn/a\n"
    table = read_table(write(tmp_path / "pheno.tsv", "participant_id\tsex\n" + rows))
    (tmp_path / "images").mkdir()
    spec = TaskSpec(name="sex", task_type="categorical", target_col="sex", labels=SEX)
    config = dataset.DataConfig(image_root=str(tmp_path / "images"), image_pattern="{subject}.nii.gz")
    with pytest.raises(CohortError) as caught:
        dataset.prepare_tasks(table, [(spec, None)], config)
    assert str(caught.value) == (
        f"{tmp_path / 'pheno.tsv'}: task(s) ['sex']: need at least 6 groups for 3 splits with query and "
        "reference pools, got 0 (from 0 subjects). task 'sex': 0 of 21 rows kept; excluded: missing_image: 20 "
        "(e.g. line 2, s0: s0.nii.gz not found under the image root); missing_target: 1 (e.g. line 22, s20: "
        "sex is 'n/a'). Check image_root and image_pattern (missing_image), the target column and labels, "
        "and check_images")


def test_an_unknown_category_names_the_subject_and_a_semicolon_table_its_delimiter(tmp_path):
    table = read_table(write(tmp_path / "t.tsv", "participant_id\tsex\ns1\tM\ns2\tX\n"))
    with pytest.raises(CohortError, match=re.escape("1 sex values outside the label mapping (line 3 (s2): 'X')")):
        build_cohort(table, tmp_path, "sex", "categorical", labels=SEX, check_images="none")
    with pytest.raises(CohortError, match=re.escape(
            "t.csv: the header is one column 'participant_id;sex' holding ';': the file is ';'-separated, not "
            "','; save it with ',' or set table_sep: ';'")):
        read_table(write(tmp_path / "t.csv", "participant_id;sex\ns1;M\n"))
    assert read_table(tmp_path / "t.csv", sep=";")["sex"].tolist() == ["M"]


# ------------------------------------------------------------------------------- 7. one reader, one policy
def valid_sample(sample_id: str = "x_vqa_train_000001", answer: str = "yes") -> dict:
    return {"id": sample_id, "task": "vqa", "metadata": {"split": "train", "answer_type": "CLOSED"},
            "conversations": [{"role": "user", "content": [{"type": "text", "text": "Is it normal?"}]},
                              {"role": "assistant", "content": [{"type": "text", "text": answer}]}]}


def test_a_byte_order_mark_and_a_json_array_read_the_same_in_the_validator_and_evaluate(tmp_path):
    from brainvlm.eval.evaluate import load_samples

    bom = tmp_path / "train.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + (json.dumps(valid_sample()) + "\n").encode())
    array = tmp_path / "array_train.json"
    array.write_text(json.dumps([valid_sample()]))
    for path in (bom, array):
        assert validate_file(path) == []
        assert [s["id"] for s in load_samples(path)] == ["x_vqa_train_000001"]


def test_whitespace_answers_duplicate_keys_and_nfc_equal_ids_are_errors_naming_their_lines(tmp_path):
    path = tmp_path / "train.jsonl"
    composed, decomposed = "x_caf\u00e9_train_000001", "x_cafe\u0301_train_000001"
    lines = [json.dumps(valid_sample(composed)), json.dumps(valid_sample("x_vqa_train_000002", " \n ")),
             '{"id": "x_vqa_train_000003", "id": "x_vqa_train_000004"}', json.dumps(valid_sample(decomposed))]
    path.write_text("\n".join(lines) + "\n")
    found = [(i.line, i.path, i.message) for i in validate_file(path)]
    whitespace = "text is only whitespace (' \\n '); write the text or drop the part"
    assert (2, "$.conversations[1].content[0].text", whitespace) in found
    duplicate = "duplicate key(s) ['id'] in one object (JSON readers keep the last silently); keep one"
    assert (3, "$", duplicate) in found
    nfc = f"duplicate id, first seen at line 1 ({composed!r} and {decomposed!r} are equal after Unicode NFC normalisation)"
    assert (4, "$.id", nfc) in found


# ------------------------------------------------------------------------------- 10. one split per cohort
def test_every_task_of_a_cohort_shares_one_split(tmp_path):
    n = 60
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"participant_id": [f"s{i:02d}" for i in range(n)], "sex": rng.choice(["M", "F"], n),
                          "bmi": [("n/a" if i % 10 == 0 else f"{v:.2f}") for i, v in enumerate(rng.normal(0, 1, n))],
                          "family": [f"f{i // 2}" for i in range(n)]})
    specs = [(TaskSpec(name="sex", task_type="categorical", target_col="sex", labels=SEX, num_pairs=1), None),
             (TaskSpec(name="bmi", task_type="numerical", target_col="bmi", num_pairs=1), None)]
    config = dataset.DataConfig(image_root=str(tmp_path), group_col="family", check_images="none")
    sex, bmi = dataset.prepare_tasks(table, specs, config)
    merged = sex.assignment.merge(bmi.assignment, on="subject", suffixes=("_sex", "_bmi"))
    assert len(merged) == len(bmi.assignment) == n - 6  # bmi misses 6 subjects: the shared split minus them
    assert (merged["split_sex"] == merged["split_bmi"]).all() and (merged["pool_sex"] == merged["pool_bmi"]).all()
    audit = splits.audit_across_tasks({"sex": sex.assignment, "bmi": bmi.assignment})
    assert audit["passed"].all()
    crossed = bmi.assignment.assign(split=bmi.assignment["split"].map({"train": "test", "val": "train",
                                                                         "test": "val"}))
    bad = splits.audit_across_tasks({"sex": sex.assignment, "bmi": crossed})
    assert not bad.loc[bad["check"] == "across tasks: no subject in two splits", "passed"].item()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_mean_image_control_names_the_sample_of_a_broken_query(broken):
    from brainvlm.data.views import ViewConfig
    from brainvlm.studies import controls

    def sample(subject: str) -> dict:
        return {"id": f"q-{subject}", "conversations": [{"role": "user", "content": [
            {"type": "text", "text": "Compare."},
            {"type": "image", "modality": "sMRI", "image_path": "good/anat/good_T1w.nii.gz"},
            {"type": "image", "modality": "sMRI", "image_path": f"{subject}/anat/{subject}_T1w.nii.gz"}]}]}
    with pytest.raises(ValueError, match=re.escape(
            "sample q-zero: $.conversations[0].content[2].image_path: cannot load 'zero/anat/zero_T1w.nii.gz' for "
            f"the mean image: {broken / 'zero/anat/zero_T1w.nii.gz'}: every voxel is 0")):
        controls.write_mean_image([sample("good"), sample("zero")], broken, ViewConfig(size=8, target_shape=None))


def test_an_exclusion_that_empties_a_pool_names_the_table_and_the_task(tmp_path):
    table = read_table(write(tmp_path / "pheno.tsv", "participant_id\tsex\tbmi\n" + "".join(
        f"s{i:02d}\t{'MF'[i % 2]}\t{'n/a' if i == 0 else f'{20 + i}.5'}\n" for i in range(12))))
    specs = [(TaskSpec(name="sex", task_type="categorical", target_col="sex", labels=SEX, num_pairs=1), None),
             (TaskSpec(name="bmi", task_type="numerical", target_col="bmi", num_pairs=1), None)]
    config = dataset.DataConfig(image_root=str(tmp_path), check_images="none")
    with pytest.raises(CohortError) as caught:
        dataset.prepare_tasks(table, specs, config)
    assert str(caught.value) == (
        f"{tmp_path / 'pheno.tsv'}: task 'bmi': split assignment leaves test/reference without subjects (11 "
        "subjects in all); every split needs a query and a reference pool: add subjects, or exclude fewer. task "
        "'bmi': 11 of 12 rows kept; excluded: missing_target: 1 (e.g. line 2, s00: bmi is 'n/a'). Check "
        "image_root and image_pattern (missing_image), the target column and labels, and check_images")


def test_previews_come_from_the_samples_in_any_layout_and_skip_excluded_images():
    """Notebook 02's previews: a flat image folder ({subject}_T1w.nii.gz) works, and an image notebook 01
    excluded (so no sample names it) is never previewed."""
    from brainvlm.data.dataset import sample_images

    def sample(*paths):
        return {"conversations": [{"role": "user", "content": [
            {"type": "image", "image_path": p, "modality": "sMRI"} for p in paths]}]}

    samples = [sample("sub-01_T1w.nii.gz", "sub-02_T1w.nii.gz"), sample("sub-02_T1w.nii.gz", "sub-04_T1w.nii.gz")]
    assert sample_images(samples, n_per_modality=2) == [("sMRI", "sub-01_T1w.nii.gz"), ("sMRI", "sub-02_T1w.nii.gz")]
    assert ("sMRI", "sub-03_T1w.nii.gz") not in sample_images(samples, n_per_modality=5)  # excluded: in no sample
    assert sample_images([], n_per_modality=3) == []
