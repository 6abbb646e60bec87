"""Collation of canonical samples on the tiny default: labels, images, padding, truncation, preflight."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from brainvlm.model import collate, loader, preflight, templates
from brainvlm.model.collate import CollateConfig, Collator, TruncationError
from brainvlm.model.preflight import PreflightError
from brainvlm.model.tiny import build_tiny_model

torch.set_num_threads(1)
TOKENS_PER_IMAGE = 16  # (32 / 8) ** 2
END = "<|im_end|>"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, processor = loader.load(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))
    return model, processor


@pytest.fixture(scope="module")
def image_root(tmp_path_factory, test_data):
    """PNGs of different sizes and the two real VQA-RAD head images."""
    root = tmp_path_factory.mktemp("images")
    for i, shape in enumerate([(40, 40), (48, 32), (24, 56), (33, 33)]):
        pixels = np.random.default_rng(i).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"sub-{i}.png")
    (root / "vqa").mkdir()
    for path in (test_data / "vqa_rad_head").glob("*.jpg"):
        shutil.copy(path, root / "vqa" / path.name)
    return root


def image(path: str) -> dict:
    return {"type": "image", "modality": "sMRI", "image_path": path}


def comparison(sample_id: str, queries: list[str], answer: str = "female", reference: str = "sub-0.png") -> dict:
    """The canonical reference-augmented comparison sample, with any number of query images."""
    return {
        "id": sample_id, "task": "comparison_categorical",
        "conversations": [
            {"role": "user", "content": [{"type": "text", "text": "Here is a T1-weighted scan of a male participant "
                                          "(reference)."}, image(reference)]},
            {"role": "assistant", "content": [{"type": "text", "text": "Understood."}]},
            {"role": "user", "content": [{"type": "text", "text": "Compare this scan with the reference."}]
             + [image(q) for q in queries] + [{"type": "text", "text": "What is the sex?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "metadata": {"split": "train", "target": answer, "query_subject": sample_id},
    }


def runs(values: list[int], keep: list[bool]) -> list[list[int]]:
    out, current = [], []
    for value, flag in zip(values, keep):
        if flag:
            current.append(value)
        elif current:
            out, current = out + [current], []
    return out + ([current] if current else [])


def test_encoding_equals_the_processors_torch_encoding(tiny, image_root):
    from test_templates import assert_same_as_torch_encoding

    _, processor = tiny
    for sample in (comparison("s1", ["sub-1.png"]), comparison("s2", ["sub-2.png", "sub-3.png"], answer="male")):
        assert_same_as_torch_encoding(processor, sample, CollateConfig(image_root=image_root))


def test_labels_are_exactly_the_replies_and_their_end_tokens(tiny, image_root):
    _, processor = tiny
    encoded = collate.encode_sample(comparison("s1", ["sub-1.png"]), processor, CollateConfig(image_root=image_root))
    ids, labels = encoded["input_ids"], encoded["labels"]
    assert ids.dim() == 1 and ids.shape == labels.shape == encoded["attention_mask"].shape
    labelled = (labels != -100).tolist()
    assert torch.equal(labels[labels != -100], ids[labels != -100])
    pieces = [processor.tokenizer.decode(run) for run in runs(ids.tolist(), labelled)]
    assert pieces == ["Understood." + END, "female" + END]
    for run, text in zip(runs(ids.tolist(), labelled), ["Understood.", "female"]):  # token by token
        assert run == processor.tokenizer.encode(text, add_special_tokens=False) + [processor.tokenizer.eos_token_id]
    assert (labels[ids == processor.image_token_id] == -100).all()
    assert encoded["id"] == "s1" and encoded["metadata"]["query_subject"] == "s1" and encoded["n_images"] == 2


def test_images_are_passed_in_conversation_order(tiny, image_root):
    _, processor = tiny
    sample = comparison("s3", ["sub-1.png", "sub-2.png"], reference="sub-3.png")
    encoded = collate.encode_sample(sample, processor, CollateConfig(image_root=image_root))
    assert encoded["pixel_values"].shape == (3, 3, 32, 32)
    for k, name in enumerate(["sub-3.png", "sub-1.png", "sub-2.png"]):
        alone = processor.image_processor(Image.open(image_root / name).convert("RGB"), return_tensors="pt")
        assert torch.equal(encoded["pixel_values"][k], alone["pixel_values"][0])
    ids = encoded["input_ids"]
    assert int((ids == processor.image_token_id).sum()) == 3 * TOKENS_PER_IMAGE
    text = processor.tokenizer.decode(ids)
    block = "<image>" * TOKENS_PER_IMAGE
    assert f"Compare this scan with the reference.\n{block}\n{block}\nWhat is the sex?" in text


def test_batch_pads_to_the_longest_sample_and_keeps_ids_and_metadata(tiny, image_root):
    _, processor = tiny
    samples = [comparison("a", ["sub-1.png"]), comparison("b", ["sub-1.png", "sub-2.png", "sub-3.png"], "male"),
               comparison("c", [])]
    config = CollateConfig(image_root=image_root)
    lengths = collate.token_lengths(samples, processor, config)
    batch = Collator(processor, config)(samples)
    assert batch["input_ids"].shape == batch["labels"].shape == (3, max(lengths))
    assert batch["pixel_values"].shape == (2 + 4 + 1, 3, 32, 32)
    assert batch["ids"] == ["a", "b", "c"]
    assert [m["query_subject"] for m in batch["metadata"]] == ["a", "b", "c"]
    pad = processor.tokenizer.pad_token_id
    for row, length in enumerate(lengths):  # right padding for training
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (max(lengths) - length)
        assert (batch["input_ids"][row, length:] == pad).all() and (batch["labels"][row, length:] == -100).all()
    rounded = Collator(processor, CollateConfig(image_root=image_root, pad_to_multiple_of=64))(samples)
    assert rounded["input_ids"].shape[1] == 64 * -(-max(lengths) // 64)


def test_batch_trains_the_tiny_model(tiny, image_root):
    model, processor = tiny
    batch = Collator(processor, CollateConfig(image_root=image_root))(
        [comparison("a", ["sub-1.png"]), comparison("b", ["sub-2.png", "sub-3.png"], "male")])
    with torch.no_grad():
        loss = model(**collate.model_inputs(batch), labels=batch["labels"]).loss
    assert torch.isfinite(loss) and 5.0 < float(loss) < 8.0  # random init: about log(vocab size)
    assert set(collate.model_inputs(batch)) == {"input_ids", "attention_mask", "pixel_values"}


def test_too_long_is_an_error_or_a_counted_drop(tiny, image_root):
    _, processor = tiny
    short, long = comparison("short", []), comparison("long", ["sub-1.png", "sub-2.png"])
    lengths = collate.token_lengths([short, long], processor, CollateConfig(image_root=image_root))
    limit = lengths[1] - 1
    with pytest.raises(TruncationError, match=rf"sample long: {lengths[1]} tokens > max_length {limit} "
                                              rf"\(48 image tokens from 3 images, 6 answer tokens\)"):
        Collator(processor, CollateConfig(image_root=image_root, max_length=limit))([short, long])
    dropping = Collator(processor, CollateConfig(image_root=image_root, max_length=limit, on_truncation="drop"))
    batch = dropping([short, long])
    assert batch["ids"] == ["short"] and batch["input_ids"].shape == (1, lengths[0])
    assert batch["pixel_values"].shape[0] == 1
    assert dropping([long]) is None
    assert dropping.dropped == ["long", "long"]
    fits = Collator(processor, CollateConfig(image_root=image_root, max_length=lengths[1]))([long])
    assert fits["input_ids"].shape[1] == lengths[1]


def test_prompt_only_batch_is_left_padded_and_ends_with_the_generation_prompt(tiny, image_root):
    model, processor = tiny
    samples = [comparison("a", ["sub-1.png"]), comparison("b", ["sub-1.png", "sub-2.png"], "male")]
    collator = Collator(processor, CollateConfig(image_root=image_root), prompt_only=True)
    batch = collator(samples)
    assert collator.padding_side == "left" and "labels" not in batch
    assert batch["targets"] == ["female", "male"]
    prompt = processor.tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    assert all(row[-len(prompt):].tolist() == prompt for row in batch["input_ids"])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()
    assert "female" not in processor.tokenizer.decode(batch["input_ids"][0])
    with torch.no_grad():
        out = model.generate(**collate.model_inputs(batch), max_new_tokens=3, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)


def test_real_images_2d_and_nifti(tiny, image_root, test_data):
    _, processor = tiny
    vqa = {"id": "vqa-340", "conversations": [
        {"role": "user", "content": [image("vqa/synpic46720.jpg"), {"type": "text", "text": "Is the brain tissue "
                                                                     "ischemic?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Yes"}]}], "metadata": {"domain": "head"}}
    encoded = collate.encode_sample(vqa, processor, CollateConfig(image_root=image_root))
    assert encoded["pixel_values"].shape == (1, 3, 32, 32) and encoded["pixel_values"].std() > 0.1
    nifti = comparison("t1", ["brain_t1/ch2bet.nii.gz"], reference="brain_t1/ch2bet.nii.gz")
    encoded = collate.encode_sample(nifti, processor, CollateConfig(image_root=test_data))
    pixels = encoded["pixel_values"]
    assert pixels.shape == (2, 3, 32, 32) and torch.equal(pixels[0], pixels[1])
    assert pixels.std() > 0.1 and pixels.min() < -0.9  # a brain on a black background


def test_image_path_errors_name_the_sample_and_the_json_path(tiny, image_root):
    _, processor = tiny
    config = CollateConfig(image_root=image_root)
    with pytest.raises(FileNotFoundError, match=r"sample m: \$\.conversations\[2\]\.content\[1\]\.image_path "
                                                r"'nope\.png' is not a file"):
        collate.encode_sample(comparison("m", ["nope.png"]), processor, config)
    with pytest.raises(ValueError, match=r"sample e: .*'\.\./sub-1\.png' leaves the image root"):
        collate.encode_sample(comparison("e", ["../sub-1.png"]), processor, config)
    with pytest.raises(ValueError, match="sample x: the processor cannot encode it"):
        bad = comparison("x", ["sub-1.png"])
        bad["conversations"][0]["content"][0]["text"] += " <image>"
        collate.encode_sample(bad, processor, config)
    with pytest.raises(templates.AssistantMaskError, match="sample q: the assistant mask covers no token"):
        collate.encode_sample({**comparison("q", []), "conversations": comparison("q", [])["conversations"][:1]},
                              processor, config)


def test_preflight_table_on_good_samples(tiny, image_root):
    model, processor = tiny
    samples = [comparison(f"s{i}", ["sub-1.png"] * (i % 3)) for i in range(12)]
    table = preflight.preflight(samples, processor, model, CollateConfig(image_root=image_root, max_length=80), n=4)
    assert table["id"].tolist() == ["s0", "s4", "s7", "s11"]
    assert (table["image_tokens"] == TOKENS_PER_IMAGE * table["image_parts"]).all()
    assert (table["image_features"] == table["image_tokens"]).all()
    assert table["image_parts"].tolist() == [1, 2, 2, 3]
    assert (table["assistant_tokens"] == 6).all()
    assert table["fits"].tolist() == [(length <= 80) for length in table["length"]]


def test_preflight_catches_an_image_token_in_text(tiny, image_root):
    model, processor = tiny
    bad = comparison("bad-1", ["sub-1.png"])
    bad["conversations"][2]["content"][0]["text"] = "Compare <image> with the reference."
    with pytest.raises(PreflightError, match=r"sample bad-1: 2 image parts but 3 image token strings '<image>' "
                                             r"in the rendered conversation \(1 inside text parts\)"):
        preflight.preflight([comparison("ok", []), bad], processor, model, CollateConfig(image_root=image_root))


def test_preflight_catches_tokens_that_do_not_match_features(tiny, image_root):
    model, processor = tiny
    wrong = copy.deepcopy(processor)
    wrong.num_additional_image_tokens = 1  # as if the vision tower had a CLS token
    with pytest.raises(PreflightError, match=r"sample w: image features and image tokens do not match: image "
                                             r"parts 2, image tokens 34, image features 32"):
        preflight.preflight([comparison("w", ["sub-1.png"])], wrong, model, CollateConfig(image_root=image_root))


def test_preflight_catches_an_empty_assistant_mask_and_a_bad_template(tiny, image_root):
    model, processor = tiny
    no_answer = comparison("n", [])
    no_answer["conversations"] = no_answer["conversations"][:1]
    with pytest.raises(PreflightError, match="sample n: the assistant mask covers no token"):
        preflight.preflight([no_answer], processor, model, CollateConfig(image_root=image_root))
    unmarked = copy.deepcopy(processor)
    unmarked.chat_template = unmarked.chat_template.replace("{%- generation -%}", "").replace(
        "{%- endgeneration -%}", "")
    with pytest.raises(PreflightError, match="needs {% generation %}"):
        preflight.preflight([comparison("u", [])], unmarked, model, CollateConfig(image_root=image_root))


def test_config_checks(image_root):
    with pytest.raises(ValueError, match="on_truncation='cut'"):
        CollateConfig(image_root, on_truncation="cut")
    with pytest.raises(ValueError, match="max_length=0"):
        CollateConfig(image_root, max_length=0)
    assert CollateConfig(image_root, view={"view": "coronal", "size": 48}).view.size == 48
