"""The tiny default: a randomly initialised LLaVA-interleave (Qwen2 + SigLIP) with a locally trained tokenizer.

``build_tiny_model`` writes it with ``save_pretrained``, small enough for CPU tests; it is then loaded
through :func:`brainvlm.model.loader.load` like any real checkpoint. ``llava_config(size="real")`` gives the
real interleave-0.5b dimensions (random weights) for benchmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from brainvlm.model.loader import prepare_for_chat
from brainvlm.model.templates import FAMILY_TEMPLATES

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
