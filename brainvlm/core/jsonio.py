"""The one way brainvlm writes and reads JSON and JSONL.

Every JSON file brainvlm writes goes through :func:`dumps`, so reruns give the same bytes:

- keys sorted, UTF-8 (non-ASCII written as is), no byte-order mark, ``\\n`` after each document or line;
- strict numbers: ``NaN`` and ``Infinity`` are not JSON, so writing one is an error naming where it sits
  (a metric that is legitimately undefined is written as ``null`` by the caller, never as ``NaN``);
- NumPy scalars are written as the Python number they hold, paths as POSIX strings;
- JSONL: one compact object per line (no spaces after separators); JSON files: indented.

Readers accept one leading UTF-8 byte-order mark (spreadsheet programs write one) and drop it: the
policy is the same for tables, JSON and JSONL. A line that is not a JSON object is an error naming the
file and line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

BOM = "\ufeff"


class JsonError(ValueError):
    """A file that is not the JSON brainvlm expects; the message names the file and line."""


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def non_finite_path(data: Any, path: str = "$") -> str | None:
    """The JSON path of the first NaN or infinite number in ``data`` (``None`` when every number is finite)."""
    if isinstance(data, float) or hasattr(data, "item") and isinstance(data.item(), float):
        return None if math.isfinite(float(data)) else path
    if isinstance(data, dict):
        for key, value in data.items():
            found = non_finite_path(value, f"{path}.{key}")
            if found:
                return found
    elif isinstance(data, (list, tuple)):
        for index, value in enumerate(data):
            found = non_finite_path(value, f"{path}[{index}]")
            if found:
                return found
    return None


def dumps(data: Any, indent: int | None = None) -> str:
    """``data`` as deterministic, strict JSON text: compact on one line, or indented by ``indent``.

    Raises:
        ValueError: a NaN or infinite number, with its JSON path.
    """
    separators = (",", ":") if indent is None else (",", ": ")
    try:
        return json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=False, indent=indent,
                          separators=separators, default=_jsonable)
    except ValueError as exc:
        where = non_finite_path(data)
        if where is None:
            raise
        raise ValueError(f"{where}: NaN or infinity is not valid JSON; write null (and say why) "
                         "or fix the input that produced it") from exc


def write_json(data: Any, path: str | Path, indent: int = 2) -> Path:
    """Write one JSON document (indented, trailing newline); the parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((dumps(data, indent=indent) + "\n").encode("utf-8"))
    return path


def jsonl_bytes(rows: list[Any]) -> bytes:
    """Rows as JSONL bytes: one compact, key-sorted object per line.

    Raises:
        ValueError: a non-finite number, naming the row (1-based: the line it would have been) and path.
    """
    lines = []
    for number, row in enumerate(rows, start=1):
        try:
            lines.append(dumps(row) + "\n")
        except ValueError as exc:
            raise ValueError(f"row {number}: {exc}") from exc
    return "".join(lines).encode("utf-8")


def write_jsonl(rows: list[Any], path: str | Path) -> Path:
    """Write rows as JSONL (replacing the file); byte-identical for the same rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jsonl_bytes(rows))
    return path


def append_jsonl(path: str | Path, rows: list[Any]) -> None:
    """Append rows in one ``write`` and force them to disk before returning.

    One write per call means a kill leaves either every row or a torn last line (cut on the next
    resume), never rows split between two runs on whole lines.
    """
    data = jsonl_bytes(rows)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_text(path: str | Path) -> str:
    """A UTF-8 text file without its byte-order mark, if it has one."""
    text = Path(path).read_text(encoding="utf-8")
    return text[1:] if text.startswith(BOM) else text


def read_json(path: str | Path) -> Any:
    """One JSON document; an invalid file is an error naming the file, line and column."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise JsonError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from None


def read_jsonl_numbered(path: str | Path) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSONL file (split on ``\\n`` only).

    Raises:
        JsonError: a line that is not valid JSON or not a JSON object, naming the file and line.
    """
    out = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JsonError(f"{path}:{number}: invalid JSON ({exc.msg}, column {exc.colno}); "
                            "check it with `python -m brainvlm validate`") from None
        if not isinstance(record, dict):
            raise JsonError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        out.append((number, record))
    return out


def read_jsonl(path: str | Path) -> list[dict]:
    """Every object of a JSONL file (blank lines skipped)."""
    return [record for _, record in read_jsonl_numbered(path)]
