"""The HTML page of ``brainvlm compare`` (``app.compare`` gathers what it shows).

Top to bottom: the notes (runs that failed, did not finish or lack a metric), the expectations (one row per
rule, one column per group of runs: held or not, and for seed groups how many held, mean ± sd and min),
the headline metrics of each study as one table with their figures, then, folded, every metric per group
and the list of runs.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

MARKS = {True: ("held", "✓"), False: ("missed", "✗"), None: ("unclear", "?")}


@dataclass
class Page:
    """What the page shows.

    Args:
        runs: ``app.compare.read_run``'s dicts, each with its ``group`` label.
        keys: params keys that differ between runs.
        table: ``app.compare.compare_table`` (one row per run and metric).
        expectations: ``app.compare.expectation_table`` (one row per run and expectation).
        headline: the headline metrics; ``figures``: metric -> its figure.
        notes: ``app.compare.run_notes``; ``missing``: (run, metric) -> why the run lacks a headline metric.
    """

    runs: list[dict[str, Any]]
    keys: list[str]
    table: pd.DataFrame
    expectations: pd.DataFrame
    headline: list[str]
    figures: dict[str, Path]
    notes: list[str]
    missing: dict[tuple[str, str], str]

    @property
    def groups(self) -> dict[str, list[str]]:
        """Group label -> its runs' names, in the order the runs were given."""
        out: dict[str, list[str]] = {}
        for run in self.runs:
            out.setdefault(run["group"], []).append(run["name"])
        return out


def write_page(page: Page, out: Path) -> Path:
    """Write ``out/index.html`` and return its path."""
    notes = "".join(f"<p class='note'>Note: {html.escape(note)}</p>" for note in page.notes)
    body = [notes, expectations_html(page), headline_html(page, out), all_metrics_html(page), runs_html(page)]
    text = PAGE.format(n=len(page.runs), keys=html.escape(", ".join(page.keys) or "none (seeds only)"),
                       body="\n".join(body))
    path = out / "index.html"
    path.write_text(text, encoding="utf-8")
    return path


def group_header(page: Page, first: str) -> str:
    """A header row: ``first``, then each group with its number of runs."""
    cells = "".join(f"<th>{html.escape(group)}<div class='sub'>{len(names)} run{'s' if len(names) > 1 else ''}"
                    f"</div></th>" for group, names in page.groups.items())
    return f"<tr><th>{first}</th>{cells}</tr>"


# ------------------------------------------------------------------------------------------ expectations
def expectations_html(page: Page) -> str:
    """The runs × expectations table, with a count of the checks that held above it."""
    rows = page.expectations
    if rows.empty:
        return ("<h2>Expectations</h2><p>No compared run holds an expectation (their params set "
                "<code>expect: {}</code>).</p>")
    held = int(rows["held"].map(lambda v: v is True).sum())
    lines = [(f"<h2>Expectations</h2><p class='count'>{held} of {len(rows)} checks held "
             "(every rule of any run, checked against every run; <a href='expectations.csv'>expectations.csv"
             "</a>)</p><table>"), group_header(page, "expectation")]
    for (metric, rule), part in rows.groupby(["metric", "rule"], sort=False):
        cells = "".join(expectation_cell(part[part["group"] == group]) for group in page.groups)
        notebook = html.escape(str(part["notebook"].iloc[0] or ""))
        lines.append(f"<tr><td>{html.escape(metric)} <b>{html.escape(rule)}</b><div class='sub'>{notebook}</div>"
                     f"</td>{cells}</tr>")
    return "".join(lines) + "</table>"


def run_mark(row: Any) -> str:
    """One run's check: ``✓ 0.93``, ``✗ 0.41``, or ``not measured: 04_train_lora failed``."""
    if row.why and row.held is None:
        return f"— not measured: {html.escape(row.why)}"
    text = f"{MARKS[row.held][1]} {fmt(row.measured)}"
    return text + (f" ({html.escape(row.why)})" if row.why else "")


def expectation_cell(rows: pd.DataFrame) -> str:
    """A group's cell: its run's check; for several seeds how many held, mean ± sd and min, then each seed."""
    held = [row.held for row in rows.itertuples()]
    css = "missed" if False in held else "held" if all(h is True for h in held) else "unclear"
    marks = [run_mark(row) for row in rows.itertuples()]
    if len(marks) == 1:
        return f"<td class='{css}'>{marks[0]}</td>"
    values = rows["measured"].dropna()
    stats = (f"<div>{fmt(values.mean())} ± {fmt(values.std())} · min {fmt(values.min())}</div>"
             if len(values) else "")
    seeds = " · ".join(f"seed {html.escape(str(row.seed))}: {mark}"
                       for row, mark in zip(rows.itertuples(), marks, strict=True))
    count = sum(h is True for h in held)
    return f"<td class='{css}'><b>{count} of {len(held)} held</b>{stats}<div class='sub'>{seeds}</div></td>"


# ------------------------------------------------------------------------------------------ headline metrics
def headline_html(page: Page, out: Path) -> str:
    """Per study one table (a row per headline metric, a column per group), then the headline figures."""
    if not page.headline:
        return ("<h2>Headline metrics</h2><p>None: no expectation names a metric and no metric carries a "
                "bootstrap interval; every metric is listed below.</p>")
    parts = [("<h2>Headline metrics</h2><p class='count'>The metrics the expectations name and those published "
             "with a bootstrap interval: a run's value [95% interval]; for seeds, mean ± sd and min–max.</p>")]
    studies: dict[str, list[str]] = {}
    for metric in page.headline:
        studies.setdefault(metric.split(".", 1)[0], []).append(metric)
    for study, metrics in studies.items():
        rows = [headline_row(page, metric) for metric in metrics]
        parts.append(f"<h3>{html.escape(study)}</h3><table>{group_header(page, 'metric')}{''.join(rows)}</table>")
    images = "".join(f"<img src='{page.figures[m].relative_to(out).as_posix()}' alt='{html.escape(m)}'>"
                     for m in page.headline if m in page.figures)
    return "".join(parts) + f"<div class='figs'>{images}</div>"


def headline_row(page: Page, metric: str) -> str:
    """One headline metric across the groups; a run that lacks it is named with the reason."""
    part = page.table[page.table["metric"] == metric]
    cells = []
    for group, names in page.groups.items():
        present = part[part["group"] == group]
        text = value_text(present) if len(present) else "—"
        lacking = [f"{html.escape(n)} ({html.escape(page.missing.get((n, metric), 'not measured'))})"
                   for n in names if n not in set(present["run"])]
        if lacking:
            text += f"<div class='miss'>missing in {'; '.join(lacking)}</div>"
        cells.append(f"<td>{text}</td>")
    return f"<tr><td>{html.escape(metric)}</td>{''.join(cells)}</tr>"


def value_text(rows: pd.DataFrame) -> str:
    """One run's value and interval, or several seeds' mean ± sd, min–max and each seed's value."""
    if len(rows) == 1:
        row = rows.iloc[0]
        return f"{fmt(row['value'])}{interval(row['lo'], row['hi'])}"
    values = rows["value"]
    seeds = " · ".join(f"seed {html.escape(str(r.seed))}: {fmt(r.value)}" for r in rows.itertuples())
    return (f"{fmt(values.mean())} ± {fmt(values.std())}<div class='sub'>min–max {fmt(values.min())}–"
            f"{fmt(values.max())} · n {len(values)}</div><div class='sub'>{seeds}</div>")


# ------------------------------------------------------------------------------------------ folded
def all_metrics_html(page: Page) -> str:
    """Every metric, a table each (a row per group: each seed's value and interval, mean ± sd, min–max)."""
    metrics = sorted(page.table["metric"].unique())
    tables = "".join(f"<h3>{html.escape(metric)}</h3>{metric_table(page.table[page.table['metric'] == metric])}"
                     for metric in metrics)
    return (f"<details><summary>All {len(metrics)} metrics, per group (<a href='compare.csv'>compare.csv</a>)"
            f"</summary>{tables}</details>")


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


def runs_html(page: Page) -> str:
    """The runs compared, each with its folder and state."""
    items = "".join(f"<li>{html.escape(r['name'])} · {html.escape(r['status'].get('state', 'unknown'))} "
                    f"<span class='sub'>{html.escape(str(r['dir']))}</span></li>" for r in page.runs)
    return f"<details><summary>{len(page.runs)} runs</summary><ul>{items}</ul></details>"


def fmt(value: float | None) -> str:
    """A number to 4 significant digits; a missing one as a dash."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def interval(lo: float, hi: float) -> str:
    """`` [lo, hi]``, or nothing without an interval."""
    return "" if math.isnan(lo) or math.isnan(hi) else f" [{fmt(lo)}, {fmt(hi)}]"


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>brainvlm compare</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
.sub {{ color: #777; font-size: 0.8em; }} .count {{ color: #555; }}
.note, .miss {{ color: #a33; }} .miss {{ font-size: 0.8em; }}
td.held {{ background: #efe; }} td.missed {{ background: #fdd; }} td.unclear {{ background: #fff6e0; }}
.figs img {{ max-width: 420px; margin: 0 0.5em 0.5em 0; }}
summary {{ cursor: pointer; margin-top: 1em; }}
</style></head><body>
<h1>Comparison of {n} runs</h1>
<p>Keys that differ between runs: {keys}. Runs that differ only in seed are one group.</p>
{body}
</body></html>
"""
