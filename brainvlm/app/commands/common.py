"""What several subcommands share: ``-p`` overrides, the reports folder, comma lists, error lines, and the
checks of run names, ``--only`` and params files made before a command hands them on."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


class UsageError(ValueError):
    """A flag value no command can use; the message says which flag and what to give instead."""


def parse_overrides(pairs: list[str]) -> dict:
    """``-p key value`` pairs, values read as YAML (so ``-p n_subjects 40`` is an int).

    The values are then checked like a params file's (``app.params.check_params``).
    """
    from brainvlm.app.params import ParamsError

    out = {}
    for key, value in pairs:
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ParamsError(f"-p {key} {value!r}: not a YAML value ({getattr(exc, 'problem', exc)})") from None
    return out


def reports_dir() -> Path:
    """The project's ``reports/`` folder (the default parent of runs)."""
    from brainvlm.core.paths import REPORTS_DIR

    return REPORTS_DIR


def split_list(value: str | None) -> list[str] | None:
    """``a, b,c`` -> ``["a", "b", "c"]``; None stays None."""
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def fail(command: str, message: object, status: int = 1) -> int:
    """Print ``brainvlm COMMAND: message`` on stderr and return ``status`` (the exit status).

    An ``OSError`` is written as ``file: reason`` (``missing.csv: No such file or directory``).
    """
    if isinstance(message, OSError) and message.filename is not None and message.strerror:
        message = f"{message.filename}: {message.strerror}"
    print(f"brainvlm {command}: {message}", file=sys.stderr)
    return status


def check_run_name(name: str | None, flag: str = "--run") -> None:
    """``app.run_names.check_run_name``, its refusal a :class:`UsageError`."""
    from brainvlm.app.run_names import RunNameError
    from brainvlm.app.run_names import check_run_name as check

    try:
        check(name, flag)
    except RunNameError as exc:
        raise UsageError(str(exc)) from None


def check_only(only: str | None) -> None:
    """``--only`` names at least one notebook when it is given (``--only ""`` would run them all)."""
    if only is not None and not split_list(only):
        raise UsageError(f"--only {only!r} names no notebook; give numbers such as 01,02, or leave --only out "
                         "to run every notebook of the params file")


def check_params_file(path: str | Path) -> dict:
    """A params file read strictly before a command hands it on: UTF-8, no key given twice, and its
    ``notebooks`` key naming notebooks that exist (so that a wrong number is not blamed on ``--only``).

    Raises:
        ParamsError: naming the file (and the line of a repeated key).
    """
    from brainvlm.app.params import ParamsError, discover_notebooks
    from brainvlm.app.yaml_strict import read_mapping

    params = read_mapping(path, "params file", "a flat mapping of keys to values, `key: value` per line",
                          ParamsError)
    named = params.get("notebooks")
    if isinstance(named, list) and all(isinstance(n, str) for n in named):
        notebooks = discover_notebooks()
        known = {nb.number for nb in notebooks} | {nb.name for nb in notebooks}
        unknown = [n for n in named if n not in known]
        if unknown:
            raise ParamsError(f"{path}: notebooks names unknown notebooks {unknown}; the notebooks are "
                              f"{[nb.number for nb in notebooks]}")
    return params
