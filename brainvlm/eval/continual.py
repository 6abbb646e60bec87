"""Continual-learning measures from an accuracy matrix: average accuracy, backward transfer, forgetting.

``R[i][j]`` is the accuracy on task ``j``'s test set after training on tasks ``0..i`` in order (row ``i``);
with a zero-shot row first (before any training) the matrix has T + 1 rows for T tasks, and ``zero_shot=True``
says so. Definitions (Lopez-Paz and Ranzato 2017; Chaudhry et al. 2018):

- average accuracy: the mean of the last row;
- backward transfer (BWT): the mean over tasks ``j < T-1`` of ``R[T-1][j] - R[j][j]`` (negative: forgetting);
- forgetting: the mean over tasks ``j < T-1`` of ``max_{i < T-1} R[i][j] - R[T-1][j]`` (positive: forgetting);
- forward transfer (with a zero-shot row): the mean over ``j > 0`` of ``R[j-1][j]`` minus the zero-shot
  accuracy on ``j``.
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
    """Average accuracy, BWT, forgetting (and forward transfer with a zero-shot row) of an accuracy matrix."""
    r = _trained(matrix, zero_shot)
    tasks = r.shape[1]
    last = r[-1]
    out = {"average_accuracy": float(last.mean()),
           "bwt": float(np.mean([last[j] - r[j, j] for j in range(tasks - 1)])) if tasks > 1 else math.nan,
           "forgetting": float(np.mean([r[:-1, j].max() - last[j] for j in range(tasks - 1)])) if tasks > 1
           else math.nan}
    if zero_shot:
        before = np.asarray(matrix, dtype=float)[0]
        out["forward_transfer"] = float(np.mean([r[j - 1, j] - before[j] for j in range(1, tasks)])) \
            if tasks > 1 else math.nan
    return out


def matrix_table(matrix: Sequence[Sequence[float]], tasks: Sequence[str], zero_shot: bool = False) -> pd.DataFrame:
    """The matrix as a table: rows "after <task>" (and "zero-shot"), columns the tasks."""
    _trained(matrix, zero_shot)
    rows = (["zero-shot"] if zero_shot else []) + [f"after {t}" for t in tasks]
    return pd.DataFrame(np.asarray(matrix, dtype=float), index=rows, columns=list(tasks))
