"""The radiology report study (notebook 05, in progress): a two-stage curriculum, EHR on/off, baselines.

Stage A trains on image-only records (Impression + CheXpert), stage B on image + EHR records (adds the ICD
line); one model and one adapter run through both stages with the multi-stage ``fit``. An EHR-dropout
probability removes the ``Patient Data:`` block from stage-B training samples, so the model also learns to
answer without it. Evaluation asks the same model the same test images with the EHR on and off (the
stage-B prompt without its patient-data block, the instruction unchanged) and with the query image
replaced by the mean training image or a blank one; differences carry paired-bootstrap intervals over
patients.

In a params file the study's settings carry the prefix ``report_``; notebook 05's parameters cell holds
their defaults (``python -m brainvlm train --study report`` reads it).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainvlm.core.jsonio import read_json, read_jsonl, write_json, write_jsonl
from brainvlm.core.seeding import set_seed
from brainvlm.data import splits
from brainvlm.data.adapters.curriculum import from_curriculum
from brainvlm.eval import answers, generate
from brainvlm.model import collate, lora, templates
from brainvlm.model.loader import model_family
from brainvlm.studies import SHARED_PARAMS
from brainvlm.studies.base import base_checkpoint, load_base
from brainvlm.train import distributed
from brainvlm.train.config import Stage, TrainConfig
from brainvlm.train.fit import FitResult, fit

NAME = "report"
PREFIX = "report_"
TRAIN_NOTEBOOK = "05"
SETTINGS_FILE = "settings.json"
EHR_BLOCK = re.compile(r"Patient Data:\s*\{.*?\}\s*\n", re.DOTALL)


class SettingsError(ValueError):
    """Settings that are incomplete or unknown; the message names the keys."""


@dataclass
class ReportSettings:
    """Training settings of the report study (notebook 05 declares each, ``report_``-prefixed unless shared)."""

    seed: int
    model: str
    dtype: str
    load_in_4bit: bool
    lora_r: int
    lora_alpha: int
    lr: float
    batch_size: int
    steps: int  # optimizer steps over all stages
    stages: list  # [{"name": "A", "share": 0.35, "mode": "image_only"}, {"name": "B", "share": 0.65, ...}]
    ehr_dropout: float  # probability of removing the patient-data block from a stage-B training sample
    eval_every: int
    save_every: int
    val_samples: int


def param_key(setting: str) -> str:
    return setting if setting in SHARED_PARAMS else PREFIX + setting


def settings_for(params: dict[str, Any]) -> ReportSettings:
    """Complete settings from the params (a missing key is an error naming it)."""
    missing = [param_key(f.name) for f in fields(ReportSettings) if param_key(f.name) not in params]
    if missing:
        raise SettingsError(f"report settings missing: {missing}; notebook {TRAIN_NOTEBOOK}'s parameters cell "
                            "holds their defaults (`python -m brainvlm train --study report` fills them from it)")
    settings = ReportSettings(**{f.name: params[param_key(f.name)] for f in fields(ReportSettings)})
    shares = [float(s.get("share", 0)) for s in settings.stages]
    if not settings.stages or any(s <= 0 for s in shares) or abs(sum(shares) - 1) > 1e-6:
        raise SettingsError(f"{PREFIX}stages: shares must be positive and sum to 1, got {shares}")
    if not 0 <= settings.ehr_dropout < 1:
        raise SettingsError(f"{PREFIX}ehr_dropout must be in [0, 1), got {settings.ehr_dropout}")
    return settings


def collect_settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """The report settings found in a namespace (a notebook's parameters)."""
    return {param_key(f.name): namespace[param_key(f.name)] for f in fields(ReportSettings)
            if param_key(f.name) in namespace}


# ------------------------------------------------------------------------------------------------ data
def ehr_off(sample: dict) -> dict:
    """A copy of a sample whose prompt has no ``Patient Data:`` block (the instruction unchanged)."""
    out = copy.deepcopy(sample)
    for part in out["conversations"][0]["content"]:
        if part["type"] == "text":
            part["text"] = EHR_BLOCK.sub("", part["text"]).strip() or "Image:"
    out["metadata"] = {**out["metadata"], "mode": "image_ehr_off"}
    return out


def with_query_image(sample: dict, image_path: str) -> dict:
    """A copy of a sample whose image is ``image_path`` (the mean or blank control)."""
    out = copy.deepcopy(sample)
    for part in out["conversations"][0]["content"]:
        if part["type"] == "image":
            part["image_path"] = image_path
    return out


def split_records(records: list[dict], fractions: tuple[float, float, float], seed: int) -> dict[str, list[dict]]:
    """Records split by patient (a patient's studies, and both stages of an image, in one split)."""
    patients = sorted({r["subject_id"] for r in records})
    frame = pd.DataFrame({"subject": patients, "group": patients, "target": ["all"] * len(patients)})
    assignment = splits.split_subjects(frame, fractions=fractions, seed=seed)
    split_of = dict(zip(assignment["subject"], assignment["split"]))
    out: dict[str, list[dict]] = {s: [] for s in splits.SPLITS}
    for record in records:
        out[split_of[record["subject_id"]]].append(record)
    return out


def to_samples(records_by_split: dict[str, list[dict]], cohort_name: str) -> dict[str, list[dict]]:
    """Canonical ``report`` samples per split, numbered inside each split."""
    return {split: [from_curriculum(r, i, split, cohort_name=cohort_name) for i, r in enumerate(records, 1)]
            for split, records in records_by_split.items()}


def audit(samples_by_split: dict[str, list[dict]]) -> pd.DataFrame:
    """Checks: no patient in two splits; both stages of an image in one split."""
    rows = [{"split": split, "patient": s["metadata"]["patient_id"], "image": s["conversations"][0]["content"][1][
        "image_path"] if len(s["conversations"][0]["content"]) > 1 else "", "stage": s["metadata"]["stage"]}
            for split, samples in samples_by_split.items() for s in samples]
    table = pd.DataFrame(rows)
    crossing = lambda key: sorted(k for k, n in table.groupby(key)["split"].nunique().items() if n > 1)
    checks = [("no patient in two splits", crossing("patient")), ("both stages of an image in one split",
                                                                     crossing("image"))]
    return pd.DataFrame([{"check": name, "passed": not bad, "detail": ", ".join(map(str, bad[:10])) or "none"}
                         for name, bad in checks])


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
    return read_json(Path(data_dir) / "manifest.json")


# -------------------------------------------------------------------------------------------- training
def stage_samples(train: list[dict], settings: ReportSettings) -> list[Stage]:
    """The stages of the curriculum: each draws the records of its ``mode``; EHR dropout applied to stage B."""
    rng = np.random.default_rng(settings.seed)
    stages = []
    for spec in settings.stages:
        chosen = [s for s in train if s["metadata"]["mode"] == spec["mode"]]
        if spec["mode"] == "image_ehr" and settings.ehr_dropout > 0:
            drop = rng.random(len(chosen)) < settings.ehr_dropout
            chosen = [ehr_off(s) if d else s for s, d in zip(chosen, drop)]
        steps = max(1, round(settings.steps * float(spec["share"])))
        stages.append(Stage(str(spec["name"]), chosen, [], max_steps=steps, lr=spec.get("lr")))
    return stages


@dataclass
class Trained:
    """A trained report model: model (best adapter), processor, the fit, its settings and folder."""

    model: Any
    processor: Any
    result: FitResult
    settings: ReportSettings
    output_dir: Path


def vocabulary(samples: list[dict]) -> list[str]:
    """Every text part of the samples (the tiny default's tokenizer is trained on them)."""
    return [p["text"] for s in samples for turn in s["conversations"] for p in turn["content"]
            if p["type"] == "text"]


def train(params: dict[str, Any], task: str, run_dir: Path, name: str | None = None, resume: bool = False,
          stop_after: int | None = None, progress: bool = True, stages: list[dict] | None = None) -> Trained:
    """Train the report model through its stages (``stages`` replaces the params' list: baselines)."""
    settings = settings_for({**params, **({PREFIX + "stages": stages} if stages is not None else {})})
    set_seed(settings.seed)
    manifest = read_data(Path(run_dir) / "data" / task)
    train_samples = read_jsonl(manifest["files"]["train"])
    val = [s for s in read_jsonl(manifest["files"]["val"]) if s["metadata"]["mode"] == "image_ehr"]
    base = base_checkpoint(settings.model, settings.seed, Path(run_dir) / "models" / "report_base",
                           sorted(set(vocabulary(train_samples))))
    model, processor = load_base(base, settings.dtype, settings.load_in_4bit)
    model = lora.add_lora(model, r=settings.lora_r, alpha=settings.lora_alpha, seed=settings.seed)
    schedule = stage_samples(train_samples, settings)
    schedule[-1].val = val[: settings.val_samples]
    output = Path(run_dir) / "models" / (name or task)
    if distributed.world()[0] == 0:
        write_json({"base_model": base, "task": task, **asdict(settings)}, output / SETTINGS_FILE)
    config = TrainConfig(output_dir=str(output), batch_size=settings.batch_size, lr=settings.lr,
                         eval_every=settings.eval_every, save_every=settings.save_every, seed=settings.seed,
                         progress=progress)
    result = fit(model, collate.Collator(processor, collate.CollateConfig(image_root=manifest["image_root"])),
                 schedule, config, resume=resume, stop_after=stop_after)
    return Trained(model, processor, result, settings, output)


def predict(model: Any, processor: Any, samples: list[dict], out_path: Path, image_root: str,
            batch_size: int, max_new_tokens: int, progress: bool = True) -> pd.DataFrame:
    """Greedy reports for samples (resumable JSONL, see ``eval.generate``)."""
    prompts = collate.Collator(processor, collate.CollateConfig(image_root=image_root), prompt_only=True)
    stops = templates.stop_token_ids(processor.tokenizer, model_family(model))
    if out_path.exists():
        out_path.unlink()  # a new model each call: never resume another model's answers
    return generate.predict(model, samples, out_path, prompts, processor.tokenizer, stops, batch_size,
                            max_new_tokens, progress)


# ------------------------------------------------------------------------------------------ baselines
def constant_report(train: list[dict]) -> str:
    """The most frequent training Impression with the most frequent label block and ICD line."""
    targets = [s["conversations"][-1]["content"][0]["text"] for s in train if s["metadata"]["mode"] == "image_ehr"]
    impressions = Counter(answers.report_text(t) for t in targets)
    blocks = Counter(t.split("\nCheXpert: ", 1)[1].split("\nICD: ")[0] for t in targets if "\nCheXpert: " in t)
    icd = Counter(t.split("\nICD: ", 1)[1] for t in targets if "\nICD: " in t)
    return (f"Impression: {impressions.most_common(1)[0][0]}\nCheXpert: {blocks.most_common(1)[0][0]}"
            f"\nICD: {icd.most_common(1)[0][0]}")


# ------------------------------------------------------------------------------------------- scoring
def code_sets(text: str | None, keep: set[str]) -> frozenset[str] | None:
    """The ICD codes of a report restricted to ``keep`` (None when there is no ICD line)."""
    codes = answers.parse_icd(text)
    return None if codes is None else frozenset(c for c in codes if c in keep)


def unit_scores(samples: list[dict], predictions: list[str | None], image_codes: set[str],
                ehr_codes: set[str], observations: tuple[str, ...]) -> pd.DataFrame:
    """Per sample: patient, CheXpert and ICD true/false positives and negatives, parseable flags.

    CheXpert counts use uncertain as negative (u0) over the 14 observations; ICD counts are split into the
    codes the image determines and those only the EHR determines.
    """
    rows = []
    for sample, prediction in zip(samples, predictions):
        reference = sample["conversations"][-1]["content"][0]["text"]
        truth = answers.chexpert_positive(answers.parse_chexpert(reference), "zeros")
        parsed = answers.parse_chexpert(prediction)
        guess = frozenset() if parsed is None else answers.chexpert_positive(parsed, "zeros")
        row = {"patient": sample["metadata"]["patient_id"], "chexpert_parsed": parsed is not None,
               "icd_parsed": answers.parse_icd(prediction) is not None}
        for name, group in (("chexpert", set(answers.CHEXPERT_14)),):
            row.update({f"{name}_tp": len(truth & guess & group), f"{name}_fp": len((guess - truth) & group),
                        f"{name}_fn": len((truth - guess) & group)})
        for obs in observations:
            row.update({f"{obs}_tp": int(obs in truth and obs in guess),
                        f"{obs}_fp": int(obs in guess and obs not in truth),
                        f"{obs}_fn": int(obs in truth and obs not in guess)})
        for name, keep in (("icd_image", image_codes), ("icd_ehr", ehr_codes)):
            t, g = code_sets(reference, keep) or frozenset(), code_sets(prediction, keep) or frozenset()
            row.update({f"{name}_tp": len(t & g), f"{name}_fp": len(g - t), f"{name}_fn": len(t - g)})
        rows.append(row)
    return pd.DataFrame(rows)


def micro_f1(table: pd.DataFrame, name: str) -> float:
    """Micro-F1 of ``unit_scores`` counts (``<name>_tp``, ``_fp``, ``_fn``); NaN with nothing to count."""
    tp, fp, fn = (float(table[f"{name}_{k}"].sum()) for k in ("tp", "fp", "fn"))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
