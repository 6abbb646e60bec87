"""The report study: data sources split by patient, EHR off, the curriculum stages and variants, a short fit,
the baselines, and resume in stage B through `python -m brainvlm train --study report`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from brainvlm.core.jsonio import read_jsonl, write_jsonl
from brainvlm.core.paths import PARAMS_DIR, PROJECT_ROOT
from brainvlm.data import synthetic_cxr
from brainvlm.data.adapters import AdapterError
from brainvlm.data.curriculum import PROMPT_A, PROMPT_B
from brainvlm.eval import reportmetrics
from brainvlm.studies import controls, report
from brainvlm.studies import report_baselines as baselines

GROUPS = {"icd_image": sorted(synthetic_cxr.IMAGE_ICD.values()), "icd_ehr": sorted(synthetic_cxr.HISTORY_ICD.values())}


def source(**over) -> report.DataSource:
    base = dict(reports_table="", curriculum_files=[], image_root="", ehr_context="", chexpert_dict="",
                ehr_columns=list(synthetic_cxr.EHR_COLUMNS), prompt_a=PROMPT_A, prompt_b=PROMPT_B, n_patients=24,
                image_size=32)
    return report.DataSource(**{**base, **over})


def build(run: Path, task: str = "report", **over) -> dict:
    records, root, joins = report.load_records(source(**over), run / "data" / "cxr", 0, progress=False)
    samples = report.to_samples(report.split_records(records, (0.6, 0.2, 0.2), 0), "synthetic", joins)
    return report.write_data(samples, run / "data" / task, root)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("report_run")
    build(run)
    return run


def params(**over) -> dict:
    base = {"seed": 0, "model": "tiny", "dtype": "float32", "load_in_4bit": False, "report_vision_tower": "", "report_lora_r": 4,
            "report_lora_alpha": 8, "report_lora_dropout": 0.0, "report_lr": 2.0e-3, "report_batch_size": 4,
            "report_grad_accum": 1, "report_steps": 4, "report_epochs": 0.0, "report_warmup_ratio": 0.0,
            "report_precision": "fp32",
            "report_stages": [{"name": "A", "share": 0.5, "mode": "image_only"},
                              {"name": "B", "share": 0.5, "mode": "image_ehr"}],
            "report_ehr_dropout": 0.5, "report_eval_every": 0, "report_save_every": 0, "report_val_samples": 4}
    return {**base, **over}


def test_splits_keep_patients_and_both_stages_of_an_image_together(run_dir):
    manifest = report.read_data(run_dir / "data" / "report")
    samples = {split: read_jsonl(path) for split, path in manifest["files"].items()}
    assert report.audit(samples)["passed"].all()
    summary = report.summary(samples)
    assert set(summary["stage"]) == {"A", "B"}
    for split in ("train", "val", "test"):  # each image once per stage
        rows = summary[summary["split"] == split]
        assert rows["images"].tolist() == rows["samples"].tolist() and rows["samples"].nunique() == 1


def test_same_seed_same_files_other_seed_other_split(tmp_path):
    first, second = (build(tmp_path / name, n_patients=12) for name in ("a", "b"))
    files = lambda manifest: [Path(manifest["files"][s]).read_bytes() for s in ("train", "val", "test")]
    assert files(first) == files(second)
    images = sorted((tmp_path / "a" / "data" / "cxr").rglob("*.png"))
    assert images and all(p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
                          for p in images)
    records, _, _ = report.load_records(source(n_patients=12), tmp_path / "c" / "data" / "cxr", 0)
    assert report.split_records(records, (0.6, 0.2, 0.2), 1) != report.split_records(records, (0.6, 0.2, 0.2), 0)


def test_curriculum_files_without_ids_split_by_the_patient_of_their_mimic_path(tmp_path):
    records = []
    for patient in range(10, 22):
        for study in (1, 2):
            image = f"files/p{patient // 10:02d}/p{patient}/s{patient}{study}/view.jpg"
            records.append({"image": image, "prompt": PROMPT_A, "target": "Impression: ok.\nCheXpert: {}",
                            "stage": "A"})
            records.append({"image": image, "prompt": PROMPT_B.replace("{ehr}", '{"age": 70}'),
                            "target": "Impression: ok.\nCheXpert: {}\nICD: []", "stage": "B"})
    write_jsonl(records[:24], tmp_path / "curriculum_train.jsonl")
    write_jsonl(records[24:], tmp_path / "curriculum_val.jsonl")
    (tmp_path / "ehr_context.jsonl").write_text('{"study_id": "101", "age": 70}\n')
    files = [str(tmp_path / "curriculum_train.jsonl"), str(tmp_path / "curriculum_val.jsonl")]
    loaded, root, joins = report.load_records(
        source(curriculum_files=files, image_root=str(tmp_path), ehr_context=str(tmp_path / "ehr_context.jsonl")),
        tmp_path / "unused", 0)
    samples = report.to_samples(report.split_records(loaded, (0.5, 0.25, 0.25), 0), "mimic", joins)
    assert sum(map(len, samples.values())) == 48 and report.audit(samples)["passed"].all()
    everything = [s for split in samples.values() for s in split]
    assert {s["metadata"]["mode"] for s in everything} == {"image_only", "image_ehr"}
    assert [s["metadata"]["ehr_context"] for s in everything if s["metadata"]["study_id"] == "101"] == [{"study_id": "101", "age": 70}] * 2
    with pytest.raises(ValueError, match="image_root is needed"):
        report.load_records(source(curriculum_files=files), tmp_path, 0)


def test_a_curriculum_record_without_ids_names_its_file_and_line(tmp_path):
    write_jsonl([{"image": "a.png", "prompt": PROMPT_A, "target": "x", "subject_id": "p1", "study_id": "s1"},
                 {"image": "b.png", "prompt": PROMPT_A, "target": "x"}], tmp_path / "c.jsonl")
    records, _, _ = report.load_records(source(curriculum_files=[str(tmp_path / "c.jsonl")], image_root="."),
                                        tmp_path, 0)
    with pytest.raises(AdapterError, match=r"c\.jsonl:2: no patient and study id"):
        report.split_records(records, (0.6, 0.2, 0.2), 0)


def test_a_reports_table_row_with_a_bad_label_names_its_file_line(tmp_path):
    table = synthetic_cxr.make_synthetic_cxr(tmp_path, n_patients=3, seed=1, progress=False)
    lines = table.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[2].split(",")
    row[header.index("Cardiomegaly")] = "2"
    table.write_text("\n".join([lines[0], lines[1], ",".join(row), *lines[3:]]) + "\n")
    with pytest.raises(AdapterError, match=r"reports\.csv, row 3: Cardiomegaly is '2'"):
        report.load_records(source(reports_table=str(table)), tmp_path, 0)


def test_ehr_off_removes_only_the_patient_data_block(run_dir):
    manifest = report.read_data(run_dir / "data" / "report")
    stage_b = report.of_mode(read_jsonl(manifest["files"]["train"]), "image_ehr")[0]
    off = report.ehr_off(stage_b)
    texts = [p["text"] for p in off["conversations"][0]["content"] if p["type"] == "text"]
    assert texts == ["Image:", "Answer Impression, CheXpert & ICD."]
    assert "Patient Data:" in stage_b["conversations"][0]["content"][0]["text"]  # the original is untouched
    assert off["conversations"][1] == stage_b["conversations"][1]
    assert off["id"] == stage_b["id"]  # on and off answers pair by id


def test_settings_are_complete_and_stages_share_the_steps(run_dir):
    with pytest.raises(report.SettingsError, match=r"report settings missing: \['report_lr'\]"):
        report.settings_for({k: v for k, v in params().items() if k != "report_lr"})
    with pytest.raises(report.SettingsError, match="shares must be positive and sum to 1"):
        report.settings_for(params(report_stages=[{"name": "A", "share": 0.7, "mode": "image_only"}]))
    with pytest.raises(report.SettingsError, match=r"report_stages\[0\].*mode 'image'"):
        report.settings_for(params(report_stages=[{"name": "A", "share": 1.0, "mode": "image"}]))
    settings = report.settings_for(params(report_steps=10))
    train = read_jsonl(report.read_data(run_dir / "data" / "report")["files"]["train"])
    stages = report.stage_samples(train, settings)
    assert [s.name for s in stages] == ["A", "B"] and [s.max_steps for s in stages] == [5, 5]
    assert all(s["metadata"]["mode"] == "image_only" for s in stages[0].train)
    assert {s["metadata"]["mode"] for s in stages[1].train} == {"image_ehr", "image_ehr_off"}  # EHR dropout
    schedule = report.schedule_table(stages)
    assert schedule["first_step"].tolist() == [1, 6] and schedule["last_step"].tolist() == [5, 10]
    by_epochs = report.settings_for(params(report_steps=0, report_epochs=2.0))
    assert sum(s.max_steps for s in report.stage_samples(train, by_epochs)) == -(-2 * len(train) // 4)
    mixed = report.settings_for(params(report_stages=report.VARIANTS["ab_shuffled"]))
    assert {s["metadata"]["mode"] for s in report.stage_samples(train, mixed)[0].train} >= set(report.MODES)


def test_a_short_fit_answers_and_the_baselines_score(run_dir):
    trained = report.train(params(), "report", run_dir, progress=False)
    assert trained.result.steps == 4 and set(trained.result.log["stage"]) == {"A", "B"}
    manifest = report.read_data(run_dir / "data" / "report")
    train = read_jsonl(manifest["files"]["train"])
    test = report.of_mode(read_jsonl(manifest["files"]["test"]), "image_ehr")[:4]
    out = run_dir / "p.jsonl"
    answers = report.predict(trained.model, trained.processor, test, out, manifest["image_root"], 4, 8, False)
    assert len(answers) == 4 and len(read_jsonl(out)) == 4
    again = report.train(params(report_lr=1.0e-2), "report", run_dir, name="other", progress=False)
    report.predict(again.model, again.processor, test, out, manifest["image_root"], 4, 8, False)
    assert json.loads((run_dir / "p.meta.json").read_text())["weights"] != ""  # another model: file restarted
    assert len(read_jsonl(out)) == 4
    constant = baselines.constant_report(train)
    assert constant.startswith("Impression: ") and "\nCheXpert: {" in constant and "\nICD: [" in constant
    retrieved = baselines.retrieval_reports(trained.model, trained.processor, train, test, manifest["image_root"],
                                         progress=False)
    assert all(r in {baselines.target_of(s) for s in train} for r in retrieved)
    references = [baselines.target_of(s) for s in test]
    perfect = reportmetrics.headline(reportmetrics.count_table(test, references, GROUPS), list(GROUPS))
    assert perfect["chexpert14_micro_f1_u0"] == 1.0 and perfect["both_parse_rate"] == 1.0
    flat = reportmetrics.headline(reportmetrics.count_table(test, [constant] * 4, GROUPS), list(GROUPS))
    assert flat["chexpert14_micro_f1_u0"] < 1.0


def test_control_images_are_written_outside_the_data(run_dir):
    manifest = report.read_data(run_dir / "data" / "report")
    train = read_jsonl(manifest["files"]["train"])
    pictures = report.control_images(train, manifest["image_root"], run_dir / "controls", 32)
    assert (run_dir / "controls" / pictures["mean_image"]).is_file()
    assert (run_dir / "controls" / pictures["blank_image"]).is_file()
    assert not (Path(manifest["image_root"]) / pictures["mean_image"]).exists()
    moved = controls.blank_query(train[:1], pictures["mean_image"])
    assert controls.image_parts(moved[0])[-1]["image_path"] == pictures["mean_image"]


def _train_command(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "brainvlm", "train", "--study", "report", "--task", "report", "--params",
            str(PARAMS_DIR / "ci.yaml"), "--run-dir", str(run), "--no-progress", "-p", "report_save_every", "4",
            *extra]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(next((run / "models" / "report" / "adapter").glob("*.safetensors")))


def test_interrupted_in_stage_b_the_command_line_resumes_to_the_uninterrupted_adapter(tmp_path):
    """ci.yaml's stages (notebook 05's defaults): A 35%, B 65% of 30 steps (B from step 11); checkpoints
    every 4 stage steps (14, 18, ...). The broken run dies after step 17, as a crash would, and resumes from 14."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    for run in (whole, broken):
        build(run, n_patients=16)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(_train_command(whole), check=True, cwd=PROJECT_ROOT, env=env, capture_output=True)
    crashed = subprocess.run(_train_command(broken, "--stop-after", "17"), cwd=PROJECT_ROOT, env=env,
                             capture_output=True, text=True)
    assert crashed.returncode != 0 and "stopped after step 17" in crashed.stderr
    folder = broken / "models" / "report"
    assert not (folder / "adapter").exists() and (folder / "checkpoints" / "step-14").is_dir()
    log = (folder / "log.csv").read_text() if (folder / "log.csv").exists() else ""
    resumed = subprocess.run(_train_command(broken, "--resume"), cwd=PROJECT_ROOT, env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, got = _adapter(whole), _adapter(broken)
    assert expected.keys() == got.keys() and log != (folder / "log.csv").read_text()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def _report(block: str, icd: str = "[]", impression: str = "x") -> dict:
    text = f"Impression: {impression}\nCheXpert: {{{block}}}\nICD: {icd}"
    return {"id": f"{block}{impression}", "metadata": {"mode": "image_ehr", "patient_id": f"p{block}{impression}"},
            "conversations": [{"role": "assistant", "content": [{"type": "text", "text": text}]}]}


def test_the_constant_report_is_the_block_that_scores_best_not_the_most_frequent():
    normal = '"No Finding": 1'
    effusion = '"Pleural Effusion": 1'
    both = '"Pleural Effusion": 1, "Cardiomegaly": 1'
    train = [_report(normal)] * 4 + [_report(effusion, impression="e")] * 3 + [_report(both, impression="b")] * 3
    train.append({**_report(effusion, impression="image only"), "metadata": {"mode": "image_only"}})
    # micro-F1 against all ten: "No Finding" 8/23 = 0.35, effusion 12/23 = 0.52, effusion + cardiomegaly 18/33 = 0.55
    assert baselines.micro_f1([frozenset({"No Finding"})] * 4, [frozenset({"No Finding"})] * 4) == 1.0
    chosen = baselines.constant_report(train)
    assert chosen == baselines.target_of(_report(both, impression="b"))
    tied = [_report(effusion, impression="e1")] * 2 + [_report(effusion, impression="e2")] * 3
    assert "Impression: e2" in baselines.constant_report(tied)  # the most frequent report with the block
    with pytest.raises(ValueError, match="stage-B"):
        baselines.constant_report([{**train[0], "metadata": {"mode": "image_only"}}])


def test_answers_that_ignore_their_study_score_the_same_against_shuffled_references():
    blocks = ['"Pleural Effusion": 1', '"Cardiomegaly": 1', '"No Finding": 1', '"Consolidation": 1']
    test = [_report(blocks[i % 4], impression=str(i)) for i in range(40)]
    own = [baselines.target_of(s) for s in test]
    informed = baselines.shuffled_gold_gap(test, own, seed=0, n_shuffles=50)
    assert informed["own"] == 1.0 and informed["point"] > 0.5 and informed["share_shuffled_at_least"] == 0.0
    constant = baselines.shuffled_gold_gap(test, [own[0]] * 40, seed=0, n_shuffles=50)
    assert constant["point"] == pytest.approx(0.0, abs=1e-12) and constant["share_shuffled_at_least"] == 1.0
    again = baselines.shuffled_gold_gap(test, own, seed=0, n_shuffles=50)
    assert again == informed

