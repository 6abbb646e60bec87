"""Splits: subject- and group-disjoint, stratified, reproducible; pools disjoint; the audit catches leaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainvlm.data.splits import (
    POOLS,
    SPLITS,
    SplitError,
    assert_disjoint,
    audit_splits,
    split_counts,
    split_subjects,
)

DATA = Path(__file__).parent / "aomic_piop2"


def make_cohort(sizes: list[int], classes: list[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """A cohort with one group per entry of ``sizes`` (its subject count); categorical unless classes is None."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, size in enumerate(sizes):
        for k in range(size):
            subject = f"sub-{g:03d}{k}"
            target = str(rng.choice(classes)) if classes else float(rng.normal())
            rows.append({"subject": subject, "group": f"fam-{g:03d}", "target": target,
                         "image": f"{subject}.nii.gz", "row": len(rows) + 2, "session": None})
    return pd.DataFrame(rows)


def test_columns_sorted_and_every_subject_once():
    cohort = make_cohort([1] * 40, ["male", "female"])
    result = split_subjects(cohort.iloc[::-1], seed=1)
    assert list(result.columns) == ["subject", "group", "split", "pool"]
    assert result["subject"].tolist() == sorted(cohort["subject"])
    assert set(result["split"]) == set(SPLITS) and set(result["pool"]) == set(POOLS)


def test_fractions_and_reference_fraction_are_met():
    cohort = make_cohort([1] * 400, ["male", "female"])
    result = split_subjects(cohort, fractions=(0.6, 0.2, 0.2), reference_fraction=0.3, seed=5)
    sizes = result["split"].value_counts()
    assert abs(sizes["train"] - 240) <= 2 and abs(sizes["val"] - 80) <= 2 and abs(sizes["test"] - 80) <= 2
    for split in SPLITS:
        part = result[result["split"] == split]
        assert abs((part["pool"] == "reference").sum() - 0.3 * len(part)) <= 2


def test_categorical_stratification_keeps_class_shares():
    cohort = make_cohort([1] * 300, ["a"] * 3 + ["b"])  # about 75 % a
    merged = split_subjects(cohort, seed=2).merge(cohort[["subject", "target"]], on="subject")
    overall = (cohort["target"] == "a").mean()
    for split in SPLITS:
        for pool in POOLS:
            part = merged[(merged["split"] == split) & (merged["pool"] == pool)]
            assert abs((part["target"] == "a").mean() - overall) <= 1.5 / len(part) + 0.01, (split, pool)


def test_numerical_stratification_spreads_quantile_bins():
    cohort = make_cohort([1] * 400)
    merged = split_subjects(cohort, task_type="numerical", n_bins=4, seed=3).merge(cohort, on="subject")
    bins = pd.qcut(merged["target"], 4, labels=False)
    for split in SPLITS:
        counts = bins[merged["split"] == split].value_counts()
        assert counts.max() - counts.min() <= 2, (split, counts.to_dict())


def test_families_never_cross_splits_or_pools():
    cohort = make_cohort([1, 2, 3, 1, 2, 4, 1, 1, 2, 3] * 5, ["male", "female"])
    result = split_subjects(cohort, seed=4)
    assert (result.groupby("group")["split"].nunique() == 1).all()
    assert (result.groupby("group")["pool"].nunique() == 1).all()
    assert audit_splits(result)["passed"].all()


def test_six_groups_is_enough_and_fill_every_pool():
    result = split_subjects(make_cohort([2] * 6, ["x", "y"]), seed=0)
    assert len(set(zip(result["split"], result["pool"]))) == 6


def test_too_few_groups_names_the_numbers():
    cohort = make_cohort([2, 1, 3, 2], ["x"])
    with pytest.raises(SplitError, match=r"need at least 6 groups for 3 splits with query and reference "
                                         r"pools, got 4 \(from 8 subjects\)"):
        split_subjects(cohort)


@pytest.mark.parametrize("fractions, fragment", [
    ((0.8, 0.2, 0.0), "must be positive and sum to 1"),
    ((0.7, 0.2, 0.2), r"sum 1\.1"),
    ((0.9, 0.1), "need 3 values for train/val/test, got 2"),
])
def test_bad_fractions_are_errors(fractions, fragment):
    with pytest.raises(SplitError, match=fragment):
        split_subjects(make_cohort([1] * 20, ["x"]), fractions=fractions)


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5])
def test_reference_fraction_must_be_inside_0_1(value):
    with pytest.raises(SplitError, match=f"reference_fraction must be between 0 and 1 .*got {value}"):
        split_subjects(make_cohort([1] * 20, ["x"]), reference_fraction=value)


def test_duplicate_subject_and_bad_numeric_target_are_errors():
    cohort = make_cohort([1] * 10, ["x"])
    with pytest.raises(SplitError, match=r"1 subject\(s\) on more than one row: \['sub-0000'\]"):
        split_subjects(pd.concat([cohort, cohort.iloc[:1]]))
    numeric = make_cohort([1] * 10)
    numeric.loc[3, "target"] = float("nan")
    with pytest.raises(SplitError, match=r"not a finite number for 1 subject\(s\): \['sub-0030'\]"):
        split_subjects(numeric, task_type="numerical")
    with pytest.raises(SplitError, match="lacks column"):
        split_subjects(cohort.drop(columns="target"))


def test_missing_group_column_means_one_group_per_subject():
    cohort = make_cohort([1] * 12, ["x", "y"])
    result = split_subjects(cohort.drop(columns="group"))
    assert (result["group"] == result["subject"]).all()


def test_audit_and_assert_disjoint_catch_leaks():
    clean = split_subjects(make_cohort([1, 2] * 10, ["x", "y"]), seed=0)
    assert_disjoint(clean)
    leaked = clean.copy()
    first = leaked.iloc[0]
    other = next(s for s in SPLITS if s != first["split"])
    leaked = pd.concat([leaked, pd.DataFrame([{**first.to_dict(), "split": other}])], ignore_index=True)
    audit = audit_splits(leaked).set_index("check")
    assert not audit.loc["no subject in two splits", "passed"]
    assert first["subject"] in audit.loc["no subject in two splits", "detail"]
    assert not audit.loc["every subject assigned once", "passed"]
    with pytest.raises(SplitError, match=f"no subject in two splits: FAILED \\(subjects: {first['subject']}"):
        assert_disjoint(leaked)


def test_audit_names_group_crossing_and_missing_pools():
    assignment = pd.DataFrame({"subject": ["a", "b", "c", "d"], "group": ["g1", "g1", "g2", "g3"],
                               "split": ["train", "val", "train", "test"],
                               "pool": ["query", "query", "reference", "query"]})
    audit = audit_splits(assignment).set_index("check")
    assert audit.loc["no group in two splits", "detail"] == "groups: g1"
    assert audit.loc["every split has both pools", "detail"] == "empty: val/reference, test/reference"
    with pytest.raises(SplitError, match="their subjects: a, b"):
        assert_disjoint(assignment)


def test_split_counts_categorical_and_numerical():
    cohort = make_cohort([1] * 60, ["female", "male"])
    counts = split_counts(split_subjects(cohort), cohort)
    assert list(counts[["split", "pool"]].itertuples(index=False, name=None)) == [
        (s, p) for s in SPLITS for p in POOLS]
    assert counts["subjects"].sum() == 60
    assert (counts["n_female"] + counts["n_male"] == counts["subjects"]).all()
    numeric = make_cohort([1] * 60)
    counts = split_counts(split_subjects(numeric, task_type="numerical"), numeric)
    assert {"target_mean", "target_std"} <= set(counts.columns) and counts["target_mean"].notna().all()


def test_real_participants_table_by_sex_and_bmi():
    table = pd.read_csv(DATA / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    sex = table[table["sex"].isin(["M", "F"])].rename(columns={"participant_id": "subject", "sex": "target"})
    result = split_subjects(sex, seed=1234).merge(sex[["subject", "target"]], on="subject")
    assert len(result) == 225 and audit_splits(result)["passed"].all()
    shares = result.groupby("split")["target"].apply(lambda t: (t == "F").mean())
    assert shares.max() - shares.min() < 0.05
    bmi = table[table["BMI"] != "n/a"].rename(columns={"participant_id": "subject", "BMI": "target"})
    assert audit_splits(split_subjects(bmi, task_type="numerical", seed=1234))["passed"].all()


# ------------------------------------------------------------------------------ property tests
cohorts = st.builds(
    lambda sizes, n_classes, numerical, seed: make_cohort(
        sizes, None if numerical else ["c0", "c1", "c2"][:n_classes], seed),
    sizes=st.lists(st.integers(1, 3), min_size=6, max_size=40),
    n_classes=st.integers(1, 3), numerical=st.booleans(), seed=st.integers(0, 2**16))


@settings(max_examples=60, deadline=None)
@given(cohort=cohorts, seed=st.integers(0, 2**31), order_seed=st.integers(0, 2**16),
       reference_fraction=st.floats(0.1, 0.9), train=st.floats(0.2, 0.8))
def test_split_properties_hold_for_every_cohort(cohort, seed, order_seed, reference_fraction, train):
    task_type = "categorical" if isinstance(cohort["target"].iloc[0], str) else "numerical"
    rest = (1.0 - train) / 2
    kwargs = {"fractions": (train, rest, 1.0 - train - rest), "seed": seed, "task_type": task_type,
              "reference_fraction": reference_fraction}
    result = split_subjects(cohort, **kwargs)
    assert sorted(result["subject"]) == sorted(cohort["subject"]) and result["subject"].is_unique
    assert (result.groupby("group")["split"].nunique() == 1).all()
    assert (result.groupby("group")["pool"].nunique() == 1).all()
    assert len(set(zip(result["split"], result["pool"]))) == len(SPLITS) * len(POOLS)
    assert audit_splits(result)["passed"].all()
    shuffled = cohort.sample(frac=1.0, random_state=order_seed).reset_index(drop=True)
    pd.testing.assert_frame_equal(split_subjects(shuffled, **kwargs), result)
    pd.testing.assert_frame_equal(split_subjects(cohort, **kwargs), result)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=5), seed=st.integers(0, 1000))
def test_too_few_groups_always_raises_with_the_numbers(sizes, seed):
    with pytest.raises(SplitError, match=f"need at least 6 groups .* got {len(sizes)} \\(from {sum(sizes)} "):
        split_subjects(make_cohort(sizes, ["x", "y"]), seed=seed)


def test_different_seeds_give_different_assignments():
    cohort = make_cohort([1] * 50, ["x", "y"])
    assert not split_subjects(cohort, seed=0).equals(split_subjects(cohort, seed=1))
