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
# # 02 · Validate the conversation data
# *In: the JSONL files of notebook 01. Out: a validator report, the leakage audit, image and turn
# statistics, and previews of the image views the model will see.*
#
# *Needs: 01_generate_data (its data).*

# %% tags=["parameters"]
run_dir: str = ""  # run folder, injected by the runner (empty: reports/interactive)
n_preview: int = 3  # subjects per modality in the view previews
preview_size: int = 96  # edge in pixels of a previewed view

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from brainvlm.app.report import save_figure, write_metrics
from brainvlm.app.run_folder import close_notebook, open_notebook
from brainvlm.core.jsonio import read_jsonl
from brainvlm.core.paths import PROJECT_ROOT
from brainvlm.core.seeding import set_seed
from brainvlm.data import dataset, splits, validate, views, volumes

set_seed(0, with_torch=False)  # no model here
run_dir = open_notebook(run_dir, "02_validate_data", globals())  # checks the folder fits
manifest = dataset.read_manifest(run_dir)
image_root = manifest["image_root"]
sns.set_theme(style="whitegrid", context="notebook")
pd.DataFrame({name: t["counts"] for name, t in manifest["tasks"].items()})

# %% [markdown]
# ## The format
# The canonical sample format, as written in `docs/sample_format.md`:

# %%
display(Markdown((PROJECT_ROOT / "docs" / "sample_format.md").read_text()))

# %% [markdown]
# ## The validator
# Every file is checked against the spec; every problem is listed with file, line, sample id and JSON
# path. The same check runs from the shell: `python -m brainvlm validate data/sex/*.jsonl --image-root ...`.

# %%
files = [t["files"][s] for t in manifest["tasks"].values() for s in dataset.SPLITS]
issues = validate.validate_files(files, image_root=image_root)
print(f"{len(files)} files checked, {len(issues)} problems")
issues.head(50)

# %% [markdown]
# ## Leakage audit, re-done from the written files
# The split table of each task is read back and audited; then the JSONL itself is checked: the subjects
# named in each split's samples must not appear in any other split.

# %%
audits = []
for name, task in manifest["tasks"].items():
    assignment = pd.read_csv(task["files"]["splits"], sep="\t", dtype={"subject": str, "group": str})
    audits.append(splits.audit_splits(assignment).assign(task=name))
    subjects = {s: {x for sample in read_jsonl(task["files"][s]) for x in
                    [sample["metadata"]["query_subject"], *sample["metadata"]["reference_subjects"]]}
                for s in dataset.SPLITS}
    crossing = (subjects["train"] & subjects["val"]) | (subjects["train"] & subjects["test"]) | (
        subjects["val"] & subjects["test"])
    audits.append(pd.DataFrame([{"check": "no subject in the samples of two splits", "passed": not crossing,
                                 "detail": f"{len(crossing)} crossing", "task": name}]))
audit = pd.concat(audits, ignore_index=True)
audit

# %% [markdown]
# ## Turns, images and text per sample

# %%
stats = pd.concat([dataset.sample_statistics(read_jsonl(t["files"][s])).assign(task=name, split=s)
                   for name, t in manifest["tasks"].items() for s in dataset.SPLITS], ignore_index=True)
display(stats.groupby(["task", "split"])[["turns", "images", "text_chars"]].describe().round(1))
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
sns.histplot(data=stats, x="text_chars", hue="task", ax=axes[0])
sns.countplot(data=stats, x="images", hue="task", ax=axes[1])
fig.tight_layout()
save_figure(fig, run_dir, "02_sample_statistics");

# %% [markdown]
# ## Image views per modality
# sMRI is normalised robustly inside a brain mask, dMRI scalar maps (FA) are clipped to [0, 1], fMRI is
# reduced to its temporal mean. Each row: one subject as a single axial slice, the three orthogonal
# mid-slices in one RGB image, and a montage of axial slices.

# %%
previews = dataset.sample_images([s for task in manifest["tasks"].values() for s in read_jsonl(task["files"]["train"])],
                                 n_per_modality=n_preview)  # images the samples use: any layout, none excluded
assert previews, "the training samples name no image: see notebook 01's exclusions"
configs = {"axial": views.ViewConfig(view="axial", size=preview_size),
           "orthogonal": views.ViewConfig(view="orthogonal", size=preview_size),
           "montage": views.ViewConfig(view="montage", size=preview_size * 2, k=9)}
fig, axes = plt.subplots(len(previews), 3, figsize=(9, 3 * len(previews)), squeeze=False)
for row, (modality, path) in enumerate(previews):
    for col, (kind, view) in enumerate(configs.items()):
        axes[row, col].imshow(views.load_view(Path(image_root) / path, modality, view))
        axes[row, col].set_title(f"{modality} · {kind}", fontsize=9)
        axes[row, col].axis("off")
fig.tight_layout()
save_figure(fig, run_dir, "02_view_previews", main=True);

# %%
pd.DataFrame([{"modality": m, "path": p, **volumes.volume_summary(Path(image_root) / p)} for m, p in previews])

# %% [markdown]
# ## Results

# %%
metrics = {"n_files": len(files), "n_samples": len(stats), "n_validation_errors": len(issues),
           "leakage_checks_failed": int((~audit["passed"]).sum())}
metrics = write_metrics(run_dir, "02_validate_data", metrics, study="brain")
assert len(issues) == 0, f"{len(issues)} validation problems, first: {issues.iloc[0].to_dict()}"
assert audit["passed"].all(), "leakage audit failed"
print(json.dumps(metrics, indent=1))

# %% [markdown]
# The run folder records this notebook (by hand: its `index.html`, `status.json` and `provenance.json`).

# %%
close_notebook(run_dir, "02_validate_data", globals())
