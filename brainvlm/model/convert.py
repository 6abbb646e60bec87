"""Original-layout LLaVA and LLaVA-Med checkpoints, converted once to the transformers layout.

Checkpoints such as ``microsoft/llava-med-v1.5-mistral-7b`` are published in the layout of the original
LLaVA code (``model_type`` ``llava_mistral``/``llava_llama``; ``mm_vision_tower``, ``mm_projector`` keys),
which the transformers Auto classes cannot load. ``convert`` builds the equivalent
``LlavaForConditionalGeneration``:

- the language model from the checkpoint's own config and weights (``model.*`` -> ``model.language_model.*``,
  ``lm_head`` kept);
- the vision tower from ``mm_vision_tower`` (a hub id, or a local folder given as ``vision_tower`` for
  offline use), with its image processor;
- the projector ``mm_projector.0/2`` -> ``multi_modal_projector.linear_1/2`` (``mlp2x_gelu`` only);
- an ``<image>`` token added to the tokenizer when missing, the embeddings and ``lm_head`` grown by one
  row (the mean of the others), the features of ``mm_vision_select_layer`` and, for ``patch``, without CLS.

Every source tensor must land in the converted model unchanged and every target tensor must be filled;
anything else is an error naming the keys. The result is cached under ``.cache/converted/<hash>`` keyed
by the SHA-256 of the source files and the tower, so a checkpoint is converted once.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch

from brainvlm.core.jsonio import read_json, write_json
from brainvlm.core.paths import CACHE_DIR
from brainvlm.model.weights_files import load_weights_file

CONVERTED_DIR = CACHE_DIR / "converted"
RECORD = "brainvlm_conversion.json"
TEXT_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "hidden_act",
             "sliding_window", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "head_dim",
             "rope_scaling", "attention_bias", "initializer_range")
PROJECTOR = re.compile(r"^model\.mm_projector\.(?P<index>[02])\.(?P<param>weight|bias)$")
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


class ConversionError(ValueError):
    """An original-layout checkpoint brainvlm cannot convert; the message says what and why."""


def is_original_layout(folder: str | Path) -> bool:
    """Whether ``folder`` holds an original-layout LLaVA checkpoint (``mm_vision_tower`` in its config)."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return False
    data = read_json(config)
    return "mm_vision_tower" in data and "vision_config" not in data


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(p for pattern in WEIGHT_FILES for p in folder.glob(pattern))
    if not files:
        raise ConversionError(f"{folder}: no *.safetensors or pytorch_model*.bin weights")
    return files


def _source_hash(folder: Path, tower: str) -> str:
    digest = hashlib.sha256(tower.encode())
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    tower_path = Path(tower)
    if tower_path.is_dir():
        for path in sorted(p for p in tower_path.iterdir() if p.is_file()):
            digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in files:
        part = load_file(str(path)) if path.suffix == ".safetensors" else load_weights_file(path)
        state.update(part)
    return state


def text_config(config: dict[str, Any]) -> Any:
    """The language model's config (Mistral or LLaMA) from an original-layout config."""
    from transformers import AutoConfig

    names = " ".join([str(config.get("model_type", "")), *map(str, config.get("architectures") or [])]).lower()
    kind = "mistral" if "mistral" in names else "llama"
    return AutoConfig.for_model(kind, **{k: config[k] for k in TEXT_KEYS if k in config})


def target_key(key: str, targets: set[str]) -> str | None:
    """Where a source tensor goes in ``LlavaForConditionalGeneration`` (None: no place for it)."""
    projector = PROJECTOR.match(key)
    if projector:
        return f"model.multi_modal_projector.linear_{1 if projector['index'] == '0' else 2}.{projector['param']}"
    if key.startswith("model.vision_tower.vision_tower."):
        inner = key.removeprefix("model.vision_tower.vision_tower.").removeprefix("vision_model.")
        return next((t for t in (f"model.vision_tower.{inner}", f"model.vision_tower.vision_model.{inner}")
                     if t in targets), None)
    if key.startswith("model."):
        candidate = "model.language_model." + key.removeprefix("model.")
        return candidate if candidate in targets else None
    return key if key in targets else None


def _tower_state(tower_model: Any, targets: set[str]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in tower_model.state_dict().items():
        inner = key.removeprefix("vision_model.")
        target = next((t for t in (f"model.vision_tower.{inner}", f"model.vision_tower.vision_model.{inner}")
                       if t in targets), None)
        if target is not None:
            out[target] = value
    return out


def _grow(matrix: torch.Tensor, rows: int) -> torch.Tensor:
    """``matrix`` with rows appended up to ``rows``, each the mean of the existing ones."""
    extra = rows - matrix.shape[0]
    return matrix if extra <= 0 else torch.cat([matrix, matrix.mean(0, keepdim=True).expand(extra, -1)])


def convert(folder: str | Path, vision_tower: str | None = None, out_dir: str | Path | None = None) -> Path:
    """Convert an original-layout LLaVA checkpoint (once; cached) and return the converted folder.

    Args:
        folder: the original-layout checkpoint (config.json with ``mm_vision_tower``, weights, tokenizer).
        vision_tower: the CLIP tower to use instead of ``mm_vision_tower`` (a local folder, for offline use).
        out_dir: where to write (default: ``.cache/converted/<source hash>``).

    Raises:
        ConversionError: an unsupported projector, or tensors that do not map one to one.
    """
    from transformers import (
        AutoImageProcessor,
        AutoTokenizer,
        CLIPVisionModel,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(folder)
    config = read_json(folder / "config.json")
    tower = str(vision_tower or config["mm_vision_tower"])
    out = Path(out_dir) if out_dir else CONVERTED_DIR / _source_hash(folder, tower)[:16]
    if (out / RECORD).is_file():
        return out
    if config.get("mm_projector_type", "linear") != "mlp2x_gelu":
        raise ConversionError(f"{folder}: mm_projector_type {config.get('mm_projector_type', 'linear')!r}; "
                              "transformers' LLaVA has the two-layer GELU projector (mlp2x_gelu) only")
    tower_model = CLIPVisionModel.from_pretrained(tower)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if "<image>" not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    strategy = "default" if config.get("mm_vision_select_feature", "patch") == "patch" else "full"
    text = text_config(config)
    text.vocab_size = max(text.vocab_size, len(tokenizer))
    llava_config = LlavaConfig(vision_config=tower_model.config, text_config=text, image_token_index=image_id,
                               vision_feature_layer=config.get("mm_vision_select_layer", -2),
                               vision_feature_select_strategy=strategy, projector_hidden_act="gelu")
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(llava_config)
    targets = set(model.state_dict())
    source = _read_weights(_weight_files(folder))
    state, unplaced = {}, []
    for key, value in source.items():
        target = target_key(key, targets)
        if target is None:
            unplaced.append(key)
        else:
            state[target] = value
    if not any(k.startswith("model.vision_tower.") for k in state):
        state.update(_tower_state(tower_model, targets))
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key in state:
            state[key] = _grow(state[key], text.vocab_size)
    if "lm_head.weight" not in state and "model.language_model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]  # tied embeddings
    missing = sorted(targets - set(state))
    if unplaced or missing:
        raise ConversionError(f"{folder}: tensors do not map one to one: {len(unplaced)} source tensors have no place "
                              f"({unplaced[:5]}), {len(missing)} model tensors are not filled ({missing[:5]})")
    model.load_state_dict(state, assign=True, strict=True)
    image_processor = AutoImageProcessor.from_pretrained(tower, backend="pil")
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=tower_model.config.patch_size, vision_feature_select_strategy=strategy,
                               num_additional_image_tokens=1, image_token="<image>")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_json({"source": str(folder), "vision_tower": tower, "source_sha256": _source_hash(folder, tower),
                "source_tensors": len(source)}, out / RECORD)
    return out
