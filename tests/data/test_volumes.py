"""Tests for brainvlm.data.volumes, brainvlm.data.views and brainvlm.data.volume_cache on tiny synthetic volumes and one real T1."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from brainvlm.data import views, volume_cache, volumes
from brainvlm.data.views import ViewConfig, load_image, load_view
from brainvlm.data.volume_cache import VolumeCache
from brainvlm.data.volumes import load_volume

SHAPE = (20, 24, 18)


def blob_volume(seed: int = 0, shape: tuple = SHAPE) -> np.ndarray:
    """A bright ellipsoid with texture on an exact-zero background, like a skull-stripped T1."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g ** 2 for g in grid) < 0.6
    return np.where(inside, 100 + 20 * rng.standard_normal(shape), 0).astype(np.float32)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def counting(monkeypatch, module, name: str) -> list:
    """Replace module.name by a wrapper that records each call; returns the record."""
    calls, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


# ---------------------------------------------------------------- loading


def test_flipped_and_permuted_affines_load_to_the_same_ras_array(tmp_path):
    data = blob_volume(1) + np.arange(SHAPE[0])[:, None, None]  # asymmetric along every axis
    data = (data + np.arange(SHAPE[1])[None, :, None] * 2 + np.arange(SHAPE[2])[None, None, :] * 3)
    data = data.astype(np.float32)
    ras = write_nifti(tmp_path / "ras.nii.gz", data, np.diag([2.0, 2.0, 2.0, 1.0]))
    flip = np.diag([-2.0, 2.0, 2.0, 1.0])
    flip[0, 3] = 2.0 * (SHAPE[0] - 1)  # voxel i of the LAS file sits where voxel n-1-i of the RAS file does
    las = write_nifti(tmp_path / "las.nii.gz", data[::-1].copy(), flip)
    swap = np.array([[0, 2.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    ars = write_nifti(tmp_path / "ars.nii.gz", data.transpose(1, 0, 2).copy(), swap)
    expected = load_volume(ras)
    np.testing.assert_array_equal(expected, data)
    np.testing.assert_array_equal(load_volume(las), expected)
    np.testing.assert_array_equal(load_volume(ars), expected)
    assert volumes.volume_summary(las)["orientation"] == "LAS"


def test_volume_summary_reports_header_and_intensities(tmp_path):
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    path = write_nifti(tmp_path / "v.nii.gz", data, np.diag([1.5, 2.0, 2.5, 1.0]))
    summary = volumes.volume_summary(path)
    assert summary["shape"] == SHAPE and summary["zooms"] == (1.5, 2.0, 2.5)
    assert summary["orientation"] == "RAS" and summary["dtype"] == "int16"
    assert (summary["min"], summary["max"]) == (0.0, float(data.max()))
    assert summary["mean"] == pytest.approx(data.mean())


def test_fmri_mean_and_index_reduce_a_series(tmp_path):
    rng = np.random.default_rng(2)
    series = rng.uniform(1, 100, size=SHAPE + (5,)).astype(np.float32)
    path = write_nifti(tmp_path / "bold.nii.gz", series)
    np.testing.assert_allclose(load_volume(path, "fMRI", "mean"), series.mean(axis=3), rtol=1e-6)
    np.testing.assert_array_equal(load_volume(path, "fMRI", "3"), series[..., 3])
    first = load_view(path, "fMRI", ViewConfig(fmri_reduce="0", target_shape=None))
    mean = load_view(path, "fMRI", ViewConfig(fmri_reduce="mean", target_shape=None))
    assert first.shape == mean.shape == (32, 32, 3) and not np.array_equal(first, mean)
    with pytest.raises(ValueError, match=r"bold\.nii\.gz.*5 volumes"):
        load_volume(path, "fMRI", "5")


def test_trailing_singleton_dimension_is_a_3d_volume(tmp_path):
    data = blob_volume(3)
    path = write_nifti(tmp_path / "t1.nii.gz", data[..., None])
    np.testing.assert_array_equal(load_volume(path, "sMRI"), data)


# ---------------------------------------------------------------- preprocessing


def test_smri_normalisation_inside_mask_clips_robustly_and_zeroes_background():
    volume = blob_volume(4)
    volume[10, 12, 9] = 1e6  # one hot voxel must not squash the range
    out = volumes.normalise_intensity(volume)
    mask = volume != 0
    assert out.dtype == np.float32 and np.all(out[~mask] == 0)
    assert out[mask].min() == 0.0 and out[mask].max() == 1.0 and out[10, 12, 9] == 1.0
    assert 0.3 < np.median(out[mask]) < 0.7  # without clipping the median would sit near 0
    z = volumes.normalise_intensity(volume, method="zscore")
    assert abs(z[mask].mean()) < 1e-6 and z[mask].std() == pytest.approx(1.0, abs=1e-5)
    assert np.all(z[~mask] == 0)


def test_otsu_mask_finds_the_head_on_a_noisy_background():
    rng = np.random.default_rng(5)
    volume = blob_volume(5) + rng.uniform(1, 10, size=SHAPE).astype(np.float32)
    mask = volumes.brain_mask(volume)
    truth = blob_volume(5) != 0
    assert (mask == truth).mean() > 0.99


def test_given_mask_is_used_and_resampled_with_the_volume():
    volume = blob_volume(6)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[5:15, 6:18, 4:14] = True
    out = volumes.preprocess_volume(volume, "sMRI", target_shape=(10, 12, 9), mask=mask)
    assert out.shape == (10, 12, 9)
    assert np.all(out[:2] == 0) and np.all(out[-2:] == 0) and out[5, 6, 4] > 0


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=3, max_dims=3, min_side=2, max_side=6),
                  elements=st.floats(-1e4, 1e4, width=32)))
def test_normalised_values_lie_in_unit_range_with_zero_background(volume):
    mask = volumes.brain_mask(volume)
    out = volumes.normalise_intensity(volume, mask)
    assert out.shape == volume.shape and np.all((out >= 0) & (out <= 1)) and np.all(out[~mask] == 0)


def test_dmri_is_clipped_to_unit_range_without_rescaling():
    fa = np.full(SHAPE, 0.4, dtype=np.float32)
    fa[0], fa[-1] = -0.2, 1.3
    out = volumes.preprocess_volume(fa, "dMRI", target_shape=None)
    assert out[0].max() == 0.0 and out[-1].min() == 1.0 and np.all(out[1:-1] == np.float32(0.4))
    view = views.render_view(out, ViewConfig(view="slice", axis="sagittal", index=5, size=24))
    assert np.all(view[3:21] == round(0.4 * 255)) and np.all(view[:3] == 0)  # 18 rows padded to 24


def test_resample_reaches_the_target_grid():
    out = volumes.resample(blob_volume(7), (64, 64, 64))
    assert out.shape == (64, 64, 64) and out.dtype == np.float32


# ---------------------------------------------------------------- views


@pytest.mark.parametrize("view", views.VIEWS)
@pytest.mark.parametrize("size", [32, 96])
def test_every_view_kind_gives_size_square_rgb_uint8(tmp_path, view, size):
    path = write_nifti(tmp_path / "t1.nii.gz", blob_volume(8))
    image = load_view(path, "sMRI", ViewConfig(view=view, size=size, target_shape=(16, 16, 16)))
    assert image.shape == (size, size, 3) and image.dtype == np.uint8 and image.max() > 0


def test_axial_view_puts_anterior_at_the_top_and_left_on_the_left():
    volume = np.zeros(SHAPE, dtype=np.float32)
    volume[:5, -4:, :] = 1.0  # subject's left (low x), anterior (high y)
    image = views.slice_view(volume, "axial", 0.5, SHAPE[1])
    # 24 rows (y, anterior first) x 20 columns (x, left first), padded by 2 columns each side
    assert image[0, 2, 0] == 255 and image[0, 7, 0] == 0 and image[4, 2, 0] == 0 and image[0, 0, 0] == 0


def test_orthogonal_view_holds_sagittal_coronal_axial_in_rgb():
    volume = volumes.preprocess_volume(blob_volume(9) + np.arange(SHAPE[0])[:, None, None], target_shape=None)
    image = views.orthogonal_view(volume, 24)
    for channel, axis in enumerate(["sagittal", "coronal", "axial"]):
        np.testing.assert_array_equal(image[..., channel], views.slice_view(volume, axis, 0.5, 24)[..., 0])


def test_montage_tiles_k_evenly_spaced_slices_row_by_row():
    volume = np.broadcast_to(np.linspace(0, 1, 40, dtype=np.float32), (12, 12, 40)).copy()
    image = views.montage_view(volume, "axial", k=9, size=36)[..., 0].astype(float)
    tiles = [image[r * 12:(r + 1) * 12, c * 12:(c + 1) * 12].mean() for r in range(3) for c in range(3)]
    assert np.all(np.diff(tiles) > 0)
    expected = [np.floor((i + 1) * 40 / 10) / 39 * 255 for i in range(9)]
    np.testing.assert_allclose(tiles, expected, atol=1)


@given(st.integers(1, 400))
def test_montage_grid_is_the_smallest_near_square_holding_k(k):
    rows, cols = views.montage_grid(k)
    assert rows * cols >= k > (rows - 1) * cols and cols >= rows and (cols - 1) ** 2 < k


@given(st.integers(1, 500), st.floats(0, 1))
def test_slice_fraction_maps_inside_the_axis(n, fraction):
    assert 0 <= views.slice_index(n, fraction) < n


def test_real_t1_gives_a_nontrivial_axial_view(test_data):
    path = test_data / "brain_t1" / "ch2bet.nii.gz"
    assert volumes.volume_summary(path)["shape"] == (181, 217, 181)
    image = load_view(path, "sMRI", ViewConfig(view="axial", size=32))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    brain = image[..., 0] > 0
    assert 0.3 < brain.mean() < 0.9 and image[..., 0][brain].std() > 20
    assert brain[16, 16] and not brain[0, 0]


def test_png_and_jpeg_load_as_rgb_and_resize_only_when_asked(tmp_path):
    rng = np.random.default_rng(10)
    Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (25, 15), dtype=np.uint8), "L").save(tmp_path / "b.JPG")
    for name, size in [("a.png", (30, 20)), ("b.JPG", (15, 25))]:
        image = load_image(tmp_path / name)
        assert image.mode == "RGB" and image.size == size
        assert load_image(tmp_path / name, config=ViewConfig(size=48), resize_2d=True).size == (48, 48)
    nifti = write_nifti(tmp_path / "t1.nii", blob_volume(11))
    assert load_image(nifti, config=ViewConfig(size=40)).size == (40, 40)


# ---------------------------------------------------------------- errors


def test_errors_name_the_file_and_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.nii\.gz: no such file"):
        load_view(tmp_path / "missing.nii.gz")
    (tmp_path / "scan.txt").write_text("x")
    with pytest.raises(ValueError, match=r"scan\.txt: unsupported extension '\.txt'"):
        load_image(tmp_path / "scan.txt")
    series = write_nifti(tmp_path / "bold.nii.gz", np.ones(SHAPE + (3,), dtype=np.float32))
    with pytest.raises(ValueError, match=r"bold\.nii\.gz: shape \(20, 24, 18, 3\).*modality='fMRI'"):
        load_view(series, "sMRI")
    with pytest.raises(ValueError, match=r"bold\.nii\.gz: unknown modality 'CT'"):
        load_view(series, "CT")
    with pytest.raises(ValueError, match="view='slice'"):
        ViewConfig(view="axial", axis="coronal")
    with pytest.raises(ValueError, match="must lie in"):
        ViewConfig(index=1.5)
    with pytest.raises(IndexError, match="slice index 30 is outside an axis of length 18"):
        views.slice_view(blob_volume(), "axial", 30, 8)


# ---------------------------------------------------------------- cache


def test_cache_hit_returns_identical_bytes_without_rehashing_or_loading(tmp_path, monkeypatch):
    path = write_nifti(tmp_path / "t1.nii.gz", blob_volume(12))
    hashes = counting(monkeypatch, volume_cache, "hash_file")
    loads = counting(monkeypatch, views, "load_volume")
    config = ViewConfig(view="orthogonal", size=24, target_shape=(16, 16, 16))
    cache = VolumeCache(tmp_path / "cache", racy_window_s=0)
    first = load_view(path, "sMRI", config, cache)
    second = load_view(path, "sMRI", config, cache)
    assert first.tobytes() == second.tobytes() == load_view(path, "sMRI", config).tobytes()
    assert len(hashes) == 1 and len(loads) == 2  # the second load is the uncached reference
    fresh_process_cache = VolumeCache(tmp_path / "cache", racy_window_s=0)
    assert load_view(path, "sMRI", config, fresh_process_cache).tobytes() == first.tobytes()
    assert len(hashes) == 1 and len(loads) == 2 and fresh_process_cache.counts["hits"] == 1


def test_recently_changed_file_is_hashed_on_each_access(tmp_path, monkeypatch):
    path = write_nifti(tmp_path / "t1.nii.gz", blob_volume(13))
    hashes = counting(monkeypatch, volume_cache, "hash_file")
    cache = VolumeCache(tmp_path / "cache")  # default window: the file was written just now
    cache.content_hash(path)
    cache.content_hash(path)
    assert len(hashes) == 2 and not (tmp_path / "cache" / "hashes").exists()


def test_edited_file_is_never_served_stale(tmp_path):
    path = tmp_path / "t1.nii.gz"
    config = ViewConfig(view="axial", size=16, target_shape=None)
    cache = VolumeCache(tmp_path / "cache", racy_window_s=0)
    old = load_view(write_nifti(path, blob_volume(14)), "sMRI", config, cache)
    new = load_view(write_nifti(path, blob_volume(15)), "sMRI", config, cache)
    assert not np.array_equal(old, new)
    assert new.tobytes() == load_view(path, "sMRI", config).tobytes()


def test_edit_that_keeps_size_and_mtime_is_still_seen(tmp_path):
    path = tmp_path / "t1.nii"  # uncompressed: the same shape gives the same file size
    config = ViewConfig(view="axial", size=16, target_shape=None)
    cache = VolumeCache(tmp_path / "cache", racy_window_s=0)
    write_nifti(path, blob_volume(16))
    before = os.stat(path)
    old = load_view(path, "sMRI", config, cache)
    write_nifti(path, blob_volume(17))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size and os.stat(path).st_mtime_ns == before.st_mtime_ns
    new = load_view(path, "sMRI", config, cache)
    assert not np.array_equal(old, new) and new.tobytes() == load_view(path, "sMRI", config).tobytes()


def test_kept_volume_serves_other_views_without_reloading(tmp_path, monkeypatch):
    path = write_nifti(tmp_path / "t1.nii.gz", blob_volume(18))
    loads = counting(monkeypatch, views, "load_volume")
    cache = VolumeCache(tmp_path / "cache", keep_volumes=True, racy_window_s=0)
    for view in ["axial", "orthogonal", "montage"]:
        load_view(path, "sMRI", ViewConfig(view=view, size=24, target_shape=(16, 16, 16)), cache)
    assert len(loads) == 1 and cache.counts["writes"] == 4


def _write_same_key(cache_dir: str, key: str, value: int, rounds: int) -> None:
    cache = VolumeCache(cache_dir)
    for _ in range(rounds):
        cache.save(key, np.full((64, 64, 3), value, dtype=np.uint8))


def _read_key(cache_dir: str, key: str, rounds: int, bad: multiprocessing.Value) -> None:
    cache = VolumeCache(cache_dir)
    for _ in range(rounds):
        array = cache.load(key)
        if array is not None and (array.shape != (64, 64, 3) or len(np.unique(array)) != 1):
            bad.value += 1


def test_concurrent_writers_of_one_key_leave_a_valid_entry(tmp_path):
    context = multiprocessing.get_context("fork")
    cache_dir, key = str(tmp_path / "cache"), "ab" * 32
    bad = context.Value("i", 0)
    workers = [context.Process(target=_write_same_key, args=(cache_dir, key, value, 60)) for value in (1, 2, 3)]
    workers.append(context.Process(target=_read_key, args=(cache_dir, key, 300, bad)))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0] and bad.value == 0
    final = VolumeCache(cache_dir).load(key)
    assert final.shape == (64, 64, 3) and len(np.unique(final)) == 1 and final[0, 0, 0] in (1, 2, 3)
    assert not list(Path(cache_dir).rglob("*.tmp"))


def _load_views(path: str, cache_dir: str, queue: multiprocessing.Queue) -> None:
    cache = VolumeCache(cache_dir, keep_volumes=True, racy_window_s=0)
    config = ViewConfig(view="montage", size=24, target_shape=(16, 16, 16))
    queue.put(load_view(path, "sMRI", config, cache).tobytes())


def test_concurrent_load_view_in_processes_agrees_with_uncached(tmp_path):
    path = write_nifti(tmp_path / "t1.nii.gz", blob_volume(19))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_load_views, args=(str(path), str(tmp_path / "c"), queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(30)
    expected = load_view(path, "sMRI", ViewConfig(view="montage", size=24, target_shape=(16, 16, 16)))
    assert results == [expected.tobytes()] * 3


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(st.sampled_from([np.uint8, np.int16, np.float32, np.dtype(">f8"), np.bool_]),
                  hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_cache_entries_read_back_equal_to_what_was_saved(tmp_path_factory, array):
    cache = VolumeCache(tmp_path_factory.mktemp("npy"))
    cache.save("cd" * 32, array)
    back = cache.load("cd" * 32)
    assert back.dtype == array.dtype and back.shape == array.shape and back.flags.writeable
    np.testing.assert_array_equal(back, array)


def test_truncated_or_foreign_entries_read_as_a_miss_or_through_np_load(tmp_path):
    cache = VolumeCache(tmp_path)
    entry = cache.save("ef" * 32, np.arange(100, dtype=np.int16))
    entry.write_bytes(entry.read_bytes()[:-10])
    assert cache.load("ef" * 32) is None and cache.counts["misses"] == 1
    np.save(entry, np.asfortranarray(np.arange(12.0).reshape(3, 4)))  # a header the fast path skips
    np.testing.assert_array_equal(cache.load("ef" * 32), np.arange(12.0).reshape(3, 4))


def test_slice_index_one_and_fraction_one_are_different_cache_entries(tmp_path):
    path = write_nifti(tmp_path / "t1.nii.gz", blob_volume(20) + np.arange(SHAPE[2], dtype=np.float32))
    cache = VolumeCache(tmp_path / "cache", racy_window_s=0)
    views = [load_view(path, "sMRI", ViewConfig(index=index, target_shape=None), cache) for index in (1, 1.0)]
    assert not np.array_equal(*views)
    assert views[0].tobytes() == load_view(path, "sMRI", ViewConfig(index=1, target_shape=None)).tobytes()
