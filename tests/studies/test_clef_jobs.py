"""Concept and caption jobs: an image folder with an unreadable image, a failing generation, names mapped to
CUIs, valid submission files, resume after a kill (SIGKILL and a torn line) and a stale resume refused."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brainvlm.app import cli
from brainvlm.app.commands import jobs
from brainvlm.core.paths import PROJECT_ROOT
from brainvlm.data.adapters.roco import roco_samples
from brainvlm.eval import generate
from brainvlm.eval.clef_files import check_submission
from brainvlm.model import tiny
from brainvlm.studies import clef_jobs

ROCO = Path(__file__).parents[1] / "data" / "roco_fixture"
VOCAB = ["Concepts: Chest; Abdomen; X-Ray Computed Tomography; Pleural Effusion",
         "CT of the chest showing a pleural effusion."]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """One tiny checkpoint for the module; one torch thread, as the command line runs below use."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny.build_tiny_model(tmp_path_factory.mktemp("base") / "tiny", seed=0, vocab_texts=VOCAB)
    torch.set_num_threads(threads)


def image_folder(folder: Path, n: int, unreadable: int | None = None) -> tuple[Path, Path, list[str]]:
    """``n`` PNGs named by challenge ids (1, 2, ..., 10: not in text order) and their ids file; image number
    ``unreadable`` holds bytes that are no image."""
    images = folder / "images"
    images.mkdir(parents=True)
    ids = [f"ImageCLEFmedical_Caption_2025_test_{i}" for i in range(1, n + 1)]
    rng = np.random.default_rng(0)
    for number, image_id in enumerate(ids, start=1):
        if number == unreadable:
            (images / f"{image_id}.png").write_bytes(b"not a PNG: garbage bytes")
        else:
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(images / f"{image_id}.png")
    (folder / "ids.csv").write_text("ID\n" + "\n".join(ids) + "\n", encoding="utf-8")
    return images, folder / "ids.csv", ids


def options(base: Path, **changes) -> clef_jobs.JobOptions:
    settings = {"base_model_path": str(base), "batch_size": 2, "max_new_tokens": 6, "device": "cpu",
                "cui_mapping_file": str(ROCO / "cui_mapping.csv")}
    return clef_jobs.JobOptions(**{**settings, **changes})


def run(kind: str, images: Path, ids: Path, out: Path, job_options: clef_jobs.JobOptions) -> dict:
    samples, root = clef_jobs.job_samples(kind, job_options, image_dir=images, ids=ids)
    return clef_jobs.run_job(kind, samples, root, out, job_options, progress=False)


def rows(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in rows(path)]


@pytest.mark.parametrize("kind", ["concepts", "captions"])
def test_an_unreadable_image_is_recorded_and_falls_back_while_the_rest_are_answered(base, tmp_path, kind):
    images, ids_file, ids = image_folder(tmp_path, 5, unreadable=3)
    summary = run(kind, images, ids_file, tmp_path / "out", options(base))
    out = tmp_path / "out"
    failures = jsonl(out / "failures.jsonl")
    assert [(f["id"], f["reason"]) for f in failures] == [(ids[2], "unreadable image")]
    assert "cannot identify image file" in failures[0]["error"]
    answered = {row["id"] for row in jsonl(out / "predictions.jsonl")}
    assert answered == {f"{i}_{clef_jobs.KINDS[kind]}" for i in ids if i != ids[2]}
    assert (summary["images"], summary["answered"], summary["failed"]["count"]) == (5, 4, 1)
    assert summary["failed"]["reasons"] == {"unreadable image": 1} and summary["fallbacks"]["failed"] == 1
    written = rows(out / f"{kind}.csv")
    assert [row.split(",", 1)[0] for row in written[1:]] == ids  # the ids file's order, never text order
    fallback = f"{ids[2]}," if kind == "concepts" else f"{ids[2]},Medical image."
    assert written[3] == fallback
    assert check_submission(out / f"{kind}.csv", ids_file, kind) == []
    assert summary["submission_check"] == {"file": f"{kind}.csv", "valid": True, "violations": 0,
                                           "examples": []}
    if kind == "concepts":
        names = rows(out / "concepts_natural.csv")
        assert names[0] == "ID,Names" and [row.split(",", 1)[0] for row in names[1:]] == ids


def test_a_generation_error_is_retried_image_by_image_and_costs_only_its_image(base, tmp_path, monkeypatch):
    images, ids_file, ids = image_folder(tmp_path, 4)
    original = generate._generate_seeded

    def failing(model, batch, *args):
        if f"{ids[1]}_caption" in batch["ids"]:
            raise RuntimeError("CUDA out of memory (a stand-in)")
        return original(model, batch, *args)

    monkeypatch.setattr(generate, "_generate_seeded", failing)
    summary = run("captions", images, ids_file, tmp_path / "out", options(base, batch_size=4))
    failures = jsonl(tmp_path / "out" / "failures.jsonl")
    assert [(f["id"], f["reason"], f["error"]) for f in failures] == [
        (ids[1], "generation error", "RuntimeError: CUDA out of memory (a stand-in)")]
    assert summary["answered"] == 3
    assert rows(tmp_path / "out" / "captions.csv")[2] == f"{ids[1]},Medical image."


@pytest.mark.parametrize("kind", ["concepts", "captions"])
def test_a_one_pixel_image_fails_as_too_small_and_falls_back(base, tmp_path, kind):
    images, ids_file, ids = image_folder(tmp_path, 3)
    Image.new("RGB", (1, 1)).save(images / f"{ids[1]}.png")
    summary = run(kind, images, ids_file, tmp_path / "out", options(base))
    failures = jsonl(tmp_path / "out" / "failures.jsonl")
    assert [(f["id"], f["reason"], f["error"]) for f in failures] == [
        (ids[1], "image too small",
         f"ValueError: {ids[1]}.png is 1 x 1 pixels; an image needs at least 8 pixels on each side")]
    assert (summary["answered"], summary["failed"]["reasons"]) == (2, {"image too small": 1})
    fallback = f"{ids[1]}," if kind == "concepts" else f"{ids[1]},Medical image."
    assert rows(tmp_path / "out" / f"{kind}.csv")[2] == fallback


def test_a_job_whose_every_image_failed_is_an_error_and_the_command_exits_1(base, tmp_path, monkeypatch,
                                                                            capsys):
    images, ids_file, _ids = image_folder(tmp_path, 2)

    def failing(*_):
        raise ValueError("The following `model_kwargs` are not used by the model: ['temprature']")

    monkeypatch.setattr(generate, "_generate_seeded", failing)
    out = tmp_path / "out"
    with pytest.raises(clef_jobs.JobError) as info:
        run("concepts", images, ids_file, out, options(base))
    assert str(info.value) == (
        f"no image of 2 was answered (generation error: 2), so {out / 'concepts.csv'} holds only fallback "
        "rows; the first error: ValueError: The following `model_kwargs` are not used by the model: "
        f"['temprature'] ({out / 'failures.jsonl'} lists every image)")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    check = summary["submission_check"]
    assert (summary["answered"], summary["failed"]["count"], check["valid"]) == (0, 2, True)
    assert cli.main(job_command("concepts", images, ids_file, tmp_path / "cli", base)) == 1
    last = capsys.readouterr().err.splitlines()[-1]  # after the loading bar
    assert last.startswith("brainvlm concepts: no image of 2 was answered (generation error: 2)")


def test_names_the_model_writes_are_mapped_to_cuis_and_unmapped_ones_are_counted(base, tmp_path, monkeypatch):
    images, ids_file, ids = image_folder(tmp_path, 3)
    texts = {f"{ids[0]}_concepts": "Concepts: chest; X-ray computed tomography; c0000726; pleural effusions; "
                                   "wibble",
             f"{ids[1]}_concepts": "Concepts: Cardiomegaly; Chest; Cardiomegaly",
             f"{ids[2]}_concepts": "I cannot tell."}
    monkeypatch.setattr(generate, "_generate_seeded", lambda _, batch, *__: [texts[i] for i in batch["ids"]])
    out = tmp_path / "mapped"
    summary = run("concepts", images, ids_file, out, options(base))
    assert rows(out / "concepts.csv") == ["ID,CUIs", f"{ids[0]},C0817096;C0040405;C0000726;C0032227",
                                          f"{ids[1]},C0018800;C0817096", f"{ids[2]},"]
    assert rows(out / "concepts_natural.csv")[1:] == [
        f"{ids[0]},chest;X-ray computed tomography;c0000726;pleural effusions;wibble",
        f"{ids[1]},Cardiomegaly;Chest;Cardiomegaly", f"{ids[2]},"]
    assert summary["mapping_methods"] == {"cui": 1, "exact": 3, "normalised": 3, "unmapped": 1}
    assert summary["unmapped_names"] == {"count": 1, "distinct": 1, "examples": ["wibble"]}
    assert summary["unparseable"] == {"count": 1, "examples": [ids[2]]} and summary["fallbacks"]["count"] == 1
    assert summary["submission_check"]["valid"]
    assert "wibble,1,,unmapped" in (out / "concept_names.csv").read_text(encoding="utf-8")

    summary = run("concepts", images, ids_file, tmp_path / "unmapped", options(base, auto_map_cuis=False))
    assert rows(tmp_path / "unmapped" / "concepts.csv")[1:] == [f"{ids[0]},C0000726", f"{ids[1]},",
                                                                 f"{ids[2]},"]
    assert summary["unmapped_names"]["count"] == 7 and not summary["auto_map_cuis"]


def job_command(kind: str, images: Path, ids: Path, out: Path, base: Path) -> list[str]:
    return [kind, "--image-dir", str(images), "--ids", str(ids), "--out", str(out), "--base-model-path",
            str(base), "--batch-size", "1", "--checkpoint-interval", "1", "--max-new-tokens", "8",
            "--no-auto-map-cuis", "--device", "cpu", "--threads", "1", "--no-progress"]


def test_a_sigkilled_concepts_job_resumes_to_the_uninterrupted_files(base, tmp_path, monkeypatch):
    n = 60  # a few ms to 30 ms an image on one core: the kill lands long before the last line
    images, ids_file, _ = image_folder(tmp_path, n)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "brainvlm", *job_command("concepts", images, ids_file, out, base)]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    predictions, deadline = out / "predictions.jsonl", time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if predictions.is_file() and predictions.read_bytes().count(b"\n") >= 1:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    written = predictions.read_bytes().count(b"\n")  # whole lines; a torn one is cut on resume
    assert 1 <= written < n, f"the kill came after {written} of {n} lines"

    assert cli.main(job_command("concepts", images, ids_file, out, base)) == 0
    sizes, append = [], generate.append_predictions

    def counted(path: Path, batch: list[dict]) -> None:
        sizes.append(len(batch))
        append(path, batch)

    monkeypatch.setattr(generate, "append_predictions", counted)
    whole = job_command("concepts", images, ids_file, tmp_path / "whole", base)
    assert cli.main([*whole, "--checkpoint-interval", "8"]) == 0
    assert sizes == [8] * 7 + [4]  # written once 8 images wait, the rest at the end
    for name in ("predictions.jsonl", "concepts.csv", "concepts_natural.csv"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_answers"] == written and summary["answered"] == n


def test_a_captions_job_cut_by_a_kill_mid_write_resumes_to_the_uninterrupted_files(base, tmp_path):
    images, ids_file, _ = image_folder(tmp_path, 6, unreadable=2)
    assert cli.main(job_command("captions", images, ids_file, tmp_path / "whole", base)) == 0
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)
    lines = (cut / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    (cut / "predictions.jsonl").write_bytes(b"".join(lines[:2]) + lines[2][:17])  # a kill inside a write
    assert cli.main(job_command("captions", images, ids_file, cut, base)) == 0
    for name in ("predictions.jsonl", "captions.csv", "failures.jsonl"):
        assert (cut / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_a_resume_from_another_base_or_adapter_is_refused_naming_the_file(base, tmp_path, capsys):
    images, ids_file, _ = image_folder(tmp_path, 2)
    out = tmp_path / "out"
    run("captions", images, ids_file, out, options(base))
    before = (out / "predictions.jsonl").read_bytes()
    other = tmp_path / "other_base"
    shutil.copytree(base, other)
    weights = bytearray((other / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # other weights, same names and sizes
    (other / "model.safetensors").write_bytes(bytes(weights))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    stale = re.escape(f"{out / 'predictions.jsonl'} was generated from another ")
    for changed, what in ((options(other), "base_model"),
                          (options(base, adapter_repo=str(adapter)), "adapter")):
        with pytest.raises(ValueError, match=f"{stale}{what}"):
            run("captions", images, ids_file, out, changed)
    capsys.readouterr()
    assert cli.main(job_command("captions", images, ids_file, out, other)) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"brainvlm captions: {out / 'predictions.jsonl'} was generated from another "
                            "base_model")
    assert (out / "predictions.jsonl").read_bytes() == before


def test_options_come_from_the_params_file_with_flags_over_it(tmp_path, capsys):
    params = tmp_path / "job.yaml"
    params.write_text("base_model_path: some/model\nbatch_size: 2\nload_in_4bit: true\n"
                      "generation_kwargs: {do_sample: false, num_beams: 2}\n", encoding="utf-8")
    args = jobs.job_parser("concepts").parse_args(["--out", "o", "--params", str(params), "--batch-size", "3",
                                                  "--no-load-in-4bit", "--roco-root", str(ROCO)])
    got = jobs.job_options(args, "concepts")
    assert (got.base_model_path, got.batch_size, got.load_in_4bit) == ("some/model", 3, False)
    assert got.generation_kwargs == {"do_sample": False, "num_beams": 2}
    assert got.cui_mapping_file == str(ROCO / "cui_mapping.csv")  # a ROCOv2 folder's own table by default
    args = jobs.job_parser("captions").parse_args(["--out", "o", "--base-model-path", "m",
                                                  "--generation-kwargs", '{"do_sample": true, "top_p": 0.9}'])
    assert jobs.job_options(args, "captions").generation_kwargs == {"do_sample": True, "top_p": 0.9}

    params.write_text("base_model_path: m\nbatch_sise: 2\n", encoding="utf-8")
    for argv, message in ((["--params", str(params)], f"{params}: unknown options ['batch_sise']"),
                          (["--base-model-path", "m", "--generation-kwargs", "{do_sample: 1}"],
                           "is not JSON"),
                          (["--base-model-path", "m", "--generation-kwargs", '{"max_new_tokens": 9}'],
                           "generation_kwargs ['max_new_tokens']: the job sets these itself"),
                          (["--base-model-path", "m", "--generation-kwargs", '{"temprature": 0.7}'],
                           ("generation_kwargs ['temprature']: not a setting of transformers' "
                            "GenerationConfig (did you mean temperature?); generate() would refuse it for "
                            "every image: use keys such as do_sample, temperature, top_p, top_k, num_beams, "
                            "repetition_penalty, or seed")),
                          (["--base-model-path", "m", "--batch-size", "0"], "batch_size=0"),
                          (["--batch-size", "2"], "no base model: give --base-model-path"),
                          (["--base-model-path", "m", "--merge-adapters"], "merge_adapters is on")):
        command = ["captions", "--out", str(tmp_path / "o"), "--image-dir", "d", "--ids", "i", *argv]
        assert cli.main(command) == 1
        error = capsys.readouterr().err
        assert error.startswith("brainvlm captions: ") and message in error, error


def test_samples_come_from_a_samples_file_a_roco_folder_or_an_image_folder(tmp_path):
    job_options = clef_jobs.JobOptions(base_model_path="m", prompt_language="es")
    samples, root = clef_jobs.job_samples("concepts", job_options, roco_root=ROCO, split="test")
    assert root == ROCO / "test"  # a split without gold: its images, in the order of test_ids.csv
    expected = [f"ImageCLEFmedical_Caption_2025_test_{i}" for i in (1, 2, 10)]
    assert [clef_jobs.image_id(s) for s in samples] == expected
    assert samples[0]["conversations"][0]["content"][1]["text"].startswith("¿Qué conceptos médicos")
    samples, root = clef_jobs.job_samples("captions", job_options, roco_root=ROCO, split="valid")
    assert root == ROCO and [s["task"] for s in samples] == ["caption", "caption"]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in roco_samples(ROCO, "train")), encoding="utf-8")
    samples, root = clef_jobs.job_samples("captions", job_options, samples=path, image_root=ROCO)
    assert root == ROCO and len(samples) == 4 and {s["task"] for s in samples} == {"caption"}
    with pytest.raises(clef_jobs.JobError, match="give exactly one of"):
        clef_jobs.job_samples("captions", job_options, samples=path, roco_root=ROCO)
    with pytest.raises(clef_jobs.JobError, match="no 'caption' samples among 3"):
        clef_jobs.run_job("captions", clef_jobs.job_samples("concepts", job_options, roco_root=ROCO)[0], ROCO,
                          tmp_path / "o", job_options)
