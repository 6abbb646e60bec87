"""Report files in the CheXpert labeler's layout: a CSV of reports in, a CSV of CheXpert-14 labels out.

In: one report per row, no header, a report with a comma or a line break in double quotes (the labeler's
``sample_reports.csv``). Out: the labeler's ``labeled_reports.csv`` layout: a ``Reports`` column with each
report as read, then the 14 observations in the labeler's order, each ``1.0``, ``0.0``, ``-1.0`` or blank.
Rows are numbered from 1 over the reports (blank lines, which the labeler skips, are not counted).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from brainvlm.core.textfiles import bad_byte, is_utf16, not_utf8_reason
from brainvlm.eval.chexpert_labeler import OBSERVATIONS, label_report

REPORTS_COLUMN = "Reports"
LAYOUT = "one report per row, no header (a report with a comma or a line break in double quotes)"


class ReportsFileError(ValueError):
    """A reports or labels file that cannot be read or written; the message names the file and row."""


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ReportsFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportsFileError(f"{path}: a folder, not a reports CSV file") from None
    except OSError as exc:
        raise ReportsFileError(f"{path}: cannot read it ({exc.strerror})") from None


def _row_at(text_before: str) -> int:
    """The row in which a file's text continues after ``text_before`` (blank lines not counted)."""
    return sum(1 for fields in csv.reader(io.StringIO(text_before + "x", newline="")) if fields)


def _decode(path: Path, data: bytes) -> str:
    reason = not_utf8_reason(data)
    if reason is None:
        return data.decode("utf-8").removeprefix("\ufeff")
    if is_utf16(data):
        raise ReportsFileError(f"{path}: {reason}")
    row = _row_at(data[: bad_byte(data)].decode("utf-8"))
    raise ReportsFileError(f"{path} row {row}: {reason}")


def _report(path: Path, row: int, fields: list[str]) -> str:
    """The report of one CSV row, or an error naming the row."""
    if len(fields) != 1:
        raise ReportsFileError(f"{path} row {row}: {len(fields)} fields, expected 1; put a report that holds a "
                               "comma in double quotes")
    if not fields[0].strip():
        raise ReportsFileError(f"{path} row {row}: an empty report; remove the row or give its text")
    if row == 1 and fields[0].strip() == REPORTS_COLUMN:
        raise ReportsFileError(f"{path} row 1: a header ({REPORTS_COLUMN!r}); the reports file has none: remove it")
    return fields[0]


def read_reports(path: str | Path) -> list[str]:
    """The reports of a reports CSV, as the labeler reads them.

    Raises:
        ReportsFileError: a missing, empty or non-UTF-8 file, a row with more than one field, an empty
            report, a header row, or an unclosed quote; the message names the file and row.
    """
    path = Path(path)
    text = _decode(path, _read_bytes(path))
    if not text.strip():
        raise ReportsFileError(f"{path}: empty file; expected {LAYOUT}")
    reports: list[str] = []
    try:
        for fields in csv.reader(io.StringIO(text, newline=""), strict=True):
            if fields:
                reports.append(_report(path, len(reports) + 1, fields))
    except csv.Error as exc:
        raise ReportsFileError(f"{path} row {len(reports) + 1}: not a CSV row ({exc}); expected {LAYOUT}") from None
    return reports


def label_cell(value: int | None) -> str:
    """A label as the labeler writes it: ``1.0``, ``0.0``, ``-1.0``, or blank."""
    return "" if value is None else f"{float(value):.1f}"


def labels_row(report: str) -> list[str]:
    """One output row: the report as read, then its 14 labels in the labeler's column order."""
    labels = label_report(report)
    return [report, *(label_cell(labels.get(name)) for name in OBSERVATIONS)]


def write_labels(reports: list[str], path: str | Path) -> Path:
    """Write the labels of ``reports`` to ``path`` in the labeler's ``labeled_reports.csv`` layout."""
    path = Path(path)
    try:
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([REPORTS_COLUMN, *OBSERVATIONS])
            writer.writerows(labels_row(report) for report in reports)
    except OSError as exc:
        raise ReportsFileError(f"{path}: cannot write the labels ({exc.strerror})") from None
    return path


def label_file(reports_path: str | Path, out_path: str | Path) -> int:
    """Label every report of ``reports_path`` into ``out_path``; returns the number of reports."""
    if Path(out_path).resolve() == Path(reports_path).resolve():
        raise ReportsFileError(f"{out_path}: the output is the reports file itself; write the labels elsewhere")
    reports = read_reports(reports_path)
    write_labels(reports, out_path)
    return len(reports)
