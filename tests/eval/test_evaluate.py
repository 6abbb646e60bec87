"""evaluate_files end to end: VQA-RAD through the adapter, label/number/report/concept tasks, the CLI."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from brainvlm.app.commands.evaluate import main as main_evaluate
from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.vqa_rad import vqa_rad_to_samples
from brainvlm.data.schema import validate_sample
from brainvlm.eval.evaluate import evaluate_files
from brainvlm.eval.textmetrics import caption_metrics

QUICK_VQA = ["closed_accuracy", "closed_accuracy_llava_med_script", "open_recall", "open_exact_match"]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _answer(sample: dict) -> str:
    return sample["conversations"][-1]["content"][0]["text"]


@pytest.fixture(scope="module")
def vqa_rad(test_data) -> list[dict]:
    return vqa_rad_to_samples(test_data / "vqa_rad" / "testset.json")


# -------------------------------------------------------------------------------------------- adapter
def test_adapter_turns_vqa_rad_into_valid_canonical_samples(vqa_rad):
    assert len(vqa_rad) == 451 and len({s["id"] for s in vqa_rad}) == 451
    assert all(validate_sample(s) == [] for s in vqa_rad)
    assert Counter(s["metadata"]["domain"] for s in vqa_rad) == {"chest": 174, "abdomen": 158, "head": 119}
    assert Counter(s["metadata"]["answer_type"] for s in vqa_rad) == {"CLOSED": 272, "OPEN": 179}
    first = vqa_rad[0]
    assert first["id"] == "vqa_rad_test_000011" and first["task"] == "vqa"
    assert first["conversations"][0]["content"] == [
        {"type": "image", "image_path": "synpic42202.jpg", "modality": "other"},
        {"type": "text", "text": "Is there evidence of an aortic aneurysm?"}]
    assert _answer(first) == "yes"
    picked = {k: first["metadata"][k] for k in ("split", "qid", "question_type", "image", "domain")}
    assert picked == {"split": "test", "qid": 11, "question_type": "PRES", "image": "synpic42202.jpg",
                      "domain": "chest"}


def test_adapter_strips_answer_types_and_names_bad_records(tmp_path):
    record = {"qid": 7, "image_name": "x.jpg", "image_organ": "ABD", "answer": 2, "answer_type": "CLOSED ",
              "question_type": "COUNT", "question": "How many\tkidneys?"}
    path = tmp_path / "trainset.json"
    path.write_text(json.dumps([record]), encoding="utf-8")
    (sample,) = vqa_rad_to_samples(path)
    assert sample["metadata"]["answer_type"] == "CLOSED" and sample["metadata"]["split"] == "train"
    assert _answer(sample) == "2" and sample["conversations"][0]["content"][1]["text"] == "How many kidneys?"
    with pytest.raises(AdapterError, match=r"item \[0\] \(qid 7\): image .x.jpg. is not under the image root"):
        vqa_rad_to_samples(path, image_root=tmp_path)
    path.write_text(json.dumps([{**record, "image_organ": "LEG"}]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"item \[0\] \(qid 7\) has image_organ 'LEG'"):
        vqa_rad_to_samples(path)
    other = tmp_path / "questions.json"
    other.write_text(json.dumps([record]), encoding="utf-8")
    with pytest.raises(ValueError, match="pass split="):
        vqa_rad_to_samples(other)


# --------------------------------------------------------------------------------------- VQA by hand
def _vqa_predictions(samples: list[dict]) -> tuple[list[dict], dict]:
    """Predictions built by rule, and the figures those rules imply, counted here without the library."""
    rows, tally = [], Counter()
    for sample in samples:
        gt, kind = _answer(sample), sample["metadata"]["answer_type"]
        if kind == "CLOSED" and gt.lower() in ("yes", "no"):
            rule = tally["yn"] % 4
            tally["yn"] += 1
            pred = [f"{gt.capitalize()}, I am sure.", "No." if gt.lower() == "yes" else "Yes.", "I am not sure.",
                    None][rule]
            tally["closed_right"] += rule == 0
            tally["script_hit"] += rule == 0 or (rule == 2 and gt.lower() == "no")   # "no" is inside "not"
            tally["script_zero"] += rule == 3                                      # missing: no yes/no at all
            tally["unparseable"] += rule in (2, 3)
        elif kind == "CLOSED":
            rule = tally["other"] % 2
            tally["other"] += 1
            pred = [gt, "Something else entirely"][rule]
            tally["closed_right"] += rule == 0
            holds_yes_no = "yes" in gt.lower() or "no" in gt.lower()                 # "abnormal" holds "no"
            tally["script_hit"] += rule == 0 and holds_yes_no
            tally["script_zero"] += rule == 1 or not holds_yes_no
        else:
            rule = tally["open"] % 3
            tally["open"] += 1
            pred = [gt, f"I think it is {gt}", None][rule]
            tally["open_recalled"] += rule in (0, 1)
            tally["open_exact"] += rule == 0
            tally["unparseable"] += rule == 2
        tally["missing"] += pred is None
        if pred is not None:
            rows.append({"id": sample["id"], "prediction": pred})
    return rows + [{"id": "not_a_sample_1", "prediction": "yes"}, {"id": "not_a_sample_2", "prediction": "no"}], tally


def test_vqa_rad_closed_and_open_figures_by_hand(vqa_rad, tmp_path):
    samples = _write_jsonl(tmp_path / "test.jsonl", vqa_rad)
    rows, tally = _vqa_predictions(vqa_rad)
    preds = _write_jsonl(tmp_path / "pred.jsonl", rows)
    out = tmp_path / "metrics" / "M.json"
    got = evaluate_files(samples, preds, metrics=QUICK_VQA, out=out, group_by="domain", n_boot=100, partial=True)
    assert (tally["yn"], tally["other"], tally["open"]) == (251, 21, 179)
    assert got["closed_accuracy"] == pytest.approx(tally["closed_right"] / 272)
    script = tally["script_hit"] / (tally["script_hit"] + tally["script_zero"])
    assert got["closed_accuracy_llava_med_script"] == pytest.approx(script)
    assert got["closed_accuracy_llava_med_script"] > got["closed_accuracy"] + 0.2   # the skipping inflates it
    assert got["open_recall"] == pytest.approx(tally["open_recalled"] / 179)
    assert got["open_exact_match"] == pytest.approx(tally["open_exact"] / 179)
    assert "open_token_f1" not in got and "Bleu_1" not in got                      # only what was asked
    assert got["n_samples"] == 451 and got["n_predictions"] == len(rows)
    assert got["n_missing_predictions"] == tally["missing"] and got["n_extra_predictions"] == 2
    assert got["n_unparseable"] == tally["unparseable"]
    domains = got["by_group"]["domain"]
    assert sorted(domains) == ["abdomen", "chest", "head"]
    assert sum(d["n_group"] for d in domains.values()) == 451
    ci = got["ci"]["closed_accuracy"]
    assert ci["unit"] == "image" and ci["n_units"] == 203 and ci["lo"] <= ci["point"] <= ci["hi"]
    written = out.read_text(encoding="utf-8")
    assert json.loads(written) == got and list(json.loads(written)) == sorted(got)
    evaluate_files(samples, preds, metrics=QUICK_VQA, out=tmp_path / "again.json", group_by="domain", n_boot=100,
                   partial=True)
    assert (tmp_path / "again.json").read_text(encoding="utf-8") == written       # byte-identical rerun


def test_vqa_rad_text_metrics_per_domain(vqa_rad, tmp_path):
    chosen = [s for s in vqa_rad if s["metadata"]["answer_type"] == "OPEN"][:60]
    rows = [{"id": s["id"], "prediction": _answer(s) if i % 2 else f"the {_answer(s)} region"}
            for i, s in enumerate(chosen)]
    got = evaluate_files(_write_jsonl(tmp_path / "s.jsonl", chosen), _write_jsonl(tmp_path / "p.jsonl", rows),
                         group_by="domain", n_boot=0, n_boot_text=20)
    for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L"):
        assert 0.0 < got[name] <= 1.0, name
    assert got["CIDEr"] > 0 and got["tokenize"] == "ptb"
    assert got["ci"]["CIDEr"]["lo"] <= got["CIDEr"] <= got["ci"]["CIDEr"]["hi"]
    assert "METEOR_segment_mean" in got["ci"]
    for domain, scores in got["by_group"]["domain"].items():
        part = [(r["prediction"], [_answer(s)]) for r, s in zip(rows, chosen) if s["metadata"]["domain"] == domain]
        alone = caption_metrics([p for p, _ in part], [r for _, r in part], tokenize="ptb", meteor=False)
        assert scores["CIDEr"] == pytest.approx(alone["CIDEr"]) and scores["Bleu_4"] == pytest.approx(alone["Bleu_4"])


# ---------------------------------------------------------------------------------- other task kinds
def _sample(i: int, task: str, answer: str, **metadata) -> dict:
    return {"id": f"s{i}", "task": task, "metadata": {"split": "test", **metadata},
            "conversations": [{"role": "user", "content": [{"type": "text", "text": "Question?"}]},
                              {"role": "assistant", "content": [{"type": "text", "text": answer}]}]}


def test_categorical_free_text_answers(tmp_path):
    targets = ["female", "male", "female", "male", "female", "male"]
    samples = [_sample(i, "comparison_categorical", f"The subject is {t}.", target=t, query_subject=f"sub-{i // 2}",
                       domain="brain") for i, t in enumerate(targets)]
    answers = ["She is a woman.", "The subject is female.", "female", "Male or female? I think male.", "unclear"]
    preds = [{"id": f"s{i}", "prediction": a} for i, a in enumerate(answers)]        # s5 has no prediction
    labels = {"male": ["man", "M"], "female": ["woman", "F"]}
    got = evaluate_files(_write_jsonl(tmp_path / "s.jsonl", samples), _write_jsonl(tmp_path / "p.jsonl", preds),
                         labels=labels, n_boot=50, out=tmp_path / "M.json", partial=True)
    assert got["accuracy"] == pytest.approx(3 / 6)
    assert got["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert got["macro_f1"] == pytest.approx((2 * 2 / (4 + 1 + 1) + 2 * 1 / (2 + 0 + 2)) / 2)
    assert got["n_unparseable"] == 2 and got["n_missing_predictions"] == 1
    assert got["confusion_matrix"] == {"female": {"female": 2, "male": 0, "unparseable": 1},
                                       "male": {"female": 1, "male": 1, "unparseable": 1}}
    assert got["ci"]["accuracy"]["unit"] == "query_subject" and got["ci"]["accuracy"]["n_units"] == 3
    with pytest.raises(ValueError, match=r"unknown metrics \['mae'\].*choose from"):
        evaluate_files(tmp_path / "s.jsonl", tmp_path / "p.jsonl", metrics=["mae"], partial=True)
    with pytest.raises(KeyError, match="'site'"):
        evaluate_files(tmp_path / "s.jsonl", tmp_path / "p.jsonl", group_by="site", n_boot=0, partial=True)


def test_numeric_answers_use_the_fallback(tmp_path):
    samples = [_sample(i, "comparison_numerical", f"BMI {t}", target=t, query_subject=f"sub-{i}")
               for i, t in enumerate([20.0, 25.0, 30.0])]
    preds = [{"id": "s0", "prediction": "The BMI is 22."}, {"id": "s1", "prediction": "It is hard to say"}]
    paths = _write_jsonl(tmp_path / "s.jsonl", samples), _write_jsonl(tmp_path / "p.jsonl", preds)
    default = evaluate_files(*paths, n_boot=0, partial=True)
    assert default["numeric_fallback"] == 25.0 and "training mean" in default["numeric_fallback_source"]
    assert default["mae"] == pytest.approx((2 + 0 + 5) / 3) and default["n_unparseable"] == 2
    given = evaluate_files(*paths, fallback=21.0, n_boot=0, partial=True)
    assert given["mae"] == pytest.approx((2 + 4 + 9) / 3) and given["numeric_fallback_source"] == "given"


def test_report_chexpert_and_icd_label_f1(tmp_path):
    refs = ['Report one. CheXpert: {"Atelectasis": 1, "Edema": -1, "Fracture": 1}\nICD: I10',
            'Report two. CheXpert: {"Cardiomegaly": 1, "No Finding": 0}\nICD: E11.9, I10',
            'Report three. CheXpert: {"No Finding": 1}\nICD: Z00.00']
    preds = ['CheXpert: {"Atelectasis": 1, "Edema": 0}\nICD: I10',
             'CheXpert: {"Cardiomegaly": -1, "Pleural Effusion": 1}\nICD: E11.9',
             'CheXpert: {oops\nICD: z00.00']
    samples = _write_jsonl(tmp_path / "s.jsonl", [_sample(i, "report", r) for i, r in enumerate(refs)])
    predictions = _write_jsonl(tmp_path / "p.jsonl", [{"id": f"s{i}", "prediction": p} for i, p in enumerate(preds)])
    wanted = [f"{name}_{policy}" for policy in ("u0", "u1") for name in (
        "chexpert14_micro_f1", "chexpert14_macro_f1", "chexpert5_micro_f1", "chexpert5_macro_f1",
        "chexpert14_example_f1", "chexpert14_accuracy")] + ["icd_micro_f1", "icd_macro_f1", "icd_exact_accuracy"]
    got = evaluate_files(samples, predictions, metrics=wanted, n_boot=0)
    assert got["chexpert14_micro_f1_u1"] == pytest.approx(4 / 8)        # TP 2, FP 1, FN 3
    assert got["chexpert14_macro_f1_u1"] == pytest.approx(2 / 14)
    assert got["chexpert5_micro_f1_u1"] == pytest.approx(4 / 6)         # TP 2, FP 1, FN 1
    assert got["chexpert5_macro_f1_u1"] == pytest.approx(2 / 5)
    assert got["chexpert_n_unparseable"] == 1
    assert got["icd_micro_f1"] == pytest.approx(6 / 7) and got["icd_macro_f1"] == pytest.approx(8 / 9)
    assert got["icd_exact_accuracy"] == pytest.approx(2 / 3)            # s1 misses I10
    assert got["chexpert14_micro_f1_u0"] == pytest.approx(2 / 6)        # TP 1, FP 1, FN 3
    # example-based F1 (u0): s0 {Atel, Fract} vs {Atel} 2/3; s1 {Cardio} vs {PlEff} 0; s2 {NoF} vs nothing 0
    assert got["chexpert14_example_f1_u0"] == pytest.approx((2 / 3) / 3)
    # accuracy (u0): 42 observation-sample cells, 4 wrong (Fracture s0, Cardio s1, PlEff s1, NoF s2)
    assert got["chexpert14_accuracy_u0"] == pytest.approx(1 - 4 / 42)
    with_ci = evaluate_files(samples, predictions, n_boot=20)
    assert set(with_ci["ci"]) >= {"chexpert14_micro_f1_u0", "chexpert5_micro_f1_u0"}  # the report headline


def test_concept_lists(tmp_path):
    samples = [_sample(0, "concepts", "Concepts: C0032285; C0040405"), _sample(1, "concepts", "C0024109")]
    preds = [{"id": "s0", "prediction": "Concepts: C0032285; pneumonia"}, {"id": "s1", "prediction": "no idea"}]
    got = evaluate_files(_write_jsonl(tmp_path / "s.jsonl", samples), _write_jsonl(tmp_path / "p.jsonl", preds),
                         concept_names={"Pneumonia": "C0032285"}, n_boot=0)
    assert got["micro_f1"] == pytest.approx(2 / (2 + 0 + 2))          # TP 1, FN 2 (one answer unparseable)
    assert got["n_unparseable"] == 1


# ---------------------------------------------------------------------------------- errors and CLI
def test_duplicate_prediction_ids_name_the_id_and_lines(tmp_path):
    samples = _write_jsonl(tmp_path / "s.jsonl", [_sample(0, "classification", "cat", target="cat")])
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"id": "s0", "prediction": "cat"}, {"id": "x", "prediction": ""},
                                                {"id": "s0", "prediction": "dog"}])
    with pytest.raises(ValueError, match=r"prediction id 's0' appears on lines 1 and 3"):
        evaluate_files(samples, preds)


def test_cli_writes_metrics_and_reports_errors(tmp_path, capsys):
    samples = _write_jsonl(tmp_path / "s.jsonl", [_sample(i, "classification", t, target=t)
                                                   for i, t in enumerate(["cat", "dog"])])
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"id": "s0", "prediction": "A cat."}, {"id": "s1", "prediction": "cat"}])
    out = tmp_path / "M.json"
    assert main_evaluate(["--samples", str(samples), "--predictions", str(preds), "--out", str(out),
                          "--metrics", "accuracy,macro_f1", "--n-boot", "20"]) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["accuracy"] == 0.5 and "balanced_accuracy" not in written
    assert json.loads(capsys.readouterr().out) == written
    (tmp_path / "bad.jsonl").write_text('{"id": "s0", "prediction": "cat"}\nnot json\n', encoding="utf-8")
    assert main_evaluate(["--samples", str(samples), "--predictions", str(tmp_path / "bad.jsonl")]) == 1
    assert "bad.jsonl:2: invalid JSON" in capsys.readouterr().err


# ---------------------------------------------------------------------- ids that do not pair up (bad input)
def test_missing_predictions_are_an_error_unless_partial_and_unmatched_ids_are_listed(tmp_path, capsys):
    samples = _write_jsonl(tmp_path / "s.jsonl", [_sample(i, "classification", t, target=t)
                                                   for i, t in enumerate(["cat", "dog", "cat"])]
                           + [_sample(0, "classification", "cat", target="cat") | {"id": "caf\u00e9"}])
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"id": "s0", "prediction": "cat"}, {"id": "S1", "prediction": "dog"},
                                                {"id": "cafe\u0301", "prediction": "cat"},
                                                {"id": "other", "prediction": "dog"}])
    with pytest.raises(ValueError) as caught:
        evaluate_files(samples, preds, n_boot=0)
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    unmatched = ["'S1' (differs from sample id 's1' only in case)",
                 f"{decomposed!r} (differs from sample id {composed!r} only in Unicode normalisation)", "'other'"]
    assert str(caught.value) == (
        f"3 of 4 samples of {samples} have no prediction in {preds}: ['s1', 's2', {composed!r}]; 3 prediction ids "
        f"match no sample: {unmatched}. Score a partial run with --partial (missing answers count as wrong)")
    got = evaluate_files(samples, preds, n_boot=0, partial=True, out=tmp_path / "M.json")
    assert got["accuracy"] == 0.25 and got["n_missing_predictions"] == 3 and got["n_extra_predictions"] == 3
    assert got["missing_prediction_ids"] == ["s1", "s2", "café"]
    assert json.loads((tmp_path / "M.json").read_text(encoding="utf-8"))["unmatched_prediction_ids"][2] == "'other'"
    assert main_evaluate(["--samples", str(samples), "--predictions", str(preds), "--partial", "--n-boot", "0"]) == 0
    err = capsys.readouterr().err
    assert "brainvlm evaluate: 3 prediction ids match no sample (first ten): 'S1' (differs" in err
    assert "brainvlm evaluate: 3 samples have no prediction, scored as wrong (first ten): s1, s2, café" in err


def test_an_empty_predictions_file_a_nan_target_and_a_bad_answer_type_are_errors(tmp_path, capsys):
    samples = _write_jsonl(tmp_path / "s.jsonl", [_sample(0, "comparison_numerical", "BMI 20", target=20.0)])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=rf"^{empty}: no predictions in the file; generate them first"):
        evaluate_files(samples, empty, n_boot=0)
    nan_target = tmp_path / "nan.jsonl"
    nan_target.write_text(json.dumps(_sample(0, "comparison_numerical", "BMI ?", target="NaN")) + "\n")
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"id": "s0", "prediction": "20"}])
    assert main_evaluate(["--samples", str(nan_target), "--predictions", str(preds), "--n-boot", "0"]) == 1
    assert ("brainvlm evaluate: sample 's0': $.metadata.target is 'NaN', not a finite number; fix the samples file"
            in capsys.readouterr().err)
    vqa = _write_jsonl(tmp_path / "v.jsonl", [_sample(0, "vqa", "yes", answer_type="closed-ish")])
    with pytest.raises(ValueError, match=re.escape("sample 's0': $.metadata.answer_type: answer_type 'closed-ish' "
                                                   "is neither CLOSED nor OPEN")):
        evaluate_files(vqa, preds, n_boot=0)


def test_an_undefined_metric_is_null_with_its_reason(tmp_path):
    samples = _write_jsonl(tmp_path / "s.jsonl", [_sample(i, "comparison_numerical", f"BMI {t}", target=t)
                                                   for i, t in enumerate([20.0, 25.0, 30.0])])
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"id": f"s{i}", "prediction": "22"} for i in range(3)])
    got = evaluate_files(samples, preds, n_boot=0, out=tmp_path / "M.json")
    assert got["pearson_r"] is None and got["undefined"]["pearson_r"] == "undefined: every prediction is 22 (constant)"
    assert json.loads((tmp_path / "M.json").read_text())["undefined"]["spearman_rho"].startswith("undefined: every")


def test_report_text_is_labelled_by_the_rule_labeler_with_u0_and_u1(tmp_path, capsys):
    refs = ['Impression: Moderate cardiomegaly. No pleural effusion.\nCheXpert: {"Cardiomegaly": 1}',
            "Impression: Possible pneumonia.",
            "Impression: No acute cardiopulmonary process."]
    preds = ["Impression: Cardiomegaly. Small left pleural effusion.", "Impression: Pneumonia.",
             "Impression: Possible small pneumothorax."]
    samples = _write_jsonl(tmp_path / "s.jsonl", [_sample(i, "report", r) for i, r in enumerate(refs)])
    predictions = _write_jsonl(tmp_path / "p.jsonl", [{"id": f"s{i}", "prediction": p} for i, p in enumerate(preds)])
    assert main_evaluate(["--samples", str(samples), "--predictions", str(predictions), "--labeler", "rule",
                          "--metrics", "chexpert14_rule_micro_f1_u0,chexpert14_rule_micro_f1_u1", "--n-boot", "0",
                          "--tokenize", "none"]) == 0
    got = json.loads(capsys.readouterr().out)
    # u0: truth {Cardiomegaly}, {}, {No Finding}; predicted {Cardiomegaly, Pleural Effusion}, {Pneumonia}, {}
    assert got["chexpert14_rule_micro_f1_u0"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))   # TP 1, FP 2, FN 1
    # u1 adds the uncertain ones: truth {Pneumonia} for s1, predicted {Pneumothorax} for s2
    assert got["chexpert14_rule_micro_f1_u1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))   # TP 2, FP 2, FN 1
