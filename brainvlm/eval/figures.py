"""Figures of an evaluation for papers: confusion matrix, predicted against true values, bars with interval
whiskers. Each function returns a matplotlib figure; ``report.save_figure`` writes it as PNG and SVG."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def confusion_heatmap(confusion: pd.DataFrame, title: str = "", normalize: bool = False) -> plt.Figure:
    """Heatmap of a confusion matrix (reference labels as rows, predictions as columns), counts annotated.

    Args:
        confusion: ``results.confusion_table`` (an ``unparseable`` column is kept: those answers count wrong).
        normalize: colour by the share of each reference row instead of counts (annotations stay counts).
    """
    counts = confusion.astype(int)
    colours = counts.div(counts.sum(axis=1).replace(0, 1), axis=0) if normalize else counts
    fig, ax = plt.subplots(figsize=(1.2 * counts.shape[1] + 2.2, 1.0 * counts.shape[0] + 1.6))
    sns.heatmap(colours, annot=counts, fmt="d", cmap="Blues", cbar=True, linewidths=0.5, ax=ax,
                vmin=0, vmax=1 if normalize else None)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def predicted_vs_true(table: pd.DataFrame, title: str = "", fallback: float | None = None) -> plt.Figure:
    """Scatter of parsed predictions against reference values, with the identity line.

    Args:
        table: a numeric task's score table (``target``, ``parsed``, ``parse_ok``).
        fallback: where unparseable answers are drawn (as crosses); None leaves them out of the plot.
    """
    ok = table["parse_ok"].astype(bool).to_numpy()
    target = table["target"].astype(float).to_numpy()
    parsed = pd.to_numeric(table["parsed"], errors="coerce").to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(target[ok], parsed[ok], s=18, alpha=0.7, label=f"parsed (n={int(ok.sum())})")
    if fallback is not None and (~ok).any():
        ax.scatter(target[~ok], np.full((~ok).sum(), fallback), marker="x", color="tab:red",
                   label=f"unparseable as {fallback:.2f} (n={int((~ok).sum())})")
    values = np.concatenate([target, parsed[ok]])
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="y = x")
    ax.set_xlabel("reference")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def interval_bars(intervals: pd.DataFrame, x: str = "group", facet: str | None = "metric", title: str = "",
                  ylabel: str = "value (95% CI)") -> plt.Figure:
    """Bars of ``value`` with whiskers from ``ci_low`` to ``ci_high``, one panel per ``facet`` value.

    Args:
        intervals: one row per bar with ``value``, ``ci_low``, ``ci_high`` and the ``x`` (and ``facet``)
            columns, e.g. ``results.group_intervals``.
        facet: column whose values get a panel each (metrics differ in scale: MAE beside r); None: one panel.
    """
    panels = list(dict.fromkeys(intervals[facet])) if facet else [None]
    width = 0.5 + len(panels) * max(2.2, 0.9 * intervals[x].nunique() + 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        rows = intervals if panel is None else intervals[intervals[facet] == panel]
        _bars_with_whiskers(ax, rows, x)
        ax.set_title(str(panel) if panel is not None else "", fontsize=10)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _bars_with_whiskers(ax: plt.Axes, rows: pd.DataFrame, x: str) -> None:
    """One bar per row at its ``x`` label; whiskers are clipped to zero where an interval misses the point."""
    positions = np.arange(len(rows))
    values = rows["value"].astype(float).to_numpy()
    below = np.clip(values - rows["ci_low"].astype(float).to_numpy(), 0, None)
    above = np.clip(rows["ci_high"].astype(float).to_numpy() - values, 0, None)
    colours = sns.color_palette(n_colors=max(len(rows), 1))
    ax.bar(positions, np.nan_to_num(values), width=0.7, color=colours)
    ax.errorbar(positions, values, yerr=[below, above], fmt="none", ecolor="black", capsize=4, linewidth=1)
    ax.set_xticks(positions, [str(v) for v in rows[x]], rotation=20 if len(rows) > 3 else 0)
    ax.axhline(0, color="black", linewidth=0.6)
