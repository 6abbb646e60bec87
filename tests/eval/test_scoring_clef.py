"""The ImageCLEF headline of ``brainvlm evaluate``: primary and secondary concept F1 of concept answers
(equal to scoring the submission files written from them) and caption ROUGE-1, with intervals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainvlm.app.commands.evaluate import main as main_evaluate
from brainvlm.data.clef_tasks import MANUAL_CUIS
from brainvlm.data.concept_map import ConceptMapper
from brainvlm.eval import answers, captions, clef, clef_files, scoring
from brainvlm.eval.evaluate import evaluate_files

NAMES = {"Abdomen": "C0000726", "Cardiomegaly": "C0018800"}


def _sample(i: int, task: str, answer: str, **metadata) -> dict:
    return {"id": f"s{i}", "task": task, "metadata": {"split": "test", **metadata},
            "conversations": [{"role": "user", "content": [{"type": "text", "text": "Question?"}]},
                              {"role": "assistant", "content": [{"type": "text", "text": answer}]}]}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


CONCEPTS = [  # (reference, manual_cuis or None, prediction): primary, secondary
    ("Concepts: C0040405; C0817096", ["C0040405", "C0817096"], "Concepts: C0040405"),  # 2/3, 2/3
    ("Concepts: C0024485; C0000001", [], "Concepts: C0024485; C0000001"),               # 1, left out
    ("Concepts:", None, "Concepts:"),                                                   # 1 (both empty), out
    ("Concepts: C0041618", None, "I do not know"),                                      # 0 (unparseable), 0
    # names mapped; "lung" is unmapped, so the CUI file leaves it out: 1, 1 (micro-F1 counts it as wrong)
    ("Concepts: C0000726; C0018800", ["C0000726"], "Concepts: abdomen; Cardiomegaly; lung"),
]


def _concept_files(tmp_path: Path) -> tuple[Path, Path]:
    samples = [_sample(i, "concepts", ref, **({} if manual is None else {"manual_cuis": manual}))
               for i, (ref, manual, _) in enumerate(CONCEPTS)]
    predictions = [{"id": f"s{i}", "prediction": p} for i, (_, _, p) in enumerate(CONCEPTS)]
    return _jsonl(tmp_path / "s.jsonl", samples), _jsonl(tmp_path / "p.jsonl", predictions)


def test_concepts_report_the_clef_primary_and_secondary_f1_with_intervals(tmp_path):
    samples, predictions = _concept_files(tmp_path)
    got = evaluate_files(samples, predictions, concept_names=ConceptMapper.from_names(NAMES),
                         allowed_cuis=MANUAL_CUIS, n_boot=50)
    assert got["clef_primary_f1"] == pytest.approx((2 / 3 + 1 + 1 + 0 + 1) / 5)
    assert got["micro_precision"] == pytest.approx(5 / 6)                 # "lung" is a wrong concept here
    assert got["clef_secondary_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert got["clef_secondary_n_images"] == 3
    assert {"micro_f1", "macro_f1", "clef_primary_f1", "clef_secondary_f1"} <= set(got["ci"])
    ci = got["ci"]["clef_primary_f1"]
    assert ci["lo"] <= got["clef_primary_f1"] <= ci["hi"] and ci["n_boot"] == 50
    plain = evaluate_files(samples, predictions, concept_names=NAMES, n_boot=20)   # a plain mapping works too
    assert plain["clef_primary_f1"] == got["clef_primary_f1"]
    assert "clef_secondary_f1" not in plain and "clef_secondary_f1" not in plain["ci"]


def test_the_command_line_takes_the_allow_list(tmp_path, capsys):
    samples, predictions = _concept_files(tmp_path)
    common = ["--samples", str(samples), "--predictions", str(predictions), "--n-boot", "0"]
    assert main_evaluate([*common, "--allowed", "manual"]) == 0
    assert json.loads(capsys.readouterr().out)["clef_secondary_n_images"] == 3
    assert main_evaluate([*common, "--allowed", "C0040405"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["clef_secondary_n_images"] == 1 and result["clef_secondary_f1"] == 1.0


def test_the_primary_f1_equals_scoring_the_files_written_from_the_answers(tmp_path):
    mapper = ConceptMapper.from_names(NAMES)
    ids = [f"s{i}" for i in range(len(CONCEPTS))]
    gold = {i: answers.parse_concepts(ref) for i, (ref, _, _) in zip(ids, CONCEPTS)}
    parsed = {i: answers.parse_concepts(p, mapper) or frozenset() for i, (_, _, p) in zip(ids, CONCEPTS)}
    mapped = {i: [c for c in concepts if c.startswith("C")] for i, concepts in parsed.items()}  # unmapped out
    files = [clef_files.write_concepts(tmp_path / f"{name}.csv", ids, sets)
             for name, sets in (("gold", gold), ("sub", mapped))]
    samples = [_sample(i, "concepts", ref) for i, (ref, _, _) in enumerate(CONCEPTS)]
    predictions = {f"s{i}": p for i, (_, _, p) in enumerate(CONCEPTS)}
    table = scoring.score_samples(samples, predictions, scoring.ScoreConfig(concept_names=mapper))
    assert table["clef_f1"].tolist() == clef.clef_per_image(*files)["primary"].tolist()


def test_captions_report_the_challenge_rouge1_with_an_interval(tmp_path):
    references = ["CT of the chest.", "MRI of the head, 3 slices.", "Ultrasound of the abdomen."]
    predictions = ["CT of the chest", "MRI of the brain with 5 slices", "x"]
    samples = _jsonl(tmp_path / "s.jsonl", [_sample(i, "caption", r) for i, r in enumerate(references)])
    rows = [{"id": f"s{i}", "prediction": p} for i, p in enumerate(predictions)]
    preds = _jsonl(tmp_path / "p.jsonl", rows)
    got = evaluate_files(samples, preds, metrics=["clef_rouge1_f"], n_boot=30)
    assert got["clef_rouge1_f"] == pytest.approx(captions.mean_rouge1(predictions, references))
    assert set(got["ci"]) == {"clef_rouge1_f"}


def test_a_sample_without_gold_is_not_scored(tmp_path):
    samples = _jsonl(tmp_path / "s.jsonl", [_sample(0, "concepts", "Concepts:", no_reference=True)])
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": "s0", "prediction": "Concepts: C0040405"}])
    with pytest.raises(ValueError, match=r"sample 's0': \$.metadata.no_reference is true"):
        evaluate_files(samples, preds, n_boot=0)


def test_manual_concepts_must_be_a_list(tmp_path):
    samples = _jsonl(tmp_path / "s.jsonl", [_sample(0, "concepts", "Concepts: C1", manual_cuis="C0040405")])
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": "s0", "prediction": "Concepts: C0040405"}])
    with pytest.raises(ValueError, match=r"\$.metadata.manual_cuis must be a list of CUIs"):
        evaluate_files(samples, preds, allowed_cuis=["C0040405"], n_boot=0)
