"""The one way brainvlm writes and reads JSON and JSONL.

Every JSON file brainvlm writes goes through :func:`dumps`, so reruns give the same bytes:

- keys sorted, UTF-8 (non-ASCII written as is), no byte-order mark, ``\\n`` after each document or line;
- strict numbers: ``NaN`` and ``Infinity`` are not JSON, so writing one is an error naming where it sits
  (a metric that is legitimately undefined is written as ``null`` by the caller, never as ``NaN``);
- NumPy scalars are written as the Python number they hold, paths as POSIX strings;
- JSONL: one compact object per line (no spaces after separators); JSON files: indented.

Readers are strict in the same way: ``NaN``/``Infinity`` and an object with a repeated key are errors
(Python's ``json`` would accept the first and keep the last value of the second silently). They accept
one leading UTF-8 byte-order mark (spreadsheet programs write one) and drop it: the policy is the same
for tables, JSON and JSONL. A line that is not a JSON object is an error naming the file and line.
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
    value = data.item() if hasattr(data, "item") else data  # NumPy scalars
    if isinstance(value, float):
        return None if math.isfinite(value) else path
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
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise JsonError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    return text[1:] if text.startswith(BOM) else text


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite); write null, or fix what produced it")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"duplicate key(s) {repeated} in one object (JSON readers keep the last silently); "
                         "keep one")
    return dict(pairs)


def loads(text: str) -> Any:
    """Parse JSON strictly: ``NaN``/``Infinity`` and an object with a repeated key are errors.

    Raises:
        json.JSONDecodeError: invalid JSON.
        ValueError: a non-finite number or a repeated key.
    """
    return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)


def _message(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} (column {exc.colno}); check it with `python -m brainvlm validate`"
    return str(exc)


def read_json(path: str | Path) -> Any:
    """One JSON document; an invalid file is an error naming the file, line and column."""
    text = read_text(path)
    try:
        return loads(text)
    except json.JSONDecodeError as exc:
        raise JsonError(f"{path}:{exc.lineno}: {_message(exc)}") from None
    except ValueError as exc:
        raise JsonError(f"{path}: {exc}") from None


def _scan_lines(text: str) -> tuple[list[tuple[int, Any]], list[tuple[int, str]]]:
    records, problems = [], []
    for number, line in enumerate(text.split("\n"), start=1):  # \n only: U+2028 may sit inside a string
        if not line.strip():
            continue
        try:
            records.append((number, loads(line)))
        except ValueError as exc:
            problems.append((number, _message(exc)))
    return records, problems


def read_jsonl_numbered(path: str | Path) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSONL file.

    Raises:
        JsonError: a line that is not valid JSON or not a JSON object, naming the file and line.
    """
    records, problems = _scan_lines(read_text(path))
    if problems:
        raise JsonError(f"{path}:{problems[0][0]}: {problems[0][1]}")
    for number, record in records:
        if not isinstance(record, dict):
            raise JsonError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
    return records


def read_jsonl(path: str | Path) -> list[dict]:
    """Every object of a JSONL file (blank lines skipped)."""
    return [record for _, record in read_jsonl_numbered(path)]


def scan_records(path: str | Path) -> tuple[list[tuple[int | None, Any]], list[tuple[int | None, str]]]:
    """Every record of a samples file and every parse problem, as ``(line, record)`` and ``(line, message)``.

    The one policy for sample files (validator, ``brainvlm evaluate``, training): JSONL (one object per
    line), a JSON array (line ``None``: the item index names a record), or one pretty-printed object (the
    files under ``data/<task>/samples/``). Numbers must be finite and keys unique in every layout.

    Raises:
        JsonError: a file that is not UTF-8.
    """
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            array = loads(text)
        except json.JSONDecodeError as exc:
            return [], [(exc.lineno, _message(exc))]
        except ValueError as exc:
            return [], [(None, str(exc))]
        if not isinstance(array, list):
            return [], [(None, "expected a JSON array of objects")]
        return [(None, item) for item in array], []
    single = _single_object(text)
    if single is not None:
        return [single], []
    return _scan_lines(text)


def read_records(path: str | Path) -> list[tuple[int | None, Any]]:
    """``scan_records`` that stops at the first problem (a :class:`JsonError` naming the file and line)."""
    records, problems = scan_records(path)
    if problems:
        line, message = problems[0]
        raise JsonError(f"{path}:{line}: {message}" if line is not None else f"{path}: {message}")
    return records


def _single_object(text: str) -> tuple[int, dict] | None:
    """``(first line, object)`` when the whole text is one JSON object spread over several lines."""
    lines = text.strip().split("\n")
    if len(lines) < 2 or not lines[0].lstrip().startswith("{"):
        return None
    try:
        json.loads(lines[0])
        return None  # a JSONL file whose first line is a complete sample
    except ValueError:
        pass
    try:
        value = loads(text)
    except ValueError:
        return None
    return (len(text) - len(text.lstrip("\n")) + 1, value) if isinstance(value, dict) else None
