"""The synthetic default of the continual Med-VQA study: three domains that answer from conflicting cues.

Design (so that each domain is learned from its images, a model trained on a later domain answers an
earlier domain's questions wrongly, and only the image tells the domains apart):

- **Domains** (the names the VQA-RAD adapter writes), each with its own image style in the middle of the
  image (greyscale PNG, ``size`` pixels, 32 by default; the anatomy shifts by at most 2%, noise is added):

  | domain | style |
  | --- | --- |
  | abdomen | CT-like: a round flat-grey body, a bright vertebra at the back |
  | chest | radiograph-like: a wide body, two dark textured lungs with ribs, a bright mediastinum |
  | head | MRI-like: a bright skull ring, textured brain, two dark ventricles |

- **Cues**, planted in every domain's images alike, each large and in its own corner, which every style
  leaves black, so a cue's pixels are the same in every domain (a linear classifier cannot weigh a cue
  by the style around it). An image has each cue or not; the 8 combinations are dealt equally often per
  domain and split (for sizes that are multiples of 8):

  | cue | drawn as | the abnormality of |
  | --- | --- | --- |
  | blob | a bright disk, upper left | abdomen ("mass") |
  | wedge | a dark wedge cut into a bright square, upper right | chest ("pneumothorax") |
  | crescent | a bright crescent on the left edge, lower left (a left-right asymmetry) | head ("hematoma") |

- **Questions**: the same three templates for every image of every domain (:data:`QUESTIONS`), so the
  wording says nothing about the domain. "Is there an abnormality?" is yes when the domain's own cue is
  present, "Is this image normal?" is its negation (both CLOSED), "What is the abnormality?" names the
  domain's finding or answers "none" (OPEN). The same question is answered from a different cue in each
  domain, and the other domains' cues appear in an image as distractors, so a model that learns chest
  after abdomen answers abdomen's questions from the wedge: right about half the time on closed questions.
  Without the domain, the best any classifier can do on a closed question is 3/4 (the majority of the
  three cues); with the domain (from the style), every answer is determined.
- **Files** in the LLaVA-Med VQA layout, read by ``data.adapters.llava_med`` as real data is:
  ``train.jsonl`` and ``test.jsonl`` (``question_id``, ``image``, ``text`` ending in ``<image>``,
  ``gpt4_answer``, ``domain`` as the seed's object of booleans, ``question_type`` and the planted cues
  ``cue_blob``, ``cue_wedge``, ``cue_crescent``) and ``images/<split>_<n>.png`` (names do not say the
  domain). 64 training and 24 test images per domain give 192 training and 72 test questions per domain.
  The same arguments give byte-identical files.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np

from brainvlm.core.jsonio import write_jsonl
from brainvlm.data import images2d
from brainvlm.data.adapters.llava_med import DOMAIN_KEYS

DOMAINS = ("abdomen", "chest", "head")
CUES = ("blob", "wedge", "crescent")
DOMAIN_CUE = {"abdomen": "blob", "chest": "wedge", "head": "crescent"}
FINDING = {"abdomen": "mass", "chest": "pneumothorax", "head": "hematoma"}
QUESTIONS = (("abnormality", "Is there an abnormality?"), ("normality", "Is this image normal?"),
             ("finding", "What is the abnormality?"))
SPLITS = ("train", "test")


# ------------------------------------------------------------------------------------------- drawing
def _abdomen(size: int, dy: float, dx: float, rng: np.random.Generator) -> np.ndarray:
    body = images2d.ellipse(size, 0.55 + dy, 0.5 + dx, 0.27, 0.27)
    image = 0.45 * body + 0.05 * body * images2d.smooth_noise(size, rng, 0.1)
    return np.maximum(image, 0.95 * images2d.ellipse(size, 0.72 + dy, 0.5 + dx, 0.06, 0.06))


def _chest(size: int, dy: float, dx: float, rng: np.random.Generator) -> np.ndarray:
    image = 0.55 * images2d.ellipse(size, 0.6 + dy, 0.52 + dx, 0.25, 0.31)
    lungs = np.maximum(*(images2d.ellipse(size, 0.58 + dy, cx + dx, 0.19, 0.1) for cx in (0.4, 0.64)))
    image = image * (1 - lungs) + lungs * (0.1 + 0.1 * images2d.smooth_noise(size, rng, 0.06))
    for y in (0.48, 0.6, 0.72):
        image = np.maximum(image, 0.4 * lungs * images2d.band(size, y + dy, y + dy + 0.04, 0.0, 1.0))
    return np.maximum(image, 0.85 * images2d.band(size, 0.4 + dy, 0.84 + dy, 0.48 + dx, 0.56 + dx))


def _head(size: int, dy: float, dx: float, rng: np.random.Generator) -> np.ndarray:
    outer = images2d.ellipse(size, 0.55 + dy, 0.5 + dx, 0.32, 0.28)
    brain = images2d.ellipse(size, 0.55 + dy, 0.5 + dx, 0.22, 0.18)
    image = 0.95 * np.clip(outer - brain, 0, 1) + brain * (0.45 + 0.4 * images2d.smooth_noise(size, rng, 0.05))
    ventricles = np.maximum(*(images2d.ellipse(size, 0.55 + dy, cx + dx, 0.08, 0.03) for cx in (0.45, 0.55)))
    return image * (1 - 0.8 * ventricles)


STYLES = {"abdomen": _abdomen, "chest": _chest, "head": _head}


def cue_shape(cue: str, size: int) -> np.ndarray:
    """A cue's pixels in its own corner, which every style leaves black: drawn the same in every domain."""
    if cue == "blob":  # a bright disk, upper left
        return 0.95 * images2d.ellipse(size, 0.17, 0.17, 0.11, 0.11)
    if cue == "wedge":  # a dark wedge opening to the right inside a bright square, upper right
        y, x = images2d.grid(size)
        wedge = (x >= 0.75) & (np.abs(y - 0.15) <= 0.1 * (x - 0.75) / 0.2 + 0.02)
        return 0.8 * images2d.band(size, 0.03, 0.28, 0.72, 0.97) * (1 - wedge)
    crescent = images2d.ellipse(size, 0.82, 0.15, 0.14, 0.12) - images2d.ellipse(size, 0.82, 0.3, 0.14, 0.12)
    return 0.9 * np.clip(crescent, 0, 1)  # a bright crescent on the left edge, lower left


def draw(domain: str, cues: dict[str, bool], size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of a domain's style with the planted cues (cue name -> present), in [0, 1]."""
    dy, dx = rng.uniform(-0.02, 0.02, size=2)
    image = STYLES[domain](size, dy, dx, rng)
    for cue in CUES:
        if cues[cue]:
            image = image + cue_shape(cue, size)
    return np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)


# ------------------------------------------------------------------------------------------ labels
def answers(domain: str, cues: dict[str, bool]) -> list[tuple[str, str, str]]:
    """``(question_type, question, answer)`` of every template for an image of ``domain`` with ``cues``."""
    abnormal = cues[DOMAIN_CUE[domain]]
    said = {"abnormality": "yes" if abnormal else "no", "normality": "no" if abnormal else "yes",
            "finding": FINDING[domain] if abnormal else "none"}
    return [(kind, question, said[kind]) for kind, question in QUESTIONS]


def dealt_cues(n_images: int, rng: np.random.Generator) -> list[dict[str, bool]]:
    """Cue sets for ``n_images``: the 8 combinations dealt in turn (balanced), in a shuffled order."""
    combos = list(product((False, True), repeat=len(CUES)))
    order = rng.permutation(np.resize(np.arange(len(combos)), n_images))
    return [dict(zip(CUES, combos[i])) for i in order]


def _records(out: Path, split: str, n_images: int, seed: int, size: int) -> list[dict]:
    records: list[dict] = []
    split_index = SPLITS.index(split)
    for domain_index, domain in enumerate(DOMAINS):
        deal = dealt_cues(n_images, np.random.default_rng([seed, split_index, domain_index]))
        for number, cues in enumerate(deal, start=1):
            rng = np.random.default_rng([seed, split_index, domain_index, number])
            image = f"images/{split}_{domain_index * n_images + number:04d}.png"
            images2d.write_png(draw(domain, cues, size, rng), out / image)
            for kind, question, answer in answers(domain, cues):
                records.append({
                    "question_id": len(records) + 1, "image": image, "text": f"{question}\n<image>",
                    "gpt4_answer": answer, "question_type": kind,
                    "domain": {key: name == domain for name, key in DOMAIN_KEYS.items()},
                    **{f"cue_{cue}": present for cue, present in cues.items()}})
    return records


def make_synthetic_vqa(out_dir: str | Path, n_train: int = 64, n_test: int = 24, seed: int = 0,
                       size: int = 32) -> Path:
    """Write ``train.jsonl``, ``test.jsonl`` and ``images/`` under ``out_dir``; return ``out_dir``.

    Args:
        n_train, n_test: images per domain and split (three questions each; multiples of 8 keep every
            combination of cues equally frequent).

    Read it with ``data.adapters.llava_med.read_llava_med(out_dir / "train.jsonl", dataset=...)``, or
    ``data.vqa_tasks.fuse_files`` for per-domain task files. The same arguments give byte-identical files.
    """
    out = Path(out_dir)
    for split, n_images in zip(SPLITS, (n_train, n_test)):
        write_jsonl(_records(out, split, n_images, seed, size), out / f"{split}.jsonl")
    return out
