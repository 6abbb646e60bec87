"""Continual-learning measures from an accuracy matrix: average accuracy, transfer and forgetting.

``R[i][j]`` is the accuracy on task ``j``'s test set after training on tasks ``1..i`` in order (row ``i``,
tasks and rows counted from 1); with a zero-shot row first (``R[0]``, before any training) the matrix has
T + 1 rows for T tasks, and ``zero_shot=True`` says so. Written once with NumPy from the definitions:

- ``final_average``: the mean of the last row, ``mean_j R[T][j]``;
- ``average_over_time``: the mean over ``i`` of the mean of ``R[i][1..i]`` (the tasks seen so far);
- ``mft`` (mean fine-tuned accuracy): the mean of ``R[j][j]``, each task right after it was learned;
- ``bwt`` (backward transfer, Lopez-Paz and Ranzato 2017): the mean over ``j < T`` of
  ``R[T][j] - R[j][j]`` (negative: forgetting);
- ``bwt_gem``: the GEM code's variant, the same sum divided by ``T`` (the last task counted with 0), named
  apart because papers quote either;
- ``forgetting`` (Chaudhry et al. 2018): the mean over ``j < T`` of ``max_{l = j..T-1} R[l][j] - R[T][j]``,
  the drop from the best accuracy the task had while it was learned or later (so ``forgetting >= -bwt``);
- ``fwt`` (forward transfer, needs the zero-shot row): the mean over ``j >= 2`` of ``R[j-1][j] - R[0][j]``.

Two tasks suffice for every measure but ``fwt``'s single term; libraries that need three tasks for
forgetting (``continuum`` returns 0 with two) are not used for that reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd


def _trained(matrix: Sequence[Sequence[float]], zero_shot: bool) -> np.ndarray:
    r = np.asarray(matrix, dtype=float)
    if r.ndim != 2:
        raise ValueError(f"an accuracy matrix is 2-D (rows: after each task, columns: tasks), got {r.shape}")
    trained = r[1:] if zero_shot else r
    if trained.shape[0] != trained.shape[1]:
        raise ValueError(f"{trained.shape[0]} trained rows for {trained.shape[1]} tasks: one row after each task"
                         + (" plus the zero-shot row" if zero_shot else ""))
    return trained


def continual_metrics(matrix: Sequence[Sequence[float]], zero_shot: bool = False) -> dict[str, float]:
    """Every measure of the module docstring (``fwt`` only with a zero-shot row); NaN where undefined."""
    r = _trained(matrix, zero_shot)
    tasks = r.shape[1]
    last, diagonal = r[-1], np.diag(r)
    earlier = range(tasks - 1)
    out = {"final_average": float(last.mean()),
           "average_over_time": float(np.mean([r[i, :i + 1].mean() for i in range(tasks)])),
           "mft": float(diagonal.mean()),
           "bwt": float(np.mean([last[j] - diagonal[j] for j in earlier])) if tasks > 1 else math.nan,
           "bwt_gem": float(np.sum(last - diagonal) / tasks),
           "forgetting": float(np.mean([r[j:-1, j].max() - last[j] for j in earlier])) if tasks > 1 else math.nan}
    if zero_shot:
        before = np.asarray(matrix, dtype=float)[0]
        out["fwt"] = float(np.mean([r[j - 1, j] - before[j] for j in range(1, tasks)])) if tasks > 1 else math.nan
    return out


def matrix_table(matrix: Sequence[Sequence[float]], tasks: Sequence[str], zero_shot: bool = False) -> pd.DataFrame:
    """The matrix as a table: rows "after <task>" (and "zero-shot"), columns the tasks."""
    _trained(matrix, zero_shot)
    rows = (["zero-shot"] if zero_shot else []) + [f"after {t}" for t in tasks]
    return pd.DataFrame(np.asarray(matrix, dtype=float), index=rows, columns=list(tasks))
