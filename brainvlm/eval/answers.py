"""Answer parsing: turn a model's free-text answer into a label, a number, a CheXpert block, ICD codes or concepts.

Every parser returns ``None`` when the answer cannot be read; callers count those answers as
unparseable (and wrong), they never drop them.

Policy when an answer states several different values (labels or numbers): if every stated value
agrees, that value is the answer; otherwise the answer is the value stated in the *final sentence
that states any value*, provided that sentence states exactly one distinct value; otherwise the
answer is unparseable. ``"The reference is male. The subject is female."`` parses as ``female``;
``"The subject is female, unlike the male reference."`` is ambiguous and unparseable.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

from brainvlm.data.concept_map import ConceptMapper
from brainvlm.data.curriculum import CHEXPERT_14

CHEXPERT_5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
UNCERTAIN_POLICIES = ("ones", "zeros")

_MINUS = "\u2212"  # the unicode minus sign that typeset text uses
# A sentence ends at . ! ? followed by whitespace or the end of the text, or at a line break;
# a decimal point ("23.5") is not followed by whitespace, so numbers are never split.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n")
_NUMBER = re.compile(
    r"(?:(?<![\w.])(?P<sign>[-+\u2212])|(?<![\w.])(?<![^\d\s][-+\u2212]))"  # signed, or unsigned not after a-
    r"(?P<body>\d{1,3}(?:,\d{3})+(?![\d,])|\d+(?:\.\d+)?|\.\d+)"
    r"(?P<exp>[eE][-+\u2212]?\d+)?"
    r"(?![\d])"
)
_CUI = re.compile(r"^C\d{7}$", re.IGNORECASE)
_ICD_CODE = re.compile(r"^(?=.*\d)[A-Z0-9]{3,7}(?:\.[A-Z0-9]{1,4})?$")


def _sentence_index(text: str, positions: Sequence[int]) -> list[int]:
    """Sentence number of each character position (0 for the first sentence)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return [sum(1 for end in ends if end <= pos) for pos in positions]


def _resolve(found: Sequence[tuple[int, object]], text: str) -> object | None:
    """Apply the module's several-values policy to ``(position, value)`` pairs in text order."""
    values = {value for _, value in found}
    if not values:
        return None
    if len(values) == 1:
        return values.pop()
    sentences = _sentence_index(text, [pos for pos, _ in found])
    last = max(sentences)
    final = {value for (_, value), s in zip(found, sentences) if s == last}
    return final.pop() if len(final) == 1 else None


def _synonym_regex(synonyms: Mapping[str, Sequence[str]]) -> tuple[re.Pattern, list[tuple[re.Pattern, str]]]:
    """One case-insensitive alternation of every synonym (longest first), and each synonym's own pattern
    with its label (case-insensitive matching can match text whose ``lower()`` differs, e.g. ``ſ`` for s)."""
    owner: dict[str, str] = {}
    for label in sorted(synonyms):
        for word in [label, *synonyms[label]]:
            key = " ".join(str(word).lower().split())
            if not key:
                raise ValueError(f"label {label!r} has an empty synonym; remove it from the synonyms table")
            if owner.setdefault(key, label) != label:
                raise ValueError(f"synonym {word!r} is listed under two labels, {owner[key]!r} and {label!r}; "
                                 "keep it under one label only")
    alternatives = sorted(owner, key=lambda k: (-len(k), k))
    parts = [r"\s+".join(re.escape(part) for part in key.split()) for key in alternatives]
    each = [(re.compile(part, re.IGNORECASE), owner[key]) for part, key in zip(parts, alternatives)]
    return re.compile(rf"(?<!\w)(?:{'|'.join(parts)})(?!\w)", re.IGNORECASE), each


def find_labels(text: str, synonyms: Mapping[str, Sequence[str]]) -> list[tuple[int, str]]:
    """Every label mention in ``text`` as ``(position, label)``, matched on word boundaries, case-insensitively.

    Args:
        synonyms: label -> words that state it, e.g. ``{"male": ["man", "M"], "female": ["woman", "F"]}``;
            the label itself always counts as a synonym. At one position the longest synonym wins.
    """
    pattern, each = _synonym_regex(synonyms)
    found = []
    for m in pattern.finditer(text):
        found.append((m.start(), next(label for one, label in each if one.fullmatch(m.group(0)))))
    return found


def parse_label(text: str | None, synonyms: Mapping[str, Sequence[str]]) -> str | None:
    """The label an answer states, or ``None`` (no label, or an ambiguous one; see the module policy).

    ``"female"`` never matches ``male`` and ``"M"`` never matches inside a word such as ``MRI``.
    """
    if not text:
        return None
    return _resolve(find_labels(text, synonyms), text)


_YES_NO_WORD = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_LEADING_YES_NO = re.compile(r"^[\W_]*(yes|no)\b", re.IGNORECASE)


def parse_yes_no(text: str | None) -> str | None:
    """``"yes"``/``"no"`` from a closed-question answer, or ``None`` when it cannot be read.

    The leading word decides when it is yes or no ("Yes, this is a normal image ... with no visible
    abnormalities." is yes); otherwise the answer must contain exactly one of the two words ("There is no
    evidence of fracture." is no). An answer with both and neither leading ("Choose one of: 1. Yes ...
    2. No ...") is unparseable and counted so, never guessed.
    """
    if not text:
        return None
    leading = _LEADING_YES_NO.match(text)
    if leading:
        return leading.group(1).lower()
    found = {word.lower() for word in _YES_NO_WORD.findall(text)}
    return found.pop() if len(found) == 1 else None


def _literal(match: re.Match) -> str:
    return (match.group("sign") or "") + match.group("body") + (match.group("exp") or "")


def in_format(literal: str, decimals: int) -> bool:
    """Whether a number is written as ``data.comparison.format_value`` writes it: an optional ``-``, digits
    and exactly ``decimals`` decimals (none when 0), no ``+``, separators or exponent."""
    pattern = r"-?\d+" + (rf"\.\d{{{decimals}}}" if decimals else "")
    return re.fullmatch(pattern, literal) is not None


def find_numbers(text: str) -> list[tuple[int, float]]:
    """Every finite number in ``text`` as ``(position, value)``.

    Reads signs (``-``, ``+``, the unicode minus), decimals, ``.5``, scientific notation (``1.5e-3``)
    and thousands separators (``12,345``). Digits glued to a preceding letter or hyphenated to a word
    (``T1``, ``m2``, ``sub-0042``) are not numbers; units glued after a number (``5mm``) are allowed.
    ``23-25`` reads as two numbers.
    """
    found = []
    for m in _NUMBER.finditer(text):
        literal = _literal(m).replace(",", "")
        value = float(literal.replace(_MINUS, "-"))
        if math.isfinite(value):
            found.append((m.start(), value))
    return found


def parse_number(text: str | None, decimals: int | None = None) -> float | None:
    """The number an answer states, or ``None`` (no number, or several; see the module policy).

    Args:
        decimals: when given, the answer states a number only in the template's format (``in_format``):
            an answer with any number written otherwise (``0.``, ``-0.8`` for two decimals, ``1e-2``) is
            unparseable. ``None`` reads any number (answers of other models, files of the field).
    """
    if not text:
        return None
    if decimals is not None and not all(in_format(_literal(m), decimals) for m in _NUMBER.finditer(text)):
        return None
    value = _resolve(find_numbers(text), text)
    return None if value is None else float(value)


def _canonical_chexpert(key: str) -> str | None:
    wanted = " ".join(key.lower().split())
    return next((name for name in CHEXPERT_14 if name.lower() == wanted), None)


def parse_chexpert(text: str | None) -> dict[str, int] | None:
    """The last ``CheXpert: {...}`` block of an answer as ``{observation: 1 | 0 | -1}``.

    1 is positive, 0 negative, -1 uncertain; observations that are absent (or ``null``) are blank and
    left out of the result. Keys are the 14 CheXpert observations (case and spacing ignored).

    Returns:
        ``None`` when there is no block, the JSON is malformed, a key is not a CheXpert observation,
        or a value is not one of 1, 0, -1.
    """
    if not text:
        return None
    markers = list(re.finditer(r"chexpert\s*:\s*", text, re.IGNORECASE))
    if not markers:
        return None
    try:
        block, _ = json.JSONDecoder().raw_decode(text, markers[-1].end())
    except json.JSONDecodeError:
        return None
    if not isinstance(block, dict):
        return None
    labels: dict[str, int] = {}
    for key, value in block.items():
        name = _canonical_chexpert(str(key))
        if name is None or name in labels or isinstance(value, bool):
            return None
        if value is None:
            continue
        if not isinstance(value, (int, float)) or value not in (1, 0, -1):
            return None
        labels[name] = int(value)
    return labels


_BLOCK_START = re.compile(r"^\s*(?:chexpert|icd)\s*:", re.IGNORECASE | re.MULTILINE)
_IMPRESSION = re.compile(r"^\s*impression\s*:\s*", re.IGNORECASE)


def report_text(text: str | None) -> str:
    """The free text of a report: what precedes its ``CheXpert:``/``ICD:`` lines, without an ``Impression:`` label."""
    text = text or ""
    block = _BLOCK_START.search(text)
    return _IMPRESSION.sub("", text[: block.start()] if block else text).strip()


def chexpert_positive(labels: Mapping[str, int] | None, uncertain: str = "ones") -> frozenset[str]:
    """The observations counted positive: 1, plus -1 under ``uncertain="ones"`` (U-Ones, Irvin et al. 2019).

    Under ``uncertain="zeros"`` (U-Zeros) uncertain mentions count negative; blanks always count negative.
    An unparseable block (``None``) is an answer that states no positive observation.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain={uncertain!r}; use one of {UNCERTAIN_POLICIES}")
    positive = {1, -1} if uncertain == "ones" else {1}
    return frozenset(name for name, value in (labels or {}).items() if value in positive)


def _block_after(text: str, marker: str) -> str | None:
    """The rest of the line after the last ``marker:`` (a regex) in text, or ``None`` without one."""
    found = list(re.finditer(rf"(?<!\w){marker}\s*:", text, re.IGNORECASE))
    if not found:
        return None
    return text[found[-1].end():].split("\n", 1)[0]


def normalize_icd(code: str) -> str | None:
    """Upper-case, trimmed ICD-9/ICD-10 code (``e11.9`` -> ``E11.9``), or ``None`` if it is not code-shaped."""
    code = code.strip().upper().rstrip(".")
    return code if _ICD_CODE.match(code) else None


def parse_icd(text: str | None) -> frozenset[str] | None:
    """The codes of the last ``ICD: I10, E11.9`` line (also ``ICD-10:``; commas, semicolons or spaces between;
    a list in brackets with quoted codes, ``ICD: ["I10", "E11.9"]``, reads the same; ``ICD: []`` is empty).

    Returns:
        The set of normalised codes (empty when the line lists none), or ``None`` when there is no
        ``ICD:`` line or an item is not code-shaped.
    """
    block = _block_after(text or "", r"ICD(?:-?(?:9|10)(?:-CM)?)?")
    if block is None:
        return None
    block = block.strip()
    if block.startswith("[") and block.endswith("]"):
        block = block[1:-1].replace('"', " ").replace("'", " ")
    codes = [normalize_icd(item) for item in re.split(r"[,;\s]+", block) if item.strip(" .")]
    return None if None in codes else frozenset(codes)


def _normalize_name(name: str) -> str:
    return " ".join(name.lower().split()).strip(" .")


def _concept_of(item: str, mapper: ConceptMapper) -> str:
    """The CUI of a concept name through the mapper, else the name lower-cased (counted, never dropped)."""
    return mapper.map(item).cui or _normalize_name(item)


def concept_items(text: str | None) -> list[str] | None:
    """The items of a ``Concepts:`` line as the model wrote them, in order (``parse_concepts``'s reading).

    Items are split as ``parse_concepts`` splits them and stripped of outer spaces and full stops; empty
    items are skipped. Without a ``Concepts:`` marker the whole text is read, but only if every item is a CUI.

    Returns:
        The items (names or CUIs, repeats kept), or ``None`` when the text cannot be read as a concept list.
    """
    block = _block_after(text or "", "Concepts")
    marked = block is not None
    block = block if marked else (text or "")
    items = [item.strip().strip(" .") for item in re.split(r"[;\n]" if ";" in block else r"[,\n]", block)]
    items = [item for item in items if item]
    if not marked and (not items or not all(_CUI.match(item) for item in items)):
        return None
    return items


def parse_concepts(text: str | None,
                   names: Mapping[str, str] | ConceptMapper | None = None) -> frozenset[str] | None:
    """The concepts of a ``Concepts: C0032285; C0040405`` line, as UMLS CUIs where known.

    Items are separated by ``;`` (or ``,`` when the line has no ``;``); empty items (a stray ``;``) are
    skipped, since this reads model output leniently (a submission file is scored raw: ``eval.clef``).
    A CUI is upper-cased; a name is mapped to its CUI through ``names``, a
    :class:`~brainvlm.data.concept_map.ConceptMapper` (the one mapping path for model output and user files:
    exact, normalised, word order, fuzzy) or a plain name -> CUI mapping turned into one (build the mapper
    once for a large table); a name it cannot map is kept lower-cased. Without a ``Concepts:`` marker the
    whole text is read, but only if every item is a CUI.

    Returns:
        The set of concepts, or ``None`` when the text cannot be read as a concept list.
    """
    mapper = names if isinstance(names, ConceptMapper) else ConceptMapper.from_names(names or {})
    items = concept_items(text)
    if items is None:
        return None
    return frozenset(item.upper() if _CUI.match(item) else _concept_of(item, mapper) for item in items)
