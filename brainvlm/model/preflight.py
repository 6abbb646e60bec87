"""The pre-flight check before training: for a few samples, image parts, rendered image token strings,
expanded image token ids and the model's image feature rows agree, and the labels decode to exactly the
assistant replies. It catches the classic "image features and image tokens do not match" and
"tokenization mismatch" failures before step 1, naming the sample and the counts.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from brainvlm.model.collate import (
    IGNORE_INDEX,
    IMAGE_KEYS,
    CollateConfig,
    content_parts,
    encode_sample,
    image_token_id,
)
from brainvlm.model.templates import AssistantMaskError


class PreflightError(ValueError):
    """Image parts, image tokens, image features or labels of a sample disagree."""


def _feature_rows(output: Any) -> int:
    features = getattr(output, "pooler_output", output)
    if torch.is_tensor(features):
        features = [features]
    return sum(int(np.prod(f.shape[:-1])) for f in features)


def image_feature_rows(model: Any, encoded: dict) -> int:
    """Rows of image features the model computes for an encoded sample's images (0 without images)."""
    if "pixel_values" not in encoded:
        return 0
    accepted = inspect.signature(model.get_image_features).parameters
    kwargs = {k: encoded[k] for k in IMAGE_KEYS if k in encoded and k in accepted}
    device, dtype = model.device, getattr(model, "dtype", torch.float32)
    kwargs = {k: v.to(device) for k, v in kwargs.items()}
    with torch.no_grad():
        output = model.get_image_features(pixel_values=encoded["pixel_values"].to(device, dtype), **kwargs)
    return _feature_rows(output)


def _squash(text: str) -> str:
    return "".join(text.split())


def _rendered_image_strings(sample: dict, processor: Any) -> int:
    """How often the image token string appears in the chat template's rendering (no images loaded)."""
    messages = [{"role": turn.get("role"),
                 "content": [{"type": "image"} if p.get("type") == "image" else {"type": "text", "text": p.get("text", "")}
                             for p in content_parts(turn)]} for turn in sample.get("conversations", [])]
    return processor.apply_chat_template(messages, tokenize=False).count(processor.image_token)


def _preflight_row(sample: dict, processor: Any, model: Any, config: CollateConfig, image_cache: Any) -> dict:
    sample_id = str(sample.get("id", "<no id>"))
    parts = [p for turn in sample.get("conversations", []) for p in content_parts(turn)]
    n_parts = sum(1 for p in parts if p.get("type") == "image")
    token = processor.image_token
    in_text = sum(p.get("text", "").count(token) for p in parts if p.get("type") != "image")
    rendered = _rendered_image_strings(sample, processor)
    if in_text or rendered != n_parts:
        raise PreflightError(f"sample {sample_id}: {n_parts} image parts but {rendered} image token strings "
                             f"{token!r} in the rendered conversation ({in_text} inside text parts); remove "
                             f"{token!r} from the text and put an image part where the image goes")
    try:
        encoded = encode_sample(sample, processor, replace(config, max_length=None), image_cache)
    except AssistantMaskError as error:
        raise PreflightError(str(error)) from error
    ids = encoded["input_ids"]
    n_tokens = int((ids == image_token_id(processor)).sum())
    n_features = image_feature_rows(model, encoded)
    if (n_parts == 0) != (n_tokens == 0) or n_tokens != n_features:
        raise PreflightError(f"sample {sample_id}: image features and image tokens do not match: image parts "
                             f"{n_parts}, image tokens {n_tokens}, image features {n_features}; the processor's "
                             "patch_size / vision_feature_select_strategy must agree with the model config")
    labelled = ids[encoded["labels"] != IGNORE_INDEX]
    decoded = processor.tokenizer.decode(labelled, skip_special_tokens=True)
    answers = "".join(p.get("text", "") for turn in sample.get("conversations", []) if turn.get("role") == "assistant"
                      for p in content_parts(turn) if p.get("type") == "text")
    if _squash(decoded) != _squash(answers):
        raise PreflightError(f"sample {sample_id}: tokenization mismatch: the labels decode to {decoded!r} but "
                             f"the assistant turns say {answers!r}")
    return {"id": sample_id, "image_parts": n_parts, "image_tokens": n_tokens, "image_features": n_features,
            "assistant_tokens": len(labelled), "length": ids.numel(),
            "fits": config.max_length is None or ids.numel() <= config.max_length}


def preflight(samples: list[dict], processor: Any, model: Any, config: CollateConfig, n: int = 8,
              image_cache: Any = None) -> pd.DataFrame:
    """Check ``n`` evenly spaced samples against the processor and the model before training.

    For each: image parts, image token strings in the rendered conversation, image token ids after
    expansion and image feature rows from the model's vision path must agree; the labels must cover
    some tokens and decode to exactly the assistant replies.

    Returns:
        one row per checked sample: ``id``, ``image_parts``, ``image_tokens``, ``image_features``,
        ``assistant_tokens``, ``length``, ``fits`` (within ``max_length``).

    Raises:
        PreflightError: naming the sample id and the counts that disagree.
    """
    if not samples:
        raise PreflightError("preflight got no samples")
    picks = np.unique(np.linspace(0, len(samples) - 1, min(n, len(samples))).round().astype(int))
    return pd.DataFrame([_preflight_row(samples[i], processor, model, config, image_cache) for i in picks])
