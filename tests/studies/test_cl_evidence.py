"""The continual study's embedded default: notebook 06 alone on the default params meets every `cl.`
expectation (every method learns, sequential fine-tuning forgets, key-routed task adapters do not, the
route comes from the image, and the mean image answers no better than the majority answer)."""

import json

import pytest
from conftest import meets_default_expectations, run_default

from brainvlm.core import jsonio
from brainvlm.eval import continual, llava_med_answers
from brainvlm.studies import cl


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return run_default(tmp_path_factory, "06")


@pytest.mark.slow
def test_default_continual_run_meets_every_expectation(default_run):
    folder, _ = default_run
    metrics = meets_default_expectations(folder, "06_continual_vqa", "cl.")  # raises with the measured numbers
    assert metrics["cl.oracle_bwt"] == 0.0  # an adapter is never changed after its task


@pytest.mark.slow
def test_published_answers_recompute_the_matrix_and_the_llava_med_file_reads_back(default_run):
    folder, _ = default_run
    metrics = json.loads((folder / "metrics" / "06_continual_vqa.json").read_text())
    _, tasks = cl.read_tasks(folder / "data" / "vqa")
    order = ["abdomen", "chest", "head"]
    test = cl.mixed_test(tasks, seed=0)
    tables = []
    for row in (1, 2, 3):
        by_id = {r["id"]: r["prediction"] for r in jsonio.read_jsonl(
            folder / "predictions" / f"06_vqa_sequential_abdomen-chest-head_row{row}.jsonl")}
        tables.append(cl.score_table(test, [by_id[s["id"]] for s in test]))
    zero = {r["id"]: r["prediction"] for r in jsonio.read_jsonl(folder / "predictions" / "06_vqa_zero_shot.jsonl")}
    matrix = cl.accuracy_matrix(cl.score_table(test, [zero[s["id"]] for s in test]), tables, order)
    assert continual.continual_metrics(matrix, zero_shot=True)["bwt"] == pytest.approx(metrics["cl.sequential_bwt"])
    path = folder / "predictions" / "06_vqa_answers_llava_med.jsonl"
    records = list(jsonio.read_jsonl_numbered(path))
    assert llava_med_answers.is_answer_file(records)
    answers = llava_med_answers.predictions_from_answers(records, test, path)
    keys_row = {r["id"]: r["prediction"] for r in jsonio.read_jsonl(
        folder / "predictions" / "06_vqa_adapters_abdomen-chest-head_keys_row3.jsonl")}
    assert answers == {s["id"]: keys_row[s["id"]] for s in test}
