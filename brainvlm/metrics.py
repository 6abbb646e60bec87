"""Scores over parsed answers: classification, regression and label sets; per-group tables; bootstrap CIs.

Definitions (``None`` in a prediction list marks an unparseable or missing answer; it is always counted,
never dropped):

| metric | definition |
| --- | --- |
| accuracy | share of samples whose parsed label equals the reference; unparseable = wrong |
| balanced_accuracy | mean over reference classes of that class's recall (scikit-learn's definition) |
| macro_f1 | mean over labels of 2·TP / (2·TP + FP + FN); a label with no TP, FP or FN scores 0 |
| mae, rmse | mean absolute / root mean squared error; unparseable answers count as ``fallback`` |
| pearson_r, spearman_rho | correlation of predictions (fallback filled in) with references; Spearman uses average ranks of ties; NaN when either side is constant |
| micro_f1 (label sets) | 2·ΣTP / (2·ΣTP + ΣFP + ΣFN) over every (sample, label) pair |
| macro_f1 (label sets) | mean over the label list of each label's F1 (0 when it has no TP, FP or FN) |
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Sequence

import numpy as np
import pandas as pd

UNPARSEABLE = "unparseable"


def _f1(tp: float, fp: float, fn: float) -> float:
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str | None],
                           labels: Sequence[str] | None = None) -> dict[str, float | int]:
    """Accuracy, balanced accuracy and macro-F1 of parsed labels against reference labels.

    Args:
        y_true: reference label of each sample.
        y_pred: parsed label of each sample, ``None`` when unparseable (counted wrong).
        labels: labels to average macro-F1 over; default: every label seen in ``y_true`` or ``y_pred``.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}; pass one per sample")
    true = np.asarray(list(y_true), dtype=object)
    pred = np.asarray(list(y_pred), dtype=object)
    if labels is None:
        labels = sorted({str(v) for v in true} | {str(v) for v in pred if v is not None})
    correct = np.array([p is not None and p == t for p, t in zip(pred, true)], dtype=bool)
    recalls = [correct[true == c].mean() for c in sorted(set(true))]
    f1s = [_f1(np.sum(correct & (true == c)), np.sum((pred == c) & (true != c)), np.sum((true == c) & ~correct))
           for c in labels]
    return {
        "accuracy": float(correct.mean()) if len(true) else math.nan,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else math.nan,
        "macro_f1": float(np.mean(f1s)) if f1s else math.nan,
        "n": len(true),
        "n_unparseable": int(sum(p is None for p in pred)),
    }


def confusion_matrix(y_true: Sequence[str], y_pred: Sequence[str | None],
                     labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Counts with reference labels as rows and predicted labels as columns, plus an ``unparseable`` column.

    Rows and columns list ``labels`` first (default: sorted reference and predicted labels), then any
    other value seen, so no sample is hidden.
    """
    seen_true = sorted({str(v) for v in y_true})
    seen_pred = sorted({str(v) for v in y_pred if v is not None})
    base = list(labels) if labels is not None else sorted(set(seen_true) | set(seen_pred))
    rows = base + [v for v in seen_true if v not in base]
    cols = base + [v for v in seen_pred if v not in base] + [UNPARSEABLE]
    matrix = pd.DataFrame(0, index=pd.Index(rows, name="reference"), columns=pd.Index(cols, name="predicted"))
    for t, p in zip(y_true, y_pred):
        matrix.loc[str(t), UNPARSEABLE if p is None else str(p)] += 1
    return matrix


def _ranks(x: np.ndarray) -> np.ndarray:
    return pd.Series(x).rank(method="average").to_numpy()


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when fewer than two values or either side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    return float(np.dot(dx, dy) / denominator) if denominator > 0 else math.nan


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman correlation: Pearson correlation of average ranks."""
    return pearson_r(_ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float)))


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float | None],
                       fallback: float | None = None) -> dict[str, float | int]:
    """MAE, RMSE, Pearson r and Spearman rho, with unparseable predictions counted as ``fallback``.

    Args:
        y_pred: parsed number of each sample, ``None`` when unparseable.
        fallback: the prediction an unparseable answer stands for, normally the training-set mean of the
            target (a model that says nothing usable is scored as the mean predictor).
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} values but y_pred has {len(y_pred)}; pass one per sample")
    n_unparseable = sum(p is None for p in y_pred)
    if n_unparseable and fallback is None:
        raise ValueError(f"{n_unparseable} of {len(y_pred)} predictions are unparseable; pass fallback= "
                         "(the training-set mean of the target) so they are scored as that prediction")
    true = np.asarray(y_true, dtype=float)
    pred = np.array([fallback if p is None else p for p in y_pred], dtype=float)
    error = pred - true
    empty = len(true) == 0
    return {
        "mae": math.nan if empty else float(np.mean(np.abs(error))),
        "rmse": math.nan if empty else float(np.sqrt(np.mean(error ** 2))),
        "pearson_r": pearson_r(pred, true),
        "spearman_rho": spearman_rho(pred, true),
        "n": len(true),
        "n_unparseable": int(n_unparseable),
    }


def label_counts(true_sets: Sequence[frozenset], pred_sets: Sequence[frozenset | None],
                 labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-label TP, FP, FN, support and F1 of predicted label sets (``None`` = unparseable = empty set)."""
    if len(true_sets) != len(pred_sets):
        raise ValueError(f"{len(true_sets)} reference sets but {len(pred_sets)} predicted sets; pass one per sample")
    preds = [frozenset() if p is None else frozenset(p) for p in pred_sets]
    trues = [frozenset(t) for t in true_sets]
    if labels is None:
        labels = sorted(set().union(*trues, *preds))
    rows = []
    for label in labels:
        tp = sum(label in t and label in p for t, p in zip(trues, preds))
        fp = sum(label not in t and label in p for t, p in zip(trues, preds))
        fn = sum(label in t and label not in p for t, p in zip(trues, preds))
        rows.append({"label": label, "tp": tp, "fp": fp, "fn": fn, "support": tp + fn, "f1": _f1(tp, fp, fn)})
    return pd.DataFrame(rows, columns=["label", "tp", "fp", "fn", "support", "f1"]).set_index("label")


def label_set_metrics(true_sets: Sequence[frozenset], pred_sets: Sequence[frozenset | None],
                      labels: Sequence[str] | None = None) -> dict[str, float | int]:
    """Micro- and macro-F1 of predicted label sets (see the module table), with counts."""
    counts = label_counts(true_sets, pred_sets, labels)
    tp, fp, fn = (int(counts[c].sum()) for c in ("tp", "fp", "fn"))
    return {
        "micro_f1": _f1(tp, fp, fn),
        "macro_f1": float(counts["f1"].mean()) if len(counts) else math.nan,
        "micro_precision": tp / (tp + fp) if tp + fp else 0.0,
        "micro_recall": tp / (tp + fn) if tp + fn else 0.0,
        "n": len(true_sets),
        "n_unparseable": int(sum(p is None for p in pred_sets)),
    }


def by_group(table: pd.DataFrame, column: str,
             metric_fn: Callable[[pd.DataFrame], dict]) -> pd.DataFrame:
    """Every metric of ``metric_fn`` computed within each value of ``column`` (one row per group).

    Corpus-level metrics (CIDEr's IDF, for one) are therefore computed inside each group. Rows whose
    group value is missing form the group ``"<missing>"``. Non-scalar results are left out.
    """
    if column not in table.columns:
        raise KeyError(f"group column {column!r} is not in the score table; columns: {sorted(table.columns)}")
    keys = table[column].astype(object).where(table[column].notna(), "<missing>").astype(str)
    rows = []
    for value in sorted(keys.unique()):
        part = table[keys == value]
        scores = {k: v for k, v in metric_fn(part).items() if v is None or np.isscalar(v)}
        rows.append({column: value, "n_group": len(part), **scores})
    return pd.DataFrame(rows).set_index(column)


def unit_labels(table: pd.DataFrame, unit: str | None) -> np.ndarray:
    """The resampling unit of each row: the ``unit`` column, or the row itself when ``unit`` is None.

    Rows with a missing unit value are their own unit.
    """
    if unit is None:
        return np.array([f"row:{i}" for i in range(len(table))], dtype=object)
    if unit not in table.columns:
        raise KeyError(f"bootstrap unit column {unit!r} is not in the score table; columns: {sorted(table.columns)}")
    values = table[unit].astype(object).to_numpy()
    return np.array([f"row:{i}" if pd.isna(v) else f"unit:{v}" for i, v in enumerate(values)], dtype=object)


def bootstrap_indices(units: Sequence[Hashable], n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of each bootstrap replicate, drawing whole units (subjects) with replacement.

    Every replicate draws as many units as there are, and takes all rows of each drawn unit, so samples
    that share a subject stay together. Units are ordered by value, so the draws depend only on the seed
    and the data, not on row order within a unit.
    """
    groups = pd.Series(np.arange(len(units))).groupby(np.asarray(units, dtype=object), sort=True).indices
    members = [np.asarray(groups[key]) for key in sorted(groups)]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        drawn = rng.integers(0, len(members), size=len(members))
        yield np.concatenate([members[i] for i in drawn]) if len(members) else np.array([], dtype=int)


def percentile_interval(point: float, replicates: Sequence[float], level: float = 0.95) -> dict[str, float | int]:
    """Percentile bootstrap interval; replicates that are NaN (an undefined statistic) are left out."""
    values = np.asarray(replicates, dtype=float)
    valid = values[~np.isnan(values)]
    tail = (1 - level) / 2 * 100
    lo, hi = (np.percentile(valid, [tail, 100 - tail]) if len(valid) else (math.nan, math.nan))
    return {"point": float(point), "lo": float(lo), "hi": float(hi), "n_boot": len(values),
            "n_valid": len(valid), "level": level}


def bootstrap_metrics(table: pd.DataFrame, metric_fn: Callable[[pd.DataFrame], dict], names: Sequence[str],
                      unit: str | None = None, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict[str, dict]:
    """Bootstrap intervals of several metrics at once: ``metric_fn`` runs once per replicate.

    Args:
        metric_fn: table -> dict of metrics (e.g. ``scoring.task_metrics``); ``names`` picks the ones to report.
        unit: column of independent units (see ``bootstrap_ci``).

    Returns:
        name -> ``point``, ``lo``, ``hi``, ``n_boot``, ``n_valid``, ``level``, ``unit``, ``n_units``.
    """
    units = unit_labels(table, unit)
    point = metric_fn(table)
    replicates: dict[str, list[float]] = {name: [] for name in names}
    for rows in bootstrap_indices(units, n_boot, seed):
        scores = metric_fn(table.iloc[rows])
        for name in names:
            value = scores.get(name)
            replicates[name].append(math.nan if value is None else float(value))
    extra = {"unit": unit or "row", "n_units": len(set(units))}
    return {name: {**percentile_interval(point[name], replicates[name], level), **extra} for name in names}


def bootstrap_ci(table: pd.DataFrame, statistic: Callable[[pd.DataFrame], float], unit: str | None = None,
                 n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, float | int | str]:
    """Point estimate and percentile bootstrap interval of ``statistic``, resampling units of ``unit``.

    Args:
        table: one row per sample (e.g. from ``scoring.score_samples``).
        statistic: table -> number (e.g. ``lambda t: t["correct"].mean()``).
        unit: column whose values are the independent units (``query_subject``, an image); ``None``
            resamples rows, which is only right when samples are independent.

    Returns:
        ``point``, ``lo``, ``hi``, ``n_boot``, ``n_valid``, ``level``, ``unit`` and ``n_units``.
    """
    return bootstrap_metrics(table, lambda t: {"value": statistic(t)}, ["value"], unit, n_boot, seed, level)["value"]
