"""Score a predictions JSONL against a canonical samples JSONL, without a model (``brainvlm evaluate`` in :mod:`brainvlm.app.cli`).

``evaluate_files`` picks every metric that applies to the samples' task (label tasks: accuracy,
balanced accuracy, macro-F1 and a confusion matrix; numerical: MAE, RMSE, Pearson r, Spearman rho;
vqa: the VQA metrics and the text metrics; report/caption: the text metrics, plus CheXpert and ICD
label F1 where the references carry those blocks; concepts: label-set F1), a per-group breakdown and
bootstrap intervals that resample subjects (or images). It writes them as sorted-key JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainvlm.core.jsonio import read_jsonl_numbered, write_json
from brainvlm.eval import bootstrap, scoring
from brainvlm.eval import metrics as metric_lib
from brainvlm.eval.textmetrics import METRIC_NAMES as TEXT_METRICS
from brainvlm.eval.textmetrics import TextCorpus, TextScorer


@dataclass
class EvalOptions:
    """What to compute beyond the headline metrics (see ``evaluate_files``)."""

    metrics: tuple[str, ...] | None = None
    group_by: tuple[str, ...] = ()
    tokenize: str = "ptb"
    n_boot: int = 1000
    n_boot_text: int = 200
    seed: int = 0
    unit: str | None = None
    progress: bool = False


def load_samples(path: str | Path) -> list[dict]:
    """Canonical samples of a JSONL file; ids must be unique non-empty strings."""
    seen: dict[str, int] = {}
    samples = []
    for number, sample in read_jsonl_numbered(path):
        sample_id = sample.get("id")
        if not isinstance(sample_id, str) or not sample_id:
            raise ValueError(f"{path}:{number}: $.id must be a non-empty string, got {sample_id!r}")
        if sample_id in seen:
            raise ValueError(f"{path}: sample id {sample_id!r} appears on lines {seen[sample_id]} and {number}")
        if sample.get("task") not in scoring.HEADLINE:
            raise ValueError(f"{path}:{number} [{sample_id}] $.task: unknown task {sample.get('task')!r}; "
                             f"expected one of {sorted(scoring.HEADLINE)}")
        seen[sample_id] = number
        samples.append(sample)
    return samples


def load_predictions(path: str | Path) -> dict[str, str]:
    """Sample id -> predicted text from ``{"id", "prediction"}`` lines; a repeated id is an error."""
    seen: dict[str, int] = {}
    predictions = {}
    for number, record in read_jsonl_numbered(path):
        sample_id, text = record.get("id"), record.get("prediction")
        if not isinstance(sample_id, str) or not isinstance(text, str):
            raise ValueError(f"{path}:{number}: expected {{\"id\": str, \"prediction\": str}}, got keys "
                             f"{sorted(record)} with id {sample_id!r} and prediction of type {type(text).__name__}")
        if sample_id in seen:
            raise ValueError(f"{path}: prediction id {sample_id!r} appears on lines {seen[sample_id]} and {number}; "
                             "keep one prediction per sample")
        seen[sample_id] = number
        predictions[sample_id] = text
    return predictions


def _clean(value: Any) -> Any:
    """JSON-ready copy: NaN/inf -> None, numpy scalars -> Python, sets -> sorted lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_clean(v) for v in value]
        return sorted(items) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _keep(result: dict, wanted: tuple[str, ...] | None) -> dict:
    """Only the requested metrics (counts and notes are always kept)."""
    if wanted is None:
        return result
    metric_keys = {name for task in scoring.HEADLINE for name in scoring.metric_names(task)}
    return {k: v for k, v in result.items() if k in wanted or k not in metric_keys}


class _TaskEvaluation:
    """Metrics of one task's rows; a text corpus (and METEOR JVM) when the task has text metrics."""

    def __init__(self, part: pd.DataFrame, samples: dict[str, dict], task: str, config: scoring.ScoreConfig,
                 scorer: TextScorer | None):
        self.part, self.task, self.config, self.scorer = part, task, config, scorer
        self.corpus: TextCorpus | None = None
        self.position = pd.Series(np.arange(len(part)), index=part.index)
        if scorer is not None:
            refs = [scoring.reference_texts(samples[i]) for i in part["id"]]
            self.corpus = scorer.prepare(list(part["prediction"]), refs)

    def measure(self, rows: pd.DataFrame) -> dict:
        """Every metric of the task on a subset of the task's rows."""
        result = scoring.task_metrics(rows, self.task, self.config)
        if self.corpus is not None:
            result.update(self.scorer.scores(self.corpus, self.position.loc[rows.index].to_numpy()))
        return result

    def intervals(self, options: EvalOptions, unit: str | None) -> dict:
        """Bootstrap intervals of the headline metrics (and of the text metrics) resampling ``unit``."""
        headline = [m for m in scoring.HEADLINE[self.task] if options.metrics is None or m in options.metrics]
        ci = {}
        if headline and options.n_boot > 0:
            fn = lambda t: scoring.task_metrics(t, self.task, self.config)
            ci = bootstrap.bootstrap_metrics(self.part, fn, headline, unit, options.n_boot, options.seed)
        if self.corpus is not None and options.n_boot_text > 0:
            units = bootstrap.unit_labels(self.part, unit)
            text = self.scorer.bootstrap(self.corpus, units, options.n_boot_text, options.seed)
            ci.update({k: {**v, "unit": unit or "row"} for k, v in text.items()})
        return _keep(ci, options.metrics)


def _evaluate_task(part: pd.DataFrame, samples: dict[str, dict], task: str, config: scoring.ScoreConfig,
                   options: EvalOptions) -> dict:
    wanted = options.metrics
    text = scoring.uses_text_metrics(task) and (wanted is None or any(m in TEXT_METRICS for m in wanted))
    meteor = wanted is None or "METEOR" in wanted
    with TextScorer(options.tokenize, meteor=meteor, progress=options.progress) if text else _NoScorer() as scorer:
        evaluation = _TaskEvaluation(part, samples, task, config, scorer if text else None)
        result = _keep(evaluation.measure(part), wanted)
        unit = options.unit or scoring.bootstrap_unit(part)
        result["ci"] = evaluation.intervals(options, unit)
        result["bootstrap_unit"] = unit or "row"
        groups = {}
        for column in options.group_by:
            table = metric_lib.by_group(part, column, lambda rows: _keep(evaluation.measure(rows), wanted))
            groups[column] = table.to_dict(orient="index")
        if groups:
            result["by_group"] = groups
    if task in scoring.LABEL_TASKS:
        result["confusion_matrix"] = scoring.label_confusion(part, config).to_dict(orient="index")
    return result


class _NoScorer:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def _check_metric_names(tasks: Sequence[str], wanted: tuple[str, ...] | None) -> None:
    if wanted is None:
        return
    valid = {name for task in tasks for name in scoring.metric_names(task)}
    unknown = sorted(set(wanted) - valid)
    if unknown:
        raise ValueError(f"unknown metrics {unknown} for task(s) {list(tasks)}; choose from {sorted(valid)}")


def _numeric_fallback(samples: list[dict], fallback: float | None) -> tuple[float | None, str | None]:
    """The given fallback, or the mean of the evaluated numeric references (said so in the output)."""
    targets = [scoring.number_target(s) for s in samples if s["task"] in scoring.NUMERIC_TASKS]
    if fallback is not None or not targets:
        return fallback, None if fallback is None else "given"
    return float(np.mean(targets)), "mean of the evaluated references (pass fallback=, the training mean)"


def evaluate_files(samples_path: str | Path, predictions_path: str | Path, metrics: Sequence[str] | None = None,
                   out: str | Path | None = None, labels: dict | Sequence[str] | None = None,
                   group_by: str | Sequence[str] | None = None, tokenize: str = "ptb", *,
                   fallback: float | None = None, uncertain: str = "ones", concept_names: dict | None = None,
                   n_boot: int = 1000, n_boot_text: int = 200, seed: int = 0, unit: str | None = None,
                   progress: bool = False) -> dict:
    """Score ``predictions_path`` against ``samples_path`` and (optionally) write the result to ``out``.

    Args:
        metrics: names to report (default: every metric that applies to the task); counts always come.
        labels: label list or label -> synonyms mapping for label tasks (default: the samples' targets).
        group_by: metadata column(s) (e.g. ``"domain"``) for a per-group breakdown of every metric.
        tokenize: ``"ptb"`` (COCO standard, needs Java) or ``"none"`` for the text metrics.
        fallback: value an unparseable numeric answer counts as; default: the mean of the evaluated
            references, reported as ``numeric_fallback``/``numeric_fallback_source`` (pass the training mean).
        uncertain: CheXpert uncertain mentions as positive (``"ones"``) or negative (``"zeros"``).
        n_boot, n_boot_text: bootstrap replicates for the headline and the text metrics (0 = none).
        unit: resampling unit column (default ``query_subject``, else the query ``image``, else rows).

    Returns:
        Metrics under their usual names (``accuracy``, ``mae``, ``Bleu_4``, ``closed_accuracy``, ...),
        the counts ``n_samples``, ``n_predictions``, ``n_missing_predictions``, ``n_unparseable``,
        ``n_extra_predictions``, and ``ci`` / ``by_group`` / ``confusion_matrix`` where they apply. With
        several tasks in one file each task's metrics sit under ``tasks.<task>``. NaN is written as null.
    """
    samples, predictions = load_samples(samples_path), load_predictions(predictions_path)
    tasks = sorted({s["task"] for s in samples})
    wanted = None if metrics is None else tuple(metrics)
    _check_metric_names(tasks, wanted)
    groups = (group_by,) if isinstance(group_by, str) else tuple(group_by or ())
    fallback, fallback_source = _numeric_fallback(samples, fallback)
    config = scoring.ScoreConfig(labels=labels, fallback=fallback, uncertain=uncertain, concept_names=concept_names)
    table = scoring.score_samples(samples, predictions, config)
    options = EvalOptions(wanted, groups, tokenize, n_boot, n_boot_text, seed, unit, progress)
    by_id = {s["id"]: s for s in samples}
    per_task = {task: _evaluate_task(table[table["task"] == task], by_id, task, config, options) for task in tasks}
    sample_ids = set(by_id)
    result: dict[str, Any] = per_task[tasks[0]] if len(tasks) == 1 else {"tasks": per_task}
    result.update(
        n_samples=len(samples), n_predictions=len(predictions),
        n_missing_predictions=int(table["missing"].sum()),
        n_unparseable=int((~table["parse_ok"].astype(bool)).sum()),
        n_extra_predictions=sum(1 for i in predictions if i not in sample_ids),
        tokenize=tokenize, seed=seed)
    if config.fallback is not None:
        result.update(numeric_fallback=config.fallback, numeric_fallback_source=fallback_source)
    result = _clean(result)
    if out is not None:
        write_json(result, out)
    return result
