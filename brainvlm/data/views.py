"""2D views of brain volumes, and the one cached entry point from an image part to pixels.

One image part of a sample becomes pixels in three steps: ``load_volume`` and ``preprocess_volume``
(:mod:`brainvlm.data.volumes`), then ``render_view``: one slice, the three orthogonal slices as R/G/B,
or a montage -> (size, size, 3) uint8. ``load_view`` runs the three and keeps the result in a
``VolumeCache`` when one is given; ``load_image`` also reads 2D files.

Display convention: anterior (axial) or superior (sagittal, coronal) at the top, the subject's left on
the image's left (neurological), non-square slices padded to square before resizing.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from brainvlm.data.volume_cache import VolumeCache
from brainvlm.data.volumes import (
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    PREPROCESS_VERSION,
    check_file,
    check_modality,
    file_suffix,
    load_volume,
    preprocess_volume,
)

VIEWS = ("axial", "coronal", "sagittal", "slice", "orthogonal", "montage")
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


@dataclass(frozen=True)
class ViewConfig:
    """How a volume becomes one 2D RGB image.

    Args:
        view: ``axial``/``coronal``/``sagittal`` (one slice), ``slice`` (one slice on ``axis``),
            ``orthogonal`` (R=sagittal, G=coronal, B=axial) or ``montage`` (k slices on ``axis``).
        size: output height and width in pixels.
        axis: ``sagittal``/``coronal``/``axial`` or ``0``/``1``/``2`` for ``slice`` and ``montage``
            (default axial); for a named view it must be None or agree with the name.
        index: a float in [0, 1] is a fraction of the axis (0.5 = middle); an int is a slice index.
        k: number of evenly spaced slices in a montage.
        target_shape: grid the volume is resampled to (linear), or None to keep the file's grid.
        fmri_reduce: ``mean`` over time, or a volume index written as a string (``"0"``).
    """

    view: str = "axial"
    size: int = 32
    axis: str | None = None
    index: float = 0.5
    k: int = 9
    target_shape: tuple[int, int, int] | None = (64, 64, 64)
    fmri_reduce: str = "mean"

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"ViewConfig.view={self.view!r}: use one of {VIEWS}")
        if not isinstance(self.size, int) or self.size < 1 or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"ViewConfig size={self.size!r}, k={self.k!r}: both must be positive ints")
        view_axis = AXES.get(self.view)
        if self.axis is not None and view_axis is not None and axis_number(self.axis) != view_axis:
            raise ValueError(f"ViewConfig view={self.view!r} with axis={self.axis!r}: use view='slice'")
        axis_number(self.axis if self.axis is not None else "axial")
        _check_index(self.index)
        if self.target_shape is not None:
            shape = tuple(int(n) for n in self.target_shape)
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(f"ViewConfig.target_shape={self.target_shape!r}: need 3 positive ints")
            object.__setattr__(self, "target_shape", shape)  # YAML gives lists; keys need one form
        object.__setattr__(self, "fmri_reduce", str(self.fmri_reduce))
        if self.fmri_reduce != "mean" and not self.fmri_reduce.isdigit():
            raise ValueError(f"ViewConfig.fmri_reduce={self.fmri_reduce!r}: use 'mean' or an index like '0'")

    @property
    def view_axis(self) -> int:
        """Axis of a single-slice or montage view (0 sagittal, 1 coronal, 2 axial)."""
        return AXES.get(self.view, axis_number(self.axis if self.axis is not None else "axial"))


def axis_number(axis: str | int) -> int:
    """0, 1 or 2 from an axis name (sagittal/coronal/axial) or number."""
    if isinstance(axis, str) and axis in AXES:
        return AXES[axis]
    if str(axis) in ("0", "1", "2"):
        return int(axis)
    raise ValueError(f"axis {axis!r}: use one of {tuple(AXES)} or 0, 1, 2")


def _check_index(index: float) -> None:
    if isinstance(index, bool) or not isinstance(index, (int, float)):
        raise TypeError(f"slice index {index!r}: a float fraction in [0, 1] or an int slice index")
    if isinstance(index, float) and not 0.0 <= index <= 1.0:
        raise ValueError(f"slice fraction {index}: must lie in [0, 1] (pass an int for a slice index)")


def slice_index(n: int, index: float) -> int:
    """Slice number on an axis of length ``n`` from a fraction (float) or an index (int, may be negative)."""
    _check_index(index)
    if isinstance(index, float):
        return math.floor(index * (n - 1) + 0.5)
    if not -n <= index < n:
        raise IndexError(f"slice index {index} is outside an axis of length {n}")
    return index % n


# ---------------------------------------------------------------- views


def extract_slice(volume: np.ndarray, axis: str | int, index: float = 0.5) -> np.ndarray:
    """One 2D slice of a RAS volume in display orientation (see the module docstring)."""
    axis = axis_number(axis)
    position = slice_index(volume.shape[axis], index)
    return np.rot90(np.take(volume, position, axis=axis))


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Pad a 2D float image to a centred square with zeros, then resize to (size, size) bilinearly."""
    height, width = image.shape
    side = max(height, width)
    if height != width:
        padded = np.zeros((side, side), dtype=np.float32)
        top, left = (side - height) // 2, (side - width) // 2
        padded[top:top + height, left:left + width] = image
        image = padded
    if side == size:
        return np.asarray(image, dtype=np.float32)
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Map [0, 1] to 0..255 (values outside are clipped)."""
    return np.floor(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _grey_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(to_uint8(image)[:, :, None], 3, axis=2)


def slice_view(volume: np.ndarray, axis: str | int, index: float, size: int) -> np.ndarray:
    """One slice as a grey (size, size, 3) uint8 image."""
    return _grey_rgb(resize_square(extract_slice(volume, axis, index), size))


def orthogonal_view(volume: np.ndarray, size: int, index: float = 0.5) -> np.ndarray:
    """Sagittal, coronal and axial slices at ``index`` as the R, G and B channels of one image."""
    channels = [to_uint8(resize_square(extract_slice(volume, axis, index), size)) for axis in (0, 1, 2)]
    return np.stack(channels, axis=2)


def montage_grid(k: int) -> tuple[int, int]:
    """(rows, cols) of the smallest near-square grid holding k tiles, cols >= rows."""
    cols = math.ceil(math.sqrt(k))
    return math.ceil(k / cols), cols


def montage_view(volume: np.ndarray, axis: str | int, k: int, size: int) -> np.ndarray:
    """k evenly spaced slices (ends excluded) tiled row by row, centred in a (size, size, 3) image."""
    rows, cols = montage_grid(k)
    tile = size // cols
    if tile < 1:
        raise ValueError(f"montage of k={k} slices needs size >= {cols}, got size={size}")
    axis = axis_number(axis)
    n = volume.shape[axis]
    canvas = np.zeros((size, size), dtype=np.float32)
    top, left = (size - rows * tile) // 2, (size - cols * tile) // 2
    for i in range(k):
        position = math.floor((i + 1) * n / (k + 1))
        image = resize_square(extract_slice(volume, axis, min(position, n - 1)), tile)
        row, col = divmod(i, cols)
        canvas[top + row * tile: top + (row + 1) * tile, left + col * tile: left + (col + 1) * tile] = image
    return _grey_rgb(canvas)


def render_view(volume: np.ndarray, config: ViewConfig) -> np.ndarray:
    """A preprocessed volume (values in [0, 1]) as the (size, size, 3) uint8 image ``config`` asks for."""
    if config.view == "orthogonal":
        return orthogonal_view(volume, config.size, config.index)
    if config.view == "montage":
        return montage_view(volume, config.view_axis, config.k, config.size)
    return slice_view(volume, config.view_axis, config.index, config.size)


# ---------------------------------------------------------------- entry points


def _volume_params(modality: str, config: ViewConfig) -> dict:
    return {"modality": modality, "target_shape": config.target_shape, "fmri_reduce": config.fmri_reduce,
            "version": PREPROCESS_VERSION, "kind": "volume"}


@functools.lru_cache(maxsize=256)  # a pure function of immutable inputs; saves a third of a cache hit
def _view_params(modality: str, config: ViewConfig, index_type: type) -> str:
    """JSON of everything a view depends on. ``index_type`` keeps ViewConfig(index=1) (slice 1) and
    ViewConfig(index=1.0) (last slice) apart: they compare and hash equal."""
    return json.dumps({**asdict(config), **_volume_params(modality, config), "kind": "view"}, sort_keys=True)


def _preprocessed(path: Path, modality: str, config: ViewConfig, cache: VolumeCache | None) -> np.ndarray:
    """Load + preprocess, through the cache's volume store when it keeps volumes."""
    keep = cache is not None and cache.keep_volumes
    key = cache.key(path, _volume_params(modality, config)) if keep else ""
    volume = cache.load(key, kind="volumes") if keep else None
    if volume is None:
        raw = load_volume(path, modality, config.fmri_reduce)
        volume = preprocess_volume(raw, modality, config.target_shape)
        if keep:
            cache.save(key, volume, kind="volumes")
    return volume


def load_view(path: str | Path, modality: str = "sMRI", config: ViewConfig = ViewConfig(),
              cache: VolumeCache | None = None) -> np.ndarray:
    """The (size, size, 3) uint8 view of a NIfTI file, from ``cache`` when it holds this content + config.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        modality: ``sMRI``, ``dMRI`` or ``fMRI``.
        config: view and preprocessing parameters.
        cache: optional ``VolumeCache``; entries are keyed by file content, modality, config and
            ``PREPROCESS_VERSION``.
    """
    path = Path(path)
    check_file(path, NIFTI_SUFFIXES)
    check_modality(modality, path)
    if cache is None:
        return render_view(_preprocessed(path, modality, config, None), config)
    key = cache.key(path, _view_params(modality, config, type(config.index)))
    view = cache.load(key)
    if view is None:
        view = render_view(_preprocessed(path, modality, config, cache), config)
        cache.save(key, view)
    return view


def load_image(path: str | Path, modality: str = "sMRI", config: ViewConfig = ViewConfig(),
               cache: VolumeCache | None = None, resize_2d: bool = False) -> Image.Image:
    """An RGB ``PIL.Image`` from a NIfTI volume (through ``load_view``) or a 2D .png/.jpg/.jpeg file.

    2D files keep their size unless ``resize_2d`` is set, then they are resized to ``config.size``.
    """
    path = Path(path)
    if file_suffix(path) in NIFTI_SUFFIXES:
        return Image.fromarray(load_view(path, modality, config, cache))
    check_file(path, IMAGE_SUFFIXES + NIFTI_SUFFIXES)
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if resize_2d:
        rgb = rgb.resize((config.size, config.size), Image.Resampling.BILINEAR)
    return rgb


