"""Compare runs: first whether each expectation held, then each study's headline metrics, seeds summarised.

It reads only run folders (``metrics/*.json``, and the params, each notebook's outcome and expectations in
``provenance.json``), so runs made on different machines compare. Runs whose params differ only in ``seed``
form a group, summarised as mean ± sd and min–max across seeds.

- Expectations: every ``expect`` rule a compared run holds (``notebook_params[<notebook>]["expect"]``, else
  ``params["expect"]``), checked against every run's metrics: held, not met, or not measured and why (the
  notebook failed, was not run, or was not part of the run).
- Headline metrics: each metric an expectation names (a rule on an interval bound ``<m>_lo`` names ``<m>``)
  and each metric published with a bootstrap interval (``<m>_lo``/``_hi`` or ``_ci_low``/``_ci_high``
  beside it): what the notebooks report as results. A figure per headline metric shows it across the grid:
  the ``group_by`` key on the x axis, one line per setting of the other keys that vary.

Runs that failed, or lack a metric that others have, are named on the page, never left out. Written to
``out``: ``compare.csv`` (one row per run and metric), ``expectations.csv`` (one row per run and
expectation), ``index.html`` (``app.compare_page``), ``figures/<metric>.png``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from brainvlm.app.compare_page import Page, write_page
from brainvlm.app.notebook_result import NOT_RUN
from brainvlm.app.report import expectation_rows
from brainvlm.app.run_status import read_status
from brainvlm.core.jsonio import dumps, read_json

INTERVALS = (("_lo", "_hi"), ("_ci_low", "_ci_high"))  # comparison_metrics; evaluated tasks
SEED = "seed"
COLUMNS = ["group", "run", "seed", "metric", "value", "lo", "hi", "seeds_n", "seeds_mean", "seeds_sd",
           "seeds_min", "seeds_max"]


class CompareError(ValueError):
    """Folders that are not run folders, or a ``group_by`` key that does not vary; the message says which."""


def read_run(run_dir: Path) -> dict[str, Any]:
    """A run folder's name, params, numeric metrics (all notebooks merged), each notebook's outcome and the
    expectations it held; a notebook the run left out (``not run: needs 04``) adds no metrics."""
    run_dir = Path(run_dir)
    provenance = run_dir / "provenance.json"
    if not provenance.is_file():
        raise CompareError(f"{run_dir}: not a run folder (no provenance.json); give folders that "
                           "`brainvlm run` wrote, e.g. reports/<run>/ or reports/<sweep>/runs/<run>/")
    recorded = read_json(provenance)
    outcomes = {n["name"]: n["status"] for n in recorded.get("notebooks", [])}
    metrics: dict[str, float] = {}
    sources: dict[str, str] = {}  # metric -> the notebook that wrote it
    for path in sorted((run_dir / "metrics").glob("*.json")):
        if outcomes.get(path.stem, "ok").startswith(NOT_RUN):
            continue  # an earlier run's file: this run did not run the notebook
        for key, value in read_json(path).items():
            if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                sources[key] = path.stem
            if value is not None and key in sources:
                metrics[key] = float(value)
    undefined = sorted(set(sources) - set(metrics))  # NaN on this data, written as null
    return {"name": run_dir.name, "dir": run_dir, "params": recorded.get("params", {}), "metrics": metrics,
            "undefined": undefined, "sources": sources, "outcomes": outcomes,
            "expect": run_expectations(recorded, sources),
            "status": read_status(run_dir) or {}}


def run_expectations(provenance: dict[str, Any], sources: dict[str, str]) -> dict[str, tuple[str, str]]:
    """metric -> (notebook, rule): the ``expect`` each notebook ran with, else the params' ``expect``.

    A rule given to several notebooks (a params file's ``expect`` goes to every notebook declaring
    ``expect``) is the notebook's that measured it, else the first that holds it.
    """
    found: dict[str, tuple[str, str]] = {}
    per_notebook = provenance.get("notebook_params", {})
    for notebook, values in per_notebook.items():
        for metric, rule in (values.get("expect") or {}).items():
            if metric not in found or sources.get(metric) == notebook:
                found[metric] = (notebook, str(rule))
    if not any("expect" in values for values in per_notebook.values()):
        for metric, rule in (provenance.get("params", {}).get("expect") or {}).items():
            found[metric] = (sources.get(metric, ""), str(rule))
    return found


def read_runs(folders: list[Path]) -> list[dict[str, Any]]:
    """Every run of ``folders`` (a sweep folder stands for its runs), read with :func:`read_run`."""
    return [read_run(d) for d in expand_folders(folders)]


def run_notes(runs: list[dict[str, Any]]) -> list[str]:
    """What a reader of the comparison must be told: runs that failed or did not finish, runs without
    metrics, runs that lack a headline metric others have (and why), and runs that share no metric."""
    notes = []
    for run in runs:
        status = run.get("status", {})
        if status.get("state") == "failed":
            notes.append(failure_note(run))
        elif status.get("state") == "running":
            notes.append(f"run {run['name']} has not finished (its status is running): its metrics may be partial")
        if not run["metrics"]:
            notes.append(f"run {run['name']} has no metrics ({run['dir'] / 'metrics'} holds no numbers)")
    headline = headline_metrics(runs)
    for run in runs:
        lacking = [m for m in headline if m not in point_metrics(run["metrics"])]
        if lacking and run["metrics"]:
            more = f" and {len(lacking) - 4} more" if len(lacking) > 4 else ""
            notes.append(f"run {run['name']} lacks {', '.join(lacking[:4])}{more} "
                         f"({why_missing(runs, run, lacking[0])})")
    measured = [run for run in runs if run["metrics"]]
    if len(measured) > 1 and not set.intersection(*(set(point_metrics(r["metrics"])) for r in measured)):
        listed = "; ".join(f"{r['name']}: {', '.join(sorted(point_metrics(r['metrics']))[:3])}" for r in measured)
        notes.append(f"the runs share no metric, so no metric is compared across runs ({listed})")
    return notes


def failure_note(run: dict[str, Any]) -> str:
    """``run X failed (notebook N, cell C)``, with the notebooks it did not run; when every notebook ran, the
    run's error (expectations not met, or not measured)."""
    status, outcomes = run["status"], run.get("outcomes", {})
    head = f"run {run['name']} failed"
    if not outcomes:  # a folder of a runner that stopped at the first failure
        return (f"{head} (notebook {status.get('notebook')}, cell {status.get('cell')}): only the notebooks "
                "that finished before it have metrics")
    failed = [name for name, outcome in outcomes.items() if outcome == "failed"]
    left_out = [f"{name} {outcome}" for name, outcome in outcomes.items() if outcome.startswith(NOT_RUN)]
    if not failed and not left_out:  # every notebook ran: an expectation was not met or not measured
        error = str(status.get("error", ""))
        return f"{head}: every notebook ran; {error[:200] + ('...' if len(error) > 200 else '')}"
    where = f" (notebook {status.get('notebook')}, cell {status.get('cell')})" if failed else ""
    told = "".join(f"; {text}" for text in left_out)
    return f"{head}{where}{told}; metrics come from the notebooks that finished"


def why_missing(runs: list[dict[str, Any]], run: dict[str, Any], metric: str) -> str:
    """Why ``run`` has no ``metric``: the notebook that measures it (in the other runs, or whose
    expectation names it) failed, was not run, or was not part of the run; else ``not measured``."""
    owners = [r["sources"].get(metric) or r["expect"].get(metric, ("", ""))[0] for r in runs]
    notebook = next((name for name in owners if name), None)
    outcome = run.get("outcomes", {}).get(notebook) if notebook else None
    if notebook and run.get("outcomes") and outcome is None:
        return f"{notebook} was not part of the run"
    if outcome and not outcome.startswith("ok"):
        return f"{notebook} {outcome}"
    if run.get("status", {}).get("state") == "running":
        return "the run has not finished"
    return "not measured"


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


def headline_metrics(runs: list[dict[str, Any]]) -> list[str]:
    """The metrics shown first, in name order: each one an expectation of any run names (a rule on a bound
    ``<m>_lo``/``_hi``/``_ci_low``/``_ci_high`` names ``<m>``), and each one published with a bootstrap
    interval."""
    points = {run["name"]: point_metrics(run["metrics"]) for run in runs}
    measured = {m for values in points.values() for m in values}
    with_interval = {m for values in points.values() for m, (_, lo, hi) in values.items()
                     if not (math.isnan(lo) or math.isnan(hi))}
    named = {interval_base(m, measured) for run in runs for m in run["expect"]}
    return sorted((named & measured) | with_interval)


def interval_base(metric: str, measured: set[str]) -> str:
    """``<m>`` for an interval bound ``<m>_lo`` (any spelling of ``INTERVALS``) when ``<m>`` is measured."""
    for suffix in (s for pair in INTERVALS for s in pair):
        if metric.endswith(suffix) and metric[: -len(suffix)] in measured:
            return metric[: -len(suffix)]
    return metric


def expectation_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run and expectation (every rule any run holds, checked against every run): group, run,
    seed, notebook, metric, rule, measured, held (True, False, or None when not measured) and why not."""
    rules = {}
    for run in runs:
        for metric, (notebook, rule) in run["expect"].items():
            rules.setdefault((metric, rule), notebook)
    rows = []
    for (metric, rule), notebook in sorted(rules.items()):
        for run in runs:
            values = {**dict.fromkeys(run["undefined"]), **run["metrics"]}  # undefined (null) is not met
            checked = expectation_rows(values, {metric: rule})
            why = "" if checked else why_missing(runs, run, metric)
            if metric in run["undefined"]:
                why = "undefined on this data (null)"
            rows.append({"group": run["group"], "run": run["name"], "seed": run["params"].get(SEED),
                         "notebook": run["sources"].get(metric, notebook), "metric": metric, "rule": rule,
                         "measured": run["metrics"].get(metric, float("nan")),
                         "held": checked[0]["passed"] if checked else None, "why": why})
    return pd.DataFrame(rows, columns=["group", "run", "seed", "notebook", "metric", "rule", "measured", "held",
                                       "why"])


def compare_runs(run_dirs: list[Path], out: Path, group_by: str | None = None) -> Path:
    """Write ``compare.csv``, ``expectations.csv``, a figure per headline metric, and ``index.html``.

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
    for run in runs:
        run["group"] = group_label(run["params"], keys)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = compare_table(runs)
    table.to_csv(out / "compare.csv", index=False)
    expectations = expectation_table(runs)
    expectations.to_csv(out / "expectations.csv", index=False)
    x_key = group_by or (keys[0] if keys else None)
    headline = headline_metrics(runs)
    figures = {m: figure(table, m, x_key, out) for m in headline}
    missing = {(r["name"], m): why_missing(runs, r, m) for r in runs for m in headline
               if m not in point_metrics(r["metrics"])}
    return write_page(Page(runs, keys, table, expectations, headline, figures, run_notes(runs), missing), out)
