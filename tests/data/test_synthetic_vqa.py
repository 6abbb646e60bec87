"""The synthetic continual Med-VQA default: deterministic, sized as promised, conflicting across domains."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from brainvlm.data.adapters.llava_med import read_llava_med
from brainvlm.data.schema import validate_sample
from brainvlm.data.synthetic_vqa import CUES, DOMAINS, STYLES, cue_shape, make_synthetic_vqa
from brainvlm.data.vqa_tasks import fuse_files, read_domain_tasks


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("synthetic_vqa")
    start = time.perf_counter()
    make_synthetic_vqa(out)
    return out, time.perf_counter() - start


@pytest.fixture(scope="module")
def samples(synthetic) -> dict[str, list[dict]]:
    out, _ = synthetic
    return {split: read_llava_med(out / f"{split}.jsonl", image_root=out, dataset="synthetic_vqa")
            for split in ("train", "test")}


def _files(folder: Path) -> dict[str, bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def test_the_same_seed_gives_the_same_bytes_fast(synthetic, tmp_path):
    out, seconds = synthetic
    assert seconds < 2.0
    assert _files(make_synthetic_vqa(tmp_path / "again")) == _files(out)
    assert _files(make_synthetic_vqa(tmp_path / "other", seed=1)) != _files(out)


def test_counts_per_domain_and_valid_samples(samples):
    for split, per_domain in (("train", 192), ("test", 72)):
        assert Counter(s["metadata"]["domain"] for s in samples[split]) == {d: per_domain for d in DOMAINS}
        assert all(validate_sample(s) == [] for s in samples[split])
    test = samples["test"]
    for domain in DOMAINS:
        kinds = Counter(s["metadata"]["answer_type"] for s in test if s["metadata"]["domain"] == domain)
        assert kinds == {"CLOSED": 48, "OPEN": 24}
        answers = Counter(_answer(s) for s in test if s["metadata"]["domain"] == domain)
        assert answers["yes"] == answers["no"] == 24  # balanced closed answers


def _question(sample: dict) -> str:
    return next(p["text"] for p in sample["conversations"][0]["content"] if p["type"] == "text")


def _answer(sample: dict) -> str:
    return sample["conversations"][1]["content"][0]["text"]


def test_question_wording_does_not_give_the_domain_away(samples):
    for split in ("train", "test"):
        wording = {d: Counter(_question(s) for s in samples[split] if s["metadata"]["domain"] == d)
                   for d in DOMAINS}
        assert wording["abdomen"] == wording["chest"] == wording["head"]
    finding = {d: {_answer(s) for s in samples["train"] if s["metadata"]["domain"] == d
                   and s["metadata"]["question_type"] == "finding"} for d in DOMAINS}
    assert finding == {"abdomen": {"mass", "none"}, "chest": {"none", "pneumothorax"},
                       "head": {"hematoma", "none"}}


def test_cues_sit_where_every_style_is_black():
    for domain in DOMAINS:
        for shift in (-0.02, 0.02):
            style = STYLES[domain](32, shift, shift, np.random.default_rng(0))
            for cue in CUES:
                assert style[cue_shape(cue, 32) > 0].max() == 0.0, (domain, cue)


def _pixels(out: Path, samples: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    closed = [s for s in samples if s["metadata"]["question_type"] == "abnormality"]
    x = np.stack([np.asarray(Image.open(out / s["metadata"]["image"]), dtype=float).ravel() / 255
                  for s in closed])
    domain = np.array([s["metadata"]["domain"] for s in closed])
    return x, np.array([_answer(s) == "yes" for s in closed]), domain


def test_pixels_answer_within_a_domain_but_not_across_domains(synthetic, samples):
    out, _ = synthetic
    x, y, domain = _pixels(out, samples["train"])
    x_test, y_test, domain_test = _pixels(out, samples["test"])
    per_domain = []
    for name in DOMAINS:
        model = LogisticRegression(C=0.1, max_iter=2000).fit(x[domain == name], y[domain == name])
        per_domain.append(model.score(x_test[domain_test == name], y_test[domain_test == name]))
    pooled = LogisticRegression(C=0.1, max_iter=2000).fit(x, y).score(x_test, y_test)
    assert min(per_domain) >= 0.95  # each domain's cue is learned from its pixels
    assert pooled <= 0.8  # one classifier for all domains: at best the majority of the three cues (3/4)
    cues = np.array([[s["metadata"][f"cue_{c}"] for c in CUES] for s in samples["test"]
                     if s["metadata"]["question_type"] == "abnormality"])
    assert abs(np.corrcoef(cues.T) - np.eye(3)).max() < 0.2  # cues planted independently of one another


def test_fusion_builds_one_task_per_domain(synthetic, tmp_path):
    out, _ = synthetic
    fuse_files(out / "train.jsonl", out / "test.jsonl", tmp_path, val_fraction=0.25, seed=0,
               image_root=out, dataset="synthetic_vqa")
    tasks = read_domain_tasks(tmp_path, DOMAINS)
    for domain in DOMAINS:
        assert [len(tasks[domain][s]) for s in ("train", "val", "test")] == [144, 48, 72]  # 48 + 16 images
        assert tasks[domain]["test"][0]["id"].startswith("synthetic_vqa_test_")
