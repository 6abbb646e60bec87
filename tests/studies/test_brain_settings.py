"""One source of defaults: the command line trains with the settings notebook 04 trains with.

The parameters cell of notebook 04 is the only home of the training defaults; ``brainvlm train`` reads it,
overlays the params file and ``-p``, and passes complete settings to ``studies.brain.train``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brainvlm.core.paths import PARAMS_DIR, PROJECT_ROOT
from brainvlm.studies import base, brain


def cli_train(params: Path, run_dir: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "brainvlm", "train", "--params", str(params), "--study", "brain",
               "--task", "sex", "--run-dir", str(run_dir), "--name", name, "--no-progress", *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


def settings(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / "models" / name / "settings.json").read_text())


@pytest.mark.slow
def test_ci_params_train_the_same_through_the_notebook_and_the_command_line(ci_run):
    done = cli_train(PARAMS_DIR / "ci.yaml", ci_run, "cli_sex")
    assert done.returncode == 0, done.stderr[-3000:]
    assert settings(ci_run, "cli_sex") == settings(ci_run, "sex")


def test_an_empty_params_file_gives_notebook_04s_defaults(tmp_path):
    """An empty file trains as notebook 04 opened and run as stored: every setting from its parameters cell
    (the embedded default). The ci test above checks that the command line then trains the same model."""
    from brainvlm.app.commands.train import study_params
    from brainvlm.app.params import declared_parameters, find_notebook

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    declared = {k: v for k, v in declared_parameters(find_notebook("04").path).items() if k != "run_dir"}
    assert study_params("brain", empty, {}) == declared
    assert brain.settings_for(study_params("brain", empty, {}), "sex").epochs == declared["brain_epochs"]


def test_the_command_line_checks_keys_as_run_does(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("brain_epoch: 2.0\n")
    done = cli_train(params, tmp_path / "r", "x")
    assert done.returncode == 1
    assert "unknown key(s) ['brain_epoch']: no notebook in this run declares them" in done.stderr


def test_settings_without_every_key_are_an_error_naming_them():
    with pytest.raises(brain.SettingsError, match=r"training settings missing: \['seed', 'model'.*notebook 04"):
        brain.settings_for({}, "sex")


def test_the_tiny_base_is_rebuilt_when_the_runs_training_texts_change(tmp_path):
    def manifest(text: str) -> dict:
        sample = {"conversations": [{"role": "user", "content": [{"type": "text", "text": text}]}]}
        path = tmp_path / f"{abs(hash(text))}.jsonl"
        path.write_text(json.dumps(sample) + "\n")
        return {"tasks": {"t": {"files": {"train": str(path)}}}}

    first = Path(brain.base_model("tiny", 0, tmp_path, manifest("a scan of a male participant")))
    tokenizer = (first / "tokenizer.json").read_bytes()
    assert brain.base_model("tiny", 0, tmp_path, manifest("a scan of a male participant")) == str(first)
    assert (first / "tokenizer.json").read_bytes() == tokenizer  # same inputs: kept
    brain.base_model("tiny", 0, tmp_path, manifest("a BMI z-score of 0.42 and 1.37"))
    assert (first / "tokenizer.json").read_bytes() != tokenizer  # other training texts: rebuilt
    assert json.loads((first / base.BASE_RECORD).read_text())["seed"] == 0
