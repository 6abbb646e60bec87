"""A rule-based CheXpert-14 labeler of free report text: mentions, negation, uncertainty, report aggregation.

Results are named "CheXpert-14 (rule)": this is not CheXbert. No model-based labeler runs offline here
(CheXbert, RadGraph and their pip packages fetch weights from a model hub at run time), and the original
CheXpert labeler (NegBio) is not on PyPI, so brainvlm labels with its own rules, over phrase lists that
follow the observation definitions of the CheXpert labeler (stanfordmlgroup/chexpert-labeler, MIT).

How a report is labelled:

1. The text is cut into sentences (``.``, ``;``, ``?``, ``!``, line breaks) and each sentence into
   clauses at "but", "however", "although", "though", "while", "whereas" and "which".
2. Every mention of an observation (``MENTIONS``, word-bounded, case-insensitive; longer phrases first,
   no mention inside another) gets a label: **-1 (uncertain)** when an uncertainty cue stands before it in
   its clause ("possible", "may represent", "cannot exclude", "concerning for", "versus"...) or after it
   ("cannot be excluded", "is not excluded", "is possible"), or when mentions are joined by "or"/"versus"
   after an uncertainty cue; **0 (negative)** when a negation cue stands before it in its clause ("no",
   "without", "negative for", "resolution of"...) or after it ("is not seen", "has resolved", "removed");
   **1 (positive)** otherwise. A negated list runs to the end of the clause: "No pleural effusion or
   pneumothorax." negates both.
3. A report's label per observation aggregates its mentions as the CheXpert labeler does: positive beats
   uncertain beats negative (0 with -1 -> -1; 0 with 1 -> 1; -1 with 1 -> 1). A positive or uncertain
   "CHF"/"heart failure" adds an uncertain Cardiomegaly mention. **No Finding** is 1 only when no
   observation other than Support Devices is 1 or -1; it is never 0 (blank otherwise).

Observations without a mention are blank (left out of the result), as in CheXpert.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from brainvlm.eval.answers import CHEXPERT_14

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"

MENTIONS: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis", "atelectases", "atelectatic", "collapse", "collapsed"),
    "Cardiomegaly": ("cardiomegaly", "enlarged heart", "heart is enlarged", "heart size is enlarged",
                     "enlarged cardiac silhouette", "cardiac silhouette is enlarged", "cardiac enlargement",
                     "enlargement of the cardiac silhouette", "heart size is increased"),
    "Consolidation": ("consolidation", "consolidations", "consolidative"),
    "Edema": ("edema", "oedema", "pulmonary vascular congestion", "vascular congestion",
              "interstitial prominence", "fluid overload", "vascular engorgement"),
    "Enlarged Cardiomediastinum": ("widened mediastinum", "mediastinal widening", "widening of the mediastinum",
                                   "enlarged cardiomediastinal silhouette", "cardiomediastinal enlargement",
                                   "mediastinal enlargement", "enlarged mediastinum"),
    "Fracture": ("fracture", "fractures", "fractured"),
    "Lung Lesion": ("nodule", "nodules", "nodular opacity", "nodular opacities", "nodular density", "mass", "masses", "lesion", "lesions", "tumor", "tumour",
                    "neoplasm", "cavitary lesion", "granuloma", "granulomas"),
    "Lung Opacity": ("opacity", "opacities", "opacification", "opacifications", "infiltrate", "infiltrates",
                     "infiltration", "airspace disease", "air space disease", "haziness", "hazy",
                     "ground-glass", "ground glass", "reticular markings", "interstitial markings"),
    "Pleural Effusion": ("pleural effusion", "pleural effusions", "effusion", "effusions", "pleural fluid",
                         "hydrothorax", "fluid in the pleural space", "blunting of the costophrenic angle",
                         "blunting of the costophrenic angles", "costophrenic angle blunting"),
    "Pleural Other": ("pleural thickening", "pleural plaque", "pleural plaques", "pleural scarring",
                      "fibrothorax", "pleural calcification"),
    "Pneumonia": ("pneumonia", "pneumonias", "infectious process", "infection", "bronchopneumonia"),
    "Pneumothorax": ("pneumothorax", "pneumothoraces", "pneumothoraxes"),
    "Support Devices": ("endotracheal tube", "et tube", "enteric tube", "nasogastric tube", "ng tube",
                        "og tube", "feeding tube", "chest tube", "tracheostomy tube", "tracheostomy",
                        "picc line", "picc", "central line", "central venous catheter", "catheter",
                        "swan-ganz", "pacemaker", "pacer", "defibrillator", "pacing leads", "pacer leads",
                        "sternotomy wires", "sternal wires", "wires", "clips", "stent", "port-a-cath",
                        "port", "valve replacement", "prosthetic valve", "drain", "tube", "line", "device",
                        "devices", "hardware"),
}
# Phrases that deny an observation in positive words ("heart size is normal" says: no cardiomegaly).
NORMAL_PHRASES: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("heart size is normal", "normal heart size", "heart is normal in size", "heart is not enlarged",
                     "heart size is not enlarged", "cardiac silhouette is not enlarged",
                     "heart size is within normal limits", "cardiac silhouette is normal",
                     "normal cardiac silhouette", "heart size is top normal"),
    "Enlarged Cardiomediastinum": ("cardiomediastinal silhouette is normal", "normal cardiomediastinal silhouette",
                                   "mediastinal contours are normal", "normal mediastinal contours",
                                   "cardiomediastinal contours are normal", "mediastinum is normal",
                                   "mediastinum is not widened"),
    "Lung Opacity": ("lungs are clear", "clear lungs", "lungs are well expanded and clear"),
}
HEART_FAILURE = ("chf", "congestive heart failure", "heart failure")

_NEGATION_BEFORE = (r"\bno\b", r"\bnot\b", r"\bwithout\b", r"\bnegative for\b", r"\bfree of\b", r"\babsence of\b",
                    r"\babsent\b", r"\bclear of\b", r"\bresolution of\b", r"\bresolved\b", r"\bremoval of\b",
                    r"\bnor\b", r"\bneither\b", r"\bdenies\b", r"\bexclude[sd]?\b(?! from)", r"\bruled out\b",
                    r"\bwithout evidence of\b", r"\bno evidence of\b", r"\bno signs? of\b")
_NEGATION_AFTER = ((r"^\s*(?:is|are|has|have)?\s*(?:been\s+)?(?:not (?:seen|identified|present|visualized|"
                    r"appreciated|demonstrated|evident)|absent|resolved|removed|no longer (?:seen|present|"
                    r"visualized))\b"), r"^\s*(?:has|have)\s+(?:since\s+)?(?:been\s+)?(?:resolved|removed)\b")
_UNCERTAIN_BEFORE = (r"\bpossible\b", r"\bpossibly\b", r"\bprobable\b", r"\bprobably\b", r"\bmay\b", r"\bmight\b",
                     r"\bcould\b", r"\bquestionable\b", r"\bquestion of\b", r"\bsuspicious for\b", r"\bsuspected\b",
                    r"\bconcerning for\b", r"\bconcern for\b", r"\bsuggest(?:s|ive of|ing)?\b", r"\bcannot exclude\b",
                     r"\bcan ?not be excluded\b", r"\bcannot rule out\b", r"\bversus\b", r"\bvs\.?(?=\s)",
                     r"\bdifferential\b", r"\bequivocal\b", r"\bborderline\b", r"\bnot excluded\b",
                     r"\bmay represent\b", r"\bcould represent\b", r"\bpotential\b", r"\bvague\b",
                     r"\bpresumed\b", r"\bcompatible with\b", r"\bconsistent with\b(?=.*\b(?:or|versus)\b)")
_UNCERTAIN_AFTER = (r"^\s*(?:can ?not|could not|cannot) be (?:excluded|ruled out)\b",
                    r"^\s*(?:is|are) not (?:excluded|ruled out)\b",
                    r"^\s*(?:is|are) (?:possible|suspected|questioned|not entirely excluded)\b",
                    r"^\s*versus\b", r"^\s*vs\.?(?=\s)",
                    r"^\s*(?:is|are) (?:a )?(?:possibility|consideration)\b")
_SENTENCE = re.compile(r"[.;!?](?=\s|$)|\n")
_CLAUSE = re.compile(r"\b(?:but|however|although|though|while|whereas|which)\b|,\s*(?:and|with)\s+(?=[a-z]+\s"
                     r"(?:is|are|has|have)\b)", re.IGNORECASE)
_NEGATION_RESET = re.compile(r"\b(?:there is|there are|is seen|are seen|is noted|are noted|with)\b", re.IGNORECASE)


def _pattern(phrases: tuple[str, ...]) -> re.Pattern:
    ordered = sorted(phrases, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(p) for p in ordered) + r")(?![\w-])", re.IGNORECASE)


_NORMAL_PATTERNS = {name: _pattern(phrases) for name, phrases in NORMAL_PHRASES.items()}
_HEART_FAILURE = _pattern(HEART_FAILURE)


def _clauses(text: str) -> list[str]:
    out = []
    for sentence in _SENTENCE.split(text):
        out.extend(part for part in _CLAUSE.split(sentence) if part and part.strip())
    return out


def _any(patterns: tuple[str, ...], text: str) -> bool:
    return any(re.search(p, text, re.IGNORECASE) for p in patterns)


def _last_cue(patterns: tuple[str, ...], text: str) -> int:
    """End of the last cue of ``patterns`` in ``text`` (-1 when there is none)."""
    return max((m.end() for p in patterns for m in re.finditer(p, text, re.IGNORECASE)), default=-1)


def mention_label(clause: str, start: int, end: int) -> int:
    """The label of one mention from its clause: -1 uncertain, 0 negative, 1 positive (see the module).

    After the mention, an uncertainty phrase ("cannot be excluded") beats a negation ("is not seen").
    Before it, the cue nearest the mention decides; a negation's scope ends at a new assertion
    ("there is", "with") between the cue and the mention.
    """
    before, after = clause[:start], clause[end:]
    if _any(_UNCERTAIN_AFTER, after):
        return -1
    if _any(_NEGATION_AFTER, after):
        return 0
    uncertain, negation = _last_cue(_UNCERTAIN_BEFORE, before), _last_cue(_NEGATION_BEFORE, before)
    if negation > uncertain and not _NEGATION_RESET.search(before[negation:]):
        return 0
    return -1 if uncertain >= 0 else 1


def _spans(pattern: re.Pattern, clause: str, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    found = []
    for match in pattern.finditer(clause):
        span = match.span()
        if not any(a < span[1] and span[0] < b for a, b in taken):
            found.append(span)
    return found


_PHRASES = sorted(((phrase, name, _pattern((phrase,))) for name, phrases in MENTIONS.items() for phrase in phrases),
                  key=lambda item: -len(item[0]))  # longer phrases claim their words first ("chest tube", "tube")


def clause_mentions(clause: str) -> list[tuple[str, int]]:
    """``(observation, label)`` of every mention in one clause; a word belongs to one mention at most."""
    taken: list[tuple[int, int]] = []
    found: list[tuple[str, int]] = []
    for name, pattern in _NORMAL_PATTERNS.items():
        for span in _spans(pattern, clause, taken):
            taken.append(span)
            found.append((name, 0))
    for _, name, pattern in _PHRASES:
        for span in _spans(pattern, clause, taken):
            taken.append(span)
            found.append((name, mention_label(clause, *span)))
    for span in _spans(_HEART_FAILURE, clause, taken):
        if mention_label(clause, *span) != 0:
            found.append(("Cardiomegaly", -1))
    return found


def aggregate(labels: list[int]) -> int | None:
    """Positive beats uncertain beats negative; no mention is blank (None)."""
    if not labels:
        return None
    return 1 if 1 in labels else (-1 if -1 in labels else 0)


def label_report(text: str | None) -> dict[str, int]:
    """CheXpert-14 labels of a free-text report: ``{observation: 1 | 0 | -1}``, blank observations left out."""
    by_observation: dict[str, list[int]] = {}
    for clause in _clauses(text or ""):
        for name, value in clause_mentions(clause):
            by_observation.setdefault(name, []).append(value)
    labels = {name: aggregate(values) for name, values in by_observation.items()}
    labels = {name: value for name, value in labels.items() if value is not None}
    findings = [n for n, v in labels.items() if n not in (SUPPORT_DEVICES, NO_FINDING) and v in (1, -1)]
    if not findings:
        labels[NO_FINDING] = 1
    return {name: labels[name] for name in CHEXPERT_14 if name in labels}


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
