"""Curriculum report records -> canonical ``report`` samples, with optional EHR and CheXpert joins.

A record (one JSONL line, the layout of the seed's ``curriculum_{train,val}.jsonl``)::

    {"image": "files/p10/p10000032/s50414267/<image>.jpg",
     "prompt": "Patient Data: {...}\\nImage:<image>\\nAnswer Impression, CheXpert & ICD.",
     "target": "Impression: ...\\nCheXpert: {...}\\nICD: [...]", "mode": "image_ehr", "stage": "B"}

Patient and study ids come from explicit fields (``subject_id`` or ``patient_id``; ``study_id``) when
present, else from the MIMIC-CXR path ``files/pNN/p<patient>/s<study>/<image>.jpg``; a record with
neither is an error naming the file and line. ``mode``, ``stage``, the ids and the parsed ``Patient
Data:`` block go to metadata. The optional joins, keyed by study id, are documented in
``docs/report_data.md``: ``ehr_context.jsonl`` (one object per study) and ``chexpert_dict.json`` (study id
-> observation -> 1/0/-1/null).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainvlm.core.jsonio import JsonError, read_json, read_jsonl_numbered
from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.llava import IMAGE_TOKEN, text_to_parts

MIMIC_PATH = re.compile(r"(?:^|/)files/p\d{2}/p(?P<patient>\d+)/s(?P<study>\d+)/[^/]+$")
EHR_BLOCK = re.compile(r"Patient Data:\s*(?P<block>\{.*?\})\s*(?:\n|$)", re.DOTALL)
STAGES = ("A", "B")
MODES = ("image_only", "image_ehr")
MODE_OF_STAGE = dict(zip(STAGES, MODES))  # a record without ``mode`` takes its stage's (else: EHR block or not)


def record_ids(record: Mapping[str, Any], where: str) -> tuple[str, str]:
    """``(patient id, study id)`` of a record: explicit fields first, else the MIMIC-CXR image path."""
    patient = record.get("subject_id", record.get("patient_id"))
    study = record.get("study_id")
    match = MIMIC_PATH.search(str(record.get("image", "")).replace("\\", "/"))
    if match:
        patient = match["patient"] if patient is None else patient
        study = match["study"] if study is None else study
    if patient is None or study is None:
        raise AdapterError(f"{where}: no patient and study id; give subject_id and study_id, or an image path "
                           f"files/pNN/p<patient>/s<study>/<image>.jpg (image is {record.get('image')!r})")
    return str(patient), str(study)


def parse_ehr(prompt: str) -> dict[str, Any] | None:
    """The ``Patient Data: {...}`` block of a prompt as a dict (``{"text": ...}`` when it is not JSON)."""
    match = EHR_BLOCK.search(prompt)
    if match is None:
        return None
    block = match["block"]
    try:
        value = json.loads(block)
        return value if isinstance(value, dict) else {"text": block}
    except json.JSONDecodeError:
        return {"text": block}


def from_curriculum(record: Mapping[str, Any], index: int, split: str, modality: str = "xray",
                    cohort_name: str = "curriculum", domain: str = "chest", where: str | None = None) -> dict:
    """A curriculum record as a two-turn ``report`` sample, id ``{cohort_name}_report_{split}_{index:06d}``.

    Metadata: ``split``, ``domain``, ``stage`` (A/B), ``mode`` (image_only/image_ehr; when absent from the
    record, the stage's mode, else ``image_ehr`` exactly when the prompt has a patient-data block), ``patient_id``,
    ``study_id`` and ``ehr`` (the parsed patient-data block, or None), so training can pick a stage and
    splits keep a patient's studies together.
    """
    where = where or f"curriculum record {index}"
    missing = [k for k in ("image", "prompt", "target") if k not in record]
    if missing:
        raise AdapterError(f"{where}: missing key(s) {missing}")
    for key, allowed in (("stage", STAGES), ("mode", MODES)):
        if record.get(key) is not None and record[key] not in allowed:
            raise AdapterError(f"{where}: {key} {record[key]!r} unknown; expected one of {list(allowed)}")
    patient, study = record_ids(record, where)
    prompt = str(record["prompt"])
    if IMAGE_TOKEN not in prompt:
        prompt = IMAGE_TOKEN + "\n" + prompt
    user = text_to_parts(prompt, iter([str(record["image"])]), modality, where)
    ehr = parse_ehr(prompt)
    mode = record.get("mode") or MODE_OF_STAGE.get(record.get("stage")) or ("image_ehr" if ehr else "image_only")
    stage = record.get("stage") or STAGES[MODES.index(mode)]
    metadata = {"split": split, "domain": domain, "stage": stage, "mode": mode,
                "patient_id": patient, "study_id": study, "ehr": ehr}
    return {"id": f"{cohort_name}_report_{split}_{index:06d}", "task": "report",
            "conversations": [{"role": "user", "content": user},
                              {"role": "assistant", "content": [{"type": "text", "text": str(record["target"])}]}],
            "metadata": metadata}


def read_joins(ehr_path: str | Path | None = None, chexpert_path: str | Path | None = None
               ) -> tuple[dict[str, dict], dict[str, dict]]:
    """The optional joins: study id -> EHR record, and study id -> CheXpert labels.

    Raises:
        AdapterError: a record without ``study_id``, a repeated study id, or a label outside 1/0/-1/null,
            naming the file and line (or key).
    """
    ehr: dict[str, dict] = {}
    if ehr_path is not None:
        for number, record in read_jsonl_numbered(ehr_path):
            study = record.get("study_id")
            if study is None:
                raise AdapterError(f"{ehr_path}:{number}: EHR record without study_id")
            if str(study) in ehr:
                raise AdapterError(f"{ehr_path}:{number}: study_id {study} appears twice")
            ehr[str(study)] = record
    labels: dict[str, dict] = {}
    if chexpert_path is not None:
        table = read_json(chexpert_path)
        if not isinstance(table, dict):
            raise AdapterError(f"{chexpert_path}: expected an object of study id -> labels")
        for study, row in table.items():
            bad = {k: v for k, v in (row or {}).items() if v not in (1, 0, -1, None) or isinstance(v, bool)}
            if bad:
                raise AdapterError(f"{chexpert_path}: study {study}: labels must be 1, 0, -1 or null, got {bad}")
            labels[str(study)] = dict(row or {})
    return ehr, labels


def read_curriculum(path: str | Path, split: str, cohort_name: str = "curriculum", modality: str = "xray",
                    ehr: Mapping[str, dict] | None = None, chexpert: Mapping[str, dict] | None = None,
                    start: int = 1) -> list[dict]:
    """Every record of a curriculum JSONL file as a ``report`` sample; joins add ``ehr_context``/``chexpert``.

    Errors name the file and line of the record.
    """
    samples = []
    try:
        records = read_jsonl_numbered(path)
    except JsonError as err:
        raise AdapterError(str(err)) from None
    for offset, (number, record) in enumerate(records):
        sample = from_curriculum(record, start + offset, split, modality, cohort_name, where=f"{path}:{number}")
        study = sample["metadata"]["study_id"]
        if ehr is not None and study in ehr:
            sample["metadata"]["ehr_context"] = dict(ehr[study])
        if chexpert is not None and study in chexpert:
            sample["metadata"]["chexpert"] = dict(chexpert[study])
        samples.append(sample)
    return samples
