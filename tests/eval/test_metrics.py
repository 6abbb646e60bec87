"""Answer parsing, classification/regression/label-set metrics, groups, bootstrap and VQA scores (no Java)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainvlm.data.comparison import format_value
from brainvlm.eval import answers, bootstrap, metrics, vqametrics

SEX = {"male": ["man", "M", "boy"], "female": ["woman", "F", "girl"]}


# ------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("text, expected", [
    ("female", "female"),
    ("The subject is FEMALE.", "female"),
    ("The subject is a man.", "male"),
    ("M", "male"),
    ("MRI shows nothing conclusive", None),              # "M" is not matched inside a word
    ("Femaleness is not a label", None),                # nor "female" inside a longer word
    ("The reference is male. The subject is female.", "female"),  # final sentence wins
    ("Male or female? I think female.", "female"),
    ("The subject is female, unlike the male reference.", None),  # ambiguous within the final sentence
    ("", None),
    (None, None),
])
def test_parse_label_word_boundaries_and_policy(text, expected):
    assert answers.parse_label(text, SEX) == expected


def test_parse_label_rejects_a_synonym_under_two_labels():
    with pytest.raises(ValueError, match="'M'.*two labels"):
        answers.parse_label("M", {"male": ["M"], "female": ["m"]})


def test_multiword_synonym_wins_over_its_part():
    syn = {"absent": ["no evidence of tumour"], "present": ["tumour"]}
    assert answers.parse_label("There is no evidence  of tumour.", syn) == "absent"


_WORD = st.text(alphabet=st.characters(categories=["Lu", "Ll", "Nd"]), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_label_parser_never_crashes_and_returns_a_label(text):
    assert answers.parse_label(text, SEX) in (None, "male", "female")


@settings(max_examples=150, deadline=None)
@given(prefix=_WORD, suffix=_WORD, label=st.sampled_from(["male", "female", "man", "M"]))
def test_label_glued_inside_a_word_never_matches(prefix, suffix, label):
    assert answers.find_labels(f"{prefix}{label}{suffix}", SEX) == []


@settings(max_examples=150, deadline=None)
@given(before=st.sampled_from(["", " ", "(", "\n", "-", ": "]), after=st.sampled_from(["", " ", ".", ")", ","]),
       label=st.sampled_from(["male", "female", "man", "woman", "M", "F"]))
def test_label_standing_alone_always_matches(before, after, label):
    expected = "female" if label in ("female", "woman", "F") else "male"
    assert answers.parse_label(f"{before}{label}{after}", SEX) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["male", "female", "man", "woman"]), min_size=1, max_size=6),
       st.sampled_from([" ", "  ", "\n"]))
def test_label_of_the_final_sentence_is_the_answer(stated, gap):
    text = gap.join(f"Sentence says {word}." for word in stated)
    expected = {"male": "male", "man": "male", "female": "female", "woman": "female"}[stated[-1]]
    assert answers.parse_label(text, SEX) == expected


# ------------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("text, expected", [
    ("The BMI is 23.5 kg/m2.", 23.5),
    ("\u22120.5", -0.5),
    ("x = -1.5e-3", -0.0015),
    ("about +3.", 3.0),
    (".5", 0.5),
    ("12,345 voxels", 12345.0),
    ("A T1-weighted scan: 5mm", 5.0),
    ("sub-0042 is 45 years old", 45.0),
    ("Age 45. BMI 23.", 23.0),           # the final sentence states one number
    ("between 23-25", None),             # a range is two numbers
    ("It is 2 or 3.", None),
    ("1e999", None),                     # not finite
    ("no number here", None),
])
def test_parse_number(text, expected):
    assert answers.parse_number(text) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_number_parser_never_crashes(text):
    value = answers.parse_number(text)
    assert value is None or math.isfinite(value)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False), st.booleans())
def test_number_round_trips_through_text(value, unicode_minus):
    literal = repr(value).replace("-", "\u2212") if unicode_minus else repr(value)
    assert answers.parse_number(f"The predicted value is {literal}.") == value


@pytest.mark.parametrize("text, decimals, expected", [
    ("the BMI z-score of this participant is -0.8.", 1, -0.8),
    ("the BMI z-score of this participant is 0.0.", 1, 0.0),
    ("the BMI z-score of this participant is 12.", 0, 12.0),
    ("the BMI z-score of this participant is -0.85.", 2, -0.85),
    # what a model garbles: no number in the template's format, so unparseable (never read as 0 or 1)
    ("the BMI z-score of this participant is -0.85.", 1, None),
    ("the BMI z-score of this participant is -0.in.", 1, None),
    ("the BMI z-score of this participant is 0. 90.", 1, None),
    ("the BMI z-score of this participant is 1.. on.", 1, None),
    ("the BMI z-score of this participant is \u22120.8.", 1, None),  # the template writes an ASCII minus
    ("the BMI z-score of this participant is +0.8.", 1, None),
    ("the BMI z-score of this participant is 8e-1.", 1, None),
    ("the reference is 0.3, this participant is 0.7", 1, None),  # several numbers: the module policy
])
def test_a_number_counts_only_in_the_template_s_format_when_decimals_are_given(text, decimals, expected):
    assert answers.parse_number(text, decimals) == expected


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-6, max_value=6), st.integers(min_value=0, max_value=3))
def test_every_value_the_template_writes_reads_back_in_its_format(value, decimals):
    literal = format_value(value, decimals)
    assert answers.parse_number(f"the value of this participant is {literal}.", decimals) == float(literal)


# ------------------------------------------------------------------------------ CheXpert, ICD, concepts
def test_parse_chexpert_block_and_uncertainty_policies():
    text = ('Findings: clear lungs.\nCheXpert: {"Atelectasis": 1, "cardiomegaly": 0, "Edema": -1, '
            '"Pleural  Effusion": null}')
    labels = answers.parse_chexpert(text)
    assert labels == {"Atelectasis": 1, "Cardiomegaly": 0, "Edema": -1}
    assert answers.chexpert_positive(labels, "ones") == {"Atelectasis", "Edema"}
    assert answers.chexpert_positive(labels, "zeros") == {"Atelectasis"}
    with pytest.raises(ValueError, match="uncertain"):
        answers.chexpert_positive(labels, "maybe")


@pytest.mark.parametrize("text", [
    'CheXpert: {"Atelectasis": 1,',              # malformed JSON
    'CheXpert: {"Lung Nodule": 1}',              # not a CheXpert observation
    'CheXpert: {"Edema": 2}',                    # not 1, 0, -1
    'CheXpert: {"Edema": true}',                 # booleans are not labels
    'CheXpert: ["Edema"]',                       # not an object
    'No block at all',
])
def test_parse_chexpert_malformed_is_unparseable(text):
    assert answers.parse_chexpert(text) is None


def test_parse_icd_codes():
    assert answers.parse_icd("Dx.\nICD: I10, e11.9;  Z00.00.") == {"I10", "E11.9", "Z00.00"}
    assert answers.parse_icd("ICD-10: I63.9") == {"I63.9"}
    assert answers.parse_icd("ICD:") == frozenset()
    assert answers.parse_icd("ICD: none") is None
    assert answers.parse_icd("no codes") is None


def test_parse_concepts_cuis_and_names():
    names = {"Lung": "C0024109"}
    assert answers.parse_concepts("Concepts: C0032285; lung; Pleural  effusion", names) == \
        {"C0032285", "C0024109", "pleural effusion"}
    assert answers.parse_concepts("c0032285, C0040405") == {"C0032285", "C0040405"}
    assert answers.parse_concepts("pneumonia of the lung") is None   # no marker and not only CUIs
    assert answers.parse_concepts("Concepts: ") == frozenset()


# ------------------------------------------------------------------------------------ classification
Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["a", "a", None, "b", "a", None]


def test_classification_metrics_by_hand():
    got = metrics.classification_metrics(Y_TRUE, Y_PRED)
    assert got["accuracy"] == pytest.approx(3 / 6)
    assert got["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # F1: a = 2*2/(4+1+1), b = 2*1/(2+0+1), c = 0
    assert got["macro_f1"] == pytest.approx((4 / 6 + 2 / 3 + 0) / 3)
    assert (got["n"], got["n_unparseable"]) == (6, 2)


def test_confusion_matrix_has_an_unparseable_column():
    matrix = metrics.confusion_matrix(Y_TRUE, Y_PRED)
    assert list(matrix.columns) == ["a", "b", "c", "unparseable"]
    assert matrix.loc["a"].tolist() == [2, 0, 0, 1]
    assert matrix.loc["b"].tolist() == [1, 1, 0, 0]
    assert matrix.loc["c"].tolist() == [0, 0, 0, 1]
    assert int(matrix.to_numpy().sum()) == len(Y_TRUE)


# ---------------------------------------------------------------------------------------- regression
def test_regression_metrics_by_hand_with_fallback():
    got = metrics.regression_metrics([1, 2, 3, 4], [1.5, None, 2, 5], fallback=2.5)
    assert got["mae"] == pytest.approx(0.75)
    assert got["rmse"] == pytest.approx(math.sqrt(0.625))
    assert got["pearson_r"] == pytest.approx(5 / math.sqrt(7.25 * 5))
    assert got["spearman_rho"] == pytest.approx(0.8)
    assert (got["n"], got["n_unparseable"]) == (4, 1)


def test_regression_needs_a_fallback_for_unparseable_answers():
    with pytest.raises(ValueError, match="1 of 2 predictions are unparseable; pass fallback"):
        metrics.regression_metrics([1, 2], [1.0, None])


def test_correlation_of_a_constant_is_nan():
    assert math.isnan(metrics.regression_metrics([1, 2, 3], [2, 2, 2])["pearson_r"])


# ---------------------------------------------------------------------------------------- label sets
def test_label_set_f1_by_hand():
    true = [frozenset({"A", "B"}), frozenset({"A"}), frozenset()]
    pred = [frozenset({"A"}), frozenset({"A", "C"}), None]
    got = metrics.label_set_metrics(true, pred)
    assert got["micro_f1"] == pytest.approx(4 / 6)     # TP 2, FP 1, FN 1
    assert got["macro_f1"] == pytest.approx(1 / 3)     # A 1.0, B 0, C 0
    assert got["n_unparseable"] == 1
    five = metrics.label_set_metrics(true, pred, labels=["A", "B", "D"])
    assert five["micro_f1"] == pytest.approx(4 / 5) and five["macro_f1"] == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------------- groups, bootstrap
def _subject_table(n_subjects: int = 20, per_subject: int = 10) -> pd.DataFrame:
    """Every sample of a subject is identical: the first half of subjects right, the rest wrong."""
    rows = [{"query_subject": f"sub-{s:02d}", "correct": s < n_subjects // 2, "domain": "ab"[s % 2]}
            for s in range(n_subjects) for _ in range(per_subject)]
    return pd.DataFrame(rows)


def test_by_group_computes_each_metric_within_each_group():
    table = _subject_table()
    table.loc[0, "domain"] = None
    grouped = metrics.by_group(table, "domain", lambda t: {"accuracy": t["correct"].mean()})
    assert list(grouped.index) == ["<missing>", "a", "b"]
    assert grouped.loc["<missing>", "accuracy"] == 1.0
    assert grouped["n_group"].sum() == len(table)
    with pytest.raises(KeyError, match="'site'"):
        metrics.by_group(table, "site", lambda t: {})


def test_bootstrap_draws_whole_subjects():
    units = np.array(["s1"] * 3 + ["s2"] * 2 + ["s3"] * 4 + ["s4"])
    for rows in bootstrap.bootstrap_indices(units, n_boot=50, seed=3):
        counts = pd.Series(rows).value_counts()
        for unit in set(units[rows]):
            members = np.flatnonzero(units == unit)
            assert len(set(counts[members])) == 1   # every row of a drawn subject appears equally often


def test_bootstrap_ci_is_seeded_contains_the_point_and_is_wider_by_subject():
    table = _subject_table()
    accuracy = lambda t: float(t["correct"].mean())
    by_subject = bootstrap.bootstrap_ci(table, accuracy, unit="query_subject", n_boot=400, seed=7)
    assert by_subject == bootstrap.bootstrap_ci(table, accuracy, unit="query_subject", n_boot=400, seed=7)
    assert by_subject != bootstrap.bootstrap_ci(table, accuracy, unit="query_subject", n_boot=400, seed=8)
    assert by_subject["lo"] <= by_subject["point"] == 0.5 <= by_subject["hi"]
    assert by_subject["n_units"] == 20 and by_subject["unit"] == "query_subject"
    naive = bootstrap.bootstrap_ci(table, accuracy, unit=None, n_boot=400, seed=7)
    assert naive["n_units"] == 200
    # 20 independent subjects, not 200 independent samples: the honest interval is ~3x wider
    assert by_subject["hi"] - by_subject["lo"] > 2 * (naive["hi"] - naive["lo"])


def test_bootstrap_metrics_reports_several_metrics_from_one_pass():
    table = pd.DataFrame({"target": list("aabbc") * 4, "parsed": list("abbbc") * 4,
                          "subject": np.repeat(np.arange(10), 2)})
    fn = lambda t: metrics.classification_metrics(list(t["target"]), list(t["parsed"]))
    ci = bootstrap.bootstrap_metrics(table, fn, ["accuracy", "macro_f1"], unit="subject", n_boot=100, seed=0)
    assert ci["accuracy"]["point"] == pytest.approx(0.8)
    assert all(c["lo"] <= c["point"] <= c["hi"] and c["n_valid"] == 100 for c in ci.values())


def test_paired_statistic_difference_resamples_the_same_units_for_both_systems():
    rng = np.random.default_rng(0)
    a = pd.DataFrame({"score": rng.random(40)})
    b = pd.DataFrame({"score": a["score"] - 0.1})  # b is a, shifted: every replicate differs by exactly 0.1
    units = np.repeat(np.arange(20), 2)
    mean = lambda t: float(t["score"].mean())
    got = bootstrap.paired_statistic_difference(a, b, mean, units, n_boot=200, seed=1)
    assert got["point"] == pytest.approx(0.1) and got["lo"] == pytest.approx(0.1) and got["hi"] == pytest.approx(0.1)
    assert got["n_units"] == 20 and got["n_valid"] == 200
    # for a mean, it is paired_difference of the per-sample scores
    c = pd.DataFrame({"score": rng.random(40)})
    by_means = bootstrap.paired_difference(a["score"], c["score"], units, n_boot=200, seed=1)
    by_statistic = bootstrap.paired_statistic_difference(a, c, mean, units, n_boot=200, seed=1)
    assert by_statistic["lo"] == pytest.approx(by_means["lo"]) and by_statistic["hi"] == pytest.approx(by_means["hi"])
    with pytest.raises(ValueError, match="same samples: 40 and 39 rows"):
        bootstrap.paired_statistic_difference(a, c.iloc[:39], mean)



def test_mean_ci_and_the_grouped_difference_equal_their_table_statistics_on_the_same_draws():
    """The vectorised means draw as the table statistics do: a mean's interval equals ``bootstrap_ci``'s, and
    the grouped paired difference equals the difference of macro averages over groups."""
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"score": rng.integers(0, 2, 90).astype(float), "image": np.repeat(np.arange(30), 3),
                          "task": np.tile(["a", "b", "b"], 30), "other": rng.integers(0, 2, 90).astype(float)})
    fast = bootstrap.mean_ci(table["score"], table["image"], n_boot=300, seed=5)
    slow = bootstrap.bootstrap_ci(table, lambda t: float(t["score"].mean()), unit="image", n_boot=300, seed=5)
    assert [fast[k] for k in ("point", "lo", "hi")] == pytest.approx([slow[k] for k in ("point", "lo", "hi")])
    assert fast["n_units"] == slow["n_units"] == 30

    def macro(t: pd.DataFrame, column: str) -> float:
        return float(t.groupby("task")[column].mean().mean())

    grouped = bootstrap.paired_difference(table["score"], table["other"], table["image"], n_boot=300, seed=5,
                                          groups=table["task"])
    other = table.assign(score=table["other"])
    by_table = bootstrap.paired_statistic_difference(table, other, lambda t: macro(t, "score"), table["image"],
                                                     n_boot=300, seed=5)
    assert [grouped[k] for k in ("point", "lo", "hi")] == pytest.approx([by_table[k] for k in ("point", "lo", "hi")])
    # a macro average weighs the tasks equally: not the plain mean when tasks differ in size
    plain = bootstrap.paired_difference(table["score"], table["other"], table["image"], n_boot=300, seed=5)
    assert grouped["point"] != pytest.approx(plain["point"])
    with pytest.raises(ValueError, match="2 groups for 90 paired samples"):
        bootstrap.paired_difference(table["score"], table["other"], groups=["a", "b"])

# ------------------------------------------------------------------------------------------------ VQA
def test_normalize_and_token_scores():
    assert vqametrics.normalize_answer("The Posterior-Anterior view, 2.5 cm!") == "posterior anterior view 2.5 cm"
    assert vqametrics.normalize_answer("Two") == "2"
    scores = vqametrics.token_scores("right upper lobe", "It is in the right lobe")
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["precision"] == pytest.approx(2 / 5)
    assert scores["token_f1"] == pytest.approx(2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5))
    assert vqametrics.token_scores("left", "Left.")["exact_match"] == 1.0


def test_a_hyphenated_reference_word_is_recalled_only_whole():
    refusal = ("I cannot see the image. Common MRI sequences are T1-weighted, T2, FLAIR and diffusion-weighted "
               "imaging.")
    assert vqametrics.token_scores("T2-weighted", refusal)["recall"] == 0.0
    assert vqametrics.llava_med_script_recall("T2-weighted", refusal) == 1.0    # the script splits at hyphens
    for answer in ("T2-weighted", "This is a T2 weighted MRI.", "t2-weighted image"):
        assert vqametrics.token_scores("T2-weighted", answer)["recall"] == 1.0
    assert vqametrics.reference_units("The T2-weighted, two-view image") == [
        ("t2", "weighted"), ("2", "view"), ("image",)]
    assert vqametrics.token_scores("T2-weighted image", "image of T1")["recall"] == 0.5
    assert vqametrics.token_scores("left left lung", "left lung")["recall"] == pytest.approx(2 / 3)  # clipped


@pytest.mark.parametrize("reference, prediction, recall", [
    ("left lung", "left left left", 3 / 4),        # every occurrence in the answer counts (not clipped)
    ("right upper lobe", "It is in the right lobe", 2 / 3),
    ("2.5 cm", "about 2.5 cm", 1.0),
    ("liver", "", 0.0),
    ("liver", "spleen", 0.0),
    ("Dont know", "don't know", 1 / 2),            # its contraction table is left out (see the docstring)
])
def test_llava_med_script_recall(reference, prediction, recall):
    assert vqametrics.llava_med_script_recall(reference, prediction) == pytest.approx(recall)


@pytest.mark.parametrize("reference, prediction, correct, parsed", [
    ("yes", "Yes, there is.", True, True),
    ("no", "No, there is no fracture.", True, True),
    ("yes", "No.", False, True),
    ("yes", "I am not sure", False, False),     # "not" is not the word "no"
    ("yes", "Yes. Actually no.", True, True),   # the leading yes/no word decides (answers.parse_yes_no)
    ("yes", "There is no mass.", False, True),  # no leading word: the only one of the two in the answer
    ("mri", "MRI", True, True),
    ("mri", "It is an MRI scan", False, True),  # non-yes/no closed answers need an exact match
])
def test_closed_correct(reference, prediction, correct, parsed):
    assert vqametrics.closed_correct(reference, prediction) == (correct, parsed)


@pytest.mark.parametrize("reference, prediction, hit", [
    ("yes", "Yes, it is.", 1.0),
    ("yes", "No.", math.nan),               # wrong yes/no answers are skipped by the script
    ("yes", "There is a nodule", math.nan),  # "no" inside "nodule" counts as a no
    ("no", "There is a nodule", 1.0),
    ("yes", "Unclear", 0.0),
    ("mri", "mri", 0.0),                    # right, but holds neither "yes" nor "no"
    ("abnormal", "abnormal", 1.0),          # "abnormal" holds "no"
])
def test_llava_med_script_closed_hit(reference, prediction, hit):
    got = vqametrics.llava_med_script_closed_hit(reference, prediction)
    assert (math.isnan(got) and math.isnan(hit)) or got == hit


def test_llava_med_script_normalisation_quirks():
    assert vqametrics.llava_med_script_normalize("the (left) lung, 1,000 cc.") == "left lung 1000 cc"
    assert vqametrics.llava_med_script_normalize("x-ray") == "x ray"
    assert vqametrics.llava_med_script_normalize("a" + ". a" * 40).count(".") == 8  # only 32 periods go


def test_answer_type_is_stripped_and_checked():
    assert vqametrics.normalize_answer_type("CLOSED ") == "CLOSED"
    with pytest.raises(ValueError, match="neither CLOSED nor OPEN"):
        vqametrics.normalize_answer_type("BOTH")


@pytest.mark.parametrize("answer, read", [
    ("Yes, this is a normal image. It shows a CT scan of the abdomen with no visible abnormalities.", "yes"),
    (("Choose one of the two options provided:\n1. Yes: The trachea is deviated...\n2. No: The trachea is not "
      "deviated..."), None),
    ("Yes. No abnormality is seen.", "yes"),
    ("There is no evidence of fracture.", "no"),
    ("No, there is no fracture.", "no"),
    ("**yes**", "yes"),
    ("It could be yes or no.", None),
    ("The heart is enlarged.", None),
    ("Nothing is abnormal; not normal either.", None),  # "not", "nothing" are not the word "no"
])
def test_closed_yes_no_answers_read_the_leading_word_else_the_only_one(answer, read):
    assert answers.parse_yes_no(answer) == read
    correct, parsed = vqametrics.closed_correct("yes", answer)
    assert parsed == (read is not None) and correct == (read == "yes")
