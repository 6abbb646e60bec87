"""From a run's params and data to a trained adapter: what notebook 04 and ``python -m brainvlm train`` share.

``train_task`` reads the task's JSONL through the run's manifest, loads (or builds) the base model,
wraps it with LoRA, runs the pre-flight check and ``training.fit``, and leaves the best adapter in
``models/<task>/adapter/``. Under ``torchrun`` every rank runs the same call.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from brainvlm import collate, dataset, distributed, models, preflight, tasks, training
from brainvlm.paths import REPORTS_DIR
from brainvlm.report import write_json
from brainvlm.volumes import ViewConfig

SETTINGS_FILE = "settings.json"
TINY_MODELS = {"tiny": "tiny", "tiny-real-size": "real"}  # built locally with random weights


@dataclass
class TrainSettings:
    """The training params of a run (notebook 04 declares each of them)."""

    seed: int = 0
    model: str = "tiny"  # tiny | tiny-real-size | a local checkpoint path | a hub id
    dtype: str = "float32"
    load_in_4bit: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_vision: str = "frozen"  # frozen | lora | full
    train_projector: bool = True
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2.0e-3
    epochs: float = 6.0
    max_steps: int = 0  # 0: use epochs
    warmup_ratio: float = 0.05
    schedule: str = "cosine"
    precision: str = "fp32"  # fp32 | bf16 | fp16
    gradient_checkpointing: bool = False
    group_by_length: bool = False  # batches of similar token length (less padding)
    sharding: str = "data_parallel"  # with several processes: data_parallel | fsdp | deepspeed
    eval_every: int = 50
    save_every: int = 50
    val_samples: int = 64  # validation samples used for the validation loss
    view: str = "axial"
    view_size: int = 32
    max_length: int = 0  # 0: no limit
    on_truncation: str = "error"  # error | drop
    task_overrides: dict = field(default_factory=dict)  # task name -> {setting: value}


def settings_for(params: dict[str, Any], task: str) -> TrainSettings:
    """The settings for one task: params' training keys, then that task's ``task_overrides``."""
    names = {f.name for f in fields(TrainSettings)}
    settings = TrainSettings(**{k: v for k, v in params.items() if k in names})
    override = dict(settings.task_overrides.get(task, {}))
    unknown = sorted(set(override) - names)
    if unknown:
        raise ValueError(f"task_overrides['{task}'] has unknown keys {unknown}; valid: {sorted(names)}")
    for key, value in override.items():
        setattr(settings, key, value)
    return settings


def vocabulary_texts(manifest: dict[str, Any]) -> list[str]:
    """Texts of the run's training samples, for the tiny default's tokenizer (sorted: deterministic)."""
    texts = set()
    for task in manifest["tasks"].values():
        for sample in tasks.read_jsonl(task["files"]["train"]):
            texts.update(p["text"] for turn in sample["conversations"] for p in turn["content"]
                         if p["type"] == "text")
    return sorted(texts)


def base_model(settings: TrainSettings, run_dir: Path, manifest: dict[str, Any]) -> str:
    """The checkpoint to load: the embedded default built under ``models/base`` (rank 0), or the param."""
    if settings.model not in TINY_MODELS:
        return settings.model
    out = Path(run_dir) / "models" / ("base" if settings.model == "tiny" else "base-real-size")
    if distributed.world()[0] == 0 and not (out / "config.json").is_file():
        models.build_tiny_model(out, seed=settings.seed, vocab_texts=vocabulary_texts(manifest),
                                size=TINY_MODELS[settings.model])
    distributed.barrier()
    return str(out)


def collate_config(settings: TrainSettings, image_root: str) -> collate.CollateConfig:
    return collate.CollateConfig(image_root=image_root, view=ViewConfig(view=settings.view, size=settings.view_size),
                                 max_length=settings.max_length or None, on_truncation=settings.on_truncation)


def train_config(settings: TrainSettings, output_dir: Path, progress: bool = True) -> training.TrainConfig:
    return training.TrainConfig(
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
    result: training.FitResult
    settings: TrainSettings
    output_dir: Path
    parameters: dict[str, Any]
    preflight: Any


def load_base(base: str, settings: TrainSettings) -> tuple[Any, Any]:
    """The base model and processor on this process's device (4-bit weights are placed by the loader)."""
    device = distributed.local_device()
    model, processor = models.load(base, dtype=settings.dtype, load_in_4bit=settings.load_in_4bit,
                                   device_map={"": device} if settings.load_in_4bit else None)
    return (model if settings.load_in_4bit else model.to(device)), processor


def train_task(params: dict[str, Any], task: str, run_dir: Path, train_samples: list[dict] | None = None,
               name: str | None = None, resume: bool = False, stop_after: int | None = None,
               progress: bool = True) -> TrainedTask:
    """Train one task's adapter from the run's params and data.

    Args:
        params: the run's params (only training keys are read).
        task: a task name of the run's manifest (``sex``, ``bmi``).
        train_samples: replaces the task's training samples (the shuffled-images control uses this).
        name: output folder under ``models/`` (default: the task name).
        resume: continue from the latest checkpoint of ``models/<name>/``.
    """
    from brainvlm.seeding import set_seed
    from brainvlm.volume_cache import VolumeCache

    settings = settings_for(params, task)
    set_seed(settings.seed)
    manifest = dataset.read_manifest(run_dir)
    files = manifest["tasks"][task]["files"]
    train = train_samples if train_samples is not None else tasks.read_jsonl(files["train"])
    val = tasks.read_jsonl(files["val"])[:settings.val_samples]
    base = base_model(settings, run_dir, manifest)
    model, processor = load_base(base, settings)
    model = models.add_lora(model, r=settings.lora_r, alpha=settings.lora_alpha, dropout=settings.lora_dropout,
                            train_projector=settings.train_projector, vision=settings.lora_vision,
                            seed=settings.seed)
    config = collate_config(settings, manifest["image_root"])
    cache = VolumeCache()
    checked = preflight.preflight(train, processor, model, config, image_cache=cache)
    stage = training.Stage(task, train, val, epochs=settings.epochs, max_steps=settings.max_steps or None)
    output = Path(run_dir) / "models" / (name or task)
    if distributed.world()[0] == 0:
        write_json({"base_model": base, "task": task, **asdict(settings)},
                   output / SETTINGS_FILE)
    result = training.fit(model, collate.Collator(processor, config, image_cache=cache), [stage],
                          train_config(settings, output, progress), resume=resume, stop_after=stop_after)
    return TrainedTask(model, processor, result, settings, output, models.parameter_report(model), checked)


def load_trained(run_dir: Path, name: str, adapter: str = "adapter") -> tuple[Any, Any, TrainSettings]:
    """Load a trained task back: base model + adapter from ``models/<name>/``, processor and settings."""
    import json

    folder = Path(run_dir) / "models" / name
    if not (folder / SETTINGS_FILE).is_file():
        raise FileNotFoundError(f"{folder / SETTINGS_FILE} not found: train '{name}' first (notebook 04)")
    saved = json.loads((folder / SETTINGS_FILE).read_text())
    base = saved.pop("base_model")
    saved.pop("task")
    settings = TrainSettings(**saved)
    model, processor = load_base(base, settings)
    model = models.load_adapter(model, folder / adapter)
    return model.eval(), processor, settings


def main_train(argv: list[str]) -> int:
    """``python -m brainvlm train --params P --task T [--run NAME]``: the entry point torchrun starts."""
    from brainvlm.params import read_params

    parser = argparse.ArgumentParser(prog="brainvlm train", description=main_train.__doc__)
    parser.add_argument("--params", required=True, help="the run's params file")
    parser.add_argument("--task", required=True, help="task name, e.g. sex")
    parser.add_argument("--run", default=None, help="run name under reports/ (default: the params file's stem)")
    parser.add_argument("--run-dir", default=None, help="run folder (instead of --run)")
    parser.add_argument("--name", default=None, help="output folder under models/ (default: the task)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir) if args.run_dir else REPORTS_DIR / (args.run or Path(args.params).stem)
    distributed.init_distributed()
    rank, size = distributed.world()
    try:
        trained = train_task(read_params(Path(args.params)), args.task, run_dir, name=args.name,
                             resume=args.resume, progress=not args.no_progress)
        distributed.barrier()
    finally:
        distributed.shutdown()
    if rank == 0:
        print(trained.result.plan.to_string(index=False))
        sharding = distributed.sharding_from(trained.settings.sharding).mode
        print(f"{args.task}: {trained.result.steps} steps on {size} process(es) ({sharding}), "
              f"best val loss {trained.result.best_val_loss}, adapter in {trained.result.adapter_dir}")
    return 0


def collect_settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """The training settings found in a namespace (a notebook's parameters), as a params dict."""
    return {f.name: namespace[f.name] for f in fields(TrainSettings) if f.name in namespace}


def predict_split(trained: TrainedTask | tuple, samples: list[dict], out_path: Path, image_root: str,
                  batch_size: int = 16, max_new_tokens: int = 24, progress: bool = True):
    """Greedy answers for samples with a trained model, appended (resumably) to ``out_path``.

    Resuming only ever continues the same model's answers to the same samples: a record of the trained
    weights' fingerprint and the sample ids is kept beside the file (``inference.guard_resume``), and
    answers of another model (an earlier training of the same run) are discarded.

    Args:
        trained: a ``TrainedTask`` or ``load_trained``'s ``(model, processor, settings)``.

    Returns:
        DataFrame with ``id`` and ``prediction`` in sample order.
    """
    import hashlib

    from brainvlm import inference

    triple = ((trained.model, trained.processor, trained.settings) if isinstance(trained, TrainedTask)
              else trained)
    config = inference.GenerationConfig(batch_size=batch_size, max_new_tokens=max_new_tokens)
    ids = hashlib.sha256("\n".join(s["id"] for s in samples).encode()).hexdigest()
    record = {"weights": weights_fingerprint(triple[0]), "sample_ids": ids, "generation": asdict(config)}
    inference.guard_resume(Path(out_path), record)
    return inference.predict_trained(triple, samples, out_path, image_root, config, progress=progress)


def weights_fingerprint(model) -> str:
    """SHA-256 over the trainable tensors (the adapter): tells two trainings apart."""
    import hashlib

    digest = hashlib.sha256()
    for name, value in sorted(distributed.gather_trainable(model).items()) or sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()
