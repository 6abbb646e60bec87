"""VQA-RAD (MEVF / MICCAI19-MedVQA JSON layout) -> canonical ``vqa`` samples.

Each record ``{qid, image_name, image_organ, answer, answer_type, question_type, question[, phrase_type]}``
becomes one sample: a user turn with the image and the question, and an assistant turn with the answer.
Metadata: ``split``, ``domain`` (HEAD/CHEST/ABD -> head/chest/abdomen), ``answer_type`` (whitespace
stripped: the train file has ``"CLOSED "`` rows), ``question_type``, ``qid``, ``image`` (the bootstrap
unit: questions about one image are not independent), ``phrase_type`` when present, ``dataset``.
"""

from __future__ import annotations

from pathlib import Path

from brainvlm.core.jsonio import read_json
from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.images import check_image_path
from brainvlm.data.schema import SPLITS

ORGAN_DOMAINS = {"HEAD": "head", "CHEST": "chest", "ABD": "abdomen"}
REQUIRED = ("qid", "image_name", "image_organ", "answer", "answer_type", "question_type", "question")


def _split_of(json_path: Path, split: str | None) -> str:
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; use one of {SPLITS}")
        return split
    found = [s for s in SPLITS if s in json_path.stem.lower()]
    if len(found) != 1:
        raise AdapterError(f"{json_path}: cannot tell the split from the file name; pass split= (one of {SPLITS})")
    return found[0]


def _check_record(record: object, index: int, json_path: Path) -> dict:
    if not isinstance(record, dict):
        raise AdapterError(f"{json_path}: item [{index}] is {type(record).__name__}, expected an object")
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise AdapterError(f"{json_path}: item [{index}] (qid {record.get('qid')!r}) lacks {missing}")
    qid = record["qid"]
    if isinstance(qid, bool) or not (isinstance(qid, int) or (isinstance(qid, str) and qid.strip().isdigit())):
        raise AdapterError(f"{json_path}: item [{index}] has qid {qid!r}; a VQA-RAD qid is a whole number")
    organ = str(record["image_organ"]).strip().upper()
    if organ not in ORGAN_DOMAINS:
        raise AdapterError(f"{json_path}: item [{index}] (qid {record['qid']!r}) has image_organ "
                         f"{record['image_organ']!r}; expected one of {sorted(ORGAN_DOMAINS)}")
    kind = str(record["answer_type"]).strip().upper()
    if kind not in ("CLOSED", "OPEN"):
        raise AdapterError(f"{json_path}: item [{index}] (qid {record['qid']!r}) has answer_type "
                         f"{record['answer_type']!r}; expected CLOSED or OPEN")
    return {**record, "image_organ": organ, "answer_type": kind}


def record_to_sample(record: dict, split: str, modality: str = "other") -> dict:
    """One checked MEVF record -> one canonical sample (id ``vqa_rad_<split>_<qid:06d>``)."""
    question, answer = " ".join(str(record["question"]).split()), " ".join(str(record["answer"]).split())
    metadata = {
        "split": split, "domain": ORGAN_DOMAINS[record["image_organ"]], "answer_type": record["answer_type"],
        "question_type": str(record["question_type"]).strip(), "qid": record["qid"],
        "image": record["image_name"], "dataset": "VQA-RAD",
    }
    if "phrase_type" in record:
        metadata["phrase_type"] = record["phrase_type"]
    return {
        "id": f"vqa_rad_{split}_{int(record['qid']):06d}",
        "task": "vqa",
        "conversations": [
            {"role": "user", "content": [
                {"type": "image", "image_path": record["image_name"], "modality": modality},
                {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "metadata": metadata,
    }


def vqa_rad_to_samples(json_path: str | Path, image_root: str | Path | None = None, split: str | None = None,
                       modality: str = "other") -> list[dict]:
    """Read a VQA-RAD question file (``trainset.json`` / ``testset.json``) as canonical ``vqa`` samples.

    Args:
        image_root: when given, every ``image_name`` must exist under it (image paths stay relative) and may
            not be a symlink out of it; an absolute path or one with ``..`` out of the root is refused always.
        split: ``train``/``val``/``test``; default: read from the file name.
        modality: the image parts' modality (VQA-RAD mixes CT, MRI and X-ray without saying which).

    Returns:
        Samples in file order. Question and answer whitespace is collapsed (one answer has a tab).
    """
    json_path = Path(json_path)
    records = read_json(json_path)
    if not isinstance(records, list):
        raise AdapterError(f"{json_path}: expected a JSON list of question records, got {type(records).__name__}")
    split = _split_of(json_path, split)
    samples, seen = [], {}
    for index, raw in enumerate(records):
        record = _check_record(raw, index, json_path)
        number = int(record["qid"])
        if number in seen:
            raise AdapterError(f"{json_path}: qid {record['qid']!r} appears at items [{seen[number]}] and [{index}]")
        seen[number] = index
        check_image_path(str(record["image_name"]), image_root, f"{json_path}: item [{index}] (qid {record['qid']!r})")
        samples.append(record_to_sample(record, split, modality))
    return samples
