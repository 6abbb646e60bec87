"""The continual Med-VQA study (notebook 06): domains learned one after another, forgetting measured.

One model learns Med-VQA domains in a task order (abdomen, chest, head by default). Every method gets the
same base model, LoRA configuration and step budget (``steps_per_task`` optimizer steps per task):

- **sequential**: one LoRA fine-tuned on each task in turn (the lower bound: it forgets);
- **replay**: the same, with a small buffer of each earlier task's training questions mixed in;
- **joint**: one LoRA on every task's training questions at once, for all the steps (the upper bound);
- **adapters** (the seed's method): a pool of PEFT named adapters, one per task (the seed reserved eight
  slots per task; one suffices here), each holding its LoRA weights and its own copies of the fully
  trained modules (projector, final norm). While a task trains only its adapter is trainable
  (``model.lora.add_task_adapter``), so an earlier task's adapter is never changed. At inference each
  sample is routed to one adapter by prompt keys (``train.prompt_keys``) and a batch of mixed domains is
  answered by mixed adapters (PEFT's ``adapter_names``; ``eval.generate``).

The routing query of a sample is the frozen base model's image features, averaged over a ``route_grid`` x
``route_grid`` grid of patch cells, and its mean-pooled question features (``model.features``: adapters
disabled, no extra encoder), each L2-normalised, concatenated. The mean over all patches (``route_grid`` 1)
loses where things are: with the tiny random tower it misrouted 2-7 % of the synthetic test images at seeds
1 and 2, each one with a large finding in a corner (the findings are in the corners in every domain, the
anatomy that tells the domains apart is in the middle); the 4 x 4 cells routed every one. The
routers compared: learned keys, the true domain (oracle), the nearest task centroid of the same features
(training-free; with one key per task and a pull-only loss a key converges to its task's mean direction,
so the two should agree), a seeded random choice, and keys on the question features alone.

Task files come from ``data.vqa_tasks`` (per domain, a validation split carved by image); the synthetic
default is ``data.synthetic_vqa``. Accuracy matrices use the normalised exact match of ``eval.vqametrics``;
the measures are ``eval.continual``'s. In a params file the settings carry the prefix ``cl_``; notebook
06's parameters cell holds their defaults (``python -m brainvlm train --study cl`` reads it).
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainvlm.core.jsonio import read_json, write_json
from brainvlm.core.seeding import set_seed
from brainvlm.data import synthetic_vqa, vqa_tasks
from brainvlm.eval import bootstrap, continual, vqametrics
from brainvlm.model import collate, features, lora
from brainvlm.studies import base, controls
from brainvlm.studies.base import SettingsError, base_checkpoint, load_base, predict_samples
from brainvlm.train.checkpoints import TRAINABLE, load_tensors, load_trainable, save_tensors
from brainvlm.train.config import Stage
from brainvlm.train.fit import fit
from brainvlm.train.prompt_keys import KeyRouter

NAME = "cl"
PREFIX = "cl_"
TRAIN_NOTEBOOK = "06"
SETTINGS_FILE = "settings.json"
METHODS = ("sequential", "replay", "joint", "adapters")
ROUTERS = ("keys", "oracle", "centroid", "random", "question")
KEYS_FILE = "keys.safetensors"
ROUTING_FILE = "routing.json"
POOLING = ("image features (vision_feature_layer) averaged over a route_grid x route_grid grid of patch cells and "
           "mean-pooled question features, each L2-normalised")


@dataclass
class ClSettings:
    """Training settings of the continual study (notebook 06 declares each, ``cl_``-prefixed unless shared)."""

    seed: int
    model: str
    dtype: str
    load_in_4bit: bool
    task: str  # names data/<task>/ and the model folders
    task_orders: list  # [[abdomen, chest, head], ...]: each order is one stream; the first is the headline
    vision_tower: str  # original-layout checkpoints: a local CLIP tower instead of mm_vision_tower ("" = that)
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lr: float
    batch_size: int
    grad_accum: int
    steps_per_task: int  # optimizer steps per task; joint training gets steps_per_task x tasks
    warmup_ratio: float
    precision: str
    eval_every: int
    save_every: int
    val_samples: int
    replay_per_task: int  # replay: training questions kept from each earlier task
    key_steps: int  # Adam steps of each prompt key
    key_lr: float
    route_grid: int  # image part of a routing query: the patch grid averaged into route_grid x route_grid cells


def settings_for(params: dict[str, Any]) -> ClSettings:
    """Complete settings from the params (a missing key is an error naming it)."""
    settings = base.read_settings(ClSettings, params, PREFIX, TRAIN_NOTEBOOK)
    if settings.steps_per_task <= 0:
        raise SettingsError(f"{PREFIX}steps_per_task must be positive, got {settings.steps_per_task}")
    if settings.route_grid < 1:
        raise SettingsError(f"{PREFIX}route_grid must be >= 1 (1: the mean over all patches), got {settings.route_grid}")
    if settings.replay_per_task < 0:
        raise SettingsError(f"{PREFIX}replay_per_task must be >= 0, got {settings.replay_per_task}")
    return settings


def setting_keys() -> list[str]:
    return base.setting_keys(ClSettings, PREFIX)


def collect_settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """The settings found in a namespace (a notebook's parameters)."""
    return base.collect_settings(namespace, ClSettings, PREFIX)


def check_order(order: Sequence[str], domains: Sequence[str]) -> list[str]:
    """A task order: each domain of the data at most once (an unknown one is an error naming the known)."""
    order = list(order)
    unknown = [d for d in order if d not in domains]
    if unknown or len(set(order)) != len(order) or not order:
        raise SettingsError(f"{PREFIX}task_orders entry {order}: name each of the domains {list(domains)} "
                            f"at most once (unknown: {unknown})")
    return order


# ------------------------------------------------------------------------------------------------ data
@dataclass
class DataSource:
    """Where a run's questions come from (notebook 06's data parameters).

    ``train_file`` and ``test_file``: a VQA-RAD layout ``.json`` or LLaVA-Med ``.jsonl`` question file
    each; empty: the synthetic default (``n_train``/``n_test`` images per domain, ``image_size`` pixels).
    """

    train_file: str
    test_file: str
    image_root: str
    dataset: str
    val_fraction: float
    n_train: int
    n_test: int
    image_size: int


def build_tasks(source: DataSource, data_dir: Path, seed: int) -> dict[str, Any]:
    """Per-domain task files under ``data_dir/tasks`` and their manifest (image root, domains)."""
    data_dir = Path(data_dir)
    if bool(source.train_file) != bool(source.test_file):
        raise ValueError(f"give both {PREFIX}train_file and {PREFIX}test_file, or neither (the synthetic default)")
    if source.train_file:
        train_file, test_file = Path(source.train_file), Path(source.test_file)
        image_root = source.image_root or str(train_file.parent)
    else:
        root = synthetic_vqa.make_synthetic_vqa(data_dir / "source", source.n_train, source.n_test, seed,
                                                source.image_size)
        train_file, test_file, image_root = root / "train.jsonl", root / "test.jsonl", str(root)
    written = vqa_tasks.fuse_files(train_file, test_file, data_dir / "tasks", source.val_fraction, seed,
                                   image_root=image_root, dataset=source.dataset)
    manifest = {"image_root": str(image_root), "task_dir": str(data_dir / "tasks"), "domains": list(written),
                "files": {d: {s: str(p) for s, p in by.items()} for d, by in written.items()}}
    write_json(manifest, data_dir / "manifest.json")
    return manifest


def read_tasks(data_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, list[dict]]]]:
    """The manifest ``build_tasks`` wrote and the task files (domain -> split -> samples)."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the task files first (notebook {TRAIN_NOTEBOOK})")
    manifest = read_json(path)
    return manifest, vqa_tasks.read_domain_tasks(manifest["task_dir"], manifest["domains"])


def question_of(sample: dict) -> str:
    """The question text of a sample (its text parts, the image left out)."""
    return " ".join(p["text"] for p in sample["conversations"][0]["content"] if p["type"] == "text").strip()


def answer_of(sample: dict) -> str:
    return sample["conversations"][-1]["content"][0]["text"]


def image_path(sample: dict) -> str:
    return controls.image_parts(sample)[-1]["image_path"]


def mixed_test(tasks: dict[str, dict[str, list[dict]]], seed: int) -> list[dict]:
    """Every task's test questions in one seeded shuffled order: generation batches mix the domains."""
    every = [s for by in tasks.values() for s in by["test"]]
    return [every[i] for i in np.random.default_rng(seed).permutation(len(every))]


def replay_buffer(tasks: dict[str, dict[str, list[dict]]], earlier: Sequence[str], per_task: int,
                  seed: int) -> list[dict]:
    """``per_task`` training questions drawn (seeded, without replacement) from each earlier task."""
    out = []
    for number, domain in enumerate(earlier):
        train = tasks[domain]["train"]
        chosen = np.random.default_rng([seed, number]).choice(len(train), min(per_task, len(train)), replace=False)
        out += [train[i] for i in sorted(chosen)]
    return out


# -------------------------------------------------------------------------------------------- baselines
def chance(train: list[dict], test: list[dict]) -> float:
    """Expected accuracy of guessing uniformly among the training answers given to the same question."""
    seen: dict[str, set[str]] = {}
    for s in train:
        seen.setdefault(question_of(s), set()).add(vqametrics.normalize_answer(answer_of(s)))
    every = {vqametrics.normalize_answer(answer_of(s)) for s in train}
    return float(np.mean([1 / len(seen.get(question_of(s), every)) for s in test])) if test else float("nan")


def majority_answers(train: list[dict]) -> dict[str, str]:
    """The most frequent training answer of each question wording (ties: the first seen)."""
    counts: dict[str, Counter] = {}
    for s in train:
        counts.setdefault(question_of(s), Counter())[vqametrics.normalize_answer(answer_of(s))] += 1
    return {question: c.most_common(1)[0][0] for question, c in counts.items()}


def majority_predictions(train: list[dict], test: list[dict]) -> list[str]:
    """Each test question answered with its wording's most frequent training answer (else the task's)."""
    by_question = majority_answers(train)
    overall = Counter(vqametrics.normalize_answer(answer_of(s)) for s in train).most_common(1)[0][0]
    return [by_question.get(question_of(s), overall) for s in test]


# ------------------------------------------------------------------------------------------------ scores
def score_table(samples: list[dict], predictions: Sequence[str | None]) -> pd.DataFrame:
    """One row per question: id, domain, image, answer type, exact match (normalised) and the VQA scores."""
    rows = []
    for sample, prediction in zip(samples, predictions):
        meta = sample["metadata"]
        scores = vqametrics.vqa_sample_scores(answer_of(sample), prediction, meta.get("answer_type", "OPEN"))
        rows.append({"id": sample["id"], "domain": meta["domain"], "image": image_path(sample),
                     "prediction": prediction, **scores})
    return pd.DataFrame(rows)


def task_accuracy(table: pd.DataFrame, domains: Sequence[str], closed_only: bool = False) -> list[float]:
    """Exact match per domain, in ``domains`` order (NaN for a domain without questions)."""
    chosen = table[table["answer_type"] == "CLOSED"] if closed_only else table
    means = chosen.groupby("domain")["exact_match"].mean()
    return [float(means.get(d, np.nan)) for d in domains]


def average_over_tasks(table: pd.DataFrame) -> float:
    """The mean over domains of each domain's exact match (the final average of a last row)."""
    return float(table.groupby("domain")["exact_match"].mean().mean()) if len(table) else float("nan")


def paired_gap(a: pd.DataFrame, b: pd.DataFrame, n_boot: int, seed: int) -> dict[str, float]:
    """Average-over-tasks exact match of ``a`` minus ``b`` (same questions, same order), paired bootstrap
    over images."""
    if list(a["id"]) != list(b["id"]):
        raise ValueError("paired score tables must hold the same questions in the same order")
    return bootstrap.paired_difference(a["exact_match"].astype(float), b["exact_match"].astype(float),
                                       list(a["image"]), n_boot, seed, groups=list(a["domain"]))


# -------------------------------------------------------------------------------------------- training
def lora_options(settings: ClSettings) -> dict[str, Any]:
    return {"r": settings.lora_r, "alpha": settings.lora_alpha, "dropout": settings.lora_dropout,
            "mixed_batches": True}


def _fingerprint(settings: ClSettings, base_model: str, data: list[dict], extra: dict) -> str:
    ids = "\n".join(s["id"] for s in data)
    record = {"settings": asdict(settings), "lora": lora_options(settings), "base": base_model, "samples": hashlib.sha256(ids.encode()).hexdigest(),
              **extra}
    return hashlib.sha256(repr(sorted(record.items())).encode()).hexdigest()


def _fit_or_load(model: Any, collator: Any, stage: Stage, settings: ClSettings, output: Path, record: str,
                 progress: bool, resume: bool = False, stop_after: int | None = None) -> pd.DataFrame:
    """Train one stage into ``output`` or, when ``output`` holds a finished fit of the same record, load it.

    ``resume``: continue an unfinished fit from its latest checkpoint (else it starts again).
    """
    done = output / "adapter" / TRAINABLE
    finished = (output / SETTINGS_FILE).is_file() and read_json(output / SETTINGS_FILE).get("record") == record
    if done.is_file() and finished:
        load_trainable(model, done)
        return pd.read_csv(output / "log.csv")
    if not resume:
        shutil.rmtree(output, ignore_errors=True)
    result = fit(model, collator, [stage], base.train_config(settings, output, progress), resume=resume,
                 stop_after=stop_after)
    write_json({"record": record, "stage": stage.name, "train": len(stage.train)}, output / SETTINGS_FILE)
    return result.log


@dataclass
class Trained:
    """A trained method: the model, the adapter file of each row (after each task) and the loss log."""

    method: str
    order: list[str]
    model: Any
    processor: Any
    rows: list[Path]  # trainable tensors after each task (joint: one row, after all)
    log: pd.DataFrame
    base: str
    folder: Path
    settings: ClSettings

    def describe(self) -> str:
        return (f"{self.method} through {' -> '.join(self.order)}: {len(self.log)} steps, "
                f"adapters after each task under {self.folder}")


def base_for(settings: ClSettings, run_dir: Path, tasks: dict[str, dict[str, list[dict]]]) -> str:
    return base_checkpoint(settings.model, settings.seed, Path(run_dir) / "models" / "cl_base",
                           base.vocabulary([s for by in tasks.values() for s in by["train"]]))


def train(params: dict[str, Any], method: str, run_dir: Path, name: str | None = None, resume: bool = False,
          stop_after: int | None = None, progress: bool = True, order: Sequence[str] | None = None) -> Trained:
    """Train ``method`` (one of ``METHODS``) through a task order into ``models/<cl_task>_<method>_<order>/``.

    Each task's fit has its own folder (``<k>_<domain>/``); a finished one is loaded, not retrained.

    Args:
        order: the task order (default: the first of ``cl_task_orders``).
        name: the model folder instead of the default.
        resume, stop_after: as ``fit``'s, for each task's fit.
    """
    if method not in METHODS:
        raise SettingsError(f"method {method!r} unknown; use one of {list(METHODS)}")
    settings = settings_for(params)
    set_seed(settings.seed)
    task = settings.task
    manifest, tasks = read_tasks(Path(run_dir) / "data" / task)
    order = check_order(order or settings.task_orders[0], manifest["domains"])
    checkpoint = base_for(settings, run_dir, tasks)
    model, processor = load_base(checkpoint, settings.dtype, settings.load_in_4bit, settings.vision_tower)
    collator = collate.Collator(processor, collate.CollateConfig(image_root=manifest["image_root"]))
    folder = Path(run_dir) / "models" / (name or f"{task}_{method}_{'-'.join(order)}")
    logs, rows = [], []
    if method == "joint":
        model = lora.add_lora(model, seed=settings.seed, **lora_options(settings))
        train_all = [s for d in order for s in tasks[d]["train"]]
        val = [s for d in order for s in tasks[d].get("val", [])[: settings.val_samples]]
        stage = Stage("joint", train_all, val, max_steps=settings.steps_per_task * len(order))
        logs.append(_fit_or_load(model, collator, stage, settings, folder / "joint",
                                 _fingerprint(settings, checkpoint, train_all, {"method": method}), progress,
                                 resume, stop_after))
        rows.append(folder / "joint" / "adapter" / TRAINABLE)
    for number, domain in enumerate(order if method != "joint" else []):
        if method == "adapters":
            if number == 0:
                model = lora.add_lora(model, seed=settings.seed, adapter_name=domain, **lora_options(settings))
            else:
                lora.add_task_adapter(model, domain, seed=settings.seed + number)
        elif number == 0:
            model = lora.add_lora(model, seed=settings.seed, **lora_options(settings))
        data = tasks[domain]["train"]
        if method == "replay":
            data = data + replay_buffer(tasks, order[:number], settings.replay_per_task, settings.seed)
        stage = Stage(domain, data, tasks[domain].get("val", [])[: settings.val_samples],
                      max_steps=settings.steps_per_task)
        record = _fingerprint(settings, checkpoint, data, {"method": method, "order": order[: number + 1]})
        logs.append(_fit_or_load(model, collator, stage, settings, folder / f"{number + 1}_{domain}", record,
                                 progress, resume, stop_after).assign(task=domain))
        rows.append(folder / f"{number + 1}_{domain}" / "adapter" / TRAINABLE)
    log = pd.concat(logs, ignore_index=True)
    if method != "joint":
        log["step"] = np.arange(1, len(log) + 1)
    return Trained(method, order, model.eval(), processor, rows, log, checkpoint, folder, settings)


def adapter_tensors(model: Any, adapter: str) -> dict[str, Any]:
    """Every tensor of one named adapter (its LoRA weights and its copies of the fully trained modules)."""
    marker = f".{adapter}."
    return {n: p.detach().clone() for n, p in model.named_parameters()
            if marker in n and ("lora_" in n or "modules_to_save" in n)}


def pool_fingerprint(model: Any) -> str:
    """SHA-256 over every adapter tensor of a pool (what a routed answer file was made with)."""
    digest = hashlib.sha256()
    for name, value in sorted((n, p) for n, p in model.named_parameters() if "lora_" in n or "modules_to_save" in n):
        digest.update(name.encode())
        digest.update(value.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def save_pool(model: Any, folder: Path) -> Path:
    """Every task adapter of a pool in PEFT's multi-adapter layout (``folder/<task>/``)."""
    model.save_pretrained(folder, save_embedding_layers=False)  # LoRA on the head: the base head is not copied
    return Path(folder)


def load_pool(base_model: Any, folder: Path, tasks: Sequence[str]) -> Any:
    """A saved pool on a freshly loaded base: one named adapter per task, in order."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base_model, Path(folder) / tasks[0], adapter_name=tasks[0])
    for task in tasks[1:]:
        model.load_adapter(Path(folder) / task, adapter_name=task)
    return model.eval()


# -------------------------------------------------------------------------------------------- routing
def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm (a zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def queries(model: Any, processor: Any, samples: list[dict], image_root: str, grid: int = 1,
            progress: bool = True) -> dict[str, np.ndarray]:
    """The routing query of each sample: ``image`` and ``question`` features of the frozen base, each
    L2-normalised; ``both`` concatenates them (the keys' space). The image features are the patch grid's
    ``grid`` x ``grid`` cell means (``model.features``): the mean over all patches loses where things are,
    and the domains differ in the anatomy in the middle while every domain's findings sit in the corners."""
    image = unit_rows(features.image_features(model, processor, [Path(image_root) / image_path(s) for s in samples],
                                              progress=progress, grid=grid))
    question = unit_rows(features.text_features(model, processor.tokenizer, [question_of(s) for s in samples],
                                           progress=progress))
    return {"image": image, "question": question, "both": np.concatenate([image, question], axis=1)}


def learn_keys(train_queries: dict[str, np.ndarray], order: Sequence[str], settings: ClSettings,
               folder: Path, encoder: str, space: str = "both") -> KeyRouter:
    """One key per task, learned on its own training queries and saved as ``keys/<task>.safetensors``; then
    merged into ``keys.safetensors`` with the routing config ``routing.json`` (task names, encoder,
    pooling)."""
    import torch

    router = KeyRouter()
    (Path(folder) / "keys").mkdir(parents=True, exist_ok=True)
    for number, task in enumerate(order):
        router.add(task, train_queries[task], settings.key_steps, settings.key_lr, settings.seed + number)
        save_tensors({"key": torch.as_tensor(router.keys[-1])}, Path(folder) / "keys" / f"{task}.safetensors")
    merged = {"keys": torch.as_tensor(np.stack(router.keys))}
    save_tensors(merged, Path(folder) / KEYS_FILE)
    write_json({"tasks": list(order), "encoder": encoder, "pooling": POOLING, "route_grid": settings.route_grid,
                "features": space, "top_k": 1,
                "key_steps": settings.key_steps, "key_lr": settings.key_lr}, Path(folder) / ROUTING_FILE)
    return router


def load_keys(folder: Path) -> tuple[KeyRouter, dict[str, Any]]:
    """The router and routing config that ``learn_keys`` saved."""
    config = read_json(Path(folder) / ROUTING_FILE)
    keys = load_tensors(Path(folder) / KEYS_FILE)["keys"].numpy()
    if len(keys) != len(config["tasks"]):
        raise ValueError(f"{folder}: {len(keys)} keys for tasks {config['tasks']}")
    return KeyRouter(list(config["tasks"]), list(keys)), config


def routing_record(folder: Path) -> dict[str, Any]:
    """What the resume guard of routed answers keeps: the key file's hash and the routing config."""
    digest = hashlib.sha256((Path(folder) / KEYS_FILE).read_bytes()).hexdigest()
    return {"keys_sha256": digest, **read_json(Path(folder) / ROUTING_FILE)}


def centroid_router(train_queries: dict[str, np.ndarray], order: Sequence[str]) -> KeyRouter:
    """The training-free twin of the keys: each task's normalised mean query."""
    means = unit_rows(np.stack([train_queries[t].mean(axis=0) for t in order]))
    return KeyRouter(list(order), list(means))


def nearest(router: KeyRouter, queries: np.ndarray, seen: Sequence[str]) -> list[str]:
    """For each query row, the task among ``seen`` whose key is the most similar."""
    seen = list(seen)
    index = [router.tasks.index(t) for t in seen]
    return [seen[i] for i in router.similarities(queries)[:, index].argmax(axis=1)]


def route(router_name: str, samples: list[dict], seen: Sequence[str], test_queries: dict[str, np.ndarray],
          keys: KeyRouter, centroids: KeyRouter, question_keys: KeyRouter, seed: int) -> list[str]:
    """The adapter of each sample among the tasks ``seen`` so far, by one router.

    ``oracle`` sends a sample to its own domain's adapter, or (a task not yet learned) to the newest one.
    """
    seen = list(seen)
    if router_name == "keys":
        return nearest(keys, test_queries["both"], seen)
    if router_name == "centroid":
        return nearest(centroids, test_queries["both"], seen)
    if router_name == "question":
        return nearest(question_keys, test_queries["question"], seen)
    if router_name == "random":
        rng = np.random.default_rng(seed)
        return [seen[i] for i in rng.integers(0, len(seen), len(samples))]
    if router_name == "oracle":
        return [s["metadata"]["domain"] if s["metadata"]["domain"] in seen else seen[-1] for s in samples]
    raise ValueError(f"router {router_name!r} unknown; routers: {list(ROUTERS)}")


def confusion(routed: Sequence[str], truth: Sequence[str], tasks: Sequence[str]) -> pd.DataFrame:
    """Rows: true domain; columns: the adapter chosen; counts."""
    table = pd.crosstab(pd.Series(list(truth), name="domain"), pd.Series(list(routed), name="routed to"))
    return table.reindex(index=list(tasks), columns=list(tasks), fill_value=0)



# ------------------------------------------------------------------------------------------- answers
def answer_rows(trained: Trained, samples: list[dict], image_root: str, out_dir: Path, batch_size: int,
                max_new_tokens: int, progress: bool = True) -> list[pd.DataFrame]:
    """One adapter per row (sequential, replay, joint): the score table of each row's answers.

    Each row's trainable tensors are loaded in turn, so the model ends holding the last row's weights.
    """
    tables = []
    for number, row in enumerate(trained.rows, 1):
        load_trainable(trained.model, row)
        answers = predict_samples(trained.model, trained.processor, samples,
                                  Path(out_dir) / f"06_{trained.folder.name}_row{number}.jsonl", image_root,
                                  batch_size, max_new_tokens, progress)
        tables.append(score_table(samples, answers))
    return tables


def answer_routed(pool: Trained, samples: list[dict], routes: Sequence[str], image_root: str, out_path: Path,
                  routing: dict[str, Any], batch_size: int, max_new_tokens: int,
                  progress: bool = True) -> pd.DataFrame:
    """A pool's answers, each sample through the adapter its route names (batches mix adapters)."""
    answers = predict_samples(pool.model, pool.processor, samples, out_path, image_root, batch_size,
                              max_new_tokens, progress, weights=pool_fingerprint(pool.model),
                              routes=dict(zip([s["id"] for s in samples], routes)), routing=routing)
    return score_table(samples, answers).assign(routed_to=list(routes))


def answer_zero_shot(trained: Trained, samples: list[dict], image_root: str, out_path: Path, batch_size: int,
                     max_new_tokens: int, progress: bool = True) -> pd.DataFrame:
    """The base model's answers (every adapter disabled): row 0 of every accuracy matrix."""
    with trained.model.disable_adapter():
        answers = predict_samples(trained.model, trained.processor, samples, out_path, image_root, batch_size,
                                  max_new_tokens, progress, weights=f"base:{trained.base}")
    return score_table(samples, answers)


def order_measures(params: dict[str, Any], run_dir: Path, order: Sequence[str], samples: list[dict],
                   zero_shot: pd.DataFrame, train_queries: dict[str, dict[str, np.ndarray]],
                   test_queries: dict[str, np.ndarray], image_root: str, out_dir: Path, batch_size: int,
                   max_new_tokens: int, progress: bool = True) -> dict[str, dict[str, float]]:
    """Sequential fine-tuning and the key-routed task adapters through one more task order.

    Both are trained (or loaded) in that order and answer ``samples`` after each task; the adapters' keys are
    learned on ``train_queries`` (the frozen base's features, the same in every order). Returns each one's
    continual metrics, under ``sequential`` and ``adapters · keys``.
    """
    order = list(order)
    sequential = train(params, "sequential", run_dir, order=order, progress=progress)
    sequential_rows = answer_rows(sequential, samples, image_root, out_dir, batch_size, max_new_tokens, progress)
    del sequential  # one model in memory at a time
    pool = train(params, "adapters", run_dir, order=order, progress=progress)
    keys = learn_keys({d: q["both"] for d, q in train_queries.items()}, order, pool.settings, pool.folder, pool.base)
    routing = {**routing_record(pool.folder), "router": "keys"}
    routed_rows = [answer_routed(pool, samples, nearest(keys, test_queries["both"], order[:i + 1]), image_root,
                                 Path(out_dir) / f"06_{pool.folder.name}_keys_row{i + 1}.jsonl", routing, batch_size,
                                 max_new_tokens, progress) for i in range(len(order))]
    return {"sequential": continual.continual_metrics(accuracy_matrix(zero_shot, sequential_rows, order),
                                                      zero_shot=True),
            "adapters · keys": continual.continual_metrics(accuracy_matrix(zero_shot, routed_rows, order),
                                                           zero_shot=True)}


def accuracy_matrix(zero_shot: pd.DataFrame, rows: Sequence[pd.DataFrame], order: Sequence[str],
                    closed_only: bool = False) -> list[list[float]]:
    """``R[i][j]``: exact match on task ``j`` after task ``i`` (row 0: zero-shot), tasks in training order."""
    return [task_accuracy(table, order, closed_only) for table in (zero_shot, *rows)]


def mean_image_samples(tasks: dict[str, dict[str, list[dict]]], samples: list[dict], image_root: str,
                       out_root: Path, size: int) -> list[dict]:
    """Copies of the samples whose image is their domain's mean training image (written under ``out_root``,
    paths relative to it): the domain's style without any individual's planted findings."""
    from brainvlm.data.views import ViewConfig

    means = {}
    for domain, by_split in tasks.items():
        relative = controls.write_mean_image(by_split["train"], Path(image_root), ViewConfig(size=size),
                                             out_root=Path(out_root) / domain)
        means[domain] = f"{domain}/{relative}"
    return [controls.blank_query([s], means[s["metadata"]["domain"]])[0] for s in samples]


def bwt_interval(rows: Sequence[pd.DataFrame], order: Sequence[str], n_boot: int, seed: int) -> dict[str, Any]:
    """Backward transfer with a paired bootstrap interval over images: each earlier task's questions
    answered after the last task versus right after their own task (same questions, same order)."""
    earlier = list(order[:-1])
    if not earlier:
        return {"point": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_units": 0}
    last = pd.concat([rows[-1][rows[-1]["domain"] == d] for d in earlier], ignore_index=True)
    learned = pd.concat([rows[j][rows[j]["domain"] == d] for j, d in enumerate(earlier)], ignore_index=True)
    return paired_gap(last, learned, n_boot, seed)
