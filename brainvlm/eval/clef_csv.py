"""Reading ImageCLEFmedical Caption CSV files as the official scripts read them: lines, records, quotes.

The official submission checkers (``caption_prediction/submission_check.py`` and
``concept_detection/submission_check.py`` of ``taubsity/clef-caption-evaluation-2026``, commit 9966c13)
read a file two ways at once:

- as **physical lines**: ``str.splitlines()`` of the text, which splits at ``\\r``, ``\\n`` and ``\\r\\n``
  and also at ``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1e``, ``\\x85``, ``\\u2028`` and ``\\u2029``, inside
  quotes too;
- as **CSV records**: Python's ``csv.reader`` over the file opened with ``newline=""``: a record ends at
  ``\\r``, ``\\n`` or ``\\r\\n`` outside quotes, a quoted field may hold line breaks, a quote that is never
  closed runs to the end of the file, and a field longer than ``csv.field_size_limit()`` (131,072
  characters by default) stops the reading with an error.

This module gives both, each record with its row (the header is row 1, counted in records as the
official checkers count them) and its place in the text, so that a rule is decided as the official
checker decides it and reported at the row where its cause lies (``eval.clef_check``).
"""

from __future__ import annotations

import bisect
import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from brainvlm.core.jsonio import BOM
from brainvlm.core.textfiles import decode_utf8

HEADERS = {"concepts": "ID,CUIs", "captions": "ID,Caption"}
MAX_CONCEPTS = 100
MAX_LISTED = 10
SUBMISSION_CUI = re.compile(r"C\d+")
LINE_ENDS = ("\r\n", "\n", "\r")


@dataclass(frozen=True)
class Record:
    """One CSV record: its row (1 = the header), its first character in the text, its text and fields."""

    row: int
    start: int
    raw: str
    fields: list[str]

    @property
    def text(self) -> str:
        """The record's text without its final line end."""
        return strip_line_end(self.raw)

    @property
    def after_id(self) -> str | None:
        """The text after the record's first comma (None without a comma), as the checkers split it."""
        return self.text.split(",", 1)[1] if "," in self.text else None

    @property
    def n_lines(self) -> int:
        """How many physical lines the record spans (``str.splitlines``)."""
        return max(1, len(self.text.splitlines()))


@dataclass(frozen=True)
class CsvStop:
    """Where ``csv.reader`` stopped with an error: the row of the record it was reading, and why."""

    row: int
    start: int
    reason: str


@dataclass(frozen=True)
class Line:
    """One physical line: its number (1-based), its first character in the text, and its text."""

    number: int
    start: int
    text: str


def strip_line_end(text: str) -> str:
    """``text`` without one final ``\\r\\n``, ``\\n`` or ``\\r``."""
    for end in LINE_ENDS:
        if text.endswith(end):
            return text[: -len(end)]
    return text


def read_records(text: str) -> tuple[list[Record], CsvStop | None]:
    """Every CSV record of ``text`` (the header first), and where the reader stopped on an error, if so."""
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(iter(lines))
    found: list[Record] = []
    done = offset = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return found, None
        except csv.Error as exc:
            return found, CsvStop(len(found) + 1, offset, str(exc))
        raw = "".join(lines[done:reader.line_num])
        found.append(Record(len(found) + 1, offset, raw, fields))
        done, offset = reader.line_num, offset + len(raw)


def physical_lines(text: str) -> list[Line]:
    """The lines of ``str.splitlines()``, each with its number and first character in the text."""
    found, offset = [], 0
    for number, (line, with_end) in enumerate(zip(text.splitlines(), text.splitlines(keepends=True)), 1):
        found.append(Line(number, offset, line))
        offset += len(with_end)
    return found


def record_at(records: Sequence[Record], position: int, starts: Sequence[int] | None = None) -> Record | None:
    """The record whose text holds character ``position`` (None past the last record).

    Args:
        starts: ``[r.start for r in records]``, when looking up many positions.
    """
    starts = [r.start for r in records] if starts is None else starts
    index = bisect.bisect_right(starts, position) - 1
    if index < 0 or position >= records[index].start + len(records[index].raw):
        return None
    return records[index]


def closing_quote(after: str) -> int | None:
    """The index of the quote that closes the quoted field ``after`` starts (``""`` is an escaped quote)."""
    position = 1
    while True:
        found = after.find('"', position)
        if found < 0:
            return None
        if after[found + 1:found + 2] != '"':
            return found
        position = found + 2


def quote_problem(after: str) -> str | None:
    """How the text after a row's first comma breaks CSV quoting, or None when it does not.

    Returns:
        ``unquoted-comma`` (a comma in a field that does not start with a quote), ``unclosed-quote`` (an
        opening quote never closed), ``inner-quote`` (a quote inside the quoted field that is not doubled,
        so the field closes early and another quote follows), ``text-after-quote`` (text after the
        closing quote), or None.
    """
    if not after.startswith('"'):
        return "unquoted-comma" if "," in after else None
    close = closing_quote(after)
    if close is None:
        return "unclosed-quote"
    rest = after[close + 1:]
    if not rest:
        return None
    return "inner-quote" if '"' in rest else "text-after-quote"


def text_after_quote(after: str) -> str:
    """The text that follows the closing quote of the quoted field ``after`` starts."""
    close = closing_quote(after)
    return "" if close is None else after[close + 1:]


def read_ids(path: str | Path) -> list[str]:
    """Image ids, in file order, from the first column of a UTF-8 CSV whose header starts with ``ID``
    (an ids file, or a gold ``ID,CUIs`` / ``ID,Caption`` file); blank rows and empty ids are skipped.

    Raises:
        ValueError: the file is not UTF-8, its header does not start with ``ID``, it lists no id, or it
            lists an id twice (both rows named).
    """
    text = decode_utf8(Path(path).read_bytes(), path).removeprefix(BOM)
    records, stop = read_records(text)
    if stop is not None:
        raise ValueError(f"{path} row {stop.row}: cannot be read as CSV ({stop.reason})")
    header = records[0].fields if records else None
    if not header or header[0].strip() != "ID":
        raise ValueError(f"{path} row 1: the header {header} does not start with ID; an ids file is a CSV "
                         "whose first column is ID (the gold file will do)")
    rows: dict[str, int] = {}
    for record in records[1:]:
        image_id = record.fields[0].strip() if record.fields else ""
        if not image_id:
            continue
        if image_id in rows:
            raise ValueError(f"{path} row {record.row}: duplicate id {image_id!r} (first on row "
                             f"{rows[image_id]}); an ids file lists each image once")
        rows[image_id] = record.row
    if not rows:
        raise ValueError(f"{path}: no ids below the header")
    return list(rows)
