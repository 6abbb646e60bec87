"""The run's ``index.html``: a line saying how the run ended, then per notebook its status (``ok``, ``failed``
with the cell, ``not run: needs 04``) and duration, its headline metrics with each expectation and whether it
held, its main figure as a thumbnail linking to its report, and links to its HTML.

Metrics come from ``metrics/<notebook>.json``, expectations from the params' ``expect`` (checked as
``app.report.check_expectations`` checks them, without raising), main figures from ``figures/main.json``
(written by ``app.report.save_figure(..., main=True)``).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainvlm.app.report import expectation_rows, main_figures

if TYPE_CHECKING:
    from brainvlm.app.notebook_result import NotebookResult

SHOWN_METRICS = 6  # up to this many metrics without an expectation are listed open; more fold away
MARKS = {True: ("held", "✓ held"), False: ("missed", "✗ not met"),
         None: ("unclear", "? not a comparison")}


def write_index(run_dir: Path, results: list[NotebookResult], params_path: Path,
                expect: dict[str, Any] | None = None) -> Path:
    """Write ``run_dir/index.html`` for ``results`` (in run order) and return its path."""
    figures = main_figures(run_dir)
    rows = [notebook_row(run_dir, r, expect or {}, figures.get(r.name.split("_", 1)[0])) for r in results]
    page = INDEX_TEMPLATE.format(run=html.escape(run_dir.name), params=html.escape(str(params_path)),
                                 outcome=outcome_html(results, expect or {}), rows="\n".join(rows))
    path = run_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def outcome_html(results: list[NotebookResult], expect: dict[str, Any]) -> str:
    """One line: how many notebooks finished, which failed, which were not run (and why), and how many
    expectations were not met."""
    ok = [r for r in results if r.status.startswith("ok")]
    parts = [f"{len(ok)} of {len(results)} notebooks finished"]
    parts += [f"{r.name} failed" for r in results if r.status.startswith("failed")]
    parts += [f"{r.name} {r.status}" for r in results if not r.was_run]
    missed = sum(row["passed"] is False for r in results for row in expectation_rows(r.metrics, expect))
    if missed:
        parts.append(f"{missed} expectation{'s' if missed != 1 else ''} not met")
    css = "good" if len(ok) == len(results) and not missed else "bad"
    return f"<p class='outcome {css}'>{html.escape(' · '.join(parts))}</p>"


def status_class(status: str) -> str:
    """The row's CSS class: ``ok``, ``failed`` or ``not-run``, ``earlier`` appended for an earlier run's."""
    kind = "not-run" if status.startswith("not run") else status.split(" ", 1)[0].strip(":")
    return kind + (" earlier" if status.endswith("(earlier)") else "")


def notebook_row(run_dir: Path, result: NotebookResult, expect: dict[str, Any], figure: str | None) -> str:
    """One notebook's table row; a notebook not run gets no links (an earlier run's files may be there)."""
    report = f"{result.name}.report.html"
    has_html = result.was_run and (run_dir / f"{result.name}.html").exists()
    links = f'<a href="{result.name}.html">notebook</a> · <a href="{report}">report</a>' if has_html else ""
    error = f'<div class="err">{html.escape(result.error)}</div>' if result.error else ""
    took = f"<div class='duration'>{result.seconds:.1f} s</div>" if result.was_run else ""
    return (f"<tr class='{status_class(result.status)}'><td>{html.escape(result.name)}"
            f"<div class='links'>{links}</div></td>"
            f"<td class='status'>{html.escape(result.status)}{took}{error}</td>"
            f"<td>{metrics_html(result.metrics, expect)}</td>"
            f"<td>{thumbnail_html(run_dir, figure, report if has_html else None)}</td></tr>")


def metrics_html(metrics: dict[str, Any], expect: dict[str, Any]) -> str:
    """The expectations table (metric, measured, expected, held) and the other metrics, folded if many."""
    rows = expectation_rows(metrics, expect)
    parts = [expectations_table(rows)] if rows else []
    others = {k: v for k, v in sorted(metrics.items()) if k not in {r["metric"] for r in rows}}
    if others:
        table = "<table class='m'>" + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{fmt(v)}</td></tr>" for k, v in others.items()) + "</table>"
        if len(others) > SHOWN_METRICS:
            label = "other metrics" if rows else "metrics"
            table = f"<details><summary>{len(others)} {label}</summary>{table}</details>"
        parts.append(table)
    return "".join(parts)


def expectations_table(rows: list[dict[str, Any]]) -> str:
    """A compact table of checked expectations with a count of those that held above it."""
    held = sum(r["passed"] is True for r in rows)
    lines = [f"<div class='count'>{held} of {len(rows)} expectations held</div>",
             "<table class='m'><tr><th>metric</th><th>measured</th><th>expected</th><th></th></tr>"]
    for r in rows:
        css, mark = MARKS[r["passed"]]
        lines.append(f"<tr><td>{html.escape(r['metric'])}</td><td>{fmt(r['measured'])}</td>"
                     f"<td>{html.escape(str(r['expected']))}</td><td class='{css}'>{mark}</td></tr>")
    return "".join(lines) + "</table>"


def thumbnail_html(run_dir: Path, figure: str | None, report: str | None) -> str:
    """The main figure's PNG as a thumbnail linking to the report (or to the PNG without one)."""
    if not figure or not (run_dir / "figures" / f"{figure}.png").is_file():
        return ""
    png = f"figures/{html.escape(figure)}.png"
    return (f'<a href="{report or png}"><img class="thumb" src="{png}" alt="{html.escape(figure)}"></a>'
            f"<div class='caption'>{html.escape(figure)}</div>")


def fmt(value: Any) -> str:
    """A metric value for the page: floats to 4 significant digits, a missing value as a dash."""
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


INDEX_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>brainvlm run {run}</title>
<style>
body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:.4em .5em;text-align:left;vertical-align:top}}
tr.failed{{background:#fdd}} tr.not-run{{background:#f3f3f3;color:#666}}
tr.ok td.status{{color:#070}} .err{{color:#900;font-size:.8em;max-width:16em}}
.duration{{color:#444;font-size:.85em;white-space:nowrap}} .count{{font-size:.85em;color:#555}}
table.m td,table.m th{{border:0;padding:.05em .6em .05em 0;font-size:.85em}}
td.held{{color:#070}} td.missed{{color:#b00;font-weight:bold}} td.unclear{{color:#a60}}
td.held,td.missed,td.unclear{{white-space:nowrap}} summary{{font-size:.85em;cursor:pointer}}
img.thumb{{max-width:220px;max-height:180px;border:1px solid #ccc}}
.caption,.links{{font-size:.75em;color:#666}}
.outcome.good{{color:#070}} .outcome.bad{{color:#b00;font-weight:bold}}
</style></head>
<body><h1>brainvlm run <code>{run}</code></h1><p>params: <code>{params}</code> ·
<a href="provenance.json">provenance</a></p>
{outcome}
<table><tr><th>notebook</th><th>status</th><th>headline metrics</th><th>main figure</th></tr>
{rows}
</table></body></html>
"""
