"""Command line: ``python -m brainvlm {run,validate,evaluate,train} ...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def parse_overrides(pairs: list[str]) -> dict:
    """``-p key value`` pairs, values read as YAML (so ``-p n_subjects 40`` is an int)."""
    return {key: yaml.safe_load(value) for key, value in pairs}


def cmd_run(args: argparse.Namespace) -> int:
    from brainvlm.params import ParamsError
    from brainvlm.runner import NotebookFailed, run

    try:
        results = run(Path(args.params), run_name=args.run, only=args.only, overrides=parse_overrides(args.p),
                      reports_dir=Path(args.reports_dir) if args.reports_dir else _reports_dir())
    except (ParamsError, NotebookFailed) as exc:
        print(f"brainvlm run: {exc}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.name:24s} {r.status:8s} {r.seconds:7.1f} s")
    return 0


def _reports_dir() -> Path:
    from brainvlm.paths import REPORTS_DIR
    return REPORTS_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainvlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the notebooks into reports/<run>/ and render HTML")
    run.add_argument("--params", required=True, help="flat YAML params file, e.g. params/default.yaml")
    run.add_argument("--run", default=None, help="run name: reports/<run>/ (default: the params file's stem)")
    run.add_argument("--only", default=None, help="comma-separated notebook numbers or names, e.g. 01,02")
    run.add_argument("--reports-dir", default=None, help="parent folder of runs (default: reports/)")
    run.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                     help="override one params key (value read as YAML)")
    run.set_defaults(func=cmd_run)

    sub.add_parser("validate", help="check canonical sample JSONL files (see docs/sample_format.md)",
                   add_help=False).set_defaults(func=None, delegate="validate")
    sub.add_parser("evaluate", help="score a predictions JSONL against a samples JSONL",
                   add_help=False).set_defaults(func=None, delegate="evaluate")
    sub.add_parser("predict", help="generate answers for a task's split with its trained adapter (resumable)",
                   add_help=False).set_defaults(func=None, delegate="predict")
    sub.add_parser("train", help="train one task's LoRA adapter from a params file (torchrun-ready)",
                   add_help=False).set_defaults(func=None, delegate="train")
    return parser


def delegate(command: str, argv: list[str]) -> int:
    """Subcommands whose argument parsing lives with the module that owns the concern."""
    if command == "validate":
        from brainvlm.schema import main_validate
        return main_validate(argv)
    if command == "evaluate":
        from brainvlm.evaluate import main_evaluate
        return main_evaluate(argv)
    if command == "predict":
        from brainvlm.inference import main_predict
        return main_predict(argv)
    from brainvlm.finetune import main_train
    return main_train(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("validate", "evaluate", "predict", "train"):
        return delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)
