"""Concept tables: UMLS CUI -> preferred name, synonyms and semantic types, from UMLS RRF files or a CSV.

Two sources, one table (:class:`ConceptTable`):

- the UMLS Metathesaurus release files: ``MRCONSO.RRF`` (names; English (``LAT=ENG``) and not suppressed
  (``SUPPRESS=N``) rows only) and, when present beside it, ``MRSTY.RRF`` (semantic types). RRF rows are
  ``|``-separated with a trailing ``|``, so a row of n columns splits into n + 1 parts, the last empty;
- a CSV of ``CUI,name[,synonyms]`` with a header row, as ROCOv2's ``cui_mapping.csv``
  (``CUI,Canonical name``); synonyms are separated by ``;`` in the third column.

Either can be limited to a task's CUI vocabulary (``cuis=``). A malformed row, a file that is not UTF-8
and a file that holds no concept (a 0-byte ``MRCONSO.RRF``, a CSV with only its header) raise
:class:`ConceptTableError` naming the file, the line and what to fix.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from brainvlm.core.jsonio import BOM
from brainvlm.core.textfiles import NotUtf8Error, decode_utf8, is_utf16

CUI_PATTERN = re.compile(r"C\d{7}")
MRCONSO_COLUMNS = ("CUI", "LAT", "TS", "LUI", "STT", "SUI", "ISPREF", "AUI", "SAUI", "SCUI", "SDUI", "SAB",
                   "TTY", "CODE", "STR", "SRL", "SUPPRESS", "CVF")
MRSTY_COLUMNS = ("CUI", "TUI", "STN", "STY", "ATUI", "CVF")


class ConceptTableError(ValueError):
    """A concept table row that cannot be read; the message names the file, the line and what to fix."""


@dataclass(frozen=True)
class Concept:
    """One UMLS concept: its CUI, preferred name, other names and semantic type names."""

    cui: str
    name: str
    synonyms: tuple[str, ...] = ()
    semantic_types: tuple[str, ...] = ()


@dataclass
class ConceptTable:
    """CUI -> :class:`Concept`, and the file it was read from."""

    concepts: dict[str, Concept] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.concepts)

    def __contains__(self, cui: object) -> bool:
        return cui in self.concepts

    def __getitem__(self, cui: str) -> Concept:
        return self.concepts[cui]

    def names(self) -> Iterator[tuple[str, str, bool]]:
        """Every ``(name, cui, is_preferred)``: each concept's preferred name, then its synonyms."""
        for concept in self.concepts.values():
            yield concept.name, concept.cui, True
            for synonym in concept.synonyms:
                yield synonym, concept.cui, False

    def missing(self, cuis: Iterable[str]) -> list[str]:
        """The CUIs of ``cuis`` that the table does not hold (in the order given)."""
        return [cui for cui in dict.fromkeys(c.strip().upper() for c in cuis) if cui not in self.concepts]

    def to_frame(self) -> pd.DataFrame:
        """One row per concept: ``cui``, ``name``, ``synonyms`` and ``semantic_types`` (``;``-joined)."""
        rows = [{"cui": c.cui, "name": c.name, "synonyms": ";".join(c.synonyms),
                 "semantic_types": ";".join(c.semantic_types)} for c in self.concepts.values()]
        return pd.DataFrame(rows, columns=["cui", "name", "synonyms", "semantic_types"])


def _vocabulary(cuis: Iterable[str] | None) -> set[str] | None:
    return None if cuis is None else {c.strip().upper() for c in cuis}


def _decoded(path: Path, number: int, line: bytes) -> str:
    """One RRF line as text; a line that is not UTF-8 is an error naming the file, line and byte."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        if number == 1 and is_utf16(line):
            raise ConceptTableError(f"{path}:1: the file is UTF-16, not UTF-8; save it as UTF-8") from None
        bad = f"0x{line[exc.start]:02x}"
        raise ConceptTableError(f"{path}:{number}: byte {exc.start + 1} of the line ({bad}) "
                                f"is not UTF-8 ({exc.reason}); the file must be UTF-8, as UMLS release files "
                                "are: save it as UTF-8") from None


def _rrf_rows(path: Path, columns: tuple[str, ...], progress: bool) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of an RRF file, each row checked for its column count and trailing ``|``.

    Raises:
        ConceptTableError: the file has no row at all (0 bytes or blank lines only), a line is not UTF-8,
            or a row is malformed; each names the file and line.
    """
    rows = 0
    with path.open("rb") as handle:
        for number, data in enumerate(tqdm(handle, desc=path.name, disable=not progress, unit=" rows"), 1):
            line = _decoded(path, number, data).rstrip("\r\n")
            if not line:
                continue
            parts = line.split("|")
            if len(parts) != len(columns) + 1 or parts[-1] != "":
                raise ConceptTableError(
                    f"{path}:{number}: expected {len(columns)} '|'-separated fields ending with '|' "
                    f"({','.join(columns)}), found {len(parts) - (parts[-1] == '')} fields"
                    f"{'' if parts[-1] == '' else ' and no trailing |'}; is this the {path.name} of a "
                    "UMLS release (not a subset with other columns)?")
            if not CUI_PATTERN.fullmatch(parts[0]):
                raise ConceptTableError(f"{path}:{number}: CUI field {parts[0]!r} is not C and 7 digits")
            rows += 1
            yield number, parts[:-1]
    if rows == 0:
        raise ConceptTableError(f"{path}: the file holds no row ({path.stat().st_size} bytes); give the "
                                f"{path.name} of a UMLS release (was the copy or download cut short?)")


def _name_rank(fields: list[str]) -> tuple[bool, bool, bool]:
    """How preferred a name row is: term status P, string type PF, then the source's preferred atom."""
    row = dict(zip(MRCONSO_COLUMNS, fields))
    return row["TS"] == "P", row["STT"] == "PF", row["ISPREF"] == "Y"


def read_mrconso(path: str | Path, cuis: Iterable[str] | None = None,
                 progress: bool = False) -> dict[str, tuple[str, tuple[str, ...]]]:
    """CUI -> (preferred name, other names) from English, non-suppressed ``MRCONSO.RRF`` rows.

    The preferred name is the first row ranked highest by (TS = P, STT = PF, ISPREF = Y); the other
    distinct names follow in file order.

    Raises:
        ConceptTableError: an empty file, a file without an English non-suppressed row, a line that is not
            UTF-8 or a malformed row.
    """
    path, wanted = Path(path), _vocabulary(cuis)
    rows: dict[str, list[tuple[tuple[bool, bool, bool], str]]] = {}
    english = 0
    for number, fields in _rrf_rows(path, MRCONSO_COLUMNS, progress):
        cui, lat, name, suppress = fields[0], fields[1], fields[14], fields[16]
        if lat != "ENG" or suppress != "N":
            continue
        english += 1
        if wanted is not None and cui not in wanted:
            continue
        if not name.strip():
            raise ConceptTableError(f"{path}:{number}: STR (the name, field 15) is empty for {cui}")
        rows.setdefault(cui, []).append((_name_rank(fields), name))
    if english == 0:
        raise ConceptTableError(f"{path}: no English (LAT=ENG), non-suppressed (SUPPRESS=N) row; give an "
                                "MRCONSO.RRF with English names")
    table = {}
    for cui, names in rows.items():
        best = max(range(len(names)), key=lambda i: (names[i][0], -i))
        preferred = names[best][1]
        others = tuple(dict.fromkeys(n for _, n in names if n != preferred))
        table[cui] = (preferred, others)
    return table


def read_mrsty(path: str | Path, cuis: Iterable[str] | None = None) -> dict[str, tuple[str, ...]]:
    """CUI -> semantic type names (STY, e.g. ``Organic Chemical``) from ``MRSTY.RRF``."""
    path, wanted = Path(path), _vocabulary(cuis)
    types: dict[str, list[str]] = {}
    for number, fields in _rrf_rows(path, MRSTY_COLUMNS, False):
        if not fields[3].strip():
            raise ConceptTableError(f"{path}:{number}: STY (the semantic type name, field 4) is empty")
        if wanted is None or fields[0] in wanted:
            types.setdefault(fields[0], []).append(fields[3])
    return {cui: tuple(dict.fromkeys(names)) for cui, names in types.items()}


def load_umls(meta_dir: str | Path, cuis: Iterable[str] | None = None,
              progress: bool = False) -> ConceptTable:
    """The concept table of a UMLS ``META`` folder (``MRCONSO.RRF``; ``MRSTY.RRF`` if present).

    Args:
        meta_dir: the folder that holds the RRF files, or the ``MRCONSO.RRF`` file itself.
        cuis: keep only these CUIs (a task's vocabulary); ``None`` keeps every English concept.
        progress: show a progress bar while reading (the full MRCONSO has millions of rows).
    """
    meta_dir = Path(meta_dir)
    mrconso = meta_dir if meta_dir.is_file() else meta_dir / "MRCONSO.RRF"
    if not mrconso.is_file():
        raise FileNotFoundError(f"{mrconso}: no MRCONSO.RRF; give the META folder of a UMLS release")
    names = read_mrconso(mrconso, cuis, progress)
    mrsty = mrconso.with_name("MRSTY.RRF")
    types = read_mrsty(mrsty, names) if mrsty.is_file() else {}
    concepts = {cui: Concept(cui, name, synonyms, types.get(cui, ()))
                for cui, (name, synonyms) in names.items()}
    return ConceptTable(concepts, str(mrconso))


def _csv_header(path: Path, header: list[str] | None) -> None:
    if header is None:
        raise ConceptTableError(f"{path}:1: the file is empty; write a header row CUI,name[,synonyms]")
    if not 2 <= len(header) <= 3 or header[0].strip().upper() != "CUI":
        raise ConceptTableError(f"{path}:1: header {header} is not CUI,name[,synonyms] "
                                "(as ROCOv2's cui_mapping.csv: CUI,Canonical name); fix the first row")


def _csv_concept(path: Path, number: int, row: list[str]) -> Concept:
    if not 2 <= len(row) <= 3:
        raise ConceptTableError(f"{path}:{number}: {len(row)} fields; expected CUI,name[,synonyms] "
                                "(quote a name that holds a comma)")
    cui, name = row[0].strip().upper(), row[1].strip()
    if not CUI_PATTERN.fullmatch(cui):
        raise ConceptTableError(f"{path}:{number}: CUI field {row[0]!r} is not C followed by 7 digits")
    if not name:
        raise ConceptTableError(f"{path}:{number}: {cui} has an empty name; give its preferred name")
    synonyms = [s.strip() for s in row[2].split(";")] if len(row) == 3 and row[2].strip() else []
    if any(not s for s in synonyms):
        raise ConceptTableError(f"{path}:{number}: {cui} has an empty synonym (';;' or a trailing ';'); "
                                "remove it")
    return Concept(cui, name, tuple(dict.fromkeys(s for s in synonyms if s != name)))


def _csv_text(path: Path) -> str:
    """The text of a concept CSV (UTF-8, a leading BOM dropped); another encoding is an error naming it."""
    try:
        return decode_utf8(path.read_bytes(), path).removeprefix(BOM)
    except NotUtf8Error as exc:
        raise ConceptTableError(str(exc)) from None


def read_cui_csv(path: str | Path, cuis: Iterable[str] | None = None) -> ConceptTable:
    """The concept table of a ``CUI,name[,synonyms]`` CSV with a header row (UTF-8, a leading BOM allowed).

    Raises:
        ConceptTableError: a file that is not UTF-8, a bad header, no row below it, a row without a name, a
            malformed CUI, an empty synonym or a CUI listed twice (with both lines).
    """
    path, wanted = Path(path), _vocabulary(cuis)
    concepts: dict[str, Concept] = {}
    lines: dict[str, int] = {}
    reader = csv.reader(io.StringIO(_csv_text(path), newline=""))
    _csv_header(path, next(reader, None))
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        concept = _csv_concept(path, number, row)
        if concept.cui in lines:
            raise ConceptTableError(f"{path}:{number}: {concept.cui} is listed again (first on line "
                                    f"{lines[concept.cui]}); keep one row per CUI, other names as synonyms")
        lines[concept.cui] = number
        if wanted is None or concept.cui in wanted:
            concepts[concept.cui] = concept
    if not lines:
        raise ConceptTableError(f"{path}: no concept below the header; give one CUI,name row per concept")
    return ConceptTable(concepts, str(path))


def load_concept_table(path: str | Path, cuis: Iterable[str] | None = None) -> ConceptTable:
    """A concept table from a UMLS ``META`` folder or ``MRCONSO.RRF`` (:func:`load_umls`) or a CSV
    (:func:`read_cui_csv`), chosen by the path."""
    path = Path(path)
    if path.is_dir() or path.suffix.upper() == ".RRF":
        return load_umls(path, cuis)
    return read_cui_csv(path, cuis)
