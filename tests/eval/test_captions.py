"""Caption tidying (each rule, never empty) and ROUGE-1 F after the challenge's normalisation."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainvlm.core.paths import PROJECT_ROOT
from brainvlm.eval import captions, clef_files

VECTORS = PROJECT_ROOT / "tests" / "data" / "caption_metric_vectors" / "metric_test_vectors.json"


# ------------------------------------------------------------------------------------------- tidying
@pytest.mark.parametrize(("raw", "tidy"), [
    ("  CT of the\n chest  with   contrast.  ", "CT of the chest with contrast."),           # whitespace
    ('"CT of the chest."', "CT of the chest."),                                              # wrapping quotes
    ("«TC de tórax.»", "TC de tórax."),
    ('CT of the chest."', "CT of the chest."),                                               # a lone quote
    ('"a" and "b" views.', '"a" and "b" views.'),                                             # quotes kept
    ("patients' chest radiograph.", "patients' chest radiograph."),                          # an apostrophe
    ("Caption: MRI of the brain.", "MRI of the brain."),                                      # a label
    ("Pie de figura: TC de abdomen.", "TC de abdomen."),
    ("CT of the chest. CT of the chest. MRI of the head.", "CT of the chest. MRI of the head."),  # repeats
    ("CT of the chest showing a mass. The mass measures", "CT of the chest showing a mass."),  # cut-off
    ("CT of the chest showing a", "CT of the chest"),                                        # dangling words
    ("TC de tórax con", "TC de tórax"),
    ("Axial CT of the abdomen,", "Axial CT of the abdomen"),
    ("A 3.5 cm nodule in the left lung", "A 3.5 cm nodule in the left lung"),                # no sentence end
])
def test_each_tidying_rule(raw, tidy):
    assert captions.tidy_caption(raw) == tidy


@pytest.mark.parametrize("raw", ["", "   \n ", '""', "...", "Caption:", "of the", None])
def test_an_empty_caption_becomes_the_fallback_of_its_language(raw):
    assert captions.tidy_caption(raw) == captions.FALLBACK_CAPTIONS["en"] == "Medical image."
    assert captions.tidy_caption(raw, "es") == "Imagen médica."


def test_the_fallbacks_are_counted_and_an_unknown_language_is_refused():
    tidied, fallbacks = captions.tidy_captions(["CT of the chest.", "", "Medical image.", "the"])
    assert tidied == ["CT of the chest.", "Medical image.", "Medical image.", "Medical image."]
    assert fallbacks == 2                      # "" and "the"; a model that wrote the fallback is not one
    with pytest.raises(ValueError, match="language='fr'"):
        captions.tidy_caption("x", "fr")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab .,;:!?\"'«»“”\n\t-…")), max_size=30))
def test_a_tidied_caption_is_never_empty_and_passes_the_writer(tmp_path_factory, raw):
    tidy = captions.tidy_caption(raw)
    assert tidy and tidy == " ".join(tidy.split()) and any(ch.isalnum() for ch in tidy)
    path = tmp_path_factory.mktemp("captions") / "captions.csv"
    clef_files.write_captions(path, ["1"], {"1": tidy})
    assert clef_files.check_submission(path, ["1"], "captions") == []


# ------------------------------------------------------------------------------------------- ROUGE-1
def test_the_challenge_normalisation():
    assert captions.normalise_caption("Axial CT, 3.5 cm (left-sided) mass; 12 slices.") == \
        "axial ct numbernumber cm leftsided mass number slices"


def test_rouge1_matches_rouge_score_test_vectors():
    cases = json.loads(VECTORS.read_text(encoding="utf-8"))["rouge_score"]["inline_cases"]
    rouge1 = [c for c in cases if c["types"] == ["rouge1"]]
    assert rouge1
    for case in rouge1:
        expected = case["expected"]["rouge1"]["fmeasure"]
        assert captions.rouge1_f(case["prediction"], case["target"]) == pytest.approx(expected)


def test_rouge1_rules():
    assert captions.rouge1_f("CT, 3 mm", "ct 5 mm.") == 1.0                # case, digits and punctuation
    assert captions.rouge1_f("left-sided", "left sided") == 0.0            # a hyphen deleted, not a space
    assert captions.rouge1_f(".", "!!") == 1.0                             # both empty after normalisation
    assert captions.rouge1_f("", "CT of the chest") == 0.0
    assert captions.rouge1_f(" ", "") == 0.0                               # a space is not empty


def _restated(prediction: str, reference: str) -> float:
    """ROUGE-1 F restated: the challenge's normalisation, a-z0-9 tokens, clipped unigram overlap."""
    punctuation = str.maketrans("", "", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    norm = [re.sub(r"\d+", "number", t.lower()).translate(punctuation) for t in (prediction, reference)]
    if not norm[0] and not norm[1]:
        return 1.0
    tokens = [Counter(re.findall(r"[a-z0-9]+", n)) for n in norm]
    overlap = sum((tokens[0] & tokens[1]).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(tokens[0].values()), overlap / sum(tokens[1].values())
    return 2 * precision * recall / (precision + recall)


WORDS = st.lists(st.sampled_from(["CT", "ct", "chest", "the", "of", "3", "12mm", "left-sided", ",", ".", "é",
                                  "MRI", "mass", "(", " "]), max_size=8).map(" ".join)


@settings(max_examples=2000, deadline=None)
@given(prediction=WORDS, reference=WORDS)
def test_rouge1_equals_a_restatement(prediction, reference):
    assert math.isclose(captions.rouge1_f(prediction, reference), _restated(prediction, reference),
                        abs_tol=1e-12)


def test_per_image_scores_and_their_mean():
    predictions, references = ["CT of the chest", "MRI", "x"], ["CT of the chest", "MRI of the head", "y"]
    scores = captions.rouge1_scores(predictions, references)
    assert scores == [1.0, pytest.approx(0.4), 0.0]
    assert captions.mean_rouge1(predictions, references) == pytest.approx(1.4 / 3)
    assert captions.mean_rouge1([], []) is None
    with pytest.raises(ValueError, match="2 captions for 1 gold captions"):
        captions.rouge1_scores(["a", "b"], ["a"])
