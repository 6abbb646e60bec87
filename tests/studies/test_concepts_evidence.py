"""The concepts study's embedded default: notebook 08 alone on the default params meets every `concepts.`
expectation (both detectors beat the tuned baseline, findings learnt, nothing from the mean image)."""

import csv
import json

import pytest
from conftest import meets_default_expectations, run_default

from brainvlm.eval import clef, clef_files


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return run_default(tmp_path_factory, "08")


@pytest.mark.slow
def test_default_concepts_run_meets_every_expectation(default_run):
    folder, _ = default_run
    meets_default_expectations(folder, "08_detect_concepts_and_caption", "concepts.")  # raises with the measured numbers


@pytest.mark.slow
def test_the_submission_file_scores_as_the_notebook_says(default_run):
    folder, _ = default_run
    submission = folder / "submissions" / "concepts.csv"
    gold = folder / "data" / "roco" / "test_concepts.csv"
    ids = [row["ID"] for row in csv.DictReader(gold.open())]
    assert clef_files.check_submission(submission, ids, "concepts") == []
    scored = clef.evaluate_clef_files(gold, submission)
    metrics = json.loads((folder / "metrics" / "08_detect_concepts_and_caption.json").read_text())
    best = max(metrics["concepts.generative_primary_f1"], metrics["concepts.classifier_primary_f1"])
    assert scored["primary"] == pytest.approx(best)
