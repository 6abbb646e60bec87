"""The format rules of ImageCLEFmedical Caption submission files, decided as the official checkers decide.

:func:`check_submission` accepts a file exactly when the official ``submission_check.py`` of its kind
accepts it, and the concept evaluator would read it (``docs/concepts.md`` lists every rule with both
decisions). Where the official checker stops at the first problem, this lists every problem with its
row (the header is row 1) and names the cause at the row where it lies: an unclosed quote, an inner
quote that is not doubled, text after a closing quote or a comma outside quotes, rather than the
symptom the checker meets later (a wrong number of fields, missing ids).

The file is read as the official checkers read it (``eval.clef_csv``): physical lines for blank lines and,
for captions, the quoting of each row, and CSV records for everything else.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from brainvlm.core.jsonio import BOM
from brainvlm.core.textfiles import bad_byte, is_utf16, not_utf8_reason
from brainvlm.eval.clef_csv import (
    HEADERS,
    MAX_CONCEPTS,
    MAX_LISTED,
    SUBMISSION_CUI,
    CsvStop,
    Line,
    Record,
    physical_lines,
    quote_problem,
    read_ids,
    read_records,
    record_at,
    text_after_quote,
)

FIELD_NAMES = {"concepts": "CUIs field", "captions": "caption"}


@dataclass(frozen=True)
class Violation:
    """One broken format rule: the file row (1 = the header; ``None`` for the whole file) and what to do."""

    row: int | None
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{'file' if self.row is None else f'row {self.row}'}: {self.message}"


# ---------------------------------------------------------------------------------------- encoding
def decode_submission(data: bytes) -> tuple[str | None, list[Violation]]:
    """The file's text and its encoding violations: a UTF-8 byte-order mark; bytes that are not UTF-8.

    Text that is not UTF-8 is decoded with replacement characters so the other rules can still be checked,
    except UTF-16 text, which would only give noise: its text is None.
    """
    found = []
    if data.startswith(BOM.encode("utf-8")):
        found.append(Violation(1, "bom", "the file starts with a UTF-8 byte-order mark; save it as UTF-8 "
                                         "without BOM"))
        data = data[3:]
    reason = not_utf8_reason(data)
    if reason is None:
        return data.decode("utf-8"), found
    if is_utf16(data):
        return None, [*found, Violation(None, "encoding", reason)]
    text = data.decode("utf-8", errors="replace")
    record = record_at(read_records(text)[0], len(data[: bad_byte(data)].decode("utf-8")))
    found.append(Violation(record.row if record is not None else None, "encoding", reason))
    return text, found


# ------------------------------------------------------------------------------------- blank lines
def blank_lines(lines: Sequence[Line], records: Sequence[Record]) -> list[Violation]:
    """Whitespace-only physical lines below the first, as the checkers refuse them (inside quotes too)."""
    if not lines:
        return []
    found, starts = [], [r.start for r in records]
    for line in lines[1:]:
        if line.text.strip() or line.text == lines[0].text:
            continue
        record = record_at(records, line.start, starts)
        if record is not None and record.text.strip():
            found.append(Violation(record.row, "blank", f"the row's field holds a blank line (line "
                                                        f"{line.number}); the official checker refuses any "
                                                        "blank line, also inside quotes: write the field on "
                                                        "one line"))
        else:
            row = record.row if record is not None else len(records) + 1
            message = "blank line; remove it (none anywhere, also not at the end)"
            found.append(Violation(row, "blank", message))
    return found


# ------------------------------------------------------------------------------------------ header
def header_violations(records: Sequence[Record], kind: str) -> list[Violation]:
    """The first record must be exactly ``ID,CUIs`` (or ``ID,Caption``) as CSV fields."""
    if not records:
        return [Violation(1, "header", f"the file is empty; the first row must be {HEADERS[kind]!r}")]
    if records[0].fields != HEADERS[kind].split(","):
        message = f"the header is {records[0].text!r}; it must be exactly {HEADERS[kind]!r}"
        return [Violation(1, "header", message)]
    return []


# ----------------------------------------------------------------------------------------- quoting
def quote_message(problem: str, after: str, what: str) -> str:
    """What a quoting problem of the text after the id means, and what to do."""
    if problem == "unquoted-comma":
        return f"the {what} holds a comma but is not in double quotes; write ID,\"text, with commas\""
    if problem == "inner-quote":
        return (f"a double quote inside the quoted {what} is not doubled, so the {what} ends there; write "
                "a quote inside quotes as \"\"")
    if problem == "text-after-quote":
        return (f"text follows the closing double quote of the {what} ({text_after_quote(after)!r}); put "
                f"the whole {what} inside the quotes")
    return (f"the {what} opens a double quote that is never closed, so the rest of the file reads as part "
            "of it; close the quote")


def field_count(record: Record, kind: str) -> list[Violation]:
    """A row without a comma after its id, or with more than two fields (named by its quoting cause)."""
    if len(record.fields) == 1:
        value = "concepts" if kind == "concepts" else "a caption"
        return [Violation(record.row, "comma", f"no comma after the id {record.fields[0]!r}; write "
                                               f"'{record.fields[0]},' for an image without {value}")]
    problem = quote_problem(record.after_id or "")
    if kind == "captions" and problem is not None:
        return [Violation(record.row, problem, quote_message(problem, record.after_id or "", "caption"))]
    return [Violation(record.row, "columns", f"{len(record.fields)} fields; expected 2 (ID and "
                                             f"{'CUIs' if kind == 'concepts' else 'Caption'})"
                                             f"{': separate CUIs with ;' if kind == 'concepts' else ''}")]


def _comma_outside_quotes(line_text: str) -> bool:
    """The caption checker's quoting rule on one physical line: text after the first comma that holds a
    comma must start and end with a double quote."""
    after = line_text.split(",", 1)[1] if "," in line_text else ""
    return "," in after and not (after.startswith('"') and after.endswith('"'))


def line_quoting(lines: Sequence[Line], records: Sequence[Record]) -> list[Violation]:
    """The caption checker's quoting rule, checked as it checks it: the k-th record below the header with
    the k-th physical line below the first, so a caption that spans lines shifts the lines of later rows."""
    found = []
    shifted_by = 1 if records and records[0].n_lines > 1 else None
    for line, record in zip(lines[1:], records[1:]):
        if len(record.fields) == 2 and _comma_outside_quotes(line.text):
            found.append(_quoting_violation(line, record, shifted_by))
        if shifted_by is None and record.n_lines > 1:
            shifted_by = record.row
    return found


def _quoting_violation(line: Line, record: Record, shifted_by: int | None) -> Violation:
    if line.start != record.start:
        return Violation(record.row, "line-break", (
            f"the official checker checks this row's quoting on line {line.number} ({line.text!r}), shifted "
            f"by the line break in the field of row {shifted_by}, and that line holds a comma outside closed "
            f"quotes; write the field of row {shifted_by} on one line"))
    problem = quote_problem(record.after_id or "")
    if problem == "unclosed-quote" or (problem is not None and record.n_lines == 1):
        return Violation(record.row, problem, quote_message(problem, record.after_id or "", "caption"))
    return Violation(record.row, "line-break", (
        f"the caption holds a line break and its first line, {line.text!r}, holds a comma outside closed "
        "quotes (the official checker checks each line alone); write the caption on one line"))


def unclosed_quotes(records: Sequence[Record], kind: str, reported: set[int]) -> list[Violation]:
    """Rows whose field opens a quote never closed (the rest of the file then reads as that field)."""
    message = quote_message("unclosed-quote", "", FIELD_NAMES[kind])
    return [Violation(r.row, "unclosed-quote", message) for r in records[1:]
            if r.row not in reported and quote_problem(r.after_id or "") == "unclosed-quote"]


# ------------------------------------------------------------------------------------------ fields
def whitespace(record: Record, kind: str) -> list[Violation]:
    """Whitespace at either end of the id and, for concepts, of the CUIs field (captions may have it)."""
    named = [("id", record.fields[0])] + ([("CUIs", record.fields[1])] if kind == "concepts" else [])
    return [Violation(record.row, "whitespace", f"the {name} {value!r} has whitespace at an end; remove it")
            for name, value in named if value != value.strip()]


def cuis_field(row: int, field: str) -> list[Violation]:
    """Empty, malformed and repeated CUI tokens, and too many concepts, of one CUIs field (tokens are
    compared stripped, as the checker and the evaluator strip them)."""
    if field.strip() == "":
        return []
    tokens = [token.strip() for token in field.split(";")]
    found = []
    if "" in tokens:
        found.append(Violation(row, "empty-cui", "an empty CUI token (a trailing ';' or ';;'); remove it"))
    bad = [t for t in tokens if t and not SUBMISSION_CUI.fullmatch(t)]
    if bad:
        message = f"{bad[:MAX_LISTED]} are not CUIs: C (upper case) followed by digits"
        found.append(Violation(row, "cui-format", message))
    repeated = sorted({t for t in tokens if t and tokens.count(t) > 1})
    if repeated:
        message = f"CUIs {repeated} appear more than once; keep each once"
        found.append(Violation(row, "duplicate-cui", message))
    if len(tokens) > MAX_CONCEPTS:
        found.append(Violation(row, "too-many", f"{len(tokens)} concepts; at most {MAX_CONCEPTS} per image "
                                                "(the evaluator refuses more)"))
    return found


class IdTracker:
    """Duplicate, unknown, out-of-order and missing ids against the ids file's order."""

    def __init__(self, ids: Sequence[str]):
        self.position = {image_id: index for index, image_id in enumerate(ids)}
        self.ids, self.seen, self.last = list(ids), {}, None

    def check(self, row: int, image_id: str) -> list[Violation]:
        """The id of ``row``: a repeat, not in the ids file, or before the previous row's id there."""
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
        """The ids of the ids file that no row gave."""
        absent = [i for i in self.ids if i not in self.seen]
        if not absent:
            return []
        return [Violation(None, "missing-id", f"{len(absent)} ids of the ids file have no row (first ten: "
                                              f"{absent[:MAX_LISTED]}); write one row per image")]


# -------------------------------------------------------------------------------------------- file
def record_violations(records: Sequence[Record], ids: Sequence[str], kind: str) -> list[Violation]:
    """The rules of each row below the header, and the ids no row gave."""
    tracker, found = IdTracker(ids), []
    for record in records[1:]:
        if not record.text.strip():
            continue  # a blank line: reported with the physical lines
        two = len(record.fields) == 2
        found += whitespace(record, kind) if two else field_count(record, kind)
        found += tracker.check(record.row, record.fields[0])
        found += cuis_field(record.row, record.fields[1]) if two and kind == "concepts" else []
    return found + tracker.missing()


def csv_stop(stop: CsvStop, text: str, kind: str) -> Violation:
    """The row where ``csv.reader`` stopped, and why (a field over the limit, often an unclosed quote's)."""
    limit = csv.field_size_limit()
    rest = text[stop.start:]
    after = rest.split(",", 1)[1] if "," in rest else ""
    if quote_problem(after) == "unclosed-quote":
        return Violation(stop.row, "unclosed-quote", (
            f"the {FIELD_NAMES[kind]} opens a double quote that is never closed, so the rest of the file "
            f"reads as one field, longer than the CSV field limit of {limit:,} characters; close the quote"))
    if "field larger than field limit" in stop.reason:
        return Violation(stop.row, "field-limit", (
            f"a field is longer than the CSV field limit of {limit:,} characters (the official checker "
            "cannot read the file past it); shorten it"))
    return Violation(stop.row, "csv", f"the row cannot be read as CSV ({stop.reason}); check its quotes")


def check_text(text: str, ids: Sequence[str], kind: str) -> list[Violation]:
    """Every violation of a decoded submission text (its byte-order mark removed)."""
    records, stop = read_records(text)
    lines = physical_lines(text)
    found = header_violations(records, kind) + blank_lines(lines, records)
    if kind == "captions":
        found += line_quoting(lines, records)
    if stop is not None:
        found.append(csv_stop(stop, text, kind))
        found += [v for v in record_violations(records, ids, kind) if v.row is not None]
        return found
    found += record_violations(records, ids, kind)
    if found:  # refused anyway: name an unclosed quote, the cause of what followed it
        found += unclosed_quotes(records, kind, {v.row for v in found if v.rule == "unclosed-quote"})
    return found


def check_submission(path: str | Path, ids: Sequence[str] | str | Path,
                     kind: str = "concepts") -> list[Violation]:
    """Every violation of the challenge's format rules in a submission file, in row order.

    A file is valid (no violation) exactly when the official checker of its kind accepts it and, for
    concepts, the official evaluator reads it (at most 100 concepts per image).

    Args:
        ids: the image ids in their official order, or the ids (or gold) file to read them from.
        kind: ``"concepts"`` (``ID,CUIs``) or ``"captions"`` (``ID,Caption``).

    Returns:
        The violations (empty: the file is valid).
    """
    if kind not in HEADERS:
        raise ValueError(f"kind={kind!r}; use one of {sorted(HEADERS)}")
    ids = read_ids(ids) if isinstance(ids, (str, Path)) else [str(i) for i in ids]
    text, found = decode_submission(Path(path).read_bytes())
    if text is not None:
        found += check_text(text, ids, kind)
    return sorted(found, key=lambda v: (v.row is None, v.row or 0))
