"""ImageCLEF concept scores: a test per scoring rule, scores of parsed concept sets, and a property test
against a restatement of the official evaluator's per-image loop."""

from __future__ import annotations

import math
import warnings
from functools import cache
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from brainvlm.eval import clef, clef_files

IDS = [str(i) for i in range(1, 13)]  # not zero-padded: sorted as text they read 1, 10, 11, 12, 2, ...


def _file(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _score(tmp_path: Path, gold: str, submission: str, manual: str | None = None, **kwargs) -> dict:
    paths = [_file(tmp_path / name, text) for name, text in (("gold.csv", gold), ("sub.csv", submission))]
    manual_path = None if manual is None else _file(tmp_path / "manual.csv", manual)
    return clef.evaluate_clef_files(*paths, manual_path, **kwargs)


# ------------------------------------------------------------------------------------ scoring rules
def test_a_trailing_semicolon_is_an_empty_concept(tmp_path):
    gold = "ID,CUIs\n1,C0000001;C0000002\n"
    assert _score(tmp_path, gold, "ID,CUIs\n1,C0000001;C0000002\n")["primary"] == 1.0
    assert _score(tmp_path, gold, "ID,CUIs\n1,C0000001;C0000002;\n")["primary"] == pytest.approx(0.8)


def test_both_sides_are_upper_cased_and_tokens_stripped(tmp_path):
    gold = "ID,CUIs\n1,c0000001; C0000002\n"
    assert _score(tmp_path, gold, "ID,CUIs\n1,C0000002 ;c0000001\n")["primary"] == 1.0


def test_an_empty_prediction_scores_zero_against_concepts(tmp_path):
    assert _score(tmp_path, "ID,CUIs\n1,C0000001\n", "ID,CUIs\n1,\n")["primary"] == 0.0


def test_a_gold_row_without_concepts_counts_and_scores_one_only_against_an_empty_row(tmp_path):
    gold = "ID,CUIs\n1,\n2,C0000001\n"
    assert _score(tmp_path, gold, "ID,CUIs\n1,\n2,C0000001\n")["primary"] == 1.0
    result = _score(tmp_path, gold, "ID,CUIs\n1,C0000001\n2,C0000001\n")
    assert result["primary"] == 0.5 and result["n_images"] == 2


def test_a_row_with_no_comma_has_no_token_and_scores_zero(tmp_path):
    assert _score(tmp_path, "ID,CUIs\n1,C0000001\n", "ID,CUIs\n1\n")["primary"] == 0.0
    assert _score(tmp_path, "ID,CUIs\n1,\n", "ID,CUIs\n1\n")["primary"] == 0.0   # not even the empty token


def test_the_secondary_score_keeps_allowed_concepts_and_leaves_out_images_without_one(tmp_path):
    gold = "ID,CUIs\n1,C0040405;C0000001\n2,C0000002\n3,C0817096\n"
    manual = "ID,CUIs\n1,C0040405\n2,\n3,C0817096\n"
    submission = "ID,CUIs\n1,C0040405;C0000009\n2,C0024485\n3,\n"
    result = _score(tmp_path, gold, submission, manual)
    assert result["primary"] == pytest.approx((0.5 + 0 + 0) / 3)      # image 1: 1 hit, 2 gold, 2 predicted
    assert result["secondary"] == pytest.approx((1.0 + 0.0) / 2)      # image 2 left out: no allowed gold
    assert result["n_images_secondary"] == 2 and len(result["allowed_cuis"]) == 15
    only_ct = _score(tmp_path, gold, submission, manual, allowed=["C0040405"])
    assert only_ct["secondary"] == 1.0 and only_ct["n_images_secondary"] == 1
    assert _score(tmp_path, gold, submission, "ID,CUIs\n1,\n2,\n3,\n")["secondary"] is None


def test_the_2025_2026_allow_list():
    assert len(clef.MANUAL_CUIS) == 15 and clef.MANUAL_CUIS["C0040405"] == "X-Ray Computed Tomography"
    assert {"C0024485", "C0041618", "C1306645", "C0002978", "C0032743", "C0920367", "C0817096", "C0000726",
            "C0030797", "C0037949", "C0037303", "C0023216", "C1140618", "C0006141"} < set(clef.MANUAL_CUIS)


def test_per_image_scores_come_in_gold_order_for_a_paired_bootstrap(tmp_path):
    gold = "ID,CUIs\n" + "".join(f"{i},C0000001\n" for i in IDS)
    submission = "ID,CUIs\n" + "".join(f"{i},{'C0000001' if int(i) % 2 else ''}\n" for i in IDS)
    paths = [_file(tmp_path / "gold.csv", gold), _file(tmp_path / "sub.csv", submission)]
    table = clef.clef_per_image(*paths, paths[0])
    assert list(table["id"]) == IDS
    assert list(table["primary"]) == [1.0, 0.0] * 6 and list(table["secondary"].isna()) == [True] * 12
    out = tmp_path / "per_image.csv"
    assert clef.evaluate_clef_files(*paths, per_image_out=out)["primary"] == 0.5
    assert out.read_text(encoding="utf-8").splitlines()[:3] == ["id,primary", "1,1.0", "2,0.0"]


def test_a_parsed_concept_set_scores_as_the_row_written_for_it(tmp_path):
    assert clef.set_tokens({"c0000002", "C0000001", "pleural effusion"}) == ("C0000001", "C0000002")
    assert clef.set_tokens(frozenset()) == ("",)                          # written as "ID,"
    gold = {"1": {"C0040405", "C0817096"}, "2": set(), "3": set(), "4": {"C0000001"}}
    predicted = {"1": {"C0040405", "lung"}, "2": set(), "3": {"C0000001"}, "4": set()}
    ids = list(gold)
    written = {i: concepts - {"lung"} for i, concepts in predicted.items()}   # unmapped names left out
    paths = [clef_files.write_concepts(tmp_path / f"{name}.csv", ids, sets)
             for name, sets in (("gold", gold), ("sub", written))]
    from_files = clef.clef_per_image(*paths)["primary"].tolist()
    from_sets = [clef.image_f1(clef.set_tokens(gold[i]), clef.set_tokens(predicted[i])) for i in ids]
    assert from_sets == from_files == [pytest.approx(2 / 3), 1.0, 0.0, 0.0]
    assert clef.image_score(("C0040405", "C0000001"), ("C0040405",), {"C0040405"}) == 1.0
    assert math.isnan(clef.image_score(("C0000001",), ("C0000001",), {"C0040405"}))   # no allowed gold


@pytest.mark.parametrize(("submission", "says"), [
    ("ID,CUIs\n1,C1\n1,C1\n2,\n", "row 3: the id '1' repeats"),
    ("ID,CUIs\n1,C1\n3,\n", "row 3: the id '3' is not in the gold file"),
    ("ID,CUIs\n1,C1\n", "1 gold images have no row (first ten: ['2'])"),
    ("ID,CUIs\n1,C1;C1\n2,\n", "row 2: a concept appears twice"),
    ("ID,CUIs\n1," + ";".join(f"C{i}" for i in range(101)) + "\n2,\n", "row 2: 101 concepts"),
    ("ID,CUIs\n1,C1,C2\n2,\n", "row 2: 3 fields"),
    ("ID,CUIs\n1,C1\n\n2,\n", "row 3: blank line"),
    ("CUIs\n1,C1\n2,\n", "row 1: the header ['CUIs'] does not start with ID"),
])
def test_a_file_the_evaluator_refuses_is_an_error_naming_the_row(tmp_path, submission, says):
    with pytest.raises(clef.SubmissionError, match="sub.csv") as info:
        _score(tmp_path, "ID,CUIs\n1,C1\n2,C2\n", submission)
    assert says in str(info.value)


def test_a_gold_token_that_is_not_a_cui_is_an_error_naming_file_row_and_value(tmp_path):
    with pytest.raises(clef.SubmissionError) as info:
        _score(tmp_path, "ID,CUIs\n1,C0040405\n2,C0817096;X0024485\n", "ID,CUIs\n1,C0040405\n2,\n")
    assert str(info.value) == (f"{tmp_path / 'gold.csv'} row 3: 'X0024485' is not a CUI (C followed by "
                               "digits); fix the gold file (every token of a gold row is scored as a "
                               "concept)")


UTF16 = "the file is UTF-16 (it starts with a UTF-16 byte-order mark), not UTF-8; save it as UTF-8"
LATIN1 = ("byte 18 (0xe9) is not UTF-8 (invalid continuation byte); the file must be UTF-8 (is it Latin-1 or "
          "Windows-1252?): save it as UTF-8")


@pytest.mark.parametrize(("name", "content", "says"), [
    ("sub.csv", "ID,CUIs\n1,C1\n2,\n".encode("utf-16"), f"sub.csv: {UTF16}"),
    ("gold.csv", "ID,CUIs\n1,C1\n2,C2 \u00e9\n".encode("latin-1"), f"gold.csv line 3: {LATIN1}"),
])
def test_a_file_that_is_not_utf8_names_the_file_and_asks_for_utf8(tmp_path, name, content, says):
    files = {"gold.csv": b"ID,CUIs\n1,C1\n2,C2\n", "sub.csv": b"ID,CUIs\n1,C1\n2,\n", name: content}
    paths = [_file(tmp_path / file, data) for file, data in files.items()]
    with pytest.raises(clef.SubmissionError) as info:
        clef.evaluate_clef_files(*paths)
    assert str(info.value) == f"{tmp_path}/{says}"


def test_rows_the_official_precheck_refuses_are_scored_as_the_evaluator_does_and_warned(tmp_path):
    gold = "ID,CUIs\n1,C0040405;C0817096\n2,C0024485\n3,\n"
    result = _score(tmp_path, gold, "ID,CUIs\n1,c0040405;C0817096\n2,MRI\n3,\n")
    assert result["primary"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)     # lower case scores as upper case
    submission = tmp_path / "sub.csv"
    assert result["warnings"] == [
        f"{submission} row 2: ['c0040405'] are not CUIs: C (upper case) followed by digits",
        f"{submission} row 3: ['MRI'] are not CUIs: C (upper case) followed by digits",
        (f"{submission}: the official pre-check would refuse this file (2 violations); the scores are what "
         "the evaluator gives it (brainvlm check-submission lists every violation)")]
    assert _score(tmp_path, gold, "ID,CUIs\n1,C0040405;C0817096\n2,C0024485\n3,\n")["warnings"] == []


def test_manual_ids_the_gold_lacks_count_zero_in_the_secondary_mean_as_the_evaluator_counts_them(tmp_path):
    gold = "ID,CUIs\n1,C0040405\n2,C0000001\n"
    manual = "ID,CUIs\n1,C0040405\n2,\n3,C0817096\n4,\n"          # 3 and 4 are not in the gold file
    result = _score(tmp_path, gold, "ID,CUIs\n1,C0040405\n2,C0000001\n", manual)
    # the official evaluator: F1 of the submitted images over len(manual) less the submitted images
    # without an allowed gold concept: (1.0 + 0) / (4 - 1); images 3 and 4 are never submitted
    assert result["secondary"] == pytest.approx(1.0 / 3)
    assert (result["n_images_secondary"], result["n_manual_only"], result["n_images"]) == (3, 2, 2)
    manual_path = tmp_path / "manual.csv"
    assert result["warnings"][-2:] == [
        (f"{manual_path} row 4: the id '3' is not in the gold file {tmp_path / 'gold.csv'}; the official "
         "evaluator counts it in the secondary mean with F1 0"),
        (f"{manual_path} row 5: the id '4' is not in the gold file {tmp_path / 'gold.csv'}; the official "
         "evaluator counts it in the secondary mean with F1 0")]
    table = clef.clef_per_image(tmp_path / "gold.csv", tmp_path / "sub.csv", manual_path)
    assert list(table["id"]) == ["1", "2", "3", "4"] and list(table["secondary"].fillna(-1)) == [1, -1, 0, 0]


EMPTY_ITEM = "an empty item (',,' or a comma at an end); give CUIs separated by single commas, or manual"


@pytest.mark.parametrize(("value", "says"), [
    ("C1,foo", ("allowed CUIs: 'foo' is not a CUI (C followed by digits); give CUIs such as "
                "C0040405,C0817096")),
    ("C0040405,,C0817096", f"allowed CUIs 'C0040405,,C0817096': {EMPTY_ITEM}"),
    ("", f"allowed CUIs '': {EMPTY_ITEM}"),
])
def test_an_allowed_list_with_a_token_that_is_not_a_cui_is_refused_naming_it(tmp_path, value, says):
    with pytest.raises(ValueError) as info:
        clef.parse_allowed(value)
    assert str(info.value) == says
    assert clef.parse_allowed(" c0040405, C0817096 ") == ["C0040405", "C0817096"]
    assert clef.parse_allowed("manual") == list(clef.MANUAL_CUIS)
    with pytest.raises(ValueError, match="'foo' is not a CUI"):
        _score(tmp_path, "ID,CUIs\n1,C1\n", "ID,CUIs\n1,C1\n", "ID,CUIs\n1,C1\n", allowed=["C1", "foo"])
    with pytest.raises(ValueError, match="the list is empty"):
        clef.check_allowed_cuis([])


# ---------------------------------------------------------------------------------- the property test
@cache
def _sklearn_f1(y_true: tuple[int, ...], y_pred: tuple[int, ...]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty prediction: precision undefined, scored 0
        return float(f1_score(list(y_true), list(y_pred), average="binary"))


def _official(gold_fields: dict, predicted_fields: dict, allowed: set | None) -> float | None:
    """The official per-image loop, restated: raw tokens, upper-cased, F1 over the union of concepts."""
    max_score, current = len(gold_fields), 0.0
    for image_id, field in gold_fields.items():
        gold = tuple(c.strip().upper() for c in field.split(";"))
        raw = predicted_fields[image_id]
        predicted = () if raw is None else tuple(c.strip().upper() for c in raw.split(";"))
        if allowed is not None:
            gold = tuple(c for c in gold if c in allowed)
            predicted = tuple(c for c in predicted if c in allowed)
        if len(gold) == 0:
            max_score -= 1
            continue
        concepts = sorted(set(gold + predicted))
        y_true, y_pred = tuple(int(c in gold) for c in concepts), tuple(int(c in predicted) for c in concepts)
        current += _sklearn_f1(y_true, y_pred)
    return current / max_score if max_score else None


TOKENS = st.sampled_from(["C0040405", "c0040405", "C0817096", " C0817096 ", "C0000001", "C0000002",
                          "c0000002", "", " ", "C0024485"])
FIELDS = st.lists(TOKENS, max_size=4).map(";".join)  # [] and [""] give "": a row "ID," (the empty token)
ROWS = st.lists(st.tuples(FIELDS, st.none() | FIELDS), min_size=1, max_size=4)  # (gold, prediction) per image
ALLOWED = {"C0040405", "C0817096", "C0024485"}


@settings(max_examples=10000, deadline=None)
@given(rows=ROWS)
@example(rows=[("C0040405;C0817096", "C0040405;C0817096;")])   # a trailing ';': 0.8
@example(rows=[("", ""), ("C0040405", "")])                      # gold "ID,": 1 against "ID,"; empty: 0
@example(rows=[("", None), ("C0040405", None)])                  # no comma: no token at all
@example(rows=[("C0000001", "c0000001;;C0817096"), (" ; ", "C0040405")])   # ';;', case, blank tokens
@example(rows=[("C0000001", "C0000001")])                        # no allowed gold concept: no secondary
def test_the_score_equals_the_official_per_image_loop(rows):
    gold_fields = {str(number): gold for number, (gold, _) in enumerate(rows, 1)}
    predicted_fields = {str(number): predicted for number, (_, predicted) in enumerate(rows, 1)}
    gold = {i: clef.concept_tokens(f) for i, f in gold_fields.items()}
    predicted = {i: clef.concept_tokens(f) for i, f in predicted_fields.items()}
    for allowed in (None, ALLOWED):
        ours = clef.mean_score(clef.score_concepts(gold, predicted, allowed).values())
        official = _official(gold_fields, predicted_fields, allowed)
        if official is None:                                      # no image counts (the official divides by 0)
            assert ours is None
        else:
            assert ours is not None and math.isclose(ours, official, abs_tol=1e-12)
