"""``brainvlm convert``: every adapter's format to validated sample JSONL; image paths refused where read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from brainvlm.app.cli import main
from brainvlm.core.jsonio import read_jsonl

LLAVA_MED = {"question_id": 7, "image": "a.jpg", "text": "is the liver enlarged?\n<image>", "gpt4_answer": "no",
             "domain": "abd"}
LLAVA = {"id": "q1", "image": "a.jpg",
         "conversations": [{"from": "human", "value": "<image>\nWhat organ is shown?"},
                           {"from": "gpt", "value": "The liver."}]}
CURRICULUM = {"image": "files/p10/p10000032/s50414267/a.jpg", "stage": "A", "mode": "image_only",
              "prompt": "Image:<image>\nAnswer Impression & CheXpert.",
              "target": 'Impression: No acute process.\nCheXpert: {"No Finding": 1}'}


def _lines(path: Path, *records: dict) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _images(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"jpg")
    return root


def _convert(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["convert", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_vqa_rad_converts_and_validates(test_data, tmp_path, capsys):
    source = test_data / "vqa_rad" / "testset.json"
    status, out, err = _convert(capsys, "vqa-rad", str(source), "--out", str(tmp_path / "test.jsonl"))
    assert (status, err) == (0, "")
    assert out == (f"{source} -> {tmp_path / 'test.jsonl'}: 451 samples, valid (image files not checked: "
                   "no --image-root)\n")
    assert len(read_jsonl(tmp_path / "test.jsonl")) == 451


def test_llava_med_llava_and_curriculum_convert_with_their_images(tmp_path, capsys):
    root = _images(tmp_path / "images", "a.jpg", "files/p10/p10000032/s50414267/a.jpg")
    for fmt, record in (("llava-med", LLAVA_MED), ("llava", LLAVA), ("curriculum", CURRICULUM)):
        source = _lines(tmp_path / f"{fmt}_train.jsonl", record)
        out = tmp_path / fmt / "train.jsonl"
        status, printed, err = _convert(capsys, fmt, source, "--out", str(out), "--image-root", str(root))
        assert (status, err, printed) == (0, "", f"{source} -> {out}: 1 samples, valid\n")
        assert read_jsonl(out)[0]["metadata"]["split"] == "train"


def test_roco_converts_its_folder(test_data, tmp_path, capsys):
    root = test_data / "roco_fixture"
    status, out, err = _convert(capsys, "roco", str(root), "--split", "valid", "--task", "concepts",
                                "--out", str(tmp_path / "val.jsonl"))
    assert (status, err) == (0, "")
    assert out.startswith(f"{root} -> {tmp_path / 'val.jsonl'}: ") and out.endswith(" samples, valid\n")


@pytest.mark.parametrize("image", ["../outside.jpg", "/etc/passwd"])
def test_a_path_out_of_the_root_is_refused_naming_file_line_and_path(tmp_path, capsys, image):
    root = _images(tmp_path / "images", "a.jpg")
    source = _lines(tmp_path / "questions_test.jsonl", LLAVA_MED, {**LLAVA_MED, "question_id": 8, "image": image})
    status, out, err = _convert(capsys, "llava-med", source, "--out", str(tmp_path / "test.jsonl"))
    assert (status, out) == (1, "")
    assert err == (f"brainvlm convert: {source}:2 (question_id 8): image {image!r} lies outside the image root; "
                   "give a path relative to the root\n")
    assert not (tmp_path / "test.jsonl").exists()
    status, _, err = _convert(capsys, "llava-med", source, "--out", str(tmp_path / "test.jsonl"),
                              "--image-root", str(root))
    assert status == 1 and f"image {image!r} lies outside the image root {root};" in err


def test_a_symlink_out_of_the_root_is_refused_in_every_format(test_data, tmp_path, capsys):
    outside = _images(tmp_path / "elsewhere", "x.jpg") / "x.jpg"
    root = tmp_path / "images"
    (root / "files/p10/p10000032/s50414267").mkdir(parents=True)
    (root / "a.jpg").symlink_to(outside)
    (root / "files/p10/p10000032/s50414267/a.jpg").symlink_to(outside)
    for fmt, record, where in (("llava-med", LLAVA_MED, ":1 (question_id 7)"), ("llava", LLAVA, ":1 (id 'q1')"),
                               ("curriculum", CURRICULUM, ":1")):
        source = _lines(tmp_path / f"{fmt}_train.jsonl", record)
        status, _, err = _convert(capsys, fmt, source, "--out", str(tmp_path / "out.jsonl"), "--image-root", str(root))
        image = record["image"]
        assert (status, err) == (1, (f"brainvlm convert: {source}{where}: image {image!r} is a symlink that "
                                    f"resolves to {outside}, outside the image root {root}; copy the image "
                                    "under the root\n"))
    roco = Path(shutil.copytree(test_data / "roco_fixture", tmp_path / "roco"))
    (roco / "train" / "ROCOv2_2023_train_000002.jpg").unlink()
    (roco / "train" / "ROCOv2_2023_train_000002.jpg").symlink_to(outside)
    status, _, err = _convert(capsys, "roco", str(roco), "--task", "caption", "--out", str(tmp_path / "r.jsonl"))
    assert status == 1 and err.startswith(f"brainvlm convert: {roco / 'train_captions.csv'}:3: image "
                                          "'train/ROCOv2_2023_train_000002.jpg' is a symlink that resolves to")


def test_vqa_rad_refuses_a_climbing_image_name_naming_the_item(test_data, tmp_path, capsys):
    records = json.loads((test_data / "vqa_rad" / "testset.json").read_text(encoding="utf-8"))[:3]
    records[2]["image_name"] = "../../synpic1.jpg"
    source = tmp_path / "testset.json"
    source.write_text(json.dumps(records), encoding="utf-8")
    status, _, err = _convert(capsys, "vqa-rad", str(source), "--out", str(tmp_path / "test.jsonl"))
    assert (status, err) == (1, (f"brainvlm convert: {source}: item [2] (qid {records[2]['qid']}): image "
                                "'../../synpic1.jpg' lies outside the image root; give a path relative to "
                                "the root\n"))


def test_what_the_validator_finds_names_the_input_record(tmp_path, capsys):
    records = [LLAVA, {**LLAVA, "id": "q2", "conversations": [
        {"from": "human", "value": "<image>\nCompare with <image_sMRI>"}, {"from": "gpt", "value": "Same."}]}]
    source = tmp_path / "llava_test.json"
    source.write_text(json.dumps(records, indent=1), encoding="utf-8")
    out = tmp_path / "test.jsonl"
    status, printed, err = _convert(capsys, "llava", str(source), "--out", str(out))
    assert (status, err) == (1, "")
    lines = printed.splitlines()
    assert lines[0].startswith(f"{source} item [1] [q2] $.conversations[0].content[1].text: ")
    assert lines[0].endswith(f"(written as {out}:2)")
    assert lines[-1] == f"1 files, 2 samples, 1 errors; {out} does not validate"


def test_bad_invocations_are_one_line(tmp_path, capsys):
    source = _lines(tmp_path / "questions.jsonl", LLAVA_MED)
    status, _, err = _convert(capsys, "llava-med", source, "--out", str(tmp_path / "o.jsonl"))
    assert (status, err) == (1, (f"brainvlm convert: {source}: the file name names no split (train, val or test); "
                                "give --split\n"))
    status, _, err = _convert(capsys, "llava-med", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.jsonl"))
    assert (status, err) == (1, f"brainvlm convert: {tmp_path / 'none.jsonl'}: no such file or folder\n")
    status, _, err = _convert(capsys, "llava-med", source, "--out", source, "--split", "test")
    assert (status, err) == (2, f"brainvlm convert: --out {source} is the input file; write the samples elsewhere\n")
