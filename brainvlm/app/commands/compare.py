"""``brainvlm compare``: run folders' metrics side by side, a table, a page and a figure per metric."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainvlm.app.commands.common import fail, reports_dir

HELP = "compare run folders' metrics: a table, a page, a figure per metric"


def parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm compare``."""
    out = argparse.ArgumentParser(prog="brainvlm compare",
                                  description="brainvlm compare RUN_DIR... [--group-by KEY] [--out DIR]: "
                                              "one table, one HTML page.")
    out.add_argument("runs", nargs="+", help="run folders (reports/<run>/), or sweep folders for their runs")
    out.add_argument("--group-by", default=None, help="params key on the figures' x axis (default: the "
                                                      "first key that differs between runs)")
    out.add_argument("--out", default=None, help="output folder (default: reports/compare/)")
    return out


def main(argv: list[str]) -> int:
    """``brainvlm compare RUN_DIR... [--group-by KEY] [--out DIR]``: one table, one HTML page; a note on
    stderr for a failed or unfinished run and for runs that share no metric; exit 2 with one line when the
    folders cannot be compared."""
    args = parser().parse_args(argv)
    from brainvlm.app.compare import compare_runs, read_runs, run_notes

    folders = [Path(r) for r in args.runs]
    try:
        out = Path(args.out) if args.out else reports_dir() / "compare"
        page = compare_runs(folders, out, args.group_by)
        notes = run_notes(read_runs(folders))
    except (ValueError, OSError) as exc:  # CompareError, and a metrics or provenance file that is not JSON
        return fail("compare", exc, 2)
    for note in notes:
        fail("compare", f"note: {note}")
    print(f"comparison: {page}")
    return 0
