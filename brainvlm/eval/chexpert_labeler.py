"""The CheXpert labeler's CheXpert-14 labels of free report text, by rules: mentions, negation, uncertainty,
aggregation.

Results are named "CheXpert-14 (rule)": this is not CheXbert. Why rules written here: the CheXpert labeler
(stanfordmlgroup/chexpert-labeler, MIT) and NegBio, which it runs on, are not installable from PyPI (they
need a Python 3.6 conda environment, the BLLIP parser and its GENIA+PubMed model, downloaded at first use),
and CheXbert, RadGraph and their pip packages fetch weights from a model hub at run time. So brainvlm
follows the labeler's own definitions without its parser:

1. **Mentions** (``chexpert_rules.find_mentions``): the labeler's phrase lists, vendored unchanged in
   ``chexpert_phrases/``, matched as it matches them (case-insensitive substrings of the cleaned text, so
   "atelecta" finds "atelectasis" and "effusion" finds "effusions"), except where an unmention of the same
   observation overlaps ("calcified nodule" is no Lung Lesion; "pericardial effusion" no Pleural Effusion;
   "over the heart" no Cardiomegaly).
2. **Negation and uncertainty** (``chexpert_rules.classify``): the labeler's dependency patterns as rules
   on the words around each mention, each citing its pattern lines, in the labeler's order: pre-negation
   uncertainty ("cannot exclude", "no new"), negation ("no", "without", "normal", "within normal limits",
   "clear of", "has resolved", "removed", "no ... to suggest"), post-negation uncertainty ("possible",
   "may represent", "concerning for", "X or Y", "vascular congestion", "stable heart size").
3. **Aggregation** (the labeler's ``stages/aggregate.py``): per observation, one mention keeps its label;
   several combine as negative + uncertain -> uncertain, else negative + positive -> positive, else
   uncertain + positive -> positive (so 0, -1 and 1 together give -1, as there). A positive or uncertain
   "chf"/"heart failure" (an Edema mention) adds an uncertain Cardiomegaly mention. **No Finding** is 1
   when no mention other than of Support Devices is positive or uncertain; mentions of the labeler's
   "other findings" (``mention/no_finding.txt``: emphysema, hyperinflation, granuloma, calcification,
   scoliosis ...) count, but give no label of their own. No Finding is never 0; with nothing mentioned it
   is 1. Observations without a mention are blank (left out of the result).

What rules without a dependency parser still get wrong (where this labeler and CheXpert can differ):

- Scope is guessed from words, not from the parse: a cue reaches a mention across a few words or along a
  list and stops at words that start a new statement. "Normal heart and bibasilar atelectasis" negates
  the atelectasis here; the parse decides there.
- Conjunctions: CheXpert propagates negation and modifiers along the parse's conjunctions; here "no" reaches
  along a comma list, "X or Y" counts only when both are mentions ("new or worsening effusion" stays
  positive here).
- Sentences are split at ``. ? !`` (CheXpert uses NLTK's sentence splitter), so an abbreviation with a
  period ends a sentence here.
- Patterns needing the parse's part-of-speech or heads ("{tag:/V.*/}", "dobj", "nsubjpass") are
  approximated by a fixed phrase; an unusual word order misses them.
- Kept on purpose because CheXpert does the same: substrings match inside other words ("tube" in
  "tuberosity" is a Support Device); "X is not seen" has no negation pattern and stays positive;
  "absence of X" and "likely X" are positive; "suggestive of X" is positive (the labeler's detector does
  not add NegBio's "suggestive of" rule); "no new X" is uncertain.
"""

from __future__ import annotations

from collections.abc import Mapping

from brainvlm.eval.answers import CHEXPERT_14
from brainvlm.eval.chexpert_rules import (
    CARDIOMEGALY,
    HEART_FAILURE,
    MENTIONS,
    NO_FINDING,
    SUPPORT_DEVICES,
    classify,
    clean_report,
    find_mentions,
    sentences,
)

__all__ = ["CHEXPERT_14", "MENTIONS", "OBSERVATIONS", "aggregate", "agreement", "label_report", "mention_labels"]

# The labeler's column order (its constants.CATEGORIES), used by ``brainvlm label-reports``.
OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity",
                "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                "Pleural Other", "Fracture", "Support Devices")
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1


def mention_labels(text: str | None) -> list[dict]:
    """Every mention of a report with its label and the rule that gave it, in reading order.

    Returns:
        ``{"sentence", "observation", "phrase", "text", "label", "rule"}`` per mention; ``text`` is the
        mention's words in the cleaned sentence, ``rule`` the labeler's pattern lines (``negation.txt:155``).
    """
    rows = []
    for sentence in sentences(clean_report(text or "")):
        found = find_mentions(sentence)
        for mention in sorted(found, key=lambda m: (m.start, m.observation)):
            label, rule = classify(sentence, mention, [m for m in found if m is not mention])
            rows.append({"sentence": sentence, "observation": mention.observation, "phrase": mention.phrase,
                         "text": sentence[slice(*mention.words)], "label": label, "rule": rule})
    return rows


def aggregate(values: list[int]) -> int | None:
    """One observation's label from its mentions' labels, as the labeler's ``stages/aggregate.py`` combines
    them: a single label stays; 0 with -1 -> -1 (checked first); else 0 with 1 -> 1; else -1 with 1 -> 1;
    else (all alike) that label. No mention is blank (None)."""
    if not values:
        return None
    if NEGATIVE in values and UNCERTAIN in values:
        return UNCERTAIN
    if POSITIVE in values and (NEGATIVE in values or UNCERTAIN in values):
        return POSITIVE
    return values[0]


def collect(rows: list[dict]) -> tuple[dict[str, list[int]], bool]:
    """Mention labels per observation (No Finding's "other findings" left out, the CHF rule applied) and
    whether the report has no finding: no positive or uncertain mention but of Support Devices."""
    by_observation: dict[str, list[int]] = {}
    no_finding = True
    for row in rows:
        name, label = row["observation"], row["label"]
        if name != SUPPORT_DEVICES and label in (POSITIVE, UNCERTAIN):
            no_finding = False
        if name == NO_FINDING:
            continue
        if label in (POSITIVE, UNCERTAIN) and row["phrase"] in HEART_FAILURE:
            by_observation.setdefault(CARDIOMEGALY, []).append(UNCERTAIN)
        by_observation.setdefault(name, []).append(label)
    return by_observation, no_finding


def label_report(text: str | None) -> dict[str, int]:
    """CheXpert-14 labels of a free-text report: ``{observation: 1 | 0 | -1}`` in ``CHEXPERT_14`` order,
    blank observations left out (see the module for how)."""
    by_observation, no_finding = collect(mention_labels(text))
    labels = {name: aggregate(values) for name, values in by_observation.items()}
    if no_finding:
        labels[NO_FINDING] = POSITIVE
    return {name: labels[name] for name in CHEXPERT_14 if labels.get(name) is not None}


def agreement(reports: list[str], references: list[Mapping[str, int]]) -> dict[str, dict[str, float]]:
    """Per observation, the share of reports whose rule label equals the reference label (blank = None).

    Returns:
        observation -> ``{"agreement": share, "n": reports where either side is not blank}``.
    """
    out = {}
    predicted = [label_report(text) for text in reports]
    for name in CHEXPERT_14:
        pairs = [(p.get(name), r.get(name)) for p, r in zip(predicted, references)
                 if p.get(name) is not None or r.get(name) is not None]
        out[name] = {"agreement": (sum(a == b for a, b in pairs) / len(pairs)) if pairs else float("nan"),
                     "n": len(pairs)}
    return out
