"""The options of a concepts or captions job (``studies.clef_jobs``), checked when they are made.

An option that cannot work is refused here, before a model loads, with a message that names it: a value
of the wrong type, a batch size below 1, an unknown language, a ``generation_kwargs`` key that the job
sets itself or that is no setting of transformers' ``GenerationConfig`` (``generate`` would refuse it for
every image, so the job would write nothing but fallback rows).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any

from brainvlm.data.clef_tasks import LANGUAGES
from brainvlm.model.loader import resolve_dtype

# generate() keywords the generator sets itself, and the batch's own inputs
RESERVED_GENERATION_KEYS = ("max_new_tokens", "eos_token_id", "pad_token_id", "use_cache", "input_ids",
                            "attention_mask", "pixel_values")
SEED_KEY = "seed"  # seeds sampling; taken out before generate()
EXAMPLE_GENERATION_KEYS = "do_sample, temperature, top_p, top_k, num_beams, repetition_penalty"


class JobError(ValueError):
    """A job that cannot run as asked; the message names the option, file or id and what to do."""


def generation_keys() -> set[str]:
    """The keys ``generation_kwargs`` may hold: the settings of transformers' ``GenerationConfig``, and
    ``seed``."""
    from transformers import GenerationConfig

    settings = {key for key in GenerationConfig().to_dict() if not key.startswith("_")}
    return (settings - {"transformers_version"}) | {SEED_KEY}


def check_generation_kwargs(kwargs: dict[str, Any]) -> None:
    """Refuse keys the job sets itself, and keys that are no generation setting (naming the closest one).

    Raises:
        JobError: naming the keys and what to use instead.
    """
    reserved = sorted(set(kwargs) & set(RESERVED_GENERATION_KEYS))
    if reserved:
        raise JobError(f"generation_kwargs {reserved}: the job sets these itself; use the max_new_tokens "
                       "option for the answer length")
    known = generation_keys()
    unknown = sorted(set(kwargs) - known)
    if unknown:
        close = [match for key in unknown for match in difflib.get_close_matches(key, sorted(known), 1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise JobError(f"generation_kwargs {unknown}: not a setting of transformers' GenerationConfig{hint}; "
                       "generate() would refuse it for every image: use keys such as "
                       f"{EXAMPLE_GENERATION_KEYS}, or seed")


@dataclass
class JobOptions:
    """The options of a concepts or captions job: the seed's, plus ``dtype`` and ``caption_language``.

    Attributes:
        base_model_path: a checkpoint folder or a hub id.
        adapter_repo: a LoRA adapter folder (``adapter_config.json`` inside), or empty for the base alone.
        batch_size: images per ``generate`` call.
        max_new_tokens: longest answer; None: 150 for concepts, 100 for captions (the seed's examples).
        load_in_4bit: NF4 4-bit weights (CUDA and bitsandbytes).
        merge_adapters: merge the adapter into the base weights after loading (plain layers generate faster).
        cui_mapping_file: a concept table, ``cui_mapping.csv`` or a UMLS ``META`` folder (``data.umls``).
        auto_map_cuis: map the names the model writes to CUIs (``data.concept_map``); off: only the CUIs
            the model writes itself reach the CUI file.
        generation_kwargs: more ``generate`` keywords, settings of transformers' ``GenerationConfig``
            (``do_sample``, ``temperature``, ``top_p``, ``num_beams``, ``repetition_penalty``); ``seed``
            seeds sampling. Any other key is refused here: ``generate`` would refuse it for every image.
        device: ``auto`` (CUDA when there is one), ``cpu``, ``cuda``, ``cuda:1``.
        dtype: weights dtype: ``float32``, ``bfloat16`` or ``float16``.
        checkpoint_interval: write answers to disk once this many are waiting; 0: after every batch.
        prompt_language: ``en`` or ``es``: the prompts of samples a job builds (a samples file keeps its own).
        caption_language: the language the caption prompt asks for, and of the fallback caption.
    """

    base_model_path: str
    adapter_repo: str = ""
    batch_size: int = 4
    max_new_tokens: int | None = None
    load_in_4bit: bool = False
    merge_adapters: bool = False
    cui_mapping_file: str = ""
    auto_map_cuis: bool = True
    generation_kwargs: dict = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "float32"
    checkpoint_interval: int = 0
    prompt_language: str = "en"
    caption_language: str = "en"

    def __post_init__(self) -> None:
        for item in fields(self):
            _check_type(item.name, getattr(self, item.name), OPTION_TYPES[item.name])
        if not self.base_model_path.strip():
            raise JobError("base_model_path is empty; give a checkpoint folder or a hub id")
        for name, lowest in (("batch_size", 1), ("max_new_tokens", 1), ("checkpoint_interval", 0)):
            value = getattr(self, name)
            if value is not None and value < lowest:
                raise JobError(f"{name}={value}: use an int of at least {lowest}")
        for name in ("prompt_language", "caption_language"):
            if getattr(self, name) not in LANGUAGES:
                raise JobError(f"{name}={getattr(self, name)!r}: use one of {list(LANGUAGES)}")
        check_generation_kwargs(self.generation_kwargs)
        if self.merge_adapters and not self.adapter_repo:
            raise JobError("merge_adapters is on but adapter_repo is empty; give the adapter folder to merge")
        resolve_dtype(self.dtype)


OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "base_model_path": (str,), "adapter_repo": (str,), "batch_size": (int,),
    "max_new_tokens": (int, type(None)), "load_in_4bit": (bool,), "merge_adapters": (bool,),
    "cui_mapping_file": (str,), "auto_map_cuis": (bool,), "generation_kwargs": (dict,), "device": (str,),
    "dtype": (str,), "checkpoint_interval": (int,), "prompt_language": (str,), "caption_language": (str,)}


def _check_type(name: str, value: Any, kinds: tuple[type, ...]) -> None:
    is_bool_for_int = isinstance(value, bool) and bool not in kinds
    if is_bool_for_int or not isinstance(value, kinds):
        wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise JobError(f"{name}={value!r} ({type(value).__name__}): give {wanted}")
