"""``brainvlm train``: one task's LoRA adapter from a params file; the entry point torchrun starts."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from brainvlm.app.commands.common import (
    UsageError,
    check_params_file,
    check_run_name,
    fail,
    parse_overrides,
    reports_dir,
)

HELP = "train one task's LoRA adapter from a params file (torchrun-ready)"
STUDIES = ("brain", "report", "cl", "concepts")  # --study NAME: a module of brainvlm.studies with train(...)


def study_module(study: str):
    """The module of ``brainvlm.studies`` that a ``--study`` name selects."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; studies: {list(STUDIES)}")
    return importlib.import_module(f"brainvlm.studies.{study}")


def study_params(study: str, params_path: Path, overrides: dict) -> dict:
    """A study's training params, complete: the declaring notebook's defaults, the file, then ``-p``.

    Raises:
        ParamsError: a key of the file or of ``-p`` that no notebook declares (checked as ``run`` does).
    """
    from brainvlm.app.params import (
        check_params,
        complete_params,
        discover_notebooks,
        find_notebook,
        read_params,
    )
    module = study_module(study)
    params = {**read_params(params_path), **overrides}
    check_params(params, discover_notebooks(), source=str(params_path))
    return complete_params(find_notebook(module.TRAIN_NOTEBOOK), params)


def parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm train``."""
    out = argparse.ArgumentParser(prog="brainvlm train",
                                  description="brainvlm train --params P [--study brain] --task T: "
                                              "the entry point torchrun starts.")
    out.add_argument("--params", required=True, help="the run's params file")
    out.add_argument("--study", default="brain", choices=STUDIES, help="the study whose train() runs")
    out.add_argument("--task", required=True,
                     help="sex, bmi (brain); report (report); sequential, replay, joint, adapters (cl); "
                          "concepts, caption, multitask (concepts)")
    out.add_argument("--run", default=None, help="run name under reports/ (default: the params file's stem)")
    out.add_argument("--run-dir", default=None, help="run folder (instead of --run)")
    out.add_argument("--name", default=None, help="output folder under models/ (default: the task)")
    out.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    out.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                     help="stop with an error after this optimizer step, as a crash would (to check resuming)")
    out.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                     help="override one params key (value read as YAML)")
    out.add_argument("--no-progress", action="store_true")
    return out


def _describe(trained, task: str, size: int) -> str:
    """What rank 0 prints once training ends."""
    from brainvlm.train import distributed

    if not hasattr(trained, "result"):
        return trained.describe()
    sharding = distributed.sharding_from(getattr(trained.settings, "sharding", "data_parallel")).mode
    return (f"{trained.result.plan.to_string(index=False)}\n"
            f"{task}: {trained.result.steps} steps on {size} process(es) ({sharding}), "
            f"best val loss {trained.result.best_val_loss}, adapter in {trained.result.adapter_dir}")


def _train(args: argparse.Namespace, params: dict) -> int:
    """Run the study's ``train`` on every process and print what rank 0 saw."""
    from brainvlm.train import distributed

    run_dir = Path(args.run_dir) if args.run_dir else reports_dir() / (args.run or Path(args.params).stem)
    with distributed.process_group():
        rank, size = distributed.world()
        trained = study_module(args.study).train(params, args.task, run_dir, name=args.name, resume=args.resume,
                                                 stop_after=args.stop_after, progress=not args.no_progress)
        described = _describe(trained, args.task, size) if rank == 0 else ""
        del trained  # its model holds the process group (FSDP2, DeepSpeed): released before the group goes
    if rank == 0:
        print(described)
    return 0


def main(argv: list[str]) -> int:
    """``brainvlm train --params P [--study brain] --task T``: the entry point torchrun starts.

    Exit 1 with one line for a params file that does not fit the notebooks; exit 2 with one line for any
    other refusal (an unknown task, missing data, a damaged checkpoint or weights file, a bad flag).
    """
    args = parser().parse_args(argv)
    from brainvlm.app.params import ParamsError
    from brainvlm.train.checkpoints import CheckpointError

    try:
        check_run_name(args.run)
        check_params_file(args.params)
        params = study_params(args.study, Path(args.params), parse_overrides(args.p))
    except UsageError as exc:
        return fail("train", exc, 2)
    except ParamsError as exc:
        return fail("train", exc)
    try:
        return _train(args, params)
    except (ValueError, OSError, CheckpointError) as exc:  # brainvlm's own refusals, each naming its cause
        return fail("train", exc, 2)
