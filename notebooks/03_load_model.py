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
# # 03 · Load a LLaVA-family model
# *In: a checkpoint (the embedded tiny default, a local path or a hub id) and the data of notebook 01.
# Out: the model's family and size, one sample rendered through its chat template, the pre-flight check
# and one generation.*
#
# *Needs: 01_generate_data (its data) and 02_validate_data (its checks of that data).*
#
# The embedded default is the LLaVA-interleave architecture (Qwen2 language model, SigLIP vision tower,
# projector) at tiny size with random weights and a tokenizer trained on the task's text. It is written
# with `save_pretrained` and read back through `brainvlm.model.loader.load`, the same path a real checkpoint takes.

# %% tags=["parameters"]
run_dir: str = ""  # run folder, injected by the runner (empty: reports/interactive)
seed: int = 0  # initialisation seed of the tiny default
model: str = "tiny"  # tiny | tiny-real-size | local checkpoint path | hub id
dtype: str = "float32"  # float32 | bfloat16 | float16
load_in_4bit: bool = False  # bitsandbytes 4-bit (needs a CUDA device)
brain_view: str = "axial"  # 2D view of a volume the model sees: axial | orthogonal | montage | ...
brain_view_size: int = 32  # view edge in pixels (the tiny default's image size)
brain_preview_task: str = "sex"  # task whose first training sample is rendered

# %%
from pathlib import Path

import pandas as pd
from IPython.display import HTML, display

from brainvlm.app.report import highlight_image_tokens, write_metrics
from brainvlm.app.run_folder import close_notebook, open_notebook
from brainvlm.core.jsonio import read_jsonl
from brainvlm.core.seeding import set_seed
from brainvlm.data import dataset, views
from brainvlm.model import collate, lora, preflight, templates
from brainvlm.model.loader import load, model_family
from brainvlm.studies import brain

set_seed(seed)
run_dir = open_notebook(run_dir, "03_load_model", globals())  # checks the folder fits
manifest = dataset.read_manifest(run_dir)
checkpoint = brain.base_model(model, seed, run_dir, manifest)
vlm, processor = load(checkpoint, dtype=dtype, load_in_4bit=load_in_4bit)
family = model_family(vlm)
shown = Path(checkpoint).relative_to(run_dir) if Path(checkpoint).is_relative_to(run_dir) else checkpoint
print(f"{type(vlm).__name__} from {shown}; chat family: {family}")

# %% [markdown]
# ## Size
# Parameters per component. LoRA (notebook 04) trains a small share of these.

# %%
report = lora.parameter_report(vlm)
pd.DataFrame(report["by_component"]).T.assign(share=lambda t: t["total"] / report["total"])

# %% [markdown]
# ## One sample through the chat template
# Image parts are rendered where they stand in a turn; each becomes a block of image tokens (highlighted,
# with the count). The assistant's answers are wrapped in generation markers, so the training labels
# cover exactly the answers and their end-of-turn token.

# %%
sample = read_jsonl(manifest["tasks"][brain_preview_task]["files"]["train"])[0]
config = collate.CollateConfig(image_root=manifest["image_root"],
                               view=views.ViewConfig(view=brain_view, size=brain_view_size))
encoded = collate.encode_sample(sample, processor, config)
display(HTML(highlight_image_tokens(processor.tokenizer.decode(encoded["input_ids"]))))
label_ids = encoded["input_ids"][encoded["labels"] != -100]
print("trained on:", repr(processor.tokenizer.decode(label_ids)))

# %% [markdown]
# ## Pre-flight check
# For a sample of the data: image parts, image tokens after expansion and image features from the vision
# tower must agree, and every sample must have assistant tokens to learn from. A mismatch stops here with
# the sample id and the counts, instead of failing at step 1 of training.

# %%
samples = read_jsonl(manifest["tasks"][brain_preview_task]["files"]["train"])
checked = preflight.preflight(samples, processor, vlm, config, n=8)
checked

# %% [markdown]
# ## One generation
# The stop tokens come from the model family. An untrained random model answers nonsense; notebook 04
# trains it.

# %%
stops = templates.stop_token_ids(processor.tokenizer, family)
prompt = collate.Collator(processor, config, prompt_only=True)([sample])
output = vlm.generate(**collate.model_inputs(prompt), max_new_tokens=16, do_sample=False, eos_token_id=stops,
                      pad_token_id=processor.tokenizer.pad_token_id)
print("answer:", repr(processor.tokenizer.decode(output[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)))

# %% [markdown]
# ## Results

# %%
metrics = {"model_parameters": report["total"], "chat_family": family,
           "image_tokens_per_image": int(checked["image_tokens"].iloc[0] // checked["image_parts"].iloc[0]),
           "preflight_samples_ok": int(checked["fits"].sum())}
metrics = write_metrics(run_dir, "03_load_model", metrics, study="brain")
assert (checked["image_tokens"] == checked["image_features"]).all()
metrics

# %% [markdown]
# The run folder records this notebook (by hand: its `index.html`, `status.json` and `provenance.json`).

# %%
close_notebook(run_dir, "03_load_model", globals())
