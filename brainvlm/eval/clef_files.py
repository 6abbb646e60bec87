"""ImageCLEFmedical Caption submission files: writing them, and checking them against the format rules.

- Writers: ``ID,CUIs`` (CUIs joined by ``;``) and ``ID,Caption`` files in the order of the ids given
  (never sorted: ids are not zero-padded), UTF-8 without BOM, ``\\n`` line ends.
- :func:`check_submission`: every violation of the format rules with its row (the header is row 1), not
  only the first (``brainvlm check-submission``).

Scoring a concept file as the challenge does is :mod:`brainvlm.eval.clef` (``docs/concepts.md``).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from brainvlm.core.jsonio import BOM

HEADERS = {"concepts": "ID,CUIs", "captions": "ID,Caption"}
MAX_CONCEPTS = 100
MAX_LISTED = 10
SUBMISSION_CUI = re.compile(r"C\d+")


@dataclass(frozen=True)
class Violation:
    """One broken format rule: the file row (1 = the header; ``None`` for the whole file) and what to do."""

    row: int | None
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{'file' if self.row is None else f'row {self.row}'}: {self.message}"


# ------------------------------------------------------------------------------------------- writing
def _check_ids(ids: Sequence[str], given: Collection[str], what: str) -> None:
    bad = [i for i in ids if not i or i != i.strip() or any(ch in i for ch in ',"\r\n')]
    if bad:
        raise ValueError(f"ids {bad[:MAX_LISTED]} are empty or hold whitespace at an end, a comma, a quote "
                         "or a line break; a submission id is the image file name without its extension")
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise ValueError(f"ids {repeated[:MAX_LISTED]} are listed more than once; give each image once")
    known = set(ids)
    missing, extra = [i for i in ids if i not in given], [i for i in given if i not in known]
    if missing or extra:
        raise ValueError(f"{len(missing)} ids have no {what} (first ten: {missing[:MAX_LISTED]}) and "
                         f"{len(extra)} {what} belong to no id ({extra[:MAX_LISTED]}); give every image a "
                         "value (a fallback for failed images), and only those images")


def concepts_field(image_id: str, cuis: Iterable[str]) -> str:
    """The CUIs field of one row: upper-cased, first occurrence kept, ``;``-joined (empty: no concepts)."""
    cleaned = list(dict.fromkeys(str(c).strip().upper() for c in cuis))
    bad = [c for c in cleaned if not SUBMISSION_CUI.fullmatch(c)]
    if bad:
        raise ValueError(f"image {image_id!r}: {bad[:MAX_LISTED]} are not CUIs (C followed by digits); map "
                         "names to CUIs first (brainvlm.data.concept_map) and leave unmapped names out")
    if len(cleaned) > MAX_CONCEPTS:
        raise ValueError(f"image {image_id!r}: {len(cleaned)} concepts; the challenge allows at most "
                         f"{MAX_CONCEPTS}: keep the most confident {MAX_CONCEPTS}")
    return ";".join(cleaned)


def clean_caption(text: str) -> str:
    """A caption on one line: line breaks and runs of whitespace collapsed to one space, ends stripped."""
    return " ".join(str(text).split())


def _write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def write_concepts(path: str | Path, ids: Sequence[str], concepts: Mapping[str, Iterable[str]]) -> Path:
    """Write an ``ID,CUIs`` file: one row per id of ``ids``, in that order.

    Raises:
        ValueError: an id without concepts (give ``[]``), concepts of an unknown id, a token that is not
            a CUI, or more than 100 concepts for an image.
    """
    ids = [str(i) for i in ids]
    _check_ids(ids, concepts, "concepts")
    lines = [HEADERS["concepts"], *(f"{i},{concepts_field(i, concepts[i])}" for i in ids)]
    return _write(path, "\n".join(lines) + "\n")


def write_captions(path: str | Path, ids: Sequence[str], captions: Mapping[str, str]) -> Path:
    """Write an ``ID,Caption`` file: one row per id, in that order; captions on one line, quoted when
    they hold a comma or a quote.

    Raises:
        ValueError: an id without a caption, a caption of an unknown id, or an empty caption (give a
            fallback caption for images that failed).
    """
    ids = [str(i) for i in ids]
    _check_ids(ids, captions, "captions")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADERS["captions"].split(","))
    for image_id in ids:
        caption = clean_caption(captions[image_id])
        if not caption:
            raise ValueError(f"image {image_id!r}: the caption is empty; write a fallback caption")
        writer.writerow([image_id, caption])
    return _write(path, buffer.getvalue())


# ------------------------------------------------------------------------------------------ checking
def read_ids(path: str | Path) -> list[str]:
    """Image ids, in file order, from the first column of a CSV whose header starts with ``ID``
    (an ids file, or a gold ``ID,CUIs`` / ``ID,Caption`` file)."""
    path = Path(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or header[0].strip() != "ID":
            raise ValueError(f"{path}:1: the header {header} does not start with ID; an ids file is a CSV "
                             "whose first column is ID (the gold ID,CUIs file will do)")
        ids = [row[0].strip() for row in reader if row and row[0].strip()]
    if not ids:
        raise ValueError(f"{path}: no ids below the header")
    return ids


def _decode(data: bytes) -> tuple[str, list[Violation]]:
    """The file's text and its encoding violations (a BOM; bytes that are not UTF-8, replaced)."""
    found = []
    if data.startswith(BOM.encode("utf-8")):
        found.append(Violation(1, "bom", "the file starts with a UTF-8 byte-order mark; save it as UTF-8 "
                                         "without BOM"))
        data = data[3:]
    try:
        return data.decode("utf-8"), found
    except UnicodeDecodeError as exc:
        row = data[: exc.start].count(b"\n") + 1
        message = f"byte {exc.start} is not UTF-8 ({exc.reason}); save the file as UTF-8"
        found.append(Violation(row, "encoding", message))
        return data.decode("utf-8", errors="replace"), found


def record_rows(text: str) -> Iterable[tuple[int, str, list[str]]]:
    """``(first row number, raw text, fields)`` of each CSV record after the header."""
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(iter(lines))
    next(reader, None)
    done = reader.line_num
    for fields in reader:
        yield done + 1, "".join(lines[done:reader.line_num]), fields
        done = reader.line_num


def _structure(row: int, raw: str, fields: list[str], kind: str) -> list[Violation]:
    """Blank lines, the comma after the id, the number of fields and stray whitespace of one record."""
    if not raw.strip():
        return [Violation(row, "blank", "blank line; remove it (none anywhere, also not at the end)")]
    if len(fields) == 1:
        return [Violation(row, "comma", f"no comma after the id {fields[0]!r}; write '{fields[0]},' for an "
                                        f"image without {'concepts' if kind == 'concepts' else 'a caption'}")]
    if len(fields) != 2 and kind == "captions":
        return [Violation(row, "quoting", "the caption holds a comma but is not in double quotes")]
    if len(fields) != 2:
        return [Violation(row, "columns", f"{len(fields)} fields; expected 2 (ID and CUIs): separate CUIs "
                                          "with ';'")]
    found = []
    for name, value in zip(("id", "CUIs" if kind == "concepts" else "caption"), fields):
        if value != value.strip():
            message = f"the {name} {value!r} has whitespace at an end; remove it"
            found.append(Violation(row, "whitespace", message))
    return found


def _cuis_field(row: int, field: str) -> list[Violation]:
    """Empty, malformed, spaced and repeated CUI tokens, and too many concepts, of one CUIs field."""
    if field == "":
        return []
    tokens = field.split(";")
    found = []
    if any(t == "" for t in tokens):
        found.append(Violation(row, "empty-cui", "an empty CUI token (a trailing ';' or ';;'); remove it"))
    spaced = [t for t in tokens if t and t != t.strip()] if field == field.strip() else []
    if spaced:
        found.append(Violation(row, "whitespace", f"CUIs {spaced} hold spaces; write C1;C2 without spaces"))
    bad = [t for t in tokens if t.strip() and not SUBMISSION_CUI.fullmatch(t.strip())]
    if bad:
        message = f"{bad[:MAX_LISTED]} are not CUIs: C (upper case) followed by digits"
        found.append(Violation(row, "cui-format", message))
    repeated = sorted({t for t in tokens if t and tokens.count(t) > 1})
    if repeated:
        message = f"CUIs {repeated} appear more than once; keep each once"
        found.append(Violation(row, "duplicate-cui", message))
    if len(tokens) > MAX_CONCEPTS:
        found.append(Violation(row, "too-many", f"{len(tokens)} concepts; at most {MAX_CONCEPTS} per image"))
    return found


def _caption_field(row: int, raw: str, field: str) -> list[Violation]:
    """Empty, multi-line and unquoted captions."""
    found = []
    if not field.strip():
        found.append(Violation(row, "empty-caption", "the caption is empty; write a fallback caption"))
    if "\n" in field or "\r" in field:
        found.append(Violation(row, "line-break", "the caption holds a line break; collapse it to a space"))
    after_id = raw.rstrip("\r\n").split(",", 1)[1] if "," in raw else ""
    if "," in field and not (after_id.startswith('"') and after_id.endswith('"')):
        found.append(Violation(row, "quoting", "the caption holds a comma but is not in double quotes"))
    return found


class _IdTracker:
    """Duplicate, unknown, out-of-order and missing ids against the ids file's order."""

    def __init__(self, ids: Sequence[str]):
        self.position = {image_id: index for index, image_id in enumerate(ids)}
        self.ids, self.seen, self.last = list(ids), {}, None

    def check(self, row: int, image_id: str) -> list[Violation]:
        if image_id in self.seen:
            return [Violation(row, "duplicate-id", f"the id {image_id!r} repeats row {self.seen[image_id]}; "
                                                   "keep one row per image")]
        self.seen[image_id] = row
        if image_id not in self.position:
            return [Violation(row, "unknown-id", f"the id {image_id!r} is not in the ids file")]
        found = []
        if self.last is not None and self.position[image_id] < self.position[self.last]:
            found.append(Violation(row, "order", f"the id {image_id!r} comes before {self.last!r} in the ids "
                                                 "file; keep the ids file's order (never sort ids as text)"))
        self.last = image_id
        return found

    def missing(self) -> list[Violation]:
        absent = [i for i in self.ids if i not in self.seen]
        if not absent:
            return []
        return [Violation(None, "missing-id", f"{len(absent)} ids of the ids file have no row (first ten: "
                                              f"{absent[:MAX_LISTED]}); write one row per image")]


def _check_text(text: str, ids: Sequence[str], kind: str) -> list[Violation]:
    header = text.split("\n", 1)[0].rstrip("\r")
    found = []
    if header != HEADERS[kind]:
        message = f"the header is {header!r}; it must be exactly {HEADERS[kind]!r}"
        found.append(Violation(1, "header", message))
    tracker = _IdTracker(ids)
    for row, raw, fields in record_rows(text):
        found += _structure(row, raw, fields, kind)
        if not fields or not raw.strip():
            continue
        found += tracker.check(row, fields[0])
        if len(fields) == 2:
            field = fields[1]
            found += _cuis_field(row, field) if kind == "concepts" else _caption_field(row, raw, field)
    return found + tracker.missing()


def check_submission(path: str | Path, ids: Sequence[str] | str | Path,
                     kind: str = "concepts") -> list[Violation]:
    """Every violation of the challenge's format rules in a submission file, in row order.

    Args:
        ids: the image ids in their official order, or the ids (or gold) file to read them from.
        kind: ``"concepts"`` (``ID,CUIs``) or ``"captions"`` (``ID,Caption``).

    Returns:
        The violations (empty: the file is valid).
    """
    if kind not in HEADERS:
        raise ValueError(f"kind={kind!r}; use one of {sorted(HEADERS)}")
    ids = read_ids(ids) if isinstance(ids, (str, Path)) else [str(i) for i in ids]
    text, found = _decode(Path(path).read_bytes())
    try:
        found += _check_text(text, ids, kind)
    except csv.Error as exc:
        found.append(Violation(None, "csv", f"the file cannot be read as CSV ({exc}); check the quotes"))
    return sorted(found, key=lambda v: (v.row is None, v.row or 0))

