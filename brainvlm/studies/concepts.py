"""The concepts study (notebook 08): UMLS concept detection and captioning, scored as ImageCLEFmedical does.

Two concept detectors on the same images, against a tuned baseline:

- **generative** (the seed's): a LoRA-tuned model writes concept names (Format A), mapped to CUIs by
  ``data.concept_map`` (Format B);
- **classifier**: one-vs-rest logistic regression on the frozen base model's pooled image features
  (``model.features``, ``train.probe``), per-concept thresholds chosen on validation F1;
- **most frequent concepts**: the top-k training concepts for every image, k chosen on validation.

A caption adapter writes captions, scored by the challenge's ROUGE-1 and the COCO metrics against the most
frequent training caption. Data come from a ROCOv2/ImageCLEF folder or the synthetic default written in that
layout (``data.synthetic_concepts``), through the same adapter (``data.adapters.roco``).

In a params file the study's settings carry the prefix ``concepts_``; notebook 08's parameters cell holds
their defaults (``python -m brainvlm train --study concepts`` reads it).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainvlm.core.jsonio import read_json, read_jsonl, write_json, write_jsonl
from brainvlm.core.seeding import set_seed
from brainvlm.data import synthetic_concepts
from brainvlm.data.adapters.roco import PromptOptions, roco_samples
from brainvlm.data.concept_map import ConceptMapper, map_names
from brainvlm.eval import answers, clef
from brainvlm.model import collate, features, lora
from brainvlm.studies import base, controls
from brainvlm.studies.base import SettingsError, base_checkpoint, load_base, predict_samples
from brainvlm.train import distributed
from brainvlm.train.config import Stage
from brainvlm.train.fit import FitResult, fit
from brainvlm.train.probe import LinearProbe, fit_probe

NAME = "concepts"
PREFIX = "concepts_"
TRAIN_NOTEBOOK = "08"
SETTINGS_FILE = "settings.json"
TASKS = ("concepts", "caption")
SPLITS = {"train": "train", "valid": "val", "test": "test"}  # ROCOv2 file split -> brainvlm split
CUI = re.compile(r"C\d+")


@dataclass
class ConceptsSettings:
    """Training settings of the concepts study (notebook 08 declares each, ``concepts_``-prefixed unless shared)."""

    seed: int
    model: str
    dtype: str
    load_in_4bit: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lr: float
    batch_size: int
    grad_accum: int
    steps: int  # optimizer steps of each adapter
    warmup_ratio: float
    precision: str
    eval_every: int
    save_every: int
    val_samples: int


def param_key(setting: str) -> str:
    return base.param_key(setting, PREFIX)


def setting_keys() -> list[str]:
    """Every params key of the training settings."""
    return base.setting_keys(ConceptsSettings, PREFIX)


def collect_settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """The settings found in a namespace (a notebook's parameters)."""
    return base.collect_settings(namespace, ConceptsSettings, PREFIX)


def settings_for(params: dict[str, Any]) -> ConceptsSettings:
    """Complete settings from the params (a missing key is an error naming it)."""
    return base.read_settings(ConceptsSettings, params, PREFIX, TRAIN_NOTEBOOK)


# ------------------------------------------------------------------------------------------------ data
def prepare_data(run_dir: Path, roco_root: str, options: PromptOptions, seed: int, sizes: tuple[int, int, int],
                 image_size: int) -> dict[str, Any]:
    """Samples of both tasks per split under ``data/concepts/`` and ``data/caption/``, and the manifest.

    ``roco_root`` empty: the synthetic default is written in the ROCOv2 layout under ``data/roco/`` first.
    """
    root = Path(roco_root) if roco_root else synthetic_concepts.make_synthetic_concepts(
        Path(run_dir) / "data" / "roco", *sizes, seed=seed, size=image_size)
    manifest: dict[str, Any] = {"image_root": str(root), "tasks": {}, "gold": {}, "manual": {},
                                "cui_mapping": str(root / "cui_mapping.csv")}
    for task in TASKS:
        files = {}
        for file_split, split in SPLITS.items():
            samples = roco_samples(root, file_split, [task], options)
            files[split] = str(write_jsonl(samples, Path(run_dir) / "data" / task / f"{split}.jsonl"))
        manifest["tasks"][task] = files
    for file_split, split in SPLITS.items():
        manifest["gold"][split] = str(root / f"{file_split}_concepts.csv")
        manual = root / f"{file_split}_concepts_manual.csv"
        manifest["manual"][split] = str(manual) if manual.is_file() else None
    write_json(manifest, Path(run_dir) / "data" / "concepts_manifest.json")
    return manifest


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "data" / "concepts_manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the concepts data first (notebook {TRAIN_NOTEBOOK})")
    return read_json(path)


def image_id(sample: dict) -> str:
    return str(sample["metadata"]["image_id"])


def gold_sets(path: str) -> dict[str, frozenset[str]]:
    """Image id -> gold CUIs of an ``ID,CUIs`` file (the empty token left out)."""
    return {k: frozenset(t for t in tokens if t) for k, tokens in clef.read_concept_gold(path).items()}


# -------------------------------------------------------------------------------------------- training
@dataclass
class Trained:
    model: Any
    processor: Any
    result: FitResult
    settings: ConceptsSettings
    output_dir: Path
    base: str


def train(params: dict[str, Any], task: str, run_dir: Path, name: str | None = None, resume: bool = False,
          stop_after: int | None = None, progress: bool = True) -> Trained:
    """Train one adapter: ``concepts``, ``caption`` or ``multitask`` (both tasks' samples in one adapter)."""
    if task not in (*TASKS, "multitask"):
        raise SettingsError(f"task {task!r}: use one of {[*TASKS, 'multitask']}")
    settings = settings_for(params)
    set_seed(settings.seed)
    manifest = read_manifest(run_dir)
    tasks = TASKS if task == "multitask" else (task,)
    train_set = [s for t in tasks for s in read_jsonl(manifest["tasks"][t]["train"])]
    val_set = [s for t in tasks for s in read_jsonl(manifest["tasks"][t]["val"])][: settings.val_samples]
    every = [s for t in TASKS for split in ("train", "val") for s in read_jsonl(manifest["tasks"][t][split])]
    checkpoint = base_checkpoint(settings.model, settings.seed, Path(run_dir) / "models" / "concepts_base",
                                 base.vocabulary(every))
    model, processor = load_base(checkpoint, settings.dtype, settings.load_in_4bit)
    model = lora.add_lora(model, r=settings.lora_r, alpha=settings.lora_alpha, dropout=settings.lora_dropout,
                          seed=settings.seed)
    output = Path(run_dir) / "models" / (name or task)
    if distributed.world()[0] == 0:
        write_json({"base_model": checkpoint, "task": task, **asdict(settings)}, output / SETTINGS_FILE)
    config = base.train_config(settings, output, progress)
    stage = Stage(task, train_set, val_set, max_steps=settings.steps)
    result = fit(model, collate.Collator(processor, collate.CollateConfig(image_root=manifest["image_root"])),
                 [stage], config, resume=resume, stop_after=stop_after)
    return Trained(model.eval(), processor, result, settings, output, checkpoint)


def answer(trained: Trained, samples: list[dict], out_path: Path, image_root: str, batch_size: int,
           max_new_tokens: int) -> list[str]:
    """Greedy answers (resumable, guarded against another model's file)."""
    return predict_samples(trained.model, trained.processor, samples, out_path, image_root, batch_size,
                           max_new_tokens)


# ------------------------------------------------------------------------------------------ detectors
def detected(samples: list[dict], texts: list[str], mapper: ConceptMapper) -> tuple[dict, pd.DataFrame]:
    """Image id -> CUIs the answers name (mapped), and the mapping table of every name written."""
    sets, names = {}, []
    for sample, text in zip(samples, texts):
        parsed = answers.parse_concepts(text, mapper)
        sets[image_id(sample)] = frozenset(c for c in (parsed or ()) if CUI.fullmatch(c))
        block = text.split("Concepts:", 1)[-1]
        names += [n.strip(" .") for n in block.replace("\n", ";").split(";") if n.strip(" .")]
    return sets, map_names(names, mapper)


def most_frequent(train_gold: dict, val_gold: dict, max_k: int = 20) -> tuple[list[str], pd.DataFrame]:
    """The top-k training concepts, k chosen on validation to maximise the challenge's primary F1."""
    ranked = [c for c, _ in Counter(c for s in train_gold.values() for c in s).most_common()]
    rows = []
    for k in range(min(max_k, len(ranked)) + 1):
        guess = clef.set_tokens(ranked[:k])
        per_image = [clef.image_score(clef.set_tokens(g), guess) for g in val_gold.values()]
        rows.append({"k": k, "validation_primary_f1": float(np.nanmean(per_image))})
    table = pd.DataFrame(rows)
    best = int(table.loc[table["validation_primary_f1"].idxmax(), "k"])
    return ranked[:best], table


def image_paths(samples: list[dict], image_root: str) -> list[Path]:
    return [Path(image_root) / controls.image_parts(s)[-1]["image_path"] for s in samples]


def classifier(model: Any, processor: Any, splits: dict[str, list[dict]], gold: dict[str, dict], image_root: str,
               seed: int) -> tuple[LinearProbe, dict[str, np.ndarray]]:
    """The linear probe on the frozen base model's pooled image features of each split's images."""
    x = {split: features.image_features(model, processor, image_paths(samples, image_root), progress=False)
         for split, samples in splits.items()}
    sets = {split: [gold[split][image_id(s)] for s in samples] for split, samples in splits.items()}
    probe = fit_probe(x["train"], sets["train"], x["val"], sets["val"], seed=seed)
    return probe, x


# -------------------------------------------------------------------------------------------- scoring
def per_image(gold: dict, predicted: dict, allowed: Any = None) -> np.ndarray:
    """Per-image F1 in gold order, as the challenge scores the written rows (NaN: left out)."""
    return np.array([clef.image_score(clef.set_tokens(g), clef.set_tokens(predicted.get(k, ())), allowed)
                     for k, g in gold.items()], dtype=float)


def label_f1(gold: dict, predicted: dict, labels: list[str]) -> float:
    """Micro-F1 over ``labels`` (the finding concepts alone, say)."""
    keep = set(labels)
    tp = sum(len(g & predicted.get(k, frozenset()) & keep) for k, g in gold.items())
    fp = sum(len((predicted.get(k, frozenset()) - g) & keep) for k, g in gold.items())
    fn = sum(len((g - predicted.get(k, frozenset())) & keep) for k, g in gold.items())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def most_frequent_caption(train: list[dict]) -> str:
    return Counter(s["conversations"][-1]["content"][0]["text"] for s in train).most_common(1)[0][0]
