"""Canonical samples to model inputs: the chat template, labels on assistant tokens only, images in order.

One sample goes through ``encode_sample``: its image parts are loaded (``brainvlm.data.views.load_image``)
and handed to the processor as Hugging Face image parts in conversation order, the processor's chat
template renders the conversation and expands each image token, and the template's assistant mask
(after that expansion) decides the labels: every assistant reply and its end-of-turn token, nothing
else. ``Collator`` pads a list of samples to the longest of them; ``brainvlm.model.preflight`` checks a few
samples against the model before training starts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from brainvlm.data.image_paths import leaves_root
from brainvlm.model.templates import require_assistant_tokens

if TYPE_CHECKING:
    from brainvlm.data.views import ViewConfig

IGNORE_INDEX = -100
TRUNCATION_MODES = ("error", "drop")
PADDING_SIDES = ("right", "left")
# Per-image tensors some processors return beside pixel_values (LLaVA-NeXT, LLaVA-OneVision).
IMAGE_KEYS = ("image_sizes", "batch_num_images")
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "pixel_values") + IMAGE_KEYS


def _default_view() -> ViewConfig:
    from brainvlm.data.views import ViewConfig

    return ViewConfig()


@dataclass
class CollateConfig:
    """How samples become model inputs.

    Args:
        image_root: directory that image paths are relative to (they may not leave it).
        view: ``brainvlm.data.views.ViewConfig`` (or a dict of its fields) turning a volume into a 2D image.
        max_length: longest sequence allowed (tokens, after image expansion); None = no limit.
        on_truncation: ``error`` raises on a longer sample, ``drop`` leaves it out and records its id.
            Nothing is ever cut: a cut would split an image's token block or the answer.
        pad_to_multiple_of: round the padded length up to a multiple of this.
    """

    image_root: str | Path
    view: ViewConfig = field(default_factory=_default_view)
    max_length: int | None = None
    on_truncation: str = "error"
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.view, dict):  # from a params file
            from brainvlm.data.views import ViewConfig

            self.view = ViewConfig(**self.view)
        if self.on_truncation not in TRUNCATION_MODES:
            raise ValueError(f"CollateConfig.on_truncation={self.on_truncation!r}: use one of {TRUNCATION_MODES}")
        for name in ("max_length", "pad_to_multiple_of"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"CollateConfig.{name}={value!r}: use a positive int or None")


class TruncationError(ValueError):
    """A sample is longer than ``max_length``."""


def image_token_id(processor: Any) -> int:
    """The id the processor expands image parts into."""
    token_id = getattr(processor, "image_token_id", None)
    if token_id is None:
        token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return int(token_id)


def _image_file(sample_id: str, part: dict, where: str, root: Path) -> Path:
    if not part.get("image_path"):
        raise ValueError(f"sample {sample_id}: {where} is an image part without 'image_path'")
    path = root / part["image_path"]
    if leaves_root(root, part["image_path"]):
        raise ValueError(f"sample {sample_id}: {where}.image_path {part['image_path']!r} leaves the image root; "
                         "image paths must be relative to CollateConfig.image_root")
    if not path.is_file():
        raise FileNotFoundError(f"sample {sample_id}: {where}.image_path {part['image_path']!r} is not a file "
                                f"under the image root {str(root)!r}; check CollateConfig.image_root")
    return path


def content_parts(turn: dict) -> list[dict]:
    content = turn.get("content", [])
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def to_hf_conversation(sample: dict, config: CollateConfig, image_cache: Any = None) -> list[dict]:
    """The sample's turns as Hugging Face chat messages, each image part carrying its loaded PIL image."""
    from brainvlm.data.views import load_image

    sample_id = sample.get("id", "<no id>")
    root = Path(config.image_root).resolve()
    messages = []
    for t, turn in enumerate(sample.get("conversations", [])):
        parts = []
        for p, part in enumerate(content_parts(turn)):
            where = f"$.conversations[{t}].content[{p}]"
            if part.get("type") == "image":
                path = _image_file(sample_id, part, where, root)
                try:
                    image = load_image(path, part.get("modality", "sMRI"), config.view, image_cache)
                except (OSError, EOFError, ValueError) as error:  # VolumeError is a ValueError
                    raise ValueError(f"sample {sample_id}: {where}.image_path: cannot load "
                                     f"{part['image_path']!r}: {error}") from error
                parts.append({"type": "image", "image": image})
            else:
                parts.append({"type": "text", "text": part.get("text", "")})
        messages.append({"role": turn.get("role"), "content": parts})
    return messages


def split_final_answer(messages: list[dict]) -> tuple[list[dict], str | None]:
    """Messages without a final assistant turn, and that turn's text (None when the last turn is not one)."""
    if not messages or messages[-1]["role"] != "assistant":
        return messages, None
    text = "".join(p.get("text", "") for p in messages[-1]["content"] if p["type"] == "text")
    return messages[:-1], text


def _apply_template(processor: Any, messages: list[dict], sample_id: str, prompt_only: bool) -> dict:
    """The processor's encoding of one conversation, as torch tensors.

    The processor is asked for NumPy arrays and they are converted afterwards: with torch tensors,
    transformers builds the assistant mask by iterating over a tensor's elements in Python, which is slower
    (``benchmarks/bench_train.py``, ``brainvlm_nocache``, measures encoding as part of training).
    """
    try:
        out = processor.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_tensors="np", add_generation_prompt=prompt_only,
            return_assistant_tokens_mask=not prompt_only)
    except (ValueError, IndexError, KeyError, TypeError) as error:
        raise ValueError(f"sample {sample_id}: the processor cannot encode it: {error}") from error
    return {key: _to_tensor(value) for key, value in out.items()}


def _to_tensor(value: Any) -> Any:
    return torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value


def _too_long(sample_id: str, ids: torch.Tensor, labels: torch.Tensor | None, n_images: int,
              image_id: int, config: CollateConfig) -> TruncationError:
    answer = int((labels != IGNORE_INDEX).sum()) if labels is not None else 0
    return TruncationError(
        f"sample {sample_id}: {ids.numel()} tokens > max_length {config.max_length} "
        f"({int((ids == image_id).sum())} image tokens from {n_images} images, {answer} answer tokens). Nothing "
        "is cut, since a cut would split an image's tokens or the answer: raise max_length, shorten the "
        "prompt, use fewer images, or set on_truncation='drop'")


def encode_sample(sample: dict, processor: Any, config: CollateConfig, image_cache: Any = None,
                  prompt_only: bool = False) -> dict | None:
    """One canonical sample as model inputs.

    Args:
        sample: canonical sample (``id``, ``conversations``, ``metadata``).
        processor: a processor whose chat template has generation markers (``brainvlm.model.loader.load``).
        config: image root, view and length limit.
        image_cache: optional ``brainvlm.data.volume_cache.VolumeCache`` for NIfTI views.
        prompt_only: drop the final assistant turn and add the generation prompt (for generation).

    Returns:
        ``input_ids``, ``attention_mask`` (1D), ``labels`` (1D; ``-100`` except assistant tokens, not in
        ``prompt_only``), ``pixel_values`` (n_images, 3, H, W; more dims for any-resolution processors)
        and other image tensors when the sample has images, ``id``, ``metadata``, ``n_images``,
        ``target`` (``prompt_only``: the dropped answer); None when the sample is too long and
        ``config.on_truncation == "drop"``.
    """
    sample_id = str(sample.get("id", "<no id>"))
    messages = to_hf_conversation(sample, config, image_cache)
    target = None
    if prompt_only:
        messages, target = split_final_answer(messages)
    n_images = sum(1 for m in messages for p in m["content"] if p["type"] == "image")
    out = _apply_template(processor, messages, sample_id, prompt_only)
    ids, image_id = out["input_ids"][0], image_token_id(processor)
    labels = None
    if not prompt_only:
        mask = out["assistant_masks"][0].bool()
        require_assistant_tokens(mask, f"sample {sample_id}")
        labels = torch.where(mask & (ids != image_id), ids, torch.full_like(ids, IGNORE_INDEX))
    if config.max_length is not None and ids.numel() > config.max_length:
        if config.on_truncation == "drop":
            return None
        raise _too_long(sample_id, ids, labels, n_images, image_id, config)
    encoded = {"id": sample_id, "metadata": sample.get("metadata", {}), "input_ids": ids,
               "attention_mask": out["attention_mask"][0], "n_images": n_images}
    if labels is not None:
        encoded["labels"] = labels
    if prompt_only:
        encoded["target"] = target
    for key in ("pixel_values",) + IMAGE_KEYS:
        if n_images and key in out:
            encoded[key] = out[key]
    return encoded


def _pad_1d(tensor: torch.Tensor, length: int, value: int, side: str) -> torch.Tensor:
    filler = torch.full((length - tensor.numel(),), value, dtype=tensor.dtype)
    return torch.cat([tensor, filler] if side == "right" else [filler, tensor])


def _concat_pixels(pixels: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate over images; any-resolution tensors (n, patches, 3, H, W) are zero-padded on patches."""
    if pixels[0].dim() == 5:
        most = max(p.shape[1] for p in pixels)
        pixels = [torch.nn.functional.pad(p, (0, 0, 0, 0, 0, 0, 0, most - p.shape[1])) for p in pixels]
    return torch.cat(pixels, dim=0)


def pad_batch(encoded: list[dict], pad_token_id: int, padding_side: str = "right",
              pad_to_multiple_of: int | None = None) -> dict:
    """Pad encoded samples to the longest of them (dynamic padding) and stack them into a batch.

    Returns:
        ``input_ids``, ``attention_mask`` and (when encoded) ``labels`` of shape (batch, longest);
        ``pixel_values`` and other image tensors concatenated over all images in sample order; ``ids``
        and ``metadata`` lists; ``targets`` in prompt-only batches.
    """
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side={padding_side!r}: use one of {PADDING_SIDES}")
    longest = max(e["input_ids"].numel() for e in encoded)
    if pad_to_multiple_of:
        longest = math.ceil(longest / pad_to_multiple_of) * pad_to_multiple_of
    batch: dict[str, Any] = {
        "input_ids": torch.stack([_pad_1d(e["input_ids"], longest, pad_token_id, padding_side) for e in encoded]),
        "attention_mask": torch.stack([_pad_1d(e["attention_mask"], longest, 0, padding_side) for e in encoded]),
    }
    if all("labels" in e for e in encoded):
        batch["labels"] = torch.stack([_pad_1d(e["labels"], longest, IGNORE_INDEX, padding_side) for e in encoded])
    pixels = [e["pixel_values"] for e in encoded if "pixel_values" in e]
    if pixels:
        batch["pixel_values"] = _concat_pixels(pixels)
    for key in IMAGE_KEYS:
        if any(key in e for e in encoded):
            batch[key] = torch.cat([e[key] for e in encoded if key in e], dim=0)
    batch["ids"] = [e["id"] for e in encoded]
    batch["metadata"] = [e["metadata"] for e in encoded]
    if any("target" in e for e in encoded):
        batch["targets"] = [e.get("target") for e in encoded]
    return batch


def model_inputs(batch: dict, device: Any = None) -> dict:
    """The tensors of a batch that the model's forward/generate take (no labels, ids or metadata)."""
    return {k: (batch[k].to(device) if device is not None else batch[k]) for k in MODEL_INPUT_KEYS if k in batch}


class Collator:
    """Callable turning a list of canonical samples into a padded batch.

    Args:
        processor: processor with a generation-marked chat template (``brainvlm.model.loader.load``).
        config: ``CollateConfig``.
        prompt_only: generation batches: final assistant turn dropped, generation prompt added.
        padding_side: ``right`` or ``left``; default left for ``prompt_only`` and right for training.
        image_cache: optional ``VolumeCache`` for NIfTI views.
        cache_mb: memory for encoded samples, keyed by their content, so later epochs skip image loading and
            the chat template (half of a CPU training step at the tiny size); filled until full; 0 = off.

    Attributes:
        dropped: ids of samples left out for length (``on_truncation="drop"``), one entry per time.
    """

    def __init__(self, processor: Any, config: CollateConfig, prompt_only: bool = False,
                 padding_side: str | None = None, image_cache: Any = None, cache_mb: float = 256.0) -> None:
        self.processor = processor
        self.config = config
        self.prompt_only = prompt_only
        self.padding_side = padding_side or ("left" if prompt_only else "right")
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side={padding_side!r}: use one of {PADDING_SIDES}")
        self.image_cache = image_cache
        self.pad_token_id = processor.tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; load the model with brainvlm.model.loader.load, which "
                             "sets one, or set processor.tokenizer.pad_token")
        self.dropped: list[str] = []
        self.cache_on, self.cache_left = cache_mb > 0, int(cache_mb * 2 ** 20)  # bytes still free
        self._encoded: dict[str, dict | None] = {}

    def encode(self, sample: dict) -> dict | None:
        """``encode_sample`` of one sample, from memory when it was encoded before."""
        key = json.dumps(sample, sort_keys=True, default=str) if self.cache_on else ""
        if key in self._encoded:
            return self._encoded[key]
        item = encode_sample(sample, self.processor, self.config, self.image_cache, self.prompt_only)
        size = sum(v.numel() * v.element_size() for v in (item or {}).values() if torch.is_tensor(v)) + len(key)
        if key and size <= self.cache_left:
            self._encoded[key] = item
            self.cache_left -= size
        return item

    def __call__(self, samples: list[dict]) -> dict | None:
        """The batch of ``samples``, or None when every one of them was dropped for length."""
        encoded = []
        for sample in samples:
            item = self.encode(sample)
            if item is None:
                self.dropped.append(str(sample.get("id", "<no id>")))
            else:
                encoded.append(item)
        if not encoded:
            return None
        return pad_batch(encoded, self.pad_token_id, self.padding_side, self.config.pad_to_multiple_of)


def token_lengths(samples: list[dict], processor: Any, config: CollateConfig, image_cache: Any = None,
                  progress: bool = False) -> list[int]:
    """Encoded length (tokens, images expanded) of each sample, ignoring ``max_length``."""
    from tqdm.auto import tqdm

    unlimited = replace(config, max_length=None)
    return [encode_sample(s, processor, unlimited, image_cache)["input_ids"].numel()
            for s in tqdm(samples, desc="token lengths", disable=not progress)]
