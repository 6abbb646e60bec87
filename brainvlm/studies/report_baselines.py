"""Image-free and image-only baselines of the report study (notebook 05).

- ``constant_report``: the prior. One training report given for every test study, chosen as the metric
  scores it: among the label blocks the training reports carry, the one with the highest CheXpert-14
  micro-F1 (u0) against every training report. The *most frequent* block (often "No Finding") is not the
  best answer that ignores the study: micro-F1 rewards naming a common finding (a pleural effusion in half
  the studies) over an all-negative block, so any image-free answer that names one "beats" a most-frequent
  constant without knowing anything about the study. Against the best constant, "no image, no better than
  the prior" means what it says.
- ``shuffled_gold_gap``: does an answer depend on its study? The same answers scored against the test
  references shuffled across the test studies; answers that carry nothing about their study score the same either
  way (the gap is about 0), answers that do score lower against shuffled references.
- ``retrieval_reports``: the nearest training image's report (frozen base-model image features).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainvlm.eval import answers
from brainvlm.model import features
from brainvlm.studies import controls
from brainvlm.studies.report import of_mode


def target_of(sample: dict) -> str:
    """The reference answer of a sample (its last turn's text)."""
    return sample["conversations"][-1]["content"][0]["text"]


def _positives(text: str | None) -> frozenset[str]:
    """The CheXpert observations an answer states positive (u0); an unparseable answer states none."""
    return answers.chexpert_positive(answers.parse_chexpert(text) or {}, "zeros")


def micro_f1(truths: Sequence[frozenset], guesses: Sequence[frozenset]) -> float:
    """CheXpert micro-F1 of positive sets paired with the references' positive sets (as
    ``eval.reportmetrics`` scores it: true and false positives and negatives summed over samples and labels)."""
    tp = sum(len(t & g) for t, g in zip(truths, guesses))
    fp = sum(len(g - t) for t, g in zip(truths, guesses))
    fn = sum(len(t - g) for t, g in zip(truths, guesses))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def constant_report(train: Sequence[dict]) -> str:
    """The training report (stage B, image + EHR) whose label block scores best against every training report.

    Ties go to the more frequent block, then to the earlier one; among the reports with the chosen block,
    the most frequent one is returned whole (Impression, label block and ICD line), the first on a tie.
    """
    targets = [target_of(s) for s in of_mode(list(train), "image_ehr")]
    if not targets:
        raise ValueError("no stage-B (image_ehr) training records to take the constant report from")
    truths = [_positives(t) for t in targets]
    frequency = Counter(truths)
    best = max(frequency, key=lambda guess: (micro_f1(truths, [guess] * len(truths)), frequency[guess]))
    return Counter(t for t, truth in zip(targets, truths) if truth == best).most_common(1)[0][0]


def shuffled_gold_gap(samples: Sequence[dict], predictions: Sequence[str | None], seed: int,
                      n_shuffles: int = 200) -> dict[str, float]:
    """CheXpert-14 micro-F1 (u0) of ``predictions`` against their own references minus its mean against the
    references shuffled across the test studies (``n_shuffles`` permutations).

    Returns ``point`` (the gap), ``own`` and ``shuffled`` (the two scores) and ``share_shuffled_at_least``:
    the share of shuffles that scored at least as well as the real pairing.
    """
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions; pass one per sample")
    truths = [_positives(target_of(s)) for s in samples]
    guesses = [_positives(p) for p in predictions]
    own, rng = micro_f1(truths, guesses), np.random.default_rng(seed)
    scores = [micro_f1([truths[i] for i in rng.permutation(len(truths))], guesses) for _ in range(n_shuffles)]
    shuffled = float(np.mean(scores))
    return {"point": own - shuffled, "own": own, "shuffled": shuffled,
            "share_shuffled_at_least": float(np.mean([s >= own for s in scores]))}


def retrieval_reports(model: Any, processor: Any, train: list[dict], test: list[dict], image_root: str,
                      progress: bool = True) -> list[str]:
    """For each test sample, the stage-B training report whose image is nearest by cosine of the frozen
    base model's pooled image features."""
    reference = of_mode(train, "image_ehr")
    path = lambda s: Path(image_root) / controls.image_parts(s)[-1]["image_path"]
    train_x = features.image_features(model, processor, [path(s) for s in reference], progress=progress)
    test_x = features.image_features(model, processor, [path(s) for s in test], progress=progress)
    return [target_of(reference[i]) for i in features.nearest(test_x, train_x)]
