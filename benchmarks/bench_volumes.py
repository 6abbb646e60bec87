"""Samples/s of brain-volume views: per-access loading vs MONAI PersistentDataset vs VolumeCache vs RAM.

Every method turns one int16 99x117x95 .nii.gz (MNI152 2 mm template with per-subject gain and noise)
into three orthogonal mid-slices of the volume oriented to RAS, normalised inside the nonzero mask and
resampled to 64^3. Each method is timed over ``--epochs`` passes in one run, so the printed ratios
compare numbers measured side by side on the same machine and page cache.

    python benchmarks/bench_volumes.py --n 300 --epochs 2
    python benchmarks/bench_volumes.py --quick      # a smoke run on a few volumes

MONAI is optional (``pip install monai``); without it the script says so and measures the rest.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainvlm.data.views import ViewConfig, load_view
from brainvlm.data.volume_cache import VolumeCache

SHAPE = (99, 117, 95)
TARGET = (64, 64, 64)
VIEW = ViewConfig(view="orthogonal", size=64, target_shape=TARGET)


def set_torch_threads() -> None:
    """One torch thread, as in DataLoader workers: two made boolean-mask indexing 5x slower here."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def make_volumes(folder: Path, n: int, seed: int) -> list[Path]:
    """Write n int16 .nii.gz volumes: the MNI152 template with a per-subject gain and noise in the brain."""
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template(resolution=2)
    brain = template.get_fdata(dtype=np.float32)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        gain = 1000.0 * (1.0 + 0.05 * rng.standard_normal())
        noisy = brain * gain + rng.normal(0.0, 20.0, SHAPE).astype(np.float32)
        data = np.where(brain > 0, np.clip(noisy, 1, None), 0).astype(np.int16)
        path = folder / f"sub-{i:04d}_T1w.nii.gz"
        nib.save(nib.Nifti1Image(data, template.affine), path)
        paths.append(path)
    return paths


def naive_sample(path: Path) -> np.ndarray:
    """Per-access work, written out with nibabel and scipy: RAS, z-score in mask, 64^3, mid-slices."""
    volume = nib.as_closest_canonical(nib.load(path)).get_fdata(dtype=np.float32)
    mask = volume != 0
    inside = volume[mask]
    volume[mask] = (inside - inside.mean()) / inside.std()
    volume = ndimage.zoom(volume, [t / s for t, s in zip(TARGET, volume.shape)], order=1)
    middle = [n // 2 for n in TARGET]
    return np.stack([volume[middle[0]], volume[:, middle[1]], volume[:, :, middle[2]]], axis=-1)


def mid_slices(image):
    """(1, X, Y, Z) tensor -> (3, Y|X, ...) sagittal, coronal, axial mid-slices (MONAI's last step)."""
    import torch

    _, x, y, z = image.shape
    return torch.stack([image[0, x // 2], image[0, :, y // 2], image[0, :, :, z // 2]])


def monai_dataset(paths: list[Path], cache_dir: Path):
    """MONAI PersistentDataset with transforms equivalent to ``naive_sample``, or None without MONAI."""
    try:
        from monai.data import PersistentDataset
        from monai.transforms import Compose, Lambdad, LoadImaged, NormalizeIntensityd, Orientationd, Resized
    except ImportError:
        return None
    transform = Compose([
        LoadImaged(keys="image", reader="NibabelReader", ensure_channel_first=True),
        Orientationd(keys="image", axcodes="RAS"),
        NormalizeIntensityd(keys="image", nonzero=True),
        Resized(keys="image", spatial_size=TARGET, mode="trilinear"),
        Lambdad(keys="image", func=mid_slices),
    ])
    data = [{"image": str(path)} for path in paths]
    return PersistentDataset(data, transform=transform, cache_dir=cache_dir)


def time_epochs(get: Callable[[int], object], n: int, epochs: int) -> list[float]:
    """Samples/s of each pass that calls ``get(i)`` for every index in order."""
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(n):
            get(i)
        rates.append(n / (time.perf_counter() - start))
    return rates


def stale_after_edit(get: Callable[[Path], np.ndarray], path: Path, replacement: Path) -> bool:
    """True if ``get`` still returns the old view after ``path``'s content is replaced."""
    before = np.asarray(get(path)).copy()
    path.write_bytes(replacement.read_bytes())
    return bool(np.array_equal(np.asarray(get(path)), before))


def measure(paths: list[Path], work: Path, epochs: int) -> dict[str, list[float]]:
    """Samples/s per method and epoch, plus whether each cache served an edited file stale."""
    n = len(paths)
    results = {"naive (per access)": time_epochs(lambda i: naive_sample(paths[i]), n, epochs)}
    results["brainvlm load_view, no cache"] = time_epochs(lambda i: load_view(paths[i], "sMRI", VIEW), n, epochs)
    monai = monai_dataset(paths, work / "monai")
    if monai is not None:
        results["MONAI PersistentDataset"] = time_epochs(lambda i: monai[i]["image"], n, epochs)
    cache = VolumeCache(work / "brainvlm")
    results["brainvlm VolumeCache"] = time_epochs(lambda i: load_view(paths[i], "sMRI", VIEW, cache), n, epochs)
    in_ram = [load_view(path, "sMRI", VIEW, cache) for path in paths]
    results["in RAM (floor)"] = time_epochs(lambda i: in_ram[i].copy(), n, epochs)
    if monai is not None:
        index = {str(path): i for i, path in enumerate(paths)}
        stale = stale_after_edit(lambda p: monai[index[str(p)]]["image"], paths[0], paths[1])
        results["MONAI stale after edit"] = [float(stale)]
    stale = stale_after_edit(lambda p: load_view(p, "sMRI", VIEW, cache), paths[2], paths[3])
    results["brainvlm stale after edit"] = [float(stale)]
    return results


def format_report(results: dict[str, list[float]], n: int) -> str:
    """A table of samples/s per epoch with ratios to the naive baseline, and cached vs MONAI."""
    rates = {name: values for name, values in results.items() if "stale" not in name}
    base = rates["naive (per access)"]
    epochs = len(base)
    header = f"{'method':<30}" + "".join(f"{f'epoch {e + 1} /s':>14}{'x naive':>10}" for e in range(epochs))
    lines = [f"{n} volumes {SHAPE} int16 .nii.gz -> orthogonal mid-slices of 64^3", header]
    for name, values in rates.items():
        cells = "".join(f"{v:>14,.0f}{v / b:>10.1f}" for v, b in zip(values, base))
        lines.append(f"{name:<30}{cells}")
    if "MONAI PersistentDataset" in rates:
        mine, theirs = rates["brainvlm VolumeCache"], rates["MONAI PersistentDataset"]
        ratios = ", ".join(f"epoch {e + 1}: {m / t:.2f}x" for e, (m, t) in enumerate(zip(mine, theirs)))
        lines.append(f"brainvlm VolumeCache vs MONAI PersistentDataset: {ratios}")
    else:
        lines.append("monai is not importable: PersistentDataset not measured (pip install monai)")
    for name in (k for k in results if "stale" in k):
        lines.append(f"{name}: {'yes' if results[name][0] else 'no'}")
    return "\n".join(lines)


def abcd_scale_cohort(n: int, seed: int):
    """A canonical cohort table of n subjects (families of 1-2, sex and BMI z), no images read."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    subjects = [f"sub-{i:05d}" for i in range(n)]
    families = [f"fam-{i // 2 if i % 5 == 0 else i:05d}" for i in range(n)]
    return pd.DataFrame({"subject": subjects, "group": families, "row": np.arange(2, n + 2),
                         "image": [f"{s}/anat/{s}_T1w.nii.gz" for s in subjects], "session": None,
                         "sex": rng.choice(["male", "female"], n), "bmi": rng.normal(0, 1, n).round(3)})


def time_task_building(n: int, seed: int) -> str:
    """Seconds to split and build comparison samples (num_pairs 3) for an n-subject table."""
    from brainvlm.data.comparison import TaskSpec, build_samples
    from brainvlm.data.splits import split_subjects

    table = abcd_scale_cohort(n, seed)
    lines = [f"task building for {n} subjects (no image voxels read):"]
    for name, kind, column in (("sex", "categorical", "sex"), ("bmi", "numerical", "bmi")):
        cohort = table.assign(target=table[column])
        start = time.perf_counter()
        assignment = split_subjects(cohort, seed=seed, task_type=kind)
        samples = build_samples(cohort, assignment, TaskSpec(name=name, task_type=kind, target_col=column,
                                                             num_pairs=3), seed=seed)
        seconds = time.perf_counter() - start
        lines.append(f"  {name:4s} ({kind}): {sum(map(len, samples.values())):6d} samples in {seconds:.2f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="number of synthetic volumes")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the data set per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 volumes")
    parser.add_argument("--subjects", type=int, default=11000, help="phenotype rows for the task-building time")
    args = parser.parse_args(argv)
    n = 8 if args.quick else args.n
    if n < 4 or args.epochs < 1:
        parser.error("need --n >= 4 (the stale check edits files 0 and 2) and --epochs >= 1")
    set_torch_threads()
    warnings.filterwarnings("ignore", category=FutureWarning, module="monai")  # a default-argument notice
    with tempfile.TemporaryDirectory(prefix="bench_volumes_") as tmp:
        work = Path(tmp)
        (work / "nifti").mkdir()
        start = time.perf_counter()
        paths = make_volumes(work / "nifti", n, args.seed)
        print(f"wrote {n} volumes in {time.perf_counter() - start:.1f} s")
        print(format_report(measure(paths, work, args.epochs), n))
    print(time_task_building(1000 if args.quick else args.subjects, args.seed))


if __name__ == "__main__":
    main()
