"""Original-layout LLaVA-Med checkpoints: a tiny llava_mistral folder and CLIP tower, converted and used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from test_templates import FAMILY_TOKENS, family_tokenizer  # tests/model/test_templates.py: small tokenizers

from brainvlm.model import collate, convert, loader, lora
from brainvlm.model.convert import ConversionError

HIDDEN, MM_HIDDEN = 32, 24


@pytest.fixture(scope="module")
def tower(tmp_path_factory) -> Path:
    """A tiny CLIP vision tower with its image processor, saved as a local folder."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(1)
    CLIPVisionModel(CLIPVisionConfig(hidden_size=MM_HIDDEN, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=2, image_size=28, patch_size=14)).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def original(tmp_path_factory, tower) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny checkpoint in the original LLaVA-Med (llava_mistral) layout: no <image> token, mm_projector."""
    from transformers import MistralConfig, MistralForCausalLM

    folder = tmp_path_factory.mktemp("llava_med")
    monkeypatch = pytest.MonkeyPatch()
    # LLaVA-Med's tokenizer has no <image> token: the conversion adds one
    monkeypatch.setitem(FAMILY_TOKENS["mistral"], "specials", ["<unk>", "<s>", "</s>"])
    tokenizer = family_tokenizer("mistral")
    monkeypatch.undo()
    assert "<image>" not in tokenizer.get_vocab()
    tokenizer.save_pretrained(folder)
    text = MistralConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(2)
    state = dict(MistralForCausalLM(text).state_dict())
    state.update({"model.mm_projector.0.weight": torch.randn(HIDDEN, MM_HIDDEN),
                  "model.mm_projector.0.bias": torch.randn(HIDDEN),
                  "model.mm_projector.2.weight": torch.randn(HIDDEN, HIDDEN),
                  "model.mm_projector.2.bias": torch.randn(HIDDEN)})
    state = {k: v.contiguous().clone() for k, v in state.items()}
    save_file(state, str(folder / "model.safetensors"))
    config = {**text.to_dict(), "model_type": "llava_mistral", "architectures": ["LlavaMistralForCausalLM"],
              "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": MM_HIDDEN,
              "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
              "mm_use_im_start_end": False, "image_aspect_ratio": "pad"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, state


def test_every_source_tensor_lands_unchanged_and_the_result_loads_trains_and_generates(original, tower, tmp_path):
    folder, source = original
    assert convert.is_original_layout(folder)
    out = convert.convert(folder, vision_tower=str(tower), out_dir=tmp_path / "converted")
    assert convert.convert(folder, vision_tower=str(tower), out_dir=tmp_path / "converted") == out  # once
    model, processor = loader.load(out)
    converted = model.state_dict()
    for key, value in source.items():
        target = convert.target_key(key, set(converted))
        assert target is not None, key
        rows = value.shape[0]
        torch.testing.assert_close(converted[target][:rows], value, rtol=0, atol=0)
    from transformers import CLIPVisionModel

    for key, value in CLIPVisionModel.from_pretrained(tower).state_dict().items():
        inner = key.removeprefix("vision_model.")
        target = next(t for t in (f"model.vision_tower.{inner}", f"model.vision_tower.vision_model.{inner}")
                      if t in converted)
        torch.testing.assert_close(converted[target], value, rtol=0, atol=0)
    vocab = len(processor.tokenizer)
    assert converted["lm_head.weight"].shape[0] == vocab == source["lm_head.weight"].shape[0] + 1  # <image> added
    assert model.config.image_token_index == processor.tokenizer.convert_tokens_to_ids("<image>")
    assert loader.model_family(model) == "mistral"

    Image.fromarray(np.full((28, 28, 3), 200, np.uint8)).save(tmp_path / "x.png")
    sample = {"id": "r1", "task": "report", "conversations": [
        {"role": "user", "content": [{"type": "image", "modality": "xray", "image_path": "x.png"},
                                     {"type": "text", "text": "Answer Impression."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "No acute process."}]}]}
    config = collate.CollateConfig(image_root=str(tmp_path))
    peft_model = lora.add_lora(model, r=4, alpha=8, seed=0)
    batch = collate.Collator(processor, config)([sample])
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    logits = peft_model(**collate.model_inputs(batch)).logits
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100)
    assert (labels != -100).sum() > 0 and torch.isfinite(loss)
    loss.backward()
    torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.1).step()
    assert any(not torch.equal(before[n], p) for n, p in peft_model.named_parameters() if p.requires_grad)
    prompt = collate.Collator(processor, config, prompt_only=True)([sample])
    generated = peft_model.generate(**collate.model_inputs(prompt), max_new_tokens=3, do_sample=False)
    assert prompt["input_ids"].shape[1] < generated.shape[1] <= prompt["input_ids"].shape[1] + 3


def test_load_converts_an_original_folder_through_the_cache(original, tower, tmp_path, monkeypatch):
    folder, _ = original
    monkeypatch.setattr(convert, "CONVERTED_DIR", tmp_path / "cache")
    model, _ = loader.load(folder, vision_tower=str(tower))
    assert model.config.model_type == "llava"
    (written,) = (tmp_path / "cache").iterdir()
    assert json.loads((written / convert.RECORD).read_text())["source"] == str(folder)


def test_an_unsupported_projector_is_named(original, tower, tmp_path):
    folder, _ = original
    other = tmp_path / "linear"
    other.mkdir()
    for path in folder.iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "mm_projector_type": "linear"}))
    with pytest.raises(ConversionError, match="mm_projector_type 'linear'; transformers' LLaVA has the two-layer"):
        convert.convert(other, vision_tower=str(tower), out_dir=tmp_path / "out")
