"""LLaVA-family models: load any checkpoint, build the tiny default, wrap with LoRA, save and merge.

``load`` is the one way in, for a hub id, a local checkpoint and the tiny default alike: it loads the
model and processor through the Auto classes, gives the processor its family's chat template when the
checkpoint's own has no ``{% generation %}`` markers (``brainvlm.templates``), and makes generation stop
on the family's end-of-turn token. ``build_tiny_model`` writes a randomly initialised LLaVA-interleave
(Qwen2 + SigLIP) with a tokenizer trained on the task vocabulary, small enough for CPU tests.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from brainvlm.templates import FAMILY_TEMPLATES, attach_template, family_from_config, stop_token_ids

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
VISION_MODES = ("frozen", "lora", "full")
LANGUAGE_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
# Encoder layers only: a SigLIP pooling head (vision_tower.head.mlp.fc1) is never used by LLaVA.
VISION_LORA_TARGETS = r".*vision_tower.*\.layers\.\d+\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"
PROJECTOR = "multi_modal_projector"
FINAL_NORM = "language_model.norm"
COMPONENTS = (("vision_tower", "vision_tower"), ("projector", "multi_modal_projector"),
              ("projector", "image_newline"), ("language_model", "language_model"), ("language_model", "lm_head"))

TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>")
TINY_VOCAB_SIZE = 1024
# What the task builders say, so the tiny tokenizer spends its merges on it; any text still encodes.
DEFAULT_CORPUS = (
    "Here is a T1-weighted scan of a male participant (reference).",
    "Here is a T1-weighted scan of a female participant (reference).",
    "Here is a brain scan from a participant with BMI 21.5 (reference).",
    "Understood. I've analyzed the reference scan.",
    "Compare this scan with the reference. What is the sex?",
    "Compare this scan with the reference. What is the BMI?",
    "Compare this scan with the reference. Is the value higher or lower?",
    "Based on the comparison, the subject is male.",
    "Based on the comparison, the subject is female.",
    "Based on the comparison, the value is 23.4, higher than the reference.",
    "Based on the comparison, the value is 19.8, lower than the reference.",
    "male female yes no same different higher lower older younger age years sex BMI",
    "structural diffusion functional MRI sMRI dMRI fMRI axial coronal sagittal slice brain",
    "Answer: Impression: CheXpert: ICD: Findings: normal abnormal",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 35 40 45 50 60 70 80 90 100",
    "0.0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1.0 -1 +1 12.5 kg/m2 %",
    ". , ; : ! ? ' \" ( ) [ ] { } < > / \\ - _ = + * & # @ $",
    "system user assistant",
)

REAL_TEXT = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
             "intermediate_size": 2816, "vocab_size": 152000, "max_position_embeddings": 32768,
             "rope_theta": 1000000.0}
REAL_VISION = {"hidden_size": 1152, "num_hidden_layers": 26, "num_attention_heads": 16, "intermediate_size": 4304,
               "image_size": 384, "patch_size": 14}


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
            "brainvlm.models.build_tiny_model(path), or pass a hub id such as "
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
         family: str | None = None, image_backend: str | None = "pil") -> tuple[Any, Any]:
    """Load a LLaVA-family checkpoint (hub id or local directory) and its processor, ready for chat.

    Args:
        name_or_path: hub id (``llava-hf/llava-interleave-qwen-0.5b-hf``) or a saved directory.
        dtype: weights dtype (``float32``, ``bfloat16``, ``float16`` or a torch dtype).
        device_map: passed to ``from_pretrained`` (``"auto"`` spreads a large model over GPUs).
        load_in_4bit: NF4 4-bit weights through bitsandbytes (CUDA only).
        revision, trust_remote_code: passed to ``from_pretrained``.
        family: chat family (``chatml``/``vicuna``/``mistral``/``llama3``); detected when None.
        image_backend: image processor variant (``"pil"`` needs no torchvision; None = checkpoint default).

    Returns:
        ``(model, processor)``; ``model_family(model)`` names the family used.
    """
    from transformers import AutoModelForImageTextToText

    source = resolve_source(name_or_path)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype), "revision": revision,
                              "trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if load_in_4bit:
        kwargs["quantization_config"] = four_bit_config()
    processor = load_processor(source, revision, trust_remote_code, image_backend)
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    prepare_for_chat(model, processor, family)
    return model, processor


def model_family(model: Any) -> str:
    """The chat family ``load`` chose for ``model``, or the one its config implies."""
    config = model.config
    family = getattr(config, "chat_family", None) or family_from_config(config)
    if family is None:
        raise ValueError(f"model {getattr(config, 'name_or_path', '')!r} (type {config.model_type!r}) has no "
                         "chat family; load it with brainvlm.models.load(..., family=...)")
    return family


# ---------------------------------------------------------------------------------------------- tiny model


def train_tokenizer(texts: list[str], vocab_size: int = TINY_VOCAB_SIZE) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``, wrapped for transformers.

    Special tokens: ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (end of turn and eos),
    ``<image>`` (the image token).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(TINY_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=None, unk_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", extra_special_tokens={"image_token": "<image>"})


def llava_config(size: str = "tiny", vocab_size: int = TINY_VOCAB_SIZE, image_token_id: int = 3,
                 image_size: int = 32, patch_size: int = 8, hidden: int = 64, layers: int = 2, heads: int = 4,
                 vision_hidden: int = 64, vision_layers: int = 2) -> Any:
    """``LlavaConfig`` of the LLaVA-interleave architecture: Qwen2 text + SigLIP vision, all patch features.

    ``size="real"`` gives llava-interleave-qwen-0.5b's dimensions and ignores the size arguments.
    """
    from transformers import LlavaConfig, Qwen2Config, SiglipVisionConfig

    if size == "real":
        text = Qwen2Config(**REAL_TEXT, tie_word_embeddings=True, rms_norm_eps=1e-6)
        vision = SiglipVisionConfig(**REAL_VISION, vision_use_head=False)
    elif size == "tiny":
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}")
        text = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                           max_position_embeddings=4096, tie_word_embeddings=True,
                           initializer_range=hidden ** -0.5)
        vision = SiglipVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                    num_hidden_layers=vision_layers, num_attention_heads=heads,
                                    image_size=image_size, patch_size=patch_size, vision_use_head=False)
    else:
        raise ValueError(f"size={size!r}: use 'tiny' or 'real'")
    tokens = (vision.image_size // vision.patch_size) ** 2
    # 0.02, the real models' init scale, is tuned for hidden sizes near 1024; at hidden 64 it leaves the
    # projected image features and the tied head so small that a tiny model learns the text but not the image.
    init = text.initializer_range if size == "tiny" else 0.02
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                       vision_feature_select_strategy="full", vision_feature_layer=-1,
                       image_seq_length=tokens, tie_word_embeddings=True, initializer_range=init)


def tiny_processor(tokenizer: Any, image_size: int, patch_size: int) -> Any:
    """``LlavaProcessor`` with a PIL SigLIP image processor and the ChatML template."""
    from transformers import LlavaProcessor, SiglipImageProcessorPil

    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    template = FAMILY_TEMPLATES["chatml"].chat_template
    tokenizer.chat_template = template
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="full", num_additional_image_tokens=0,
                          chat_template=template)


def tiny_model(seed: int = 0, vocab_texts: list[str] | None = None, size: str = "tiny", image_size: int = 32,
               patch_size: int = 8, hidden: int = 64, layers: int = 2, heads: int = 4, vision_hidden: int = 64,
               vision_layers: int = 2) -> tuple[Any, Any]:
    """The randomly initialised LLaVA-interleave model and its processor, in memory (see ``build_tiny_model``)."""
    from transformers import LlavaForConditionalGeneration

    tokenizer = train_tokenizer(list(DEFAULT_CORPUS) + list(vocab_texts or []))
    config = llava_config(size, len(tokenizer), tokenizer.convert_tokens_to_ids("<image>"), image_size,
                          patch_size, hidden, layers, heads, vision_hidden, vision_layers)
    processor = tiny_processor(tokenizer, config.vision_config.image_size, config.vision_config.patch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    prepare_for_chat(model, processor, "chatml")
    return model, processor


def build_tiny_model(out_dir: str | Path, seed: int = 0, vocab_texts: list[str] | None = None,
                     size: str = "tiny", image_size: int = 32, patch_size: int = 8, hidden: int = 64,
                     layers: int = 2, heads: int = 4, vision_hidden: int = 64, vision_layers: int = 2) -> Path:
    """Write a randomly initialised LLaVA-interleave model and its processor to ``out_dir``.

    Qwen2 text model with tied embeddings, SigLIP vision tower (all patch features, last layer), a
    byte-level BPE tokenizer trained on ``DEFAULT_CORPUS`` + ``vocab_texts``, ChatML template with
    generation markers, (image_size / patch_size)^2 image tokens per image. The same arguments give
    byte-identical files; load it back with ``load(out_dir)``.

    Args:
        out_dir: directory to write (created).
        seed: weight initialisation seed (the caller's torch RNG state is left untouched).
        vocab_texts: extra texts for the tokenizer, on top of ``DEFAULT_CORPUS``.
        size: ``tiny`` (the other arguments apply) or ``real`` (llava-interleave-qwen-0.5b dimensions,
            864M parameters: for GPU throughput work, not for CPU tests).

    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    model, processor = tiny_model(seed, vocab_texts, size, image_size, patch_size, hidden, layers, heads,
                                  vision_hidden, vision_layers)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------------- LoRA


def lora_target_pattern(vision: str = "frozen") -> str:
    """Regex of the modules that get LoRA: the language model's projections, plus the vision encoder's."""
    if vision not in VISION_MODES:
        raise ValueError(f"vision={vision!r}: use one of {VISION_MODES}")
    if vision == "lora":
        return f"(?:{LANGUAGE_LORA_TARGETS})|(?:{VISION_LORA_TARGETS})"
    return LANGUAGE_LORA_TARGETS


def _check_module(model: Any, name: str) -> None:
    if not any(n == name or n.endswith("." + name) for n, _ in model.named_modules()):
        raise ValueError(f"model {type(model).__name__} has no module named '*{name}' to train; "
                         f"turn the matching add_lora option off")


def add_lora(model: Any, r: int = 8, alpha: int = 16, dropout: float = 0.0,
             target_modules: str | list[str] | None = None, train_projector: bool = True,
             vision: str = "frozen", train_lm_head_norm: bool = True, seed: int = 0) -> Any:
    """Wrap ``model`` with LoRA adapters (in place) and return the ``PeftModel``.

    Args:
        r, alpha, dropout: LoRA rank, scaling numerator and dropout.
        target_modules: regex or names; default ``lora_target_pattern(vision)`` (language model only).
        train_projector: the multimodal projector is fully trained and saved with the adapter.
        vision: ``frozen``, ``lora`` (adapters on the encoder's attention and MLP) or ``full``.
        train_lm_head_norm: the final norm before the (tied) head is trained; a random frozen head with
            a frozen norm left the loss stuck near 4.5 on the tiny model.
        seed: seed of the adapters' initialisation (the caller's RNG state is left untouched).
    """
    from peft import LoraConfig, get_peft_model

    targets = target_modules if target_modules is not None else lora_target_pattern(vision)
    if vision not in VISION_MODES:
        raise ValueError(f"vision={vision!r}: use one of {VISION_MODES}")
    to_save = ([PROJECTOR] if train_projector else []) + ([FINAL_NORM] if train_lm_head_norm else [])
    to_save += ["vision_tower"] if vision == "full" else []
    for name in to_save:
        _check_module(model, name)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        modules_to_save=to_save or None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def _component(name: str) -> str:
    for component, marker in COMPONENTS:
        if marker in name:
            return component
    return "other"


def parameter_report(model: Any) -> dict:
    """Trainable and total parameter counts, overall and per component.

    Returns:
        ``{"trainable", "total", "percent", "by_component": {name: {"trainable", "total"}}}`` with
        components ``language_model``, ``vision_tower``, ``projector`` (and ``other`` if any).
    """
    by: dict[str, dict[str, int]] = {}
    for name, param in model.named_parameters():
        counts = by.setdefault(_component(name), {"trainable": 0, "total": 0})
        counts["total"] += param.numel()
        counts["trainable"] += param.numel() if param.requires_grad else 0
    trainable = sum(c["trainable"] for c in by.values())
    total = sum(c["total"] for c in by.values())
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / max(total, 1),
            "by_component": dict(sorted(by.items()))}


def save_adapter(peft_model: Any, out_dir: str | Path, state_dict: dict[str, Any] | None = None) -> Path:
    """Save the adapter (LoRA weights and the fully trained modules) to ``out_dir``.

    ``state_dict``: whole parameter values to save instead of the model's own (a sharded model's are shards).
    """
    out = Path(out_dir)
    peft_model.save_pretrained(out, **({"state_dict": state_dict} if state_dict is not None else {}))
    return out


def load_adapter(model: Any, adapter_dir: str | Path, trainable: bool = False) -> Any:
    """Put a saved adapter on a freshly loaded base ``model``; returns the ``PeftModel``."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; save one with save_adapter()")
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)


def merge_and_save(peft_model: Any, out_dir: str | Path, processor: Any = None) -> Path:
    """Merge the adapter into the base weights and save a plain checkpoint that ``load`` reads.

    The ``PeftModel`` is consumed: its base model now holds the merged weights. Pass the processor so
    the directory is complete (``load`` needs it).
    """
    out = Path(out_dir)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out)
    if processor is not None:
        processor.save_pretrained(out)
    return out

