"""Bad input on the command line: one clear line on stderr naming the file, flag or key, never a traceback.

Every case checks the exact message. The last tests run every subcommand on a bad input (in process, and
the installed console script in a subprocess) and look for a traceback on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from brainvlm.app.cli import COMMANDS, main
from brainvlm.app.compare import read_run, run_notes

PARAMS_SHAPE = "a flat mapping of keys to values, `key: value` per line"


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def _run_folder(root: Path, name: str, metrics: dict, status: dict | None = None) -> str:
    _write(root / name / "provenance.json", json.dumps({"params": {"seed": 0, "lr": len(name)}}))
    _write(root / name / "metrics" / "04_train_lora.json", json.dumps(metrics))
    if status is not None:
        _write(root / name / "status.json", json.dumps(status))
    return str(root / name)


# ------------------------------------------------------------------------------------------ train
def test_train_names_an_unknown_task_in_one_line(tmp_path, capsys):
    params = _write(tmp_path / "empty.yaml", "")
    run_dir = tmp_path / "run"
    _write(run_dir / "data" / "manifest.json", json.dumps({"image_root": ".", "tasks": {
        "sex": {"files": {"train": "sex/train.jsonl", "val": "sex/val.jsonl", "test": "sex/test.jsonl"}}}}))
    status, _, err = _main(capsys, "train", "--params", params, "--task", "nosuch", "--run-dir", str(run_dir))
    assert (status, err) == (2, (f"brainvlm train: task 'nosuch' is not in {run_dir / 'data' / 'manifest.json'}; "
                                "tasks there: ['sex']\n"))


def test_a_utf16_params_file_is_named(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_bytes("n_subjects: 40\n".encode("utf-16"))
    message = f"{params}: the file is UTF-16 (it starts with a UTF-16 byte-order mark), not UTF-8; save it as UTF-8\n"
    assert _main(capsys, "train", "--params", str(params), "--task", "sex") == (1, "", f"brainvlm train: {message}")
    assert _main(capsys, "run", "--params", str(params)) == (1, "", f"brainvlm run: {message}")


@pytest.mark.parametrize("command", ["run", "train"])
@pytest.mark.parametrize("name", ["../x", "/abs/run", ""])
def test_a_run_name_that_leaves_the_reports_folder_is_refused(tmp_path, capsys, command, name):
    params = _write(tmp_path / "p.yaml", "")
    extra = ["--task", "sex"] if command == "train" else []
    status, _, err = _main(capsys, command, "--params", params, "--run", name, *extra)
    assert (status, err) == (2, (f"brainvlm {command}: --run {name!r}: a run name is one folder name under the "
                                "reports folder (letters, digits, '_', '-', '.'), not a path; to write elsewhere "
                                "use --reports-dir\n"))


# ---------------------------------------------------------------------------- params and sweep files
def test_a_key_twice_in_a_params_file_names_its_line(tmp_path, capsys):
    params = _write(tmp_path / "p.yaml", "n_subjects: 40\nseed: 1\nn_subjects: 60\n")
    status, _, err = _main(capsys, "run", "--params", params, "--only", "01")
    assert (status, err) == (1, (f"brainvlm run: {params}:3:1: not valid YAML (the key 'n_subjects' is given twice "
                                f"(first on line 1); keep one); a params file is {PARAMS_SHAPE}\n"))


def test_grid_twice_in_a_sweep_file_names_its_line(tmp_path, capsys):
    params = _write(tmp_path / "p.yaml", "")
    sweep = _write(tmp_path / "s.yaml", "grid:\n  brain_lr: [1.0e-4]\nseeds: [0, 1]\ngrid:\n  n_subjects: [40]\n")
    status, _, err = _main(capsys, "sweep", "--params", params, "--sweep", sweep, "--reports-dir", str(tmp_path))
    assert (status, err) == (1, (f"brainvlm sweep: {sweep}:4:1: not valid YAML (the key 'grid' is given twice "
                                "(first on line 1); keep one); a sweep file is a mapping with keys ['grid', "
                                "'seeds', 'resources']\n"))


def test_an_unknown_notebook_in_a_params_file_is_not_blamed_on_only(tmp_path, capsys):
    params = _write(tmp_path / "p.yaml", 'notebooks: ["01", "09"]\n')
    status, _, err = _main(capsys, "run", "--params", params)
    assert status == 1
    assert err.startswith(f"brainvlm run: {params}: notebooks names unknown notebooks ['09']; the notebooks are "
                          "['01', '02', ")
    assert "--only" not in err


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_an_empty_only_is_refused(tmp_path, capsys, command):
    params = _write(tmp_path / "p.yaml", "")
    status, _, err = _main(capsys, command, "--params", params, "--only", "")
    assert (status, err) == (2, (f"brainvlm {command}: --only '' names no notebook; give numbers such as 01,02, "
                                "or leave --only out to run every notebook of the params file\n"))


# ------------------------------------------------------------------------------------------ compare
def test_compare_says_when_a_run_failed_or_runs_share_no_metric(tmp_path, capsys):
    failed = _run_folder(tmp_path, "a", {"brain.acc": 0.5}, {"state": "failed", "notebook": "04_train_lora",
                                                             "cell": 12, "error": "boom"})
    other = _run_folder(tmp_path, "bb", {"report.bleu": 0.1})
    status, out, err = _main(capsys, "compare", failed, other, "--out", str(tmp_path / "cmp"))
    assert status == 0 and out == f"comparison: {tmp_path / 'cmp' / 'index.html'}\n"
    assert err == ("brainvlm compare: note: run a failed (notebook 04_train_lora, cell 12): only the notebooks "
                   "that finished before it have metrics\n"
                   "brainvlm compare: note: the runs share no metric, so no metric is compared across runs "
                   "(a: brain.acc; bb: report.bleu)\n")
    assert "Note: run a failed" in (tmp_path / "cmp" / "index.html").read_text(encoding="utf-8")
    assert run_notes([read_run(Path(other))]) == []


def test_compare_prints_its_own_errors_in_one_line(tmp_path, capsys):
    run = _run_folder(tmp_path, "a", {})
    _write(tmp_path / "a" / "metrics" / "04_train_lora.json", "{not json")
    status, _, err = _main(capsys, "compare", run, "--out", str(tmp_path / "cmp"))
    assert (status, err) == (2, (f"brainvlm compare: {tmp_path / 'a' / 'metrics' / '04_train_lora.json'}:1: invalid "
                                "JSON: Expecting property name enclosed in double quotes (column 2); check it with "
                                "`python -m brainvlm validate`\n"))
    status, _, err = _main(capsys, "compare", str(tmp_path / "nowhere"))
    assert (status, err) == (2, (f"brainvlm compare: {tmp_path / 'nowhere'}: not a run folder (no provenance.json); "
                                "give folders that `brainvlm run` wrote, e.g. reports/<run>/ or "
                                "reports/<sweep>/runs/<run>/\n"))


# ----------------------------------------------------------------------------------------- evaluate
def test_evaluate_help_lists_the_clef_concepts_options(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    for option in ("--clef-concepts", "--manual", "--submission", "--per-image"):
        assert option in out


def _vqa_files(tmp_path: Path) -> tuple[str, str]:
    sample = {"id": "q1", "task": "vqa", "metadata": {"split": "test", "answer_type": "CLOSED"},
              "conversations": [{"role": "user", "content": [{"type": "text", "text": "Is it normal?"}]},
                                {"role": "assistant", "content": [{"type": "text", "text": "yes"}]}]}
    return (_write(tmp_path / "test.jsonl", json.dumps(sample) + "\n"),
            _write(tmp_path / "pred.jsonl", json.dumps({"id": "q1", "prediction": "yes"}) + "\n"))


def test_a_negative_bootstrap_count_is_refused(tmp_path, capsys):
    samples, predictions = _vqa_files(tmp_path)
    status, _, err = _main(capsys, "evaluate", "--samples", samples, "--predictions", predictions, "--n-boot", "-5")
    assert (status, err) == (2, ("brainvlm evaluate: --n-boot -5: give 0 (no intervals) or a positive number of "
                                "bootstrap replicates\n"))


LABELS_FORMS = ("give male,female, a JSON object such as '{\"male\": [\"m\", \"man\"]}', or a YAML file of "
                "label -> list of synonyms")


@pytest.mark.parametrize("labels, message", [
    ('{"male": ["m"], ', ("--labels '{\"male\": [\"m\"], ': not a JSON object (Expecting property name enclosed in "
                         f"double quotes at character 16); {LABELS_FORMS}")),
    ('{"male": 1}', f"--labels '{{\"male\": 1}}': the synonyms of ['male'] are not a list of strings; {LABELS_FORMS}"),
    (" , ", f"--labels ' , ' names no label; {LABELS_FORMS}"),
])
def test_a_malformed_labels_flag_says_what_to_give(tmp_path, capsys, labels, message):
    samples, predictions = _vqa_files(tmp_path)
    status, _, err = _main(capsys, "evaluate", "--samples", samples, "--predictions", predictions,
                           "--labels", labels)
    assert (status, err) == (2, f"brainvlm evaluate: {message}\n")


def test_a_labels_file_that_is_not_a_mapping_is_named(tmp_path, capsys):
    samples, predictions = _vqa_files(tmp_path)
    labels = _write(tmp_path / "labels.yaml", "male: [m\n")
    status, _, err = _main(capsys, "evaluate", "--samples", samples, "--predictions", predictions, "--labels", labels)
    assert status == 2 and err.startswith(f"brainvlm evaluate: --labels {labels}:2: not valid YAML (")


# ---------------------------------------------------------------------------------------- curriculum
CURRICULUM = {"image": "files/p10/p10000032/s50414267/a.jpg", "stage": "B", "mode": "image_ehr",
              "prompt": 'Patient Data: {"age": 71}\nImage:<image>\nAnswer Impression, CheXpert & ICD.',
              "target": "Impression: No acute process."}


@pytest.mark.parametrize("record, message", [
    ({**CURRICULUM, "prompt": 'Patient Data: {"age": 71\nImage:<image>\nAnswer Impression, CheXpert & ICD.'},
     "the prompt's 'Patient Data: {' block is not closed (no '}' ends a line after it); close the block"),
    ({**CURRICULUM, "stage": "A"},
     "stage 'A' with mode 'image_ehr'; stage A is image_only and stage B image_ehr: fix the stage or the mode"),
])
def test_a_curriculum_record_that_contradicts_itself_is_refused(tmp_path, capsys, record, message):
    source = _write(tmp_path / "curriculum_train.jsonl", json.dumps(CURRICULUM) + "\n" + json.dumps(record) + "\n")
    status, _, err = _main(capsys, "convert", "curriculum", source, "--out", str(tmp_path / "train.jsonl"))
    assert (status, err) == (1, f"brainvlm convert: {source}:2: {message}\n")


def test_an_empty_curriculum_file_is_refused(tmp_path, capsys):
    source = _write(tmp_path / "curriculum_train.jsonl", "")
    status, _, err = _main(capsys, "convert", "curriculum", source, "--out", str(tmp_path / "train.jsonl"))
    assert (status, err) == (1, (f"brainvlm convert: {source}: no records (the file is empty); expected one "
                                "curriculum object per line\n"))


# ------------------------------------------------------------------------------- every subcommand
def _bad_invocations(tmp_path: Path) -> dict[str, list[str]]:
    bad = _write(tmp_path / "bad.jsonl", '{"id": 1}\n')
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes("seed: 1\n".encode("utf-16"))
    missing = str(tmp_path / "missing.csv")
    return {
        "run": ["--params", str(utf16)], "sweep": ["--params", str(utf16)],
        "compare": [str(tmp_path)], "validate": [bad], "convert": ["llava-med", bad, "--out", str(tmp_path / "o.jsonl")],
        "check-submission": [missing, "--ids", missing], "evaluate": ["--samples", bad, "--predictions", bad],
        "label-reports": [missing, "--out", str(tmp_path / "labels.csv")],
        "predict": ["--run-dir", str(tmp_path / "norun"), "--task", "sex"],
        "train": ["--params", str(utf16), "--task", "sex"],
        "concepts": ["--image-dir", str(tmp_path), "--ids", missing, "--out", str(tmp_path / "c")],
        "captions": ["--image-dir", str(tmp_path), "--ids", missing, "--out", str(tmp_path / "c")],
    }


def test_every_subcommand_refuses_a_bad_input_without_a_traceback(tmp_path, capsys):
    invocations = _bad_invocations(tmp_path)
    assert sorted(invocations) == sorted(COMMANDS)
    for command, argv in invocations.items():
        status, out, err = _main(capsys, command, *argv)
        assert status != 0, command
        assert "Traceback" not in err, command
        assert f"brainvlm {command}: " in err or (command == "validate" and "bad.jsonl" in out), (command, err)


def test_the_installed_command_says_one_line_and_no_traceback(tmp_path):
    script = Path(sys.executable).with_name("brainvlm")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and all(f"  {name} " in done.stdout for name in COMMANDS)
    bad = _write(tmp_path / "bad.jsonl", '{"id": 1}\n')
    done = subprocess.run([str(script), "validate", bad], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stdout.splitlines()[-1] == "1 files, 1 samples, 4 errors (image files not checked: no --image-root)"
