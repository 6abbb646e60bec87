"""Scores over parsed answers: classification, regression and label sets; per-group tables (bootstrap intervals: brainvlm.eval.bootstrap).

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
from collections.abc import Callable, Sequence

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


def correlation_undefined(predicted: Sequence[float], true: Sequence[float]) -> str | None:
    """Why a correlation of ``predicted`` with ``true`` is undefined, or ``None`` when it is defined."""
    predicted, true = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    if len(predicted) < 2:
        return f"undefined: {len(predicted)} sample(s), a correlation needs two"
    if np.ptp(predicted) == 0:
        return f"undefined: every prediction is {predicted[0]:g} (constant)"
    if np.ptp(true) == 0:
        return f"undefined: every target is {true[0]:g} (constant)"
    return None


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
    """Per-label TP, FP, FN, support, F1 and accuracy of predicted label sets (``None`` = unparseable = empty set)."""
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
        accuracy = (len(trues) - fp - fn) / len(trues) if trues else math.nan
        rows.append({"label": label, "tp": tp, "fp": fp, "fn": fn, "support": tp + fn, "f1": _f1(tp, fp, fn),
                     "accuracy": accuracy})
    columns = ["label", "tp", "fp", "fn", "support", "f1", "accuracy"]
    return pd.DataFrame(rows, columns=columns).set_index("label")


def example_f1(true_sets: Sequence[frozenset], pred_sets: Sequence[frozenset | None],
               labels: Sequence[str] | None = None) -> float:
    """Example-based F1: the mean over samples of each sample's set F1 (1.0 when both sets are empty).

    ``labels`` restricts both sets first; ``None`` (unparseable) counts as the empty set.
    """
    keep = None if labels is None else frozenset(labels)
    scores = []
    for truth, guess in zip(true_sets, pred_sets):
        t, g = frozenset(truth), frozenset(guess or ())
        if keep is not None:
            t, g = t & keep, g & keep
        scores.append(1.0 if not t and not g else 2 * len(t & g) / (len(t) + len(g)))
    return float(np.mean(scores)) if scores else math.nan


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
