"""What the runner knows of one executed notebook; the console and ``index.html`` show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NOT_RUN = "not run"  # the status of a notebook the run did not execute (``not run: needs 04`` says why)


@dataclass
class NotebookResult:
    """Status of one executed notebook: ``ok``, ``failed``, or ``not run: needs 04`` (``(earlier)`` appended
    for a notebook an earlier run of the folder executed)."""

    name: str
    status: str = NOT_RUN
    seconds: float = 0.0
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def was_run(self) -> bool:
        """Whether the notebook executed (it may have failed); False for one the run left out."""
        return not self.status.startswith(NOT_RUN)


def not_run(name: str, unmet: list[str]) -> NotebookResult:
    """The result of a notebook left out because the notebooks ``unmet`` (names) failed or did not run."""
    numbers = ", ".join(needed.split("_", 1)[0] for needed in unmet)
    return NotebookResult(name, f"{NOT_RUN}: needs {numbers}")
