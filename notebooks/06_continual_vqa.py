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
# # 06 · Continual Med-VQA: task adapters routed per sample by prompt keys, forgetting measured
# *In: Med-VQA question files with a domain per question (the synthetic default, VQA-RAD or LLaVA-Med
# JSONL) and a base model. Out: per-domain task files under `data/<cl_task>/`, every method's adapters,
# the prompt keys and routing config under `models/`, answers under `predictions/` (also as LLaVA-Med
# answer files), and the tables below.*
#
# *Needs: no other notebook.*
#
# The model learns the domains one after another. Four methods get the same model, LoRA configuration and
# step budget: **sequential** fine-tuning of one LoRA (forgets), **replay** of a small buffer of earlier
# questions, **joint** training on every domain at once (the upper bound), and the seed's method: one
# **task adapter** per domain, with learned **prompt keys** choosing the adapter for each sample from the
# frozen base model's image and question features. `R[i][j]` is the exact match on domain `j` after
# training on the first `i` domains (row 0: the base model, zero-shot). Routers compared: the keys, the
# true domain (oracle), the nearest task centroid (training-free), random, and keys on the question alone.

# %% tags=["parameters"]
run_dir: str = ""  # run folder, injected by the runner (empty: reports/interactive)
seed: int = 0  # seed of initialisation, data order, replay buffers and routing
model: str = "tiny"  # tiny | tiny-real-size | local checkpoint path | hub id (original LLaVA layouts converted)
dtype: str = "float32"  # float32 | bfloat16 | float16 (weights)
load_in_4bit: bool = False  # bitsandbytes 4-bit base weights (needs a CUDA device)
cl_task: str = "vqa"  # names data/<task>/, the model folders and prediction files
cl_train_file: str = ""  # training questions: VQA-RAD .json or LLaVA-Med .jsonl; empty: the synthetic default
cl_test_file: str = ""  # test questions, same layout
cl_image_root: str = ""  # image paths are relative to it (default: the training file's folder)
cl_dataset: str = "synthetic_vqa"  # LLaVA-Med files: the dataset name in sample ids
cl_val_fraction: float = 0.15  # validation images carved from the training file, per domain, by image
cl_n_train: int = 64  # synthetic default: training images per domain (three questions each)
cl_n_test: int = 24  # synthetic default: test images per domain
cl_image_size: int = 32  # synthetic default: image edge; also the edge of the mean-image controls
cl_task_orders: list = [["abdomen", "chest", "head"]]  # each order is one stream; the first is the headline
cl_vision_tower: str = ""  # original-layout (LLaVA-Med) checkpoints: a local CLIP tower folder (offline)
cl_lora_r: int = 32  # LoRA rank of every adapter
cl_lora_alpha: int = 64  # LoRA scaling numerator
cl_lora_dropout: float = 0.0  # LoRA dropout
cl_lr: float = 3.0e-3  # peak learning rate
cl_batch_size: int = 16  # per process
cl_grad_accum: int = 1  # gradient accumulation steps
cl_steps_per_task: int = 300  # optimizer steps per task (joint: this times the number of tasks)
cl_warmup_ratio: float = 0.05  # share of each fit's steps with linear warmup
cl_precision: str = "fp32"  # fp32 | bf16 | fp16 mixed precision
cl_eval_every: int = 0  # steps between validation losses (0: end of each task)
cl_save_every: int = 0  # steps between resumable checkpoints (0: end of each task)
cl_val_samples: int = 16  # validation questions per task in the validation loss
cl_replay_per_task: int = 24  # replay: training questions kept from each earlier task
cl_key_steps: int = 200  # Adam steps of each prompt key
cl_key_lr: float = 0.05  # learning rate of the prompt keys
cl_route_grid: int = 4  # routing query: the vision patches averaged into route_grid x route_grid cells (1: mean)
cl_generate_batch_size: int = 36  # prompts per generation batch (batches mix domains and adapters)
cl_max_new_tokens: int = 8  # longest answer
cl_n_boot: int = 1000  # bootstrap replicates (over images)
cl_examples: int = 2  # example questions shown per domain
expect: dict = {  # metric -> rule, checked at the end; real-data params files set expect: {}
    "cl.mft_min": ">= 0.85",  # every method learns each task (sequential, replay, joint, key-routed adapters)
    "cl.zero_shot_minus_chance_max": "<= 0.1",  # the base model cannot answer before training
    "cl.sequential_bwt": "<= -0.15",  # one LoRA fine-tuned in turn forgets
    "cl.keys_bwt": ">= -0.03",  # task adapters routed by keys do not
    "cl.routing_accuracy": ">= 0.95",
    "cl.question_routing_accuracy": "<= 0.5",  # the question wording does not give the domain away
    "cl.keys_minus_joint_final_average_lo": ">= -0.05",  # paired bootstrap over images
    "cl.keys_minus_random_final_average_lo": ">= 0.2",  # the route matters
    "cl.mean_image_minus_majority_accuracy": "<= 0.1",  # no planted finding, no better than the majority answer
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
from brainvlm.core.seeding import set_seed
from brainvlm.data import validate, vqa_tasks
from brainvlm.eval import bootstrap, continual, vqametrics
from brainvlm.eval.llava_med_answers import write_llava_med_answers
from brainvlm.studies import cl
from brainvlm.train.prompt_keys import routing_accuracy

set_seed(seed)
run_dir = open_notebook(run_dir, "06_continual_vqa", globals())  # checks the folder fits
params = cl.collect_settings(globals())
out = run_dir / "predictions"

# %% [markdown]
# ## Task files
# The question files go through their adapter (VQA-RAD `.json`, LLaVA-Med `.jsonl`; the synthetic default
# is written in the LLaVA-Med layout, like a user's data) and are fused into one task per domain, as the
# seed's `fusion.py` did. A validation split is carved from the training file **by image**, never by
# question. The audit lists images that sit in two splits.

# %%
source = cl.DataSource(cl_train_file, cl_test_file, cl_image_root, cl_dataset, cl_val_fraction, cl_n_train,
                       cl_n_test, cl_image_size)
manifest = cl.build_tasks(source, run_dir / "data" / cl_task, seed)
manifest, tasks = cl.read_tasks(run_dir / "data" / cl_task)
image_root = manifest["image_root"]
orders = [cl.check_order(order, manifest["domains"]) for order in cl_task_orders]
files = [p for by in manifest["files"].values() for p in by.values()]
issues = validate.validate_files(files, image_root=image_root)
print(f"validator: {len(files)} files, {len(issues)} problems")
assert issues.empty, issues.head(20)
display(vqa_tasks.task_counts(tasks))
splits = {split: [s for by in tasks.values() for s in by.get(split, [])] for split in ("train", "val", "test")}
audit = vqa_tasks.image_audit(splits)
display(audit)
shared = audit[~audit["passed"]]
if len(shared):
    print("Images shared between splits (" + "; ".join(shared["detail"].str.split(":").str[0] + " in "
          + shared["check"].str.replace("no image in both ", "")) + "): test scores on such images measure "
          "recall of training images as much as generalisation. VQA-RAD's test images all appear in its "
          "training file; the validation split, carved by image, shares none with training.")
assert audit.loc[audit["check"] == "no image in both train and val", "passed"].all()

# %% [markdown]
# Examples: the same question wording in every domain, answered from what the image shows.

# %%
rows = []
for domain, by_split in tasks.items():
    for sample in by_split["train"][:cl_examples]:
        picture = image_tag(np.asarray(Image.open(f"{image_root}/{cl.image_path(sample)}").convert("RGB")), 80)
        rows.append(f"<tr><td>{domain}</td><td>{picture}</td><td>{cl.question_of(sample)}</td>"
                    f"<td>{cl.answer_of(sample)}</td></tr>")
display(HTML("<table><tr><th>domain</th><th>image</th><th>question</th><th>answer</th></tr>"
             + "".join(rows) + "</table>"))

# %% [markdown]
# ## Training: four methods, one budget
# Each task's fit is `cl_steps_per_task` optimizer steps (joint: that times the number of tasks, on all
# of them at once). The task adapters share nothing trainable: while a domain trains only its adapter
# (its LoRA weights and its copies of the projector's layers) has gradients. Each one-adapter method
# answers every domain's test questions (shuffled together) after each task as soon as it is trained, and
# is then let go, so one model is in memory at a time. Greedy decoding throughout.

# %%
order = orders[0]
test = cl.mixed_test({d: tasks[d] for d in order}, seed)
truth = [s["metadata"]["domain"] for s in test]
gen = dict(batch_size=cl_generate_batch_size, max_new_tokens=cl_max_new_tokens)
rows_of, logs, budget = {}, {}, []
for method in cl.METHODS:
    trained = cl.train(params, method, run_dir, order=order)
    logs[method] = trained.log
    budget.append({"method": method, "optimizer steps": len(trained.log), "fits": len(trained.rows)})
    if method != "adapters":
        rows_of[method] = cl.answer_rows(trained, test, image_root, out, **gen)
        del trained
pool = trained
budget = pd.DataFrame(budget)
display(budget)
assert budget["optimizer steps"].nunique() == 1, "every method must get the same step budget"
save_figure(plot_training_log(logs), run_dir, "06_loss_curves");

# %% [markdown]
# ## Routing
# The query of a sample is the frozen base model's image features, averaged over `cl_route_grid` ×
# `cl_route_grid` cells of the patch grid so that *where* things are counts (the domains differ in the
# anatomy in the middle; the findings sit in the corners in every domain), and its pooled question features
# (adapters disabled). One key per task is pulled toward its training queries (saved per task, then merged into one
# key file with its routing config). Routing is scored on every domain's test questions, shuffled together.

# %%
train_queries = {d: cl.queries(pool.model, pool.processor, tasks[d]["train"], image_root, cl_route_grid)
                 for d in order}
test_queries = cl.queries(pool.model, pool.processor, test, image_root, cl_route_grid)
keys = cl.learn_keys({d: q["both"] for d, q in train_queries.items()}, order, pool.settings, pool.folder,
                     pool.base)
question_keys = cl.learn_keys({d: q["question"] for d, q in train_queries.items()}, order, pool.settings,
                              pool.folder / "question_only", pool.base, space="question")
centroids = cl.centroid_router({d: q["both"] for d, q in train_queries.items()}, order)
routing = cl.routing_record(pool.folder)


def routes(router: str, seen: list, samples: list = test, queries: dict = test_queries) -> list:
    return cl.route(router, samples, seen, queries, keys, centroids, question_keys, seed)


routed = {router: routes(router, order) for router in cl.ROUTERS}
routing_table = pd.DataFrame({"routing accuracy": {r: routing_accuracy(v, truth) for r, v in routed.items()}})
display(routing_table.round(3))
agreement = float(np.mean([a == b for a, b in zip(routed["keys"], routed["centroid"])]))
print(f"keys and centroids choose the same adapter for {agreement:.1%} of the test questions")

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for ax, router in zip(axes, ("keys", "centroid", "question")):
    sns.heatmap(cl.confusion(routed[router], truth, order), annot=True, fmt="d", cbar=False, ax=ax, cmap="Blues")
    ax.set(title=f"{router}: {routing_table.loc[router, 'routing accuracy']:.2f}", xlabel="routed to",
           ylabel="true domain" if ax is axes[0] else "")
fig.tight_layout()
save_figure(fig, run_dir, "06_routing_confusion");

# %% [markdown]
# ## The pool's answers after each task
# The pool answers each shuffled, mixed-domain batch with mixed adapters: every sample through the
# adapter its router chose among the tasks learned so far (the oracle sends a domain not yet learned to
# the newest adapter). The keys and the oracle answer after every task; the other routers after the last.
# Row 0 of every matrix is the base model with every adapter disabled.

# %%
zero_shot = cl.answer_zero_shot(pool, test, image_root, out / f"06_{cl_task}_zero_shot.jsonl", **gen)
last_only = {}  # the other routers are compared after the last task only
for router in cl.ROUTERS:
    answered = [cl.answer_routed(pool, test, routes(router, order[:i + 1]), image_root,
                                 out / f"06_{pool.folder.name}_{router}_row{i + 1}.jsonl",
                                 {**routing, "router": router}, **gen)
                for i in range(len(order)) if router in ("keys", "oracle") or i == len(order) - 1]
    if router in ("keys", "oracle"):
        rows_of[f"adapters · {router}"] = answered
    else:
        last_only[f"adapters · {router}"] = answered[-1]

# %% [markdown]
# ## Accuracy matrices
# Exact match (normalised) per domain after each task; joint training has a single row, after all tasks.

# %%
matrices = {name: cl.accuracy_matrix(zero_shot, tables, order) for name, tables in rows_of.items()}
shown = ["sequential", "replay", "adapters · keys"]
fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3))
for ax, name in zip(axes, shown):
    labels = ["zero-shot", *[f"after {d}" for d in order]]
    sns.heatmap(np.asarray(matrices[name]), annot=True, fmt=".2f", vmin=0, vmax=1, cbar=False, cmap="viridis",
                xticklabels=order, yticklabels=labels, ax=ax)
    ax.set(title=name)
fig.tight_layout()
save_figure(fig, run_dir, "06_accuracy_matrices", main=True);

# %%
continual.matrix_table(matrices["sequential"], order, zero_shot=True).round(3)

# %% [markdown]
# Closed (yes/no) questions only:

# %%
pd.concat({name: continual.matrix_table(cl.accuracy_matrix(zero_shot, rows_of[name], order, closed_only=True),
                                        order, zero_shot=True) for name in ("sequential", "adapters · keys")}
          ).round(3)

# %% [markdown]
# ## Continual-learning measures
# Final average (mean of the last row), average over time, MFT (each task right after it was learned),
# BWT (Lopez-Paz & Ranzato; `bwt_gem` is the GEM code's variant, divided by T), forgetting (Chaudhry et
# al.) and FWT. Joint training has no sequence: its MFT is its final accuracy.

# %%
measures = {}
for name, matrix in matrices.items():
    if name == "joint":
        final = float(np.mean(matrix[-1]))
        measures[name] = {"final_average": final, "mft": final}
    else:
        measures[name] = continual.continual_metrics(matrix, zero_shot=True)
measures_table = pd.DataFrame(measures).T
display(measures_table.round(3))
chance = {d: cl.chance(tasks[d]["train"], tasks[d]["test"]) for d in order}
majority = {d: float(np.mean([vqametrics.normalize_answer(p) == vqametrics.normalize_answer(cl.answer_of(s))
                              for p, s in zip(cl.majority_predictions(tasks[d]["train"], tasks[d]["test"]),
                                              tasks[d]["test"])])) for d in order}
display(pd.DataFrame({"zero-shot": dict(zip(order, matrices["sequential"][0])), "chance": chance,
                      "majority answer": majority}).round(3))
bwt_seq = cl.bwt_interval(rows_of["sequential"], order, cl_n_boot, seed)
verdict = "forgets" if bwt_seq["hi"] < 0 else "does not forget measurably (its interval includes 0)"
print(f"Sequential fine-tuning {verdict}: BWT {bwt_seq['point']:.3f} [{bwt_seq['lo']:.3f}, {bwt_seq['hi']:.3f}] "
      f"over {bwt_seq['n_units']} images.")

# %% [markdown]
# ## Paired differences
# The same test questions answered by two systems after the last task; 95% paired-bootstrap intervals
# over images. Routed − oracle is what routing mistakes cost.

# %%
final = {**{name: tables[-1] for name, tables in rows_of.items()}, **last_only}
compared = [("keys_minus_oracle", "adapters · keys", "adapters · oracle"),
            ("keys_minus_joint", "adapters · keys", "joint"),
            ("keys_minus_random", "adapters · keys", "adapters · random"),
            ("keys_minus_centroid", "adapters · keys", "adapters · centroid"),
            ("keys_minus_sequential", "adapters · keys", "sequential"),
            ("keys_minus_replay", "adapters · keys", "replay")]
differences, rows = {}, []
for label, first, second in compared:
    interval = cl.paired_gap(final[first], final[second], cl_n_boot, seed)
    differences.update(comparison_metrics(f"{label}_final_average", interval))
    rows.append({"comparison": f"{first} − {second}", "difference": interval["point"], "95% low": interval["lo"],
                 "95% high": interval["hi"], "images": interval["n_units"]})
frame = pd.DataFrame(rows)
display(frame.round(3))
fig, ax = plt.subplots(figsize=(7, 0.4 * len(frame) + 1))
ax.errorbar(frame["difference"], range(len(frame)), xerr=[frame["difference"] - frame["95% low"],
            frame["95% high"] - frame["difference"]], fmt="o", capsize=3)
ax.axvline(0, c="grey", lw=1)
ax.set_yticks(range(len(frame)), frame["comparison"], fontsize=8)
ax.invert_yaxis()
ax.set(xlabel="final average exact match, difference (95% paired bootstrap over images)")
save_figure(fig, run_dir, "06_differences");

# %% [markdown]
# Per domain after the last task: closed accuracy, open recall and token F1, with 95% bootstrap intervals
# over images.

# %%
per_domain = []
for name in ("adapters · keys", "joint", "sequential", "replay"):
    for domain, table in final[name].groupby("domain", sort=False):
        for metric, column, subset in (("closed accuracy", "correct", "CLOSED"), ("open recall", "recall", "OPEN"),
                                       ("token F1", "token_f1", None)):
            chosen = table if subset is None else table[table["answer_type"] == subset]
            if len(chosen):
                ci = bootstrap.mean_ci(chosen[column].astype(float), chosen["image"], cl_n_boot, seed)
                per_domain.append({"system": name, "domain": domain, "metric": metric, **ci})
per_domain = pd.DataFrame(per_domain)
per_domain["value"] = [f"{r.point:.3f} [{r.lo:.3f}, {r.hi:.3f}]" for r in per_domain.itertuples()]
per_domain.pivot(index=["system", "domain"], columns="metric", values="value")

# %% [markdown]
# ## Control: each query image replaced by its domain's mean image
# The mean training image of a domain keeps its style (so routing still works) but shows no planted
# finding; a model that reads the image should do no better than answering each question with its most
# frequent training answer.

# %%
mean_samples = cl.mean_image_samples({d: tasks[d] for d in order}, test, image_root, run_dir / "controls" / "cl",
                                     cl_image_size)
mean_queries = cl.queries(pool.model, pool.processor, mean_samples, str(run_dir / "controls" / "cl"), cl_route_grid)
mean_routes = routes("keys", order, mean_samples, mean_queries)
mean_table = cl.answer_routed(pool, mean_samples, mean_routes, str(run_dir / "controls" / "cl"),
                              out / f"06_{pool.folder.name}_mean_image.jsonl", {**routing, "router": "keys"}, **gen)
majority_table = cl.score_table(test, [dict(zip([s["id"] for s in tasks[d]["test"]],
                                                cl.majority_predictions(tasks[d]["train"], tasks[d]["test"])))
                                       [s["id"]] for s, d in zip(test, truth)])
mean_gap = cl.paired_gap(mean_table.assign(image=list(final["adapters · keys"]["image"])), majority_table,
                         cl_n_boot, seed)
pd.DataFrame({"mean image (keys)": cl.task_accuracy(mean_table, order), "majority answer":
              cl.task_accuracy(majority_table, order), "test images (keys)": cl.task_accuracy(
                  final["adapters · keys"], order)}, index=order).round(3)

# %% [markdown]
# ## Answer files
# The key-routed answers after the last task, in the LLaVA-Med answer layout the seed evaluates
# (`brainvlm evaluate` reads them back, matched on the question id).

# %%
answers = dict(zip(final["adapters · keys"]["id"], final["adapters · keys"]["prediction"]))
written = write_llava_med_answers(test, answers, out / f"06_{cl_task}_answers_llava_med.jsonl",
                                  model_id=pool.folder.name)
print(f"{len(answers)} answers written to predictions/{written.name}")

# %% [markdown]
# ## Other task orders
# Each further order of `cl_task_orders` trains sequential fine-tuning and the task adapters again.

# %%
by_order = {"-".join(order): {"sequential": measures["sequential"], "adapters · keys": measures["adapters · keys"]}}
for other in orders[1:]:
    by_order["-".join(other)] = cl.order_measures(params, run_dir, other, test, zero_shot, train_queries, test_queries,
                                                  image_root, out, **gen)
pd.concat({o: pd.DataFrame(m).T for o, m in by_order.items()}, names=["order", "method"]).round(3)

# %% [markdown]
# ## Results

# %%
methods = ["sequential", "replay", "joint", "adapters · keys"]
metrics = {"n_test": len(test), "n_test_images": int(final["joint"]["image"].nunique()),
           "mft_min": min(measures[m]["mft"] for m in methods),
           **{f"mft_{m.split(' · ')[0]}": measures[m]["mft"] for m in methods},
           "zero_shot_minus_chance_max": max(matrices["sequential"][0][j] - chance[d] for j, d in enumerate(order)),
           "sequential_bwt": measures["sequential"]["bwt"], "sequential_forgetting": measures["sequential"]["forgetting"],
           **comparison_metrics("sequential_bwt_interval", bwt_seq),
           "replay_bwt": measures["replay"]["bwt"], "keys_bwt": measures["adapters · keys"]["bwt"],
           "keys_forgetting": measures["adapters · keys"]["forgetting"],
           "oracle_bwt": measures["adapters · oracle"]["bwt"],
           **{f"{m.split(' · ')[-1]}_final_average": cl.average_over_tasks(final[m]) for m in
              ["sequential", "replay", "joint", *[f"adapters · {r}" for r in cl.ROUTERS]]},
           "routing_accuracy": routing_table.loc["keys", "routing accuracy"],
           **{f"{r}_routing_accuracy": routing_table.loc[r, "routing accuracy"] for r in cl.ROUTERS if r != "keys"},
           "keys_centroid_agreement": agreement,
           **differences,
           "mean_image_accuracy": cl.average_over_tasks(mean_table),
           "majority_accuracy": cl.average_over_tasks(majority_table),
           **comparison_metrics("mean_image_minus_majority_accuracy", mean_gap)}
metrics = write_metrics(run_dir, "06_continual_vqa", metrics, study="cl")
display(show_expectations(metrics, expect))
metrics

# %% [markdown]
# The run folder records this notebook (by hand: its `index.html`, `status.json` and `provenance.json`).

# %%
close_notebook(run_dir, "06_continual_vqa", globals())
