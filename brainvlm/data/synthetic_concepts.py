"""The synthetic default of the concepts study: images whose planted findings are real UMLS concepts, written
in the ROCOv2 layout so that they go through the same adapter as real data (``data.adapters.roco``).

Design (so that a small model, or a logistic regression on frozen random-network features, learns each part):

- **Concepts** (:data:`CONCEPTS`; their sources are in ``tests/data/synthetic_concepts/SOURCE.md``): one
  modality and one body region per image, both on the ImageCLEF 2025/2026 allow-list, drawn independently
  with skewed frequencies as in ROCOv2, where CT and plain radiographs of the chest dominate
  (:data:`MODALITY_WEIGHTS`, :data:`REGION_WEIGHTS`); and four findings, each present independently with
  probability :data:`FINDING_RATE`. With skewed frequencies a detector that learned nothing from the image
  answers the common concepts, as the tuned most-frequent baseline does.
- **Images** (greyscale PNG, ``size`` pixels, 32 by default): the region sets the geometry, the modality
  the rendering, each finding a big shape in its own quadrant, so every cue is large, distinct and stays in
  place (a shift of at most 2% and a little noise):

  | concept | drawn as |
  | --- | --- |
  | Chest | a wide body with two lungs and a spine |
  | Abdomen | a round body with a vertebra at the back |
  | Bone structure of cranium | a small head with a thick skull |
  | X-Ray Computed Tomography | black background, flat grey body, dark air, bright bone |
  | Magnetic Resonance Imaging | black background, textured body, dark bone |
  | Ultrasonography | a fan-shaped window of speckle, black outside it; bright bone |
  | Plain x-ray | a light grey background, darker body, bright bone |
  | Tumor | a bright disk on a black halo, upper left |
  | Calcinosis | three bright dots on a black square, upper right |
  | Fractures | a bright bar broken in two on a black square, lower left |
  | Aneurysm | a bright ring on a black halo, lower right |

- **Captions** from one template that states the modality, the region and the findings
  (``CT scan of the chest showing a tumor and an aneurysm.``; ``... with no abnormality.`` without one).
- **Files** (:func:`make_synthetic_concepts`): ``{split}_concepts.csv`` (every concept),
  ``{split}_concepts_manual.csv`` (the allow-listed ones; a share :data:`UNVALIDATED_RATE` of the images has
  none, ``ID,``), ``{split}_captions.csv``, ``cui_mapping.csv`` and ``{split}/{ID}.png``, for the splits
  ``train``, ``valid`` and ``test``. Ids are not zero-padded (``synthetic_concepts_test_1``, ..._2, ..._10).
  The same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from brainvlm.data import images2d
from brainvlm.data.clef_tasks import MANUAL_CUIS


@dataclass(frozen=True)
class PlantedConcept:
    """A concept the generator plants: its CUI, name (as in ``cui_mapping.csv``), kind and caption phrase."""

    cui: str
    name: str
    kind: str  # "modality", "region" or "finding"
    phrase: str


CONCEPTS = (
    PlantedConcept("C0040405", "X-Ray Computed Tomography", "modality", "CT scan"),
    PlantedConcept("C0024485", "Magnetic Resonance Imaging", "modality", "MR image"),
    PlantedConcept("C0041618", "Ultrasonography", "modality", "Ultrasound image"),
    PlantedConcept("C1306645", "Plain x-ray", "modality", "Plain radiograph"),
    PlantedConcept("C0817096", "Chest", "region", "the chest"),
    PlantedConcept("C0000726", "Abdomen", "region", "the abdomen"),
    PlantedConcept("C0037303", "Bone structure of cranium", "region", "the skull"),
    PlantedConcept("C0027651", "Tumor", "finding", "a tumor"),
    PlantedConcept("C0006663", "Calcinosis", "finding", "calcifications"),
    PlantedConcept("C0016658", "Fractures", "finding", "a fracture"),
    PlantedConcept("C0002940", "Aneurysm", "finding", "an aneurysm"),
)
# Names a model (or a person) may write for the concepts above, with the CUI each should map to ("" where
# the table gives no basis for one: must stay unmapped). Notebook 08 reports the mapper's precision on them.
LABELLED_NAMES = (
    ("X-Ray Computed Tomography", "C0040405", "exact"), ("Chest", "C0817096", "exact"),
    ("x-ray computed tomography", "C0040405", "case"), ("magnetic resonance imaging", "C0024485", "case"),
    ("Tomography, X-Ray Computed", "C0040405", "word order"), ("Tumors", "C0027651", "plural"),
    ("Fracture", "C0016658", "singular"), ("Aneurysmm", "C0002940", "typo"), ("Calcinossis", "C0006663", "typo"),
    ("Ultrasonograpy", "C0041618", "typo"), ("Bone structure of the cranium", "C0037303", "extra word"),
    ("MRI", "", "abbreviation absent from the table"), ("CT", "", "abbreviation absent from the table"),
    ("Chess", "", "near miss"), ("Pelvis", "", "concept absent from the table"),
)
MODALITIES = tuple(c for c in CONCEPTS if c.kind == "modality")
REGIONS = tuple(c for c in CONCEPTS if c.kind == "region")
FINDINGS = tuple(c for c in CONCEPTS if c.kind == "finding")
FINDING_CUIS = tuple(c.cui for c in FINDINGS)
FINDING_RATE = 0.5
MODALITY_WEIGHTS = (0.45, 0.2, 0.1, 0.25)  # CT, MRI, ultrasound, plain x-ray (the order of MODALITIES)
REGION_WEIGHTS = (0.55, 0.3, 0.15)  # chest, abdomen, cranium
UNVALIDATED_RATE = 0.15
SPLITS = ("train", "valid", "test")
PREFIX = "synthetic_concepts"


# ------------------------------------------------------------------------------------------- drawing
def _region_layers(region: str, size: int, dy: float, dx: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(body, air, bone)`` masks of a region's geometry."""
    zeros = np.zeros((size, size))
    if region == "C0817096":  # chest: a wide body, two lungs, a spine
        body = images2d.ellipse(size, 0.55 + dy, 0.5 + dx, 0.36, 0.45)
        air = np.maximum(*(images2d.ellipse(size, 0.52 + dy, cx + dx, 0.22, 0.12) for cx in (0.31, 0.69)))
        return body, air, images2d.ellipse(size, 0.8 + dy, 0.5 + dx, 0.06, 0.06)
    if region == "C0000726":  # abdomen: a round body with a vertebra at the back
        body = images2d.ellipse(size, 0.5 + dy, 0.5 + dx, 0.4, 0.4)
        return body, zeros, images2d.ellipse(size, 0.76 + dy, 0.5 + dx, 0.09, 0.09)
    outer = images2d.ellipse(size, 0.5 + dy, 0.5 + dx, 0.3, 0.25)  # cranium: a small head, a thick skull
    return outer, zeros, np.clip(outer - images2d.ellipse(size, 0.5 + dy, 0.5 + dx, 0.22, 0.17), 0, 1)


def _fan(size: int) -> np.ndarray:
    """The window of an ultrasound image: a sector opening downwards from the top centre."""
    y, x = images2d.grid(size)
    angle = np.degrees(np.arctan2(x - 0.5, y + 0.05))
    radius = np.hypot(x - 0.5, y + 0.05)
    return ((np.abs(angle) < 38) & (radius < 1.0)).astype(np.float64)


def _render(modality: str, layers: tuple[np.ndarray, np.ndarray, np.ndarray],
            rng: np.random.Generator) -> np.ndarray:
    """The image of a region's layers as a modality shows it."""
    body, air, bone = layers
    size = body.shape[0]
    if modality == "C0040405":  # CT
        image = 0.45 * body
        return np.maximum(image * (1 - air) + 0.08 * air, 0.95 * bone)
    if modality == "C0024485":  # MRI: textured tissue, dark bone
        image = body * (0.3 + 0.4 * images2d.smooth_noise(size, rng, 0.06))
        return image * (1 - air) * (1 - 0.85 * bone)
    if modality == "C0041618":  # ultrasound: speckle in a fan
        speckle = rng.uniform(0.05, 0.3, (size, size))
        return _fan(size) * (speckle + 0.4 * body - 0.3 * air + 0.3 * bone)
    image = 0.75 - 0.3 * body - 0.25 * air  # plain x-ray: light background, darker body
    return np.maximum(image, 0.95 * bone)


def _finding_shapes(cui: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(shape, halo)`` of a finding, in its own quadrant."""
    if cui == "C0027651":  # tumor: a disk, upper left
        return images2d.ellipse(size, 0.25, 0.25, 0.1, 0.1), images2d.ellipse(size, 0.25, 0.25, 0.16, 0.16)
    if cui == "C0006663":  # calcinosis: three dots, upper right
        spots = [(0.17, 0.68), (0.2, 0.84), (0.33, 0.75)]
        shape = np.maximum.reduce([images2d.ellipse(size, y, x, 0.045, 0.045) for y, x in spots])
        return shape, images2d.band(size, 0.08, 0.42, 0.58, 0.94)
    if cui == "C0016658":  # fractures: a bar broken in two, lower left
        shape = np.maximum(images2d.line(size, 0.62, 0.08, 0.72, 0.22, 0.07),
                           images2d.line(size, 0.8, 0.24, 0.9, 0.4, 0.07))
        return shape, images2d.band(size, 0.56, 0.96, 0.04, 0.46)
    ring = images2d.ellipse(size, 0.75, 0.75, 0.13, 0.13) - images2d.ellipse(size, 0.75, 0.75, 0.06, 0.06)
    return np.clip(ring, 0, 1), images2d.ellipse(size, 0.75, 0.75, 0.19, 0.19)  # aneurysm: a ring


def draw(modality: str, region: str, findings: list[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of a modality, a region and findings (CUIs), in [0, 1]."""
    dy, dx = rng.uniform(-0.02, 0.02, size=2)
    image = _render(modality, _region_layers(region, size, dy, dx), rng)
    for cui in findings:
        shape, halo = _finding_shapes(cui, size)
        image = np.maximum(image * (1 - halo), shape)
    return np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)


# ------------------------------------------------------------------------------------------ labels
def caption(modality: str, region: str, findings: list[str]) -> str:
    """The caption of an image: modality, region and findings in :data:`CONCEPTS` order."""
    phrase = {c.cui: c.phrase for c in CONCEPTS}
    start = f"{phrase[modality]} of {phrase[region]}"
    if not findings:
        return f"{start} with no abnormality."
    said = [phrase[cui] for cui in findings]
    listed = said[0] if len(said) == 1 else f"{', '.join(said[:-1])} and {said[-1]}"
    return f"{start} showing {listed}."


def _draw_labels(rng: np.random.Generator) -> tuple[str, str, list[str]]:
    modality = MODALITIES[rng.choice(len(MODALITIES), p=MODALITY_WEIGHTS)].cui
    region = REGIONS[rng.choice(len(REGIONS), p=REGION_WEIGHTS)].cui
    findings = [c.cui for c in FINDINGS if rng.random() < FINDING_RATE]
    return modality, region, findings


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def _write_split(out: Path, split: str, n_images: int, seed: int, size: int, progress: bool) -> None:
    concepts, manual, captions = [], [], []
    for number in tqdm(range(1, n_images + 1), desc=f"synthetic concepts ({split})", disable=not progress):
        rng = np.random.default_rng([seed, SPLITS.index(split), number])
        modality, region, findings = _draw_labels(rng)
        image_id = f"{PREFIX}_{split}_{number}"
        images2d.write_png(draw(modality, region, findings, size, rng), out / split / f"{image_id}.png")
        validated = rng.random() >= UNVALIDATED_RATE
        concepts.append([image_id, ";".join([modality, region, *findings])])
        allowed = [c for c in (modality, region) if c in MANUAL_CUIS]
        manual.append([image_id, ";".join(allowed) if validated else ""])
        captions.append([image_id, caption(modality, region, findings)])
    _write_text(out / f"{split}_concepts.csv", _csv_text(["ID", "CUIs"], concepts))
    _write_text(out / f"{split}_concepts_manual.csv", _csv_text(["ID", "CUIs"], manual))
    _write_text(out / f"{split}_captions.csv", _csv_text(["ID", "Caption"], captions))


def make_synthetic_concepts(out_dir: str | Path, n_train: int = 180, n_valid: int = 60, n_test: int = 60,
                            seed: int = 0, size: int = 32, progress: bool = False) -> Path:
    """Write the synthetic concepts set in the ROCOv2 layout under ``out_dir``; return ``out_dir``.

    Read it with ``data.adapters.roco.roco_samples(out_dir, split)`` (``split`` one of ``train``,
    ``valid``, ``test``). The same arguments give byte-identical files.
    """
    out = Path(out_dir)
    for split, n_images in zip(SPLITS, (n_train, n_valid, n_test)):
        _write_split(out, split, n_images, seed, size, progress)
    mapping = [[c.cui, c.name] for c in sorted(CONCEPTS, key=lambda c: c.cui)]
    _write_text(out / "cui_mapping.csv", _csv_text(["CUI", "Canonical name"], mapping))
    return out
