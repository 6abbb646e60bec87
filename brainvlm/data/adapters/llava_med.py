"""LLaVA-Med VQA JSONL (``question_id``, ``image``, ``text``, ``gpt4_answer``, ``domain``) -> ``vqa`` samples.

One record per line, as the continual Med-VQA code writes them::

    {"question_id": 101, "image": "img_00101.jpg", "text": "is there air in the peritoneal cavity?\\n<image>",
     "gpt4_answer": "no", "domain": {"abd": true, "chest": false, "head": false}}

- ``text`` holds the question and one ``<image>`` token, usually at the end; the token becomes the image
  part at its place (with no token, the image comes first, LLaVA's convention).
- ``gpt4_answer`` or ``answer`` is the reference (both may be given when they agree).
- ``domain`` is a string (``"chest"``) or an object of booleans with exactly one true. Keys and strings map
  through :data:`DOMAIN_NAMES` (``abd`` and ``abdomen`` -> ``abdomen``, ``chest``, ``head``; any case), the
  names the VQA-RAD adapter writes; pass ``domain_names=`` for other sources.
- ``answer_type`` (``CLOSED``/``OPEN``) is taken when present; otherwise a yes/no answer is CLOSED and
  any other answer OPEN. VQA-RAD has closed questions with other answers ("Is this a CT or an MRI?"), which
  the rule calls OPEN: give the field where that matters.

Metadata: ``split``, ``domain``, ``answer_type``, ``question_id`` (as written: what LLaVA-Med answer files
are matched on), ``image`` (the bootstrap unit), ``dataset``, and every other key of the record
(``pair_id``, ``question_type``, ...). Ids are ``<dataset>_<split>_<question_id>``, integers zero-padded
to six digits. :func:`sample_to_record` writes a sample back in this format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainvlm.core.jsonio import JsonError, read_jsonl_numbered
from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.images import check_image_path
from brainvlm.data.adapters.llava import IMAGE_TOKEN, text_to_parts

DOMAIN_NAMES = {"abd": "abdomen", "abdomen": "abdomen", "chest": "chest", "head": "head"}
DOMAIN_KEYS = {"abdomen": "abd", "chest": "chest", "head": "head"}  # the seed's keys, for writing
ANSWER_KEYS = ("gpt4_answer", "answer")
USED_KEYS = ("question_id", "image", "text", "domain", "answer_type", *ANSWER_KEYS)
CLOSED_ANSWERS = ("yes", "no")
SPLIT_WORDS = {"train": "train", "trainset": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "valset": "val", "dev": "val", "test": "test", "testset": "test"}


def split_from_name(path: str | Path) -> str | None:
    """The split a file name names as a word (``train_abd.jsonl`` -> train); None when none or several."""
    words = re.split(r"[^a-z]+", Path(path).name.split(".")[0].lower())
    found = {SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS}
    return found.pop() if len(found) == 1 else None


def _question_id(record: Mapping[str, Any], where: str) -> int | str:
    value = record["question_id"]
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise AdapterError(f"{where}: question_id is {value!r}; use an integer or a non-empty string")
    return value


def domain_of(value: Any, where: str, names: Mapping[str, str] = DOMAIN_NAMES) -> str:
    """The brainvlm domain of a ``domain`` field: a string, or an object of booleans with one true."""
    if isinstance(value, str):
        name = names.get(value.strip().lower())
        if name is None:
            raise AdapterError(f"{where}: domain {value!r} is not one of {sorted(names)}; "
                               "rename it or pass domain_names= mapping it to a domain")
        return name
    if not isinstance(value, dict):
        raise AdapterError(f"{where}: domain is {type(value).__name__}; give a string (\"chest\") "
                           "or an object of booleans ({\"abd\": true, \"chest\": false, \"head\": false})")
    for key, flag in value.items():
        if key.strip().lower() not in names:
            raise AdapterError(f"{where}: domain key {key!r} is not one of {sorted(names)}; "
                               "rename it or pass domain_names= mapping it to a domain")
        if not isinstance(flag, bool):
            raise AdapterError(f"{where}: domain[{key!r}] is {flag!r}; use true or false")
    chosen = [key for key, flag in value.items() if flag]
    if len(chosen) != 1:
        raise AdapterError(f"{where}: domain {value} has {len(chosen)} true entries {chosen}; "
                           "mark exactly one domain true")
    return names[chosen[0].strip().lower()]


def _answer_text(value: Any, key: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise AdapterError(f"{where}: {key} is {type(value).__name__}; give the answer as a string")
    text = " ".join(str(value).split())
    if not text:
        raise AdapterError(f"{where}: {key} is empty; give the reference answer (records without one "
                           "cannot be trained on or scored)")
    return text


def answer_of(record: Mapping[str, Any], where: str) -> str:
    """The reference: ``gpt4_answer`` or ``answer`` (both only when they agree), whitespace collapsed."""
    given = {key: _answer_text(record[key], key, where) for key in ANSWER_KEYS if key in record}
    if len(set(given.values())) > 1:
        raise AdapterError(f"{where}: gpt4_answer {given['gpt4_answer']!r} and answer {given['answer']!r} "
                           "differ; keep the reference in one of them")
    return next(iter(given.values()))


def answer_type_of(record: Mapping[str, Any], answer: str, where: str) -> str:
    """``answer_type`` when the record gives it, else CLOSED for a yes/no answer and OPEN otherwise."""
    if "answer_type" not in record:
        return "CLOSED" if answer.lower().rstrip(".") in CLOSED_ANSWERS else "OPEN"
    kind = str(record["answer_type"]).strip().upper()
    if kind not in ("CLOSED", "OPEN"):
        raise AdapterError(f"{where}: answer_type is {record['answer_type']!r}; use CLOSED or OPEN, "
                           "or leave it out (a yes/no answer is then CLOSED)")
    return kind


def question_parts(text: Any, image: str, modality: str, where: str) -> list[dict]:
    """The user turn's parts: the question text with the image at the place of its ``<image>`` token."""
    if not isinstance(text, str):
        raise AdapterError(f"{where}: text is {type(text).__name__}; give the question as a string")
    n_tokens = text.count(IMAGE_TOKEN)
    if n_tokens > 1:
        raise AdapterError(f"{where}: text has {n_tokens} {IMAGE_TOKEN} tokens for one image; keep one")
    if not text.replace(IMAGE_TOKEN, "").strip():
        raise AdapterError(f"{where}: text {text!r} holds no question; put the question in text")
    marked = text if n_tokens else IMAGE_TOKEN + "\n" + text
    return text_to_parts(marked, iter([image]), modality, where)


def _sample_id(dataset: str, split: str, question_id: int | str) -> str:
    number = f"{question_id:06d}" if isinstance(question_id, int) else question_id
    return f"{dataset}_{split}_{number}"


def record_to_sample(record: Mapping[str, Any], split: str, where: str, modality: str = "other",
                     dataset: str = "llava_med", domain_names: Mapping[str, str] = DOMAIN_NAMES) -> dict:
    """One LLaVA-Med VQA record -> one canonical ``vqa`` sample; ``where`` names it in errors."""
    if "conversations" in record:
        raise AdapterError(f"{where}: a record with conversations (a canonical or LLaVA-classic sample), "
                           "not a LLaVA-Med VQA record; read canonical samples with core.jsonio.read_jsonl "
                           "and LLaVA-classic ones with data.adapters.llava.from_llava_classic")
    missing = [key for key in ("question_id", "image", "text", "domain") if key not in record]
    if not any(key in record for key in ANSWER_KEYS):
        missing.append("gpt4_answer or answer")
    if missing:
        raise AdapterError(f"{where}: lacks {missing}; a LLaVA-Med VQA record needs question_id, image, "
                           "text, domain and gpt4_answer or answer")
    question_id = _question_id(record, where)
    where = f"{where} (question_id {question_id!r})"
    image = record["image"]
    if not isinstance(image, str) or not image.strip():
        raise AdapterError(f"{where}: image is {image!r}; give the image path relative to the image root")
    answer = answer_of(record, where)
    metadata = {key: value for key, value in record.items() if key not in USED_KEYS}
    metadata.update(split=split, domain=domain_of(record["domain"], where, domain_names),
                    answer_type=answer_type_of(record, answer, where), question_id=question_id,
                    image=image, dataset=dataset)
    return {
        "id": _sample_id(dataset, split, question_id),
        "task": "vqa",
        "conversations": [
            {"role": "user", "content": question_parts(record["text"], image, modality, where)},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "metadata": metadata,
    }


def _split(path: Path, split: str | None) -> str:
    if split is None:
        split = split_from_name(path)
        if split is None:
            raise AdapterError(f"{path}: the file name names no split (train, val or test); pass split=")
    if split not in ("train", "val", "test"):
        raise AdapterError(f"{path}: split={split!r}; use train, val or test")
    return split


def _check_unique(question_id: int | str, number: int, lines: dict, path: Path) -> None:
    """Refuse a question id seen on an earlier line; ids compare as text (``1`` and ``"1"`` are one id)."""
    key = str(question_id)
    if key in lines:
        first_id, first_line = lines[key]
        same = "" if first_id == question_id else f" (as {first_id!r} on line {first_line}: ids compare as text)"
        raise AdapterError(f"{path}: question_id {question_id!r} appears on lines {first_line} and {number}"
                           f"{same}; question ids must be unique within a file")
    lines[key] = (question_id, number)


def read_llava_med(path: str | Path, split: str | None = None, image_root: str | Path | None = None,
                   modality: str = "other", dataset: str = "llava_med",
                   domain_names: Mapping[str, str] = DOMAIN_NAMES) -> list[dict]:
    """Read a LLaVA-Med VQA JSONL file as canonical ``vqa`` samples, in file order.

    Args:
        split: ``train``/``val``/``test``; default: the split the file name names as a word.
        image_root: when given, every ``image`` must exist under it (paths stay relative) and may not be a
            symlink out of it; an absolute path or one with ``..`` out of the root is refused always.
        modality: the image parts' modality (the format does not say).
        dataset: ``metadata.dataset`` and the id prefix.
        domain_names: domain strings and keys (lowercase) -> brainvlm domain names.

    Raises:
        AdapterError: a line that is not a JSON object or not a valid record, naming the file and line;
            a question id on two lines; a file without records.
    """
    path = Path(path)
    split = _split(path, split)
    try:
        records = read_jsonl_numbered(path)
    except JsonError as exc:
        raise AdapterError(str(exc)) from None
    if not records:
        raise AdapterError(f"{path}: no records; expected one LLaVA-Med VQA object per line")
    samples, lines = [], {}
    for number, record in records:
        sample = record_to_sample(record, split, f"{path}:{number}", modality, dataset, domain_names)
        question_id = sample["metadata"]["question_id"]
        _check_unique(question_id, number, lines, path)
        check_image_path(sample["metadata"]["image"], image_root, f"{path}:{number} (question_id {question_id!r})")
        samples.append(sample)
    return samples


def prompt_text(sample: Mapping[str, Any]) -> str:
    """The last user turn as LLaVA-Med text: text parts as written, each image part as ``<image>``."""
    turn = [t for t in sample["conversations"] if t["role"] == "user"][-1]
    return "\n".join(IMAGE_TOKEN if p["type"] == "image" else p["text"] for p in turn["content"])


def sample_to_record(sample: Mapping[str, Any]) -> dict:
    """A one-image ``vqa`` sample as a LLaVA-Med VQA record (the seed's keys; ``question_id`` or the id)."""
    metadata = sample["metadata"]
    images = [p["image_path"] for t in sample["conversations"] for p in t["content"] if p["type"] == "image"]
    if len(images) != 1:
        raise AdapterError(f"sample {sample['id']!r}: {len(images)} images; a LLaVA-Med VQA record has one")
    answer = " ".join(p["text"] for p in sample["conversations"][-1]["content"] if p["type"] == "text")
    domain = metadata.get("domain")
    record = {"question_id": metadata.get("question_id", sample["id"]), "image": images[0],
              "text": prompt_text(sample), "gpt4_answer": answer,
              "domain": {key: name == domain for name, key in DOMAIN_KEYS.items()}
              if domain in DOMAIN_KEYS else domain}
    if "answer_type" in metadata:
        record["answer_type"] = metadata["answer_type"]
    return record
