"""Score a predictions JSONL against a canonical samples JSONL, without a model (``brainvlm evaluate``).

``evaluate_files`` picks every metric that applies to the samples' task (label tasks: accuracy,
balanced accuracy, macro-F1 and a confusion matrix; numerical: MAE, RMSE, Pearson r, Spearman rho;
vqa: the VQA metrics and the text metrics; report/caption: the text metrics, plus CheXpert and ICD
label F1 where the references carry those blocks, and the ImageCLEF ROUGE-1 of captions; concepts:
label-set F1 and the ImageCLEF primary (and, with an allow-list, secondary) F1), a per-group breakdown and
bootstrap intervals that resample subjects (or images). It writes them as sorted-key JSON.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainvlm.core.jsonio import loads, read_jsonl_numbered, read_records, read_text, write_json
from brainvlm.data.concept_map import ConceptMapper
from brainvlm.eval import bootstrap, llava_med_answers, scoring
from brainvlm.eval import metrics as metric_lib
from brainvlm.eval.textmetrics import METRIC_NAMES as TEXT_METRICS
from brainvlm.eval.textmetrics import TextCorpus, TextScorer

MAX_LISTED = 10  # ids an error or the metrics file lists


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
    """Canonical samples of a samples file (JSONL, JSON array or one object: ``jsonio.read_records``).

    Ids must be unique non-empty strings (after Unicode NFC normalisation) and the task known.
    """
    records = read_records(path)
    if not records:
        raise ValueError(f"{path}: no samples in the file")
    seen: dict[str, str] = {}
    samples = []
    for index, (number, sample) in enumerate(records):
        where = f"{path}:{number}" if number is not None else f"{path} item [{index}]"
        if not isinstance(sample, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(sample).__name__}")
        sample_id = sample.get("id")
        if not isinstance(sample_id, str) or not sample_id:
            raise ValueError(f"{where}: $.id must be a non-empty string, got {sample_id!r}")
        key = unicodedata.normalize("NFC", sample_id)
        if key in seen:
            raise ValueError(f"{path}: sample id {sample_id!r} at {where.removeprefix(str(path)).lstrip(':')} "
                             f"repeats the id at {seen[key]} (compared after Unicode NFC normalisation)")
        if sample.get("task") not in scoring.HEADLINE:
            raise ValueError(f"{where} [{sample_id}] $.task: unknown task {sample.get('task')!r}; "
                             f"expected one of {sorted(scoring.HEADLINE)}")
        seen[key] = where.removeprefix(str(path)).lstrip(":") or "line 1"
        samples.append(sample)
    return samples


def _whole_document(text: str) -> Any:
    """``text`` parsed as one JSON document, or None when it is not one."""
    try:
        return loads(text)
    except ValueError:
        return None


def _not_json_lines(path: str | Path) -> str | None:
    """Why a predictions file is not JSON Lines, when it holds a JSON array or one multi-line object."""
    text = read_text(path).strip()
    first = text.split("\n", 1)[0]
    if text.startswith("[") and isinstance(_whole_document(text), list):
        held = "a JSON array"
    elif "\n" in text and _whole_document(first) is None and isinstance(_whole_document(text), dict):
        held = "one JSON object spread over several lines"
    else:
        return None
    return f"{path}: expected JSON Lines: one object per line; this file holds {held} (write one object per line)"


def load_predictions_matched(path: str | Path, samples: Sequence[dict] | None = None
                             ) -> tuple[dict[str, str], str]:
    """Sample id -> predicted text, and how predictions were matched to samples: ``"id"`` for
    ``{"id", "prediction"}`` lines, ``"question_id"`` or ``"question_text"`` for a LLaVA-Med answer file
    (told apart by its first line; ``eval.llava_med_answers.match_answers``).

    Raises:
        ValueError: a file that is not JSON Lines (a JSON array, one multi-line object), a malformed line,
            a repeated id, or answers that match no sample.
    """
    problem = _not_json_lines(path)
    if problem is not None:
        raise ValueError(problem)
    records = read_jsonl_numbered(path)
    if llava_med_answers.is_answer_file(records):
        return llava_med_answers.match_answers(records, samples, path)
    seen: dict[str, int] = {}
    predictions = {}
    for number, record in records:
        sample_id, text = record.get("id"), record.get("prediction")
        if not isinstance(sample_id, str) or not isinstance(text, str):
            raise ValueError(f"{path}:{number}: expected {{\"id\": str, \"prediction\": str}}, got keys "
                             f"{sorted(record)} with id {sample_id!r} and prediction of type {type(text).__name__}")
        if sample_id in seen:
            raise ValueError(f"{path}: prediction id {sample_id!r} appears on lines {seen[sample_id]} and {number}; "
                             "keep one prediction per sample")
        seen[sample_id] = number
        predictions[sample_id] = text
    return predictions, "id"


def load_predictions(path: str | Path, samples: Sequence[dict] | None = None) -> dict[str, str]:
    """Sample id -> predicted text from ``{"id", "prediction"}`` lines; a repeated id is an error.

    A LLaVA-Med answer file (``question_id``, ``text``, ...; told apart by its first line) is matched to
    ``samples`` by question id or by question text (``eval.llava_med_answers.match_answers``).
    """
    return load_predictions_matched(path, samples)[0]


def _near_miss(prediction_id: str, by_key: dict[str, str]) -> str:
    """How an unmatched id relates to a sample id that differs only in case or Unicode normalisation."""
    for fold, how in ((lambda i: unicodedata.normalize("NFC", i), "Unicode normalisation"),
                      (lambda i: unicodedata.normalize("NFC", i).casefold(), "case")):
        match = by_key.get(fold(prediction_id) + "\0" + how)
        if match is not None:
            return f"{prediction_id!r} (differs from sample id {match!r} only in {how})"
    return repr(prediction_id)


def match_ids(samples: list[dict], predictions: dict[str, str], partial: bool,
              samples_path: str | Path = "samples", predictions_path: str | Path = "predictions") -> dict[str, Any]:
    """Check that predictions and samples pair up; return what does not (listed, never silently dropped).

    Returns:
        ``unmatched_prediction_ids`` (first ten, with near misses explained), ``n_extra_predictions``,
        ``missing_prediction_ids`` (first ten) and ``n_missing_predictions``.

    Raises:
        ValueError: an empty predictions file; a sample without a prediction unless ``partial``.
    """
    if not predictions:
        raise ValueError(f"{predictions_path}: no predictions in the file; generate them first "
                         "(python -m brainvlm predict) or check the path")
    ids = [s["id"] for s in samples]
    by_key = {}
    for sample_id in ids:
        by_key[unicodedata.normalize("NFC", sample_id) + "\0Unicode normalisation"] = sample_id
        by_key[unicodedata.normalize("NFC", sample_id).casefold() + "\0case"] = sample_id
    known = set(ids)
    extra = [i for i in predictions if i not in known]
    missing = [i for i in ids if i not in predictions]
    if missing and not partial:
        raise ValueError(f"{len(missing)} of {len(ids)} samples of {samples_path} have no prediction in "
                         f"{predictions_path}: {missing[:MAX_LISTED]}{' ...' if len(missing) > MAX_LISTED else ''}"
                         f"; {len(extra)} prediction ids match no sample: "
                         f"{[_near_miss(i, by_key) for i in extra[:MAX_LISTED]]}. Score a partial run with "
                         "--partial (missing answers count as wrong)")
    return {"unmatched_prediction_ids": [_near_miss(i, by_key) for i in extra[:MAX_LISTED]],
            "n_extra_predictions": len(extra), "missing_prediction_ids": missing[:MAX_LISTED],
            "n_missing_predictions": len(missing)}


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
        wanted = options.metrics
        headline = [m for m in scoring.headline(self.task, self.config) if wanted is None or m in wanted]
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
        undefined = _undefined(result, part, task, config)
        if undefined:
            result["undefined"] = undefined
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


def _undefined(result: dict, part: pd.DataFrame, task: str, config: scoring.ScoreConfig) -> dict[str, str]:
    """Metric -> why it is undefined (written as null beside it), for every NaN metric of a task."""
    reasons = {}
    for name, value in result.items():
        if not (isinstance(value, float) and math.isnan(value)):
            continue
        if name in ("pearson_r", "spearman_rho") and task in scoring.NUMERIC_TASKS:
            predicted = part["parsed"].astype(float).fillna(config.fallback if config.fallback is not None else math.nan)
            reasons[name] = metric_lib.correlation_undefined(predicted, part["target"].astype(float)) or "undefined"
        else:
            reasons[name] = f"undefined: no samples of {task} this metric applies to"
    return reasons


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
                   fallback: float | None = None,
                   concept_names: Mapping[str, str] | ConceptMapper | None = None,
                   allowed_cuis: Collection[str] | None = None,
                   n_boot: int = 1000, n_boot_text: int = 200, seed: int = 0, unit: str | None = None,
                   progress: bool = False, partial: bool = False, labeler: str | None = None) -> dict:
    """Score ``predictions_path`` against ``samples_path`` and (optionally) write the result to ``out``.

    Args:
        metrics: names to report (default: every metric that applies to the task); counts always come.
        labels: label list or label -> synonyms mapping for label tasks (default: the samples' targets).
        group_by: metadata column(s) (e.g. ``"domain"``) for a per-group breakdown of every metric.
        tokenize: ``"ptb"`` (COCO standard, needs Java) or ``"none"`` for the text metrics.
        fallback: value an unparseable numeric answer counts as; default: the mean of the evaluated
            references, reported as ``numeric_fallback``/``numeric_fallback_source`` (pass the training mean).
        n_boot, n_boot_text: bootstrap replicates for the headline and the text metrics (0 = none).
        unit: resampling unit column (default ``query_subject``, else the query ``image``, else rows).
        labeler: ``"rule"`` adds CheXpert-14 (rule) F1 of report text (``scoring.RULE_METRICS``).
        concept_names: a ``ConceptMapper`` or a name -> CUI mapping for concept answers that name concepts.
        allowed_cuis: the CUIs of the secondary ImageCLEF F1 of concepts (``clef_secondary_f1``; e.g.
            ``data.clef_tasks.MANUAL_CUIS``); its gold is ``metadata.manual_cuis`` where a sample has it.
        partial: score a partial run: samples without a prediction count as wrong (by default they are
            an error). Prediction ids that match no sample are listed in either case.

    Returns:
        Metrics under their usual names (``accuracy``, ``mae``, ``Bleu_4``, ``closed_accuracy``, ...),
        the counts ``n_samples``, ``n_predictions``, ``n_missing_predictions``, ``n_unparseable``,
        ``n_extra_predictions`` with the ids (first ten) in ``missing_prediction_ids`` and
        ``predictions_matched_by`` (``id``, or for a LLaVA-Med answer file ``question_id`` or
        ``question_text``), and
        ``unmatched_prediction_ids``, the metrics left undefined with their reasons under ``undefined``, and ``ci`` / ``by_group`` / ``confusion_matrix`` where they apply. With
        several tasks in one file each task's metrics sit under ``tasks.<task>``. NaN is written as null.
    """
    for name, value in (("n_boot", n_boot), ("n_boot_text", n_boot_text)):
        if value < 0:
            raise ValueError(f"{name}={value}: give 0 (no intervals) or a positive number of bootstrap replicates")
    samples = load_samples(samples_path)
    predictions, matched_by = load_predictions_matched(predictions_path, samples)
    matched = match_ids(samples, predictions, partial, samples_path, predictions_path)
    tasks = sorted({s["task"] for s in samples})
    wanted = None if metrics is None else tuple(metrics)
    _check_metric_names(tasks, wanted)
    groups = (group_by,) if isinstance(group_by, str) else tuple(group_by or ())
    fallback, fallback_source = _numeric_fallback(samples, fallback)
    if concept_names is not None and not isinstance(concept_names, ConceptMapper):
        concept_names = ConceptMapper.from_names(concept_names)  # built once, not once per answer
    config = scoring.ScoreConfig(labels=labels, fallback=fallback, concept_names=concept_names,
                                 allowed_cuis=allowed_cuis, labeler=labeler)
    table = scoring.score_samples(samples, predictions, config)
    options = EvalOptions(wanted, groups, tokenize, n_boot, n_boot_text, seed, unit, progress)
    by_id = {s["id"]: s for s in samples}
    per_task = {task: _evaluate_task(table[table["task"] == task], by_id, task, config, options) for task in tasks}
    result: dict[str, Any] = per_task[tasks[0]] if len(tasks) == 1 else {"tasks": per_task}
    result.update(
        n_samples=len(samples), n_predictions=len(predictions),
        n_unparseable=int((~table["parse_ok"].astype(bool)).sum()),
        tokenize=tokenize, seed=seed, partial=partial, predictions_matched_by=matched_by, **matched)
    if config.fallback is not None:
        result.update(numeric_fallback=config.fallback, numeric_fallback_source=fallback_source)
    result = _clean(result)
    if out is not None:
        write_json(result, out)
    return result
