"""Pooled features of the frozen base model: shapes, the adapters left out, nearest neighbours."""

import numpy as np
import pytest
import torch
from PIL import Image

from brainvlm.model import features, lora, tiny


@pytest.fixture(scope="module")
def tiny_pair():
    return tiny.tiny_model(seed=0, vocab_texts=["a chest radiograph", "no pleural effusion"])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = folder / f"{i}.png"
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_image_features_are_one_row_per_image_and_independent_of_the_batch(tiny_pair, images):
    model, processor = tiny_pair
    whole = features.image_features(model, processor, images, batch_size=5, progress=False)
    pieces = features.image_features(model, processor, images, batch_size=2, progress=False)
    assert whole.shape == (5, model.config.vision_config.hidden_size) and whole.dtype == np.float32
    np.testing.assert_allclose(whole, pieces, rtol=1e-5, atol=1e-6)
    assert not np.allclose(whole[0], whole[1])  # different images, different features


def test_features_are_the_frozen_base_s_whatever_the_adapter(tiny_pair, images):
    model, processor = tiny_pair
    texts = ["a chest radiograph", "no pleural effusion"]
    before = features.image_features(model, processor, images, progress=False)
    text_before = features.text_features(model, processor.tokenizer, texts, progress=False)
    wrapped = lora.add_lora(model, r=4, alpha=8, vision="lora")
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.5)  # adapters that change every output
    np.testing.assert_allclose(features.image_features(wrapped, processor, images, progress=False), before,
                               rtol=1e-5, atol=1e-6)
    pixels = processor.image_processor([Image.open(p).convert("RGB") for p in images], return_tensors="pt")
    with torch.no_grad():  # with the adapters active the tower's output does change
        active = features.vision_tower(wrapped.get_base_model())(pixels["pixel_values"]).last_hidden_state.mean(1)
    assert not np.allclose(active.numpy(), before, atol=1e-3)
    text_after = features.text_features(wrapped, processor.tokenizer, texts, progress=False)
    np.testing.assert_allclose(text_after, text_before, rtol=1e-5, atol=1e-6)
    assert text_before.shape == (2, model.config.text_config.hidden_size)


def test_nearest_is_by_cosine():
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    query = np.array([[10.0, 0.1], [0.2, 3.0], [2.0, 2.1]])  # scale does not matter, direction does
    assert features.nearest(query, reference).tolist() == [0, 1, 2]


def test_a_model_without_a_vision_tower_is_named():
    with pytest.raises(ValueError, match="has no vision_tower"):
        features.vision_tower(torch.nn.Linear(2, 2))


def test_grid_features_keep_where_things_are(tiny_pair, tmp_path):
    model, processor = tiny_pair
    hidden = model.config.vision_config.hidden_size
    corner = np.zeros((32, 32), dtype=np.uint8)
    corner[:8, :8] = 255  # a bright square in one corner ...
    other = np.zeros((32, 32), dtype=np.uint8)
    other[-8:, -8:] = 255  # ... and in the opposite one
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, pixels in zip(paths, (corner, other)):
        Image.fromarray(pixels).save(path)
    cells = features.image_features(model, processor, paths, progress=False, grid=4)
    assert cells.shape == (2, 16 * hidden)
    mean = features.image_features(model, processor, paths, progress=False)
    np.testing.assert_allclose(cells.reshape(2, 16, hidden).mean(1), mean, rtol=1e-4, atol=1e-5)
    halves = features.image_features(model, processor, paths, progress=False, grid=2)
    np.testing.assert_allclose(halves.reshape(2, 4, hidden).mean(1), mean, rtol=1e-4, atol=1e-5)
    # the cell holding the square differs between the two images more than their means do
    assert np.linalg.norm(cells[0, :hidden] - cells[1, :hidden]) > np.linalg.norm(mean[0] - mean[1])
    with pytest.raises(ValueError, match="finer than"):
        features.image_features(model, processor, paths, progress=False, grid=5)
    with pytest.raises(ValueError, match="at least 1"):
        features.image_features(model, processor, paths, progress=False, grid=0)
