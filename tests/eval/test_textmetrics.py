"""BLEU/METEOR/ROUGE-L/CIDEr against pycocoevalcap's reference values; one METEOR JVM for the module."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from brainvlm.eval import textmetrics
from brainvlm.eval.textmetrics import METRIC_NAMES, TextScorer, bleu_from_stats, sanitize_text

TOLERANCE = {"METEOR": 1e-3}  # everything else: 1e-6


@pytest.fixture(scope="module")
def vectors(test_data) -> dict:
    return json.loads((test_data / "caption_metric_vectors" / "metric_test_vectors.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def scorer():
    """One JVM for every METEOR score in this module (it takes seconds to start)."""
    with TextScorer(tokenize="none") as shared:
        yield shared


def _coco_cases(vectors: dict) -> list[dict]:
    return vectors["pycocoevalcap_via_nlg_eval"]["cases"]


def test_every_pycocoevalcap_vector_matches(vectors, scorer):
    checked = 0
    for case in _coco_cases(vectors):
        got = scorer.scores(scorer.prepare(case["hypotheses"], case["references"]))
        for name, expected in case["expected"].items():
            if name not in METRIC_NAMES:
                continue  # SPICE is not computed
            assert got[name] == pytest.approx(expected, abs=TOLERANCE.get(name, 1e-6)), (case["name"], name)
            checked += 1
    assert checked == 25  # 7 + 7 + 7 + 4 expected values over the four cases


def test_nlgeval_example_files_give_the_readme_scores(test_data, vectors, scorer):
    folder = test_data / "caption_metric_vectors"
    read = lambda name: [line.strip() for line in (folder / name).read_text(encoding="utf-8").splitlines()]
    hypotheses = read("nlgeval_examples_hyp.txt")
    references = [list(pair) for pair in zip(read("nlgeval_examples_ref1.txt"), read("nlgeval_examples_ref2.txt"))]
    got = scorer.scores(scorer.prepare(hypotheses, references))
    expected = next(c for c in _coco_cases(vectors) if c["name"] == "readme_corpus")["expected"]
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(expected[name], abs=TOLERANCE.get(name, 1e-6)), name


def test_subsets_are_scored_as_their_own_corpus(scorer):
    hyps = ["a small lesion in the left lobe", "no acute findings", "large effusion on the right",
            "normal chest", "mass in the left lobe"]
    refs = [["small left lobe lesion"], ["no acute abnormality"], ["right pleural effusion, large"],
            ["normal chest radiograph"], ["left lobe mass"]]
    corpus = scorer.prepare(hyps, refs)
    rows = [0, 2, 4]
    alone = scorer.scores(scorer.prepare([hyps[i] for i in rows], [refs[i] for i in rows]))
    subset = scorer.scores(corpus, rows=rows)
    assert subset == pytest.approx(alone)   # CIDEr's IDF and METEOR's aggregate come from the subset
    assert subset["CIDEr"] != pytest.approx(scorer.scores(corpus)["CIDEr"])


def test_text_bootstrap_is_seeded_and_brackets_the_point(scorer):
    hyps = ["the heart is enlarged", "no effusion", "a fracture of the rib", "clear lungs"] * 3
    refs = [["the heart is enlarged"], ["small effusion"], ["rib fracture"], ["lungs are clear"]] * 3
    units = [f"s{i % 4}" for i in range(len(hyps))]
    corpus = scorer.prepare(hyps, refs)
    first = scorer.bootstrap(corpus, units, n_boot=40, seed=1)
    assert first == scorer.bootstrap(corpus, units, n_boot=40, seed=1)
    point = scorer.scores(corpus)
    assert first["Bleu_1"]["point"] == point["Bleu_1"] and first["CIDEr"]["point"] == point["CIDEr"]
    assert first["METEOR_segment_mean"]["point"] == pytest.approx(float(np.mean(corpus.meteor_segments)))
    assert all(ci["lo"] <= ci["point"] <= ci["hi"] for ci in first.values())
    assert first["ROUGE_L"]["n_units"] == 4


def test_protocol_breaking_text_is_sanitised(scorer):
    assert sanitize_text(" a|||b\n\tc\r\x00d \u2028e ") == "a b c d e"
    nasty = "the lesion|||is\nlarge\r\x07 \u200b"
    got = scorer.scores(scorer.prepare([nasty, "ok"], [["the lesion is large", "a ||| b"], ["ok"]]))
    assert 0.0 < got["METEOR"] <= 1.0
    after = scorer.scores(scorer.prepare(["this is a good test"], [["this is a test", "this is also a test"]]))
    assert after["METEOR"] == pytest.approx(0.44434387, abs=1e-6)   # the JVM is still in step


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_sanitised_text_has_no_protocol_characters(text):
    clean = sanitize_text(text)
    assert "|||" not in clean and "  " not in clean and clean == clean.strip()
    assert not any(ch in clean for ch in "\n\r\t\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


_SENTENCE = st.lists(st.sampled_from(["a", "the", "lesion", "is", "left", "small", "no", "mass"]),
                     min_size=0, max_size=8).map(" ".join)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_SENTENCE, st.lists(_SENTENCE, min_size=1, max_size=3)), min_size=1, max_size=6))
def test_bleu_and_cider_equal_pycocoevalcap(corpus):
    scorer = TextScorer(tokenize="none", meteor=False)
    hyps, refs = [h for h, _ in corpus], [r for _, r in corpus]
    got = scorer.scores(scorer.prepare(hyps, refs))
    gts, res = {i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
    assert [got[f"Bleu_{k}"] for k in range(1, 5)] == pytest.approx(bleu, abs=1e-12)
    if any(r.split() for refs_ in refs for r in refs_):
        assert got["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)


def test_bleu_of_an_empty_corpus_is_zero():
    assert bleu_from_stats(np.zeros((0, 10))) == [0.0, 0.0, 0.0, 0.0]


def test_ptb_tokenisation_as_in_pycocoevalcap():
    texts = ["", "A man, riding a horse.", 'The dog\'s "toy" (big) -- isn\'t it?', "Le test est en français.", ""]
    expected = ["", "a man riding a horse",
                "the dog 's toy -lrb- big -rrb- is n't it",   # pycocoevalcap drops only "-LRB-" upper case
                "le test est en français", ""]
    assert textmetrics.ptb_tokenize(texts, textmetrics.java_path()) == expected
    assert textmetrics.ptb_tokenize(["line one\nline two"], textmetrics.java_path()) == ["line one line two"]


def test_meteor_unavailable_without_java(monkeypatch):
    monkeypatch.setattr(textmetrics, "java_path", lambda: None)
    with TextScorer(tokenize="none") as scorer:
        corpus = scorer.prepare(["a small mass"], [["a small mass"]])
        got = scorer.scores(corpus)
        ci = scorer.bootstrap(corpus, ["s1"], n_boot=5)
    assert got["METEOR"] is None and "java not found" in got["METEOR_unavailable"]
    assert got["Bleu_1"] == pytest.approx(1.0) and got["ROUGE_L"] == 1.0
    assert ci["METEOR_segment_mean"]["point"] is None
    with pytest.raises(RuntimeError, match="tokenize='none'"):
        TextScorer(tokenize="ptb")


def test_meteor_can_be_switched_off():
    got = textmetrics.caption_metrics(["a b c"], [["a b c"]], tokenize="none", meteor=False)
    assert got["METEOR"] is None and "not requested" in got["METEOR_unavailable"]
    assert not math.isnan(got["CIDEr"])
