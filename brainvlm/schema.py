"""The canonical sample format (docs/sample_format.md) and its validator.

Every problem is reported, not just the first, as a :class:`ValidationIssue` carrying the file, the
1-based line, the sample id and the JSON path (``$.conversations[2].content[1].image_path``).
``main_validate`` is the command line: ``python -m brainvlm validate FILE... [--image-root DIR]``.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

SPLITS = ("train", "val", "test")
TASK_KINDS = ("comparison_categorical", "comparison_numerical", "classification", "vqa", "report", "caption",
              "concepts")
COMPARISON_KINDS = ("comparison_categorical", "comparison_numerical")
ROLES = ("system", "user", "assistant")
MODALITIES = ("sMRI", "dMRI", "fMRI", "mri", "ct", "xray", "ultrasound", "pet", "pathology", "other")
SAMPLE_FIELDS = ("id", "task", "conversations", "metadata")
TURN_FIELDS = ("role", "content")
PART_FIELDS = {"text": ("type", "text"), "image": ("type", "image_path", "modality")}
LLAVA_ROLES = {"human": "user", "gpt": "assistant"}
IMAGE_TOKEN = re.compile(r"<image[^<>\s]*>")  # <image>, <image_sMRI>, <image_1>
COMPARISON_ID = re.compile(r"^.+_comparison_(?P<split>[A-Za-z]+)_\d{6}$")
ISSUE_COLUMNS = ("file", "line", "sample_id", "path", "message")


@dataclass(frozen=True)
class ValidationIssue:
    """One problem: where it is (file, line, sample id, JSON path) and what is wrong."""

    file: str
    line: int | None
    sample_id: str | None
    path: str
    message: str

    def __str__(self) -> str:
        name = self.file or "<sample>"
        where = f"{name}:{self.line}" if self.line is not None else name
        return f"{where} [{self.sample_id if self.sample_id is not None else '?'}] {self.path}: {self.message}"


class _Issues(list):
    """Collects issues of one sample; ``add(path, message)``."""

    def __init__(self, sample_id: str | None) -> None:
        super().__init__()
        self.sample_id = sample_id

    def add(self, path: str, message: str) -> None:
        self.append(ValidationIssue("", None, self.sample_id, path, message))


# ---------------------------------------------------------------------------------------- samples
def validate_sample(sample: Any, image_root: str | Path | None = None,
                    expected_split: str | None = None) -> list[ValidationIssue]:
    """Check one sample against the canonical format; return every problem found (empty: valid).

    Args:
        sample: the parsed JSON object.
        image_root: when given, every image must exist under it (symlinks may not lead outside it).
        expected_split: the split the sample must belong to (e.g. from its file name).

    Returns:
        The issues, with ``file`` empty and ``line`` None (``validate_file`` fills them in).
    """
    if not isinstance(sample, dict):
        return [ValidationIssue("", None, None, "$", f"a sample must be a JSON object, got {_kind(sample)}")]
    sample_id = sample.get("id") if isinstance(sample.get("id"), str) else None
    issues = _Issues(sample_id)
    _check_top(sample, issues)
    turns = sample.get("conversations")
    if isinstance(turns, list):
        _check_turns(turns, issues, None if image_root is None else Path(image_root))
    metadata = sample.get("metadata")
    if isinstance(metadata, dict):
        _check_metadata(sample, metadata, expected_split, issues)
    return list(issues)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _check_top(sample: dict, issues: _Issues) -> None:
    for key in sorted(set(sample) - set(SAMPLE_FIELDS)):
        issues.add(f"$.{key}", f"unknown field '{key}'; a sample has only {list(SAMPLE_FIELDS)} "
                               "(put extra information in metadata)")
    for key in SAMPLE_FIELDS:
        if key not in sample:
            issues.add(f"$.{key}", "required field missing")
    if "id" in sample and not (isinstance(sample["id"], str) and sample["id"].strip()):
        issues.add("$.id", f"id must be a non-empty string, got {json.dumps(sample['id'])}")
    task = sample.get("task")
    if "task" in sample and task not in TASK_KINDS:
        issues.add("$.task", f"unknown task {json.dumps(task)}; expected one of {list(TASK_KINDS)}")
    if "conversations" in sample and not (isinstance(sample["conversations"], list) and sample["conversations"]):
        issues.add("$.conversations", f"conversations must be a non-empty list of turns, "
                                      f"got {_kind(sample['conversations'])}" +
                   (" (empty)" if sample["conversations"] == [] else ""))
    if "metadata" in sample and not isinstance(sample["metadata"], dict):
        issues.add("$.metadata", f"metadata must be an object, got {_kind(sample['metadata'])}")


# ------------------------------------------------------------------------------------------ turns
def _check_turns(turns: list, issues: _Issues, image_root: Path | None) -> None:
    roles = []
    for i, turn in enumerate(turns):
        where = f"$.conversations[{i}]"
        if not isinstance(turn, dict):
            issues.add(where, f"a turn must be an object with role and content, got {_kind(turn)}")
            roles.append(None)
            continue
        roles.append(_check_role(turn, where, issues))
        for key in sorted(set(turn) - set(TURN_FIELDS)):
            issues.add(f"{where}.{key}", f"unknown turn field '{key}'; a turn has only role and content")
        _check_content(turn, roles[-1], where, issues, image_root)
    _check_order(roles, issues)


def _check_role(turn: dict, where: str, issues: _Issues) -> str | None:
    """The turn's role if valid, else None (and an issue)."""
    if "role" not in turn:
        issues.add(f"{where}.role", "required field missing (user, assistant or system)")
        return None
    role = turn["role"]
    if role in ROLES:
        return role
    if isinstance(role, str) and role.lower() in ROLES:
        issues.add(f"{where}.role", f"role '{role}' must be lowercase: use '{role.lower()}'")
    elif role in LLAVA_ROLES:
        issues.add(f"{where}.role", f"role '{role}' is LLaVA-classic; use '{LLAVA_ROLES[role]}' "
                                    "(convert with brainvlm.tasks.from_llava_classic)")
    else:
        issues.add(f"{where}.role", f"unknown role {json.dumps(role)}; expected one of {list(ROLES)}")
    return None


def _check_order(roles: list[str | None], issues: _Issues) -> None:
    """System only first; then user/assistant alternating, starting with user, ending with assistant."""
    for i, role in enumerate(roles):
        if role == "system" and i > 0:
            issues.add(f"$.conversations[{i}].role", "a system turn is only allowed as the first turn")
    start = 1 if roles and roles[0] == "system" else 0
    for i in range(start, len(roles)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if roles[i] is None or roles[i] == "system" or roles[i] == expected:
            continue
        what = "the first turn (after an optional system turn)" if i == start else f"turn {i}"
        issues.add(f"$.conversations[{i}].role", f"{what} must be '{expected}' (user and assistant "
                                                  f"alternate, starting with user), got '{roles[i]}'")
    if len(roles) > start and roles[-1] not in (None, "assistant"):
        issues.add(f"$.conversations[{len(roles) - 1}].role",
                   f"the conversation must end with an assistant turn, got '{roles[-1]}'")


def _check_content(turn: dict, role: str | None, where: str, issues: _Issues, image_root: Path | None) -> None:
    if "content" not in turn:
        issues.add(f"{where}.content", "required field missing (a list of text and image parts)")
        return
    content = turn["content"]
    if isinstance(content, str):
        issues.add(f"{where}.content", 'content must be a list of parts like {"type": "text", "text": ...}, '
                                       "got a plain string")
        return
    if not isinstance(content, list) or not content:
        issues.add(f"{where}.content", f"content must be a non-empty list of parts, got {_kind(content)}"
                   + (" (empty)" if content == [] else ""))
        return
    for j, part in enumerate(content):
        _check_part(part, role, f"{where}.content[{j}]", issues, image_root)


def _check_part(part: Any, role: str | None, where: str, issues: _Issues, image_root: Path | None) -> None:
    if not isinstance(part, dict):
        issues.add(where, f"a content part must be an object, got {_kind(part)}")
        return
    kind = part.get("type")
    if kind not in PART_FIELDS:
        issues.add(f"{where}.type", _part_type_message(kind))
        return
    for key in sorted(set(part) - set(PART_FIELDS[kind])):
        issues.add(f"{where}.{key}", f"unknown field '{key}' in a {kind} part; it has only "
                                     f"{list(PART_FIELDS[kind])}")
    if kind == "text":
        _check_text(part, where, issues)
        return
    if role in ("assistant", "system"):
        issues.add(where, f"{role} turns may not contain images; images belong in user turns")
    modality = part.get("modality")
    if modality not in MODALITIES:
        issues.add(f"{where}.modality", "required field missing" if "modality" not in part else
                   f"unknown modality {json.dumps(modality)}; expected one of {list(MODALITIES)}")
    _check_image_path(part, where, issues, image_root)


def _part_type_message(kind: Any) -> str:
    if isinstance(kind, str) and kind.startswith("image_"):
        return (f"modality-specific part type '{kind}': use type 'image' with "
                f"modality '{kind[len('image_'):]}' (image parts are generic)")
    if kind is None:
        return "required field missing ('text' or 'image')"
    return f"unknown part type {json.dumps(kind)}; expected 'text' or 'image'"


def _check_text(part: dict, where: str, issues: _Issues) -> None:
    text = part.get("text")
    if not isinstance(text, str) or not text:
        issues.add(f"{where}.text", "required field missing" if "text" not in part
                   else f"text must be a non-empty string, got {_kind(text)}")
        return
    for token in sorted(set(IMAGE_TOKEN.findall(text))):
        if token == "<image>":
            issues.add(f"{where}.text", "literal '<image>' in text: images are parts "
                                        '({"type": "image", ...}), not tokens')
        else:
            issues.add(f"{where}.text", f"modality-specific image token '{token}' in text: use an image part "
                                        "with a modality field instead")


def _check_image_path(part: dict, where: str, issues: _Issues, image_root: Path | None) -> None:
    path = part.get("image_path")
    where = f"{where}.image_path"
    if not isinstance(path, str) or not path:
        issues.add(where, "required field missing" if "image_path" not in part
                   else f"image_path must be a non-empty string, got {_kind(path)}")
        return
    if "\\" in path:
        issues.add(where, f"'{path}' contains a backslash; write paths with forward slashes")
    elif path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        issues.add(where, f"absolute image path '{path}'; paths are relative to the image root")
    elif posixpath.normpath(path).split("/")[0] == "..":
        issues.add(where, f"image path '{path}' leaves the image root (..)")
    elif image_root is not None:
        _check_image_file(path, where, issues, image_root)


def _check_image_file(path: str, where: str, issues: _Issues, image_root: Path) -> None:
    full = image_root / path
    if not full.exists():
        issues.add(where, f"image not found under the image root: '{path}'")
    elif not full.resolve().is_relative_to(image_root.resolve()):
        issues.add(where, f"image path '{path}' resolves outside the image root (through a symlink)")


# --------------------------------------------------------------------------------------- metadata
def _check_metadata(sample: dict, metadata: dict, expected_split: str | None, issues: _Issues) -> None:
    split = metadata.get("split")
    if "split" not in metadata:
        issues.add("$.metadata.split", f"required field missing (one of {list(SPLITS)})")
    elif split not in SPLITS:
        issues.add("$.metadata.split", f"unknown split {json.dumps(split)}; expected one of {list(SPLITS)}")
    elif expected_split is not None and split != expected_split:
        issues.add("$.metadata.split", f"'{split}' but the file name says '{expected_split}'")
    match = COMPARISON_ID.match(sample["id"]) if isinstance(sample.get("id"), str) else None
    if match and split in SPLITS and match["split"] != split:
        issues.add("$.id", f"the id says split '{match['split']}' but metadata.split is '{split}'")
    references = metadata.get("reference_subjects")
    if references is not None and (not isinstance(references, list)
                                   or not all(isinstance(r, str) for r in references)):
        issues.add("$.metadata.reference_subjects", "reference_subjects must be a list of subject ids")
        references = None
    query = metadata.get("query_subject")
    if references and query in references:
        issues.add("$.metadata.query_subject", f"'{query}' is also one of the reference subjects")
    if sample.get("task") in COMPARISON_KINDS:
        _check_comparison(sample, metadata, references, issues)


def _check_comparison(sample: dict, metadata: dict, references: list | None, issues: _Issues) -> None:
    """Comparison samples name their subjects and show one reference image turn per reference subject."""
    for key in ("query_subject", "reference_subjects", "target"):
        if key not in metadata:
            issues.add(f"$.metadata.{key}", f"required field missing for task {sample['task']}")
    target = metadata.get("target")
    if sample["task"] == "comparison_numerical" and "target" in metadata and (
            isinstance(target, bool) or not isinstance(target, (int, float))):
        issues.add("$.metadata.target", f"a comparison_numerical target must be a number, got {_kind(target)}")
    if sample["task"] == "comparison_categorical" and "target" in metadata and not isinstance(target, str):
        issues.add("$.metadata.target", f"a comparison_categorical target must be a string, got {_kind(target)}")
    targets = metadata.get("reference_targets")
    if references is not None and isinstance(targets, list) and len(targets) != len(references):
        issues.add("$.metadata.reference_targets", f"{len(targets)} reference targets for "
                                                   f"{len(references)} reference subjects")
    turns = sample.get("conversations")
    if references is None or not isinstance(turns, list):
        return
    with_images = [t for t in turns if isinstance(t, dict) and isinstance(t.get("content"), list)
                   and any(isinstance(p, dict) and p.get("type") == "image" for p in t["content"])]
    n_reference_turns = max(len(with_images) - 1, 0)  # the last turn with an image is the query
    if n_reference_turns != len(references):
        issues.add("$.metadata.reference_subjects", f"{len(references)} reference subjects but "
                                                    f"{n_reference_turns} reference image turns")


# ------------------------------------------------------------------------------------------- files
def split_from_name(path: str | Path) -> str | None:
    """The split a file name declares: ``train.jsonl`` or ``..._train.jsonl`` -> ``train``; else None."""
    stem = Path(path).name.split(".")[0]
    for split in SPLITS:
        if stem == split or stem.endswith(f"_{split}"):
            return split
    return None


def _records(path: Path) -> tuple[list[tuple[int | None, Any]], list[ValidationIssue]]:
    """Parsed samples with their line (None inside a JSON array file) and the parse problems."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], [ValidationIssue(name, None, None, "$", "file not found")]
    except UnicodeDecodeError as exc:
        return [], [ValidationIssue(name, None, None, "$", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
    if text.lstrip().startswith("["):
        try:
            array = json.loads(text)
        except json.JSONDecodeError as exc:
            return [], [ValidationIssue(name, exc.lineno, None, "$", f"invalid JSON: {exc.msg} (column {exc.colno})")]
        return [(None, item) for item in array], []
    single = _single_object(text)
    if single is not None:  # one pretty-printed sample (the files under samples/)
        return [single], []
    records, problems = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(ValidationIssue(name, number, None, "$", f"invalid JSON: {exc.msg} (column {exc.colno})"))
    return records, problems


def _single_object(text: str) -> tuple[int, dict] | None:
    """``(first line, object)`` when the whole text is one JSON object spread over several lines."""
    lines = text.strip().split("\n")
    if len(lines) < 2 or not lines[0].lstrip().startswith("{"):
        return None
    try:
        json.loads(lines[0])
        return None  # a JSONL file whose first line is a complete sample
    except json.JSONDecodeError:
        pass
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return (len(text) - len(text.lstrip("\n")) + 1, value) if isinstance(value, dict) else None


def _validate_counted(path: str | Path, image_root: str | Path | None,
                      check_images: bool) -> tuple[list[ValidationIssue], int]:
    """Issues of one file and the number of samples parsed from it."""
    path = Path(path)
    records, issues = _records(path)
    if not records and not issues:
        issues.append(ValidationIssue(str(path), None, None, "$", "no samples in the file"))
    expected = split_from_name(path)
    first_line: dict[str, int | str] = {}
    for index, (line, sample) in enumerate(records):
        found = validate_sample(sample, image_root if check_images else None, expected_split=expected)
        issues.extend(replace(issue, file=str(path), line=line) for issue in found)
        sample_id = sample.get("id") if isinstance(sample, dict) else None
        if not isinstance(sample_id, str):
            continue
        if sample_id in first_line:
            issues.append(ValidationIssue(str(path), line, sample_id, "$.id",
                                          f"duplicate id, first seen at {first_line[sample_id]}"))
        else:
            first_line[sample_id] = f"line {line}" if line is not None else f"item {index}"
    issues.sort(key=lambda i: (i.line if i.line is not None else 0))
    return issues, len(records)


def validate_file(path: str | Path, image_root: str | Path | None = None,
                  check_images: bool = True) -> list[ValidationIssue]:
    """Validate a JSONL file (one sample per line) or a JSON array file; return every issue.

    Args:
        path: the file; its name sets the expected split when it is ``train``/``val``/``test``
            (or ends in ``_train`` etc.).
        image_root: folder the image paths are relative to; without it, image files are not looked up.
        check_images: look up every image under ``image_root``.
    """
    return _validate_counted(path, image_root, check_images)[0]


def validate_files(paths: list[str | Path], image_root: str | Path | None = None,
                   check_images: bool = True) -> pd.DataFrame:
    """Every issue of every file as a table (columns ``ISSUE_COLUMNS``; empty when all are valid)."""
    rows = [vars(issue) for path in paths for issue in validate_file(path, image_root, check_images)]
    frame = pd.DataFrame(rows, columns=list(ISSUE_COLUMNS))
    return frame.astype({"line": "Int64"})


# --------------------------------------------------------------------------------------------- CLI
def main_validate(argv: list[str]) -> int:
    """``brainvlm validate FILE... [--image-root DIR] [--no-check-images]``: print issues; exit 1 if any."""
    parser = argparse.ArgumentParser(prog="brainvlm validate",
                                     description="Check canonical sample files (docs/sample_format.md).")
    parser.add_argument("files", nargs="+", help="JSONL (one sample per line) or JSON array files")
    parser.add_argument("--image-root", default=None, help="folder the image paths are relative to")
    parser.add_argument("--no-check-images", action="store_true", help="do not look up image files")
    args = parser.parse_args(argv)
    check = not args.no_check_images and args.image_root is not None
    n_samples = n_errors = 0
    for path in args.files:
        issues, count = _validate_counted(path, args.image_root, check)
        n_samples += count
        n_errors += len(issues)
        for issue in issues:
            print(issue)
    note = "" if check else " (image files not checked: " + (
        "--no-check-images)" if args.no_check_images else "no --image-root)")
    print(f"{len(args.files)} files, {n_samples} samples, {n_errors} errors{note}")
    return 0 if n_errors == 0 else 1
