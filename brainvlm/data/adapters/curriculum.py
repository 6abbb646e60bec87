"""Curriculum report records (``image``, ``prompt`` with ``<image>``, ``target``, ``stage``, ``mode``) -> canonical ``report`` samples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.llava import IMAGE_TOKEN, text_to_parts


def from_curriculum(record: Mapping[str, Any], index: int, split: str, modality: str = "xray",
                    cohort_name: str = "curriculum", domain: str = "chest") -> dict:
    """A curriculum record (``image``, ``prompt`` with ``<image>``, ``target``, ``stage``, ``mode``).

    Returns a two-turn ``report`` sample with id ``{cohort_name}_report_{split}_{index:06d}``; ``stage`` and
    ``mode`` go into metadata so training can pick a curriculum stage.
    """
    where = f"curriculum record {index}"
    missing = [k for k in ("image", "prompt", "target") if k not in record]
    if missing:
        raise AdapterError(f"{where}: missing key(s) {missing}")
    prompt = str(record["prompt"])
    if IMAGE_TOKEN not in prompt:
        prompt = IMAGE_TOKEN + "\n" + prompt
    user = text_to_parts(prompt, iter([str(record["image"])]), modality, where)
    metadata = {"split": split, "domain": domain, "stage": record.get("stage"), "mode": record.get("mode")}
    return {"id": f"{cohort_name}_report_{split}_{index:06d}", "task": "report",
            "conversations": [{"role": "user", "content": user},
                              {"role": "assistant", "content": [{"type": "text", "text": str(record["target"])}]}],
            "metadata": metadata}
