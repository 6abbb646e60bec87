"""Medical VQA scores (VQA-RAD, SLAKE, PathVQA style): closed-question accuracy and open-question recall.

Answers are compared after ``normalize_answer``: lower case, punctuation to spaces (a decimal point
inside a number is kept), the articles a/an/the dropped, number words zero..ten written as digits.

| metric | questions | definition |
| --- | --- | --- |
| closed_accuracy | CLOSED | reference yes/no: the yes/no read from the free-text answer (``answers.parse_yes_no``: the leading yes/no word, else the only one of the two) equals it; other references: normalised exact match. Unparseable or missing = wrong |
| closed_accuracy_llava_med_script | CLOSED | the figure LLaVA-Med's ``llava/eval/run_eval.py`` prints as "yes/no accuracy" (see ``llava_med_script_closed_hit``); it skips questions, so it is not an accuracy |
| open_recall | OPEN | share of the reference's normalised words found in the answer (clipped counts), the "open" figure of LLaVA-Med's tables; a hyphenated reference word (``T2-weighted``) counts only where its parts stand together, in order, in the answer (``T2-weighted`` or ``T2 weighted``) |
| open_recall_llava_med_script | OPEN | the "recall" LLaVA-Med's ``run_eval.py`` prints (see ``llava_med_script_recall``): hyphens split words, a word repeated in the answer counts each time |
| open_exact_match, exact_match | OPEN, all | normalised answer equals normalised reference |
| open_token_f1, token_f1 | OPEN, all | SQuAD-style token F1 with clipped counts |

``answer_type`` is compared after stripping whitespace and upper-casing (VQA-RAD has ``"CLOSED "`` rows).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from brainvlm.eval.answers import parse_yes_no

YES_NO = {"yes": ["yes"], "no": ["no"]}
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"(?!(?<=\d)\.(?=\d))[^\w\s]|_")
_PUNCT_BUT_JOINING_HYPHEN = re.compile(r"(?!(?<=\d)\.(?=\d))(?!(?<=[^\W_])-(?=[^\W_]))[^\w\s]|_")
# The LLaVA-Med script's punctuation list; '.' and ',' are handled separately there.
_SCRIPT_PUNCT = ';/[]"{}()=+\\_->< @`,?!'.replace(" ", "")


def normalize_answer(text: str | None) -> str:
    """Lower-case, punctuation-free, article-free answer with number words as digits."""
    words = _PUNCT.sub(" ", (text or "").lower()).split()
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words if w not in _ARTICLES)


def reference_units(text: str | None) -> list[tuple[str, ...]]:
    """The words of a reference as ``normalize_answer`` writes them, a hyphenated word kept as one unit.

    ``"T2-weighted image"`` -> ``[("t2", "weighted"), ("image",)]``: the parts of a compound are one
    finding, so recall must not credit them when they turn up apart ("T1-weighted, T2").
    """
    units = []
    for word in _PUNCT_BUT_JOINING_HYPHEN.sub(" ", (text or "").lower()).split():
        parts = tuple(_NUMBER_WORDS.get(p, p) for p in word.split("-") if p and p not in _ARTICLES)
        if parts:
            units.append(parts)
    return units


def _occurrences(unit: tuple[str, ...], words: list[str]) -> int:
    """How often ``unit`` stands in ``words`` as consecutive words (non-overlapping)."""
    count, i, n = 0, 0, len(unit)
    while i + n <= len(words):
        if tuple(words[i:i + n]) == unit:
            count, i = count + 1, i + n
        else:
            i += 1
    return count


def unit_recall(reference: str | None, prediction: str | None) -> float:
    """Share of the reference's units (``reference_units``) found in the answer, clipped counts."""
    units, words = reference_units(reference), normalize_answer(prediction).split()
    if not units:
        return float(not words)
    found = sum(min(n, _occurrences(unit, words)) for unit, n in Counter(units).items())
    return found / len(units)


def token_scores(reference: str | None, prediction: str | None) -> dict[str, float]:
    """Exact match, token precision/F1 of normalised answers (clipped token counts) and ``unit_recall``.

    ``token_f1`` is SQuAD's, from the plain token overlap; ``recall`` is the open-question recall, where a
    hyphenated reference word must appear whole.
    """
    ref, pred = normalize_answer(reference).split(), normalize_answer(prediction).split()
    overlap = sum((Counter(ref) & Counter(pred)).values())
    token_recall = overlap / len(ref) if ref else float(not pred)
    precision = overlap / len(pred) if pred else float(not ref)
    f1 = 2 * precision * token_recall / (precision + token_recall) if precision + token_recall else 0.0
    return {"exact_match": float(ref == pred), "precision": precision,
            "recall": unit_recall(reference, prediction), "token_f1": f1}


def closed_correct(reference: str | None, prediction: str | None) -> tuple[bool, bool]:
    """Whether a closed answer is right, and whether it was parseable.

    Yes/no references are compared with the yes/no the answer states (``answers.parse_yes_no``: the
    leading word, else the only one of the two in the answer); other references need a normalised exact match.
    """
    ref = normalize_answer(reference)
    if ref in YES_NO:
        stated = parse_yes_no(prediction)
        return stated == ref, stated is not None
    pred = normalize_answer(prediction)
    return pred == ref, bool(pred)


def llava_med_script_normalize(text: str) -> str:
    """Re-implementation of LLaVA-Med's ``normalize_word`` (its ``eval_metrics/glossary.py``), quirks kept.

    Punctuation is deleted where the text has it next to a space (or has a digit,digit) and replaced by
    a space elsewhere; periods not followed by a digit are deleted (at most 32: the script passes
    ``re.UNICODE`` as the count); number words become digits; articles are dropped; commas removed.
    Its contraction table is left out: it only adds apostrophes to words such as ``dont``, which cannot
    change the yes/no substring tests this function serves.
    """
    out = text
    keep_together = re.search(r"\d,\d", text) is not None
    for p in _SCRIPT_PUNCT:
        out = out.replace(p, "" if (p + " " in text or " " + p in text or keep_together) else " ")
    out = re.sub(r"\.(?!\d)", "", out, count=32)
    words = [_NUMBER_WORDS.get(w, w) for w in out.lower().split()]
    return " ".join(w for w in words if w not in _ARTICLES).replace(",", "")


def llava_med_script_closed_hit(reference: str | None, prediction: str | None) -> float:
    """One closed question as LLaVA-Med's ``run_eval.py`` scores it: 1.0, 0.0 or NaN (skipped).

    After lower-casing and ``llava_med_script_normalize``: if the answer contains the substring "yes" or
    "no" (so "normal" and "nodule" count), it scores 1 when the reference is a substring of it and is
    *skipped* otherwise; an answer with neither substring scores 0. Skipping the wrong yes/no answers
    inflates the figure, which is why it is reported apart from ``closed_accuracy``.
    """
    ref = llava_med_script_normalize((reference or "").lower())
    pred = llava_med_script_normalize((prediction or "").lower())
    if "yes" in pred or "no" in pred:
        return 1.0 if ref in pred else math.nan
    return 0.0


def llava_med_script_recall(reference: str | None, prediction: str | None) -> float:
    """One open question's recall as LLaVA-Med's ``run_eval.py`` computes it (``calculate_f1score``).

    Both texts are lower-cased and normalised with ``llava_med_script_normalize`` (twice, as the script
    does); words are split at whitespace. True positives count every occurrence *in the answer* of a
    reference word (not clipped: "left left left" against "left lung" gives 3 / 4); false negatives are
    the reference words absent from the answer. An empty answer or reference, or no shared word, gives 0.
    Unlike ``unit_recall``, hyphens split words, so the parts of "T2-weighted" may be found apart. The
    script's contraction table (``dont`` read as ``don't``) is left out: "dont" and "don't" are two
    words here and one there, the only way the two figures can differ.
    """
    ref = llava_med_script_normalize(llava_med_script_normalize((reference or "").lower()))
    pred = llava_med_script_normalize(llava_med_script_normalize((prediction or "").lower()))
    ref_counts, pred_counts = Counter(ref.split()), Counter(pred.split())
    if not ref_counts or not pred_counts:
        return 0.0
    hits = sum(n for word, n in pred_counts.items() if word in ref_counts)
    misses = sum(n for word, n in ref_counts.items() if word not in pred_counts)
    return hits / (hits + misses) if hits else 0.0


def normalize_answer_type(value: object) -> str:
    """``"CLOSED "`` -> ``"CLOSED"``; anything that is not CLOSED or OPEN after stripping is an error."""
    kind = str(value).strip().upper()
    if kind not in ("CLOSED", "OPEN"):
        raise ValueError(f"answer_type {value!r} is neither CLOSED nor OPEN; set metadata.answer_type to one of them")
    return kind


def vqa_sample_scores(reference: str | None, prediction: str | None, answer_type: object) -> dict[str, object]:
    """Per-question columns: answer_type, correct (closed questions; NaN for open), parse_ok,
    llava_med_script_hit (closed), llava_med_script_recall (open) and the token scores."""
    kind = normalize_answer_type(answer_type)
    row: dict[str, object] = {"answer_type": kind, **token_scores(reference, prediction)}
    if kind == "CLOSED":
        correct, parsed = closed_correct(reference, prediction)
        row.update(correct=correct, parse_ok=parsed,
                   llava_med_script_hit=llava_med_script_closed_hit(reference, prediction),
                   llava_med_script_recall=math.nan)
    else:
        row.update(correct=math.nan, parse_ok=bool(normalize_answer(prediction)),
                   llava_med_script_hit=math.nan,
                   llava_med_script_recall=llava_med_script_recall(reference, prediction))
    return row


def _mean(values: pd.Series) -> float:
    return float(values.astype(float).mean()) if len(values) else math.nan


def vqa_metrics(table: pd.DataFrame) -> dict[str, float | int]:
    """Aggregate ``vqa_sample_scores`` columns of a score table into the metrics of the module table."""
    closed = table[table["answer_type"] == "CLOSED"]
    opened = table[table["answer_type"] == "OPEN"]
    script = closed["llava_med_script_hit"].astype(float)
    scored = script.dropna()
    return {
        "closed_accuracy": _mean(closed["correct"]),
        "closed_accuracy_llava_med_script": float(scored.mean()) if len(scored) else 0.0,
        "n_closed_llava_med_script_scored": len(scored),
        "open_recall": _mean(opened["recall"]),
        "open_recall_llava_med_script": _mean(opened["llava_med_script_recall"]),
        "open_exact_match": _mean(opened["exact_match"]),
        "open_token_f1": _mean(opened["token_f1"]),
        "exact_match": _mean(table["exact_match"]),
        "token_f1": _mean(table["token_f1"]),
        "n_closed": len(closed),
        "n_open": len(opened),
    }


def is_yes_no(references: Sequence[str]) -> np.ndarray:
    """Which references are a plain yes or no after normalisation."""
    return np.array([normalize_answer(r) in YES_NO for r in references], dtype=bool)
