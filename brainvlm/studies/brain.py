"""The brain comparison study (notebooks 01-04, 07): what its notebooks and its command line share.

``train`` reads a task's JSONL through the run's manifest, loads (or builds) the base model, wraps it
with LoRA, runs the pre-flight check and ``fit``, and leaves the best adapter in
``models/<task>/adapter/``. Under ``torchrun`` every rank runs the same call. ``predict_split`` and
``predict_task`` answer a split with a trained adapter, resumably.

Settings come complete from the caller: notebook 04's parameters cell is the one home of their
defaults (the command line reads it, see :mod:`brainvlm.app.params`). In a params file the study's own
settings carry the prefix ``brain_`` (``brain_lr``); the keys shared by every study keep their name.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from brainvlm.core.jsonio import read_json, read_jsonl, write_json
from brainvlm.core.seeding import set_seed
from brainvlm.data import dataset
from brainvlm.data.views import ViewConfig
from brainvlm.data.volume_cache import VolumeCache
from brainvlm.eval import generate
from brainvlm.model import collate, lora, preflight, templates
from brainvlm.model.loader import model_family
from brainvlm.studies import SHARED_PARAMS
from brainvlm.studies.base import base_checkpoint, vocabulary, weights_fingerprint
from brainvlm.studies.base import load_base as shared_load_base
from brainvlm.train import distributed
from brainvlm.train.config import Stage, TrainConfig
from brainvlm.train.fit import FitResult, fit

NAME = "brain"
PREFIX = "brain_"
TRAIN_NOTEBOOK = "04"  # declares every training setting; its parameters cell holds their defaults
SETTINGS_FILE = "settings.json"


class SettingsError(ValueError):
    """Settings that are incomplete or unknown; the message names the keys."""


@dataclass
class TrainSettings:
    """One task's training settings (notebook 04 declares each, with the ``brain_`` prefix where not shared)."""

    seed: int
    model: str  # tiny | tiny-real-size | a local checkpoint path | a hub id
    dtype: str
    load_in_4bit: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_vision: str  # frozen | lora | full
    train_projector: bool
    batch_size: int
    grad_accum: int
    lr: float
    epochs: float
    max_steps: int  # 0: use epochs
    warmup_ratio: float
    schedule: str
    precision: str  # fp32 | bf16 | fp16
    gradient_checkpointing: bool
    group_by_length: bool  # batches of similar token length (less padding)
    sharding: str  # with several processes: data_parallel | fsdp | deepspeed
    eval_every: int
    save_every: int
    val_samples: int  # validation samples used for the validation loss
    view: str
    view_size: int
    max_length: int  # 0: no limit
    on_truncation: str  # error | drop
    task_overrides: dict  # task name -> {setting: value}


def param_key(setting: str) -> str:
    """The params key of a setting: ``lr`` -> ``brain_lr``; a shared key (``seed``, ``model``) keeps its name."""
    return setting if setting in SHARED_PARAMS else PREFIX + setting


def setting_keys() -> list[str]:
    """Every params key ``train`` reads."""
    return [param_key(f.name) for f in fields(TrainSettings)]


def collect_settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """The training params found in a namespace (a notebook's parameters), as a params dict."""
    return {key: namespace[key] for key in setting_keys() if key in namespace}


def settings_for(params: dict[str, Any], task: str) -> TrainSettings:
    """The settings for one task: the params' training keys, then that task's ``brain_task_overrides``.

    Raises:
        SettingsError: a training key missing from ``params`` (pass the notebook's parameters, or use
            ``brainvlm train``, which fills them from notebook 04), or an unknown override key.
    """
    missing = [key for key in setting_keys() if key not in params]
    if missing:
        raise SettingsError(f"training settings missing: {missing}; notebook {TRAIN_NOTEBOOK}'s parameters "
                            "cell holds their defaults (`python -m brainvlm train` fills them from it)")
    settings = TrainSettings(**{f.name: params[param_key(f.name)] for f in fields(TrainSettings)})
    names = {f.name for f in fields(TrainSettings)}
    override = dict(settings.task_overrides.get(task, {}))
    unknown = sorted(set(override) - names)
    if unknown:
        raise SettingsError(f"{PREFIX}task_overrides['{task}'] has unknown keys {unknown}; valid: {sorted(names)}")
    for key, value in override.items():
        setattr(settings, key, value)
    return settings


def vocabulary_texts(manifest: dict[str, Any]) -> list[str]:
    """Texts of the run's training samples, for the tiny default's tokenizer (sorted: deterministic)."""
    return vocabulary([sample for task in manifest["tasks"].values() for sample in read_jsonl(task["files"]["train"])])


def base_model(model: str, seed: int, run_dir: Path, manifest: dict[str, Any]) -> str:
    """The run's base checkpoint: ``model``, or the tiny default built under ``models/base`` for its texts."""
    folder = "base" if model != "tiny-real-size" else "base-real-size"
    return base_checkpoint(model, seed, Path(run_dir) / "models" / folder, vocabulary_texts(manifest))


def collate_config(settings: TrainSettings, image_root: str) -> collate.CollateConfig:
    return collate.CollateConfig(image_root=image_root, view=ViewConfig(view=settings.view, size=settings.view_size),
                                 max_length=settings.max_length or None, on_truncation=settings.on_truncation)


def train_config(settings: TrainSettings, output_dir: Path, progress: bool = True) -> TrainConfig:
    return TrainConfig(
        output_dir=str(output_dir), batch_size=settings.batch_size, grad_accum=settings.grad_accum,
        lr=settings.lr, warmup_ratio=settings.warmup_ratio, schedule=settings.schedule,
        precision=settings.precision, gradient_checkpointing=settings.gradient_checkpointing,
        eval_every=settings.eval_every, save_every=settings.save_every, seed=settings.seed, progress=progress,
        sharding=settings.sharding, group_by_length=settings.group_by_length)


@dataclass
class TrainedTask:
    """A trained task: the model (best adapter loaded), its processor, the fit and where it was saved."""

    model: Any
    processor: Any
    result: FitResult
    settings: TrainSettings
    output_dir: Path
    parameters: dict[str, Any]
    preflight: Any


def load_base(base: str, settings: TrainSettings) -> tuple[Any, Any]:
    """The base model and processor on this process's device."""
    return shared_load_base(base, settings.dtype, settings.load_in_4bit)


def task_files(manifest: dict[str, Any], task: str, run_dir: Path) -> dict[str, str]:
    """Split -> samples file of a task of the run's manifest.

    Raises:
        SettingsError: a task the manifest does not hold, naming the manifest and the tasks it holds.
    """
    if task not in manifest["tasks"]:
        raise SettingsError(f"task {task!r} is not in {Path(run_dir) / 'data' / 'manifest.json'}; "
                            f"tasks there: {sorted(manifest['tasks'])}")
    return manifest["tasks"][task]["files"]


def train(params: dict[str, Any], task: str, run_dir: Path, train_samples: list[dict] | None = None,
          name: str | None = None, resume: bool = False, stop_after: int | None = None,
          progress: bool = True) -> TrainedTask:
    """Train one task's adapter from the run's params and data.

    Args:
        params: the run's params, complete for every training key (see ``settings_for``).
        task: a task name of the run's manifest (``sex``, ``bmi``).
        train_samples: replaces the task's training samples (the shuffled-images control uses this).
        name: output folder under ``models/`` (default: the task name).
        resume: continue from the latest checkpoint of ``models/<name>/``.
    """
    settings = settings_for(params, task)
    set_seed(settings.seed)
    manifest = dataset.read_manifest(run_dir)
    files = task_files(manifest, task, run_dir)
    train_set = train_samples if train_samples is not None else read_jsonl(files["train"])
    val_set = read_jsonl(files["val"])[:settings.val_samples]
    base = base_model(settings.model, settings.seed, run_dir, manifest)
    model, processor = load_base(base, settings)
    model = lora.add_lora(model, r=settings.lora_r, alpha=settings.lora_alpha, dropout=settings.lora_dropout,
                          train_projector=settings.train_projector, vision=settings.lora_vision, seed=settings.seed)
    config = collate_config(settings, manifest["image_root"])
    cache = VolumeCache()
    checked = preflight.preflight(train_set, processor, model, config, image_cache=cache)
    stage = Stage(task, train_set, val_set, epochs=settings.epochs, max_steps=settings.max_steps or None)
    output = Path(run_dir) / "models" / (name or task)
    if distributed.world()[0] == 0:
        write_json({"base_model": base, "task": task, **asdict(settings)}, output / SETTINGS_FILE)
    result = fit(model, collate.Collator(processor, config, image_cache=cache), [stage],
                 train_config(settings, output, progress), resume=resume, stop_after=stop_after)
    return TrainedTask(model, processor, result, settings, output, lora.parameter_report(model), checked)


def load_trained(run_dir: Path, name: str, adapter: str = "adapter") -> tuple[Any, Any, TrainSettings]:
    """Load a trained task back: base model + adapter from ``models/<name>/``, processor and settings."""
    folder = Path(run_dir) / "models" / name
    if not (folder / SETTINGS_FILE).is_file():
        raise FileNotFoundError(f"{folder / SETTINGS_FILE} not found: train '{name}' first (notebook 04)")
    saved = read_json(folder / SETTINGS_FILE)
    base = saved.pop("base_model")
    saved.pop("task")
    settings = TrainSettings(**saved)
    model, processor = load_base(base, settings)
    model = lora.load_adapter(model, folder / adapter)
    return model.eval(), processor, settings


def predict_split(trained: TrainedTask | tuple, samples: list[dict], out_path: Path, image_root: str,
                  batch_size: int = 16, max_new_tokens: int = 24, progress: bool = True):
    """Greedy answers for samples with a trained model, appended (resumably) to ``out_path``.

    Resuming only ever continues the same model's answers to the same samples: a record of the trained
    weights' fingerprint and the sample ids is kept beside the file (``generate.guard_resume``), and
    answers of another model (an earlier training of the same run) are discarded.

    Args:
        trained: a ``TrainedTask`` or ``load_trained``'s ``(model, processor, settings)``.

    Returns:
        DataFrame with ``id`` and ``prediction`` in sample order.
    """
    triple = ((trained.model, trained.processor, trained.settings) if isinstance(trained, TrainedTask)
              else trained)
    config = generate.GenerationConfig(batch_size=batch_size, max_new_tokens=max_new_tokens)
    ids = hashlib.sha256("\n".join(s["id"] for s in samples).encode()).hexdigest()
    record = {"weights": weights_fingerprint(triple[0]), "sample_ids": ids, "generation": asdict(config)}
    generate.guard_resume(Path(out_path), record)
    return predict_trained(triple, samples, out_path, image_root, config, progress=progress)


def predict_trained(trained: tuple[Any, Any, Any], samples: list[dict], out_path: Path,
                    image_root: str | Path, config: generate.GenerationConfig | None = None, image_cache: Any = None,
                    progress: bool = True) -> pd.DataFrame:
    """``generate.predict`` with a trained task as ``load_trained`` returns it.

    Args:
        trained: ``(model, processor, settings)``; the settings give the image view the model was trained on.
        image_root: folder the samples' image paths are relative to.
        image_cache: optional ``VolumeCache`` for NIfTI views.

    Returns:
        DataFrame with ``id`` and ``prediction`` in sample order.
    """
    model, processor, settings = trained
    config = config or generate.GenerationConfig()
    view_config = collate_config(settings, str(image_root))
    collator = collate.Collator(processor, view_config, prompt_only=True, image_cache=image_cache)
    stops = templates.stop_token_ids(processor.tokenizer, model_family(model))
    return generate.predict(model, samples, out_path, collator, processor.tokenizer, stops, config.batch_size,
                   config.max_new_tokens, progress, config.seed, **config.sampling())


def predict_task(run_dir: Path, task: str, split: str = "test", config: generate.GenerationConfig | None = None,
                 name: str | None = None, out_path: Path | None = None, limit: int | None = None,
                 on_change: str = "restart", progress: bool = True) -> pd.DataFrame:
    """Answer one split of a run's task with the adapter trained into ``models/<name>/`` (notebook 04).

    Args:
        task: task name in the run's manifest (``sex``, ``bmi``).
        name: adapter folder under ``models/`` (default: the task name).
        out_path: predictions JSONL (default: ``prediction_path(run_dir, task, split)``); resumed when it
            exists and was generated from the same adapter, samples and config (see ``guard_resume``).
        limit: only the first ``limit`` samples (a quick look); None = all.
        on_change: ``restart`` or ``error`` when the existing predictions came from something else.
    """
    manifest = dataset.read_manifest(run_dir)
    files = task_files(manifest, task, run_dir)
    if split not in dataset.SPLITS or split not in files:
        present = [s for s in dataset.SPLITS if s in files]
        raise SettingsError(f"task {task!r} has no split {split!r}; splits: {present}")
    samples = read_jsonl(files[split])[:limit]
    trained = load_trained(run_dir, name or task)
    config = config or generate.GenerationConfig()
    out = Path(out_path) if out_path else generate.prediction_path(run_dir, task, split)
    generate.guard_resume(out, generate.generation_record(Path(run_dir) / "models" / (name or task), files[split], config), on_change)
    return predict_trained(trained, samples, out, manifest["image_root"], config, progress=progress)
