"""``brainvlm check-submission`` and ``brainvlm evaluate --clef-concepts`` through the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from brainvlm.app.cli import main

GOLD = "ID,CUIs\n1,C0040405;C0000001\n2,\n10,C0817096\n"
MANUAL = "ID,CUIs\n1,C0040405\n2,\n10,C0817096\n"


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_check_submission_prints_every_violation_with_its_row(tmp_path, capsys):
    ids = _write(tmp_path / "ids.csv", GOLD)
    good = _write(tmp_path / "good.csv", "ID,CUIs\n1,C0040405\n2,\n10,C0817096\n")
    assert main(["check-submission", good, "--ids", ids]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: valid"
    bad = _write(tmp_path / "bad.csv", "ID,CUIs\n1,C0040405;\n10,C0817096\n2\n")
    assert main(["check-submission", bad, "--ids", ids]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{bad} row 2: an empty CUI token (a trailing ';' or ';;'); remove it",
                   f"{bad} row 4: no comma after the id '2'; write '2,' for an image without concepts",
                   (f"{bad} row 4: the id '2' comes before '10' in the ids file; keep the ids file's order "
                    "(never sort ids as text)"),
                   f"{bad}: 3 violations"]


def test_check_submission_of_captions_runs_as_a_module(tmp_path):
    ids = _write(tmp_path / "ids.csv", GOLD)
    captions = _write(tmp_path / "captions.csv", "ID,Caption\n1,CT, chest\n2,x\n10,x\n")
    done = subprocess.run([sys.executable, "-m", "brainvlm", "check-submission", captions, "--ids", ids,
                           "--kind", "captions"], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert f"{captions} row 2: the caption holds a comma but is not in double quotes" in done.stdout


def test_evaluate_clef_concepts_prints_and_writes_both_scores(tmp_path, capsys):
    gold, manual = _write(tmp_path / "gold.csv", GOLD), _write(tmp_path / "manual.csv", MANUAL)
    submission = _write(tmp_path / "sub.csv", "ID,CUIs\n1,C0040405;C0000001;\n2,\n10,C0024485\n")
    out, per_image = tmp_path / "scores.json", tmp_path / "per_image.csv"
    assert main(["evaluate", "--clef-concepts", gold, "--manual", manual, "--submission", submission,
                 "--out", str(out), "--per-image", str(per_image)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text(encoding="utf-8"))
    assert printed["primary"] == (0.8 + 1.0 + 0.0) / 3 and printed["n_images"] == 3
    assert printed["secondary"] == (1.0 + 0.0) / 2 and printed["n_images_secondary"] == 2
    assert per_image.read_text(encoding="utf-8").splitlines()[0] == "id,primary,secondary"
    assert main(["evaluate", "--clef-concepts", gold, "--submission", submission, "--allowed", "C0817096"]) == 0
    assert "secondary" not in json.loads(capsys.readouterr().out)        # no manual gold file given


def test_evaluate_clef_concepts_reports_a_refused_file(tmp_path, capsys):
    gold = _write(tmp_path / "gold.csv", GOLD)
    submission = _write(tmp_path / "sub.csv", "ID,CUIs\n1,C0040405\n2,\n")
    assert main(["evaluate", f"--clef-concepts={gold}", "--submission", submission]) == 1
    assert "1 gold images have no row (first ten: ['10'])" in capsys.readouterr().err


def test_check_submission_accepts_crlf_and_spaced_captions_and_names_a_repeated_id(tmp_path, capsys):
    ids = _write(tmp_path / "ids.csv", GOLD)
    captions = tmp_path / "captions.csv"
    captions.write_bytes(b'ID,Caption\r\n1, CT of the chest \r\n2,"MRI, axial\xc2\xa0"\r\n10,\r\n')
    assert main(["check-submission", str(captions), "--ids", ids, "--kind", "captions"]) == 0
    assert capsys.readouterr().out.strip() == f"{captions}: valid"
    twice = _write(tmp_path / "twice.csv", "ID\n1\n2\n1\n")
    assert main(["check-submission", str(captions), "--ids", twice, "--kind", "captions"]) == 1
    assert capsys.readouterr().err.strip() == (f"brainvlm check-submission: {twice} row 4: duplicate id '1' "
                                               "(first on row 2); an ids file lists each image once")


def test_evaluate_clef_concepts_refuses_an_allowed_item_that_is_not_a_cui(tmp_path, capsys):
    gold, manual = _write(tmp_path / "gold.csv", GOLD), _write(tmp_path / "manual.csv", MANUAL)
    submission = _write(tmp_path / "sub.csv", "ID,CUIs\n1,C0040405\n2,\n10,C0817096\n")
    assert main(["evaluate", "--clef-concepts", gold, "--manual", manual, "--submission", submission,
                 "--allowed", "C0040405,foo"]) == 1
    assert capsys.readouterr().err.strip() == ("brainvlm evaluate: allowed CUIs: 'foo' is not a CUI (C "
                                               "followed by digits); give CUIs such as C0040405,C0817096")
