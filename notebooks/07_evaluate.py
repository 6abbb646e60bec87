# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: brainvlm (.venv)
#     language: python
#     name: brainvlm
# ---

# %% [markdown]
# # 07 · Evaluate the trained adapters on the test split
# *In: the test samples of notebook 01 and the adapters of notebook 04 (`models/<task>/`). Out: the
# predictions (`predictions/07_<task>_test.jsonl`), metric tables with bootstrap 95% intervals, figures
# for papers under `figures/` and the headline metrics in `metrics/07_evaluate.json`.*
#
# *Needs: 01_generate_data (its test data) and 04_train_lora (its adapters).*
#
# Generation is batched with left padding and greedy by default; each finished batch is appended to the
# predictions file, so a run stopped half-way picks up where it stopped. The same generation runs from a
# shell: `python -m brainvlm predict --run-dir reports/<run> --task sex`.

# %% tags=["parameters"]
run_dir: str = ""  # run folder, injected by the runner (empty: reports/interactive)
brain_tasks_to_evaluate: list = ["sex", "bmi"]  # task names with an adapter trained by notebook 04
brain_generate_batch_size: int = 16  # prompts per generation batch, left padded (same key as notebook 04)
brain_max_new_tokens: int = 24  # longest answer in tokens; answers stop earlier at the end-of-turn token
brain_do_sample: bool = False  # sample instead of greedy decoding
brain_temperature: float = 1.0  # sampling brain_temperature (only with brain_do_sample)
brain_n_boot: int = 200  # bootstrap replicates for the 95% intervals (query subjects resampled)
brain_group_by: list = ["domain", "pair_type"]  # metadata columns for breakdowns (skipped where a task lacks one)
brain_n_worst: int = 3  # worst-scored samples shown per task
seed: int = 0  # seed for sampling and the bootstrap
expect: dict = {}  # metric -> rule (a comparison and a bound), checked in the Results cell

# %%
import html
import json

import pandas as pd
import seaborn as sns
from IPython.display import HTML, display

from brainvlm.app.report import (
    conversation_html,
    save_figure,
    show_expectations,
    write_metrics,
)
from brainvlm.app.run_folder import close_notebook, open_notebook
from brainvlm.core.jsonio import read_jsonl
from brainvlm.core.seeding import set_seed
from brainvlm.data import dataset
from brainvlm.eval import figures, generate, results, scoring
from brainvlm.studies import brain

set_seed(seed)
run_dir = open_notebook(run_dir, "07_evaluate", globals())  # checks the folder fits
manifest = dataset.read_manifest(run_dir)
sns.set_theme(style="whitegrid", context="notebook")
generation = generate.GenerationConfig(batch_size=brain_generate_batch_size, max_new_tokens=brain_max_new_tokens,
                                        do_sample=brain_do_sample, temperature=brain_temperature, seed=seed)
pd.DataFrame({name: manifest["tasks"][name]["counts"] for name in brain_tasks_to_evaluate})

# %% [markdown]
# ## Generate
# Each task's adapter answers its test samples. Samples already in the predictions file are skipped, so
# re-running this cell costs nothing and an interrupted run loses at most one batch.

# %%
predictions = {}
for task in brain_tasks_to_evaluate:
    predictions[task] = brain.predict_task(run_dir, task, "test", generation)
pd.concat({task: table.head(3) for task, table in predictions.items()})

# %% [markdown]
# ## Metrics with bootstrap 95% intervals
# Answers are parsed into labels or numbers (an unparseable answer counts wrong, or as the training mean
# for numbers). Intervals resample query subjects, because each subject appears in several comparisons.

# %%
evaluations = [results.evaluate_task(run_dir, task, generate.prediction_path(run_dir, task, "test"),
                                     n_boot=brain_n_boot, seed=seed) for task in brain_tasks_to_evaluate]
headline = results.headline_table(evaluations)
headline.round(3)

# %% [markdown]
# ## Categorical tasks: confusion matrix

# %%
for ev in (e for e in evaluations if e.kind in scoring.LABEL_TASKS):
    fig = figures.confusion_heatmap(results.confusion_table(ev), title=f"{ev.name} · test")
    save_figure(fig, run_dir, f"07_{ev.name}_confusion", main=ev is evaluations[0])

# %% [markdown]
# ## Numerical tasks: predicted against true values

# %%
for ev in (e for e in evaluations if e.kind in scoring.NUMERIC_TASKS):
    fig = figures.predicted_vs_true(ev.table, title=f"{ev.name} · test", fallback=ev.config.fallback)
    save_figure(fig, run_dir, f"07_{ev.name}_scatter", main=ev is evaluations[0])

# %% [markdown]
# ## Breakdowns with intervals
# Each headline metric inside each domain (`metadata.domain`) and inside each value of the other
# metadata columns in `brain_group_by`. For the sex task, `pair_type` tells whether the reference had the
# query's sex (`same_class`) or the other (`different_class`): a model that copies the reference's label
# is right on the first and wrong on the second.

# %%
breakdowns = {}
for ev in evaluations:
    for column in (c for c in brain_group_by if c in ev.table.columns):
        table = results.group_intervals(ev, column, n_boot=brain_n_boot, seed=seed)
        breakdowns[(ev.name, column)] = table
        fig = figures.interval_bars(table, title=f"{ev.name} by {column}")
        save_figure(fig, run_dir, f"07_{ev.name}_by_{column}")
pd.concat(breakdowns, names=["task", "column"]).round(3)

# %% [markdown]
# ## The worst-scored samples
# Wrong labels (unparseable first) or the largest absolute errors, with the scans the model saw.

# %%
samples = {task: {s["id"]: s for s in read_jsonl(manifest["tasks"][task]["files"]["test"])}
           for task in brain_tasks_to_evaluate}
for ev in evaluations:
    worst = results.worst_samples(ev, brain_n_worst)
    display(HTML(f"<h3>{html.escape(ev.name)}</h3>"), worst)
    for row in worst.itertuples():
        display(HTML(conversation_html(samples[ev.name][row.id], manifest["image_root"])
                     + f"<p><b>prediction</b>: {html.escape(str(row.prediction))}</p>"))

# %% [markdown]
# ## Results

# %%
metrics = results.headline_metrics(evaluations)
metrics = write_metrics(run_dir, "07_evaluate", metrics, study="brain")
checked = show_expectations(metrics, expect)
for task, table in predictions.items():
    unanswered = int(table["prediction"].isna().sum())
    assert unanswered == 0, f"{task}: {unanswered} test samples have no prediction (dropped for length?)"
print(json.dumps(metrics, indent=1))
checked

# %% [markdown]
# The run folder records this notebook (by hand: its `index.html`, `status.json` and `provenance.json`).

# %%
close_notebook(run_dir, "07_evaluate", globals())
