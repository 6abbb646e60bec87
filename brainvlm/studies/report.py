"""The radiology report study (notebook 05): a two-stage curriculum, EHR on/off, baselines.

Stage A trains on image-only records (Impression + CheXpert), stage B on image + EHR records (adds the ICD
line); one model and one adapter run through the stages with the multi-stage ``fit``. An EHR-dropout
probability removes the ``Patient Data:`` block from stage-B training samples, so the model also learns to
answer without it. Evaluation asks the same model the same test images with the EHR on and off (the
stage-B prompt without its patient-data block, the instruction unchanged) and with the query image
replaced by the mean training image or a blank one; differences carry paired-bootstrap intervals over
patients (``eval.reportmetrics``).

Data come from one of three sources, all through the same builder or adapter: the synthetic default
(``data.synthetic_cxr``, a reports table), a user's reports table (``data.curriculum.build_records``) or
the seed's curriculum JSONL files with their optional joins (``data.adapters.curriculum``). Records are
split by patient, so both stages of an image and all of a patient's studies share a split.

In a params file the study's settings carry the prefix ``report_``; notebook 05's parameters cell holds
their defaults (``python -m brainvlm train --study report`` reads it).
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainvlm.core.jsonio import read_json, read_jsonl, write_json, write_jsonl
from brainvlm.core.seeding import set_seed
from brainvlm.data import splits, synthetic_cxr
from brainvlm.data.adapters.curriculum import from_curriculum, read_joins, read_records, record_ids, strip_ehr
from brainvlm.data.adapters.images import check_image_path
from brainvlm.data.curriculum import build_records
from brainvlm.model import collate, lora
from brainvlm.studies import base, controls
from brainvlm.studies.base import SettingsError, base_checkpoint, load_base, predict_samples
from brainvlm.train import distributed
from brainvlm.train.config import Stage
from brainvlm.train.fit import FitResult, fit

NAME = "report"
PREFIX = "report_"
TRAIN_NOTEBOOK = "05"
SETTINGS_FILE = "settings.json"
MODES = ("image_only", "image_ehr")
VARIANTS = {  # name -> stages replacing the params' list (same step budget)
    "b_only": [{"name": "B", "share": 1.0, "mode": "image_ehr"}],
    "a_only": [{"name": "A", "share": 1.0, "mode": "image_only"}],
    "ab_shuffled": [{"name": "AB", "share": 1.0, "mode": ["image_only", "image_ehr"]}],
    "no_dropout": None,  # the params' stages with ehr_dropout 0
}


@dataclass
class ReportSettings:
    """Training settings of the report study (notebook 05 declares each, ``report_``-prefixed unless shared)."""

    seed: int
    model: str
    dtype: str
    load_in_4bit: bool
    vision_tower: str  # original-layout checkpoints: a local CLIP tower instead of mm_vision_tower ("" = that)
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lr: float
    batch_size: int
    grad_accum: int
    steps: int  # optimizer steps over all stages; 0: from epochs
    epochs: float  # passes over the training records (both stages) when steps is 0
    warmup_ratio: float  # of each stage's steps
    precision: str  # fp32 | bf16 | fp16
    stages: list  # [{"name": "A", "share": 0.35, "mode": "image_only"}, {"name": "B", "share": 0.65, ...}]
    ehr_dropout: float  # probability of removing the patient-data block from a stage-B training sample
    eval_every: int
    save_every: int
    val_samples: int


def param_key(setting: str) -> str:
    return base.param_key(setting, PREFIX)


def setting_keys() -> list[str]:
    """Every params key of the training settings."""
    return base.setting_keys(ReportSettings, PREFIX)


def collect_settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """The settings found in a namespace (a notebook's parameters)."""
    return base.collect_settings(namespace, ReportSettings, PREFIX)


def check_stages(stages: list) -> None:
    """Each stage names itself, a positive share (the shares sum to 1), its mode(s) and optionally an lr."""
    if not isinstance(stages, list) or not stages:
        raise SettingsError(f"{PREFIX}stages must be a non-empty list of stages, got {stages!r}")
    for number, spec in enumerate(stages):
        where = f"{PREFIX}stages[{number}]"
        if not isinstance(spec, dict) or not {"name", "share", "mode"} <= set(spec):
            raise SettingsError(f"{where}: a stage is {{name, share, mode[, lr]}}, got {spec!r}")
        unknown = set(spec) - {"name", "share", "mode", "lr"}
        modes = spec["mode"] if isinstance(spec["mode"], list) else [spec["mode"]]
        if unknown or not modes or any(m not in MODES for m in modes):
            raise SettingsError(f"{where}: unknown key(s) {sorted(unknown)} or mode {spec['mode']!r}; "
                                f"modes are {list(MODES)} (a list draws from several)")
    shares = [float(s["share"]) for s in stages]
    if any(s <= 0 for s in shares) or abs(sum(shares) - 1) > 1e-6:
        raise SettingsError(f"{PREFIX}stages: shares must be positive and sum to 1, got {shares}")


def settings_for(params: dict[str, Any]) -> ReportSettings:
    """Complete settings from the params (a missing key is an error naming it)."""
    settings = base.read_settings(ReportSettings, params, PREFIX, TRAIN_NOTEBOOK)
    check_stages(settings.stages)
    if not 0 <= settings.ehr_dropout < 1:
        raise SettingsError(f"{PREFIX}ehr_dropout must be in [0, 1), got {settings.ehr_dropout}")
    if settings.steps <= 0 and settings.epochs <= 0:
        raise SettingsError(f"{PREFIX}steps or {PREFIX}epochs must be positive")
    return settings


# ------------------------------------------------------------------------------------------------ data
@dataclass
class DataSource:
    """Where a run's report data come from (notebook 05's data parameters).

    Exactly one of: ``reports_table`` (CSV, one row per image, ``data.curriculum.build_records``),
    ``curriculum_files`` (the seed's JSONL records, pooled then split by patient) or neither (the synthetic
    default, ``n_patients`` patients drawn with ``seed``).
    """

    reports_table: str
    curriculum_files: list
    image_root: str
    ehr_context: str  # optional join of the curriculum files, keyed by study id
    chexpert_dict: str  # optional join of the curriculum files, keyed by study id
    ehr_columns: list
    prompt_a: str
    prompt_b: str
    n_patients: int
    image_size: int


def load_records(source: DataSource, out_dir: Path, seed: int, progress: bool = True
                 ) -> tuple[list[dict], str, dict[str, dict]]:
    """The curriculum records of the source, the image root, and the joins (study id -> EHR / CheXpert)."""
    if source.reports_table and source.curriculum_files:
        raise ValueError(f"give {PREFIX}reports_table or {PREFIX}curriculum_files, not both")
    joins: dict[str, dict] = {}
    if source.curriculum_files:
        if not source.image_root:
            raise ValueError(f"{PREFIX}image_root is needed with {PREFIX}curriculum_files: the records' image "
                             "paths are relative to it")
        records = [{**record, "_where": f"{path}:{number}"} for path in source.curriculum_files
                   for number, record in read_records(path)]
        for record in records:  # a path out of the root is refused here; missing images by the validator
            check_image_path(str(record.get("image", "")), source.image_root, record["_where"], must_exist=False)
        ehr, chexpert = read_joins(source.ehr_context or None, source.chexpert_dict or None)
        joins = {"ehr_context": ehr, "chexpert": chexpert}
        return records, source.image_root, joins
    if source.reports_table:
        table_path = Path(source.reports_table)
        image_root = source.image_root or str(table_path.parent)
    else:
        table_path = synthetic_cxr.make_synthetic_cxr(out_dir, source.n_patients, seed, source.image_size,
                                                      progress=progress)
        image_root = str(table_path.parent)
    table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
    table["row"] = np.arange(2, len(table) + 2)  # the file line of each row (line 1 is the header)
    records = build_records(table, source.ehr_columns, source.prompt_a, source.prompt_b, where=str(table_path))
    return records, image_root, joins


def split_records(records: list[dict], fractions: tuple[float, float, float], seed: int) -> dict[str, list[dict]]:
    """Records split by patient (a patient's studies, and both stages of an image, in one split)."""
    patient_of = [record_ids(r, r.get("_where", f"record {i + 1}"))[0] for i, r in enumerate(records)]
    patients = sorted(set(patient_of))
    frame = pd.DataFrame({"subject": patients, "group": patients, "target": ["all"] * len(patients)})
    assignment = splits.split_subjects(frame, fractions=fractions, seed=seed)
    split_of = dict(zip(assignment["subject"], assignment["split"]))
    out: dict[str, list[dict]] = {s: [] for s in splits.SPLITS}
    for record, patient in zip(records, patient_of):
        out[split_of[patient]].append(record)
    return out


def to_samples(records_by_split: dict[str, list[dict]], cohort_name: str,
               joins: dict[str, dict] | None = None) -> dict[str, list[dict]]:
    """Canonical ``report`` samples per split, numbered inside each split; joins added to the metadata."""
    out = {}
    for split, records in records_by_split.items():
        samples = []
        for index, record in enumerate(records, 1):
            where = record.get("_where")
            sample = from_curriculum({k: v for k, v in record.items() if k != "_where"}, index, split,
                                     cohort_name=cohort_name, where=where)
            study = sample["metadata"]["study_id"]
            for key, table in (joins or {}).items():
                if study in table:
                    sample["metadata"][key] = dict(table[study])
            samples.append(sample)
        out[split] = samples
    return out


def audit(samples_by_split: dict[str, list[dict]]) -> pd.DataFrame:
    """Checks: no patient in two splits; both stages of an image in one split."""
    rows = [{"split": split, "patient": s["metadata"]["patient_id"], "image": controls.image_parts(s)[-1]["image_path"],
             "stage": s["metadata"]["stage"]} for split, samples in samples_by_split.items() for s in samples]
    table = pd.DataFrame(rows, columns=["split", "patient", "image", "stage"])
    crossing = lambda key: sorted(k for k, n in table.groupby(key)["split"].nunique().items() if n > 1)
    checks = [("no patient in two splits", crossing("patient")),
              ("both stages of an image in one split", crossing("image"))]
    return pd.DataFrame([{"check": name, "passed": not bad, "detail": ", ".join(map(str, bad[:10])) or "none"}
                         for name, bad in checks])


def summary(samples_by_split: dict[str, list[dict]]) -> pd.DataFrame:
    """Samples, images and patients per split and stage."""
    rows = [{"split": split, "stage": s["metadata"]["stage"], "mode": s["metadata"]["mode"],
             "patient": s["metadata"]["patient_id"], "image": controls.image_parts(s)[-1]["image_path"]}
            for split, samples in samples_by_split.items() for s in samples]
    table = pd.DataFrame(rows)
    return (table.groupby(["split", "stage", "mode"], sort=False)
            .agg(samples=("image", "size"), images=("image", "nunique"), patients=("patient", "nunique"))
            .reset_index())


def write_data(samples_by_split: dict[str, list[dict]], data_dir: Path, image_root: str) -> dict[str, Any]:
    """``data/<task>/<split>.jsonl`` and the task's manifest (image root, files, counts)."""
    files = {split: str(write_jsonl(samples, data_dir / f"{split}.jsonl")) for split, samples in
             samples_by_split.items()}
    manifest = {"image_root": str(image_root), "files": files,
                "counts": {split: len(samples) for split, samples in samples_by_split.items()}}
    write_json(manifest, data_dir / "manifest.json")
    return manifest


def read_data(data_dir: Path) -> dict[str, Any]:
    """The manifest ``write_data`` wrote."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the report data first (notebook {TRAIN_NOTEBOOK})")
    return read_json(path)


def ehr_off(sample: dict) -> dict:
    """A copy of a sample whose prompt has no ``Patient Data:`` block (the instruction unchanged)."""
    out = copy.deepcopy(sample)
    for part in out["conversations"][0]["content"]:
        if part["type"] == "text":
            part["text"] = strip_ehr(part["text"]) or "Image:"
    out["metadata"] = {**out["metadata"], "mode": "image_ehr_off"}
    return out


def of_mode(samples: list[dict], mode: str) -> list[dict]:
    return [s for s in samples if s["metadata"]["mode"] == mode]


# -------------------------------------------------------------------------------------------- training
def total_steps(settings: ReportSettings, n_train: int) -> int:
    """``steps``, or ``epochs`` passes over the training records at the global batch size."""
    if settings.steps > 0:
        return settings.steps
    batch = settings.batch_size * settings.grad_accum * distributed.world()[1]
    return max(1, math.ceil(settings.epochs * n_train / batch))


def stage_samples(train: list[dict], settings: ReportSettings) -> list[Stage]:
    """The stages of the curriculum: each draws the records of its mode(s); EHR dropout applied to stage B."""
    rng = np.random.default_rng(settings.seed)
    total = total_steps(settings, len(train))
    ends = np.round(total * np.cumsum([float(spec["share"]) for spec in settings.stages])).astype(int)
    stages = []
    for spec, start, end in zip(settings.stages, [0, *ends[:-1]], ends):
        modes = spec["mode"] if isinstance(spec["mode"], list) else [spec["mode"]]
        chosen = [s for s in train if s["metadata"]["mode"] in modes]
        if not chosen:
            raise ValueError(f"stage {spec['name']!r}: no training records of mode {modes}")
        if settings.ehr_dropout > 0:
            drop = rng.random(len(chosen)) < settings.ehr_dropout
            chosen = [ehr_off(s) if d and s["metadata"]["mode"] == "image_ehr" else s for s, d in zip(chosen, drop)]
        steps = max(1, int(end - start))  # cumulative rounding: the stages add up to the total
        stages.append(Stage(str(spec["name"]), chosen, [], max_steps=steps, lr=spec.get("lr")))
    return stages


def schedule_table(stages: list[Stage]) -> pd.DataFrame:
    """The stage schedule: name, steps, first and last step, records, lr override, EHR dropped."""
    rows, start = [], 0
    for stage in stages:
        modes = Counter(s["metadata"]["mode"] for s in stage.train)
        rows.append({"stage": stage.name, "steps": stage.max_steps, "first_step": start + 1,
                     "last_step": start + stage.max_steps, "records": len(stage.train),
                     **{f"records_{m}": modes.get(m, 0) for m in (*MODES, "image_ehr_off")},
                     "lr": stage.lr if stage.lr is not None else "base"})
        start += stage.max_steps
    return pd.DataFrame(rows)


@dataclass
class Trained:
    """A trained report model: model (best adapter), processor, the fit, its settings, folder and base."""

    model: Any
    processor: Any
    result: FitResult
    settings: ReportSettings
    output_dir: Path
    base: str
    stages: list[Stage]


def base_for(settings: ReportSettings, run_dir: Path, train_samples: list[dict]) -> str:
    """The run's base checkpoint of the report study (the tiny default built for its texts)."""
    return base_checkpoint(settings.model, settings.seed, Path(run_dir) / "models" / "report_base",
                           base.vocabulary(train_samples))


def train(params: dict[str, Any], task: str, run_dir: Path, name: str | None = None, resume: bool = False,
          stop_after: int | None = None, progress: bool = True, variant: str | None = None) -> Trained:
    """Train the report model through its stages into ``models/<name>/``.

    Args:
        variant: a key of ``VARIANTS`` (``b_only``: stage B alone on the same step budget, ...), or None
            for the params' curriculum.
    """
    if variant is not None and variant not in VARIANTS:
        raise SettingsError(f"variant {variant!r} unknown; use one of {sorted(VARIANTS)}")
    overrides: dict[str, Any] = {}
    if variant is not None and VARIANTS[variant] is not None:
        overrides[PREFIX + "stages"] = VARIANTS[variant]
    if variant == "no_dropout":
        overrides[PREFIX + "ehr_dropout"] = 0.0
    settings = settings_for({**params, **overrides})
    set_seed(settings.seed)
    manifest = read_data(Path(run_dir) / "data" / task)
    train_samples = read_jsonl(manifest["files"]["train"])
    val = of_mode(read_jsonl(manifest["files"]["val"]), "image_ehr")
    checkpoint = base_for(settings, run_dir, train_samples)
    model, processor = load_base(checkpoint, settings.dtype, settings.load_in_4bit, settings.vision_tower)
    model = lora.add_lora(model, r=settings.lora_r, alpha=settings.lora_alpha, dropout=settings.lora_dropout,
                          seed=settings.seed)
    schedule = stage_samples(train_samples, settings)
    schedule[-1].val = val[: settings.val_samples]
    output = Path(run_dir) / "models" / (name or task)
    if distributed.world()[0] == 0:
        write_json({"base_model": checkpoint, "task": task, "variant": variant, **asdict(settings)},
                   output / SETTINGS_FILE)
    config = base.train_config(settings, output, progress)
    result = fit(model, collate.Collator(processor, collate.CollateConfig(image_root=manifest["image_root"])),
                 schedule, config, resume=resume, stop_after=stop_after)
    return Trained(model.eval(), processor, result, settings, output, checkpoint, schedule)


# ------------------------------------------------------------------------------------------ answers
def predict(model: Any, processor: Any, samples: list[dict], out_path: Path, image_root: str,
            batch_size: int, max_new_tokens: int, progress: bool = True, weights: str | None = None) -> list[str]:
    """Greedy reports for samples, in sample order (``studies.base.predict_samples``: resumable, guarded)."""
    return predict_samples(model, processor, samples, out_path, image_root, batch_size, max_new_tokens, progress,
                           weights)


def control_images(train: list[dict], image_root: str, out_root: Path, size: int) -> dict[str, str]:
    """The mean training image and a blank image, written under ``out_root`` (paths relative to it)."""
    from brainvlm.data.views import ViewConfig

    return {"mean_image": controls.write_mean_image(of_mode(train, "image_ehr"), Path(image_root),
                                                    ViewConfig(size=size), out_root=Path(out_root)),
            "blank_image": controls.write_blank_image(Path(out_root), size)}
