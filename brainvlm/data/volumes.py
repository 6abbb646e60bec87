"""Brain volumes: NIfTI loading in RAS and modality-specific preprocessing.

    load_volume        nibabel, closest canonical orientation (RAS); a 4D fMRI series reduced to 3D
    preprocess_volume  resample to the target grid, then sMRI/fMRI: clip to robust percentiles inside a
                       brain mask and scale to [0, 1] (background 0); dMRI scalar maps: clip to [0, 1]

:mod:`brainvlm.data.views` turns a preprocessed volume into the 2D image a model sees.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

PREPROCESS_VERSION = "1"  # bump when a step's output changes: it is part of every cache key
MODALITIES = ("sMRI", "dMRI", "fMRI")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ROBUST_PERCENTILES = (0.5, 99.5)
ZERO_BACKGROUND_FRACTION = 0.05  # this share of exact zeros means the volume is already masked
OTSU_BINS = 256


# ---------------------------------------------------------------- loading


def file_suffix(path: str | Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def check_file(path: Path, suffixes: tuple[str, ...]) -> None:
    if file_suffix(path) not in suffixes:
        raise ValueError(f"{path}: unsupported extension {file_suffix(path)!r}; expected one of {suffixes}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the image root and the sample's image_path")


def check_modality(modality: str, path: Path) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"{path}: unknown modality {modality!r}; use one of {MODALITIES}")


class VolumeError(ValueError):
    """A volume brainvlm will not use; ``reason`` is its exclusion code, the message names the file and why.

    Policy (docs/sample_format.md, "Volumes"): a file that cannot be read to its last voxel, has the wrong
    number of dimensions for its modality, holds NaN or infinite voxels, or is constant (every voxel
    equal: an empty or blank scan) is an error wherever it is loaded. The cohort check
    ``check_images: readable`` finds the same problems up front and excludes those subjects, counted by
    reason in notebook 01. A black image is never shown to a model in its place.
    """

    def __init__(self, path: Path | str, reason: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path, self.reason = Path(path), reason


READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError,
               nib.spatialimages.HeaderDataError)  # what a truncated, foreign or broken file raises


def load_volume(path: str | Path, modality: str = "sMRI", fmri_reduce: str = "mean") -> np.ndarray:
    """Load a NIfTI file as a float32 3D array in RAS orientation, every voxel read and checked.

    Trailing length-1 dimensions are dropped. A 4D fMRI series is reduced with ``fmri_reduce``
    (``mean`` or a volume index as a string); a 4D sMRI or dMRI file is an error.

    Raises:
        VolumeError: unreadable (truncated, not NIfTI), wrong dimensions, non-finite or constant voxels.
    """
    path = Path(path)
    check_file(path, NIFTI_SUFFIXES)
    check_modality(modality, path)
    try:
        image = nib.as_closest_canonical(nib.load(path))
        shape = tuple(image.shape)
    except READ_ERRORS as err:
        raise VolumeError(path, "unreadable_image", f"nibabel cannot read it ({type(err).__name__}: {err}); "
                                                    "it is not a NIfTI file or its header is broken") from err
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3 and not (len(shape) == 4 and modality == "fMRI"):
        raise VolumeError(path, "wrong_dimensions", f"shape {shape} is not a 3D volume; only fMRI may be 4D "
                                                    "(reduced with fmri_reduce), so pick one volume or use modality='fMRI'")
    try:
        if len(shape) == 3:
            volume = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
        else:
            volume = _reduce_series(image, shape, str(fmri_reduce), path)
    except READ_ERRORS as err:
        if isinstance(err, VolumeError):
            raise
        raise VolumeError(path, "unreadable_image", f"the voxels cannot be read ({type(err).__name__}: {err}); "
                                                    "the file is truncated or corrupt: copy or export it again") from err
    check_voxels(volume, path)
    return volume


def check_voxels(volume: np.ndarray, path: Path | str) -> None:
    """Refuse non-finite and constant volumes (see :class:`VolumeError`)."""
    finite = np.isfinite(volume)
    if not finite.all():
        bad = int((~finite).sum())
        raise VolumeError(path, "non_finite_voxels", f"{bad} of {volume.size} voxels are NaN or infinite; "
                                                     "brainvlm does not invent values for them: fix the file "
                                                     "(e.g. set them to 0 with fslmaths -nan) or exclude the subject")
    low, high = float(volume.min()), float(volume.max())
    if low == high:
        raise VolumeError(path, "constant_image", f"every voxel is {low:g}: an empty or blank scan, which would "
                                                  "be shown as a black image; exclude the subject or fix the file")


def _reduce_series(image: nib.spatialimages.SpatialImage, shape: tuple, how: str, path: Path) -> np.ndarray:
    """Temporal mean, or one volume by index, of a 4D series."""
    series = image.dataobj
    if how == "mean":
        data = np.asarray(series, dtype=np.float32).reshape(shape)
        return data.mean(axis=3, dtype=np.float64).astype(np.float32)
    if not how.isdigit() or int(how) >= shape[3]:
        raise VolumeError(path, "wrong_dimensions", f"fmri_reduce={how!r} but the series has {shape[3]} volumes "
                                                    f"(use 'mean' or an index 0..{shape[3] - 1})")
    return np.asarray(series[..., int(how)], dtype=np.float32).reshape(shape[:3])


# ---------------------------------------------------------------- preprocessing


def otsu_threshold(values: np.ndarray, bins: int = OTSU_BINS) -> float:
    """Threshold that maximises the between-class variance of a histogram of ``values``."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts, dtype=np.float64)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres, dtype=np.float64)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def brain_mask(volume: np.ndarray) -> np.ndarray:
    """Foreground mask: nonzero voxels when the volume is already masked, else above an Otsu threshold."""
    zero = volume == 0
    if zero.mean() >= ZERO_BACKGROUND_FRACTION:
        return ~zero
    if volume.max() == volume.min():
        return np.ones(volume.shape, dtype=bool)
    return volume > otsu_threshold(volume)


def normalise_intensity(volume: np.ndarray, mask: np.ndarray | None = None,
                        percentiles: tuple[float, float] = ROBUST_PERCENTILES,
                        method: str = "unit") -> np.ndarray:
    """Clip to robust percentiles inside ``mask``, then scale; the background becomes 0.

    Args:
        volume: 3D array.
        mask: boolean foreground; None computes ``brain_mask(volume)``.
        percentiles: lower and upper clip percentiles of the voxels inside the mask.
        method: ``unit`` scales the clipped range to [0, 1]; ``zscore`` gives mean 0, std 1 inside the mask.

    Returns:
        float32 array of ``volume``'s shape.
    """
    if method not in ("unit", "zscore"):
        raise ValueError(f"normalise_intensity method={method!r}: use 'unit' or 'zscore'")
    mask = brain_mask(volume) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} differs from volume shape {volume.shape}")
    out = np.zeros(volume.shape, dtype=np.float32)
    inside = volume[mask].astype(np.float64)
    if inside.size == 0:
        return out
    low, high = np.percentile(inside, percentiles)
    inside = np.clip(inside, low, high)
    if method == "unit":
        scaled = (inside - low) / (high - low) if high > low else np.ones_like(inside)
    else:
        std = inside.std()
        scaled = (inside - inside.mean()) / std if std > 0 else np.zeros_like(inside)
    out[mask] = scaled
    return out


def resample(volume: np.ndarray, target_shape: tuple[int, int, int] | None, order: int = 1) -> np.ndarray:
    """Resample to ``target_shape`` with ``scipy.ndimage.zoom`` (linear by default); None keeps the grid."""
    if target_shape is None or tuple(volume.shape) == tuple(target_shape):
        return volume
    factors = [t / s for t, s in zip(target_shape, volume.shape)]
    out = ndimage.zoom(volume, factors, order=order)
    if out.shape != tuple(target_shape):  # zoom rounds each axis; guard the contract
        raise RuntimeError(f"resample gave {out.shape}, wanted {tuple(target_shape)} from {volume.shape}")
    return out


def preprocess_volume(volume: np.ndarray, modality: str = "sMRI",
                      target_shape: tuple[int, int, int] | None = (64, 64, 64),
                      mask: np.ndarray | None = None) -> np.ndarray:
    """Resample, then normalise by modality: sMRI/fMRI to [0, 1] in a brain mask, dMRI clipped to [0, 1].

    Args:
        volume: 3D array in RAS (``load_volume``'s output).
        modality: one of ``MODALITIES``.
        target_shape: grid to resample to, or None.
        mask: optional boolean brain mask on ``volume``'s grid (resampled with nearest neighbour).

    Returns:
        float32 array in [0, 1] of shape ``target_shape`` (or ``volume.shape``).
    """
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; use one of {MODALITIES}")
    if volume.ndim != 3:
        raise ValueError(f"preprocess_volume needs a 3D array, got shape {volume.shape}")
    resampled = resample(volume.astype(np.float32, copy=False), target_shape)
    if modality == "dMRI":
        return np.clip(resampled, 0.0, 1.0)
    if mask is not None:
        mask = resample(np.asarray(mask, dtype=np.uint8), target_shape, order=0).astype(bool)
    return normalise_intensity(resampled, mask, method="unit")


def volume_summary(path: str | Path) -> dict:
    """Header and intensity facts of a NIfTI file as stored (before canonical reorientation).

    Returns:
        ``shape``, ``zooms``, ``orientation`` (axis codes such as ``RAS``), ``dtype`` (on disk),
        ``min``, ``max``, ``mean`` (after the header's scaling).
    """
    path = Path(path)
    check_file(path, NIFTI_SUFFIXES)
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    return {"shape": tuple(int(n) for n in image.shape),
            "zooms": tuple(round(float(z), 6) for z in image.header.get_zooms()),
            "orientation": "".join(nib.aff2axcodes(image.affine)),
            "dtype": str(image.get_data_dtype()),
            "min": float(data.min()), "max": float(data.max()), "mean": float(data.mean(dtype=np.float64))}
