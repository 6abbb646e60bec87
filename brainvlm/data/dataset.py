"""From a phenotype table to a task's files: cohort -> splits -> samples, written under ``data/<task>/``.

Notebook 01 calls these; notebook 02 and training read what they wrote through ``read_manifest``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from brainvlm.core.jsonio import read_json, write_json, write_jsonl
from brainvlm.data import cohort, comparison, splits

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"


@dataclass
class DataConfig:
    """How subjects become samples; one per run, shared by all tasks."""

    image_root: str
    image_pattern: str = "{subject}/anat/{subject}_T1w.nii.gz"
    group_col: str | None = None
    strict: bool = False
    check_images: str = "exists"
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    reference_fraction: float = 0.5
    n_bins: int = 4
    seed: int = 0


@dataclass
class TaskData:
    """Everything one task produced: the cohort it used, what it excluded, the splits and the samples."""

    spec: comparison.TaskSpec
    cohort: pd.DataFrame
    exclusions: pd.DataFrame
    assignment: pd.DataFrame
    samples: dict[str, list[dict]]
    image_pattern: str = ""
    files: dict[str, str] = field(default_factory=dict)


def task_spec(entry: dict[str, Any], cohort_name: str) -> tuple[comparison.TaskSpec, str | None]:
    """Split a params ``tasks`` entry into its TaskSpec and its optional own ``image_pattern``."""
    entry = dict(entry)
    pattern = entry.pop("image_pattern", None)
    entry.setdefault("cohort_name", cohort_name)
    return comparison.TaskSpec.from_dict(entry), pattern


def prepare_tasks(table: pd.DataFrame, entries: list[tuple[comparison.TaskSpec, str | None]], config: DataConfig,
                  table_path: str | None = None) -> list[TaskData]:
    """Every task of one cohort: its cohort and exclusions, ONE split shared by all tasks, and samples.

    The subjects of all tasks are split once (``shared_split``, stratified on the first task's target), so
    a subject is in the same split and pool in every task; a task whose target is missing for some
    subjects uses the shared split minus them.

    Args:
        entries: ``(spec, image_pattern)`` per task (``None``: ``config.image_pattern``).
    """
    built = []
    for spec, pattern in entries:
        pattern = pattern or config.image_pattern
        task_cohort, excluded = cohort.build_cohort(
            table, config.image_root, spec.target_col, spec.task_type, image_pattern=pattern, labels=spec.labels,
            group_col=config.group_col or None, strict=config.strict, check_images=config.check_images,
            table_path=table_path, modality=spec.modality, valid_range=spec.valid_range)
        built.append((spec, pattern, task_cohort, excluded))
    where = table_path or table.attrs.get("path", "<table>")
    assignment = shared_split(built, config, where, len(table))
    prepared = []
    for spec, pattern, task_cohort, excluded in built:
        own = assignment[assignment["subject"].isin(task_cohort["subject"])].reset_index(drop=True)
        task_split_check(own, (spec, pattern, task_cohort, excluded), where, len(table))
        samples = comparison.build_samples(task_cohort, own, spec, seed=config.seed)
        prepared.append(TaskData(spec, task_cohort, excluded, own, samples, image_pattern=pattern))
    return prepared


def task_split_check(own: pd.DataFrame, task: tuple, where: str, n_rows: int) -> None:
    """A task's part of the shared split is still disjoint and has both pools in every split.

    Raises:
        CohortError: naming the table and the task, what failed, and the task's exclusions (a task that
            excludes subjects takes them out of the shared split, which can empty one of its pools).
    """
    try:
        splits.assert_disjoint(own, f"{where}: task {task[0].name!r}")
    except splits.SplitError as err:
        raise cohort.CohortError(f"{err}. {exclusion_report([task], n_rows)}") from err


def prepare_task(table: pd.DataFrame, spec: comparison.TaskSpec, config: DataConfig, table_path: str | None = None,
                 image_pattern: str | None = None) -> TaskData:
    """One task alone (its split is the cohort's shared split when it is the only task)."""
    return prepare_tasks(table, [(spec, image_pattern)], config, table_path)[0]


def shared_split(built: list[tuple], config: DataConfig, where: str, n_rows: int) -> pd.DataFrame:
    """One subject- and group-level split of the union of the tasks' subjects.

    Stratified on the primary target, the first task's (its classes, or the quantile bins of a numerical
    target); subjects the first task excluded form a stratum of their own. (Stratifying jointly on every
    task's target was tried on the default: with the tokenizer the tiny model builds from those samples,
    the BMI answers broke into malformed numbers, so the documented primary target it is.)

    Raises:
        CohortError: too few subjects left, with the exclusion counts by reason and one example of each.
    """
    primary_spec, _, primary, _ = built[0]
    frames = [c[["subject", "group"]] for _, _, c, _ in built]
    union = pd.concat(frames, ignore_index=True).drop_duplicates("subject").sort_values("subject")
    strata = _strata(primary, primary_spec.task_type, config.n_bins)
    union = union.assign(target=[strata.get(s, "(not in the first task)") for s in union["subject"]])
    try:
        return splits.split_subjects(union.reset_index(drop=True), fractions=tuple(config.split_fractions),
                                     seed=config.seed, task_type="categorical",
                                     reference_fraction=config.reference_fraction)
    except splits.SplitError as err:
        names = [spec.name for spec, _, _, _ in built]
        raise cohort.CohortError(f"{where}: task(s) {names}: {err}. {exclusion_report(built, n_rows)}") from err


def _strata(task_cohort: pd.DataFrame, task_type: str, n_bins: int) -> dict[str, str]:
    """Subject -> stratum label of the primary target: its class, or its quantile bin."""
    if task_type == "categorical" or task_cohort.empty:
        return dict(zip(task_cohort["subject"], task_cohort["target"].astype(str)))
    bins = pd.qcut(task_cohort["target"].astype(float).rank(method="first"), q=min(n_bins, len(task_cohort)),
                   labels=False)
    return {subject: f"bin {int(b)}" for subject, b in zip(task_cohort["subject"], bins)}


def exclusion_report(built: list[tuple], n_rows: int) -> str:
    """The exclusions of each task by reason, with one example row per reason (for an error message)."""
    parts = []
    for spec, _, task_cohort, excluded in built:
        if excluded.empty:
            parts.append(f"task '{spec.name}': {len(task_cohort)} of {n_rows} rows kept, none excluded")
            continue
        reasons = []
        for reason, rows in excluded.groupby("reason", sort=True):
            first = rows.iloc[0]
            reasons.append(f"{reason}: {len(rows)} (e.g. line {first['row']}, {first['subject']}: {first['detail']})")
        parts.append(f"task '{spec.name}': {len(task_cohort)} of {n_rows} rows kept; excluded: " + "; ".join(reasons))
    return ". ".join(parts) + (". Check image_root and image_pattern (missing_image), the target column and "
                               "labels, and check_images")


def write_task(data: TaskData, data_dir: Path, n_examples: int = 10) -> dict[str, str]:
    """Write ``<task>/{train,val,test}.jsonl``, the cohort, exclusions, split table and examples.

    Returns:
        file kind -> path relative to ``data_dir``.
    """
    out = Path(data_dir) / data.spec.name
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in SPLITS:
        write_jsonl(data.samples.get(split, []), out / f"{split}.jsonl")
        files[split] = f"{data.spec.name}/{split}.jsonl"
    for kind, frame in (("cohort", data.cohort), ("exclusions", data.exclusions), ("splits", data.assignment)):
        frame.to_csv(out / f"{kind}.tsv", sep="\t", index=False, lineterminator="\n")
        files[kind] = f"{data.spec.name}/{kind}.tsv"
    comparison.write_examples(data.samples, out / "samples", n=n_examples)
    data.files = files
    return files


def write_manifest(data_dir: Path, image_root: str | Path, task_data: list[TaskData]) -> Path:
    """Record where the run's data lives, for the notebooks and training that follow."""
    data_dir = Path(data_dir)
    root = Path(image_root).resolve()
    try:  # inside the run: relative, so a run folder can be moved
        root_text = Path(os.path.relpath(root, data_dir.resolve())).as_posix() if root.is_relative_to(
            data_dir.resolve()) else root.as_posix()
    except ValueError:
        root_text = root.as_posix()
    manifest = {
        "image_root": root_text,
        "tasks": {d.spec.name: {"task_type": d.spec.task_type, "target_col": d.spec.target_col,
                                "modality": d.spec.modality, "labels": d.spec.labels,
                                "precision": d.spec.precision if d.spec.task_type == "numerical" else None,
                                "files": d.files,
                                "counts": {s: len(d.samples.get(s, [])) for s in SPLITS}}
                  for d in task_data},
    }
    return write_json(manifest, data_dir / MANIFEST)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest notebook 01 wrote, with ``image_root`` and file paths made absolute."""
    data_dir = Path(run_dir) / "data"
    path = data_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run notebook 01_generate_data for this run first")
    manifest = read_json(path)
    manifest["image_root"] = str((data_dir / manifest["image_root"]).resolve())
    for task in manifest["tasks"].values():
        task["files"] = {k: str(data_dir / v) for k, v in task["files"].items()}
    return manifest


def split_table(task_data: list[TaskData]) -> pd.DataFrame:
    """Samples and subjects per task, split and pool: the first table a reader wants."""
    rows = []
    for d in task_data:
        for split in SPLITS:
            part = d.assignment[d.assignment["split"] == split]
            rows.append({"task": d.spec.name, "split": split, "samples": len(d.samples.get(split, [])),
                         "query subjects": int((part["pool"] == "query").sum()),
                         "reference subjects": int((part["pool"] == "reference").sum())})
    return pd.DataFrame(rows)


def sample_statistics(samples: list[dict]) -> pd.DataFrame:
    """One row per sample: turns, images, characters of text, and the modalities it uses."""
    rows = []
    for sample in samples:
        parts = [p for turn in sample["conversations"] for p in turn["content"]]
        images = [p for p in parts if p["type"] == "image"]
        rows.append({"id": sample["id"], "turns": len(sample["conversations"]), "images": len(images),
                     "text_chars": sum(len(p["text"]) for p in parts if p["type"] == "text"),
                     "modalities": ",".join(sorted({p.get("modality", "") for p in images}))})
    return pd.DataFrame(rows)


def sample_images(samples: list[dict], n_per_modality: int = 3) -> list[tuple[str, str]]:
    """The first distinct images of each modality that ``samples`` use: ``(modality, path)`` pairs.

    Read from the samples, not from the image folder: any layout works (BIDS or flat, ``image_pattern``), and an
    image notebook 01 excluded (unreadable, missing target) is never picked, since no sample names it.
    """
    found: dict[str, list[str]] = {}
    for sample in samples:
        for turn in sample["conversations"]:
            for part in turn["content"]:
                if part.get("type") != "image":
                    continue
                paths = found.setdefault(part.get("modality", "other"), [])
                if part["image_path"] not in paths and len(paths) < n_per_modality:
                    paths.append(part["image_path"])
    return [(modality, path) for modality, paths in found.items() for path in paths]
