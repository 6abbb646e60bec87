"""What notebooks hand to the report: the run folder, metrics files, figures and expectations."""

from __future__ import annotations

import math
import operator
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainvlm.app import warning_paths
from brainvlm.core.jsonio import read_json, write_json
from brainvlm.core.paths import PROJECT_ROOT, REPORTS_DIR

if TYPE_CHECKING:
    import pandas as pd

warning_paths.install()  # every notebook imports this module: its warnings name packages, not machine paths

INTERACTIVE_RUN = "interactive"  # where a notebook opened by hand (no runner) writes
COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
EXPECTATION = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$")
MAIN_FIGURES = "main.json"  # figures/main.json: notebook number -> its main figure's name
FIGURE_NAME = re.compile(r"^(\d\d[a-z]?)_")  # a figure's name starts with its notebook's number


class ExpectationError(AssertionError):
    """A measured metric that does not meet what the params file expects."""


def checkout_root(start: Path | None = None) -> Path:
    """The checkout a notebook belongs to: the nearest folder at or above ``start`` (the working directory;
    JupyterLab starts a kernel in the notebook's folder) holding this project's ``pyproject.toml`` and
    ``notebooks/``; else the checkout the package is imported from."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        manifest = folder / "pyproject.toml"
        if (folder / "notebooks").is_dir() and manifest.is_file() and 'name = "brainvlm"' in manifest.read_text():
            return folder
    return PROJECT_ROOT


def reports_root(root: Path) -> Path:
    """Where runs go in a checkout: ``reports/``, or ``BRAINVLM_REPORTS_DIR`` (relative to the checkout)."""
    if root == PROJECT_ROOT:
        return REPORTS_DIR
    return root / os.environ.get("BRAINVLM_REPORTS_DIR", "reports")


def resolve_run_dir(run_dir: str | Path | None) -> Path:
    """The run folder a notebook writes into: the runner's, or ``reports/interactive`` when run by hand.

    A relative ``run_dir`` is taken from the project root (the checkout the notebook belongs to), never from the
    notebook's folder: ``run_dir = "reports/default"`` opens the run ``make run`` wrote.
    """
    root = checkout_root()
    path = Path(run_dir) if run_dir else reports_root(root) / INTERACTIVE_RUN
    if not path.is_absolute():
        path = root / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_metrics(run_dir: Path, notebook: str, metrics: dict[str, Any], study: str) -> dict[str, Any]:
    """Write a notebook's headline metrics to ``metrics/<notebook>.json``, each key prefixed ``<study>.``.

    A NaN (a statistic undefined on this data) is written as ``null``.

    Returns:
        The metrics as written (prefixed keys), for ``check_expectations``.
    """
    prefix = f"{study}."
    clean = {(k if k.startswith(prefix) else prefix + k): _plain(v) for k, v in metrics.items()}
    write_json(clean, Path(run_dir) / "metrics" / f"{notebook}.json")
    return clean


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python number it holds; NaN as None."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def comparison_metrics(name: str, interval: dict[str, Any]) -> dict[str, float]:
    """A measured difference as metrics: ``<name>`` and its interval bounds ``<name>_lo``, ``<name>_hi``.

    Args:
        interval: ``brainvlm.eval.bootstrap.paired_difference``'s result.
    """
    return {name: interval["point"], f"{name}_lo": interval["lo"], f"{name}_hi": interval["hi"]}


def save_figure(fig, run_dir: Path, name: str, main: bool = False) -> list[Path]:
    """Save a matplotlib figure as PNG (200 dpi) and SVG under ``figures/`` for papers.

    Args:
        name: the file stem, starting with the notebook's number (``04_image_controls``).
        main: the notebook's main figure, the thumbnail of the run's ``index.html``; recorded in
            ``figures/main.json`` under the notebook's number (a later main figure of the same number
            replaces it).
    """
    out = Path(run_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.savefig(paths[0], dpi=200, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight")
    if main:
        mark_main_figure(out, name)
    return paths


def mark_main_figure(figures_dir: Path, name: str) -> Path:
    """Record ``name`` in ``figures/main.json`` as the main figure of the notebook its number names."""
    match = FIGURE_NAME.match(name)
    if not match:
        raise ValueError(f"main figure {name!r}: its name must start with the notebook's number, "
                         f"e.g. '04_image_controls'")
    path = Path(figures_dir) / MAIN_FIGURES
    marked = read_json(path) if path.is_file() else {}
    marked[match.group(1)] = name
    return write_json(marked, path)


def main_figures(run_dir: Path) -> dict[str, str]:
    """Notebook number -> the name of its main figure, as the run's notebooks marked them."""
    path = Path(run_dir) / "figures" / MAIN_FIGURES
    return read_json(path) if path.is_file() else {}


def expectation_rows(metrics: dict[str, Any], expect: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per expectation whose key is one of ``metrics``: the rule, the measured value, whether it held.

    A rule that is not a comparison gets ``passed: None`` and is kept as written; nothing is raised.
    """
    rows = []
    for key, rule in sorted(expect.items()):
        if key not in metrics:
            continue
        value = metrics[key]
        match = EXPECTATION.match(str(rule))
        if not match:
            rows.append({"metric": key, "expected": rule, "measured": value, "passed": None})
            continue
        op, bound = match.group(1), float(match.group(2))
        ok = value is not None and COMPARISONS[op](float(value), bound)
        rows.append({"metric": key, "expected": f"{op} {bound:g}", "measured": value, "passed": ok})
    return rows


def check_expectations(metrics: dict[str, Any], expect: dict[str, str]) -> list[dict[str, Any]]:
    """Check the expectations whose key is one of ``metrics``; return one row per checked key.

    Args:
        metrics: a notebook's headline metrics.
        expect: params' ``expect`` mapping, e.g. ``{"sex.test_accuracy": ">= 0.90"}``.

    Raises:
        ExpectationError: listing every expectation that failed, with the measured values.
    """
    rows = expectation_rows(metrics, expect)
    unclear = next((r for r in rows if r["passed"] is None), None)
    if unclear:
        raise ExpectationError(f"expect['{unclear['metric']}'] = {unclear['expected']!r}: write a comparison "
                               f"such as '>= 0.90'")
    failed = [f"{r['metric']} = {r['measured']} (expected {r['expected']})" for r in rows if not r["passed"]]
    if failed:
        raise ExpectationError("expectations not met: " + "; ".join(failed))
    return rows


def show_expectations(metrics: dict[str, Any], expect: dict[str, str]) -> pd.DataFrame:
    """The expectations of a notebook as a table (metric, measured, expected, held), without raising on one that
    is not met: an unmet expectation is a result. The runner and ``index.html`` mark it, and a run with one
    exits non-zero at its end. A rule that is not a comparison still raises (the params file is wrong).
    """
    import pandas as pd

    rows = expectation_rows(metrics, expect)
    unclear = next((r for r in rows if r["passed"] is None), None)
    if unclear:
        raise ExpectationError(f"expect['{unclear['metric']}'] = {unclear['expected']!r}: write a comparison "
                               f"such as '>= 0.90'")
    table = pd.DataFrame(rows, columns=["metric", "measured", "expected", "passed"])
    table["held"] = table.pop("passed").map({True: "✓ held", False: "✗ not met"})
    held = int((table["held"] == "✓ held").sum())
    table.index = pd.Index(range(1, len(table) + 1), name=f"{held} of {len(table)} expectations held")
    return table


def image_tag(array, height: int = 96) -> str:
    """An inline ``<img>`` of a (H, W, 3) uint8 array, for notebook HTML."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" style="height:{height}px;image-rendering:pixelated">'


def conversation_html(sample: dict, image_root: str | Path, view=None) -> str:
    """Render a canonical sample as chat bubbles with its image views inline."""
    import html as html_lib

    from brainvlm.data.views import ViewConfig, load_view

    view = view or ViewConfig(view="orthogonal", size=96)
    turns = []
    for turn in sample["conversations"]:
        parts = []
        for part in turn["content"]:
            if part["type"] == "text":
                parts.append(html_lib.escape(part["text"]))
            else:
                array = load_view(Path(image_root) / part["image_path"], part.get("modality", "sMRI"), view)
                parts.append(image_tag(array) + f'<br><small>{html_lib.escape(part["image_path"])}</small>')
        color = "#eef" if turn["role"] == "user" else "#efe"
        turns.append(f'<div style="background:{color};margin:4px;padding:6px;border-radius:6px">'
                     f'<b>{turn["role"]}</b>: {" ".join(parts)}</div>')
    return (f'<div style="max-width:46em"><code>{html_lib.escape(sample["id"])}</code>'
            + "".join(turns) + "</div>")


def stage_starts(log: pd.DataFrame) -> list[tuple[int, str]]:
    """``(first step, stage name)`` of each stage of a training log (one entry for a one-stage fit)."""
    if "stage" not in log or log.empty:
        return []
    changed = log["stage"].ne(log["stage"].shift())
    return [(int(step), str(stage)) for step, stage in zip(log.loc[changed, "step"], log.loc[changed, "stage"])]


def plot_training_log(logs: dict[str, pd.DataFrame]):
    """Training loss per step (and validation loss where measured), one panel per run, plus the learning rate.

    A run of several stages (a curriculum) gets a dotted line and the stage's name where each stage begins.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(logs) + 1, figsize=(4.2 * (len(logs) + 1), 3.2), squeeze=False)
    for ax, (name, log) in zip(axes[0], logs.items()):
        ax.plot(log["step"], log["loss"], lw=1, label="train")
        val = log.dropna(subset=["val_loss"])
        ax.plot(val["step"], val["val_loss"], "o-", ms=3, label="validation")
        ax.set(title=name, xlabel="step", ylabel="loss per answer token", yscale="log")
        starts = stage_starts(log)
        for step, stage in starts if len(starts) > 1 else []:
            ax.axvline(step - 0.5, c="grey", ls=":", lw=1)
            ax.annotate(f"stage {stage}", (step, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="grey")
        ax.legend(frameon=False)
    for name, log in logs.items():
        axes[0, -1].plot(log["step"], log["lr"], label=name)
    axes[0, -1].set(title="learning rate", xlabel="step")
    axes[0, -1].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def highlight_image_tokens(text: str, image_token: str = "<image>") -> str:
    """HTML of a rendered prompt with each run of image tokens shown as one highlighted ``<image>×N``."""
    import html as html_lib
    import re

    token = re.escape(image_token)
    parts = re.split(f"((?:{token})+)", text)
    out = []
    for part in parts:
        if part.startswith(image_token):
            count = len(part) // len(image_token)
            out.append(f'<span style="background:#fd6;border-radius:3px;padding:0 3px">'
                       f'{html_lib.escape(image_token)}×{count}</span>')
        else:
            out.append(html_lib.escape(part))
    return '<pre style="white-space:pre-wrap">' + "".join(out) + "</pre>"
