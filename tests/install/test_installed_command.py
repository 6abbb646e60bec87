"""The installed console script and ``python -m brainvlm`` are one command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from brainvlm.core.paths import PROJECT_ROOT

SCRIPT = Path(sys.executable).with_name("brainvlm")


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)


@pytest.mark.parametrize("prefix", [[str(SCRIPT)], [sys.executable, "-m", "brainvlm"]], ids=["script", "module"])
def test_help_lists_every_subcommand(prefix):
    assert SCRIPT.is_file(), f"{SCRIPT} is not installed: rebuild .venv with `make`"
    done = run(*prefix, "--help")
    assert done.returncode == 0, done.stderr
    for command in ("run", "sweep", "compare", "validate", "evaluate", "train", "check-submission"):
        assert command in done.stdout


def test_script_and_module_give_the_same_subcommand_result(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    script = run(str(SCRIPT), "validate", str(bad))
    module = run(sys.executable, "-m", "brainvlm", "validate", str(bad))
    assert script.returncode == module.returncode != 0
    assert script.stdout == module.stdout and script.stderr == module.stderr
    assert "Traceback" not in script.stderr
    assert "bad.jsonl" in script.stdout + script.stderr
