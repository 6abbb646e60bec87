"""``brainvlm run``: execute the notebooks into ``reports/<run>/`` and render HTML."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from brainvlm.app.commands.common import (
    UsageError,
    check_only,
    check_params_file,
    check_run_name,
    fail,
    parse_overrides,
    reports_dir,
)

HELP = "execute the notebooks into reports/<run>/ and render HTML"


def parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm run``."""
    out = argparse.ArgumentParser(prog="brainvlm run", description=HELP)
    out.add_argument("--params", required=True, help="flat YAML params file, e.g. params/default.yaml")
    out.add_argument("--run", default=None, help="run name: reports/<run>/ (default: the params file's stem)")
    out.add_argument("--only", default=None, help="comma-separated notebook numbers or names, e.g. 01,02")
    out.add_argument("--reports-dir", default=None, help="parent folder of runs (default: reports/)")
    out.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                     help="override one params key (value read as YAML)")
    out.add_argument("--prepare-only", action="store_true",
                     help="write each notebook with the params injected, unexecuted, into reports/<run>/ (to open "
                          "in JupyterLab and run cell by cell)")
    out.add_argument("--threads", type=int, default=None,
                     help="torch threads of the notebooks (default: OMP_NUM_THREADS, else the cores this process "
                          "may use); recorded in provenance.json")
    out.add_argument("--verbose", action="store_true",
                     help="also show the kernels' own log lines, e.g. start-up warnings (hidden by default)")
    return out


def main(argv: list[str]) -> int:
    """Run the notebooks; the console shows each one's start, end and progress (``app.console``)."""
    args = parser().parse_args(argv)
    from brainvlm.app.console import Console
    from brainvlm.app.params import ParamsError
    from brainvlm.app.run_folder import RunFolderError
    from brainvlm.app.runner import NotebookFailed, prepare, run

    try:
        check_run_name(args.run)
        check_only(args.only)
    except UsageError as exc:
        return fail("run", exc, 2)
    console = Console(stream=sys.stdout, verbose=args.verbose)
    reports = Path(args.reports_dir) if args.reports_dir else reports_dir()
    try:
        check_params_file(args.params)
        if args.prepare_only:
            written = prepare(Path(args.params), run_name=args.run, only=args.only,
                              overrides=parse_overrides(args.p), reports_dir=reports)
            print("\n".join(["prepared, not executed (open them in JupyterLab):", *map(str, written)]))
            return 0
        run(Path(args.params), run_name=args.run, only=args.only, overrides=parse_overrides(args.p),
            reports_dir=reports, console=console, threads=args.threads)
    except (ParamsError, NotebookFailed, RunFolderError) as exc:
        return fail("run", exc)
    return 0
