"""The synthetic chest-radiograph default of the report study: images with planted findings and a reports table.

Design (so that a correctly wired pipeline learns each part, and an image- or EHR-ablated one does not):

- **Images** (greyscale PNG, ``size`` pixels): a body outline, two dark lung fields with smooth texture,
  a bright heart silhouette and diaphragm, noise and a small random shift. Planted findings, each drawn
  independently with its own probability:

  | finding | drawn as | CheXpert | Impression | image-determined ICD |
  | --- | --- | --- | --- | --- |
  | Cardiomegaly | a heart silhouette 1.6 x wider | 1 / 0 | "Cardiomegaly." / "Heart size is normal." | I51.7 |
  | Pleural Effusion | a bright basal region with a meniscus in one lung | 1 / 0 | "Small left pleural effusion." / "No pleural effusion." | J90 |
  | Consolidation | a patchy opacity, dense or faint | 1 or -1 / 0 | "Right lower lobe consolidation." or "Possible consolidation." / "No consolidation." | J18.9 (dense only) |
  | Support Devices | a thin bright line from the neck down | 1 / blank | "Support device in place." | |

  No Finding is 1 when none of the first three is positive or uncertain (blank otherwise).
- **EHR** (age, sex, heart rate, history) drawn independently of the image. History terms carry the
  codes only the EHR determines (diabetes E11.9, hypertension I10, COPD J44.9, atrial fibrillation
  I48.91); vital signs are shown but set no code.
- **Reports table** ``reports.csv`` in the layout of ``data.curriculum.build_records``: the same builder
  and adapter as real data. Patients have one or two studies, so splits must group by patient.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainvlm.data import images2d

FINDING_RATE = {"Cardiomegaly": 0.4, "Pleural Effusion": 0.4, "Consolidation": 0.4, "Support Devices": 0.35}
IMAGE_ICD = {"Cardiomegaly": "I51.7", "Pleural Effusion": "J90", "Consolidation": "J18.9"}
HISTORY_ICD = {"diabetes": "E11.9", "hypertension": "I10", "COPD": "J44.9", "atrial fibrillation": "I48.91"}
HISTORY_RATE = 0.35
EHR_COLUMNS = ("age", "sex", "heart_rate", "history")
REPORTS = "reports.csv"


def draw(findings: dict[str, int], size: int, rng: np.random.Generator) -> np.ndarray:
    """One radiograph-like image with the planted ``findings`` (observation -> 1 / -1 / 0)."""
    dy, dx = rng.uniform(-0.02, 0.02, size=2)
    image = 0.08 + 0.25 * images2d.ellipse(size, 0.55 + dy, 0.5 + dx, 0.48, 0.42)
    lungs = [images2d.ellipse(size, 0.46 + dy, cx + dx, 0.28, 0.15) for cx in (0.31, 0.69)]
    texture = images2d.smooth_noise(size, rng, 0.06)
    for lung in lungs:
        image = image * (1 - lung) + lung * (0.12 + 0.08 * texture)
    heart_width = 0.22 if findings["Cardiomegaly"] == 1 else 0.135
    image = np.maximum(image, 0.72 * images2d.ellipse(size, 0.62 + dy, 0.54 + dx, 0.13, heart_width))
    image = np.maximum(image, 0.6 * images2d.band(size, 0.8 + dy, 1.0, 0.1, 0.9))
    if findings["Pleural Effusion"] == 1:
        side = 0.31 if rng.random() < 0.5 else 0.69
        fluid = images2d.band(size, 0.5 + dy, 0.8 + dy, side - 0.15 + dx, side + 0.15 + dx)
        meniscus = images2d.ellipse(size, 0.5 + dy, side + dx, 0.07, 0.13)
        image = np.maximum(image, 0.66 * np.clip(fluid - meniscus, 0, 1) * lungs[0 if side < 0.5 else 1])
    if findings["Consolidation"] != 0:
        side = 0.31 if rng.random() < 0.5 else 0.69
        patch = images2d.ellipse(size, rng.uniform(0.38, 0.46) + dy, side + dx, 0.13, 0.11, soft=0.05)
        strength = 0.8 if findings["Consolidation"] == 1 else 0.45
        image = np.maximum(image, strength * patch * (0.8 + 0.2 * texture))
    if findings["Support Devices"] == 1:
        image = np.maximum(image, 0.95 * images2d.line(size, 0.0, 0.5 + dx, 0.45 + dy, 0.47 + dx, width=0.035))
    return np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)


def _findings(rng: np.random.Generator) -> dict[str, int]:
    out = {name: int(rng.random() < rate) for name, rate in FINDING_RATE.items()}
    if out["Consolidation"] and rng.random() < 0.5:
        out["Consolidation"] = -1  # faint: reported as possible
    return out


def impression(findings: dict[str, int]) -> str:
    """The Impression the findings give: each observation stated, negated or hedged."""
    parts = ["Cardiomegaly." if findings["Cardiomegaly"] == 1 else "Heart size is normal.",
             "Small pleural effusion." if findings["Pleural Effusion"] == 1 else "No pleural effusion.",
             {1: "Right lower lobe consolidation.", -1: "Possible consolidation.", 0: "No consolidation."}[
                 findings["Consolidation"]]]
    if findings["Support Devices"] == 1:
        parts.append("Support device in place.")
    return " ".join(parts)


def chexpert_labels(findings: dict[str, int]) -> dict[str, object]:
    """The CheXpert columns of a study: planted observations 1/0 (consolidation -1 when faint), blank otherwise."""
    labels: dict[str, object] = {"Cardiomegaly": findings["Cardiomegaly"],
                                 "Pleural Effusion": findings["Pleural Effusion"],
                                 "Consolidation": findings["Consolidation"],
                                 "Support Devices": 1 if findings["Support Devices"] else ""}
    abnormal = any(findings[n] != 0 for n in ("Cardiomegaly", "Pleural Effusion", "Consolidation"))
    labels["No Finding"] = "" if abnormal else 1
    return labels


def _ehr(rng: np.random.Generator) -> dict[str, object]:
    history = [term for term in HISTORY_ICD if rng.random() < HISTORY_RATE]
    return {"age": int(rng.integers(40, 90)), "sex": "F" if rng.random() < 0.5 else "M",
            "heart_rate": int(rng.integers(60, 110)), "history": "; ".join(history) if history else "none"}


def icd_codes(findings: dict[str, int], history: str) -> list[str]:
    """History codes (EHR-determined, in the order of the history) then finding codes (image-determined).

    A coder reads the chart and then the film; the order also lets a small model copy the history terms'
    codes in turn instead of merging two sources into one sorted list.
    """
    codes = [HISTORY_ICD[t] for t in history.split("; ") if t in HISTORY_ICD]
    return codes + [code for name, code in IMAGE_ICD.items() if findings[name] == 1]


def make_synthetic_cxr(out_dir: str | Path, n_patients: int = 120, seed: int = 0, size: int = 32,
                       second_study_rate: float = 0.3, progress: bool = True) -> Path:
    """Write ``images/p<patient>/s<study>.png`` and ``reports.csv`` under ``out_dir``; return the table path.

    The same arguments give byte-identical files.
    """
    out = Path(out_dir)
    rows = []
    study = 0
    for patient in tqdm(range(1, n_patients + 1), desc="synthetic radiographs", disable=not progress):
        patient_rng = np.random.default_rng([seed, patient])
        ehr = _ehr(patient_rng)
        for _ in range(2 if patient_rng.random() < second_study_rate else 1):
            study += 1
            rng = np.random.default_rng([seed, patient, study])
            findings = _findings(rng)
            rel = f"images/p{patient:05d}/s{study:06d}.png"
            images2d.write_png(draw(findings, size, rng), out / rel)
            rows.append({"study_id": f"s{study:06d}", "patient_id": f"p{patient:05d}", "image_path": rel,
                         "impression": impression(findings), **chexpert_labels(findings), **ehr,
                         "icd_codes": "; ".join(icd_codes(findings, str(ehr["history"])))})
    table = pd.DataFrame(rows)
    path = out / REPORTS
    table.to_csv(path, index=False, lineterminator="\n")
    return path
