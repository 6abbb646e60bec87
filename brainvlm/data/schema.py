"""The canonical sample format (docs/sample_format.md) and the check of one sample against it.

Every problem is reported, not just the first, as a :class:`ValidationIssue` carrying the file, the
1-based line, the sample id and the JSON path (``$.conversations[2].content[1].image_path``).
Files are checked by :mod:`brainvlm.data.validate`.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainvlm.data.image_paths import leaves_root

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
                                    "(convert with brainvlm.data.adapters.llava.from_llava_classic)")
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
    if not text.strip():
        issues.add(f"{where}.text", f"text is only whitespace ({text!r}); write the text or drop the part")
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
    elif leaves_root(image_root, path):
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
