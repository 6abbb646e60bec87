"""``brainvlm sweep``: a grid of params values times seeds, locally or as a SLURM job array."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainvlm.app.commands.common import (
    UsageError,
    check_only,
    check_params_file,
    check_run_name,
    fail,
    reports_dir,
)

HELP = "run a grid of params values x seeds, locally or as a SLURM job array"


def parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm sweep`` (docs/sweeps.md)."""
    out = argparse.ArgumentParser(prog="brainvlm sweep",
                                  description="Run a grid of params values times seeds, each a normal "
                                              "run, locally or as a SLURM job array (docs/sweeps.md).")
    out.add_argument("--params", default=None, help="the base params file of every run")
    out.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                     help="a params key and its values (scalars, read as YAML); repeat for more keys")
    out.add_argument("--sweep", default=None, metavar="FILE.yaml",
                     help="sweep file: grid: (any values, lists too), seeds:, resources:")
    out.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    out.add_argument("--only", default=None, help="comma-separated notebook numbers each run executes")
    out.add_argument("--executor", default="local", choices=["local", "slurm"])
    out.add_argument("--name", default=None, help="sweep folder reports/<name>/ (default: <params stem>_sweep)")
    out.add_argument("--reports-dir", default=None, help="parent folder of sweeps (default: reports/)")
    out.add_argument("--status", action="store_true", help="show each run's state and exit")
    out.add_argument("--wait", action="store_true", help="slurm: return once no run is pending or running")
    slurm = out.add_argument_group("SLURM resources (override the sweep file's resources:)")
    for flag, kind, text in (("--partition", str, "partition"), ("--gpus", int, "GPUs per run"),
                             ("--cpus", int, "CPUs per run"), ("--mem-gb", int, "memory per run in GB"),
                             ("--time-min", int, "time limit per run in minutes (default: the partition's)"),
                             ("--account", str, "account to charge"),
                             ("--array-parallelism", int, "runs at once (default: all)")):
        slurm.add_argument(flag, type=kind, default=None, help=text)
    return out


def _any_failed(states: dict) -> int:
    return 1 if any(s["state"] == "failed" for s in states.values()) else 0


def main(argv: list[str]) -> int:
    """``brainvlm sweep --params P [--grid KEY=V1,V2 ...] [--sweep FILE] [--seeds 0,1]
    [--executor local|slurm]``, or ``--status``: exit 1 when a run failed or the sweep cannot run."""
    from brainvlm.app import sweep, sweep_spec
    from brainvlm.app.compare import CompareError
    from brainvlm.app.params import ParamsError
    from brainvlm.app.slurm import SubmissionError

    args = parser().parse_args(argv)
    if not args.params and not (args.status and args.name):
        return fail("sweep", "give --params (or --status --name NAME)", 2)
    try:
        check_run_name(args.name, "--name")
        check_only(args.only)
    except UsageError as exc:
        return fail("sweep", exc, 2)
    name = args.name or f"{Path(args.params).stem}_sweep"
    reports = Path(args.reports_dir) if args.reports_dir else reports_dir()
    try:
        if args.status:
            lines, states = sweep.sweep_status(reports / name)
            print("\n".join(lines))
            return _any_failed(states)
        check_params_file(args.params)
        resources = {key: getattr(args, key) for key in sweep_spec.RESOURCES}
        spec = sweep_spec.combine(sweep_spec.read_sweep_file(Path(args.sweep)) if args.sweep else None,
                                  sweep_spec.parse_grid(args.grid), sweep_spec.parse_seeds(args.seeds), resources)
        request = sweep.SweepRequest(Path(args.params), spec, name, reports, args.only, args.executor,
                                     args.wait)
        states = sweep.run_sweep(request, say=lambda line: print(line, flush=True))
    except (ParamsError, SubmissionError, CompareError) as exc:
        return fail("sweep", exc)
    return _any_failed(states)
