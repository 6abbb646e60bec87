"""Compare runs: every run's headline metrics in one table and one HTML page, seeds summarised.

It reads only run folders (``metrics/*.json`` and the params in ``provenance.json``), so runs made on
different machines compare. Runs whose params differ only in ``seed`` form a group: beside each run's value
and bootstrap interval (``<metric>_lo``/``_hi`` or ``_ci_low``/``_ci_high`` in the same metrics file) the
table gives the group's mean ± sd and min–max across seeds. A figure per metric shows it across the grid:
the ``group_by`` key on the x axis, one line per setting of the other keys that vary.

Written to ``out``: ``compare.csv`` (one row per run and metric), ``index.html``, ``figures/<metric>.png``.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from brainvlm.app.run_status import read_status
from brainvlm.core.jsonio import dumps, read_json

INTERVALS = (("_lo", "_hi"), ("_ci_low", "_ci_high"))  # comparison_metrics; evaluated tasks
SEED = "seed"
COLUMNS = ["group", "run", "seed", "metric", "value", "lo", "hi", "seeds_n", "seeds_mean", "seeds_sd",
           "seeds_min", "seeds_max"]


class CompareError(ValueError):
    """Folders that are not run folders, or a ``group_by`` key that does not vary; the message says which."""


def read_run(run_dir: Path) -> dict[str, Any]:
    """A run folder's name, params (from ``provenance.json``) and numeric metrics (all notebooks merged)."""
    run_dir = Path(run_dir)
    provenance = run_dir / "provenance.json"
    if not provenance.is_file():
        raise CompareError(f"{run_dir}: not a run folder (no provenance.json); give folders that "
                           "`brainvlm run` wrote, e.g. reports/<run>/ or reports/<sweep>/runs/<run>/")
    metrics: dict[str, float] = {}
    for path in sorted((run_dir / "metrics").glob("*.json")):
        for key, value in read_json(path).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[key] = float(value)
    return {"name": run_dir.name, "dir": run_dir, "params": read_json(provenance).get("params", {}),
            "metrics": metrics, "status": read_status(run_dir) or {}}


def read_runs(folders: list[Path]) -> list[dict[str, Any]]:
    """Every run of ``folders`` (a sweep folder stands for its runs), read with :func:`read_run`."""
    return [read_run(d) for d in expand_folders(folders)]


def run_notes(runs: list[dict[str, Any]]) -> list[str]:
    """What a reader of the comparison must be told: runs that failed or did not finish, runs without
    metrics, and runs that share no metric (the table then compares nothing side by side)."""
    notes = []
    for run in runs:
        status = run.get("status", {})
        if status.get("state") == "failed":
            notes.append(f"run {run['name']} failed (notebook {status.get('notebook')}, cell {status.get('cell')}): "
                         "only the notebooks that finished before it have metrics")
        elif status.get("state") == "running":
            notes.append(f"run {run['name']} has not finished (its status is running): its metrics may be partial")
        if not run["metrics"]:
            notes.append(f"run {run['name']} has no metrics ({run['dir'] / 'metrics'} holds no numbers)")
    measured = [run for run in runs if run["metrics"]]
    if len(measured) > 1 and not set.intersection(*(set(point_metrics(r["metrics"])) for r in measured)):
        listed = "; ".join(f"{r['name']}: {', '.join(sorted(point_metrics(r['metrics']))[:3])}" for r in measured)
        notes.append(f"the runs share no metric, so no metric is compared across runs ({listed})")
    return notes


def expand_folders(folders: list[Path]) -> list[Path]:
    """Run folders as given; a sweep folder (with ``sweep.json``) stands for the runs it lists."""
    out = []
    for folder in map(Path, folders):
        if (folder / "sweep.json").is_file():
            out.extend(folder / "runs" / name for name in read_json(folder / "sweep.json")["runs"])
        else:
            out.append(folder)
    return out


def varying_keys(runs: list[dict[str, Any]]) -> list[str]:
    """Params keys (other than ``seed``) whose value differs between runs, in first-seen order."""
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run["params"] if k not in keys and k != SEED)
    return [k for k in keys if len({dumps(r["params"].get(k)) for r in runs}) > 1]


def group_label(params: dict[str, Any], keys: list[str]) -> str:
    """``brain_lr=0.001, n_subjects=40``: the values that set a group apart (``all runs`` when none do)."""
    return ", ".join(f"{k}={_short(params.get(k))}" for k in keys) or "all runs"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def point_metrics(metrics: dict[str, float]) -> dict[str, tuple[float, float, float]]:
    """metric -> (value, lo, hi): ``<m>_lo``/``<m>_hi`` (or ``<m>_ci_low``/``<m>_ci_high``) beside ``<m>``
    are its bootstrap interval, not metrics of their own."""
    nan = float("nan")
    bounds, out = set(), {}
    for key, value in metrics.items():
        for low, high in INTERVALS:
            if key + low in metrics and key + high in metrics:
                out[key] = (value, metrics[key + low], metrics[key + high])
                bounds |= {key + low, key + high}
    return {k: out.get(k, (v, nan, nan)) for k, v in metrics.items() if k not in bounds}


def compare_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run and metric: value and interval, beside its seed group's n, mean, sd, min and max."""
    keys = varying_keys(runs)
    rows = []
    for run in runs:
        label = group_label(run["params"], keys)
        for metric, (value, lo, hi) in point_metrics(run["metrics"]).items():
            shown = {k: _short(run["params"].get(k)) for k in keys}
            rows.append({"group": label, "run": run["name"], "seed": run["params"].get(SEED),
                         "metric": metric, "value": value, "lo": lo, "hi": hi, **shown})
    table = pd.DataFrame(rows, columns=[*COLUMNS[:7], *keys])
    seeds = table.groupby(["group", "metric"])["value"]
    for column, how in (("seeds_n", "count"), ("seeds_mean", "mean"), ("seeds_sd", "std"),
                        ("seeds_min", "min"), ("seeds_max", "max")):
        table[column] = seeds.transform(how)
    return table[[*COLUMNS, *keys]]


def figure(table: pd.DataFrame, metric: str, x_key: str | None, out: Path) -> Path:
    """One metric across the grid: each run a dot with its interval, each group's mean ± sd joined."""
    rows = table[table["metric"] == metric].copy()
    rows["x"] = rows[x_key] if x_key else rows["group"]
    others = [k for k in table.columns[len(COLUMNS):] if k != x_key]
    rows["series"] = rows[others].astype(str).agg(", ".join, axis=1) if others else metric
    order = _ordered(rows["x"].unique())
    position = {x: i for i, x in enumerate(order)}
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(order) + 2), 3.2))
    for i, (series, part) in enumerate(rows.groupby("series", sort=False)):
        shift = 0.08 * (i - (rows["series"].nunique() - 1) / 2)
        xs = part["x"].map(position) + shift
        low = (part["value"] - part["lo"]).clip(lower=0).fillna(0)
        high = (part["hi"] - part["value"]).clip(lower=0).fillna(0)
        dots = ax.errorbar(xs, part["value"], yerr=[low, high], fmt="o", alpha=0.45, capsize=2, ms=4)
        means = part.groupby("x", sort=False)["value"].agg(["mean", "std"]).reindex(
            [x for x in order if x in set(part["x"])])
        ax.errorbar([position[x] + shift for x in means.index], means["mean"], yerr=means["std"].fillna(0),
                    fmt="s-", color=dots.lines[0].get_color(), capsize=4, label=str(series))
    ax.set_xticks(range(len(order)), [str(x) for x in order], rotation=20 if len(order) > 4 else 0)
    ax.set(xlabel=x_key or "group", ylabel=metric, title=metric)
    if others:
        ax.legend(frameon=False, fontsize=7, title=", ".join(others), title_fontsize=7)
    fig.tight_layout()
    path = out / "figures" / f"{re.sub(r'[^A-Za-z0-9._-]', '_', metric)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _ordered(values) -> list:
    """Axis order: numerically when every value reads as a number, else as first seen."""
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return list(values)


def compare_runs(run_dirs: list[Path], out: Path, group_by: str | None = None) -> Path:
    """Write ``compare.csv``, a figure per metric, and ``index.html``.

    Raises:
        CompareError: a folder that is not a run folder, or a ``group_by`` that is not a key that varies.
    """
    runs = read_runs(run_dirs)
    if not runs:
        raise CompareError("no run folders to compare")
    keys = varying_keys(runs)
    if group_by is not None and group_by not in keys:
        raise CompareError(f"--group-by {group_by}: not a params key that differs between these runs; "
                           f"keys that differ: {keys or 'none (the runs differ at most in seed)'}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = compare_table(runs)
    table.to_csv(out / "compare.csv", index=False)
    x_key = group_by or (keys[0] if keys else None)
    figures = {m: figure(table, m, x_key, out) for m in table["metric"].unique()}
    return write_page(table, runs, keys, figures, out)


def write_page(table: pd.DataFrame, runs: list[dict[str, Any]], keys: list[str], figures: dict[str, Path],
               out: Path) -> Path:
    """``index.html``: the notes (``run_notes``), then per metric a table of groups (each seed's value and
    interval, mean ± sd, min–max)."""
    sections = []
    for metric, part in table.groupby("metric", sort=True):
        image = f"<img src='{figures[metric].relative_to(out).as_posix()}' alt='{html.escape(metric)}'>"
        sections.append(f"<section><h2>{html.escape(metric)}</h2>{metric_table(part)}{image}</section>")
    listed = "".join(f"<li>{html.escape(r['name'])} <span class='dir'>{html.escape(str(r['dir']))}"
                     "</span></li>" for r in runs)
    notes = "".join(f"<p class='note'>Note: {html.escape(note)}</p>" for note in run_notes(runs))
    page = PAGE.format(n=len(runs), keys=html.escape(", ".join(keys) or "none (seeds only)"), runs=listed,
                       sections=notes + "\n".join(sections))
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def metric_table(part: pd.DataFrame) -> str:
    """One metric's rows: a group per row, its runs' values with intervals, and the seeds' summary."""
    rows = [("<table><tr><th>group</th><th>runs (seed: value [95% interval])</th><th>mean ± sd</th>"
             "<th>min–max</th><th>n</th></tr>")]
    for group, runs in part.groupby("group", sort=False):
        cells = "<br>".join(f"{html.escape(str(r.seed))}: {fmt(r.value)}{interval(r.lo, r.hi)}"
                            for r in runs.itertuples())
        first = runs.iloc[0]
        rows.append(f"<tr><td>{html.escape(group)}</td><td>{cells}</td>"
                    f"<td>{fmt(first.seeds_mean)} ± {fmt(first.seeds_sd)}</td>"
                    f"<td>{fmt(first.seeds_min)}–{fmt(first.seeds_max)}</td><td>{int(first.seeds_n)}</td></tr>")
    return "".join(rows) + "</table>"


def fmt(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def interval(lo: float, hi: float) -> str:
    return "" if math.isnan(lo) or math.isnan(hi) else f" [{fmt(lo)}, {fmt(hi)}]"


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>brainvlm compare</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
.dir {{ color: #777; font-size: 0.85em; }}
.note {{ color: #a33; }}
img {{ max-width: 640px; }}
</style></head><body>
<h1>Comparison of {n} runs</h1>
<p>Keys that differ between runs: {keys}. Runs that differ only in seed are one group; the table beside
each run's value and bootstrap interval gives the group's mean ± sd and min–max across seeds.
All values: <a href="compare.csv">compare.csv</a>.</p>
<details><summary>runs</summary><ul>{runs}</ul></details>
{sections}
</body></html>
"""
