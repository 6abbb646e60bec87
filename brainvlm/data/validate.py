"""Validate canonical sample files: JSONL (one sample per line), a JSON array, or one pretty-printed sample.

Each file's samples go through :func:`brainvlm.data.schema.validate_sample`; ids must be unique within a
file, and a file named for a split (``train.jsonl``, ``..._val.jsonl``) holds only that split.
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from brainvlm.core.jsonio import JsonError, scan_records
from brainvlm.data.schema import ISSUE_COLUMNS, SPLITS, ValidationIssue, validate_sample


def split_from_name(path: str | Path) -> str | None:
    """The split a file name declares: ``train.jsonl`` or ``..._train.jsonl`` -> ``train``; else None."""
    stem = Path(path).name.split(".")[0]
    for split in SPLITS:
        if stem == split or stem.endswith(f"_{split}"):
            return split
    return None


def _records(path: Path) -> tuple[list[tuple[int | None, Any]], list[ValidationIssue]]:
    """Parsed samples with their line (None inside a JSON array file) and the parse problems."""
    name = str(path)
    if not path.is_file():
        return [], [ValidationIssue(name, None, None, "$", "file not found")]
    try:
        records, problems = scan_records(path)
    except JsonError as exc:
        return [], [ValidationIssue(name, None, None, "$", str(exc).removeprefix(f"{path}: "))]
    return records, [ValidationIssue(name, line, None, "$", message) for line, message in problems]


def validate_counted(path: str | Path, image_root: str | Path | None,
                      check_images: bool) -> tuple[list[ValidationIssue], int]:
    """Issues of one file and the number of samples parsed from it."""
    path = Path(path)
    records, issues = _records(path)
    if not records and not issues:
        issues.append(ValidationIssue(str(path), None, None, "$", "no samples in the file"))
    expected = split_from_name(path)
    first_line: dict[str, tuple[str, str]] = {}  # NFC-normalised id -> (id as written, where)
    for index, (line, sample) in enumerate(records):
        found = validate_sample(sample, image_root if check_images else None, expected_split=expected)
        issues.extend(replace(issue, file=str(path), line=line) for issue in found)
        sample_id = sample.get("id") if isinstance(sample, dict) else None
        if not isinstance(sample_id, str):
            continue
        key = unicodedata.normalize("NFC", sample_id)
        if key in first_line:
            seen_id, seen_at = first_line[key]
            same = ("" if seen_id == sample_id
                    else f" ({seen_id!r} and {sample_id!r} are equal after Unicode NFC normalisation)")
            issues.append(ValidationIssue(str(path), line, sample_id, "$.id",
                                          f"duplicate id, first seen at {seen_at}{same}"))
        else:
            first_line[key] = (sample_id, f"line {line}" if line is not None else f"item {index}")
    issues.sort(key=lambda i: (i.line if i.line is not None else 0))
    return issues, len(records)


def validate_file(path: str | Path, image_root: str | Path | None = None,
                  check_images: bool = True) -> list[ValidationIssue]:
    """Validate a JSONL file (one sample per line) or a JSON array file; return every issue.

    Args:
        path: the file; its name sets the expected split when it is ``train``/``val``/``test``
            (or ends in ``_train`` etc.).
        image_root: folder the image paths are relative to; without it, image files are not looked up.
        check_images: look up every image under ``image_root``.
    """
    return validate_counted(path, image_root, check_images)[0]


def validate_files(paths: list[str | Path], image_root: str | Path | None = None,
                   check_images: bool = True) -> pd.DataFrame:
    """Every issue of every file as a table (columns ``ISSUE_COLUMNS``; empty when all are valid)."""
    rows = [vars(issue) for path in paths for issue in validate_file(path, image_root, check_images)]
    frame = pd.DataFrame(rows, columns=list(ISSUE_COLUMNS))
    return frame.astype({"line": "Int64"})
