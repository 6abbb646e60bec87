"""The synthetic concepts default: the cited concept table, byte-identical files per seed, the ROCOv2 adapter
reads them, and a logistic regression on frozen random features learns every concept."""

from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from brainvlm.data import synthetic_concepts as synthetic
from brainvlm.data.adapters.roco import roco_samples
from brainvlm.data.clef_tasks import MANUAL_CUIS
from brainvlm.data.schema import validate_sample
from brainvlm.eval.answers import parse_concepts


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("synthetic_concepts")
    start = time.perf_counter()
    synthetic.make_synthetic_concepts(out)
    return out, time.perf_counter() - start


def test_the_concepts_are_the_cited_table(test_data):
    with (test_data / "synthetic_concepts" / "concepts.csv").open(encoding="utf-8", newline="") as handle:
        cited = [(row["CUI"], row["name"], row["kind"]) for row in csv.DictReader(handle)]
    assert [(c.cui, c.name, c.kind) for c in synthetic.CONCEPTS] == cited
    for concept in synthetic.MODALITIES + synthetic.REGIONS:
        assert MANUAL_CUIS[concept.cui] == concept.name                      # on the allow-list, same name
    assert not set(synthetic.FINDING_CUIS) & set(MANUAL_CUIS)
    seed_example = {"C0032285", "C0039985", "C0034067"}                      # the seed's illustrative row
    assert not seed_example & {c.cui for c in synthetic.CONCEPTS}


def test_the_same_seed_gives_identical_files_fast(made, tmp_path):
    out, seconds = made
    assert seconds < 2.0, f"300 images took {seconds:.2f} s"
    again = synthetic.make_synthetic_concepts(tmp_path / "again")
    assert _digests(again) == _digests(out) and len(_digests(out)) == 300 + 3 * 3 + 1
    other = synthetic.make_synthetic_concepts(tmp_path / "other", n_train=5, n_valid=1, n_test=1, seed=1)
    first = "train/synthetic_concepts_train_1.png"
    assert (other / first).read_bytes() != (out / first).read_bytes()        # another seed, another image


def test_the_adapter_reads_every_split(made):
    out, _ = made
    for split, n_images in (("train", 180), ("valid", 60), ("test", 60)):
        samples = roco_samples(out, split)
        assert len(samples) == 2 * n_images
        assert all(validate_sample(s, image_root=out) == [] for s in samples)
    ids = [s["metadata"]["image_id"] for s in roco_samples(out, "test", tasks=["caption"])]
    assert ids[:3] == ["synthetic_concepts_test_1", "synthetic_concepts_test_2", "synthetic_concepts_test_3"]
    assert ids[9] == "synthetic_concepts_test_10"                             # not zero-padded, file order


def _targets(out: Path, split: str) -> tuple[list[dict], list[frozenset]]:
    samples = roco_samples(out, split, tasks=["concepts"])
    return samples, [parse_concepts(s["conversations"][-1]["content"][0]["text"]) for s in samples]


def test_every_image_has_one_modality_one_region_and_findings_at_their_rate(made):
    out, _ = made
    samples, targets = _targets(out, "train")
    kinds = {c.cui: c.kind for c in synthetic.CONCEPTS}
    for concepts in targets:
        assert sorted(kinds[c] for c in concepts if kinds[c] != "finding") == ["modality", "region"]
    for cui in synthetic.FINDING_CUIS:  # 180 draws at FINDING_RATE: within about three standard errors
        assert abs(np.mean([cui in t for t in targets]) - synthetic.FINDING_RATE) <= 0.11
    for group, weights in ((synthetic.MODALITIES, synthetic.MODALITY_WEIGHTS),
                           (synthetic.REGIONS, synthetic.REGION_WEIGHTS)):
        for concept, weight in zip(group, weights):
            assert abs(np.mean([concept.cui in t for t in targets]) - weight) <= 0.11, concept.name
    manual = [s["metadata"]["manual_cuis"] for s in samples]
    assert all(set(m) <= set(MANUAL_CUIS) and len(m) in (0, 2) for m in manual)
    assert 0.05 < np.mean([m == [] for m in manual]) < 0.3                   # some images have none


def test_the_caption_states_modality_region_and_findings():
    assert synthetic.caption("C0040405", "C0817096", []) == "CT scan of the chest with no abnormality."
    assert synthetic.caption("C0041618", "C0037303", ["C0027651", "C0006663", "C0002940"]) == \
        "Ultrasound image of the skull showing a tumor, calcifications and an aneurysm."


def _features(out: Path, samples: list[dict], weights: np.ndarray) -> np.ndarray:
    pixels = [np.asarray(Image.open(out / s["conversations"][0]["content"][0]["image_path"]), dtype=float)
              for s in samples]
    return np.maximum(np.stack(pixels).reshape(len(samples), -1) / 255.0 @ weights, 0.0)


def test_a_logistic_regression_on_frozen_random_features_learns_every_concept(tmp_path):
    out = synthetic.make_synthetic_concepts(tmp_path, n_train=600, n_valid=1, n_test=200)  # rare modalities too
    weights = np.random.default_rng(0).standard_normal((32 * 32, 512)) / 32.0   # a frozen random layer
    (train, train_y), (test, test_y) = _targets(out, "train"), _targets(out, "test")
    x_train, x_test = _features(out, train, weights), _features(out, test, weights)
    for concept in synthetic.CONCEPTS:
        y_train, y_test = [concept.cui in t for t in train_y], [concept.cui in t for t in test_y]
        model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
        assert f1_score(y_test, model.predict(x_test)) >= 0.85, concept.name
