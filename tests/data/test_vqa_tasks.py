"""Per-domain Med-VQA task files: validation carved by image, the image audit, fusion into task files."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.vqa_rad import vqa_rad_to_samples
from brainvlm.data.validate import validate_file
from brainvlm.data.vqa_tasks import (
    domain_tasks,
    fuse_files,
    image_audit,
    read_domain_tasks,
    read_vqa_file,
    split_by_image,
    task_counts,
    write_domain_tasks,
)


@pytest.fixture(scope="module")
def vqa_rad(test_data) -> list[dict]:
    """VQA-RAD's 451 test questions read as a training file (203 images)."""
    return vqa_rad_to_samples(test_data / "vqa_rad" / "testset.json", split="train")


def _images(samples: list[dict]) -> set[str]:
    return {s["metadata"]["image"] for s in samples}


def test_validation_is_carved_by_image_per_domain(vqa_rad):
    before = copy.deepcopy(vqa_rad)
    train, val = split_by_image(vqa_rad, 0.2, seed=3)
    assert vqa_rad == before  # the input is not changed
    assert not _images(train) & _images(val)
    assert sorted(s["id"] for s in train + val) == sorted(s["id"] for s in vqa_rad)
    assert {s["metadata"]["split"] for s in val} == {"val"}
    assert {s["metadata"]["split"] for s in train} == {"train"}
    for domain in Counter(s["metadata"]["domain"] for s in vqa_rad):
        images = {s["metadata"]["image"] for s in vqa_rad if s["metadata"]["domain"] == domain}
        carved = {s["metadata"]["image"] for s in val if s["metadata"]["domain"] == domain}
        assert len(carved) == round(0.2 * len(images))
    assert [s["id"] for s in val] == [s["id"] for s in vqa_rad if s["metadata"]["image"] in _images(val)]
    assert split_by_image(vqa_rad, 0.2, seed=3) == (train, val)
    assert _images(split_by_image(vqa_rad, 0.2, seed=4)[1]) != _images(val)
    assert split_by_image(vqa_rad, 0.0)[1] == []


def _sample(number: int, image: int, domain: str) -> dict:
    return {"id": f"q{number}", "task": "vqa", "conversations": [],
            "metadata": {"split": "train", "image": f"{domain}{image}.png", "domain": domain}}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.sampled_from(["abdomen", "chest", "head"])), min_size=1,
                max_size=60),
       st.floats(0.0, 0.95), st.integers(0, 2**16))
def test_no_image_is_ever_in_both_splits(pairs, fraction, seed):
    samples = [_sample(n, image, domain) for n, (image, domain) in enumerate(pairs)]
    train, val = split_by_image(samples, fraction, seed)
    assert image_audit({"train": train, "val": val})["passed"].all()
    assert sorted(s["id"] for s in train + val) == sorted(s["id"] for s in samples)
    for domain in {d for _, d in pairs}:
        n_images = len({i for i, d in pairs if d == domain})
        assert len({s["metadata"]["image"] for s in val if s["metadata"]["domain"] == domain}) == (
            0 if fraction == 0 else min(max(round(fraction * n_images), 1), max(n_images - 1, 1)))
        carved = {s["metadata"]["image"] for s in val if s["metadata"]["domain"] == domain}
        if fraction > 0 and n_images > 1:
            assert 1 <= len(carved) < n_images  # some validation, never the whole domain


def test_the_audit_reports_vqa_rads_test_images_inside_its_training_file(vqa_rad, test_data):
    test = vqa_rad_to_samples(test_data / "vqa_rad" / "testset.json")
    train, val = split_by_image(vqa_rad, 0.2, seed=0)
    audit = image_audit({"train": train, "val": val, "test": test})
    assert list(audit["check"]) == ["no image in both train and val", "no image in both train and test",
                                    "no image in both val and test"]
    assert list(audit["passed"]) == [True, False, False]
    n_train = len(_images(train))
    assert audit["detail"][1].startswith(f"{n_train} shared images: synpic")
    assert audit["detail"][1].endswith(f" ... ({n_train} in all)")


def test_fusion_writes_valid_task_files_per_domain(vqa_rad, tmp_path):
    train, val = split_by_image(vqa_rad, 0.25, seed=0)
    tasks = domain_tasks({"train": train, "val": val})
    assert list(tasks) == ["abdomen", "chest", "head"]
    assert sum(len(tasks[d]["train"]) + len(tasks[d]["val"]) for d in tasks) == len(vqa_rad)
    paths = write_domain_tasks(tasks, tmp_path / "cl_vqa")
    assert paths["chest"]["val"] == tmp_path / "cl_vqa" / "chest" / "val.jsonl"
    for by_split in paths.values():
        for path in by_split.values():
            assert validate_file(path) == [], path
    read = read_domain_tasks(tmp_path / "cl_vqa", ["head", "chest"])
    assert read == {d: tasks[d] for d in ("head", "chest")}
    counts = task_counts(tasks).set_index(["domain", "split"])
    assert counts["questions"].sum() == 451 and counts.loc[("head", "val"), "images"] == round(0.25 * 60)
    assert (counts["closed"] + counts["open"] == counts["questions"]).all()


def test_fuse_files_from_a_vqa_rad_pair(test_data, tmp_path):
    path = test_data / "vqa_rad" / "testset.json"
    paths = fuse_files(path, path, tmp_path / "tasks", val_fraction=0.2, seed=1)
    assert sorted(paths) == ["abdomen", "chest", "head"] and sorted(paths["head"]) == ["test", "train", "val"]
    again = fuse_files(path, path, tmp_path / "again", val_fraction=0.2, seed=1)
    assert paths["abdomen"]["val"].read_bytes() == again["abdomen"]["val"].read_bytes()
    head = read_domain_tasks(tmp_path / "tasks", ["head"])["head"]
    assert len(head["train"]) + len(head["val"]) == len(head["test"]) == 119
    assert len(_images(head["val"])) == round(0.2 * 60) and not _images(head["train"]) & _images(head["val"])
    with pytest.raises(AdapterError, match=r"head/test.jsonl:1: a record with conversations \(a canonical or "
                                           r"LLaVA-classic sample\), not a LLaVA-Med VQA record; read"):
        read_vqa_file(paths["head"]["test"])


def test_bad_inputs_say_what_to_do(vqa_rad, tmp_path):
    no_image = copy.deepcopy(vqa_rad[:2])
    del no_image[1]["metadata"]["image"]
    with pytest.raises(ValueError, match=r"sample 'vqa_rad_train_000013': \$\.metadata\.image is None; "
                                         r"the VQA adapters write it \(read the file with read_vqa_file\)"):
        split_by_image(no_image, 0.5)
    mixed = copy.deepcopy(vqa_rad[:2])
    mixed[0]["metadata"]["domain"] = "head"
    mixed[1]["metadata"].update(image=mixed[0]["metadata"]["image"], domain="chest")
    with pytest.raises(ValueError, match=r"image 'synpic42202.jpg' has questions in domains "
                                         r"\['chest', 'head'\] \(1 such images\); an image belongs to one "
                                         r"domain: fix metadata.domain"):
        split_by_image(mixed, 0.5)
    with pytest.raises(ValueError, match=r"fraction=1.0; give the validation share of the images"):
        split_by_image(vqa_rad, 1.0)
    with pytest.raises(ValueError, match=r"splits \['dev'\]: name the splits \['train', 'val', 'test'\]"):
        domain_tasks({"dev": vqa_rad})
    with pytest.raises(ValueError, match=r"samples of domain\(s\) \['head'\] are not in domains=\['abdomen', "
                                         r"'chest'\]; add them or drop the samples"):
        domain_tasks({"train": vqa_rad}, domains=["abdomen", "chest"])
    with pytest.raises(ValueError, match=r"unknown question file; expected .json \(VQA-RAD layout\) or "
                                         r".jsonl"):
        read_vqa_file(tmp_path / "questions.csv")
    with pytest.raises(FileNotFoundError, match=r"no task files for domain 'head'; write them first"):
        read_domain_tasks(tmp_path, ["head"])
