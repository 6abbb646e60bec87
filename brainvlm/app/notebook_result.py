"""What the runner knows of one executed notebook; the console and ``index.html`` show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class NotebookResult:
    """Status of one executed notebook."""

    name: str
    status: str = "not run"
    seconds: float = 0.0
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
