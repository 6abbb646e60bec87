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
# # 01 · Generate brain-MRI conversation data
# *In: a phenotype table and NIfTI volumes (or the synthetic default cohort). Out: subject-disjoint
# splits and multi-image comparison conversations, one JSONL per task and split, under `data/`.*
#
# *Needs: no other notebook.*
#
# Each sample is a reference-augmented comparison: the model sees a reference scan with its label
# (or value), then a query scan, and answers for the query. Subjects never cross splits, and inside a
# split the query and reference pools are disjoint, so a test answer can only come from unseen people.

# %% tags=["parameters"]
run_dir: str = ""  # run folder, injected by the runner (empty: reports/interactive)
seed: int = 0  # one seed for the cohort, the splits and the sampling of pairs
cohort_name: str = "synthetic"  # cohort name used in sample ids, e.g. ABCD
cohort_table: str = ""  # phenotype CSV/TSV (empty: build the synthetic cohort)
image_root: str = ""  # folder the image paths are relative to (ignored for the synthetic cohort)
id_col: str = "participant_id"  # subject id column of the table
table_sep: str = ""  # delimiter of cohort_table (empty: from the extension, .csv ',' and .tsv tab; else sniffed)
image_pattern: str = "{subject}/anat/{subject}_T1w.nii.gz"  # image path of a subject under image_root
session_col: str = ""  # session column of a long-format table, e.g. eventname (empty: none)
session: str = ""  # the session to use when session_col is set
group_col: str = "family_id"  # subjects sharing a value share a split, e.g. families (empty: none)
strict: bool = False  # True turns row-level exclusions (missing target, missing image) into errors
check_images: str = "exists"  # image check per subject: exists | readable | none
n_subjects: int = 300  # synthetic cohort size
volume_size: int = 64  # synthetic volume edge in voxels
split_fractions: list = [0.7, 0.15, 0.15]  # train / val / test share of subjects
reference_fraction: float = 0.3  # share of each split's subjects in its reference pool
n_bins: int = 4  # quantile bins that stratify a numerical target
n_examples: int = 10  # pretty-printed examples per task in data/<task>/samples/
tasks: list = [
    {
        "name": "sex",
        "task_type": "categorical",
        "target_col": "sex",
        "labels": {"male": ["M", "male"], "female": ["F", "female"]},
        "num_pairs": 4,
        "n_references": 1,
        "modality": "sMRI",
        "prompts": {
            "reference": "Here is a {modality_name} brain scan of a {label} participant (reference).",
            "reference_ack": "Understood.",
            "query": "Compare this scan with the reference. What is the sex of this participant?",
            "answer": "Based on the comparison, the participant is {label}."
        }
    },
    {
        "name": "bmi",
        "task_type": "numerical",
        "target_col": "BMI_z",
        "num_pairs": 4,
        "n_references": 1,
        "precision": 1,  # tenths of an SD: what a 32x32 slice can tell; a second decimal would be noise
        "valid_range": [-6.0, 6.0],
        "modality": "sMRI",
        "prompts": {
            "reference": "Here is a {modality_name} brain scan of a participant with a BMI z-score of {value} (reference).",
            "reference_ack": "Understood.",
            "query": "Compare this scan with the reference. What is the BMI z-score of this participant?",
            "answer": "Based on the comparison, the BMI z-score of this participant is {value}."
        }
    }
]

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import HTML, display

from brainvlm.app.report import conversation_html, save_figure, write_metrics
from brainvlm.app.run_folder import close_notebook, open_notebook
from brainvlm.core.seeding import set_seed
from brainvlm.data import cohort, dataset, splits, synthetic_brain

set_seed(seed, with_torch=False)  # no model here
run_dir = open_notebook(run_dir, "01_generate_data", globals())  # checks the folder fits
data_dir = run_dir / "data"
sns.set_theme(style="whitegrid", context="notebook")

# %% [markdown]
# ## The cohort
# Without a phenotype table, brainvlm builds its synthetic default: every subject is a smooth random
# deformation of nilearn's MNI152 template plus noise, with a planted regional intensity effect of sex
# and of BMI z-score (see `brainvlm/data/synthetic_brain.py`), and FA maps and short 4D BOLD series for a subset.

# %%
if not cohort_table:
    cohort_table = str(synthetic_brain.make_synthetic_cohort(data_dir / "cohort", n_subjects=n_subjects, seed=seed,
                                                       shape=(volume_size,) * 3))
    image_root = str(Path(cohort_table).parent)
table = cohort.read_table(cohort_table, id_col=id_col, session_col=session_col or None, session=session or None,
                          sep=table_sep or None)
print(f"{len(table)} rows from {Path(cohort_table).name}; columns: {', '.join(table.columns)}")
table.head()

# %% [markdown]
# ## From table to samples, per task
# Structural problems in the table (no id column, duplicate ids, a category outside the mapping) stop
# here with an error. Row-level problems (a missing target, a missing image, a target outside the task's
# `valid_range`, and with `check_images: readable` an unreadable, 4D, non-finite or constant volume) are
# exclusions, counted and listed below; `strict: true` turns them into errors. No row disappears silently.
# All tasks share one split of the cohort (stratified on the first task's target), so a subject is in
# the same split and pool in every task.

# %%
config = dataset.DataConfig(image_root=image_root, image_pattern=image_pattern, group_col=group_col or None,
                            strict=strict, check_images=check_images, split_fractions=tuple(split_fractions),
                            reference_fraction=reference_fraction, n_bins=n_bins, seed=seed)
prepared = dataset.prepare_tasks(table, [dataset.task_spec(entry, cohort_name) for entry in tasks], config,
                                 table_path=cohort_table)
for task_data in prepared:
    dataset.write_task(task_data, data_dir, n_examples=n_examples)
manifest_path = dataset.write_manifest(data_dir, image_root, prepared)
dataset.split_table(prepared)

# %%
exclusions = pd.concat([d.exclusions.assign(task=d.spec.name) for d in prepared], ignore_index=True)
print(f"{len(exclusions)} exclusions in total")
display(pd.concat([cohort.exclusion_summary(d.exclusions).assign(task=d.spec.name) for d in prepared]))
exclusions.head(20)

# %% [markdown]
# Numerical targets far from the rest (more than 10 robust standard deviations from the median) are listed
# as suspect: sentinel codes such as 99999 show up here. They stay in unless the task's `valid_range`
# excludes them.

# %%
suspects = {d.spec.name: cohort.suspect_values(d.cohort) for d in prepared if d.spec.task_type == "numerical"}
display(pd.DataFrame([{"task": name, "suspect values": len(t), "examples": t.head(3).to_dict("records")}
                      for name, t in suspects.items()]))

# %% [markdown]
# ## The leakage audit
# Every split is subject- and family-disjoint; inside a split, no subject is both a query and a reference;
# and across tasks, a subject keeps its split and pool.

# %%
audit = pd.concat([*(splits.audit_splits(d.assignment).assign(task=d.spec.name) for d in prepared),
                   splits.audit_across_tasks({d.spec.name: d.assignment for d in prepared}).assign(task="all")],
                  ignore_index=True)
audit

# %% [markdown]
# ## Target distributions per split
# Stratification keeps the classes (or the quantile bins of a numerical target) balanced across splits.

# %%
fig, axes = plt.subplots(1, len(prepared), figsize=(5 * len(prepared), 3.6), squeeze=False)
for ax, d in zip(axes[0], prepared):
    frame = d.cohort.merge(d.assignment[["subject", "split", "pool"]], on="subject")
    if d.spec.task_type == "categorical":
        sns.countplot(data=frame, x="split", hue="target", order=list(dataset.SPLITS), ax=ax)
    else:
        sns.violinplot(data=frame.astype({"target": float}), x="split", y="target", hue="pool",
                       order=list(dataset.SPLITS), split=True, inner="quart", ax=ax)
    ax.set_title(f"{d.spec.name}: {d.spec.target_col}")
fig.tight_layout()
save_figure(fig, run_dir, "01_target_distributions", main=True);

# %% [markdown]
# ## What a sample looks like
# One conversation per task, rendered with its image views (orthogonal mid-slices: sagittal, coronal and
# axial in the red, green and blue channels). The JSON itself is in `data/<task>/samples/`.

# %%
for d in prepared:
    display(HTML(f"<h4>{d.spec.name}</h4>" + conversation_html(d.samples["train"][0], image_root)))

# %% [markdown]
# ## Results

# %%
metrics = {f"{d.spec.name}.n_{split}": len(d.samples[split]) for d in prepared for split in dataset.SPLITS}
metrics.update({f"{d.spec.name}.n_excluded": len(d.exclusions) for d in prepared})
metrics.update({f"{name}.n_suspect_values": len(found) for name, found in suspects.items()})
metrics = write_metrics(run_dir, "01_generate_data", metrics, study="brain")
for d in prepared:
    assert all(len(d.samples[s]) > 0 for s in dataset.SPLITS), f"{d.spec.name}: a split has no samples"
    assert splits.audit_splits(d.assignment)["passed"].all(), f"{d.spec.name}: leakage audit failed"
assert audit["passed"].all(), "leakage audit failed across tasks"
metrics

# %% [markdown]
# The run folder records this notebook (by hand: its `index.html`, `status.json` and `provenance.json`).

# %%
close_notebook(run_dir, "01_generate_data", globals())
