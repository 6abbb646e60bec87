"""Score predictions against canonical samples: one tidy row per sample, then each task kind's metrics.

The reference answer of a sample is the text of its final assistant turn; ``metadata.references``
(a list of strings) adds further references for the text metrics. Labels and numbers come from
``metadata.target`` when present, else from parsing the reference text. A sample without a
prediction is scored with an empty prediction: unparseable and wrong, and counted as such.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainvlm.data.concept_map import ConceptMapper
from brainvlm.eval import answers, captions, chexpert_labeler, clef, metrics, vqametrics
from brainvlm.eval.textmetrics import METRIC_NAMES as TEXT_METRICS

LABEL_TASKS = ("comparison_categorical", "classification")
NUMERIC_TASKS = ("comparison_numerical",)
TEXT_TASKS = ("report", "caption")
CORE_COLUMNS = ("id", "task", "reference", "prediction", "missing", "image", "target", "parsed", "parse_ok",
                "correct", "abs_error")
HEADLINE = {
    "comparison_categorical": ("accuracy", "balanced_accuracy", "macro_f1"),
    "classification": ("accuracy", "balanced_accuracy", "macro_f1"),
    "comparison_numerical": ("mae", "rmse", "pearson_r", "spearman_rho"),
    "vqa": ("closed_accuracy", "open_recall", "open_token_f1"),
    "concepts": ("micro_f1", "macro_f1", "clef_primary_f1"),
    "report": ("chexpert14_micro_f1_u0", "chexpert5_micro_f1_u0"), "caption": ("clef_rouge1_f",),
}
# ImageCLEFmedical Caption: the mean per-image F1 of the concept sets as the challenge scores the rows
# written for them (eval.clef.set_tokens), the secondary F1 over an allow-list (a headline only when one is
# given), and the mean per-image ROUGE-1 F of captions after the challenge's normalisation (eval.captions).
CLEF_SECONDARY = "clef_secondary_f1"
# CheXpert from the label block a model writes: u0 counts uncertain (-1) as negative (the headline), u1 as
# positive (beside it). Micro/macro F1 over the 14 or the 5 competition observations, example-based F1 (mean
# over samples) and accuracy (mean over the 14 observations of per-observation accuracy).
POLICIES = {"u0": "zeros", "u1": "ones"}
CHEXPERT_METRICS = tuple(f"{subset}_{kind}_f1_{policy}" for policy in POLICIES for subset in ("chexpert14", "chexpert5")
                         for kind in ("micro", "macro")) + tuple(
    f"chexpert14_{kind}_{policy}" for policy in POLICIES for kind in ("example_f1", "accuracy"))
ICD_METRICS = ("icd_micro_f1", "icd_macro_f1", "icd_exact_accuracy")
# CheXpert-14 (rule): labels of the report text by eval.chexpert_labeler; u0 counts uncertain as negative, u1 as
# positive. Named "rule" so they are never taken for CheXbert.
RULE_METRICS = tuple(f"{subset}_rule_{kind}_f1_{policy}" for subset in ("chexpert14", "chexpert5")
                     for policy in ("u0", "u1") for kind in ("micro", "macro"))
LABELERS = ("rule",)


@dataclass
class ScoreConfig:
    """How answers are read.

    Attributes:
        labels: label -> synonyms (``{"male": ["man", "M"], ...}``) or a list of labels; default: the
            samples' targets, each its own only synonym.
        fallback: the number an unparseable numeric answer counts as (normally the training mean).
        decimals: numeric answers count only when every number is written with exactly this many decimals
            (the template's format, ``precision`` of the task in the run's manifest); anything else is
            unparseable. ``None``: any number.
        concept_names: a :class:`~brainvlm.data.concept_map.ConceptMapper`, or concept name -> CUI (one is
            built from it per answer: pass a mapper for a large table), for concept lists that name concepts.
        allowed_cuis: the CUIs of the secondary ImageCLEF score (``data.clef_tasks.MANUAL_CUIS`` for 2025 and
            2026); its gold is ``metadata.manual_cuis`` where a sample has it, else the reference concepts.
            ``None``: no secondary score.
        labeler: ``"rule"`` labels the report text of reference and prediction with the rule-based
            CheXpert-14 labeler (``RULE_METRICS``); ``None`` does not.
    """

    labels: Mapping[str, Sequence[str]] | Sequence[str] | None = None
    fallback: float | None = None
    decimals: int | None = None
    concept_names: Mapping[str, str] | ConceptMapper | None = None
    allowed_cuis: Collection[str] | None = None
    labeler: str | None = None  # "rule": also label the report text with eval.chexpert_labeler


def _text_of(turn: dict) -> str:
    return "\n".join(p.get("text", "") for p in turn.get("content", []) if p.get("type") == "text")


def reference_text(sample: dict) -> str:
    """The text of the sample's final assistant turn."""
    turns = [t for t in sample.get("conversations", []) if isinstance(t, dict) and t.get("role") == "assistant"]
    if not turns:
        raise ValueError(f"sample {sample.get('id')!r}: no assistant turn in $.conversations; the reference "
                         "answer is the final assistant turn")
    return _text_of(turns[-1])


def reference_texts(sample: dict) -> list[str]:
    """The final assistant text followed by ``metadata.references`` (duplicates dropped, order kept)."""
    extra = sample.get("metadata", {}).get("references", [])
    if not isinstance(extra, list) or not all(isinstance(r, str) for r in extra):
        raise ValueError(f"sample {sample.get('id')!r}: $.metadata.references must be a list of strings")
    return list(dict.fromkeys([reference_text(sample), *extra]))


def query_image(sample: dict) -> str | None:
    """The image path of the last image part of the sample (the query image), or None."""
    paths = [p.get("image_path") for t in sample.get("conversations", []) if isinstance(t, dict)
             for p in t.get("content", []) if isinstance(p, dict) and p.get("type") == "image"]
    return paths[-1] if paths else None


def synonyms_for(samples: Sequence[dict], labels: Mapping | Sequence | None) -> dict[str, list[str]]:
    """Label -> synonyms from ``labels`` (a mapping or a list) or, by default, from the samples' targets."""
    if isinstance(labels, Mapping):
        return {str(k): [str(s) for s in v] for k, v in labels.items()}
    if labels is not None:
        return {str(label): [] for label in labels}
    return {str(label_target(s, {})): [] for s in samples}


def label_target(sample: dict, synonyms: Mapping[str, Sequence[str]]) -> str:
    """The reference label: ``metadata.target`` (or the reference text), read through the synonyms."""
    raw = sample.get("metadata", {}).get("target")
    raw = reference_text(sample).strip() if raw is None else str(raw)
    if not synonyms:
        return raw
    if raw in synonyms:
        return raw
    parsed = answers.parse_label(raw, synonyms)
    if parsed is None:
        raise ValueError(f"sample {sample.get('id')!r}: reference label {raw!r} is none of the labels "
                         f"{sorted(synonyms)}; add it (or a synonym for it) to labels")
    return parsed


def number_target(sample: dict) -> float:
    """The reference number: ``metadata.target``, else the number stated in the reference text."""
    raw = sample.get("metadata", {}).get("target")
    try:
        value = answers.parse_number(reference_text(sample)) if raw is None else float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"sample {sample.get('id')!r}: $.metadata.target {raw!r} is not a number") from None
    if value is None:
        raise ValueError(f"sample {sample.get('id')!r}: no metadata.target and no single number in the reference "
                         f"answer {reference_text(sample)!r}")
    if not math.isfinite(value):
        raise ValueError(f"sample {sample.get('id')!r}: $.metadata.target is {raw!r}, not a finite number; fix "
                         "the samples file (brainvlm validate reports every such target)")
    return value


def _metadata_columns(sample: dict) -> dict:
    row = {}
    for key, value in sorted(sample.get("metadata", {}).items()):
        if value is None or isinstance(value, (str, int, float, bool)):
            row[f"metadata.{key}" if key in CORE_COLUMNS else key] = value
    return row


def _score_row(sample: dict, prediction: str, task: str, config: ScoreConfig, synonyms: dict) -> dict:
    if sample.get("metadata", {}).get("no_reference"):
        raise ValueError(f"sample {sample.get('id')!r}: $.metadata.no_reference is true (an image without "
                         "gold, its answer a placeholder); score its submission against the gold file")
    reference = reference_text(sample)
    if task in LABEL_TASKS:
        target, parsed = label_target(sample, synonyms), answers.parse_label(prediction, synonyms)
        return {"target": target, "parsed": parsed, "parse_ok": parsed is not None, "correct": parsed == target}
    if task in NUMERIC_TASKS:
        target, parsed = number_target(sample), answers.parse_number(prediction, config.decimals)
        used = config.fallback if parsed is None else parsed
        return {"target": target, "parsed": parsed, "parse_ok": parsed is not None,
                "abs_error": math.nan if used is None else abs(used - target)}
    if task == "vqa":
        answer_type = sample.get("metadata", {}).get("answer_type")
        if answer_type is None:
            raise ValueError(f"sample {sample.get('id')!r}: vqa samples need $.metadata.answer_type (CLOSED or OPEN)")
        try:
            scores = vqametrics.vqa_sample_scores(reference, prediction, answer_type)
        except ValueError as exc:
            raise ValueError(f"sample {sample.get('id')!r}: $.metadata.answer_type: {exc}") from None
        return {"target": reference, **scores}
    if task == "concepts":
        target = answers.parse_concepts(reference, config.concept_names)
        if target is None:
            raise ValueError(f"sample {sample.get('id')!r}: the reference {reference!r} is not a concept list")
        parsed = answers.parse_concepts(prediction, config.concept_names)
        return {"target": target, "parsed": parsed, "parse_ok": parsed is not None,
                **_clef_columns(sample, target, parsed, config)}
    if task in TEXT_TASKS:
        rouge = {"clef_rouge1": captions.rouge1_f(prediction, reference)} if task == "caption" else {}
        blocks = _block_columns(reference, prediction, config)
        return {"parse_ok": bool(prediction.strip()), **rouge, **blocks}
    raise ValueError(f"sample {sample.get('id')!r}: unknown task {task!r}")


def _clef_columns(sample: dict, target: frozenset, parsed: frozenset | None, config: ScoreConfig) -> dict:
    """Per-image ImageCLEF F1 (``clef_f1``; ``clef_secondary_f1`` with an allow-list, NaN where the
    restricted gold is empty) of the rows the concept sets would be written as; unparseable: no concepts."""
    predicted = clef.set_tokens(parsed or ())
    row = {"clef_f1": clef.image_f1(clef.set_tokens(target), predicted)}
    if config.allowed_cuis is not None:
        manual = sample.get("metadata", {}).get("manual_cuis")
        if manual is not None and not (isinstance(manual, list) and all(isinstance(c, str) for c in manual)):
            raise ValueError(f"sample {sample.get('id')!r}: $.metadata.manual_cuis must be a list of CUIs")
        gold = clef.set_tokens(target if manual is None else manual)
        allowed = {c.strip().upper() for c in config.allowed_cuis}
        row[CLEF_SECONDARY] = clef.image_score(gold, predicted, allowed)
    return row


def _block_columns(reference: str, prediction: str, config: ScoreConfig) -> dict:
    """CheXpert and ICD blocks of a report, where the reference states them."""
    row = {}
    ref_chexpert = answers.parse_chexpert(reference)
    if ref_chexpert is not None:
        parsed = answers.parse_chexpert(prediction)
        for policy, rule in POLICIES.items():
            row[f"chexpert_reference_{policy}"] = answers.chexpert_positive(ref_chexpert, rule)
            row[f"chexpert_parsed_{policy}"] = None if parsed is None else answers.chexpert_positive(parsed, rule)
    ref_icd = answers.parse_icd(reference)
    if ref_icd is not None:
        row["icd_reference"], row["icd_parsed"] = ref_icd, answers.parse_icd(prediction)
    if config.labeler == "rule":
        row["rule_reference"] = chexpert_labeler.label_report(answers.report_text(reference))
        row["rule_parsed"] = chexpert_labeler.label_report(answers.report_text(prediction))
    elif config.labeler is not None:
        raise ValueError(f"labeler {config.labeler!r} unknown; use one of {list(LABELERS)} or none")
    return row


def _rule_positive(labels: Mapping[str, int], policy: str) -> frozenset[str]:
    return frozenset(name for name, value in labels.items() if value == 1 or (policy == "u1" and value == -1))


def score_samples(samples: Sequence[dict], predictions: Mapping[str, str] | Sequence[dict],
                  config: ScoreConfig | None = None) -> pd.DataFrame:
    """One row per sample: id, task, reference, prediction, missing, image, target, parsed, parse_ok,
    correct / abs_error (by task), task-specific columns and the scalar metadata fields (domain,
    query_subject, ...; a field named like a core column is prefixed ``metadata.``).

    Args:
        samples: canonical samples (several tasks may be mixed).
        predictions: sample id -> predicted text, or ``{"id", "prediction"}`` records; samples without
            one count as missing and wrong.

    Returns:
        The table, indexed 0..n-1 in sample order.
    """
    config = config or ScoreConfig()
    if not isinstance(predictions, Mapping):
        predictions = {r["id"]: r["prediction"] for r in predictions}
    by_task: dict[str, dict] = {}
    for task in sorted({s.get("task") for s in samples}):
        by_task[task] = synonyms_for([s for s in samples if s.get("task") == task], config.labels) \
            if task in LABEL_TASKS else {}
    rows = []
    for sample in samples:
        prediction = predictions.get(sample["id"])
        text = "" if prediction is None else str(prediction)
        row = {"id": sample["id"], "task": sample.get("task"), "reference": reference_text(sample),
               "prediction": text, "missing": prediction is None, "image": query_image(sample)}
        row.update(_score_row(sample, text, sample.get("task"), config, by_task[sample.get("task")]))
        rows.append({**_metadata_columns(sample), **row})
    return pd.DataFrame(rows).reset_index(drop=True)


def _count_unparseable(table: pd.DataFrame) -> int:
    return int((~table["parse_ok"].astype(bool)).sum()) if "parse_ok" in table else 0


def task_metrics(table: pd.DataFrame, task: str, config: ScoreConfig | None = None) -> dict:
    """The non-text metrics of one task kind over a score table (or a subset of one)."""
    config = config or ScoreConfig()
    if task in LABEL_TASKS:
        labels = sorted(synonyms_for([], config.labels)) if config.labels is not None else None
        parsed = [p if ok else None for p, ok in zip(table["parsed"], table["parse_ok"])]
        return metrics.classification_metrics(list(table["target"]), parsed, labels)
    if task in NUMERIC_TASKS:
        parsed = [p if ok else None for p, ok in zip(table["parsed"], table["parse_ok"])]
        return metrics.regression_metrics(list(table["target"]), parsed, config.fallback)
    if task == "vqa":
        return {**vqametrics.vqa_metrics(table), "n_unparseable": _count_unparseable(table)}
    if task == "concepts":
        parsed = [p if ok else None for p, ok in zip(table["parsed"], table["parse_ok"])]
        return {**metrics.label_set_metrics(list(table["target"]), parsed), **_clef_metrics(table, config)}
    if task in TEXT_TASKS:
        rouge = {"clef_rouge1_f": _mean(table["clef_rouge1"])} if task == "caption" else {}
        return {**rouge, **_block_metrics(table), "n_unparseable": _count_unparseable(table)}
    raise ValueError(f"unknown task {task!r}; expected one of {sorted(HEADLINE)}")


def _mean(column: pd.Series) -> float:
    return float(column.mean()) if len(column) else math.nan


def _clef_metrics(table: pd.DataFrame, config: ScoreConfig) -> dict:
    """The ImageCLEF primary F1 and, with an allow-list, the secondary F1 and the images it counts."""
    out: dict[str, float | int] = {"clef_primary_f1": _mean(table["clef_f1"])}
    if config.allowed_cuis is not None:
        secondary = clef.mean_score(table[CLEF_SECONDARY].astype(float))
        out[CLEF_SECONDARY] = math.nan if secondary is None else secondary
        out["clef_secondary_n_images"] = int(table[CLEF_SECONDARY].notna().sum())
    return out


def _sets(column: pd.Series) -> list[frozenset | None]:
    """Parsed label sets of a column, ``None`` where unparseable (pandas turns a stored None into NaN)."""
    return [value if isinstance(value, (frozenset, set)) else None for value in column]


def chexpert_metrics(truth: Sequence[frozenset], guess: Sequence[frozenset | None], policy: str) -> dict:
    """CheXpert metrics of positive-observation sets under one uncertainty policy (names end ``_<policy>``)."""
    out = {}
    for name, subset in (("chexpert14", answers.CHEXPERT_14), ("chexpert5", answers.CHEXPERT_5)):
        scores = metrics.label_set_metrics(truth, guess, subset)
        out[f"{name}_micro_f1_{policy}"], out[f"{name}_macro_f1_{policy}"] = scores["micro_f1"], scores["macro_f1"]
    out[f"chexpert14_example_f1_{policy}"] = metrics.example_f1(truth, guess, answers.CHEXPERT_14)
    counts = metrics.label_counts(truth, guess, answers.CHEXPERT_14)
    out[f"chexpert14_accuracy_{policy}"] = float(counts["accuracy"].mean())
    return out


def _block_metrics(table: pd.DataFrame) -> dict:
    out: dict[str, float | int] = {}
    if "chexpert_reference_u0" in table and table["chexpert_reference_u0"].notna().any():
        rows = table[table["chexpert_reference_u0"].notna()]
        for policy in POLICIES:
            out.update(chexpert_metrics(list(rows[f"chexpert_reference_{policy}"]),
                                        _sets(rows[f"chexpert_parsed_{policy}"]), policy))
        out["chexpert_n_unparseable"] = sum(p is None for p in _sets(rows["chexpert_parsed_u0"]))
    if "rule_reference" in table:
        for policy in ("u0", "u1"):
            truth = [_rule_positive(r, policy) for r in table["rule_reference"]]
            guess = [_rule_positive(p, policy) for p in table["rule_parsed"]]
            for name, subset in (("chexpert14", answers.CHEXPERT_14), ("chexpert5", answers.CHEXPERT_5)):
                scores = metrics.label_set_metrics(truth, guess, subset)
                out[f"{name}_rule_micro_f1_{policy}"] = scores["micro_f1"]
                out[f"{name}_rule_macro_f1_{policy}"] = scores["macro_f1"]
    if "icd_reference" in table and table["icd_reference"].notna().any():
        rows = table[table["icd_reference"].notna()]
        scores = metrics.label_set_metrics(list(rows["icd_reference"]), _sets(rows["icd_parsed"]))
        exact = [p is not None and p == t for t, p in zip(rows["icd_reference"], _sets(rows["icd_parsed"]))]
        out.update(icd_micro_f1=scores["micro_f1"], icd_macro_f1=scores["macro_f1"],
                   icd_exact_accuracy=float(np.mean(exact)), icd_n_unparseable=scores["n_unparseable"])
    return out


def metric_names(task: str) -> tuple[str, ...]:
    """Every metric name ``task_metrics`` (plus the text metrics, where they apply) can report for a task."""
    names = {
        "comparison_categorical": ("accuracy", "balanced_accuracy", "macro_f1"),
        "classification": ("accuracy", "balanced_accuracy", "macro_f1"),
        "comparison_numerical": ("mae", "rmse", "pearson_r", "spearman_rho"),
        "vqa": ("closed_accuracy", "closed_accuracy_llava_med_script", "open_recall",
                "open_recall_llava_med_script", "open_exact_match",
                "open_token_f1", "exact_match", "token_f1", *TEXT_METRICS),
        "concepts": ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "clef_primary_f1",
                     CLEF_SECONDARY),
        "report": (*TEXT_METRICS, *CHEXPERT_METRICS, *ICD_METRICS, *RULE_METRICS),
        "caption": ("clef_rouge1_f", *TEXT_METRICS, *CHEXPERT_METRICS, *ICD_METRICS, *RULE_METRICS),
    }
    if task not in names:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(names)}")
    return names[task]


def headline(task: str, config: ScoreConfig | None = None) -> tuple[str, ...]:
    """The headline metrics of a task kind (those with intervals): ``HEADLINE``, plus the secondary ImageCLEF
    F1 of concepts when ``config`` gives an allow-list."""
    secondary = task == "concepts" and config is not None and config.allowed_cuis is not None
    return HEADLINE[task] + ((CLEF_SECONDARY,) if secondary else ())


def uses_text_metrics(task: str) -> bool:
    """Whether BLEU/METEOR/ROUGE-L/CIDEr apply to a task kind."""
    return task in TEXT_TASKS or task == "vqa"


def label_confusion(table: pd.DataFrame, config: ScoreConfig | None = None) -> pd.DataFrame:
    """Confusion matrix of a label task's score table (``unparseable`` column included)."""
    config = config or ScoreConfig()
    labels = sorted(synonyms_for([], config.labels)) if config.labels is not None else None
    parsed = [p if ok else None for p, ok in zip(table["parsed"], table["parse_ok"])]
    return metrics.confusion_matrix(list(table["target"]), parsed, labels)


def bootstrap_unit(table: pd.DataFrame) -> str | None:
    """The default resampling unit: ``query_subject`` when every row has one, else ``image``, else rows."""
    for column in ("query_subject", "image"):
        if column in table and table[column].notna().all():
            return column
    return None

