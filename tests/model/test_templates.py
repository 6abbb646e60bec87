"""Per-family chat templates: assistant masks cover exactly the replies and their stop tokens.

Each family gets a tiny tokenizer carrying that family's real special tokens (and, for the LLaMA-2
families, a SentencePiece-style Metaspace pre-tokenizer with a BOS post-processor), and a template in
the style its checkpoints ship (images first, no generation markers). The shipped style gives an
all-zero mask; brainvlm's template gives a mask that is checked token by token.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlavaConfig, LlavaProcessor, PreTrainedTokenizerFast, SiglipImageProcessorPil

from brainvlm.model.templates import (
    FAMILIES,
    FAMILY_TEMPLATES,
    AssistantMaskError,
    attach_template,
    detect_family,
    family_from_config,
    family_spec,
    has_generation_markers,
    require_assistant_tokens,
    stop_token_ids,
    template_text,
)

torch.set_num_threads(1)

# Special tokens, BOS handling and pre-tokenizer of each family's real tokenizers.
FAMILY_TOKENS = {
    "chatml": {"specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"], "bos": None,
               "eos": "<|im_end|>", "pad": "<|endoftext|>", "metaspace": False},
    "vicuna": {"specials": ["<unk>", "<s>", "</s>", "<pad>", "<image>"], "bos": "<s>", "eos": "</s>",
               "pad": "<pad>", "metaspace": True},
    "mistral": {"specials": ["<unk>", "<s>", "</s>", "<image>"], "bos": "<s>", "eos": "</s>", "pad": None,
                "metaspace": True},
    "llama3": {"specials": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                            "<|eot_id|>", "<image>"], "bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": None,
               "metaspace": False},
}

# Templates in the style the checkpoints ship: all images of a turn first, no generation markers.
SHIPPED_TEMPLATES = {
    "chatml": (  # llava-interleave / llava-onevision
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}"
        "{% endfor %}{{'<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "vicuna": (  # llava-1.5
        "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
        "{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
        "{{ '<image>\n' }}{% endfor %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
        "{{ content['text'] + ' '}}{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"),
    "mistral": (  # llava-v1.6-mistral
        "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' }}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}"
        "{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ ' ' + message['content'][0]['text'] + '</s> '}}{% endif %}{% endfor %}"),
    "llama3": (  # llava-llama-3
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
        "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}"
        "{% endfor %}{{ '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
}
CORPUS = ["Is the brain tissue ischemic? Yes. MRI imaging modality used? DWI. Compare with this scan.",
          "USER: ASSISTANT: [INST] [/INST] user assistant system male female 0123456789",
          "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()[]<>/\\-_=+*&#@$%\n"]


def family_tokenizer(family: str, template: str | None = None) -> PreTrainedTokenizerFast:
    """A small BPE tokenizer with ``family``'s special tokens, BOS handling and pre-tokenizer."""
    spec = FAMILY_TOKENS[family]
    unk = "<unk>" if "<unk>" in spec["specials"] else None
    bpe = Tokenizer(models.BPE(unk_token=unk))
    if spec["metaspace"]:
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        bpe.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
        alphabet = []
    else:
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=spec["specials"], initial_alphabet=alphabet,
                                  show_progress=False)
    bpe.train_from_iterator(CORPUS * 3, trainer)
    if spec["bos"]:
        bos_id = bpe.token_to_id(spec["bos"])
        bpe.post_processor = processors.TemplateProcessing(single=f"{spec['bos']} $A",
                                                           special_tokens=[(spec["bos"], bos_id)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=spec["bos"], eos_token=spec["eos"],
                                        pad_token=spec["pad"], unk_token=unk)
    tokenizer.chat_template = template if template is not None else SHIPPED_TEMPLATES[family]
    return tokenizer


def llava_processor(tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    return LlavaProcessor(image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}),
                          tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="full",
                          num_additional_image_tokens=0, chat_template=tokenizer.chat_template)


@pytest.fixture(scope="module")
def head_images(test_data) -> list[Image.Image]:
    folder = test_data / "vqa_rad_head"
    return [Image.open(folder / name).convert("RGB") for name in ("synpic46720.jpg", "synpic59536.jpg")]


def vqa_conversation(images: list) -> list[dict]:
    """Two VQA-RAD questions on two head images; the second turn has text, image, text."""
    return [
        {"role": "user", "content": [{"type": "image", "image": images[0]},
                                     {"type": "text", "text": "Is the brain tissue ischemic?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Yes"}]},
        {"role": "user", "content": [{"type": "text", "text": "Compare with this scan."},
                                     {"type": "image", "image": images[1]},
                                     {"type": "text", "text": "MRI imaging modality used?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "DWI"}]},
    ]


def masked_runs(ids: list[int], mask: list[int]) -> list[list[int]]:
    """Contiguous runs of token ids where the mask is 1."""
    runs, current = [], []
    for token, flag in zip(ids, mask):
        if flag:
            current.append(token)
        elif current:
            runs, current = runs + [current], []
    return runs + ([current] if current else [])


def assert_mask_exact(tokenizer, ids: list[int], mask: list[int], answers: list[str], family: str) -> None:
    """The mask is one run per reply, each decoding to the reply followed by the family's stop token."""
    stop = FAMILY_TEMPLATES[family].stop_tokens[0]
    stop_id = tokenizer.convert_tokens_to_ids(stop)
    runs = masked_runs(ids, mask)
    assert len(runs) == len(answers)
    for run, answer in zip(runs, answers):
        assert run[-1] == stop_id and run.count(stop_id) == 1
        assert tokenizer.decode(run).strip() == answer + stop
        assert tokenizer.decode(run[:-1]).strip() == answer  # token by token: nothing else is in the run
    assert sum(mask) == sum(len(r) for r in runs)


@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_template_gives_all_zero_mask_and_ours_covers_replies(family, head_images):
    tokenizer = family_tokenizer(family)
    processor = llava_processor(tokenizer)
    conversation = vqa_conversation(head_images)
    shipped = processor.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True, return_tensors="pt")
    assert shipped["assistant_masks"].sum() == 0
    assert attach_template(processor) == family
    assert has_generation_markers(processor.chat_template)
    ours = processor.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                         return_assistant_tokens_mask=True, return_tensors="pt")
    ids, mask = ours["input_ids"][0].tolist(), ours["assistant_masks"][0].tolist()
    assert ids.count(tokenizer.convert_tokens_to_ids("<image>")) == 2 * 16  # expanded: 2 images x (32/8)^2
    assert_mask_exact(tokenizer, ids, mask, ["Yes", "DWI"], family)
    bos = FAMILY_TOKENS[family]["bos"]
    if bos:  # exactly one: the template writes it and the processor then adds none
        assert ids.count(tokenizer.convert_tokens_to_ids(bos)) == 1 and ids[0] == tokenizer.bos_token_id


@pytest.mark.parametrize("family", FAMILIES)
def test_images_render_where_they_stand(family):
    tokenizer = family_tokenizer(family, FAMILY_TEMPLATES[family].chat_template)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Compare with this scan."}, {"type": "image"},
                                             {"type": "text", "text": "Sex?"}]}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "Compare with this scan.\n<image>\nSex?" in prompt
    assert prompt.endswith(FAMILY_TEMPLATES[family].generation_prompt)


@pytest.mark.parametrize("family", FAMILIES)
def test_detect_family_from_shipped_template_and_from_vocabulary(family):
    assert detect_family(family_tokenizer(family)) == family
    if family in ("chatml", "llama3"):  # the LLaMA-2 vocabularies have no token of their own
        assert detect_family(family_tokenizer(family, template="")) == family


def test_detect_family_from_config_and_error_when_nothing_decides():
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    assert family_from_config(LlavaConfig(text_config=Qwen2Config())) == "chatml"
    assert family_from_config(LlavaConfig(text_config=MistralConfig())) == "mistral"
    assert family_from_config(LlavaConfig(text_config=LlamaConfig(vocab_size=128256))) == "llama3"
    assert family_from_config(LlavaConfig(text_config=LlamaConfig(vocab_size=32064))) == "vicuna"
    bare = family_tokenizer("vicuna", template="")
    assert detect_family(bare, LlavaConfig(text_config=LlamaConfig(vocab_size=32064))) == "vicuna"
    assert detect_family(family_tokenizer("mistral", template=""), LlavaConfig(text_config=MistralConfig())) == "mistral"
    with pytest.raises(ValueError, match="cannot tell the chat family"):
        detect_family(bare)


@pytest.mark.parametrize("family", FAMILIES)
def test_stop_token_ids(family):
    tokenizer = family_tokenizer(family)
    stop = FAMILY_TEMPLATES[family].stop_tokens[0]
    assert stop_token_ids(tokenizer, family) == [tokenizer.convert_tokens_to_ids(stop)]
    other = "llama3" if family == "chatml" else "chatml"
    with pytest.raises(ValueError, match="has no token"):
        stop_token_ids(tokenizer, other)


def test_attach_template_keeps_a_marked_template_unless_forced():
    marked = FAMILY_TEMPLATES["chatml"].chat_template.replace("<|im_start|>user", "<|im_start|>user ")
    processor = llava_processor(family_tokenizer("chatml", marked))
    attach_template(processor)
    assert processor.chat_template == marked
    attach_template(processor, force=True)
    assert processor.chat_template == FAMILY_TEMPLATES["chatml"].chat_template
    assert processor.tokenizer.chat_template == processor.chat_template


def test_image_token_can_be_another_string():
    spec = family_spec("chatml", "<img>")
    assert "'<img>'" in spec.chat_template and "'<image>'" not in spec.chat_template
    tokenizer = family_tokenizer("chatml", spec.chat_template)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)
    assert prompt == "<|im_start|>user\n<img><|im_end|>\n"
    with pytest.raises(ValueError, match="unknown chat family"):
        family_spec("alpaca")


def test_empty_assistant_mask_is_an_error():
    assert require_assistant_tokens(torch.tensor([0, 1, 1]), "sample a") == 2
    with pytest.raises(AssistantMaskError, match="sample b: the assistant mask covers no token"):
        require_assistant_tokens(torch.zeros(5, dtype=torch.long), "sample b")


def test_template_text_reads_processor_then_tokenizer_and_dicts():
    tokenizer = family_tokenizer("chatml")
    processor = llava_processor(tokenizer)
    assert template_text(processor) == SHIPPED_TEMPLATES["chatml"]
    tokenizer.chat_template = {"default": "X"}
    assert template_text(tokenizer) == "X"


TOKENIZERS = {family: family_tokenizer(family, FAMILY_TEMPLATES[family].chat_template) for family in FAMILIES}
WORDS = st.text(alphabet="abcdefgh XYZ0123456789.,?", min_size=1, max_size=16).map(str.strip).filter(bool)


@settings(max_examples=40, deadline=None)
@given(family=st.sampled_from(FAMILIES), turns=st.lists(st.tuples(WORDS, WORDS), min_size=1, max_size=3),
       system=st.one_of(st.none(), WORDS))
def test_mask_is_exact_for_every_conversation(family, turns, system):
    tokenizer = TOKENIZERS[family]
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    for question, answer in turns:
        messages += [{"role": "user", "content": [{"type": "text", "text": question}]},
                     {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    assert_mask_exact(tokenizer, out["input_ids"], out["assistant_masks"], [a for _, a in turns], family)


# ------------------------------------------------------------------ other model types: LLaVA-NeXT, OneVision
# Tiny configs built offline. Both use their PIL image processors (any-resolution tiling, no torchvision).
# LlavaOnevisionProcessor insists on a video processor, which needs torchvision, so the test builds it
# through a subclass that accepts none; images never touch the video path.

PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]


def vqa_samples() -> list[dict]:
    """Canonical samples on the two real head images: one non-square, one square, one with both."""
    def turn(role, *parts):
        return {"role": role, "content": list(parts)}

    def img(name):
        return {"type": "image", "modality": "sMRI", "image_path": f"vqa_rad_head/{name}"}

    def txt(text):
        return {"type": "text", "text": text}

    return [
        {"id": "q340", "conversations": [turn("user", img("synpic46720.jpg"), txt("Is the brain tissue ischemic?")),
                                         turn("assistant", txt("Yes"))], "metadata": {}},
        {"id": "q1572", "conversations": [turn("user", txt("MRI imaging modality used?"), img("synpic59536.jpg")),
                                          turn("assistant", txt("DWI"))], "metadata": {}},
        {"id": "pair", "conversations": [turn("user", img("synpic46720.jpg"), txt("Is the brain tissue ischemic?")),
                                         turn("assistant", txt("Yes")),
                                         turn("user", txt("Compare with this scan."), img("synpic59536.jpg")),
                                         turn("assistant", txt("DWI"))], "metadata": {}},
    ]


def llava_next(tmp_path):
    """A tiny LLaVA-NeXT (CLIP + Mistral, the llava-v1.6-mistral layout) saved as a checkpoint."""
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        MistralConfig,
    )

    tokenizer = family_tokenizer("mistral")
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                                 image_grid_pinpoints=PINPOINTS)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=tokenizer.chat_template)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32),
        text_config=MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="default", vision_feature_layer=-2)
    torch.manual_seed(0)
    LlavaNextForConditionalGeneration(config).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    return tmp_path


def llava_onevision():
    """A tiny LLaVA-OneVision (SigLIP + Qwen2, ChatML) in memory, with brainvlm's template attached."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    from brainvlm.model.loader import prepare_for_chat

    class ImageOnlyOnevisionProcessor(LlavaOnevisionProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    tokenizer = family_tokenizer("chatml")
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32},
                                                      crop_size={"height": 32, "width": 32},
                                                      image_grid_pinpoints=PINPOINTS)
    processor = ImageOnlyOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                            num_image_tokens=16, vision_feature_select_strategy="full",
                                            chat_template=tokenizer.chat_template)
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=32, patch_size=8, vision_use_head=False),
        text_config=Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="full", vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9")
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    prepare_for_chat(model, processor)
    return model, processor


def assert_same_as_torch_encoding(processor, sample, config) -> None:
    """brainvlm asks the processor for NumPy arrays (faster masks); the tensors equal asking for torch."""
    from brainvlm.model import collate

    messages = collate.to_hf_conversation(sample, config)
    for prompt_only in (False, True):
        theirs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt",
                                               add_generation_prompt=prompt_only,
                                               return_assistant_tokens_mask=not prompt_only)
        ours = collate._apply_template(processor, messages, sample["id"], prompt_only)
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


def check_model_type(model, processor, family: str, test_data) -> None:
    """Labels exact, preflight agrees with the vision path, and a padded batch runs forward and generates."""
    from brainvlm.model import collate, preflight

    config = collate.CollateConfig(image_root=test_data)
    samples = vqa_samples()
    table = preflight.preflight(samples, processor, model, config)
    assert (table["image_tokens"] == table["image_features"]).all() and (table["image_tokens"] > 0).all()
    encoded = collate.encode_sample(samples[2], processor, config)
    assert_same_as_torch_encoding(processor, samples[2], config)
    ids, labels = encoded["input_ids"].tolist(), encoded["labels"]
    assert_mask_exact(processor.tokenizer, ids, (labels != -100).long().tolist(), ["Yes", "DWI"], family)
    batch = collate.Collator(processor, config)(samples)
    with torch.no_grad():
        loss = model(**collate.model_inputs(batch), labels=batch["labels"]).loss
        prompts = collate.Collator(processor, config, prompt_only=True)(samples)
        out = model.generate(**collate.model_inputs(prompts), max_new_tokens=2, do_sample=False)
    assert torch.isfinite(loss) and out.shape[0] == 3


def test_llava_next_checkpoint_loads_ready_for_chat(tmp_path, test_data):
    from brainvlm.model import loader

    model, processor = loader.load(llava_next(tmp_path))
    assert model.config.model_type == "llava_next" and loader.model_family(model) == "mistral"
    assert type(processor.image_processor).__name__ == "LlavaNextImageProcessorPil"
    assert processor.tokenizer.pad_token == "</s>"  # the Mistral tokenizer had none
    stop = processor.tokenizer.convert_tokens_to_ids("</s>")
    assert stop in model.generation_config.eos_token_id
    pixels = collate_pixels(processor, test_data)
    assert pixels.dim() == 5 and pixels.shape[1] > 1  # any-resolution tiles, padded across images
    check_model_type(model, processor, "mistral", test_data)


def collate_pixels(processor, test_data) -> torch.Tensor:
    from brainvlm.model import collate

    return collate.Collator(processor, collate.CollateConfig(image_root=test_data))(vqa_samples()[:2])["pixel_values"]


def test_llava_onevision_single_and_multi_image(test_data):
    model, processor = llava_onevision()
    assert has_generation_markers(processor.chat_template)
    batch = collate_pixels(processor, test_data)
    assert batch.dim() == 5
    check_model_type(model, processor, "chatml", test_data)
