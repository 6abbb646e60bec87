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

import difflib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainvlm.core.jsonio import JsonError, read_json, read_jsonl_numbered
from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.images import check_image_path
from brainvlm.data.adapters.llava import IMAGE_TOKEN, text_to_parts

MIMIC_PATH = re.compile(r"(?:^|/)files/p\d{2}/p(?P<patient>\d+)/s(?P<study>\d+)/[^/]+$")
EHR_BLOCK = re.compile(r"Patient Data:\s*(?P<block>\{.*?\})\s*(?:\n|$)", re.DOTALL)
EHR_OPENING = re.compile(r"Patient Data:\s*\{")
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


def parse_ehr(prompt: str, where: str = "prompt") -> dict[str, Any] | None:
    """The ``Patient Data: {...}`` block of a prompt as a dict (``{"text": ...}`` when it is not JSON).

    Raises:
        AdapterError: a ``Patient Data: {`` with no ``}`` closing it at the end of a line, naming ``where``
            (such a block would be read as no EHR and stay in the prompt with the EHR turned off).
    """
    match = EHR_BLOCK.search(prompt)
    if match is None and EHR_OPENING.search(prompt):
        raise AdapterError(f"{where}: the prompt's 'Patient Data: {{' block is not closed (no '}}' ends a line "
                           "after it); close the block")
    if match is None:
        return None
    block = match["block"]
    if IMAGE_TOKEN in block:
        raise AdapterError(f"{where}: the prompt's 'Patient Data: {{' block runs past the image to a later '}}'; "
                           "close the block on its own line before the image")
    try:
        value = json.loads(block)
        return value if isinstance(value, dict) else {"text": block}
    except json.JSONDecodeError:
        return {"text": block}


def strip_ehr(text: str) -> str:
    """``text`` without its ``Patient Data: {...}`` block (the same block :func:`parse_ehr` reads)."""
    return EHR_BLOCK.sub("", text).strip()


def _check_stage_and_mode(record: Mapping[str, Any], where: str) -> None:
    """Each of ``stage`` and ``mode`` known, and the two agree when both are given (A image_only, B image_ehr)."""
    for key, allowed in (("stage", STAGES), ("mode", MODES)):
        if record.get(key) is not None and record[key] not in allowed:
            raise AdapterError(f"{where}: {key} {record[key]!r} unknown; expected one of {list(allowed)}")
    stage, mode = record.get("stage"), record.get("mode")
    if stage is not None and mode is not None and MODE_OF_STAGE[stage] != mode:
        raise AdapterError(f"{where}: stage {stage!r} with mode {mode!r}; stage A is image_only and stage B "
                           "image_ehr: fix the stage or the mode")


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
    _check_stage_and_mode(record, where)
    patient, study = record_ids(record, where)
    prompt = str(record["prompt"])
    if IMAGE_TOKEN not in prompt:
        prompt = IMAGE_TOKEN + "\n" + prompt
    user = text_to_parts(prompt, iter([str(record["image"])]), modality, where)
    ehr = parse_ehr(prompt, where)
    mode = record.get("mode") or MODE_OF_STAGE.get(record.get("stage")) or ("image_ehr" if ehr is not None else "image_only")
    stage = record.get("stage") or STAGES[MODES.index(mode)]
    metadata = {"split": split, "domain": domain, "stage": stage, "mode": mode,
                "patient_id": patient, "study_id": study, "ehr": ehr}
    return {"id": f"{cohort_name}_report_{split}_{index:06d}", "task": "report",
            "conversations": [{"role": "user", "content": user},
                              {"role": "assistant", "content": [{"type": "text", "text": str(record["target"])}]}],
            "metadata": metadata}


# The 14 CheXpert observations: data.curriculum.CHEXPERT_14, which imports this package and so cannot be
# imported here.
CHEXPERT_OBSERVATIONS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)


def _closest_observation(name: str) -> str | None:
    lower = {observation.lower(): observation for observation in CHEXPERT_OBSERVATIONS}
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.6)
    return lower[close[0]] if close else None


def check_chexpert_labels(row: Any, study: str, where: str | Path | None = None) -> dict:
    """One study's CheXpert labels, checked: an object of observation -> 1, 0, -1 or null (null: no row).

    Raises:
        AdapterError: labels that are not an object (a list, say), an observation that is none of the 14
            (naming the closest), or a value outside 1/0/-1/null; the message names ``where`` (the file,
            when known) and the study.
    """
    at = f"{where}: study {study}" if where else f"CheXpert labels of study {study}"
    if row is None:
        return {}
    if not isinstance(row, Mapping):
        raise AdapterError(f"{at}: the labels are a {type(row).__name__}, expected an object of observation -> "
                           '1, 0, -1 or null, e.g. {"Cardiomegaly": 1, "Edema": 0}')
    for name in row:
        if name not in CHEXPERT_OBSERVATIONS:
            closest = _closest_observation(str(name))
            hint = f"did you mean {closest!r}?" if closest else f"use one of {list(CHEXPERT_OBSERVATIONS)}"
            raise AdapterError(f"{at}: {name!r} is not a CheXpert observation; {hint}")
    bad = {k: v for k, v in row.items() if v not in (1, 0, -1, None) or isinstance(v, bool)}
    if bad:
        raise AdapterError(f"{at}: labels must be 1, 0, -1 or null, got {bad}")
    return dict(row)


def read_joins(ehr_path: str | Path | None = None, chexpert_path: str | Path | None = None
               ) -> tuple[dict[str, dict], dict[str, dict]]:
    """The optional joins: study id -> EHR record, and study id -> CheXpert labels.

    Raises:
        AdapterError: a record without ``study_id``, a repeated study id, or a study whose labels are not
            an object of CheXpert observation -> 1/0/-1/null, naming the file and line (or study).
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
            labels[str(study)] = check_chexpert_labels(row, study, chexpert_path)
    return ehr, labels


def read_records(path: str | Path) -> list[tuple[int, dict]]:
    """``(line, record)`` of a curriculum JSONL file; an invalid line or a file without records is an error."""
    try:
        records = read_jsonl_numbered(path)
    except JsonError as err:
        raise AdapterError(str(err)) from None
    if not records:
        raise AdapterError(f"{path}: no records (the file is empty); expected one curriculum object per line")
    return records


def read_curriculum(path: str | Path, split: str, cohort_name: str = "curriculum", modality: str = "xray",
                    ehr: Mapping[str, dict] | None = None, chexpert: Mapping[str, dict] | None = None,
                    start: int = 1, image_root: str | Path | None = None) -> list[dict]:
    """Every record of a curriculum JSONL file as a ``report`` sample; joins add ``ehr_context``/``chexpert``.

    Errors name the file and line of the record. An absolute image path or one with ``..`` out of the root
    is refused; with ``image_root``, so are a missing image and a symlink out of the root.
    """
    samples = []
    for offset, (number, record) in enumerate(read_records(path)):
        where = f"{path}:{number}"
        sample = from_curriculum(record, start + offset, split, modality, cohort_name, where=where)
        check_image_path(str(record["image"]), image_root, where)
        study = sample["metadata"]["study_id"]
        if ehr is not None and study in ehr:
            sample["metadata"]["ehr_context"] = dict(ehr[study])
        if chexpert is not None and study in chexpert:
            sample["metadata"]["chexpert"] = check_chexpert_labels(chexpert[study], study)
        samples.append(sample)
    return samples
