"""The synthetic default cohort: a BIDS-like tree of brain volumes with planted effects of sex and BMI.

Design
------
Every subject is nilearn's MNI152 template (2 mm, skull-stripped, loaded offline from package data)
resampled to the grid ``shape`` (RAS, isotropic voxels of about 3 mm at 64^3 so the whole brain fits),
with two planted regional effects and a random anatomy:

1. **Planted effects** (atlas space, before any deformation), multiplicative on intensity:

   * sex: inside ``SEX_REGION`` (a soft sphere of radius ~12 voxels of 64, right, anterior) males
     are ``+SEX_EFFECT`` (16 %), females ``-SEX_EFFECT``; and males are globally ``SEX_SCALE`` (3 %)
     larger than females (linear size);
   * BMI z-score (drawn N(0, 1), independent of everything else): inside ``BMI_REGION`` (left,
     posterior; the part outside the sex region) intensity changes by ``BMI_EFFECT`` (16 %) per SD,
     and size by ``BMI_SCALE`` per SD.

   Both regions sit near the grid centre and cross all three mid-planes, so the axial (axis 2),
   coronal and sagittal mid-slices all show them. Measured on 200 subjects at 64^3, in 32x32
   mid-slices (region mean over the slice's brain mean), with both effects at 8 %: sex separated with
   Cohen's d 5.4 axial, 4.8 coronal, 3.5 sagittal; the BMI region correlated with BMI_z at r 0.89, 0.76,
   0.82. With the BMI effect at 16 %, r is 0.96 axial (0.87 at 8 %; 300 subjects, seed 0). A measured
   guide: ±5-10 % regional change of a binary trait is learnt by a tiny vision-language model from 32x32
   mid-slices in minutes, though not for every seed; ±2 %, or global scale alone, is not. Both effects are
   16 % so that the default's claims hold for every seed (the seed sweep in the README).
2. **Anatomy**: a random affine per subject (scale ±``JITTER_SCALE``, rotation ±``JITTER_ROTATION``
   degrees, translation ±``JITTER_TRANSLATION`` voxels of 64) and a smooth random displacement field
   (SD ``DISPLACEMENT_SD`` voxels of 64) shared by siblings, so relatives look alike (the reason splits
   must keep families together). About ``SIBLING_FRACTION`` of subjects share a ``family_id``.
3. **Noise**: Rician, SD ``NOISE_SD`` of the intensity range, inside the brain; the background stays 0
   (skull-stripped, like the template). T1w volumes are int16 in [0, ~1200].

A fraction of subjects also get an FA-like map in [0, 1] (high in white matter, same planted effects)
and a short 4D resting-state series (the planted T1 contrast plus a small sinusoid in ``REST_REGION``
and Gaussian noise). Age is drawn but carries no effect.

Files are byte-identical for the same arguments: random streams come from ``default_rng`` seeded with
``(seed, stream, index)``, and gzip is written with a fixed mtime; so they are the same whether one process
builds every subject or several build them at once (``workers``; ``benchmarks/bench_cohort.py``).
"""

from __future__ import annotations

import gzip
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from brainvlm.core.jsonio import read_json, write_json
from brainvlm.core.threads import available_cores

# regional intensity change in SEX_REGION: males x(1 + 0.16), females x(1 - 0.16). It matches BMI_EFFECT: in a
# trial with 0.08 beside a 0.16 BMI effect, the tiny default told the sex of seed 0's test subjects at 0.87 only.
SEX_EFFECT = 0.16
SEX_SCALE = 0.03  # linear size difference, males larger: males x(1 + 0.015), females x(1 - 0.015)
# regional intensity change in BMI_REGION per SD of BMI z-score. At 0.08 the tiny default's BMI answers ranged
# from 0.54 to 1.24 of the mean baseline's error over seeds 0-4 (a regression from 32x32 slices through digit
# tokens is learnt far less reliably than a binary label); at 0.16 (and SEX_EFFECT 0.16, 24 epochs), 0.36-0.53.
BMI_EFFECT = 0.16
BMI_SCALE = 0.005  # linear size change per SD of BMI z-score
SEX_REGION = ((0.59, 0.60, 0.54), 0.18)  # (centre, radius) as fractions of the grid edge
BMI_REGION = ((0.41, 0.40, 0.46), 0.18)  # minus its overlap with SEX_REGION
REST_REGION = ((0.50, 0.25, 0.55), 0.14)  # where the resting-state series oscillates
REGION_EDGE = 2.0  # voxels over which a region's mask falls from 1 to 0

JITTER_SCALE = 0.03  # uniform ± per axis
JITTER_ROTATION = 3.0  # degrees, uniform ± per axis
JITTER_TRANSLATION = 2.0  # voxels of a 64 grid, uniform ± per axis
DISPLACEMENT_SD = 1.0  # voxels of a 64 grid; smooth field from a DISPLACEMENT_GRID^3 lattice
DISPLACEMENT_GRID = 4
NOISE_SD = 0.03  # Rician noise SD as a fraction of INTENSITY_MAX
BRAIN_THRESHOLD = 0.05  # fraction of INTENSITY_MAX: below it a voxel is background (kept at 0)
INTENSITY_MAX = 1000.0  # template intensity 1.0 (bright white matter) maps to this
SIBLING_FRACTION = 0.10  # subjects who share a family_id with another subject

FA_NOISE_SD = 0.03
BOLD_SIGNAL = 0.02  # amplitude of the resting-state sinusoid (fraction of the mean)
BOLD_NOISE_SD = 0.01  # fraction of INTENSITY_MAX
BOLD_TR = 2.0  # seconds
GZIP_LEVEL = 1  # fast; byte identity comes from mtime=0, not from the level
MARGIN_MM = 4.0  # space around the brain's bounding box in the grid
STREAM_SUBJECT, STREAM_FAMILY = 1, 2  # independent random streams: (seed, stream, index)
GENERATOR = "brainvlm.synthetic"


def synthetic_phenotypes(n_subjects: int, seed: int = 0) -> pd.DataFrame:
    """The participants table: ``participant_id``, ``sex`` (M/F, balanced), ``age``, ``BMI_z``, ``family_id``.

    ``BMI_z`` is rounded to 3 decimals and is the value planted in the images.
    """
    if n_subjects < 2:
        raise ValueError(f"n_subjects is {n_subjects}; the synthetic cohort needs at least 2 subjects")
    rng = np.random.default_rng(seed)
    width = max(4, len(str(n_subjects)))
    sex = rng.permutation(np.array(["M", "F"])[np.arange(n_subjects) % 2])
    table = pd.DataFrame({
        "participant_id": [f"sub-{i + 1:0{width}d}" for i in range(n_subjects)],
        "sex": sex,
        "age": np.round(rng.uniform(18.0, 35.0, n_subjects), 2),
        "BMI_z": np.round(rng.normal(0.0, 1.0, n_subjects), 3) + 0.0,  # + 0.0: no "-0.000"
    })
    family = np.arange(n_subjects)
    n_pairs = round(SIBLING_FRACTION * n_subjects / 2)
    for first, second in rng.permutation(n_subjects)[: 2 * n_pairs].reshape(-1, 2):
        family[max(first, second)] = min(first, second)
    numbers = {f: i + 1 for i, f in enumerate(sorted(set(family)))}
    table["family_id"] = [f"fam-{numbers[f]:0{width}d}" for f in family]
    return table


def template_volume(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 template on the synthetic grid: ``(volume in [0, ~INTENSITY_MAX], 4x4 RAS affine)``."""
    from nilearn.datasets import load_mni152_template

    image = load_mni152_template(resolution=2)
    data = np.asarray(image.get_fdata(), dtype=np.float64)
    voxels = np.argwhere(data > 0.05)
    low = image.affine[:3, :3] @ voxels.min(0) + image.affine[:3, 3] - MARGIN_MM
    high = image.affine[:3, :3] @ voxels.max(0) + image.affine[:3, 3] + MARGIN_MM
    size = float(np.max((high - low) / np.asarray(shape)))
    origin = (low + high) / 2 - size * (np.asarray(shape) - 1) / 2
    affine = np.diag([size, size, size, 1.0])
    affine[:3, 3] = origin
    to_template = np.linalg.inv(image.affine) @ affine
    smooth = ndimage.gaussian_filter(data, sigma=0.4 * size / 2.0)  # anti-alias the downsampling
    volume = ndimage.affine_transform(smooth, to_template[:3, :3], offset=to_template[:3, 3],
                                      output_shape=tuple(shape), order=1, mode="constant", cval=0.0)
    return np.clip(volume, 0.0, None) * INTENSITY_MAX, affine


def region_mask(region: tuple[tuple[float, float, float], float], shape: tuple[int, int, int]) -> np.ndarray:
    """Soft spherical mask in [0, 1] of a region given as ``(centre, radius)`` in fractions of the grid."""
    centre, radius = region
    grid = np.indices(shape, dtype=np.float64)
    edge = min(shape)
    distance = np.sqrt(sum(((grid[k] + 0.5) / shape[k] * edge - centre[k] * edge) ** 2 for k in range(3)))
    return np.clip((radius * edge - distance) / REGION_EDGE + 0.5, 0.0, 1.0)


def effect_masks(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Soft masks of the planted regions on the grid: ``sex``, ``bmi`` (disjoint from ``sex``) and ``rest``."""
    sex = region_mask(SEX_REGION, shape)
    return {"sex": sex, "bmi": region_mask(BMI_REGION, shape) * (1.0 - sex), "rest": region_mask(REST_REGION, shape)}


def planted_multiplier(sex: str, bmi_z: float, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Intensity multiplier of one subject: 1 outside the regions, shifted by sex and BMI inside."""
    sign = 1.0 if sex == "M" else -1.0
    return 1.0 + sign * SEX_EFFECT * masks["sex"] + BMI_EFFECT * bmi_z * masks["bmi"]


def _anatomy(rng: np.random.Generator, sex: str, bmi_z: float, shape: tuple[int, int, int]) -> np.ndarray:
    """3x4 map from output voxels to atlas voxels: random affine, scaled by the sex and BMI size terms."""
    unit = min(shape) / 64.0
    size = (1 + (SEX_SCALE if sex == "M" else -SEX_SCALE) / 2) * (1 + BMI_SCALE * bmi_z)
    scale = size * (1 + rng.uniform(-JITTER_SCALE, JITTER_SCALE, 3))
    angles = np.deg2rad(rng.uniform(-JITTER_ROTATION, JITTER_ROTATION, 3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        i, j = [k for k in range(3) if k != axis]
        turn = np.eye(3)
        turn[[i, i, j, j], [i, j, i, j]] = [np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)]
        rotation = turn @ rotation
    matrix = rotation / scale  # a larger brain samples the atlas closer to the centre
    centre = (np.asarray(shape) - 1) / 2
    shift = rng.uniform(-JITTER_TRANSLATION, JITTER_TRANSLATION, 3) * unit
    return np.column_stack([matrix, centre - matrix @ centre + shift])


def _displacement(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth random displacement field, shape ``(3, *shape)``, in voxels."""
    sd = DISPLACEMENT_SD * min(shape) / 64.0
    coarse = rng.normal(0.0, sd, (3, *(DISPLACEMENT_GRID,) * 3))
    zoom = [s / DISPLACEMENT_GRID for s in shape]
    return np.stack([ndimage.zoom(c, zoom, order=1, mode="nearest", grid_mode=True) for c in coarse])


def _sample(volume: np.ndarray, affine: np.ndarray, field: np.ndarray, grid: np.ndarray) -> np.ndarray:
    coords = np.tensordot(affine[:, :3], grid, axes=1) + affine[:, 3, None, None, None] + field
    return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0)


def _rician(clean: np.ndarray, rng: np.random.Generator, sd: float) -> np.ndarray:
    real = clean + rng.normal(0.0, sd, clean.shape)
    return np.sqrt(real**2 + rng.normal(0.0, sd, clean.shape) ** 2)


def _fa_atlas(atlas: np.ndarray) -> np.ndarray:
    """FA-like map of the template: about 0.1 in grey matter, 0.7 in white matter, 0 outside the brain."""
    t = atlas / INTENSITY_MAX
    return (t > 0.05) * (0.1 + 0.6 / (1 + np.exp(-(t - 0.72) / 0.04)))


def _write_nifti(data: np.ndarray, affine: np.ndarray, path: Path, tr: float | None = None) -> None:
    """Write ``.nii.gz`` byte-identically for identical data (gzip mtime fixed at 0)."""
    import nibabel as nib

    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    if tr is not None:
        image.header.set_zooms((*image.header.get_zooms()[:3], tr))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0))


def make_synthetic_cohort(out_dir: str | Path, n_subjects: int = 200, seed: int = 0,
                          shape: tuple[int, int, int] = (64, 64, 64), dmri_fraction: float = 0.25,
                          fmri_fraction: float = 0.25, fmri_timepoints: int = 6, progress: bool = True,
                          workers: int | None = None) -> Path:
    """Write the synthetic cohort as a BIDS-like tree and return the path of its ``participants.tsv``.

    Args:
        out_dir: folder to write; files of an earlier synthetic build there are replaced.
        n_subjects: number of subjects (at least 2).
        seed: one seed for phenotypes, anatomy and noise.
        shape: grid of every volume (RAS).
        dmri_fraction, fmri_fraction: share of subjects that also get ``dwi/*_FA.nii.gz`` and
            ``func/*_task-rest_bold.nii.gz``.
        fmri_timepoints: volumes in each resting-state series.
        progress: show a progress bar.
        workers: processes that build subjects at once (default: ``build_workers``); the files are the
            same for any number.

    Returns:
        ``out_dir/participants.tsv``; image paths follow ``{subject}/anat/{subject}_T1w.nii.gz``.
    """
    shape = tuple(int(s) for s in shape)
    _check_arguments(shape, dmri_fraction, fmri_fraction, fmri_timepoints)
    out = Path(out_dir)
    table = synthetic_phenotypes(n_subjects, seed)
    rng = np.random.default_rng([seed, 0])
    dmri = set(rng.permutation(n_subjects)[: round(dmri_fraction * n_subjects)].tolist())
    fmri = set(rng.permutation(n_subjects)[: round(fmri_fraction * n_subjects)].tolist())
    _remove_previous_build(out)
    atlas, affine = template_volume(shape)
    fixed = (seed, (atlas, _fa_atlas(atlas)), effect_masks(shape), np.indices(shape, dtype=np.float64), affine,
             fmri_timepoints, out)
    jobs = [(index, row.to_dict(), ("dwi",) * (index in dmri) + ("func",) * (index in fmri))
            for index, row in table.iterrows()]
    workers = workers or build_workers(n_subjects, shape)
    bar = tqdm(total=len(jobs), desc="synthetic cohort", disable=not progress)
    if workers == 1:
        _set_fixed(fixed)
        for job in jobs:
            _write_subject(job)
            bar.update(1)
    else:  # spawn, not fork: a notebook kernel has threads (and maybe torch's) that a fork would copy
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_set_fixed, initargs=(fixed,)) as pool:
            for _ in pool.map(_write_subject, jobs):
                bar.update(1)
    bar.close()
    _set_fixed(())
    _write_metadata(out, table, {"n_subjects": n_subjects, "seed": seed, "shape": list(shape),
                                 "dmri_fraction": dmri_fraction, "fmri_fraction": fmri_fraction,
                                 "fmri_timepoints": fmri_timepoints})
    return out / "participants.tsv"


PARALLEL_VOXELS = 2**23  # voxels a build process must get to pay for its start (about 32 subjects at 64^3)
_FIXED: tuple = ()  # what every subject of a build shares, set once per process (see _set_fixed)


def build_workers(n_subjects: int, shape: tuple[int, int, int]) -> int:
    """Processes for a build: one per core this process may use, fewer when the build is small."""
    return max(1, min(available_cores(), n_subjects * int(np.prod(shape)) // PARALLEL_VOXELS))


def _set_fixed(fixed: tuple) -> None:
    global _FIXED
    _FIXED = fixed


def _write_subject(job: tuple[int, dict, tuple[str, ...]]) -> None:
    """Build and write one subject's files; the random streams depend on the subject alone, never on order."""
    index, row, modalities = job
    seed, atlases, masks, grid, affine, timepoints, out = _FIXED
    family = int(row["family_id"].split("-")[1])  # siblings draw the same field from the family's stream
    field = _displacement(np.random.default_rng([seed, STREAM_FAMILY, family]), atlases[0].shape)
    images = _subject_images(row, atlases, masks, field, grid, modalities, timepoints,
                             np.random.default_rng([seed, STREAM_SUBJECT, index]))
    subject = row["participant_id"]
    for kind, (suffix, data) in images.items():
        _write_nifti(data, affine, out / subject / kind / f"{subject}_{suffix}.nii.gz",
                     tr=BOLD_TR if kind == "func" else None)


def _subject_images(row: dict, atlases: tuple[np.ndarray, np.ndarray], masks: dict[str, np.ndarray],
                    field: np.ndarray, grid: np.ndarray, modalities: tuple[str, ...], timepoints: int,
                    rng: np.random.Generator) -> dict[str, tuple[str, np.ndarray]]:
    """One subject's volumes: BIDS folder -> (file suffix, array); ``anat`` always, ``dwi``/``func`` if asked."""
    atlas, fa_atlas = atlases
    shape = atlas.shape
    warp = (_anatomy(rng, row["sex"], row["BMI_z"], shape), field)
    multiplier = planted_multiplier(row["sex"], row["BMI_z"], masks)
    clean = _sample(atlas * multiplier, *warp, grid)
    brain = clean > BRAIN_THRESHOLD * INTENSITY_MAX  # skull-stripped like the template: zero outside
    t1 = _rician(clean, rng, NOISE_SD * INTENSITY_MAX) * brain
    images = {"anat": ("T1w", np.round(t1).astype(np.int16))}
    if "dwi" in modalities:
        fa = _sample(fa_atlas * multiplier, *warp, grid)
        fa = np.clip(fa + rng.normal(0.0, FA_NOISE_SD, shape) * brain, 0.0, 1.0) * brain
        images["dwi"] = ("FA", fa.astype(np.float32))
    if "func" in modalities:
        images["func"] = ("task-rest_bold", _bold(clean, brain, masks["rest"], timepoints, rng))
    return images


def _check_arguments(shape: tuple[int, ...], dmri_fraction: float, fmri_fraction: float, timepoints: int) -> None:
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape is {shape}; give three sizes of at least 8 voxels, e.g. (64, 64, 64)")
    for name, value in (("dmri_fraction", dmri_fraction), ("fmri_fraction", fmri_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} is {value}; give a share of subjects between 0 and 1")
    if timepoints < 2:
        raise ValueError(f"fmri_timepoints is {timepoints}; a series needs at least 2 volumes")


def _bold(clean: np.ndarray, brain: np.ndarray, rest: np.ndarray, timepoints: int,
          rng: np.random.Generator) -> np.ndarray:
    """Short 4D series: the subject's planted contrast, a sinusoid in the rest region, Gaussian noise."""
    phase = rng.uniform(0.0, 2 * np.pi)
    series = np.empty((*clean.shape, timepoints), dtype=np.int16)
    for t in range(timepoints):
        signal = 1.0 + BOLD_SIGNAL * np.sin(2 * np.pi * t / timepoints + phase) * rest
        noisy = 0.6 * clean * signal + rng.normal(0.0, BOLD_NOISE_SD * INTENSITY_MAX, clean.shape)
        series[..., t] = np.round(np.clip(noisy, 0.0, None) * brain)
    return series


def _remove_previous_build(out: Path) -> None:
    """Delete the subject folders of an earlier synthetic build in ``out`` (never those of other data)."""
    description = out / "dataset_description.json"
    if not description.is_file():
        return
    generated = read_json(description).get("GeneratedBy", [{}])
    if not generated or generated[0].get("Name") != GENERATOR:
        return
    for folder in sorted(out.glob("sub-*")):
        if folder.is_dir():
            shutil.rmtree(folder)


def _write_metadata(out: Path, table: pd.DataFrame, arguments: dict) -> None:
    """``participants.tsv``, its column dictionary and ``dataset_description.json``."""
    out.mkdir(parents=True, exist_ok=True)
    written = table.assign(age=table["age"].map("{:.2f}".format), BMI_z=table["BMI_z"].map("{:.3f}".format))
    written.to_csv(out / "participants.tsv", sep="\t", index=False, lineterminator="\n")
    columns = {
        "participant_id": {"Description": "subject id"},
        "sex": {"Description": f"M/F, balanced; planted: intensity x(1 ± {SEX_EFFECT}) in the sex region, "
                               f"males {SEX_SCALE:.0%} larger"},
        "age": {"Description": "years, uniform 18-35; no planted effect", "Units": "year"},
        "BMI_z": {"Description": f"BMI z-score, N(0, 1); planted: intensity x(1 + {BMI_EFFECT} z) in the "
                                 "BMI region"},
        "family_id": {"Description": "family; siblings share a smooth deformation"},
    }
    description = {
        "Name": "brainvlm synthetic cohort", "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "License": "CC0; derived from the MNI ICBM152 template shipped with nilearn (McConnell Brain "
                   "Imaging Centre licence)",
        "GeneratedBy": [{"Name": GENERATOR, "Description": "MNI152 template with per-subject deformation, "
                         "noise and planted effects of sex and BMI z-score", "Parameters": arguments}],
    }
    for name, data in (("participants.json", columns), ("dataset_description.json", description)):
        write_json(data, out / name)
