"""LLaVA-Med answer files (``question_id``, ``prompt``, ``text``, ``answer_id``, ``model_id``) as predictions.

LLaVA-Med's ``model_vqa`` writes one line per question::

    {"question_id": 101, "prompt": "is there air in the peritoneal cavity?\\n<image>", "text": "no",
     "answer_id": "...", "model_id": "llava-vqa-rad_abd", "metadata": {}}

``brainvlm evaluate`` reads such a file as predictions (``evaluate.load_predictions`` tells the two
layouts apart per file) and matches each answer to the sample whose ``metadata.question_id`` it names
(the sample id where a sample has no question id). Question ids compare as text, so ``101`` and ``"101"``
match. An answer that matches no sample is an error listing the ids: answers scored against the wrong
samples file would otherwise be silently dropped.

:func:`write_llava_med_answers` writes predictions in the same layout. ``answer_id`` is a hash of the
model id, the question id and the answer (LLaVA-Med draws a random one), so the same predictions give
the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainvlm.core.jsonio import write_jsonl
from brainvlm.data.adapters.llava_med import prompt_text

ANSWER_FIELDS = ("question_id", "prompt", "text", "answer_id", "model_id")
MAX_LISTED = 10


def is_answer_file(records: Sequence[tuple[int, dict]]) -> bool:
    """Whether a JSONL file's first object is a LLaVA-Med answer (``question_id`` and ``text``, no ``id``)."""
    if not records:
        return False
    first = records[0][1]
    return "question_id" in first and "text" in first and "id" not in first and "prediction" not in first


def _key(value: Any) -> str | None:
    """A question id as matching text; None for anything but an integer or a non-empty string."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        return None
    return str(value)


def question_key(sample: Mapping[str, Any]) -> str:
    """What answers are matched on: ``metadata.question_id`` as text, else the sample id."""
    value = sample.get("metadata", {}).get("question_id", sample["id"])
    key = _key(value)
    if key is None:
        raise ValueError(f"sample {sample['id']!r}: $.metadata.question_id is {value!r}; use an integer or "
                         "a non-empty string")
    return key


def samples_by_question(samples: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Question key -> sample id; two samples with one key is an error naming both."""
    out: dict[str, str] = {}
    for sample in samples:
        key = question_key(sample)
        if key in out:
            raise ValueError(f"samples {out[key]!r} and {sample['id']!r} share question id {key!r}; answers "
                             "cannot be matched: give each sample its own metadata.question_id")
        out[key] = sample["id"]
    return out


def read_answers(records: Sequence[tuple[int, dict]], path: str | Path) -> dict[str, str]:
    """Question key -> answer text of answer lines; a line without them or a repeated id is an error."""
    answers: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, record in records:
        key, text = _key(record.get("question_id")), record.get("text")
        if key is None or not isinstance(text, str):
            raise ValueError(f"{path}:{number}: expected a LLaVA-Med answer {{\"question_id\": int or str, "
                             f"\"text\": str, ...}} like line {records[0][0]}, got keys {sorted(record)}; "
                             "keep one layout per file")
        if key in lines:
            raise ValueError(f"{path}: question_id {key!r} is answered on lines {lines[key]} and {number}; "
                             "keep one answer per question")
        lines[key] = number
        answers[key] = text
    return answers


def predictions_from_answers(records: Sequence[tuple[int, dict]], samples: Sequence[Mapping[str, Any]] | None,
                             path: str | Path) -> dict[str, str]:
    """Sample id -> predicted text of a LLaVA-Med answer file, matched on question ids.

    Raises:
        ValueError: no samples given; an answer whose question id matches no sample (ids listed).
    """
    if samples is None:
        raise ValueError(f"{path}: a LLaVA-Med answer file is matched to samples by question id; pass the "
                         "samples (load_predictions(path, samples))")
    answers = read_answers(records, path)
    by_question = samples_by_question(samples)
    unmatched = [key for key in answers if key not in by_question]
    if unmatched:
        listed = f"{unmatched[:MAX_LISTED]}{' ...' if len(unmatched) > MAX_LISTED else ''}"
        raise ValueError(f"{path}: {len(unmatched)} of {len(answers)} answers have a question_id that "
                         f"matches no sample: {listed}; check that the "
                         "answers are for this samples file (same split and domain) and that its samples "
                         "keep the question ids in metadata.question_id")
    return {by_question[key]: text for key, text in answers.items()}


def answer_id(model_id: str, question: str, text: str) -> str:
    """A stable 22-character answer id (LLaVA-Med's shortuuid length) from the model, question and answer."""
    return hashlib.sha256(f"{model_id}\n{question}\n{text}".encode()).hexdigest()[:22]


def answer_record(sample: Mapping[str, Any], text: str, model_id: str) -> dict:
    """One LLaVA-Med answer line for a sample and its predicted text."""
    question_id = sample.get("metadata", {}).get("question_id", sample["id"])
    return {"question_id": question_id, "prompt": prompt_text(sample), "text": text,
            "answer_id": answer_id(model_id, question_key(sample), text), "model_id": model_id}


def write_llava_med_answers(samples: Sequence[Mapping[str, Any]], predictions: Mapping[str, str],
                            path: str | Path, model_id: str) -> Path:
    """Write predictions (sample id -> text) as a LLaVA-Med answer file, one line per sample in order.

    Raises:
        ValueError: a sample without a prediction, or a prediction for no sample (ids listed).
    """
    ids = [s["id"] for s in samples]
    missing = [i for i in ids if i not in predictions]
    extra = sorted(set(predictions) - set(ids))
    if missing or extra:
        raise ValueError(f"{path}: {len(missing)} samples have no prediction ({missing[:MAX_LISTED]}) and "
                         f"{len(extra)} predictions match no sample ({extra[:MAX_LISTED]}); pass the samples "
                         "that were answered and their predictions")
    samples_by_question(samples)  # refuse files whose answers could not be matched back
    return write_jsonl([answer_record(s, predictions[s["id"]], model_id) for s in samples], path)
