"""The base checkpoint of a study's run, shared by every study: built (tiny default) or named, then loaded.

The tiny default's tokenizer is trained on the run's training texts, so a base built for other data (an
earlier run of the same name) is rebuilt, never reused: what it was built from is recorded beside it.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

from brainvlm.core.jsonio import read_json, write_json
from brainvlm.eval import generate
from brainvlm.model import collate, templates, tiny
from brainvlm.model.loader import load, model_family
from brainvlm.studies import SHARED_PARAMS
from brainvlm.train import distributed
from brainvlm.train.config import TrainConfig

TINY_MODELS = {"tiny": "tiny", "tiny-real-size": "real"}  # built locally with random weights
BASE_RECORD = "brainvlm_base.json"  # what a built tiny base was built from


def vocabulary(samples: list[dict]) -> list[str]:
    """Every distinct text part of the samples' conversations, sorted: the tiny default's tokenizer corpus."""
    return sorted({p["text"] for s in samples for turn in s["conversations"] for p in turn["content"]
                   if p["type"] == "text"})


def base_checkpoint(model: str, seed: int, out_dir: Path, texts: list[str]) -> str:
    """The checkpoint to load: ``model`` itself, or the tiny default built in ``out_dir`` (rank 0) for ``texts``.

    Args:
        model: ``tiny``, ``tiny-real-size``, a local checkpoint path or a hub id.
        seed: initialisation seed of the tiny default.
        texts: the run's training texts (the tiny tokenizer's corpus), sorted for determinism.
    """
    if model not in TINY_MODELS:
        return model
    out = Path(out_dir)
    inputs = {"seed": seed, "size": TINY_MODELS[model],
              "texts_sha256": hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()}
    built = (out / BASE_RECORD).is_file() and read_json(out / BASE_RECORD) == inputs
    if distributed.world()[0] == 0 and not built:
        shutil.rmtree(out, ignore_errors=True)
        tiny.build_tiny_model(out, seed=seed, vocab_texts=texts, size=TINY_MODELS[model])
        write_json(inputs, out / BASE_RECORD)
    distributed.barrier()
    return str(out)


def load_base(base: str, dtype: str, load_in_4bit: bool, vision_tower: str | None = None) -> tuple[Any, Any]:
    """The base model and processor on this process's device (4-bit weights are placed by the loader).

    ``vision_tower``: for an original-layout LLaVA/LLaVA-Med folder, a local CLIP tower to use instead of
    the one its config names (offline use; see ``model.convert``).
    """
    device = distributed.local_device()
    model, processor = load(base, dtype=dtype, load_in_4bit=load_in_4bit,
                            device_map={"": device} if load_in_4bit else None, vision_tower=vision_tower or None)
    return (model if load_in_4bit else model.to(device)), processor


def weights_fingerprint(model) -> str:
    """SHA-256 over the trainable tensors (the adapter): tells two trainings apart."""
    digest = hashlib.sha256()
    for name, value in sorted(distributed.gather_trainable(model).items()) or sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def predict_samples(model: Any, processor: Any, samples: list[dict], out_path: Path, image_root: str | Path,
                    batch_size: int, max_new_tokens: int, progress: bool = True,
                    weights: str | None = None, routes: dict[str, str] | None = None,
                    routing: dict | None = None) -> list[str]:
    """Greedy answers for samples, in sample order, appended resumably to ``out_path`` (``eval.generate``).

    The file is continued only for the same weights, samples and generation settings
    (``generate.guard_resume``); answers of another model are discarded.

    Args:
        weights: what identifies the model (default: the fingerprint of its trainable tensors; give the
            base checkpoint's name for an untrained base, whose full weights are too large to hash).
        routes: sample id -> the adapter of a pool that answers it (per sample, batches mixed).
        routing: what chose the routes (the key file's hash and the routing config), kept in the resume
            guard so answers routed otherwise are not continued.
    """
    ids = hashlib.sha256("\n".join(s["id"] + repr(s["conversations"][0]) for s in samples).encode()).hexdigest()
    record = {"weights": weights or weights_fingerprint(model), "samples": ids,
              "generation": {"batch_size": batch_size, "max_new_tokens": max_new_tokens}}
    if routes is not None:
        record["routing"] = {"config": routing or {}, "routes": hashlib.sha256(
            "\n".join(f"{s['id']}\t{routes.get(s['id'])}" for s in samples).encode()).hexdigest()}
    generate.guard_resume(Path(out_path), record)
    prompts = collate.Collator(processor, collate.CollateConfig(image_root=str(image_root)), prompt_only=True)
    stops = templates.stop_token_ids(processor.tokenizer, model_family(model))
    table = generate.predict(model, samples, out_path, prompts, processor.tokenizer, stops, batch_size,
                             max_new_tokens, progress, adapter_of=routes)
    return [str(p) for p in table["prediction"]]


# ------------------------------------------------------------------------------------- settings
class SettingsError(ValueError):
    """Settings that are incomplete or unknown; the message names the keys."""


def param_key(setting: str, prefix: str) -> str:
    """The params key of a study setting: shared keys as they are, the others with the study's prefix."""
    return setting if setting in SHARED_PARAMS else prefix + setting


def setting_keys(settings_class: type, prefix: str) -> list[str]:
    """Every params key of a study's settings dataclass."""
    return [param_key(f.name, prefix) for f in fields(settings_class)]


def read_settings(settings_class: type, params: dict[str, Any], prefix: str, notebook: str) -> Any:
    """A study's complete settings from the params (a missing key is an error naming it and its home)."""
    missing = [key for key in setting_keys(settings_class, prefix) if key not in params]
    if missing:
        study = prefix.rstrip("_")
        raise SettingsError(f"{study} settings missing: {missing}; notebook {notebook}'s parameters cell holds "
                            f"their defaults (`python -m brainvlm train --study {study}` fills them from it)")
    return settings_class(**{f.name: params[param_key(f.name, prefix)] for f in fields(settings_class)})


def collect_settings(namespace: dict[str, Any], settings_class: type, prefix: str) -> dict[str, Any]:
    """The settings keys found in a namespace (a notebook's parameters)."""
    return {key: namespace[key] for key in setting_keys(settings_class, prefix) if key in namespace}


def train_config(settings: Any, output_dir: Path, progress: bool) -> TrainConfig:
    """The fit's options from a study's settings (batch, accumulation, lr, warm-up, precision, cadence)."""
    return TrainConfig(output_dir=str(output_dir), batch_size=settings.batch_size, grad_accum=settings.grad_accum,
                       lr=settings.lr, warmup_ratio=settings.warmup_ratio, precision=settings.precision,
                       eval_every=settings.eval_every, save_every=settings.save_every, seed=settings.seed,
                       progress=progress)
