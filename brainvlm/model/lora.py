"""LoRA through PEFT: where adapters go, what trains in full, parameter counts, save, load and merge."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from brainvlm.model.weights_files import check_pickled_weights

VISION_MODES = ("frozen", "lora", "full")
LANGUAGE_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
# Encoder layers only: a SigLIP pooling head (vision_tower.head.mlp.fc1) is never used by LLaVA.
VISION_LORA_TARGETS = r".*vision_tower.*\.layers\.\d+\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"
PROJECTOR = "multi_modal_projector"
FINAL_NORM = "language_model.norm"
COMPONENTS = (("vision_tower", "vision_tower"), ("projector", "multi_modal_projector"),
              ("projector", "image_newline"), ("language_model", "language_model"), ("language_model", "lm_head"))



@contextlib.contextmanager
def peft_deprecations_silenced() -> Iterator[None]:
    """PEFT (0.21) asks transformers 5 for ``is_gradient_checkpointing``, which transformers deprecated: a warning
    per wrapped model about code that is not ours. Only that deprecation is silenced, where it arises."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield


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


def _linear_children(model: Any, name: str) -> list[str]:
    """The ``nn.Linear`` modules inside the module named ``*name`` (their names from ``name`` on)."""
    for full, module in model.named_modules():
        if full == name or full.endswith("." + name):
            wrapped = ("original_module", "modules_to_save", "base_layer", "lora_")  # PEFT's own modules
            return [f"{name}.{child}" for child, sub in module.named_modules()
                    if child and isinstance(sub, torch.nn.Linear) and not any(w in child for w in wrapped)]
    return []


def lora_config(model: Any, r: int = 8, alpha: int = 16, dropout: float = 0.0,
                target_modules: str | list[str] | None = None, train_projector: bool = True,
                vision: str = "frozen", train_lm_head_norm: bool = True, mixed_batches: bool = False) -> Any:
    """The PEFT ``LoraConfig`` of :func:`add_lora` (arguments as there), its modules checked on ``model``."""
    from peft import LoraConfig

    targets = target_modules if target_modules is not None else lora_target_pattern(vision)
    if vision not in VISION_MODES:
        raise ValueError(f"vision={vision!r}: use one of {VISION_MODES}")
    if mixed_batches and (vision == "full" or not isinstance(targets, str)):
        raise ValueError("mixed_batches needs a target regex and vision 'frozen' or 'lora' (PEFT mixes only "
                         "LoRA layers and saved copies of Linear, Embedding and Conv modules in one batch)")
    to_save = ([PROJECTOR] if train_projector else []) + ([FINAL_NORM] if train_lm_head_norm else [])
    to_save += ["vision_tower"] if vision == "full" else []
    for name in to_save:
        _check_module(model, name)
    if mixed_batches:  # the projector's Linear layers as saved copies; LoRA on the head instead of the norm
        to_save = _linear_children(model, PROJECTOR) if train_projector else []
        targets = f"(?:{targets})|(?:(?:.*\\.)?lm_head)" if train_lm_head_norm else targets
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                      modules_to_save=to_save or None)


def add_lora(model: Any, r: int = 8, alpha: int = 16, dropout: float = 0.0,
             target_modules: str | list[str] | None = None, train_projector: bool = True,
             vision: str = "frozen", train_lm_head_norm: bool = True, seed: int = 0,
             adapter_name: str = "default", mixed_batches: bool = False) -> Any:
    """Wrap ``model`` with LoRA adapters (in place) and return the ``PeftModel``.

    Args:
        r, alpha, dropout: LoRA rank, scaling numerator and dropout.
        target_modules: regex or names; default ``lora_target_pattern(vision)`` (language model only).
        train_projector: the multimodal projector is fully trained and saved with the adapter.
        vision: ``frozen``, ``lora`` (adapters on the encoder's attention and MLP) or ``full``.
        train_lm_head_norm: the final norm before the (tied) head is trained; a random frozen head with
            a frozen norm left the loss stuck near 4.5 on the tiny model.
        seed: seed of the adapters' initialisation (the caller's RNG state is left untouched).
        adapter_name: PEFT's name of the adapter (a pool of task adapters names each; see
            :func:`add_task_adapter`).
        mixed_batches: a configuration whose adapters can answer one batch together, each row its own
            (PEFT's ``adapter_names``): PEFT mixes only LoRA layers and saved copies of Linear, Embedding
            and Conv modules, so the projector's Linear layers are saved instead of the whole projector,
            and the head gets LoRA instead of training the final norm (an RMSNorm, which PEFT cannot mix).
    """
    from peft import get_peft_model

    config = lora_config(model, r, alpha, dropout, target_modules, train_projector, vision, train_lm_head_norm,
                         mixed_batches)
    with torch.random.fork_rng(devices=[]), peft_deprecations_silenced():
        torch.manual_seed(seed)
        return get_peft_model(model, config, adapter_name=adapter_name)


def add_task_adapter(peft_model: Any, name: str, seed: int = 0) -> Any:
    """Add a named adapter configured as the pool's first one and make it the only trainable one: its LoRA
    weights and its own copy of every fully trained module (``modules_to_save``).

    Every other adapter of the pool is frozen and untouched while ``name`` trains (PEFT's ``set_adapter``).
    """
    import copy

    if name in peft_model.peft_config:
        raise ValueError(f"adapter {name!r} exists already; adapters: {sorted(peft_model.peft_config)}")
    config = copy.deepcopy(next(iter(peft_model.peft_config.values())))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model.add_adapter(name, config)
    peft_model.set_adapter(name)
    return peft_model


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
    A model with several named adapters saves its active one, in PEFT's layout ``out_dir/<name>/``.
    """
    out = Path(out_dir)
    # LoRA on the head (mixed_batches) leaves the base weights as they are: they are not copied into the adapter
    options: dict[str, Any] = {"save_embedding_layers": False}
    options.update({"state_dict": state_dict} if state_dict is not None else {})
    if len(peft_model.peft_config) > 1:  # a pool of task adapters: the one training (``out/<name>/``)
        options["selected_adapters"] = [peft_model.active_adapter]
    peft_model.save_pretrained(out, **options)
    return out


def load_adapter(model: Any, adapter_dir: str | Path, trainable: bool = False) -> Any:
    """Put a saved adapter on a freshly loaded base ``model``; returns the ``PeftModel``."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; save one with save_adapter()")
    try:
        with peft_deprecations_silenced():
            return PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)
    except Exception:  # PEFT's own error names no file: name the pickled weights file that caused it
        check_pickled_weights(adapter_dir)
        raise


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
