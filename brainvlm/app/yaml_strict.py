"""YAML files read strictly: UTF-8 text only, and a key given twice in one mapping is an error.

PyYAML's ``safe_load`` keeps the last of two equal keys without a word (``grid:`` twice in a sweep file
silently drops the first grid), and reading a UTF-16 file fails with a ``UnicodeDecodeError`` that names no
file. :func:`read_mapping` is the reader of params and sweep files: every refusal names the file, and a
syntax error or a repeated key its line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from brainvlm.core.textfiles import NotUtf8Error, read_utf8

BOM = "\ufeff"


class DuplicateKeyError(ConstructorError):
    """A mapping that gives one key twice (a ``yaml.YAMLError``, with the line of the second)."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        self._refuse_repeated_keys(node)
        return super().construct_mapping(node, deep=deep)

    def _refuse_repeated_keys(self, node: MappingNode) -> None:
        """The mapping's own keys, each once (keys merged in with ``<<`` may be overridden, as YAML says)."""
        first: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key: the base constructor says so
                break
            if seen is not None:
                raise DuplicateKeyError(None, None, f"the key {key!r} is given twice (first on line "
                                        f"{seen.line + 1}); keep one", key_node.start_mark)
            first[key] = key_node.start_mark


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` that raises :class:`DuplicateKeyError` for a key given twice in one mapping."""
    return yaml.load(text, Loader=StrictLoader)  # StrictLoader is a SafeLoader: no arbitrary objects


def read_mapping(path: str | Path, what: str, shape: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """A YAML file holding one mapping (an empty file is an empty mapping), read strictly.

    Args:
        what: the kind of file in messages ("params file").
        shape: what it holds ("a flat mapping of keys to values").
        error: the exception class to raise.

    Raises:
        error: a missing file, a file that is not UTF-8, a syntax error or a repeated key (with the line and
            column), or a document that is not a mapping; each names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        data = safe_load(read_utf8(path).removeprefix(BOM)) or {}
    except NotUtf8Error as exc:
        raise error(str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{where}: not valid YAML ({problem}); a {what} is {shape}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} is {shape}, got {type(data).__name__}")
    return data
