"""Captions: a generated caption tidied for a submission, and ROUGE-1 F as ImageCLEFmedical computes it.

**Tidying** (:func:`tidy_caption`), in order: whitespace and line breaks collapsed to one space; a leading
label (``Caption:``, ``Pie de figura:``) removed; quotes that wrap the whole caption removed, and a lone
quote at either end; a sentence repeated right after itself dropped; a cut-off ending removed (a caption
that does not end with ``.``, ``!``, ``?`` or ``…`` loses the fragment after its last complete sentence;
a caption of one unfinished sentence loses trailing commas, dashes and dangling words such as ``of the``).
A caption left without a letter or digit becomes the fallback caption of its language
(:data:`FALLBACK_CAPTIONS`), so a submission never holds an empty caption; :func:`tidy_captions` counts
those. An abbreviation followed by a space (``e.g. a``) reads as a sentence end, so a cut-off caption may
lose the words after it.

**ROUGE-1** (:func:`rouge1_f`): both captions lower-cased, every run of digits replaced by ``number``,
ASCII punctuation (``string.punctuation``) deleted, in that order, then rouge-score's ``rouge1`` F-measure
without stemming; two captions that are both empty after that score 1. rouge-score's tokenizer keeps only
``a-z0-9`` runs, so accented letters split a word (ImageCLEF's captions are English). The challenge's score
is the mean over images (:func:`mean_rouge1`); :func:`rouge1_scores` gives the per-image values a paired
bootstrap resamples.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from functools import cache

FALLBACK_CAPTIONS = {"en": "Medical image.", "es": "Imagen médica."}
QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»"}
LONE_QUOTES = '"“”«»'  # removed alone at an end when unbalanced (not ' or ’: apostrophes)
CLOSING = "\"'”’»)]"
LABEL = re.compile(r"^(?:caption|pie de (?:foto|figura)|leyenda|descripci[oó]n)\s*:\s*", re.IGNORECASE)
SENTENCE_END = re.compile(r"[.!?…][" + re.escape(CLOSING) + r"]*(?=\s)")
FINISHED = re.compile(r"[.!?…][" + re.escape(CLOSING) + r"]*$")
DANGLING_PUNCTUATION = " ,;:-–—(/"
# Words an unfinished caption cannot end with (English and Spanish articles, prepositions, conjunctions).
DANGLING_WORDS = frozenset({
    "a", "an", "the", "of", "and", "or", "with", "without", "in", "on", "at", "to", "from", "by", "for",
    "showing", "demonstrating", "un", "una", "el", "la", "los", "las", "lo", "de", "del", "y", "o", "con",
    "sin", "en", "al", "por", "para", "que"})
DIGIT_RUNS = re.compile(r"\d+")
ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)


# ------------------------------------------------------------------------------------------- tidying
def _unbalanced(text: str, quote: str) -> bool:
    if quote == '"':
        return text.count('"') % 2 == 1
    opening, closing = ("“", "”") if quote in "“”" else ("«", "»")
    return text.count(opening) != text.count(closing)


def _unquote(text: str) -> str:
    """Without quotes that wrap the whole text (none of that kind inside), nor a lone quote at either end."""
    while len(text) >= 2 and QUOTE_PAIRS.get(text[0]) == text[-1] \
            and text[0] not in text[1:-1] and text[-1] not in text[1:-1]:
        text = text[1:-1].strip()
    if text[:1] and text[0] in LONE_QUOTES and _unbalanced(text, text[0]):
        text = text[1:].lstrip()
    if text[-1:] and text[-1] in LONE_QUOTES and _unbalanced(text, text[-1]):
        text = text[:-1].rstrip()
    return text


def _sentences(text: str) -> list[str]:
    """The text cut after each sentence end (the last piece may be unfinished)."""
    pieces, start = [], 0
    for match in SENTENCE_END.finditer(text):
        pieces.append(text[start:match.end()].strip())
        start = match.end()
    rest = text[start:].strip()
    return [p for p in pieces if p] + ([rest] if rest else [])


def _without_repeats(sentences: list[str]) -> list[str]:
    kept: list[str] = []
    for sentence in sentences:
        if not kept or sentence.casefold() != kept[-1].casefold():
            kept.append(sentence)
    return kept


def _finish(sentences: list[str]) -> str:
    """The complete sentences, or the one unfinished sentence without its dangling end."""
    if len(sentences) > 1 and not FINISHED.search(sentences[-1]):
        sentences = sentences[:-1]
    text = " ".join(sentences)
    if FINISHED.search(text):
        return text
    words = text.rstrip(DANGLING_PUNCTUATION).split(" ")
    while words and (words[-1].casefold() in DANGLING_WORDS or not words[-1].strip(DANGLING_PUNCTUATION)):
        words.pop()
    return " ".join(words).rstrip(DANGLING_PUNCTUATION)


def tidy_caption(text: str | None, language: str = "en") -> str:
    """A generated caption made consistent for a submission (the module's rules); never empty.

    Args:
        language: the caption's language, which picks the fallback caption (``en`` or ``es``).

    Returns:
        The tidied caption on one line, or ``FALLBACK_CAPTIONS[language]`` when nothing is left.
    """
    if language not in FALLBACK_CAPTIONS:
        raise ValueError(f"language={language!r}; use one of {sorted(FALLBACK_CAPTIONS)}")
    text = LABEL.sub("", " ".join(str(text or "").split()))
    text = _unquote(text)
    text = _finish(_without_repeats(_sentences(text))) if text else ""
    return text if any(ch.isalnum() for ch in text) else FALLBACK_CAPTIONS[language]


def tidy_captions(texts: Sequence[str | None], language: str = "en") -> tuple[list[str], int]:
    """Every caption tidied, and how many became the fallback caption (to report in a job's summary)."""
    tidied = [tidy_caption(text, language) for text in texts]
    fallbacks = sum(1 for raw, text in zip(texts, tidied)
                    if text == FALLBACK_CAPTIONS[language] and " ".join(str(raw or "").split()) != text)
    return tidied, fallbacks


# ------------------------------------------------------------------------------------------- ROUGE-1
def normalise_caption(text: str) -> str:
    """The challenge's normalisation: lower case, digit runs -> ``number``, ASCII punctuation deleted."""
    return DIGIT_RUNS.sub("number", str(text).lower()).translate(ASCII_PUNCTUATION)


@cache
def _rouge1_scorer():
    from rouge_score import rouge_scorer  # imports nltk (about 1.5 s): only when captions are scored

    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)


def rouge1_f(prediction: str, reference: str) -> float:
    """ROUGE-1 F of one caption against its gold caption, after :func:`normalise_caption` on both."""
    prediction, reference = normalise_caption(prediction), normalise_caption(reference)
    if not prediction and not reference:
        return 1.0
    return float(_rouge1_scorer().score(reference, prediction)["rouge1"].fmeasure)


def rouge1_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-image ROUGE-1 F, in order: the values a paired bootstrap (``eval.bootstrap``) resamples."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} captions for {len(references)} gold captions; give one each")
    return [rouge1_f(p, r) for p, r in zip(predictions, references)]


def mean_rouge1(predictions: Sequence[str], references: Sequence[str]) -> float | None:
    """The challenge's ROUGE-1 score: the mean per-image F (``None`` without images)."""
    scores = rouge1_scores(predictions, references)
    return sum(scores) / len(scores) if scores else None
