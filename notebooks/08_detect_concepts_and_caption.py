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
# # 08 · Medical concepts (UMLS CUIs) and captions, scored as ImageCLEFmedical Caption scores them
# *In: images with concept and caption gold in the ROCOv2/ImageCLEF layout (the synthetic default, or your
# folder) and a base model. Out: `data/concepts/`, `data/caption/`, a concepts adapter and a caption adapter
# under `models/`, submission files under `submissions/` (checked), and the tables below.*
#
# *Needs: no other notebook.*
#
# Two concept detectors on the same test images: the generative one of the seed (the model writes concept
# names, mapped to UMLS CUIs) and a multi-label classifier (logistic regression on the frozen base model's
# image features, thresholds tuned on validation), both against the most frequent training concepts with
# k tuned on validation. Scores are the challenge's: the mean per-image F1 of the CUI rows (primary) and
# the same over the manually validated concepts (secondary). Differences: paired bootstrap over images.

# %% tags=["parameters"]
run_dir: str = ""  # run folder, injected by the runner (empty: reports/interactive)
seed: int = 0  # seed of initialisation, data and training order
model: str = "tiny"  # tiny | tiny-real-size | local checkpoint path | hub id
dtype: str = "float32"  # float32 | bfloat16 | float16 (weights)
load_in_4bit: bool = False  # bitsandbytes 4-bit base weights (needs a CUDA device)
concepts_roco_root: str = ""  # ROCOv2/ImageCLEF folder ({split}_concepts.csv, ...); empty: the synthetic default
concepts_n_images: list = [180, 60, 60]  # synthetic default: train, valid, test images
concepts_image_size: int = 32  # synthetic default: image edge in pixels
concepts_prompt_language: str = "en"  # en | es (the seed's cross-lingual prompting)
concepts_caption_language: str = "en"  # the gold captions' language (English for ImageCLEF)
concepts_concept_table: str = ""  # names -> CUIs: a CUI,name[,synonyms] CSV or a UMLS META folder (default:
# the folder's cui_mapping.csv)
concepts_fuzzy_threshold: float = 90.0  # lowest rapidfuzz token_sort_ratio of a fuzzy name match
concepts_allowed_cuis: list = ["C0040405", "C0024485", "C0041618", "C1306645", "C0002978", "C0032743",
                               "C0920367", "C0817096", "C0000726", "C0030797", "C0037949", "C0037303",
                               "C0023216", "C1140618", "C0006141"]  # secondary score (2025 and 2026 list)
concepts_finding_cuis: list = ["C0027651", "C0006663", "C0016658", "C0002940"]  # synthetic default's findings
concepts_lora_r: int = 16  # LoRA rank
concepts_lora_alpha: int = 32  # LoRA scaling numerator
concepts_lora_dropout: float = 0.0  # LoRA dropout
concepts_lr: float = 2.0e-3  # peak learning rate
concepts_batch_size: int = 8  # per process
concepts_grad_accum: int = 1  # gradient accumulation steps
concepts_steps: int = 400  # optimizer steps of each adapter
concepts_warmup_ratio: float = 0.05  # share of steps with linear warmup
concepts_precision: str = "fp32"  # fp32 | bf16 | fp16 mixed precision
concepts_eval_every: int = 0  # steps between validation losses (0: at the end)
concepts_save_every: int = 0  # steps between resumable checkpoints (0: at the end)
concepts_val_samples: int = 16  # validation samples in the validation loss
concepts_multitask: bool = False  # one adapter trained on both tasks instead of one per task
concepts_generate_batch_size: int = 32  # prompts per generation batch
concepts_max_new_tokens: int = 48  # longest generated answer
concepts_tokenize: str = "ptb"  # caption text metrics: ptb (needs Java) | none
concepts_n_boot: int = 1000  # bootstrap replicates
concepts_n_boot_text: int = 100  # bootstrap replicates of BLEU, METEOR and CIDEr
concepts_examples: int = 6  # images shown with their predictions
expect: dict = {  # metric -> rule, checked at the end; real-data params files set expect: {}
    "concepts.n_test": ">= 60",
    "concepts.generative_minus_baseline_primary_f1_lo": ">= 0.15",  # paired bootstrap over images
    "concepts.classifier_minus_baseline_primary_f1_lo": ">= 0.15",
    "concepts.better_detector_findings_f1": ">= 0.6",  # finding concepts alone (modality and region left out)
    "concepts.mean_image_minus_baseline_primary_f1_hi": "<= 0.05",  # no image, no better than the prior (worse is no leak)
    "concepts.caption_minus_baseline_rouge1_lo": "> 0",
    "concepts.submission_violations": "== 0",
}

# %%
import html

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import HTML, display
from PIL import Image

from brainvlm.app.report import (
    comparison_metrics,
    image_tag,
    plot_training_log,
    save_figure,
    show_expectations,
    write_metrics,
)
from brainvlm.app.run_folder import close_notebook, open_notebook
from brainvlm.core.jsonio import read_jsonl
from brainvlm.core.seeding import set_seed
from brainvlm.data import synthetic_concepts
from brainvlm.data.adapters.roco import PromptOptions
from brainvlm.data.concept_map import ConceptMapper, method_precision
from brainvlm.data.umls import load_concept_table
from brainvlm.data.views import ViewConfig
from brainvlm.eval import bootstrap, captions, clef, clef_files, textmetrics
from brainvlm.studies import concepts, controls
from brainvlm.studies.base import load_base

set_seed(seed)
run_dir = open_notebook(run_dir, "08_detect_concepts_and_caption", globals())  # checks the folder fits
params = concepts.collect_settings(globals())
allowed = {c.upper() for c in concepts_allowed_cuis}

# %% [markdown]
# ## Data and the concept table
# The synthetic default is written in the ROCOv2 layout and read back by the same adapter as real data.
# The concepts task asks for concept names (the seed's Format A); the names are mapped back to CUIs.

# %%
options = PromptOptions(concepts_prompt_language, concepts_caption_language, concept_target="names")
manifest = concepts.prepare_data(run_dir, concepts_roco_root, options, seed, tuple(concepts_n_images),
                                 concepts_image_size)
image_root = manifest["image_root"]
split = {task: {s: read_jsonl(path) for s, path in files.items()} for task, files in manifest["tasks"].items()}
gold = {s: concepts.gold_sets(path) for s, path in manifest["gold"].items()}
manual = concepts.gold_sets(manifest["manual"]["test"]) if manifest["manual"]["test"] else gold["test"]
table = load_concept_table(concepts_concept_table or manifest["cui_mapping"])
mapper = ConceptMapper(table, concepts_fuzzy_threshold)
display(pd.DataFrame([{"split": s, "images": len(g), "concepts per image": np.mean([len(v) for v in g.values()]),
                       "distinct concepts": len(set().union(*g.values()))} for s, g in gold.items()]))
frequency = pd.Series([c for v in gold["train"].values() for c in v]).value_counts()
pd.DataFrame({"CUI": frequency.index, "name": [table[c].name if c in table else "?" for c in frequency.index],
              "training images": frequency.values, "allow-listed": [c in allowed for c in frequency.index]})

# %% [markdown]
# Mapping names to CUIs: exact, then normalised (case, punctuation, plural), then word order, then fuzzy
# above the threshold; short all-capitals abbreviations only exactly. Its precision on a labelled list of
# names for this table (the synthetic default's; give your own for a real table):

# %%
labelled = pd.DataFrame(synthetic_concepts.LABELLED_NAMES, columns=["name", "expected_cui", "kind"])
checked = labelled.assign(mapped=[mapper.map(n).cui or "" for n in labelled["name"]],
                          method=[mapper.map(n).method for n in labelled["name"]])
display(checked)
method_precision(labelled, mapper)

# %% [markdown]
# ## Training: one adapter per task (or one for both, `concepts_multitask`)

# %%
if concepts_multitask:
    both = concepts.train(params, "multitask", run_dir)
    trained = {task: both for task in concepts.TASKS}
else:
    trained = {task: concepts.train(params, task, run_dir) for task in concepts.TASKS}
save_figure(plot_training_log({t: m.result.log for t, m in trained.items()}), run_dir, "08_loss_curves");

# %% [markdown]
# ## Concept detection
# The generative detector answers each test image (and each image replaced by the mean training image); the
# classifier's features come from the frozen base model. Its thresholds and their source:

# %%
out = run_dir / "predictions"
test = split["concepts"]["test"]
mean_path = controls.write_mean_image(split["concepts"]["train"], image_root, ViewConfig(size=concepts_image_size),
                                      out_root=run_dir / "controls")
texts = concepts.answer(trained["concepts"], test, out / "08_concepts_test.jsonl", image_root,
                        concepts_generate_batch_size, concepts_max_new_tokens)
mean_texts = concepts.answer(trained["concepts"], controls.blank_query(test, mean_path),
                             out / "08_concepts_test_mean_image.jsonl", str(run_dir / "controls"),
                             concepts_generate_batch_size, concepts_max_new_tokens)
generative, mapping = concepts.detected(test, texts, mapper)
mean_image, _ = concepts.detected(test, mean_texts, mapper)
base_model, base_processor = load_base(trained["concepts"].base, dtype, load_in_4bit)
by_split = {s: split["concepts"][s] for s in ("train", "val", "test")}
probe, x = concepts.classifier(base_model, base_processor, by_split, gold, image_root, seed)
classified = dict(zip([concepts.image_id(s) for s in test], probe.predict(x["test"])))
del base_model
top_k, k_table = concepts.most_frequent(gold["train"], gold["val"])
frequent = {k: frozenset(top_k) for k in gold["test"]}
pd.DataFrame({"concept": [table[c].name if c in table else c for c in probe.labels],
              "threshold": [probe.thresholds[c] for c in probe.labels],
              "chosen by": [probe.threshold_source[c] for c in probe.labels]}, index=probe.labels)

# %% [markdown]
# What the model wrote, mapped: names per mapping method (unmapped names are left out of the CUI file and
# counted), with examples of the names that did not map.

# %%
display(mapping.groupby("method").agg(names=("name", "size"), distinct=("name", "nunique")))
unmapped = mapping[mapping["cui"].isna()].drop_duplicates("name")
unmapped.head(10) if len(unmapped) else print("every name the model wrote mapped to a CUI")

# %% [markdown]
# ## Scores
# Primary: mean per-image F1 of the CUI rows as the challenge reads them; secondary: against the manually
# validated gold (`*_concepts_manual.csv`) over the allow-listed CUIs, images without one left out; findings: micro-F1 over the finding concepts
# alone. Intervals: 95% bootstrap over images.

# %%
detectors = {"generative (names → CUIs)": generative, "classifier (frozen features)": classified,
             f"most frequent {len(top_k)} concepts": frequent, "generative · mean image": mean_image}
ids = list(gold["test"])
rows, per_image = [], {}
for name, predicted in detectors.items():
    primary = concepts.per_image(gold["test"], predicted)
    secondary = concepts.per_image(manual, predicted, allowed)
    per_image[name] = primary
    units = pd.DataFrame({"primary": primary, "secondary": secondary})
    ci = bootstrap.bootstrap_metrics(units, lambda t: {"primary": t["primary"].mean(),
                                                      "secondary": np.nanmean(t["secondary"])},
                                     ["primary", "secondary"], None, concepts_n_boot, seed)
    rows.append({"detector": name, "primary F1": ci["primary"]["point"], "primary low": ci["primary"]["lo"],
                 "primary high": ci["primary"]["hi"], "secondary F1": ci["secondary"]["point"],
                 "secondary low": ci["secondary"]["lo"], "secondary high": ci["secondary"]["hi"],
                 "findings F1": concepts.label_f1(gold["test"], predicted, concepts_finding_cuis),
                 "images in secondary": int(np.sum(~np.isnan(secondary)))})
scores = pd.DataFrame(rows).set_index("detector")
scores.round(3)

# %%
baseline = f"most frequent {len(top_k)} concepts"
differences, rows = {}, []
for name, key in (("generative (names → CUIs)", "generative_minus_baseline_primary_f1"),
                  ("classifier (frozen features)", "classifier_minus_baseline_primary_f1"),
                  ("generative · mean image", "mean_image_minus_baseline_primary_f1")):
    interval = bootstrap.paired_difference(per_image[name], per_image[baseline], ids, concepts_n_boot, seed)
    differences.update(comparison_metrics(key, interval))
    rows.append({"comparison": f"{name} − baseline", "difference": interval["point"], "95% low": interval["lo"],
                 "95% high": interval["hi"], "images": interval["n_units"]})
display(pd.DataFrame(rows).round(3))
fig, ax = plt.subplots(figsize=(7, 2.8))
frame = scores.reset_index()
ax.barh(frame["detector"], frame["primary F1"], xerr=[frame["primary F1"] - frame["primary low"],
        frame["primary high"] - frame["primary F1"]], color="#4c72b0", capsize=3)
ax.set(xlim=(0, 1), xlabel="primary F1 (ImageCLEF), 95% interval over images")
ax.invert_yaxis()
save_figure(fig, run_dir, "08_detectors", main=True);

# %% [markdown]
# Per concept: F1 of each detector on the test images.

# %%
per_concept = [{"detector": name, "concept": table[cui].name if cui in table else cui,
                "F1": concepts.label_f1(gold["test"], predicted, [cui])}
               for name, predicted in detectors.items() for cui in sorted(set().union(*gold["test"].values()))]
fig, ax = plt.subplots(figsize=(10, 3.4))
sns.barplot(data=pd.DataFrame(per_concept), x="concept", y="F1", hue="detector", ax=ax)
plt.setp(ax.get_xticklabels(), rotation=35, ha="right", fontsize=8)
ax.set(xlabel="", ylim=(0, 1.05))
ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
save_figure(fig, run_dir, "08_per_concept_f1");

# %% [markdown]
# ## Submission files, checked as the challenge checks them
# The better detector's CUIs (`ID,CUIs`) and the captions (`ID,Caption`), one row per image in the gold
# file's order; `check_submission` lists every violation with its row (none expected).

# %%
best = max(("generative (names → CUIs)", "classifier (frozen features)"), key=lambda n: scores.loc[n, "primary F1"])
submissions = run_dir / "submissions"
concept_file = clef_files.write_concepts(submissions / "concepts.csv", ids, detectors[best])
caption_test = split["caption"]["test"]
caption_texts = concepts.answer(trained["caption"], caption_test, out / "08_caption_test.jsonl", image_root,
                                concepts_generate_batch_size, concepts_max_new_tokens)
tidy, n_fallback = captions.tidy_captions(caption_texts, concepts_caption_language)
caption_ids = [concepts.image_id(s) for s in caption_test]
caption_file = clef_files.write_captions(submissions / "captions.csv", caption_ids, dict(zip(caption_ids, tidy)))
checks = {path.name: clef_files.check_submission(path, ids if kind == "concepts" else caption_ids, kind)
          for path, kind in ((concept_file, "concepts"), (caption_file, "captions"))}
print(f"concepts from: {best}; fallback captions: {n_fallback}")
pd.DataFrame([{"file": name, "violations": len(found), "first": str(found[0]) if found else ""}
              for name, found in checks.items()])

# %% [markdown]
# ## Captions
# ROUGE-1 F after the challenge's normalisation (lower case, digit runs → "number", punctuation removed),
# beside BLEU-4, METEOR and CIDEr-D (95% intervals over images; METEOR's as the mean of its segment scores);
# the baseline writes the most frequent training caption everywhere.

# %%
references = [s["conversations"][-1]["content"][0]["text"] for s in caption_test]
constant = [concepts.most_frequent_caption(split["caption"]["train"])] * len(references)
systems = {"caption adapter": tidy, "most frequent caption": constant}
caption_rows, rouge = [], {}
with textmetrics.TextScorer(tokenize=concepts_tokenize) as scorer:
    for name, hypotheses in systems.items():
        rouge[name] = np.array(captions.rouge1_scores(hypotheses, references))
        corpus = scorer.prepare(hypotheses, [[r] for r in references])
        text, text_ci = scorer.scores(corpus), scorer.bootstrap(corpus, caption_ids, concepts_n_boot_text, seed)
        ci = bootstrap.bootstrap_ci(pd.DataFrame({"r": rouge[name]}), lambda t: t["r"].mean(), None,
                                    concepts_n_boot, seed)
        interval = lambda key, point: f"{point:.3f} [{text_ci[key]['lo']:.3f}, {text_ci[key]['hi']:.3f}]"
        caption_rows.append({"system": name, "ROUGE-1 (challenge)": f"{ci['point']:.3f} [{ci['lo']:.3f}, "
                             f"{ci['hi']:.3f}]", "BLEU-4": interval("Bleu_4", text["Bleu_4"]),
                             "METEOR (segment mean)": interval("METEOR_segment_mean",
                                                               text_ci["METEOR_segment_mean"]["point"]),
                             "CIDEr": interval("CIDEr", text["CIDEr"])})
caption_interval = bootstrap.paired_difference(rouge["caption adapter"], rouge["most frequent caption"],
                                               caption_ids, concepts_n_boot, seed)
differences.update(comparison_metrics("caption_minus_baseline_rouge1", caption_interval))
pd.DataFrame(caption_rows).set_index("system")

# %% [markdown]
# ## Examples
# Images with their gold concepts, both detectors' concepts and the caption the adapter wrote.

# %%
name_of = lambda cuis: "; ".join(sorted(table[c].name if c in table else c for c in cuis)) or "—"
cells = []
for sample, caption_text in list(zip(test, tidy))[:concepts_examples]:
    key = concepts.image_id(sample)
    picture = np.asarray(Image.open(f"{image_root}/{controls.image_parts(sample)[-1]['image_path']}").convert("RGB"))
    cells.append(f"<tr><td>{image_tag(picture, 112)}</td><td>{html.escape(name_of(gold['test'][key]))}</td>"
                 f"<td>{html.escape(name_of(generative[key]))}</td><td>{html.escape(name_of(classified[key]))}</td>"
                 f"<td>{html.escape(caption_text)}</td></tr>")
display(HTML("<table><tr><th>image</th><th>gold</th><th>generative</th><th>classifier</th><th>caption</th></tr>"
             + "".join(cells) + "</table>"))

# %% [markdown]
# ## Results

# %%
better = scores.loc[["generative (names → CUIs)", "classifier (frozen features)"], "findings F1"].max()
metrics = {"n_test": len(ids), "generative_primary_f1": scores.loc["generative (names → CUIs)", "primary F1"],
           "classifier_primary_f1": scores.loc["classifier (frozen features)", "primary F1"],
           "baseline_primary_f1": scores.loc[baseline, "primary F1"], "baseline_k": len(top_k),
           "generative_secondary_f1": scores.loc["generative (names → CUIs)", "secondary F1"],
           "classifier_secondary_f1": scores.loc["classifier (frozen features)", "secondary F1"],
           "generative_findings_f1": scores.loc["generative (names → CUIs)", "findings F1"],
           "classifier_findings_f1": scores.loc["classifier (frozen features)", "findings F1"],
           "better_detector_findings_f1": better,
           "mean_image_minus_baseline_primary_f1_abs": abs(differences["mean_image_minus_baseline_primary_f1"]),
           "caption_rouge1": float(rouge["caption adapter"].mean()),
           "submission_violations": sum(len(v) for v in checks.values()), **differences}
metrics = write_metrics(run_dir, "08_detect_concepts_and_caption", metrics, study="concepts")
display(show_expectations(metrics, expect))
metrics

# %% [markdown]
# The run folder records this notebook (by hand: its `index.html`, `status.json` and `provenance.json`).

# %%
close_notebook(run_dir, "08_detect_concepts_and_caption", globals())
