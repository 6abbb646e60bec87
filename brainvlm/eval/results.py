"""An evaluated task as the tables a paper needs: headline metrics with bootstrap intervals, intervals per
group (domain, pair type), the confusion matrix, the worst-scored samples and the flat headline metrics.

``evaluate_task`` scores a predictions JSONL against the run's samples through ``evaluate.evaluate_files``
(the same numbers as ``python -m brainvlm evaluate``) and keeps the per-sample score table beside them.
Intervals resample query subjects (``scoring.bootstrap_unit``), so the several comparison samples of
one subject are drawn together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainvlm.eval import bootstrap, evaluate, scoring

INTERVAL_COLUMNS = ("value", "ci_low", "ci_high")


@dataclass
class TaskEvaluation:
    """One task's scores.

    Attributes:
        name: task name in the run (``sex``).
        kind: the samples' task kind (``comparison_categorical``).
        result: ``evaluate.evaluate_files``' output (metrics, ``ci``, counts, ``confusion_matrix``).
        table: ``scoring.score_samples``' table, one row per sample, with the metadata columns.
        config: how answers were read (labels, numeric fallback).
        unit: the bootstrap resampling column (``query_subject``), None for rows.
    """

    name: str
    kind: str
    result: dict[str, Any]
    table: pd.DataFrame
    config: scoring.ScoreConfig
    unit: str | None

    @property
    def headline(self) -> tuple[str, ...]:
        """The task kind's headline metric names (with the secondary ImageCLEF F1 when configured)."""
        return scoring.headline(self.kind, self.config)


def score_config(task_entry: dict[str, Any], train_samples: list[dict]) -> scoring.ScoreConfig:
    """Labels from the manifest's task entry; numbers read only in the task's format (its ``precision``, where the
    manifest records one), unparseable ones counted as the training targets' mean."""
    fallback = None
    numeric = [scoring.number_target(s) for s in train_samples if s["task"] in scoring.NUMERIC_TASKS]
    if numeric:
        fallback = float(np.mean(numeric))
    return scoring.ScoreConfig(labels=task_entry.get("labels"), fallback=fallback, decimals=task_entry.get("precision"))


def evaluate_task(run_dir: Path, task: str, predictions_path: Path, split: str = "test", n_boot: int = 200,
                  seed: int = 0) -> TaskEvaluation:
    """Score ``predictions_path`` against the run's ``task``/``split`` samples.

    Args:
        run_dir: run folder with ``data/manifest.json`` (notebook 01).
        task: task name in the manifest.
        n_boot: bootstrap replicates for the intervals (0: none).
    """
    from brainvlm.core.jsonio import read_jsonl
    from brainvlm.data import dataset

    entry = dataset.read_manifest(run_dir)["tasks"][task]
    samples_path = entry["files"][split]
    samples = evaluate.load_samples(samples_path)
    kinds = sorted({s["task"] for s in samples})
    if len(kinds) != 1:
        raise ValueError(f"{samples_path}: one task kind per task expected, found {kinds}")
    config = score_config(entry, read_jsonl(entry["files"]["train"]))
    result = evaluate.evaluate_files(samples_path, predictions_path, labels=config.labels,
                                     fallback=config.fallback, n_boot=n_boot, n_boot_text=n_boot, seed=seed)
    table = scoring.score_samples(samples, evaluate.load_predictions(predictions_path, samples), config)
    unit = None if result["bootstrap_unit"] == "row" else result["bootstrap_unit"]
    return TaskEvaluation(task, kinds[0], result, table, config, unit)


def headline_table(evaluations: list[TaskEvaluation]) -> pd.DataFrame:
    """One row per task and headline metric: value, 95% interval, resampling unit and count of units."""
    rows = []
    for ev in evaluations:
        for metric in ev.headline:
            ci = ev.result.get("ci", {}).get(metric, {})
            rows.append({"task": ev.name, "metric": metric, "value": ev.result.get(metric),
                         "ci_low": ci.get("lo"), "ci_high": ci.get("hi"),
                         "unit": ci.get("unit", ev.unit or "row"), "n_units": ci.get("n_units"),
                         "n_samples": ev.result["n_samples"]})
    return pd.DataFrame(rows)


def headline_metrics(evaluations: list[TaskEvaluation]) -> dict[str, Any]:
    """Flat ``<task>.<metric>`` (and ``_ci_low``/``_ci_high``) values plus counts, for the metrics file."""
    out: dict[str, Any] = {}
    for row in headline_table(evaluations).to_dict(orient="records"):
        key = f"{row['task']}.{row['metric']}"
        out[key], out[f"{key}_ci_low"], out[f"{key}_ci_high"] = row["value"], row["ci_low"], row["ci_high"]
    for ev in evaluations:
        for count in ("n_samples", "n_unparseable", "n_missing_predictions"):
            out[f"{ev.name}.{count}"] = ev.result[count]
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in sorted(out.items())}


def group_intervals(ev: TaskEvaluation, column: str, n_boot: int = 200, seed: int = 0,
                    metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Headline metrics with bootstrap intervals inside each value of a metadata column.

    Args:
        column: a column of the score table (``domain``, ``pair_type``, ...).
        metrics: metric names (default: the task's headline metrics).

    Returns:
        One row per group and metric: ``group``, ``metric``, ``value``, ``ci_low``, ``ci_high``, ``n``
        (samples) and ``n_units`` (subjects); sorted by group.
    """
    if column not in ev.table.columns:
        raise KeyError(f"task {ev.name!r}: no column {column!r} in the score table; metadata columns there: "
                       f"{sorted(set(ev.table.columns) - set(scoring.CORE_COLUMNS))}")
    names = list(metrics or ev.headline)
    keys = ev.table[column].astype(object).where(ev.table[column].notna(), "<missing>").astype(str)

    def measure(table: pd.DataFrame) -> dict:
        return scoring.task_metrics(table, ev.kind, ev.config)

    rows = []
    for group in sorted(keys.unique()):
        part = ev.table[keys == group]
        scores = bootstrap.bootstrap_metrics(part, measure, names, ev.unit, n_boot, seed)
        for metric in names:
            ci = scores[metric]
            rows.append({"group": group, "metric": metric, "value": ci["point"], "ci_low": ci["lo"],
                         "ci_high": ci["hi"], "n": len(part), "n_units": ci["n_units"]})
    return pd.DataFrame(rows)


def confusion_table(ev: TaskEvaluation) -> pd.DataFrame:
    """Reference labels as rows, predicted labels (and ``unparseable``) as columns."""
    if ev.kind not in scoring.LABEL_TASKS:
        raise ValueError(f"task {ev.name!r} is {ev.kind!r}: a confusion matrix needs a label task "
                         f"({', '.join(scoring.LABEL_TASKS)})")
    return scoring.label_confusion(ev.table, ev.config)


def worst_samples(ev: TaskEvaluation, n: int = 3) -> pd.DataFrame:
    """The ``n`` worst-scored samples: wrong (unparseable first) labels, or the largest absolute errors.

    Other task kinds are ordered unparseable first. Ties are broken by sample id, so the choice is stable.
    """
    table = ev.table.copy()
    if ev.kind in scoring.LABEL_TASKS:
        keys, ascending = ["correct", "parse_ok", "id"], [True, True, True]
    elif ev.kind in scoring.NUMERIC_TASKS:
        table["_error"] = table["abs_error"].fillna(np.inf)
        keys, ascending = ["_error", "id"], [False, True]
    else:
        keys, ascending = ["parse_ok", "id"], [True, True]
    ordered = table.sort_values(keys, ascending=ascending, kind="mergesort").head(n)
    columns = [c for c in ("id", "target", "parsed", "prediction", "correct", "abs_error") if c in ordered]
    return ordered[columns].reset_index(drop=True)
