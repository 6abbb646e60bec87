"""LLaVA-Med answer files (``question_id``, ``prompt``, ``text``, ``answer_id``, ``model_id``) as predictions.

LLaVA-Med's ``model_vqa`` writes one line per question::

    {"question_id": 101, "prompt": "is there air in the peritoneal cavity?\\n<image>", "text": "no",
     "answer_id": "...", "model_id": "llava-vqa-rad_abd", "metadata": {}}

``brainvlm evaluate`` reads such a file as predictions (``evaluate.load_predictions`` tells the two
layouts apart per file) and matches the whole file one way (:func:`match_answers`), never row by row:

- by question id, when every answer's ``question_id`` is a sample's ``metadata.question_id`` (the sample
  id where a sample has none; ids compare as text, so ``101`` and ``"101"`` are one id);
- otherwise by question text and order of occurrence: LLaVA-Med numbers its questions its own way (its
  VQA-RAD answer files are not numbered by VQA-RAD's ``qid``, yet 59 of their 451 ids equal some ``qid``),
  so the prompt, without the list of options LLaVA-Med appends to closed questions, is matched to the
  samples' questions, the k-th answer to a question going to the k-th sample that asks it.

When neither matches every answer the file is refused, naming the rows: answers scored against the wrong
samples, or half by id and half by text, would otherwise be silently wrong.

:func:`write_llava_med_answers` writes predictions in the same layout. ``answer_id`` is a hash of the
model id, the question id and the answer (LLaVA-Med draws a random one), so the same predictions give
the same bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainvlm.core.jsonio import write_jsonl
from brainvlm.data.adapters.llava import IMAGE_TOKEN
from brainvlm.data.adapters.llava_med import prompt_text

ANSWER_FIELDS = ("question_id", "prompt", "text", "answer_id", "model_id")
MAX_LISTED = 10
# What LLaVA-Med's VQA-RAD test file appends to a closed question (its answer files keep it in "prompt").
OPTIONS = re.compile(r"\s*Please choose from the following \w+ options:\s*\[[^\]]*\]\s*\??\s*$", re.IGNORECASE)


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


@dataclass(frozen=True)
class Answer:
    """One answer line: where it is, its question id (and the id as matching text), the question, the text."""

    line: int
    question_id: int | str
    key: str
    question: str
    text: str


def question_text(prompt: str) -> str:
    """A question as answers and samples are matched on it: ``<image>`` tokens and LLaVA-Med's appended
    list of options (`` Please choose from the following two options: [yes, no]``) removed, whitespace
    collapsed, case folded."""
    text = OPTIONS.sub("", prompt.replace(IMAGE_TOKEN, " "))
    return " ".join(text.split()).casefold()


def read_answers(records: Sequence[tuple[int, dict]], path: str | Path) -> list[Answer]:
    """The answer lines in file order; a line without an id and a text, or an id given twice (``1`` and
    ``"1"`` are one id), is an error naming the lines."""
    answers: list[Answer] = []
    first: dict[str, Answer] = {}
    for number, record in records:
        key, text = _key(record.get("question_id")), record.get("text")
        if key is None or not isinstance(text, str):
            raise ValueError(f"{path}:{number}: expected a LLaVA-Med answer {{\"question_id\": int or str, "
                             f"\"text\": str, ...}} like line {records[0][0]}, got keys {sorted(record)}; "
                             "keep one layout per file")
        if key in first:
            seen = first[key]
            raise ValueError(f"{path}: question_id {seen.question_id!r} (line {seen.line}) and "
                             f"{record['question_id']!r} (line {number}) are one question id (ids compare as "
                             "text); keep one answer per question")
        prompt = record.get("prompt")
        answer = Answer(number, record["question_id"], key, question_text(prompt) if isinstance(prompt, str)
                        else "", text)
        first[key] = answer
        answers.append(answer)
    return answers


def _by_question_id(answers: Sequence[Answer], samples: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """Sample id -> answer text when every answer's id is a sample's question id, else None."""
    keys = {question_key(sample) for sample in samples}
    if not all(answer.key in keys for answer in answers):
        return None
    by_question = samples_by_question(samples)
    return {by_question[answer.key]: answer.text for answer in answers}


def _by_question_text(answers: Sequence[Answer], samples: Sequence[Mapping[str, Any]]
                      ) -> tuple[dict[str, str], list[str]]:
    """Sample id -> answer text, pairing the k-th answer to a question with the k-th sample asking it,
    and a line per answer that cannot be paired so (none when every answer is)."""
    asked: dict[str, list[str]] = defaultdict(list)
    for sample in samples:
        asked[question_text(prompt_text(sample))].append(sample["id"])
    answered: dict[str, list[Answer]] = defaultdict(list)
    for answer in answers:
        answered[answer.question].append(answer)
    matched, problems = {}, []
    for question, group in answered.items():
        ids = asked.get(question, [])
        if len(group) != len(ids):
            why = ("no sample asks it" if not ids else
                   f"{len(ids)} samples ask it and {len(group)} answers answer it, so order cannot pair them")
            problems += [f"line {a.line} (question_id {a.question_id!r}, {a.question[:60]!r}): {why}"
                         for a in group]
            continue
        matched.update({sample_id: answer.text for sample_id, answer in zip(ids, group)})
    return matched, sorted(problems, key=lambda p: int(p.split()[1]))


def _unmatched_ids(answers: Sequence[Answer], samples: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = {question_key(sample) for sample in samples}
    return [f"line {a.line} ({a.question_id!r})" for a in answers if a.key not in keys]


def match_answers(records: Sequence[tuple[int, dict]], samples: Sequence[Mapping[str, Any]] | None,
                  path: str | Path) -> tuple[dict[str, str], str]:
    """Sample id -> predicted text of a LLaVA-Med answer file, and how the file was matched.

    The whole file is matched one way: by ``question_id`` when every answer's id is a sample's question
    id (``question_key``); otherwise by question text (the prompt without LLaVA-Med's list of options) and
    order of occurrence, the k-th answer to a question going to the k-th sample that asks it, as
    LLaVA-Med's own script pairs answers with its test rows by order.

    Returns:
        The predictions and ``"question_id"`` or ``"question_text"``.

    Raises:
        ValueError: no samples; neither way matches every answer (the rows named).
    """
    if samples is None:
        raise ValueError(f"{path}: a LLaVA-Med answer file is matched to samples by question id; pass the "
                         "samples (load_predictions(path, samples))")
    answers = read_answers(records, path)
    by_id = _by_question_id(answers, samples)
    if by_id is not None:
        return by_id, "question_id"
    by_text, problems = _by_question_text(answers, samples)
    if not problems:
        return by_text, "question_text"
    unmatched = _unmatched_ids(answers, samples)
    raise ValueError(
        f"{path}: the answers match the samples neither by question id nor by question text. By id: "
        f"{len(unmatched)} of {len(answers)} answers have a question_id that is no sample's question id "
        f"({_listed(unmatched)}). By text: {len(problems)} of {len(answers)} answers cannot be paired with "
        f"a sample asking their question ({_listed(problems)}). Check that the answers are for this samples "
        "file (same split and domain)")


def predictions_from_answers(records: Sequence[tuple[int, dict]], samples: Sequence[Mapping[str, Any]] | None,
                             path: str | Path) -> dict[str, str]:
    """Sample id -> predicted text of a LLaVA-Med answer file (``match_answers`` without the method)."""
    return match_answers(records, samples, path)[0]


def _listed(rows: Sequence[str]) -> str:
    return f"first ten: {'; '.join(rows[:MAX_LISTED])}{' ...' if len(rows) > MAX_LISTED else ''}"


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
