"""LLaVA-Med answer files as predictions of ``brainvlm evaluate``, matched on question ids; written back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainvlm.app.cli import main_evaluate
from brainvlm.core.jsonio import read_jsonl, write_jsonl
from brainvlm.data.adapters.llava_med import read_llava_med
from brainvlm.data.adapters.vqa_rad import vqa_rad_to_samples
from brainvlm.eval.evaluate import evaluate_files, load_predictions
from brainvlm.eval.llava_med_answers import answer_id, write_llava_med_answers

QUICK_VQA = ["closed_accuracy", "open_recall", "open_exact_match"]
QUESTIONS = [
    {"question_id": 101, "image": "a.jpg", "text": "is there air in the peritoneal cavity?\n<image>",
     "gpt4_answer": "no", "domain": {"abd": True, "chest": False, "head": False}},
    {"question_id": 102, "image": "a.jpg", "text": "which organ is enlarged?\n<image>",
     "gpt4_answer": "liver", "domain": "abd"},
    {"question_id": "c7", "image": "b.jpg", "text": "<image>\nis the heart enlarged?", "gpt4_answer": "yes",
     "domain": {"abd": False, "chest": True, "head": False}},
]


def _answer_line(question_id: int | str, text: str, **extra) -> dict:
    return {"question_id": question_id, "prompt": "...\n<image>", "text": text, "answer_id": "x",
            "model_id": "llava-vqa-rad_abd", "metadata": {}, **extra}


@pytest.fixture()
def files(tmp_path) -> tuple[Path, list[dict]]:
    questions = write_jsonl(QUESTIONS, tmp_path / "questions_test.jsonl")
    samples = read_llava_med(questions)
    return write_jsonl(samples, tmp_path / "test.jsonl"), samples


def test_answer_files_are_scored_like_id_predictions(files, tmp_path):
    samples_path, samples = files
    lines = [_answer_line("c7", "Yes."), _answer_line(101, "yes"), _answer_line("102", "the liver")]
    answers = write_jsonl(lines, tmp_path / "answers.jsonl")
    assert load_predictions(answers, samples) == {"llava_med_test_c7": "Yes.", "llava_med_test_000101": "yes",
                                                  "llava_med_test_000102": "the liver"}
    rows = [{"id": s["id"], "prediction": p} for s, p in zip(samples, ["yes", "the liver", "Yes."])]
    by_id = write_jsonl(rows, tmp_path / "predictions.jsonl")
    from_answers = evaluate_files(samples_path, answers, metrics=QUICK_VQA, n_boot=0)
    assert from_answers == evaluate_files(samples_path, by_id, metrics=QUICK_VQA, n_boot=0)
    assert from_answers["closed_accuracy"] == 0.5 and from_answers["open_recall"] == 1.0
    assert main_evaluate(["--samples", str(samples_path), "--predictions", str(answers), "--metrics",
                          "closed_accuracy", "--n-boot", "0"]) == 0


def test_an_answer_for_no_sample_is_an_error_listing_the_ids(files, tmp_path, capsys):
    samples_path, _ = files
    lines = [_answer_line(101, "no"), _answer_line(102, "liver"), _answer_line("c7", "yes")]
    lines += [_answer_line(900 + k, "no") for k in range(12)]
    answers = write_jsonl(lines, tmp_path / "answers.jsonl")
    with pytest.raises(ValueError) as caught:
        evaluate_files(samples_path, answers, metrics=QUICK_VQA, n_boot=0)
    listed = [str(900 + k) for k in range(10)]
    assert str(caught.value) == (
        f"{answers}: 12 of 15 answers have a question_id that matches no sample: {listed} ...; check that "
        "the answers are for this samples file (same split and domain) and that its samples keep the "
        "question ids in metadata.question_id")
    assert main_evaluate(["--samples", str(samples_path), "--predictions", str(answers)]) == 1
    assert "12 of 15 answers have a question_id that matches no sample" in capsys.readouterr().err


def test_missing_answers_follow_the_partial_rule(files, tmp_path):
    samples_path, _ = files
    answers = write_jsonl([_answer_line(101, "no")], tmp_path / "answers.jsonl")
    with pytest.raises(ValueError, match=r"2 of 3 samples of .* have no prediction in .*answers.jsonl: "
                                         r"\['llava_med_test_000102', 'llava_med_test_c7'\]"):
        evaluate_files(samples_path, answers, metrics=QUICK_VQA, n_boot=0)
    got = evaluate_files(samples_path, answers, metrics=QUICK_VQA, n_boot=0, partial=True)
    assert got["n_missing_predictions"] == 2 and got["closed_accuracy"] == 0.5


def test_malformed_answer_files_name_the_line(files, tmp_path):
    _, samples = files
    mixed = write_jsonl([_answer_line(101, "no"), {"id": "llava_med_test_000102", "prediction": "liver"}],
                        tmp_path / "mixed.jsonl")
    with pytest.raises(ValueError) as caught:
        load_predictions(mixed, samples)
    assert str(caught.value) == (
        f"{mixed}:2: expected a LLaVA-Med answer {{\"question_id\": int or str, \"text\": str, ...}} like "
        "line 1, got keys ['id', 'prediction']; keep one layout per file")
    repeated = write_jsonl([_answer_line(101, "no"), _answer_line("101", "yes")], tmp_path / "repeated.jsonl")
    with pytest.raises(ValueError, match=r"repeated.jsonl: question_id '101' is answered on lines 1 and 2; "
                                         r"keep one answer per question"):
        load_predictions(repeated, samples)
    with pytest.raises(ValueError, match=r"a LLaVA-Med answer file is matched to samples by question id; "
                                         r"pass the samples \(load_predictions\(path, samples\)\)"):
        load_predictions(repeated)
    twice = [samples[0], {**samples[1], "metadata": {**samples[1]["metadata"], "question_id": "101"}}]
    with pytest.raises(ValueError, match=r"samples 'llava_med_test_000101' and 'llava_med_test_000102' share "
                                         r"question id '101'; answers cannot be matched"):
        load_predictions(write_jsonl([_answer_line(101, "no")], tmp_path / "one.jsonl"), twice)


def test_written_answers_read_back_as_the_same_predictions(files, tmp_path):
    _, samples = files
    predictions = {"llava_med_test_000101": "no", "llava_med_test_000102": "spleen",
                   "llava_med_test_c7": "yes"}
    path = write_llava_med_answers(samples, predictions, tmp_path / "answers.jsonl", model_id="tiny-cl")
    lines = read_jsonl(path)
    assert lines[0] == {"question_id": 101, "prompt": "is there air in the peritoneal cavity?\n<image>",
                        "text": "no", "answer_id": answer_id("tiny-cl", "101", "no"), "model_id": "tiny-cl"}
    assert lines[2]["prompt"] == "<image>\nis the heart enlarged?" and len(lines[0]["answer_id"]) == 22
    assert load_predictions(path, samples) == predictions
    again = write_llava_med_answers(samples, predictions, tmp_path / "again.jsonl", model_id="tiny-cl")
    assert again.read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match=r"1 samples have no prediction \(\['llava_med_test_c7'\]\) and 1 "
                                         r"predictions match no sample \(\['other'\]\); pass the samples"):
        wrong = {k: v for k, v in predictions.items() if k != "llava_med_test_c7"} | {"other": "x"}
        write_llava_med_answers(samples, wrong, tmp_path / "bad.jsonl", model_id="tiny-cl")


def test_samples_without_question_ids_are_matched_on_their_ids(test_data, tmp_path):
    samples = vqa_rad_to_samples(test_data / "vqa_rad" / "testset.json")[:20]
    samples_path = write_jsonl(samples, tmp_path / "test.jsonl")
    predictions = {s["id"]: s["conversations"][-1]["content"][0]["text"] for s in samples}
    answers = write_llava_med_answers(samples, predictions, tmp_path / "answers.jsonl", model_id="m")
    assert read_jsonl(answers)[0]["question_id"] == samples[0]["id"]
    got = evaluate_files(samples_path, answers, metrics=QUICK_VQA, n_boot=0)
    assert got["closed_accuracy"] == 1.0 and got["n_predictions"] == 20
    assert json.loads(json.dumps(got)) == got
