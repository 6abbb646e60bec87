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
# # 05 · Radiology reports with a two-stage curriculum, scored with the EHR on and off
# *In: chest radiographs with reports (the synthetic default, a reports table or curriculum JSONL files)
# and a base model. Out: `data/<report_task>/`, the curriculum adapter and a stage-B-only adapter under
# `models/`, predictions under `predictions/`, and the tables below.*
#
# *Needs: no other notebook.*
#
# One model learns to write the Impression and the CheXpert labels from the image alone (stage A), then
# adds the ICD codes with the patient's EHR in the prompt (stage B). The same model answers the same test
# images with the EHR on and off; the difference shows what the EHR is worth, and the image controls (the
# mean training image, a blank image) show what the image is worth. Baselines: stage B alone on the same
# step budget, the best constant report (the training label block that scores best on the training
# reports), nearest-neighbour retrieval on frozen image features, and the base model
# before training (zero-shot). Differences carry 95% paired-bootstrap intervals over patients.

# %% tags=["parameters"]
run_dir: str = ""  # run folder, injected by the runner (empty: reports/interactive)
seed: int = 0  # seed of initialisation, data order and controls
model: str = "tiny"  # tiny | tiny-real-size | local checkpoint path | hub id (original LLaVA layouts converted)
dtype: str = "float32"  # float32 | bfloat16 | float16 (weights)
load_in_4bit: bool = False  # bitsandbytes 4-bit base weights (needs a CUDA device)
report_task: str = "report"  # names data/<task>/, models/<task>/ and prediction files
report_reports_table: str = ""  # CSV, one row per image (docs/report_data.md); empty: the synthetic default
report_curriculum_files: list = []  # curriculum JSONL files (the seed's layout), pooled and split by patient
report_image_root: str = ""  # image paths are relative to it (default: the reports table's folder)
report_ehr_context: str = ""  # optional ehr_context.jsonl joined to curriculum records by study id
report_chexpert_dict: str = ""  # optional chexpert_dict.json joined by study id
report_ehr_columns: list = ["age", "sex", "heart_rate", "history"]  # reports-table columns in the EHR block
report_prompt_a: str = "Image:<image>\nAnswer Impression & CheXpert."  # stage A prompt
report_prompt_b: str = "Patient Data: {ehr}\nImage:<image>\nAnswer Impression, CheXpert & ICD."  # stage B
report_n_patients: int = 200  # synthetic default: patients (some have two studies)
report_image_size: int = 32  # synthetic default: image edge in pixels
report_split_fractions: list = [0.6, 0.2, 0.2]  # train / val / test, by patient
report_vision_tower: str = ""  # original-layout (LLaVA-Med) checkpoints: a local CLIP tower folder (offline)
report_lora_r: int = 32  # LoRA rank
report_lora_alpha: int = 64  # LoRA scaling numerator
report_lora_dropout: float = 0.0  # LoRA dropout
report_lr: float = 2.0e-3  # peak learning rate (a stage may set its own: {"lr": ...})
report_batch_size: int = 8  # per process; global batch is batch x accumulation x processes
report_grad_accum: int = 1  # gradient accumulation steps
report_steps: int = 1000  # optimizer steps over all stages (0: from report_epochs)
report_epochs: float = 0.0  # passes over the training records of both stages, when report_steps is 0
report_warmup_ratio: float = 0.05  # share of each stage's steps with linear warmup
report_precision: str = "fp32"  # fp32 | bf16 | fp16 mixed precision
report_stages: list = [{"name": "A", "share": 0.35, "mode": "image_only"},
                       {"name": "B", "share": 0.65, "mode": "image_ehr"}]  # the curriculum
report_ehr_dropout: float = 0.15  # probability of removing the patient-data block from a stage-B sample
# (at 0.3, fewer samples taught the model to copy the history into codes: at seed 1 EHR on - off was low 0.19)
report_eval_every: int = 0  # steps between validation losses (0: end of each stage)
report_save_every: int = 0  # steps between resumable checkpoints (0: end of each stage)
report_val_samples: int = 16  # validation samples in the validation loss
report_variants: list = []  # further models on the same budget: a_only, ab_shuffled, no_dropout
report_image_codes: list = ["I51.7", "J90", "J18.9"]  # ICD codes the image determines (synthetic default)
report_ehr_codes: list = ["E11.9", "I10", "J44.9", "I48.91"]  # ICD codes only the EHR gives (synthetic default)
report_observations: list = ["Cardiomegaly", "Pleural Effusion", "Consolidation", "Support Devices"]  # planted
report_generate_batch_size: int = 32  # prompts per generation batch
report_max_new_tokens: int = 96  # longest generated report
report_tokenize: str = "ptb"  # text metrics: ptb (COCO standard, needs Java) | none
report_n_boot: int = 1000  # bootstrap replicates of the label metrics and differences
report_n_boot_text: int = 100  # bootstrap replicates of the text metrics
report_examples: int = 4  # example reports shown beside their images
expect: dict = {  # metric -> rule, checked at the end; real-data params files set expect: {}
    "report.ehr_off_icd_parse_rate": ">= 0.95",  # the model still writes an ICD line without the EHR
    "report.ehr_on_minus_off_icd_ehr_micro_f1_lo": ">= 0.2",  # codes only the EHR gives: the EHR is used
    "report.ehr_on_minus_off_icd_image_micro_f1_abs": "<= 0.1",  # codes the image gives: the EHR is not needed
    "report.curriculum_minus_constant_chexpert14_micro_f1_u0_lo": ">= 0.15",
    "report.f1_cardiomegaly": ">= 0.6",
    "report.f1_pleural_effusion": ">= 0.6",
    "report.f1_consolidation": ">= 0.6",
    "report.f1_support_devices": ">= 0.6",
    "report.mean_image_minus_constant_chexpert14_micro_f1_u0_hi": "<= 0.05",  # no image, no better than the prior (worse is no leak)
    "report.mean_image_parse_rate": ">= 0.9",
}

# %%
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
from brainvlm.data import validate
from brainvlm.eval import reportmetrics, scoring, textmetrics
from brainvlm.studies import controls, report
from brainvlm.studies import report_baselines as baselines
from brainvlm.studies.base import load_base

set_seed(seed)
run_dir = open_notebook(run_dir, "05_train_report_curriculum", globals())  # checks the folder fits
params = {**report.collect_settings(globals())}
icd_groups = {name: codes for name, codes in (("icd_image", report_image_codes), ("icd_ehr", report_ehr_codes))
              if codes}

# %% [markdown]
# ## Data
# Every source goes through the same builder or adapter: the synthetic default is written as images plus
# a reports table, like a user's data. Each image gives a stage-A record (image only) and a stage-B record
# (image + EHR). Records are split by patient, so a patient's studies and both stages of an image share a
# split; the audit checks both, and the validator checks every written sample (images included).

# %%
source = report.DataSource(report_reports_table, report_curriculum_files, report_image_root, report_ehr_context,
                           report_chexpert_dict, report_ehr_columns, report_prompt_a, report_prompt_b,
                           report_n_patients, report_image_size)
records, image_root, joins = report.load_records(source, run_dir / "data" / "cxr", seed)
samples = report.to_samples(report.split_records(records, tuple(report_split_fractions), seed), "cxr", joins)
checks = report.audit(samples)
display(checks)
assert checks["passed"].all(), "the split audit failed: see the table above"
manifest = report.write_data(samples, run_dir / "data" / report_task, image_root)
issues = validate.validate_files(list(manifest["files"].values()), image_root=image_root)
print(f"validator: {len(manifest['files'])} files, {sum(manifest['counts'].values())} samples, {len(issues)} problems")
assert issues.empty, issues.head(20)
report.summary(samples)

# %% [markdown]
# Examples: the image, the prompt and the target of each stage.

# %%
def image_of(sample: dict, root: str = image_root, height: int = 96) -> str:
    path = f"{root}/{controls.image_parts(sample)[-1]['image_path']}"
    return image_tag(np.asarray(Image.open(path).convert("RGB")), height)


def text_of(sample: dict) -> str:
    return "".join(p.get("text", "<image>") for p in sample["conversations"][0]["content"])


def html_cell(text: str) -> str:
    import html
    return f"<pre style='white-space:pre-wrap;margin:0;text-align:left'>{html.escape(text)}</pre>"


first = samples["train"][0]["metadata"]["study_id"]
pair = [s for s in samples["train"] if s["metadata"]["study_id"] == first]
display(HTML("<table>" + "".join(
    f"<tr><td>{image_of(s)}</td><td><b>stage {s['metadata']['stage']}</b>{html_cell(text_of(s))}</td>"
    f"<td>{html_cell(baselines.target_of(s))}</td></tr>" for s in pair) + "</table>"))

# %% [markdown]
# The rule-based CheXpert labeler (`eval.chexpert_labeler`, "CheXpert-14 (rule)") reading each reference
# Impression agrees with the label block of the reference as follows; it scores free text where no label
# block exists (`brainvlm evaluate --labeler rule`).

# %%
train = read_jsonl(manifest["files"]["train"])
test = report.of_mode(read_jsonl(manifest["files"]["test"]), "image_ehr")
reportmetrics.labeler_agreement(report.of_mode(train, "image_ehr") + test).round(3)

# %% [markdown]
# ## Training through the curriculum
# One adapter runs through the stages in order (the multi-stage `fit`; each stage its own optimizer
# schedule). The schedule below lists each stage's steps and records; stage-B records whose patient-data
# block was dropped (`report_ehr_dropout`) are counted as `image_ehr_off`.

# %%
curriculum = report.train(params, report_task, run_dir)
display(report.schedule_table(curriculum.stages))
baseline = report.train(params, report_task, run_dir, name=f"{report_task}_b_only", variant="b_only")
variants = {name: report.train(params, report_task, run_dir, name=f"{report_task}_{name}", variant=name)
            for name in report_variants}
logs = {"curriculum (A then B)": curriculum.result.log, "stage B only": baseline.result.log}
save_figure(plot_training_log(logs), run_dir, "05_loss_curves");

# %% [markdown]
# ## Reports for the test images
# Stage-B test prompts, greedy decoding. "EHR off" is the same prompt with its `Patient Data:` block
# removed (the instruction unchanged). The mean training image and a blank image replace the query image
# with the EHR on: the mean image is in distribution but shows no individual; the blank image is out of
# distribution (reported, not asserted).

# %%
out = run_dir / "predictions"
pictures = report.control_images(train, image_root, run_dir / "controls", report_image_size)


def answer(trained, items, tag, root=image_root):
    return report.predict(trained.model, trained.processor, items, out / f"05_{report_task}_{tag}.jsonl", root,
                          report_generate_batch_size, report_max_new_tokens)


off = [report.ehr_off(s) for s in test]
systems = {"curriculum · EHR on": answer(curriculum, test, "curriculum_ehr_on"),
           "curriculum · EHR off": answer(curriculum, off, "curriculum_ehr_off"),
           "curriculum · mean image, EHR on": answer(curriculum, controls.blank_query(test, pictures["mean_image"]),
                                                     "curriculum_mean_image", str(run_dir / "controls")),
           "curriculum · blank image, EHR on": answer(curriculum, controls.blank_query(test, pictures["blank_image"]),
                                                      "curriculum_blank_image", str(run_dir / "controls")),
           "stage B only · EHR on": answer(baseline, test, "b_only_ehr_on"),
           "stage B only · EHR off": answer(baseline, off, "b_only_ehr_off")}
for name, trained in variants.items():
    systems[f"{name} · EHR on"] = answer(trained, test, f"{name}_ehr_on")
    systems[f"{name} · EHR off"] = answer(trained, off, f"{name}_ehr_off")
systems["constant report"] = [baselines.constant_report(train)] * len(test)
systems["retrieval (nearest training image)"] = baselines.retrieval_reports(
    curriculum.model, curriculum.processor, train, test, image_root)
base_model, base_processor = load_base(curriculum.base, dtype, load_in_4bit, report_vision_tower)
systems["zero-shot base · EHR on"] = report.predict(
    base_model, base_processor, test, out / f"05_{report_task}_zero_shot.jsonl", image_root,
    report_generate_batch_size, report_max_new_tokens, weights=f"base:{curriculum.base}")
del base_model

# %% [markdown]
# ## Scores
# Text metrics on the Impression (the label block and ICD line left out); CheXpert-14 F1 from the label
# block the model writes, uncertain counted negative (u0); ICD F1 over all codes and, on the synthetic
# default, separately over the codes the image determines and those only the EHR gives. Unparseable
# blocks count as empty answers and are counted in the parse rate. Intervals: 95% bootstrap over patients.

# %%
tables = {name: reportmetrics.count_table(test, answers, icd_groups) for name, answers in systems.items()}
rows, intervals = [], {}
with textmetrics.TextScorer(tokenize=report_tokenize) as scorer:
    for name, answers in systems.items():
        corpus = scorer.prepare(*reportmetrics.impression_pairs(test, answers))
        text, text_ci = scorer.scores(corpus), scorer.bootstrap(corpus, list(tables[name]["patient"]),
                                                                report_n_boot_text, seed)
        labels = reportmetrics.intervals(tables[name], list(icd_groups), report_n_boot, seed)
        intervals[name] = {**labels, **{k: v for k, v in text_ci.items() if k in ("Bleu_4", "ROUGE_L")}}
        full = scoring.task_metrics(scoring.score_samples(test, dict(zip([s["id"] for s in test], answers))),
                                    "report")
        extra = [k for k in full if k.startswith("chexpert") and (k.endswith("_u1") or "example" in k
                                                                  or "accuracy" in k)]
        rows.append({"system": name, **{k: text[k] for k in textmetrics.METRIC_NAMES},
                     **{k: v["point"] for k, v in labels.items()}, **{k: full[k] for k in extra},
                     "icd_exact_accuracy": full.get("icd_exact_accuracy")})
results = pd.DataFrame(rows).set_index("system")
results.T.round(3)

# %% [markdown]
# The headline numbers with their intervals:

# %%
shown = ["Bleu_4", "ROUGE_L", "chexpert14_micro_f1_u0", "chexpert14_macro_f1_u0", "icd_micro_f1",
         *[f"{g}_micro_f1" for g in icd_groups]]
pd.DataFrame({name: {k: f"{v[k]['point']:.3f} [{v[k]['lo']:.3f}, {v[k]['hi']:.3f}]" for k in shown if k in v}
              for name, v in intervals.items()}).T

# %% [markdown]
# ## What the EHR, the image and the curriculum are worth
# Each row is a paired difference on the same test images (both systems resampled together over patients).

# %%
compared = [("ehr_on_minus_off", "curriculum · EHR on", "curriculum · EHR off",
             ["icd_micro_f1", *[f"{g}_micro_f1" for g in icd_groups], "chexpert14_micro_f1_u0"]),
            ("curriculum_minus_constant", "curriculum · EHR on", "constant report", ["chexpert14_micro_f1_u0"]),
            ("curriculum_minus_b_only", "curriculum · EHR on", "stage B only · EHR on",
             ["chexpert14_micro_f1_u0", "icd_micro_f1"]),
            ("curriculum_minus_retrieval", "curriculum · EHR on", "retrieval (nearest training image)",
             ["chexpert14_micro_f1_u0"]),
            ("mean_image_minus_constant", "curriculum · mean image, EHR on", "constant report",
             ["chexpert14_micro_f1_u0"]),
            ("b_only_ehr_on_minus_off", "stage B only · EHR on", "stage B only · EHR off",
             [f"{g}_micro_f1" for g in icd_groups] or ["icd_micro_f1"])]
differences, rows = {}, []
for label, first, second, names in compared:
    for name in names:
        interval = reportmetrics.difference(tables[first], tables[second], name, list(icd_groups),
                                            report_n_boot, seed)
        differences.update(comparison_metrics(f"{label}_{name}", interval))
        rows.append({"comparison": f"{first} − {second}", "metric": name, "difference": interval["point"],
                     "95% low": interval["lo"], "95% high": interval["hi"], "patients": interval["n_units"]})
pd.DataFrame(rows).round(3)

# %%
fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1))
frame = pd.DataFrame(rows)
labels = frame["comparison"].str.replace(" − ", " − \n", regex=False) + " · " + frame["metric"]
ax.errorbar(frame["difference"], range(len(frame)), xerr=[frame["difference"] - frame["95% low"],
            frame["95% high"] - frame["difference"]], fmt="o", capsize=3)
ax.axvline(0, c="grey", lw=1)
ax.set_yticks(range(len(frame)), labels, fontsize=7)
ax.invert_yaxis()
ax.set(xlabel="difference (95% paired bootstrap interval over patients)")
save_figure(fig, run_dir, "05_differences", main=True);

# %% [markdown]
# ## Do the answers without the image depend on the study?
# The constant report is the training report whose label block scores best against the training reports
# (micro-F1 rewards naming a common finding, so the most frequent block, often "No Finding", is not the
# prior as the metric scores it). A system's answers that carry nothing about their study score the same
# against their own references as against references shuffled across the test studies; the gap below is
# the CheXpert-14 micro-F1 (u0) against their own minus the mean over 200 shuffles.

# %%
gaps = {name: baselines.shuffled_gold_gap(test, systems[name], seed)
        for name in ("curriculum · EHR on", "curriculum · mean image, EHR on", "curriculum · blank image, EHR on",
                     "constant report")}
display(pd.DataFrame(gaps).T.rename(columns={"point": "own − shuffled", "share_shuffled_at_least":
                                             "share of shuffles ≥ own"}).round(3))
print("constant report:", *systems["constant report"][0].splitlines(), sep="\n  ")
print("distinct mean-image answers:", len(set(systems["curriculum · mean image, EHR on"])), "of", len(test))

# %% [markdown]
# ## Per-observation F1
# CheXpert observations with any reference or predicted positive (u0), per system; the planted
# observations of the synthetic default are the ones a correct pipeline must learn from the image.

# %%
per_obs = pd.concat({name: reportmetrics.per_label(tables[name], "chexpert") for name in
                     ("curriculum · EHR on", "curriculum · EHR off", "stage B only · EHR on",
                      "retrieval (nearest training image)", "constant report", "curriculum · mean image, EHR on")},
                    names=["system"]).reset_index()
per_obs = per_obs[per_obs["support"] + per_obs["fp"] > 0]
fig, ax = plt.subplots(figsize=(8, 3.2))
sns.barplot(data=per_obs, x="label", y="f1", hue="system", ax=ax)
ax.set(xlabel="", ylabel="F1 (u0)", ylim=(0, 1.05))
ax.tick_params(axis="x", rotation=20)
ax.legend(frameon=False, fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(0, -0.25))
save_figure(fig, run_dir, "05_per_observation_f1");

# %% [markdown]
# ## Example reports, EHR on and off
# The patient-data block and the reference beside what the curriculum model wrote with and without it.

# %%
cells = []
for sample, on, no_ehr in list(zip(test, systems["curriculum · EHR on"], systems["curriculum · EHR off"]))[
        :report_examples]:
    ehr = sample["metadata"].get("ehr") or {}
    cells.append(f"<tr><td>{image_of(sample, height=128)}</td><td>{html_cell(str(ehr))}</td>"
                 f"<td>{html_cell(baselines.target_of(sample))}</td><td>{html_cell(on)}</td>"
                 f"<td>{html_cell(no_ehr)}</td></tr>")
display(HTML("<table><tr><th>image</th><th>EHR</th><th>reference</th><th>EHR on</th><th>EHR off</th></tr>"
             + "".join(cells) + "</table>"))

# %% [markdown]
# ## Results

# %%
main = tables["curriculum · EHR on"]
planted = reportmetrics.per_label(main, "chexpert", report_observations)["f1"]
metrics = {"n_test": len(test), "n_test_patients": int(main["patient"].nunique()),
           **{f"curriculum_{k}": v for k, v in results.loc["curriculum · EHR on"].items()},
           **{f"f1_{name.lower().replace(' ', '_')}": value for name, value in planted.items()},
           "ehr_off_icd_parse_rate": results.loc["curriculum · EHR off", "icd_parse_rate"],
           "mean_image_parse_rate": results.loc["curriculum · mean image, EHR on", "both_parse_rate"],
           "blank_image_parse_rate": results.loc["curriculum · blank image, EHR on", "both_parse_rate"],
           "mean_image_own_minus_shuffled_chexpert14_micro_f1_u0":
               gaps["curriculum · mean image, EHR on"]["point"],
           "mean_image_distinct_answers": len(set(systems["curriculum · mean image, EHR on"])),
           **differences}
for name in ("ehr_on_minus_off_icd_image_micro_f1", "mean_image_minus_constant_chexpert14_micro_f1_u0"):
    if name in differences:
        metrics[f"{name}_abs"] = abs(differences[name])
metrics = write_metrics(run_dir, "05_train_report_curriculum", metrics, study="report")
display(show_expectations(metrics, expect))
metrics

# %% [markdown]
# The run folder records this notebook (by hand: its `index.html`, `status.json` and `provenance.json`).

# %%
close_notebook(run_dir, "05_train_report_curriculum", globals())
