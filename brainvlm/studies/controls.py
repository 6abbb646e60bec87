"""Controls that show a model reads the images: blank the query, shuffle images, query = reference.

A model that learned from the images answers at chance when the query image is blank or when it was
trained on images shuffled across samples, and follows the reference's label when the query image is
replaced by the reference image. A model that learned only the prompt passes none of these.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from brainvlm.eval.answers import parse_label

BLANK_IMAGE = "controls/blank.png"


def image_parts(sample: dict) -> list[dict]:
    """The image parts of a sample in conversation order (the last one is the query)."""
    return [p for turn in sample["conversations"] for p in turn["content"] if p["type"] == "image"]


def write_blank_image(image_root: Path, size: int = 32) -> str:
    """Write an all-black PNG under ``image_root`` (a folder the samples' paths are relative to); return its
    relative path."""
    path = Path(image_root) / BLANK_IMAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        Image.new("RGB", (size, size)).save(path)
    return BLANK_IMAGE


def blank_query(samples: list[dict], blank_path: str) -> list[dict]:
    """Copies of the samples whose query (last) image is replaced by ``blank_path`` (blank or mean image)."""
    out = []
    for sample in samples:
        sample = copy.deepcopy(sample)
        query = image_parts(sample)[-1]
        query.update(image_path=blank_path, modality="other")
        out.append(sample)
    return out


def query_as_reference(samples: list[dict]) -> list[dict]:
    """Copies of the samples whose query image is their (first) reference image."""
    out = []
    for sample in samples:
        sample = copy.deepcopy(sample)
        parts = image_parts(sample)
        if len(parts) < 2:
            raise ValueError(f"sample {sample['id']}: needs a reference and a query image, has {len(parts)}")
        parts[-1].update(image_path=parts[0]["image_path"], modality=parts[0].get("modality", "sMRI"))
        out.append(sample)
    return out


def shuffle_images(samples: list[dict], seed: int) -> list[dict]:
    """Copies of the samples with every image position permuted across samples.

    The k-th image of each sample is replaced by the k-th image of another sample (a seeded permutation
    per position), so images no longer carry information about the labels in the text.
    """
    out = copy.deepcopy(samples)
    rng = np.random.default_rng(seed)
    n_images = {len(image_parts(s)) for s in out}
    if len(n_images) != 1:
        raise ValueError(f"shuffle_images needs the same number of images per sample, found {sorted(n_images)}")
    for position in range(n_images.pop()):
        originals = [dict(image_parts(s)[position]) for s in samples]
        for sample, source in zip(out, rng.permutation(len(samples))):
            image_parts(sample)[position].update(image_path=originals[source]["image_path"],
                                                 modality=originals[source].get("modality", "sMRI"))
    return out


def label_agreement(samples: list[dict], predictions: list[str], synonyms: dict[str, list[str]],
                    against: str = "target") -> pd.DataFrame:
    """Per sample: the label an answer states, and whether it equals the sample's target or reference label.

    Args:
        against: ``target`` (the query's label) or ``reference`` (the first reference's label).
        synonyms: label -> synonyms; unparseable answers count as disagreeing.
    """
    rows = []
    for sample, prediction in zip(samples, predictions, strict=True):
        meta = sample["metadata"]
        expected = meta["target"] if against == "target" else meta["reference_targets"][0]
        stated = parse_label(prediction, synonyms)
        rows.append({"id": sample["id"], "expected": expected, "stated": stated or "unparseable",
                     "agrees": stated == expected, "query_subject": meta.get("query_subject")})
    return pd.DataFrame(rows)


MEAN_IMAGE = "controls/mean_query.png"


def _view(path: Path, modality: str, view, cache) -> np.ndarray:
    """The image the model sees: a NIfTI volume's view, or a 2D file resized to the view's size."""
    from brainvlm.data.views import NIFTI_SUFFIXES, file_suffix, load_image, load_view

    if file_suffix(path) in NIFTI_SUFFIXES:
        return load_view(path, modality, view, cache)
    return np.asarray(load_image(path, modality, view, resize_2d=True))


def write_mean_image(samples: list[dict], image_root: Path, view, out_root: Path | None = None) -> str:
    """Write the pixel-wise mean of the samples' query images (an average brain or radiograph, no
    individual in it); 2D images are resized to the view's size first.

    Args:
        view: the ``ViewConfig`` the model sees.
        out_root: where to write it (default: the image root; a user's data folder is better left alone).

    Returns:
        The PNG's path relative to ``out_root``.
    """
    from brainvlm.data.volume_cache import VolumeCache

    cache = VolumeCache()
    queries: dict[str, tuple[str, str]] = {}  # image path -> (modality, where: the first sample showing it)
    for sample in samples:
        parts = [(t, p) for t, turn in enumerate(sample["conversations"]) for p, part in enumerate(turn["content"])
                 if part["type"] == "image"]
        t, p = parts[-1]
        part = sample["conversations"][t]["content"][p]
        queries.setdefault(part["image_path"], (part.get("modality", "sMRI"),
                                                f"sample {sample['id']}: $.conversations[{t}].content[{p}].image_path"))
    views = []
    for path, (modality, where) in sorted(queries.items()):
        try:
            views.append(_view(Path(image_root) / path, modality, view, cache).astype(np.float64))
        except (OSError, ValueError) as error:
            raise ValueError(f"{where}: cannot load {path!r} for the mean image: {error}") from error
    path = Path(out_root or image_root) / MEAN_IMAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.mean(views, axis=0).round().astype(np.uint8)).save(path)
    return MEAN_IMAGE
