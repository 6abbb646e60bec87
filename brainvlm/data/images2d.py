"""A synthetic 2D image kit: seeded shapes, smooth textures and noise, and deterministic PNG writing.

Images are float arrays in [0, 1], (height, width), drawn on a pixel grid with coordinates in [0, 1]
(``y`` down, ``x`` right), so the same drawing works at any size. ``write_png`` writes 8-bit greyscale
PNGs without metadata, so the same array gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)`` in [0, 1] of a ``size`` x ``size`` image."""
    centres = (np.arange(size) + 0.5) / size
    return np.meshgrid(centres, centres, indexing="ij")


def ellipse(size: int, cy: float, cx: float, ry: float, rx: float, soft: float = 0.02) -> np.ndarray:
    """A filled ellipse (1 inside, 0 outside) with an edge blurred over ``soft`` of the image."""
    y, x = grid(size)
    distance = np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
    edge = max(soft / max(min(ry, rx), 1e-6), 1e-6)
    return np.clip((1.0 - distance) / edge + 0.5, 0.0, 1.0)


def band(size: int, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
    """A filled rectangle ``y0 <= y < y1``, ``x0 <= x < x1``."""
    y, x = grid(size)
    return ((y >= y0) & (y < y1) & (x >= x0) & (x < x1)).astype(np.float64)


def line(size: int, y0: float, x0: float, y1: float, x1: float, width: float = 0.02) -> np.ndarray:
    """A straight line segment of ``width`` (fraction of the image) from ``(y0, x0)`` to ``(y1, x1)``."""
    y, x = grid(size)
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((y - y0) * dy + (x - x0) * dx) / max(dy * dy + dx * dx, 1e-12), 0.0, 1.0)
    distance = np.hypot(y - (y0 + t * dy), x - (x0 + t * dx))
    return (distance <= width / 2).astype(np.float64)


def smooth_noise(size: int, rng: np.random.Generator, scale: float = 0.08) -> np.ndarray:
    """Smooth random texture in [0, 1]: Gaussian noise blurred over ``scale`` of the image, rescaled."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=max(scale * size, 0.5))
    low, high = field.min(), field.max()
    return (field - low) / (high - low) if high > low else np.zeros_like(field)


def write_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a [0, 1] array as an 8-bit greyscale PNG (clipped; no metadata: same array, same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.floor(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path, format="PNG", optimize=False)
    return path
