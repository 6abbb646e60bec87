"""Command line: ``brainvlm COMMAND ...`` (the same as ``python -m brainvlm COMMAND ...``).

The face of the package: each subcommand is a module of ``brainvlm.app.commands`` with ``HELP`` and
``main(argv)``; it reads params files and flags and calls the library with complete values. Heavy imports
are deferred into each ``main`` so ``brainvlm validate`` does not load torch.
"""

from __future__ import annotations

import sys

from brainvlm.app.commands import (
    captions,
    check_submission,
    compare,
    concepts,
    convert,
    evaluate,
    label_reports,
    predict,
    run,
    sweep,
    train,
    validate,
)

COMMANDS = {"run": run, "sweep": sweep, "compare": compare, "validate": validate, "convert": convert,
            "check-submission": check_submission, "evaluate": evaluate, "label-reports": label_reports,
            "predict": predict, "train": train, "concepts": concepts, "captions": captions}


def usage() -> str:
    """The top-level help: every subcommand with its one-line ``HELP``."""
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {module.HELP}" for name, module in COMMANDS.items()]
    return ("usage: brainvlm COMMAND [ARGS ...]   (or: python -m brainvlm COMMAND ...)\n\n"
            "commands:\n" + "\n".join(lines) + "\n\n`brainvlm COMMAND --help` lists a command's options.")


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand ``argv[0]`` with the rest of ``argv``; return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]].main(argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    what = f"unknown command {argv[0]!r}" if argv else "give a command"
    print(f"{usage()}\n\nbrainvlm: {what}", file=sys.stderr)
    return 2
