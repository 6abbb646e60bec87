"""Cohort building on a real phenotype table (AOMIC-PIOP2), on broken inputs, and the synthetic default."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainvlm.data import cohort, synthetic_brain
from brainvlm.data.cohort import CohortError, build_cohort, exclusion_summary, read_table

SEX = {"male": ["M"], "female": ["F"]}


@pytest.fixture(scope="module")
def aomic(test_data) -> Path:
    return test_data / "aomic_piop2" / "participants.tsv"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def image_tree(root: Path, subjects: list[str]) -> Path:
    """Tiny real NIfTI files at the default pattern."""
    for subject in subjects:
        path = root / subject / "anat" / f"{subject}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.arange(64, dtype=np.int16).reshape(4, 4, 4), np.eye(4)), path)
    return root


# --------------------------------------------------------------------------------- the real AOMIC table
def test_read_aomic_keeps_every_value_as_text(aomic):
    table = read_table(aomic)
    assert len(table) == 226
    assert table["row"].tolist() == list(range(2, 228))
    assert table.loc[table["participant_id"] == "sub-0105", "BMI"].item() == "n/a"  # not coerced to NaN
    assert table.loc[0, "age"] == "25.5"
    assert table.attrs["id_col"] == "participant_id"


def test_aomic_sex_keeps_all_valid_rows(aomic):
    built, excluded = build_cohort(read_table(aomic), "unused", "sex", "categorical", labels=SEX,
                                   check_images="none")
    assert list(built.columns) == list(cohort.COHORT_COLUMNS)
    assert built["target"].value_counts().to_dict() == {"female": 129, "male": 96}
    assert excluded[["subject", "row", "reason"]].values.tolist() == [["sub-0105", 106, "missing_target"]]
    first = built.iloc[0]
    assert (first["subject"], first["group"], first["row"], first["session"]) == ("sub-0001", "sub-0001", 2, None)
    assert first["image"] == "sub-0001/anat/sub-0001_T1w.nii.gz"
    assert built["subject"].is_monotonic_increasing


def test_aomic_bmi_missing_rows_are_exclusions_with_their_lines(aomic):
    built, excluded = build_cohort(read_table(aomic), "unused", "BMI", "numerical", check_images="none")
    assert excluded["row"].tolist() == [106, 200]
    assert excluded["subject"].tolist() == ["sub-0105", "sub-0199"]
    assert set(excluded["reason"]) == {"missing_target"}
    assert "'n/a'" in excluded.loc[0, "detail"]
    assert built["target"].dtype == float and built.loc[0, "target"] == 21.0
    assert sorted([*built["row"], *excluded["row"]]) == list(range(2, 228))
    summary = exclusion_summary(excluded)
    assert summary.to_dict("records") == [{"reason": "missing_target", "count": 2, "rows": "106, 200"}]


# ----------------------------------------------------------------------------------- structural errors
def test_missing_file(tmp_path):
    with pytest.raises(CohortError, match="phenotype table not found"):
        read_table(tmp_path / "nope.tsv")


def test_no_id_column_lists_the_columns(tmp_path):
    path = write(tmp_path / "t.tsv", "subject_id\tsex\ns1\tM\n")
    with pytest.raises(CohortError, match=r"id column 'participant_id' not found; columns present: subject_id, sex"):
        read_table(path)


def test_empty_table(tmp_path):
    with pytest.raises(CohortError, match="empty table"):
        read_table(write(tmp_path / "t.tsv", "participant_id\tsex\n\n"))
    with pytest.raises(CohortError, match="empty file"):
        read_table(write(tmp_path / "e.csv", ""))


def test_duplicate_ids_name_ids_and_lines(tmp_path):
    path = write(tmp_path / "t.tsv", "participant_id\tsex\ns1\tM\ns2\tF\n s1 \tM\n")
    with pytest.raises(CohortError, match=r"duplicate participant_id values \(1 ids\): s1 \(lines 2, 4\)"):
        read_table(path)


LONG = ("participant_id,eventname,sex\n"
        "s1,baseline,M\n" "s2,baseline,F\n" "s1,year2,M\n" "s2,year2,F\n" "s3,year2,X\n")


def test_long_format_table_with_a_session_chosen(tmp_path):
    path = write(tmp_path / "long.csv", LONG)
    table = read_table(path, session_col="eventname", session="year2")
    assert table["row"].tolist() == [4, 5, 6]
    built, _ = build_cohort(table, tmp_path, "sex", "categorical", check_images="none")
    assert built["session"].tolist() == ["year2"] * 3
    built, _ = build_cohort(table, tmp_path, "sex", "categorical", check_images="none",
                            image_pattern="{subject}/ses-{session}/anat/{subject}_T1w.nii.gz")
    assert built.loc[0, "image"] == "s1/ses-year2/anat/s1_T1w.nii.gz"
    with pytest.raises(CohortError, match=r"s1 \(lines 2, 4\).*pick one session with session="):
        read_table(path, session_col="eventname")


def test_session_not_found_lists_sessions(tmp_path):
    path = write(tmp_path / "long.csv", LONG)
    with pytest.raises(CohortError, match=r"session 'year9' not found in column 'eventname'; sessions present: "
                                          r"baseline, year2"):
        read_table(path, session_col="eventname", session="year9")
    with pytest.raises(CohortError, match=r"session column 'visit' not found"):
        read_table(path, session_col="visit", session="year2")
    with pytest.raises(CohortError, match="without session_col"):
        read_table(path, session="year2")


def test_category_outside_mapping_is_an_error(tmp_path):
    path = write(tmp_path / "t.tsv", "participant_id\tsex\ns1\tm\ns2\tX\ns3\tn/a\n")
    with pytest.raises(CohortError, match=r"t.tsv: 1 sex values outside the label mapping \(line 3 \(s2\): 'X'\); "
                                          r"accepted values: male: 'M'; female: 'F'"):
        build_cohort(read_table(path), tmp_path, "sex", "categorical", labels=SEX, check_images="none")


def test_labels_none_takes_raw_values(tmp_path):
    path = write(tmp_path / "t.tsv", "participant_id\tsex\ns1\tM\ns2\t F\ns3\tNULL\n")
    built, excluded = build_cohort(read_table(path), tmp_path, "sex", "categorical", check_images="none")
    assert built["target"].tolist() == ["M", "F"]
    assert excluded["reason"].tolist() == ["missing_target"]


def test_one_raw_value_for_two_labels_is_an_error(tmp_path):
    path = write(tmp_path / "t.tsv", "participant_id\tsex\ns1\tM\n")
    with pytest.raises(CohortError, match="raw value 'm' is listed for labels 'male' and 'female'"):
        build_cohort(read_table(path), tmp_path, "sex", "categorical", labels={"male": ["M"], "female": ["m"]},
                     check_images="none")


def test_non_numeric_targets_are_row_exclusions(tmp_path):
    path = write(tmp_path / "t.csv", 'participant_id,bmi\ns1,abc\ns2,"12,5"\ns3,inf\ns4,1_000\ns5,NaN\ns6, 2.5e1 \n')
    built, excluded = build_cohort(read_table(path), tmp_path, "bmi", "numerical", check_images="none")
    assert built["target"].tolist() == [25.0]
    assert excluded["reason"].tolist() == ["non_numeric_target"] * 4 + ["missing_target"]
    assert excluded["row"].tolist() == [2, 3, 4, 5, 6]
    assert "'12,5'" in excluded.loc[1, "detail"]


def test_target_and_group_columns_must_exist(tmp_path):
    table = read_table(write(tmp_path / "t.tsv", "participant_id\tsex\ns1\tM\n"))
    with pytest.raises(CohortError, match=r"target column 'BMI' not found; columns present: participant_id, sex"):
        build_cohort(table, tmp_path, "BMI", "numerical", check_images="none")
    with pytest.raises(CohortError, match=r"t.tsv: group column 'family' not found"):
        build_cohort(table, tmp_path, "sex", "categorical", group_col="family", check_images="none")


def test_missing_group_value_is_an_exclusion(tmp_path):
    path = write(tmp_path / "t.tsv", "participant_id\tsex\tfamily\ns1\tM\tf1\ns2\tF\t\ns3\tF\tf1\n")
    built, excluded = build_cohort(read_table(path), tmp_path, "sex", "categorical", group_col="family",
                                   check_images="none")
    assert built["group"].tolist() == ["f1", "f1"]
    assert excluded[["subject", "row", "reason"]].values.tolist() == [["s2", 3, "missing_group"]]


def test_missing_and_unreadable_images(tmp_path):
    root = image_tree(tmp_path / "images", ["s1"])
    garbage = root / "s3" / "anat" / "s3_T1w.nii.gz"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"this is not a NIfTI file" * 20)
    table = read_table(write(tmp_path / "t.tsv", "participant_id\tsex\ns1\tM\ns2\tF\ns3\tF\n"))
    built, excluded = build_cohort(table, root, "sex", "categorical", labels=SEX)
    assert built["subject"].tolist() == ["s1", "s3"]  # "exists" does not open the file
    assert excluded.to_dict("records") == [{"subject": "s2", "row": 3, "reason": "missing_image",
                                            "detail": "s2/anat/s2_T1w.nii.gz not found under the image root"}]
    built, excluded = build_cohort(table, root, "sex", "categorical", labels=SEX, check_images="readable")
    assert built["subject"].tolist() == ["s1"]
    assert excluded["reason"].tolist() == ["missing_image", "unreadable_image"]
    assert excluded.loc[1, "detail"].startswith("s3/anat/s3_T1w.nii.gz: nibabel cannot read it")


def test_strict_turns_exclusions_into_an_error(tmp_path):
    root = image_tree(tmp_path / "images", ["s1"])
    table = read_table(write(tmp_path / "t.tsv", "participant_id\tsex\ns1\tM\ns2\tF\ns3\t\n"))
    with pytest.raises(CohortError, match=r"strict mode and 2 rows excluded \(missing_target: 1, missing_image: 1\); "
                                          r"first: line 3 s2 missing_image"):
        build_cohort(table, root, "sex", "categorical", labels=SEX, strict=True)


@pytest.mark.parametrize("subject, pattern", [
    ("s1", "../{subject}.nii.gz"), ("../../etc", "{subject}/x.nii.gz"), ("s1", "/{subject}.nii.gz"),
    ("s1", "{subject}/../../x.nii.gz"), ("s1", "C:\\{subject}.nii.gz")])
def test_image_path_may_not_leave_the_root(tmp_path, subject, pattern):
    table = read_table(write(tmp_path / "t.tsv", f"participant_id\tsex\n{subject}\tM\n"))
    with pytest.raises(CohortError, match=r"t.tsv, line 2: image path .* leaves the image root"):
        build_cohort(table, tmp_path, "sex", "categorical", image_pattern=pattern, check_images="none")


def test_pattern_fields_and_unknown_fields(tmp_path):
    table = read_table(write(tmp_path / "t.tsv", "participant_id\tsex\tscan\ns1\tM\ta/b\\c.nii\n"))
    built, _ = build_cohort(table, tmp_path, "sex", "categorical", image_pattern="{scan}", check_images="none")
    assert built.loc[0, "image"] == "a/b/c.nii"
    with pytest.raises(CohortError, match=r"uses \['scna'\], which are neither"):
        build_cohort(table, tmp_path, "sex", "categorical", image_pattern="{scna}", check_images="none")


def test_ragged_row_and_sniffed_delimiter(tmp_path):
    with pytest.raises(CohortError, match=r"t.tsv, line 3: 1 fields but the header has 2"):
        read_table(write(tmp_path / "t.tsv", "participant_id\tsex\ns1\tM\ns2,F\n"))
    table = read_table(write(tmp_path / "t.txt", "participant_id;sex\ns1;M\ns2;F\n"))
    assert table["sex"].tolist() == ["M", "F"]


def test_line_numbers_survive_bom_blank_lines_and_multiline_fields(tmp_path):
    text = '\ufeffparticipant_id,note,sex\n\ns1,"two\nlines",M\n\ns2,plain,F\n'
    table = read_table(write(tmp_path / "t.csv", text))
    assert table["participant_id"].tolist() == ["s1", "s2"]
    assert table["row"].tolist() == [3, 6]


def test_hand_built_table_gets_line_numbers(tmp_path):
    table = pd.DataFrame({"participant_id": ["b", "a"], "age": [3.5, float("nan")]})
    built, excluded = build_cohort(table, tmp_path, "age", "numerical", check_images="none")
    assert built[["subject", "target", "row"]].values.tolist() == [["b", 3.5, 2]]
    assert excluded[["subject", "row"]].values.tolist() == [["a", 3]]


# ------------------------------------------------------------------------------------------- properties
VALUES = st.one_of(st.sampled_from(["", "n/a", "NA", "nan", "None", " null ", "abc", "12,5", "inf", "-0", "1e3"]),
                   st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
                   st.text(alphabet="0123456789.-+eE ,x", max_size=6))


@settings(max_examples=60, deadline=None)
@given(values=st.lists(VALUES, min_size=1, max_size=12), blanks=st.lists(st.booleans(), min_size=12, max_size=12))
def test_every_row_is_kept_or_excluded_with_its_line(values, blanks):
    lines = ["participant_id\tvalue"]
    expected = {}
    for i, value in enumerate(values):
        if blanks[i]:
            lines.append("")
        lines.append(f"s{i:02d}\t{value}")
        expected[f"s{i:02d}"] = len(lines)
    with tempfile.TemporaryDirectory() as folder:
        table = read_table(write(Path(folder) / "t.tsv", "\n".join(lines) + "\n"))
    built, excluded = build_cohort(table, folder, "value", "numerical", check_images="none")
    assert len(built) + len(excluded) == len(values)
    assert dict(zip(built["subject"], built["row"])) | dict(zip(excluded["subject"], excluded["row"])) == expected
    assert set(excluded["reason"]) <= {"missing_target", "non_numeric_target"}
    assert np.isfinite(built["target"].to_numpy(dtype=float)).all()


@settings(max_examples=80, deadline=None)
@given(subject=st.text(alphabet="ab./\\:-", min_size=1, max_size=8).filter(lambda s: s.strip() not in ("", "n/a")))
def test_image_paths_stay_inside_the_root(subject):
    table = pd.DataFrame({"participant_id": [subject], "v": ["1"]})
    try:
        built, _ = build_cohort(table, ".", "v", "numerical", image_pattern="{subject}/x.nii", check_images="none")
    except CohortError as err:
        assert "leaves the image root" in str(err)
        return
    image = built.loc[0, "image"]
    assert not image.startswith(("/", "../")) and image != ".." and "\\" not in image


# -------------------------------------------------------------------------------------- synthetic cohort
SMALL = {"n_subjects": 8, "shape": (24, 24, 24), "progress": False}


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_build(tmp_path_factory) -> Path:
    return synthetic_brain.make_synthetic_cohort(tmp_path_factory.mktemp("synthetic") / "cohort", seed=3, **SMALL)


def test_synthetic_tree(small_build):
    root = small_build.parent
    table = pd.read_csv(small_build, sep="\t", dtype=str)
    assert list(table.columns) == ["participant_id", "sex", "age", "BMI_z", "family_id"]
    assert table["sex"].value_counts().to_dict() == {"F": 4, "M": 4}
    assert all(len(v.split(".")[1]) == 3 for v in table["BMI_z"])
    anat = sorted(root.glob("sub-*/anat/sub-*_T1w.nii.gz"))
    dwi = sorted(root.glob("sub-*/dwi/sub-*_FA.nii.gz"))
    func = sorted(root.glob("sub-*/func/sub-*_task-rest_bold.nii.gz"))
    assert (len(anat), len(dwi), len(func)) == (8, 2, 2)
    assert nib.load(anat[0]).shape == (24, 24, 24) and nib.load(anat[0]).get_data_dtype() == np.int16
    fa = nib.load(dwi[0]).get_fdata()
    assert fa.shape == (24, 24, 24) and 0.0 <= fa.min() and fa.max() <= 1.0 and fa.max() > 0.5
    bold = nib.load(func[0])
    assert bold.shape == (24, 24, 24, 6) and bold.header.get_zooms()[3] == synthetic_brain.BOLD_TR
    assert np.all(np.diag(nib.load(anat[0]).affine)[:3] > 0)  # RAS
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Parameters"]["n_subjects"] == 8


def test_synthetic_cohort_passes_through_build_cohort(small_build):
    table = read_table(small_build)
    built, excluded = build_cohort(table, small_build.parent, "BMI_z", "numerical", group_col="family_id",
                                   check_images="readable", strict=True)
    assert len(built) == 8 and excluded.empty


def test_synthetic_is_byte_identical_for_a_seed(small_build, tmp_path):
    again = synthetic_brain.make_synthetic_cohort(tmp_path / "again", seed=3, **SMALL)
    other = synthetic_brain.make_synthetic_cohort(tmp_path / "other", seed=4, **SMALL)
    assert digest(again.parent) == digest(small_build.parent)
    assert digest(other.parent).keys() - {"participants.tsv"} and digest(other.parent) != digest(again.parent)
    anat = "sub-0001/anat/sub-0001_T1w.nii.gz"
    assert digest(other.parent)[anat] != digest(again.parent)[anat]


def test_a_build_on_two_processes_writes_the_same_files_as_on_one(small_build, tmp_path):
    assert synthetic_brain.build_workers(8, (24, 24, 24)) == 1  # small builds stay in this process
    two = synthetic_brain.make_synthetic_cohort(tmp_path / "two", seed=3, workers=2, **SMALL)
    assert digest(two.parent) == digest(small_build.parent)


def test_rebuild_replaces_an_earlier_build(tmp_path):
    synthetic_brain.make_synthetic_cohort(tmp_path, seed=0, **{**SMALL, "n_subjects": 4})
    (tmp_path / "notes.txt").write_text("mine")
    synthetic_brain.make_synthetic_cohort(tmp_path, seed=0, **{**SMALL, "n_subjects": 2})
    assert sorted(p.name for p in tmp_path.glob("sub-*")) == ["sub-0001", "sub-0002"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_planted_sex_effect_is_in_the_volumes(small_build):
    table = pd.read_csv(small_build, sep="\t")
    region = synthetic_brain.effect_masks((24, 24, 24))["sex"] > 0.5
    ratio = {}
    for row in table.itertuples():
        volume = nib.load(small_build.parent / row.participant_id / "anat" / f"{row.participant_id}_T1w.nii.gz")
        data = np.asarray(volume.dataobj, dtype=float)
        ratio[row.participant_id] = data[region].mean() / data[data > 0].mean()
    males = [ratio[s] for s in table.loc[table["sex"] == "M", "participant_id"]]
    females = [ratio[s] for s in table.loc[table["sex"] == "F", "participant_id"]]
    assert min(males) > max(females)
    assert np.mean(males) / np.mean(females) > 1 + synthetic_brain.SEX_EFFECT  # planted: (1.08 / 0.92) before noise


def test_synthetic_phenotypes_siblings_and_balance():
    table = synthetic_brain.synthetic_phenotypes(200, seed=0)
    sizes = table["family_id"].value_counts()
    assert int((sizes == 2).sum()) * 2 == 20 and sizes.max() == 2  # 10 % of subjects have a sibling
    assert table["sex"].value_counts().to_dict() == {"F": 100, "M": 100}
    assert abs(table["BMI_z"].mean()) < 0.2 and 0.8 < table["BMI_z"].std() < 1.2
    assert table.equals(synthetic_brain.synthetic_phenotypes(200, seed=0))
    with pytest.raises(ValueError, match="at least 2 subjects"):
        synthetic_brain.synthetic_phenotypes(1)
