"""Bootstrap intervals that resample whole units (subjects, images), and paired differences between two systems.

Samples that share a subject are not independent, so every replicate draws units with replacement and
takes all of a drawn unit's rows. ``paired_difference`` compares two measurements of the same samples
(a model and a control, EHR on and off, two detectors) by resampling the shared units once per
replicate for both, so the interval of the difference keeps their correlation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Sequence

import numpy as np
import pandas as pd


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


def replicate_means(values: np.ndarray, labels: Sequence[Hashable], n_boot: int, seed: int,
                    groups: Sequence[Hashable] | None = None) -> tuple[float, list[float]]:
    """The mean of ``values`` and its bootstrap replicates, drawing units as ``bootstrap_indices`` does.

    ``groups`` (a task or domain per sample): the statistic is the mean over groups of each group's mean, a
    macro average; a group no drawn unit reaches is left out of that replicate, as a group-by would.
    Vectorised with ``np.bincount`` so a thousand replicates of a few hundred samples take milliseconds.
    """
    codes = np.zeros(len(values), dtype=int) if groups is None else pd.factorize(np.asarray(groups, dtype=object))[0]

    def statistic(rows: np.ndarray) -> float:
        if not len(rows):
            return math.nan
        counts = np.bincount(codes[rows], minlength=codes.max() + 1)
        sums = np.bincount(codes[rows], weights=values[rows], minlength=codes.max() + 1)
        reached = counts > 0
        return float((sums[reached] / counts[reached]).mean())

    point = statistic(np.arange(len(values)))
    return point, [statistic(rows) for rows in bootstrap_indices(labels, n_boot, seed)]


def mean_ci(values: Sequence[float], units: Sequence[Hashable] | None = None, n_boot: int = 1000, seed: int = 0,
            level: float = 0.95) -> dict[str, float | int]:
    """The mean of per-sample scores with a percentile bootstrap interval over ``units`` (None: samples).

    The same interval as ``bootstrap_ci(table, lambda t: t[column].mean(), unit)`` (units labelled as
    ``unit_labels`` does, so the same draws), without a table per replicate.

    Returns:
        ``point``, ``lo``, ``hi``, ``n_boot``, ``n_valid``, ``level``, ``n_units``.
    """
    values = np.asarray(values, dtype=float)
    labels = unit_labels(pd.DataFrame({"unit": _unit_array(units, len(values))}), None if units is None else "unit")
    point, replicates = replicate_means(values, labels, n_boot, seed)
    return {**percentile_interval(point, replicates, level), "n_units": len(set(labels.tolist()))}


def _unit_array(units: Sequence[Hashable] | None, n: int) -> np.ndarray:
    """The unit of each of ``n`` samples: ``units`` as objects, or each sample its own unit."""
    labels = np.arange(n) if units is None else np.asarray(units, dtype=object)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} units for {n} samples")
    return labels


def paired_difference(a: Sequence[float], b: Sequence[float], units: Sequence[Hashable] | None = None,
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                      groups: Sequence[Hashable] | None = None) -> dict[str, float | int]:
    """Mean of ``a`` minus mean of ``b`` over the same samples, with a paired percentile bootstrap interval.

    Args:
        a, b: one score per sample for each system (e.g. 1.0 correct, 0.0 wrong), in the same sample order.
        units: the independent unit of each sample (a subject id); None resamples samples.
        groups: a group per sample (a task); the means become means over groups of each group's mean (the
            macro average of a continual-learning row), still paired.

    Returns:
        ``point`` (the difference), ``lo``, ``hi``, ``n_boot``, ``n_valid``, ``level``, ``n_units``.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need the same samples: {a.shape} and {b.shape}")
    labels = _unit_array(units, len(a))
    if groups is not None and len(groups) != len(a):
        raise ValueError(f"{len(groups)} groups for {len(a)} paired samples")
    point, replicates = replicate_means(a - b, labels, n_boot, seed, groups)
    return {**percentile_interval(point, replicates, level), "n_units": len(set(labels.tolist()))}


def paired_statistic_difference(a: pd.DataFrame, b: pd.DataFrame, statistic: Callable[[pd.DataFrame], float],
                                units: Sequence[Hashable] | None = None, n_boot: int = 1000, seed: int = 0,
                                level: float = 0.95) -> dict[str, float | int]:
    """A corpus statistic of ``a`` minus the same statistic of ``b`` (micro-F1, say), with a paired interval.

    ``a`` and ``b`` hold the same samples in the same order (two systems, or one model with the EHR on and
    off); each replicate draws units once and takes the same rows from both, so a statistic that is not a
    mean of per-sample scores is compared as ``paired_difference`` compares means.
    """
    if len(a) != len(b):
        raise ValueError(f"paired tables need the same samples: {len(a)} and {len(b)} rows")
    labels = _unit_array(units, len(a))
    point = statistic(a) - statistic(b) if len(a) else math.nan
    replicates = [statistic(a.iloc[rows]) - statistic(b.iloc[rows]) if len(rows) else math.nan
                  for rows in bootstrap_indices(labels, n_boot, seed)]
    return {**percentile_interval(point, replicates, level), "n_units": len(set(labels.tolist()))}
