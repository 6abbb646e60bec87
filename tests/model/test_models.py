"""Model loading, the tiny default, LoRA wrapping and the adapter save / reload / merge round trip."""

from __future__ import annotations

import re
import time

import pytest
import torch

from brainvlm.model import loader, lora, tiny
from brainvlm.model.templates import FAMILY_TEMPLATES, has_generation_markers

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
LAYERS = 2
LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VISION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny.build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def inputs(processor, seed: int = 0) -> dict:
    """A one-image chat turn as model inputs (fixed pixels from ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the sex?"}]},
         {"role": "assistant", "content": [{"type": "text", "text": "female"}]}], tokenize=False)
    text = text.replace("<image>", "<image>" * 16)
    ids = processor.tokenizer(text, return_tensors="pt")
    return {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"], "pixel_values": pixels}


def logits(model, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def randomise_adapter(peft_model, seed: int = 1) -> None:
    """Give LoRA B matrices and the saved modules non-zero changes, so a round trip can fail."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if "lora_B" in name or "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)


def test_tiny_default_builds_fast_and_byte_identical(tmp_path):
    start = time.perf_counter()
    first = tiny.build_tiny_model(tmp_path / "a", seed=3)
    assert time.perf_counter() - start < 10
    second = tiny.build_tiny_model(tmp_path / "b", seed=3)
    other = tiny.build_tiny_model(tmp_path / "c", seed=4)
    names = sorted(p.name for p in first.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json",
            "chat_template.jinja"} <= set(names)
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()


def test_build_leaves_the_callers_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny.tiny_model(seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_architecture_and_processor(tiny_dir):
    model, processor = loader.load(tiny_dir)
    config = model.config
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert config.text_config.model_type == "qwen2" and config.vision_config.model_type == "siglip_vision_model"
    assert config.vision_feature_select_strategy == "full" and config.vision_feature_layer == -1
    assert config.tie_word_embeddings and model.lm_head.weight.data_ptr() == \
        model.model.language_model.embed_tokens.weight.data_ptr()
    tokenizer = processor.tokenizer
    assert 256 < len(tokenizer) <= tiny.TINY_VOCAB_SIZE
    for token in tiny.TINY_SPECIAL_TOKENS:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    assert config.image_token_index == tokenizer.convert_tokens_to_ids("<image>")
    assert type(processor.image_processor).__name__ == "SiglipImageProcessorPil"
    assert processor.patch_size == 8 and processor.num_additional_image_tokens == 0
    assert has_generation_markers(processor.chat_template)
    assert loader.model_family(model) == "chatml"
    assert model.generation_config.eos_token_id == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id == tokenizer.convert_tokens_to_ids(
        "<|endoftext|>")


def test_a_one_decimal_answer_is_spelled_digit_by_digit():
    """Why notebook 01's BMI answers have one decimal: a second one would be a two-digit token ("85"), a guess
    among a hundred tokens, where a tiny model wrote words ("-0.in.")."""
    texts = [f"the BMI z-score of this participant is {v / 100:.2f} and {v / 10:.1f}." for v in range(-250, 250, 7)]
    _, processor = tiny.tiny_model(vocab_texts=texts)
    tokenizer = processor.tokenizer
    for text in ("-0.8.", " 1.3.", " -2.0"):
        pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode(text))
        assert all(len(p.strip("Ġ-.")) <= 1 for p in pieces), (text, pieces)
    two = [tokenizer.convert_ids_to_tokens(tokenizer.encode(f" {v / 100:.2f}.")) for v in range(-250, 250, 7)]
    assert any(len(p) == 2 and p.isdigit() for pieces in two for p in pieces)  # what two decimals would give


def test_vocab_texts_extend_the_tokenizer():
    _, plain = tiny.tiny_model()
    _, extended = tiny.tiny_model(vocab_texts=["hippocampal hippocampal hippocampal volume"] * 20)
    word = " hippocampal"
    assert len(extended.tokenizer.encode(word)) < len(plain.tokenizer.encode(word))


def test_load_gives_the_logits_of_the_in_memory_model(tiny_dir):
    memory_model, memory_processor = tiny.tiny_model(seed=0)
    model, processor = loader.load(tiny_dir)
    batch = inputs(processor)
    assert torch.equal(batch["input_ids"], inputs(memory_processor)["input_ids"])
    assert torch.equal(logits(model, batch), logits(memory_model, batch))


def test_real_size_config_matches_llava_interleave_qwen_05b():
    config = tiny.llava_config("real")
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.intermediate_size, text.vocab_size) == (1024, 24, 16, 16, 2816, 152000)
    assert config.tie_word_embeddings
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size,
            vision.image_size, vision.patch_size) == (1152, 26, 16, 4304, 384, 14)
    assert config.image_seq_length == (384 // 14) ** 2 == 729
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):  # counts parameters without allocating them
        report = lora.parameter_report(LlavaForConditionalGeneration(config))
    assert 860e6 < report["total"] < 870e6


def test_load_errors_and_hub_ids_pass_through(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist; build the tiny default"):
        loader.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="'./no/such/model' does not exist"):
        loader.resolve_source("./no/such/model")
    assert loader.resolve_source("llava-hf/llava-interleave-qwen-0.5b-hf") == "llava-hf/llava-interleave-qwen-0.5b-hf"
    with pytest.raises(ValueError, match="dtype='float8'"):
        loader.resolve_dtype("float8")


def test_four_bit_needs_cuda_then_bitsandbytes(tiny_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        loader.load(tiny_dir, load_in_4bit=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(loader.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        loader.four_bit_config()


def test_dtype_and_family_override(tiny_dir):
    model, _ = loader.load(tiny_dir, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match=r"has no token \['</s>'\]"):
        loader.load(tiny_dir, family="vicuna")


def lora_module_names(model) -> list[str]:
    return sorted(name for name, module in model.named_modules() if hasattr(module, "lora_A"))


def test_add_lora_targets_only_the_language_model(tiny_dir):
    model, _ = loader.load(tiny_dir)
    peft_model = lora.add_lora(model)
    names = lora_module_names(peft_model)
    assert len(names) == LAYERS * len(LM_PROJECTIONS)
    assert all(".language_model." in n and n.rsplit(".", 1)[1] in LM_PROJECTIONS for n in names)
    report = lora.parameter_report(peft_model)
    parts = report["by_component"]
    assert parts["vision_tower"]["trainable"] == 0 and parts["vision_tower"]["total"] > 0
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters() if p.requires_grad)
    assert parts["projector"]["trainable"] == projector > 0
    n_lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    norm = model.config.text_config.hidden_size
    assert parts["language_model"]["trainable"] == n_lora + norm
    assert report["trainable"] == n_lora + norm + projector
    assert report["percent"] == pytest.approx(100 * report["trainable"] / report["total"])


def test_plain_name_list_would_also_hit_the_vision_tower(tiny_dir):
    model, _ = loader.load(tiny_dir)
    peft_model = lora.add_lora(model, target_modules=["q_proj", "k_proj", "v_proj"])
    assert any(".vision_tower." in n for n in lora_module_names(peft_model))


def test_vision_lora_and_full(tiny_dir):
    model, _ = loader.load(tiny_dir)
    names = lora_module_names(lora.add_lora(model, vision="lora"))
    vision = [n for n in names if ".vision_tower." in n]
    assert len(vision) == LAYERS * len(VISION_PROJECTIONS)
    assert all(re.search(r"\.layers\.\d+\.", n) and n.rsplit(".", 1)[1] in VISION_PROJECTIONS for n in vision)
    model, _ = loader.load(tiny_dir)
    full = lora.add_lora(model, vision="full", train_projector=False, train_lm_head_norm=False)
    parts = lora.parameter_report(full)["by_component"]
    assert parts["vision_tower"]["trainable"] > 0 and parts["projector"]["trainable"] == 0
    with pytest.raises(ValueError, match="vision='partial'"):
        lora.add_lora(loader.load(tiny_dir)[0], vision="partial")


def test_gradients_reach_adapters_projector_and_norm_only(tiny_dir):
    model, processor = loader.load(tiny_dir)
    peft_model = lora.add_lora(model)
    peft_model.train()
    batch = inputs(processor)
    peft_model(**batch, labels=batch["input_ids"]).loss.backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert any("lora_B" in n and g.abs().sum() > 0 for n, g in grads.items())
    assert any("multi_modal_projector" in n and g.abs().sum() > 0 for n, g in grads.items())
    assert any("language_model.norm" in n and g.abs().sum() > 0 for n, g in grads.items())
    assert not any("vision_tower" in n for n in grads)


def test_lora_init_is_seeded(tiny_dir):
    first = lora.add_lora(loader.load(tiny_dir)[0], seed=5)
    second = lora.add_lora(loader.load(tiny_dir)[0], seed=5)
    a = dict(first.named_parameters())
    assert all(torch.equal(p, a[n]) for n, p in second.named_parameters())


def test_adapter_save_reload_merge_round_trip(tiny_dir, tmp_path):
    model, processor = loader.load(tiny_dir)
    batch = inputs(processor, seed=1)
    base = logits(model, batch)
    peft_model = lora.add_lora(model)
    randomise_adapter(peft_model)
    tuned = logits(peft_model, batch)
    assert (tuned - base).abs().max() > 1e-3
    adapter = lora.save_adapter(peft_model, tmp_path / "adapter")
    assert (adapter / "adapter_config.json").is_file()

    reloaded = lora.load_adapter(loader.load(tiny_dir)[0], adapter)
    assert torch.equal(logits(reloaded, batch), tuned)
    assert loader.model_family(reloaded) == "chatml"

    merged_dir = lora.merge_and_save(reloaded, tmp_path / "merged", processor)
    merged, merged_processor = loader.load(merged_dir)
    assert not lora_module_names(merged)
    assert (logits(merged, batch) - tuned).abs().max() < 1e-4
    assert merged_processor.chat_template == FAMILY_TEMPLATES["chatml"].chat_template
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        lora.load_adapter(loader.load(tiny_dir)[0], tmp_path)
