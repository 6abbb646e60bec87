"""Load any LLaVA-family checkpoint: hub id, local folder, or the tiny default, through the Auto classes.

``load`` is the one way in: it loads the model and processor through the Auto classes, gives the
processor its family's chat template when the checkpoint's own has no ``{% generation %}`` markers
(:mod:`brainvlm.model.templates`), and makes generation stop on the family's end-of-turn token. The tiny
default is built by :mod:`brainvlm.model.tiny`; LoRA is added by :mod:`brainvlm.model.lora`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from brainvlm.model.convert import convert, is_original_layout
from brainvlm.model.templates import FAMILY_TEMPLATES, attach_template, family_from_config, stop_token_ids
from brainvlm.model.weights_files import check_pickled_weights

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from ``float32``/``bfloat16``/``float16`` (or ``fp32``/``bf16``/``fp16``) or a dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {sorted(DTYPES)} or a torch.dtype")
    return DTYPES[dtype]


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\", "\\")) or name.count("/") > 1 or name.endswith("/")


def resolve_source(name_or_path: str | Path) -> str:
    """An existing local directory as a string, or a hub id passed through unchanged.

    Raises:
        FileNotFoundError: the argument is a ``Path`` or looks like one (``./x``, ``/x``, ``a/b/c``) and
            does not exist.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path)
    if isinstance(name_or_path, Path) or _looks_like_path(str(name_or_path)):
        raise FileNotFoundError(
            f"model path {str(name_or_path)!r} does not exist; build the tiny default there with "
            "brainvlm.model.tiny.build_tiny_model(path), or pass a hub id such as "
            "'llava-hf/llava-interleave-qwen-0.5b-hf'")
    return str(name_or_path)


def four_bit_config() -> Any:
    """``BitsAndBytesConfig`` for NF4 4-bit weights with bfloat16 compute; needs CUDA and bitsandbytes."""
    if not torch.cuda.is_available():
        raise RuntimeError("load_in_4bit=True needs a CUDA GPU (bitsandbytes 4-bit kernels) and none is visible "
                           "(torch.cuda.is_available() is False); load without load_in_4bit, or run on a GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError("load_in_4bit=True needs bitsandbytes: pip install bitsandbytes (the 'gpu' extra)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16,
                              bnb_4bit_quant_type="nf4")


def load_processor(source: str, revision: str | None = None, trust_remote_code: bool = False,
                   image_backend: str | None = "pil") -> Any:
    """The checkpoint's processor; its image processor from the ``image_backend`` variant when given.

    The PIL variant needs no torchvision and preprocesses identically on every machine.
    """
    from transformers import AutoImageProcessor, AutoProcessor

    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    processor = AutoProcessor.from_pretrained(source, **kwargs)
    if image_backend is not None:  # swapped in afterwards: passed to AutoProcessor it leaks into the tokenizer
        processor.image_processor = AutoImageProcessor.from_pretrained(source, backend=image_backend, **kwargs)
    return processor


def prepare_for_chat(model: Any, processor: Any, family: str | None = None) -> str:
    """Attach the family's template, a pad token and the stop tokens; record the family on the config.

    Returns:
        the family name (also ``model.config.chat_family``).
    """
    family = attach_template(processor, family, model.config)
    tokenizer = processor.tokenizer
    stops = stop_token_ids(tokenizer, family)
    if tokenizer.pad_token is None:  # LLaMA-style tokenizers have none; left-padded generation needs one
        tokenizer.pad_token = FAMILY_TEMPLATES[family].stop_tokens[0]
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        eos = generation.eos_token_id
        eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        generation.eos_token_id = list(dict.fromkeys(stops + eos))
        generation.pad_token_id = tokenizer.pad_token_id
    model.config.chat_family = family
    return family


def load(name_or_path: str | Path, dtype: str | torch.dtype = "float32", device_map: Any = None,
         load_in_4bit: bool = False, revision: str | None = None, trust_remote_code: bool = False,
         family: str | None = None, image_backend: str | None = "pil",
         vision_tower: str | None = None) -> tuple[Any, Any]:
    """Load a LLaVA-family checkpoint (hub id or local directory) and its processor, ready for chat.

    Args:
        name_or_path: hub id (``llava-hf/llava-interleave-qwen-0.5b-hf``) or a saved directory.
        dtype: weights dtype (``float32``, ``bfloat16``, ``float16`` or a torch dtype).
        device_map: passed to ``from_pretrained`` (``"auto"`` spreads a large model over GPUs).
        load_in_4bit: NF4 4-bit weights through bitsandbytes (CUDA only).
        revision, trust_remote_code: passed to ``from_pretrained``.
        family: chat family (``chatml``/``vicuna``/``mistral``/``llama3``); detected when None.
        image_backend: image processor variant (``"pil"`` needs no torchvision; None = checkpoint default).
        vision_tower: for an original-layout LLaVA/LLaVA-Med folder, the CLIP tower to use instead of its
            ``mm_vision_tower`` (a local folder, for offline use). Such a folder is converted once
            (``brainvlm.model.convert``) and the converted copy loaded.

    Returns:
        ``(model, processor)``; ``model_family(model)`` names the family used.
    """
    from transformers import AutoModelForImageTextToText

    source = resolve_source(name_or_path)
    if Path(source).is_dir() and is_original_layout(source):
        source = str(convert(source, vision_tower))
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype), "revision": revision,
                              "trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if load_in_4bit:
        kwargs["quantization_config"] = four_bit_config()
    processor = load_processor(source, revision, trust_remote_code, image_backend)
    try:
        model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    except Exception:  # transformers' error names no file: name the pickled weights file that caused it
        check_pickled_weights(source)
        raise
    prepare_for_chat(model, processor, family)
    return model, processor


def model_family(model: Any) -> str:
    """The chat family ``load`` chose for ``model``, or the one its config implies."""
    config = model.config
    family = getattr(config, "chat_family", None) or family_from_config(config)
    if family is None:
        raise ValueError(f"model {getattr(config, 'name_or_path', '')!r} (type {config.model_type!r}) has no "
                         "chat family; load it with brainvlm.model.loader.load(..., family=...)")
    return family


# ---------------------------------------------------------------------------------------------- tiny model
