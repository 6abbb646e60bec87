"""LLaVA-classic records (``id``, ``image``/``images``, ``conversations`` of ``from``/``value``) -> canonical samples.

:func:`text_to_parts` (text with ``<image>`` tokens -> ordered text and image parts) is shared by the
adapters of formats that mark images with ``<image>``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from brainvlm.core.jsonio import JsonError, read_records
from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.images import check_image_path

IMAGE_TOKEN = "<image>"


def text_to_parts(text: str, images: Iterator[str], modality: str, where: str) -> list[dict]:
    """Text split at ``<image>``: text and image parts in their original order."""
    parts: list[dict] = []
    for k, piece in enumerate(text.split(IMAGE_TOKEN)):
        if k > 0:
            path = next(images, None)
            if path is None:
                raise AdapterError(f"{where}: more {IMAGE_TOKEN} tokens than images")
            parts.append({"type": "image", "modality": modality, "image_path": path})
        if piece.strip():
            parts.append({"type": "text", "text": piece.strip()})
    return parts


def from_llava_classic(record: Mapping[str, Any], split: str, modality: str = "other",
                       task: str = "vqa", where: str | None = None) -> dict:
    """A LLaVA-classic record (``id``, ``image``/``images``, ``conversations`` of ``from``/``value``).

    Each ``<image>`` in a human turn becomes the next image part; with no token at all, the images open
    the first human turn (LLaVA's convention). Other top-level keys go into ``metadata``. ``where`` names
    the record in errors (default: its id).
    """
    where = f"{where} (id {record.get('id', '?')!r})" if where else f"LLaVA record {record.get('id', '?')!r}"
    if isinstance(record.get("images"), str):
        raise AdapterError(f"{where}: images is a string; give a list of paths (or one path as image)")
    images = list(record.get("images") or ([record["image"]] if record.get("image") else []))
    turns = record.get("conversations") or []
    if not isinstance(turns, list) or not all(isinstance(t, Mapping) for t in turns):
        raise AdapterError(f"{where}: conversations must be a list of {{\"from\", \"value\"}} objects")
    if not all(isinstance(image, str) and image for image in images):
        raise AdapterError(f"{where}: images {images!r}; give each image as a path relative to the image root")
    n_tokens = sum(str(t.get("value", "")).count(IMAGE_TOKEN) for t in turns)
    if n_tokens not in (0, len(images)):
        raise AdapterError(f"{where}: {n_tokens} {IMAGE_TOKEN} tokens for {len(images)} images")
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    stream, out = iter(images), []
    for i, turn in enumerate(turns):
        role = roles.get(turn.get("from"))
        if role is None:
            raise AdapterError(f"{where}: conversations[{i}].from is {turn.get('from')!r}; expected human/gpt/system")
        text = str(turn.get("value", ""))
        if n_tokens == 0 and role == "user" and not any(t["role"] == "user" for t in out):
            text = IMAGE_TOKEN * len(images) + "\n" + text
        out.append({"role": role, "content": text_to_parts(text, stream, modality, f"{where} conversations[{i}]")})
    extra = {k: v for k, v in record.items() if k not in ("id", "image", "images", "conversations")}
    return {"id": str(record.get("id", "")), "task": task, "conversations": out,
            "metadata": {**extra, "split": split}}


def record_locations(path: str | Path) -> list[tuple[str, Any]]:
    """``(where, record)`` of every record of a JSON array, JSONL or single-object file, in order.

    ``where`` is ``file:line`` (JSONL) or ``file item [i]`` (JSON array).

    Raises:
        AdapterError: a file that is not JSON, a record that is not an object, or no record at all.
    """
    try:
        records = read_records(path)
    except JsonError as exc:
        raise AdapterError(str(exc)) from None
    located = [(f"{path}:{line}" if line is not None else f"{path} item [{index}]", record)
               for index, (line, record) in enumerate(records)]
    for where, record in located:
        if not isinstance(record, dict):
            raise AdapterError(f"{where}: {type(record).__name__}, expected a LLaVA record (an object)")
    if not located:
        raise AdapterError(f"{path}: no records; expected a JSON array or JSON Lines of LLaVA records")
    return located


def read_llava_classic(path: str | Path, split: str, image_root: str | Path | None = None,
                       modality: str = "other", task: str = "vqa") -> list[dict]:
    """Every LLaVA-classic record of a file (JSON array or JSONL) as a canonical sample, in file order.

    Args:
        split: ``train``/``val``/``test``, written to every sample's metadata.
        image_root: when given, every image must exist under it and may not be a symlink out of it; an
            absolute path or one with ``..`` out of the root is refused always.

    Raises:
        AdapterError: naming the file and line (or item) of the record.
    """
    samples = []
    for where, record in record_locations(path):
        sample = from_llava_classic(record, split, modality, task, where)
        for turn in sample["conversations"]:
            for part in turn["content"]:
                if part["type"] == "image":
                    check_image_path(str(part["image_path"]), image_root, f"{where} (id {record.get('id', '?')!r})")
        samples.append(sample)
    return samples
