"""The Collator's in-memory cache of encoded samples: same batches as without it, keyed by content, bounded."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from brainvlm.model import collate, tiny
from brainvlm.model.collate import CollateConfig, Collator

torch.set_num_threads(1)
TENSOR_KEYS = ("input_ids", "attention_mask", "labels", "pixel_values")


@pytest.fixture(scope="module")
def processor():
    return tiny.tiny_model()[1]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"sub-{i}.png")
    return root


def sample(sample_id: str, query: str, answer: str) -> dict:
    return {"id": sample_id, "task": "comparison_categorical", "metadata": {"split": "train"},
            "conversations": [
                {"role": "user", "content": [{"type": "text", "text": "Here is a male participant (reference)."},
                                             {"type": "image", "image_path": "sub-0.png"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Understood."}]},
                {"role": "user", "content": [{"type": "text", "text": "What is the sex?"},
                                             {"type": "image", "image_path": query}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]}]}


POOL = [sample("a", "sub-1.png", "female"), sample("b", "sub-2.png", "male"),
        sample("c", "sub-1.png", "Based on the comparison, the subject is male."), sample("d", "sub-2.png", "no")]


def count_encodes(monkeypatch) -> list[str]:
    """Record the id of every sample that goes through ``encode_sample``."""
    calls: list[str] = []
    original = collate.encode_sample

    def counting(one, *args, **kwargs):
        calls.append(one["id"])
        return original(one, *args, **kwargs)

    monkeypatch.setattr(collate, "encode_sample", counting)
    return calls


def assert_same_batch(a: dict, b: dict) -> None:
    for key in TENSOR_KEYS:
        assert a[key].shape == b[key].shape and torch.equal(a[key], b[key]), key
    assert a["ids"] == b["ids"] and a["metadata"] == b["metadata"]


def test_later_epochs_come_from_memory_and_equal_fresh_batches(processor, image_root, monkeypatch):
    config = CollateConfig(image_root=image_root)
    cached, fresh = Collator(processor, config), Collator(processor, config, cache_mb=0)
    calls = count_encodes(monkeypatch)
    encoded_by_cached = []
    for order in ([0, 1, 2, 3], [3, 1, 0, 2], [2, 0, 3, 1]):
        n_calls = len(calls)
        batch = cached([POOL[i] for i in order])
        encoded_by_cached.append(calls[n_calls:])
        n_calls = len(calls)
        assert_same_batch(batch, fresh([POOL[i] for i in order]))
        assert len(calls) == n_calls + 4  # the uncached collator encodes every sample every time
    assert encoded_by_cached == [["a", "b", "c", "d"], [], []]


def test_an_edited_sample_with_the_same_id_is_encoded_again(processor, image_root, monkeypatch):
    collator = Collator(processor, CollateConfig(image_root=image_root))
    before = collator([POOL[0]])
    edited = copy.deepcopy(POOL[0])
    edited["conversations"][3]["content"][0]["text"] = "Based on the comparison, the subject is male."
    calls = count_encodes(monkeypatch)
    after = collator([edited])
    assert calls == ["a"] and after["input_ids"].shape[1] > before["input_ids"].shape[1]
    assert_same_batch(after, Collator(processor, CollateConfig(image_root=image_root), cache_mb=0)([edited]))


def test_the_cache_stops_filling_at_its_budget(processor, image_root, monkeypatch):
    one = collate.encode_sample(POOL[0], processor, CollateConfig(image_root=image_root))
    size = sum(v.numel() * v.element_size() for v in one.values() if torch.is_tensor(v))
    collator = Collator(processor, CollateConfig(image_root=image_root), cache_mb=1.5 * size / 2 ** 20)
    calls = count_encodes(monkeypatch)
    collator(POOL[:2])
    collator(POOL[:2])
    assert calls == ["a", "b", "b"]  # a fits and is kept; b does not fit beside it
    assert 0 <= collator.cache_left < size


def test_dropped_samples_are_recorded_every_time(processor, image_root):
    config = CollateConfig(image_root=image_root, max_length=60, on_truncation="drop")
    collator = Collator(processor, config)
    short_enough = collate.token_lengths(POOL[:1], processor, config)[0] <= 60
    assert not short_enough
    assert collator(POOL[:1]) is None and collator(POOL[:1]) is None
    assert collator.dropped == ["a", "a"]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=4), min_size=1, max_size=4))
def test_any_sequence_of_batches_matches_uncached_collation(processor, image_root, batches):
    config = CollateConfig(image_root=image_root)
    cached = Collator(processor, config)
    for picks in batches:
        samples = [POOL[i] for i in picks]
        assert_same_batch(cached(samples), Collator(processor, config, cache_mb=0)(samples))
