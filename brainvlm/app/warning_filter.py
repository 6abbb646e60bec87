"""Warnings of dependencies taken out of a notebook's outputs for the paper-ready ``.report.html``.

The executed notebook and its full ``.html`` keep every output; only the copy exported without code loses:

- Python warnings on stderr (``path.py:12: FutureWarning: ...``) with the indented source line under each
  (``  warnings.warn(``);
- logging lines at WARNING level in a format that names the level (``WARNING:name:...``,
  ``[time] [WARNING] [file] ...``, ``... - WARNING - ...``, ``[W1130 17:00:00 file.cpp:12] ...``), on
  either stream, unless the logger is brainvlm's own.

Errors, tracebacks and the notebook's own prints stay; a stream output left empty is dropped.
"""

from __future__ import annotations

import copy
import re

from nbformat import NotebookNode

PYTHON_WARNING = re.compile(r"^.+:\d+: \w*Warning: ")
LOGGED_WARNING = re.compile(
    r"^(?:"
    r"(?:\[[^\]]*\]\s*)*\[?WARN(?:ING)?\]?\s*[|:\]-]"  # WARNING:name:msg, [app] WARNING | msg
    r"|(?:\[[^\]]*\]\s*)+\[WARN(?:ING)?\]"  # [time] [WARNING] [file:line] msg
    r"|\S.* - WARN(?:ING)? - "  # time - name - WARNING - msg
    r"|\[?W\d{4} \d\d:\d\d:\d\d"  # glog and PyTorch's C++ warnings
    r")")
OWN_LOGGER = re.compile(r"\bbrainvlm[.:]")


def is_logged_warning(line: str) -> bool:
    """A logging line at WARNING level from a logger other than brainvlm's."""
    return bool(LOGGED_WARNING.match(line)) and not OWN_LOGGER.search(line)


class WarningLines:
    """Drops warning lines from the stream texts of one cell, in order.

    A Python warning's source line may arrive in the next stderr output, so the state carries over.
    """

    def __init__(self) -> None:
        self.in_python_warning = False

    def keep(self, line: str, stream: str) -> bool:
        """Whether ``line`` of ``stream`` (``stdout`` or ``stderr``) stays in the report."""
        if stream == "stderr" and PYTHON_WARNING.match(line):
            self.in_python_warning = True
            return False
        if stream == "stderr" and self.in_python_warning and line[:1] in (" ", "\t"):
            return False
        if stream == "stderr":
            self.in_python_warning = False
        return not is_logged_warning(line)

    def text(self, text: str | list[str], stream: str) -> str:
        """``text`` without its warning lines."""
        text = "".join(text) if isinstance(text, list) else text
        return "".join(line for line in text.splitlines(keepends=True) if self.keep(line, stream))


def without_dependency_warnings(notebook: NotebookNode) -> NotebookNode:
    """A copy of ``notebook`` whose stream outputs hold no dependency warnings (the module's rules)."""
    clean = copy.deepcopy(notebook)
    for cell in clean.cells:
        if "outputs" in cell:
            cell.outputs = cell_outputs_without_warnings(cell.outputs)
    return clean


def cell_outputs_without_warnings(outputs: list) -> list:
    """One cell's outputs with warning lines taken out of its streams; emptied stream outputs dropped."""
    lines = WarningLines()
    kept = []
    for output in outputs:
        if output.get("output_type") == "stream":
            output["text"] = lines.text(output.get("text", ""), output.get("name", "stdout"))
            if not output["text"]:
                continue
        kept.append(output)
    return kept
