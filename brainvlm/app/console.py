"""What a person sees at the console during ``brainvlm run``.

A line when the run starts, a line as each notebook starts and as it ends (number in the run, name,
status, duration) or is left out (``not run: needs 04``), papermill's progress bar of the notebook's cells
while it runs (on a terminal), and a summary with the path of ``index.html`` at the end. A sweep shows the
notebook lines of each of its runs (``is_notebook_line``), prefixed with the run's name. The kernel's own log lines (the start-up warning
``[IPKernelApp] WARNING | Kernel is running over TCP without encryption``, the ``KeyboardInterrupt caught in
kernel`` some kernels log as they shut down) are hidden unless ``verbose``; the notebook's outputs, errors
included, go to the executed notebook either way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from brainvlm.app.notebook_result import NotebookResult

QUIET_KERNEL = ["--IPKernelApp.log_level=CRITICAL"]  # the kernel's own log (not the notebook's output)
ERROR_INDENT = "      "  # the error under a failed notebook's line
NOTEBOOK_LINE = re.compile(r"^\[\d+/\d+\] ")  # "[2/5] 04_train_lora ...": a notebook started, ended or left out


@dataclass
class Console:
    """The run's console lines and bars.

    Args:
        stream: where lines and the bar go; None shows nothing (the library's default).
        verbose: show the kernel's own log lines (its start-up warnings).
        bar: show the progress bar; None shows it only when ``stream`` is a terminal.
    """

    stream: TextIO | None = None
    verbose: bool = False
    bar: bool | None = None

    def say(self, line: str) -> None:
        """Write one line, at once."""
        if self.stream is not None:
            print(line, file=self.stream, flush=True)

    def kernel_arguments(self) -> list[str]:
        """Arguments for the kernel's command line: its start-up warnings off unless verbose."""
        return [] if self.verbose else list(QUIET_KERNEL)

    def progress_bar(self, name: str) -> dict[str, Any] | bool:
        """papermill's ``progress_bar`` argument: tqdm options for a bar of the notebook's cells, or False."""
        if self.stream is None or self.bar is False:
            return False
        if self.bar is None and not _is_terminal(self.stream):
            return False
        return {"desc": name, "file": self.stream, "leave": False, "dynamic_ncols": True, "mininterval": 0}

    def run_started(self, run_dir: Path, names: list[str]) -> None:
        self.say(f"brainvlm run {run_dir.name}: {len(names)} notebook{'s' if len(names) != 1 else ''} "
                 f"({', '.join(names)}) -> {shown_path(run_dir)}/")

    def notebook_started(self, index: int, total: int, name: str) -> None:
        self.say(f"[{index}/{total}] {name:30s} started  {time.strftime('%H:%M:%S')}")

    def notebook_ended(self, index: int, total: int, result: NotebookResult) -> None:
        error = f"\n{ERROR_INDENT}{result.error}" if result.error else ""
        self.say(f"[{index}/{total}] {result.name:30s} {result.status:8s} {duration(result.seconds)}{error}")

    def notebook_skipped(self, index: int, total: int, result: NotebookResult) -> None:
        """A notebook left out because a notebook it needs failed or was not run."""
        self.say(f"[{index}/{total}] {result.name:30s} {result.status}")

    def run_ended(self, results: list[NotebookResult], index_html: Path) -> None:
        """The summary of every notebook of the run (those of earlier runs marked so) and the index."""
        self.say("")
        for r in results:
            self.say(f"  {r.name:30s} {r.status:16s} {duration(r.seconds) if r.was_run else ''}".rstrip())
        self.say(f"report: {shown_path(index_html)}")


def is_notebook_line(line: str) -> bool:
    """Whether a line of ``brainvlm run``'s output is a notebook's start, end or leaving out, or the error
    under a failed one: what a sweep shows of each run."""
    return bool(NOTEBOOK_LINE.match(line)) or (line.startswith(ERROR_INDENT) and bool(line.strip()))


def duration(seconds: float) -> str:
    """``7.3 s``, or ``4 min 05 s`` from a minute on."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def shown_path(path: Path) -> Path:
    """``path`` relative to the working directory when it lies inside it (``reports/default/``)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd())
    except ValueError:
        return Path(path)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
