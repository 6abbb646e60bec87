"""LLaVA-classic records (``id``, ``image``/``images``, ``conversations`` of ``from``/``value``) -> canonical samples.

:func:`text_to_parts` (text with ``<image>`` tokens -> ordered text and image parts) is shared by the
adapters of formats that mark images with ``<image>``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from brainvlm.data.adapters import AdapterError

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
                       task: str = "vqa") -> dict:
    """A LLaVA-classic record (``id``, ``image``/``images``, ``conversations`` of ``from``/``value``).

    Each ``<image>`` in a human turn becomes the next image part; with no token at all, the images open
    the first human turn (LLaVA's convention). Other top-level keys go into ``metadata``.
    """
    where = f"LLaVA record {record.get('id', '?')!r}"
    images = list(record.get("images") or ([record["image"]] if record.get("image") else []))
    turns = record.get("conversations") or []
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
