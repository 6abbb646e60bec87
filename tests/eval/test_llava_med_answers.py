"""LLaVA-Med answer files as predictions of ``brainvlm evaluate``, matched on question ids; written back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainvlm.app.commands.evaluate import main as main_evaluate
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
    from_ids = evaluate_files(samples_path, by_id, metrics=QUICK_VQA, n_boot=0)
    assert (from_answers.pop("predictions_matched_by"), from_ids.pop("predictions_matched_by")) == (
        "question_id", "id")
    assert from_answers == from_ids
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
    by_id = "; ".join(f"line {4 + k} ({900 + k})" for k in range(10))
    by_text = "; ".join(f"line {1 + k} (question_id {q!r}, '...'): no sample asks it"
                        for k, q in enumerate([101, 102, "c7", *range(900, 907)]))
    assert str(caught.value) == (
        f"{answers}: the answers match the samples neither by question id nor by question text. By id: 12 "
        f"of 15 answers have a question_id that is no sample's question id (first ten: {by_id} ...). By "
        f"text: 15 of 15 answers cannot be paired with a sample asking their question (first ten: {by_text} "
        "...). Check that the answers are for this samples file (same split and domain)")
    assert main_evaluate(["--samples", str(samples_path), "--predictions", str(answers)]) == 1
    assert "12 of 15 answers have a question_id that is no sample's question id" in capsys.readouterr().err


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
    with pytest.raises(ValueError) as caught:
        load_predictions(repeated, samples)
    assert str(caught.value) == (f"{repeated}: question_id 101 (line 1) and '101' (line 2) are one question id "
                                 "(ids compare as text); keep one answer per question")
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


# ------------------------------------------------------------------ LLaVA-Med's own answer files
OPTIONS = " Please choose from the following two options: [{}]"


def _llava_med_file(test_data: Path, path: Path, skip: int | None = None) -> tuple[Path, dict[int, str]]:
    """VQA-RAD test answers exactly as LLaVA-Med's ``model_vqa_med`` writes them for its VQA-RAD test file:
    its own question numbering (here qid - 1, never the question's qid, yet some equal another question's
    qid), the question followed by the options LLaVA-Med's test file appends to closed questions, a random
    22-character answer id, the model path and empty metadata. Returns the file and qid -> answer text."""
    questions = json.loads((test_data / "vqa_rad" / "testset.json").read_text(encoding="utf-8"))
    lines, texts = [], {}
    for k, q in enumerate(questions):
        if k == skip:
            continue
        closed = q["answer_type"].strip() == "CLOSED"
        options = OPTIONS.format("Yes, No" if str(q["answer"])[:1].isupper() else "yes, no") if closed else ""
        texts[q["qid"]] = f"answer {k}: {q['answer']}"
        lines.append({"question_id": q["qid"] - 1, "prompt": q["question"] + options, "text": texts[q["qid"]],
                      "answer_id": f"{k:04d}kQzuZ7PhVZwfUcDVx57D"[:22],
                      "model_id": "/home/user/llava-med/eval/vqa_rad", "metadata": {}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path, texts


@pytest.fixture()
def vqa_rad_test(test_data, tmp_path) -> tuple[Path, list[dict]]:
    """The VQA-RAD test samples, each keeping its qid as its question id (so answer ids can collide)."""
    samples = vqa_rad_to_samples(test_data / "vqa_rad" / "testset.json")
    for sample in samples:
        sample["metadata"]["question_id"] = sample["metadata"]["qid"]
    return write_jsonl(samples, tmp_path / "test.jsonl"), samples


def test_llava_med_answer_files_are_matched_by_question_text_when_their_ids_are_their_own(
        test_data, vqa_rad_test, tmp_path, capsys):
    samples_path, samples = vqa_rad_test
    answers, texts = _llava_med_file(test_data, tmp_path / "test-answer-file.jsonl")
    qids = {s["metadata"]["qid"] for s in samples}
    colliding = [line["question_id"] for line in read_jsonl(answers) if line["question_id"] in qids]
    assert len(colliding) == 56 and len(read_jsonl(answers)) == 451  # 56 ids name another question
    got = load_predictions(answers, samples)
    assert got == {s["id"]: texts[s["metadata"]["qid"]] for s in samples}
    duplicated = [s["id"] for s in samples if s["conversations"][0]["content"][1]["text"] == "Is this an MRI?"]
    assert len(duplicated) > 1                                  # order of occurrence pairs repeated questions
    result = evaluate_files(samples_path, answers, metrics=QUICK_VQA, n_boot=0)
    assert result["predictions_matched_by"] == "question_text" and result["n_missing_predictions"] == 0
    assert main_evaluate(["--samples", str(samples_path), "--predictions", str(answers), "--metrics",
                          "closed_accuracy", "--n-boot", "0"]) == 0
    assert capsys.readouterr().err == (
        "brainvlm evaluate: LLaVA-Med answers matched to samples by question text and order of occurrence "
        "(their question ids are not the samples' question ids)\n")


def test_an_answer_file_numbered_by_qid_is_matched_by_question_id(vqa_rad_test, tmp_path):
    samples_path, samples = vqa_rad_test
    lines = [{"question_id": s["metadata"]["qid"], "prompt": "other wording", "text": "yes", "answer_id": "a",
              "model_id": "m", "metadata": {}} for s in samples]
    answers = write_jsonl(lines, tmp_path / "answers.jsonl")
    result = evaluate_files(samples_path, answers, metrics=QUICK_VQA, n_boot=0)
    assert result["predictions_matched_by"] == "question_id" and result["n_predictions"] == 451


def test_a_repeated_question_with_an_answer_missing_is_refused_naming_its_rows(test_data, vqa_rad_test, tmp_path):
    _, samples = vqa_rad_test
    first_mri = next(k for k, s in enumerate(samples)
                     if s["conversations"][0]["content"][1]["text"] == "Is this an MRI?")
    answers, _ = _llava_med_file(test_data, tmp_path / "test-answer-file.jsonl", skip=first_mri)
    with pytest.raises(ValueError) as caught:
        load_predictions(answers, samples)
    message = str(caught.value)
    assert message.startswith(f"{answers}: the answers match the samples neither by question id nor by "
                              "question text. By id: ")
    mri_lines = [n for n, line in enumerate(read_jsonl(answers), 1) if line["prompt"].startswith("Is this an MRI?")]
    n_asked = sum(s["conversations"][0]["content"][1]["text"] == "Is this an MRI?" for s in samples)
    assert f"By text: {len(mri_lines)} of 450 answers cannot be paired" in message
    assert (f"line {mri_lines[0]} (question_id {read_jsonl(answers)[mri_lines[0] - 1]['question_id']}, "
            f"'is this an mri?'): {n_asked} samples ask it and {n_asked - 1} answers answer it, so order cannot "
            "pair them") in message


@pytest.mark.parametrize("text, held", [
    ('[{"id": "a", "prediction": "yes"},\n {"id": "b", "prediction": "no"}]', "a JSON array"),
    ('[{"id": "a", "prediction": "yes"}]', "a JSON array"),
    ('{\n  "id": "a",\n  "prediction": "yes"\n}\n', "one JSON object spread over several lines"),
])
def test_predictions_that_are_not_json_lines_say_what_the_file_holds(files, tmp_path, text, held):
    path = tmp_path / "predictions.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        load_predictions(path, files[1])
    assert str(caught.value) == (f"{path}: expected JSON Lines: one object per line; this file holds {held} "
                                 "(write one object per line)")
