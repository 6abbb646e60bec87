"""Curriculum records from a reports table: each image once per stage, prompts and targets as in the seed.

A reports table has one row per image: ``study_id``, ``patient_id``, ``image_path``, ``impression``, the
CheXpert-14 observations as columns valued 1 / 0 / -1 / blank, EHR fields (``age``, ``sex``, vitals,
``history``, ...) and ``icd_codes`` (codes separated by ``;``). From each row the builder writes

    stage A (image_only):  "Image:<image>\\nAnswer Impression & CheXpert."
                           -> "Impression: ...\\nCheXpert: {...}"
    stage B (image_ehr):   "Patient Data: {...}\\nImage:<image>\\nAnswer Impression, CheXpert & ICD."
                           -> "Impression: ...\\nCheXpert: {...}\\nICD: [...]"

The label block lists only the non-blank observations. The records have the seed's layout, so real
curriculum files and built ones go through the same adapter (``data.adapters.curriculum``). Prompt
templates are parameters (``{ehr}`` is the patient-data JSON; the image stands where ``<image>`` is).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pandas as pd

from brainvlm.data.adapters import AdapterError

CHEXPERT_14 = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)  # the 14 CheXpert observations, in the order of the label block
PROMPT_A = "Image:<image>\nAnswer Impression & CheXpert."
PROMPT_B = "Patient Data: {ehr}\nImage:<image>\nAnswer Impression, CheXpert & ICD."
REQUIRED = ("study_id", "patient_id", "image_path", "impression")


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def chexpert_block(row: pd.Series, where: str) -> dict[str, int]:
    """The non-blank CheXpert observations of a row (1, 0, -1), in CheXpert order."""
    block = {}
    for name in CHEXPERT_14:
        value = row.get(name)
        if _blank(value):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if number not in (1.0, 0.0, -1.0):
            raise AdapterError(f"{where}: {name} is {value!r}; CheXpert labels are 1, 0, -1 or blank")
        block[name] = int(number)
    return block


def icd_codes(row: pd.Series) -> list[str]:
    """The row's ICD codes (``icd_codes`` split at ``;``), in the order given."""
    value = row.get("icd_codes")
    return [] if _blank(value) else [code.strip() for code in str(value).split(";") if code.strip()]


def ehr_fields(row: pd.Series, columns: Sequence[str]) -> dict[str, object]:
    """The non-blank EHR fields of a row, numbers as numbers."""
    out: dict[str, object] = {}
    for column in columns:
        value = row.get(column)
        if _blank(value):
            continue
        text = str(value).strip()
        try:
            number = float(text)
            out[column] = int(number) if number.is_integer() and "." not in text else number
        except ValueError:
            out[column] = text
    return out


def target_text(impression: str, chexpert: dict[str, int], icd: list[str] | None = None) -> str:
    """``Impression: ...\\nCheXpert: {...}`` plus ``\\nICD: [...]`` when ``icd`` is given (stage B)."""
    text = f"Impression: {impression.strip()}\nCheXpert: {json.dumps(chexpert)}"
    return text if icd is None else text + f"\nICD: {json.dumps(icd)}"


def build_records(table: pd.DataFrame, ehr_columns: Sequence[str], prompt_a: str = PROMPT_A,
                  prompt_b: str = PROMPT_B, where: str = "<reports table>") -> list[dict]:
    """Stage A and stage B records of every row (each image once per stage), in table order.

    Raises:
        AdapterError: a missing column, a blank required field or a label outside 1/0/-1, naming the row.
    """
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise AdapterError(f"{where}: missing column(s) {missing}; columns present: {list(table.columns)}")
    for template, name in ((prompt_a, "prompt_a"), (prompt_b, "prompt_b")):
        if template.count("<image>") != 1:
            raise AdapterError(f"{name} {template!r} must hold <image> exactly once")
    records = []
    for index, row in table.iterrows():
        line = row.get("row", index)
        at = f"{where}, row {line}"
        blank = [c for c in REQUIRED if _blank(row[c])]
        if blank:
            raise AdapterError(f"{at}: {blank} blank; every image needs a study, a patient, a path and an impression")
        ids = {"image": str(row["image_path"]), "subject_id": str(row["patient_id"]), "study_id": str(row["study_id"])}
        labels = chexpert_block(row, at)
        ehr = json.dumps(ehr_fields(row, ehr_columns), sort_keys=False)
        records.append({**ids, "prompt": prompt_a, "target": target_text(row["impression"], labels),
                        "mode": "image_only", "stage": "A"})
        records.append({**ids, "prompt": prompt_b.replace("{ehr}", ehr),
                        "target": target_text(row["impression"], labels, icd_codes(row)),
                        "mode": "image_ehr", "stage": "B"})
    return records
