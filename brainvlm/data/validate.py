"""Validate canonical sample files: JSONL (one sample per line), a JSON array, or one pretty-printed sample.

Each file's samples go through :func:`brainvlm.data.schema.validate_sample`; ids must be unique within a
file, and a file named for a split (``train.jsonl``, ``..._val.jsonl``) holds only that split.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], [ValidationIssue(name, None, None, "$", "file not found")]
    except UnicodeDecodeError as exc:
        return [], [ValidationIssue(name, None, None, "$", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
    if text.lstrip().startswith("["):
        try:
            array = json.loads(text)
        except json.JSONDecodeError as exc:
            return [], [ValidationIssue(name, exc.lineno, None, "$", f"invalid JSON: {exc.msg} (column {exc.colno})")]
        return [(None, item) for item in array], []
    single = _single_object(text)
    if single is not None:  # one pretty-printed sample (the files under samples/)
        return [single], []
    records, problems = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(ValidationIssue(name, number, None, "$", f"invalid JSON: {exc.msg} (column {exc.colno})"))
    return records, problems


def _single_object(text: str) -> tuple[int, dict] | None:
    """``(first line, object)`` when the whole text is one JSON object spread over several lines."""
    lines = text.strip().split("\n")
    if len(lines) < 2 or not lines[0].lstrip().startswith("{"):
        return None
    try:
        json.loads(lines[0])
        return None  # a JSONL file whose first line is a complete sample
    except json.JSONDecodeError:
        pass
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return (len(text) - len(text.lstrip("\n")) + 1, value) if isinstance(value, dict) else None


def validate_counted(path: str | Path, image_root: str | Path | None,
                      check_images: bool) -> tuple[list[ValidationIssue], int]:
    """Issues of one file and the number of samples parsed from it."""
    path = Path(path)
    records, issues = _records(path)
    if not records and not issues:
        issues.append(ValidationIssue(str(path), None, None, "$", "no samples in the file"))
    expected = split_from_name(path)
    first_line: dict[str, int | str] = {}
    for index, (line, sample) in enumerate(records):
        found = validate_sample(sample, image_root if check_images else None, expected_split=expected)
        issues.extend(replace(issue, file=str(path), line=line) for issue in found)
        sample_id = sample.get("id") if isinstance(sample, dict) else None
        if not isinstance(sample_id, str):
            continue
        if sample_id in first_line:
            issues.append(ValidationIssue(str(path), line, sample_id, "$.id",
                                          f"duplicate id, first seen at {first_line[sample_id]}"))
        else:
            first_line[sample_id] = f"line {line}" if line is not None else f"item {index}"
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
