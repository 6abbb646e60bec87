"""Mapping concept names to UMLS CUIs over a concept table the user provides.

The cascade, first hit wins; every result keeps ``(cui, score, method)``:

1. ``exact``: the name as written (outer whitespace aside) is a name of the table;
2. ``normalised``: the same after Unicode NFKC, case folding, punctuation as spaces, collapsed whitespace and
   each word made singular (``Pleural Effusions`` = ``pleural effusion``);
3. ``word_order``: the same words in any order (``acid, carboxyglutamic``);
4. ``fuzzy``: the best rapidfuzz ``token_sort_ratio`` (0-100) over the normalised names, if it reaches the
   threshold (typos: ``naphtalidine``).

Short all-capitals abbreviations (``CTS``, ``MRI``, ``IBMX``: no lower-case letter, no space, at most six
characters) match exactly and case-sensitively only, on either side: ``CTS`` never becomes a fuzzy
neighbour and ``cnn`` never becomes ``CNN``. A name that leads to several CUIs is ``ambiguous`` unless it
is the preferred name of exactly one of them; it is returned unmapped with its candidates. Unmapped names
are always returned (method ``unmapped``), never dropped.

Why brainvlm has its own mapper: scispacy's entity linker needs a knowledge-base index downloaded at run
time, QuickUMLS needs a local UMLS installation to build its database, and MetaMap is a separate Java
program with its own UMLS data; none of them works offline from a pip install.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rapidfuzz import fuzz, process

from brainvlm.core.jsonio import BOM
from brainvlm.core.textfiles import decode_utf8
from brainvlm.data.umls import Concept, ConceptTable

METHODS = ("exact", "normalised", "word_order", "fuzzy", "ambiguous", "unmapped")
DEFAULT_THRESHOLD = 90.0  # token_sort_ratio: one typo in a 10-letter name scores about 95
ABBREVIATION_MAX_LEN = 6
_PUNCTUATION = re.compile(r"[^\w\s]|_")
_ABBREVIATION = re.compile(r"[A-Z0-9][A-Z0-9-]*")
_IRREGULAR = {"vertebrae": "vertebra", "metastases": "metastasis", "diagnoses": "diagnosis",
              "bronchi": "bronchus", "calculi": "calculus", "diverticula": "diverticulum",
              "stenoses": "stenosis", "anastomoses": "anastomosis", "sinuses": "sinus", "femora": "femur",
              "feet": "foot", "teeth": "tooth", "children": "child", "women": "woman", "men": "man"}
_KEEP_S = ("ss", "us", "is")


@dataclass(frozen=True)
class ConceptMatch:
    """How one name was mapped: ``cui`` is ``None`` when unmapped or ambiguous (then see ``candidates``)."""

    name: str
    cui: str | None
    score: float
    method: str
    candidates: tuple[str, ...] = ()


def is_abbreviation(name: str, max_len: int = ABBREVIATION_MAX_LEN) -> bool:
    """A short all-capitals abbreviation (``CTS``, ``T1``, ``IBMX``), matched only exactly."""
    name = name.strip()
    return (2 <= len(name) <= max_len and _ABBREVIATION.fullmatch(name) is not None
            and any(ch.isalpha() for ch in name))


def singular(word: str) -> str:
    """The singular of one lower-case English or Latin word, by simple rules (both sides use the same)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(_KEEP_S):
        return word[:-1]
    return word


def normalise(name: str) -> str:
    """The comparison key of a name: NFKC, case-folded, punctuation as spaces, one space, singular words."""
    text = _PUNCTUATION.sub(" ", unicodedata.normalize("NFKC", name).casefold())
    return " ".join(singular(word) for word in text.split())


def _word_order_key(key: str) -> str:
    return " ".join(sorted(key.split()))


def _resolve(cuis: set[str], preferred: set[str]) -> tuple[str | None, tuple[str, ...]]:
    """One CUI, or ``None`` and the sorted candidates when the name belongs to several concepts."""
    if len(cuis) == 1:
        return next(iter(cuis)), ()
    owners = cuis & preferred
    if len(owners) == 1:
        return next(iter(owners)), ()
    return None, tuple(sorted(cuis))


class _Index:
    """Key -> CUIs, and the CUIs whose preferred name has that key."""

    def __init__(self) -> None:
        self.cuis: dict[str, set[str]] = {}
        self.preferred: dict[str, set[str]] = {}

    def add(self, key: str, cui: str, is_preferred: bool) -> None:
        if not key:
            return
        self.cuis.setdefault(key, set()).add(cui)
        if is_preferred:
            self.preferred.setdefault(key, set()).add(cui)

    def get(self, key: str) -> tuple[str | None, tuple[str, ...]] | None:
        if key not in self.cuis:
            return None
        return _resolve(self.cuis[key], self.preferred.get(key, set()))


class ConceptMapper:
    """Maps names to the CUIs of a :class:`~brainvlm.data.umls.ConceptTable` (the module's cascade).

    Args:
        table: the concepts and their names.
        threshold: the lowest rapidfuzz ``token_sort_ratio`` (0-100) a fuzzy match may have.
    """

    def __init__(self, table: ConceptTable, threshold: float = DEFAULT_THRESHOLD):
        if not 0 < threshold <= 100:
            raise ValueError(f"threshold={threshold}; give a rapidfuzz score in (0, 100], e.g. 90")
        self.table, self.threshold = table, threshold
        self.exact, self.normalised, self.word_order = _Index(), _Index(), _Index()
        for name, cui, is_preferred in table.names():
            self.exact.add(name.strip(), cui, is_preferred)
            if is_abbreviation(name):
                continue
            key = normalise(name)
            self.normalised.add(key, cui, is_preferred)
            self.word_order.add(_word_order_key(key), cui, is_preferred)
        self.choices = list(self.normalised.cuis)

    @classmethod
    def from_names(cls, names: Mapping[str, str], threshold: float = DEFAULT_THRESHOLD) -> ConceptMapper:
        """A mapper over a plain ``name -> CUI`` mapping (the first name of a CUI is its preferred name)."""
        grouped: dict[str, list[str]] = {}
        for name, cui in names.items():
            grouped.setdefault(str(cui).strip().upper(), []).append(str(name))
        concepts = {cui: Concept(cui, group[0], tuple(group[1:])) for cui, group in grouped.items()}
        return cls(ConceptTable(concepts, "name -> CUI mapping"), threshold)

    def map(self, name: str) -> ConceptMatch:
        """The CUI of one name through the cascade, or an unmapped/ambiguous result that says so."""
        text = name.strip()
        found = self.exact.get(text)
        if found is not None:
            return ConceptMatch(name, found[0], 100.0, "exact" if found[0] else "ambiguous", found[1])
        if is_abbreviation(text):
            return ConceptMatch(name, None, 0.0, "unmapped")
        key = normalise(text)
        for method, index, lookup in (("normalised", self.normalised, key),
                                      ("word_order", self.word_order, _word_order_key(key))):
            found = index.get(lookup)
            if found is not None:
                return ConceptMatch(name, found[0], 100.0, method if found[0] else "ambiguous", found[1])
        return self._fuzzy(name, key)

    def _fuzzy(self, name: str, key: str) -> ConceptMatch:
        if not key or not self.choices:
            return ConceptMatch(name, None, 0.0, "unmapped")
        hits = process.extract(key, self.choices, scorer=fuzz.token_sort_ratio, processor=None,
                               score_cutoff=self.threshold, limit=5)
        if not hits:
            return ConceptMatch(name, None, 0.0, "unmapped")
        best = hits[0][1]
        cuis = set().union(*(self.normalised.cuis[choice] for choice, score, _ in hits if score == best))
        preferred = set().union(*(self.normalised.preferred.get(c, set()) for c, s, _ in hits if s == best))
        cui, candidates = _resolve(cuis, preferred)
        return ConceptMatch(name, cui, float(best), "fuzzy" if cui else "ambiguous", candidates)


MATCH_COLUMNS = ["name", "cui", "score", "method", "candidates"]


def map_names(names: Iterable[str], mapper: ConceptMapper) -> pd.DataFrame:
    """One row per name (in order, repeats kept): ``name``, ``cui`` (``None`` when unmapped), ``score``,
    ``method`` and ``candidates`` (``;``-joined, for ambiguous names)."""
    rows = []
    for name in names:
        match = mapper.map(name)
        rows.append({"name": name, "cui": match.cui, "score": match.score, "method": match.method,
                     "candidates": ";".join(match.candidates)})
    return pd.DataFrame(rows, columns=MATCH_COLUMNS)


def read_labelled_names(path: str | Path) -> pd.DataFrame:
    """A labelled list of names: CSV with ``name``, ``expected_cui`` (empty: must stay unmapped), ``kind``.

    Raises:
        ValueError: a file that is not UTF-8 (``NotUtf8Error``, naming the file), a missing column, or an
            expected CUI that is neither empty nor C followed by 7 digits.
    """
    text = decode_utf8(Path(path).read_bytes(), path).removeprefix(BOM)
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    missing = [c for c in ("name", "expected_cui", "kind") if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} are missing; the header must be name,expected_cui,kind")
    bad = [i + 2 for i, cui in enumerate(table["expected_cui"]) if cui and not re.fullmatch(r"C\d{7}", cui)]
    if bad:
        raise ValueError(f"{path}: expected_cui on lines {bad} is neither empty nor C followed by 7 digits")
    return table


def method_precision(labelled: pd.DataFrame, mapper: ConceptMapper) -> pd.DataFrame:
    """Per method: how many labelled names it decided, how many rightly, and its precision.

    A mapped name is right when its CUI is the expected one; an unmapped (or ambiguous) name is right
    when no CUI was expected. Returns one row per method of :data:`METHODS` that occurred, plus ``all``.

    Args:
        labelled: ``name`` and ``expected_cui`` columns (empty or ``None``: must stay unmapped).
    """
    mapped = map_names(labelled["name"], mapper)
    expected = labelled["expected_cui"].fillna("").astype(str).str.strip().str.upper().to_numpy()
    mapped["correct"] = mapped["cui"].fillna("").astype(str).to_numpy() == expected
    rows = []
    for method in [*METHODS, "all"]:
        part = mapped if method == "all" else mapped[mapped["method"] == method]
        if len(part):
            rows.append({"method": method, "n_names": len(part), "n_correct": int(part["correct"].sum()),
                         "precision": float(part["correct"].mean())})
    return pd.DataFrame(rows, columns=["method", "n_names", "n_correct", "precision"])
