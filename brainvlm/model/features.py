"""Pooled features of a frozen base model: images (its vision tower) and text (its language model).

What the studies' non-generative baselines and routers share: nearest-neighbour report retrieval (notebook
05), prompt keys of task adapters (notebook 06) and a multi-label concept classifier (notebook 08).

- **Image features**: the vision tower's hidden states at the layer the LLaVA config feeds the projector
  (``vision_feature_layer``), without the CLS token when the config drops it (``"default"`` strategy), mean
  over patches (and over the crops of any-resolution processors), one row per image. With ``grid=g`` the
  square patch grid is averaged into g x g cells instead and the cells are concatenated (``g * g * hidden``
  columns): the mean over every patch keeps *what* the image shows but not *where*, so a large object in a
  corner can outweigh the anatomy in the middle; the cells keep the layout (``grid=1`` is the plain mean).
- **Text features**: the language model's last hidden state, mean over the non-padding tokens.

Features are computed under ``torch.no_grad`` with the model in eval mode and returned as float32 NumPy
arrays, so scikit-learn takes them as they are. A PEFT-wrapped model is read through its base model with
the adapters disabled: the features are the frozen base's, whatever was trained on top.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from brainvlm.data.views import load_image


@contextlib.contextmanager
def _frozen(model: Any) -> Iterator[Any]:
    """The transformers model under any PEFT wrapper, in eval mode with its adapters disabled and no
    gradients; its training mode is restored afterwards."""
    wrapped = hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")
    base = model.get_base_model() if wrapped else model
    was_training = base.training
    base.eval()
    try:
        with (model.disable_adapter() if wrapped else contextlib.nullcontext()), torch.no_grad():
            yield base
    finally:
        base.train(was_training)


def vision_tower(model: Any) -> Any:
    """The vision encoder of a LLaVA-family model (``model.model.vision_tower`` or ``model.vision_tower``)."""
    for owner in (getattr(model, "model", None), model):
        tower = getattr(owner, "vision_tower", None)
        if tower is not None:
            return tower
    raise ValueError(f"{type(model).__name__} has no vision_tower; image features need a LLaVA-family model")


def _pool_images(hidden: torch.Tensor, config: Any, crops: int, grid: int = 1) -> torch.Tensor:
    if getattr(config, "vision_feature_select_strategy", "full") == "default":
        hidden = hidden[:, 1:]  # LLaVA drops the CLS token before the projector
    if grid == 1:
        pooled = hidden.float().mean(dim=1)
    else:
        pooled = _grid_cells(hidden.float(), grid)
    return pooled.reshape(-1, crops, pooled.shape[-1]).mean(dim=1)


def _grid_cells(hidden: torch.Tensor, grid: int) -> torch.Tensor:
    """(n, patches, hidden) -> (n, grid * grid * hidden): the square patch grid averaged into grid x grid cells."""
    n, patches, width = hidden.shape
    side = math.isqrt(patches)
    if side * side != patches and math.isqrt(patches - 1) ** 2 == patches - 1:
        hidden, side = hidden[:, 1:], math.isqrt(patches - 1)  # a CLS token kept by the "full" strategy
    if side * side != hidden.shape[1]:
        raise ValueError(f"{patches} vision tokens are not a square grid of patches; use grid=1 (the mean)")
    if grid > side:
        raise ValueError(f"grid={grid} is finer than the vision tower's {side} x {side} patches")
    cells = hidden.reshape(n, side, side, width).permute(0, 3, 1, 2)
    return torch.nn.functional.adaptive_avg_pool2d(cells, grid).permute(0, 2, 3, 1).reshape(n, -1)


def image_features(model: Any, processor: Any, paths: Sequence[str | Path], batch_size: int = 32,
                   progress: bool = True, grid: int = 1) -> np.ndarray:
    """Pooled vision features of the images at ``paths`` (PNG/JPEG or NIfTI): shape (n, hidden), the mean
    over patches, or (n, grid * grid * hidden) with ``grid`` > 1, the patch grid's cell means (module docstring)."""
    if grid < 1:
        raise ValueError(f"grid must be at least 1, got {grid}")
    rows = []
    with _frozen(model) as base:
        tower = vision_tower(base)
        layer = getattr(base.config, "vision_feature_layer", -1)
        layers = layer if isinstance(layer, list) else [layer]
        device, dtype = next(tower.parameters()).device, next(tower.parameters()).dtype
        for start in tqdm(range(0, len(paths), batch_size), desc="image features", disable=not progress):
            images = [load_image(p) for p in paths[start:start + batch_size]]
            pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
            crops = pixels.shape[1] if pixels.dim() == 5 else 1
            pixels = pixels.reshape(-1, *pixels.shape[-3:]).to(device=device, dtype=dtype)
            out = tower(pixels, output_hidden_states=True)
            hidden = torch.cat([out.hidden_states[i] for i in layers], dim=-1)
            rows.append(_pool_images(hidden, base.config, crops, grid).cpu().numpy())
    width = rows[0].shape[1] if rows else 0
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, width), dtype=np.float32)


def text_features(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32,
                  progress: bool = True) -> np.ndarray:
    """Mean-pooled last hidden states of the language model over each text's tokens, shape (n, hidden)."""
    rows = []
    with _frozen(model) as base:
        language = base.get_decoder() if hasattr(base, "get_decoder") else base.model.language_model
        device = next(language.parameters()).device
        for start in tqdm(range(0, len(texts), batch_size), desc="text features", disable=not progress):
            batch = tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True)
            mask = batch["attention_mask"].to(device)
            out = language(input_ids=batch["input_ids"].to(device), attention_mask=mask)
            hidden = out.last_hidden_state.float() * mask[..., None]
            rows.append((hidden.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)).cpu().numpy())
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, 0), dtype=np.float32)


def nearest(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each query row, the index of the reference row with the highest cosine similarity."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.argmax(unit(query) @ unit(reference).T, axis=1)
