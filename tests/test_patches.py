"""sgsr.data.patches: LR/HR alignment under every augmentation, determinism by key, worker-count
independence, and the sampler's resume and rank arithmetic."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_rgb
from torch.utils.data import DataLoader

from sgsr.data.patches import PatchDataset, PatchSampler, augment
from sgsr.data.prepare import build_patch_store
from sgsr.imaging import downscale, write_image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=[2, 4], ids=["x2", "x4"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    scale = request.param
    root = tmp_path_factory.mktemp(f"store{scale}")
    images = []
    for i, (h, w) in enumerate([(64, 80), (72, 64), (48, 100)]):
        path = root / "raw" / f"im{i}.png"
        write_image(path, smooth_rgb(i, h, w, noise=10))
        images.append(("raw", path))
    build_patch_store(images, root / "patches", scale, patch_size=32, stride=16)
    return root / "patches"


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """Dataset output (C, H, W) float in [0, 1] -> the stored uint8 (H, W, C), exactly."""
    return np.round(t.permute(1, 2, 0).numpy().astype(np.float64) * 255).astype(np.uint8)


def test_items_shapes_range_and_dtype(store: Path) -> None:
    ds = PatchDataset(store, lr_patch=6, seed=0)
    lr, hr = ds[(0, 0)]
    s = ds.scale
    assert lr.shape == (3, 6, 6) and hr.shape == (3, 6 * s, 6 * s)
    assert lr.dtype == hr.dtype == torch.float32
    assert float(lr.min()) >= 0.0 and float(hr.max()) <= 1.0
    assert len(ds) == ds.meta["count"] > 0


def test_lr_and_hr_stay_aligned_under_every_augmentation(store: Path) -> None:
    """downscale(HR crop) reproduces the LR crop *exactly* away from the crop border.

    Tolerance: 0 grey levels in the interior (LR pixels at least 2 from the edge: the bicubic
    antialias kernel reaches 2 LR pixels, so nearer pixels depend on image content outside the
    crop). At the border the two legitimately differ, so it is not compared.
    """
    ds = PatchDataset(store, lr_patch=8, augment=True, seed=3)
    s, m = ds.scale, 2
    seen = set()
    hr_all, lr_all = ds.arrays()
    for draw in range(48):
        index = draw % len(ds)
        lr, hr = (to_uint8(t) for t in ds[(index, draw)])
        rng = np.random.default_rng((3, draw))  # replay the dataset's choices
        y, x = rng.integers(0, ds.lr_size - 8 + 1, size=2)
        flags = tuple(bool(v) for v in rng.integers(0, 2, size=3))
        seen.add(flags)
        expected_lr = augment(lr_all[index, y : y + 8, x : x + 8], *flags)
        assert np.array_equal(lr, expected_lr)
        assert np.array_equal(
            hr, augment(hr_all[index, y * s : (y + 8) * s, x * s : (x + 8) * s], *flags)
        )
        again = downscale(hr, s)
        assert np.array_equal(again[m:-m, m:-m], lr[m:-m, m:-m]), (draw, flags)
        # sensitivity: the same check fails for an HR shifted by one LR pixel
        shifted = downscale(np.ascontiguousarray(np.roll(hr, s, axis=1)), s)
        assert not np.array_equal(shifted[m:-m, m:-m], lr[m:-m, m:-m])
    assert len(seen) == 8  # all symmetries of the square occurred


def test_item_is_a_pure_function_of_its_key(store: Path) -> None:
    a = PatchDataset(store, lr_patch=6, seed=1)
    b = PatchDataset(store, lr_patch=6, seed=1)
    for key in [(0, 0), (1, 5), (0, 123456)]:
        assert all(torch.equal(u, v) for u, v in zip(a[key], b[key], strict=True))
    assert not torch.equal(a[(0, 0)][1], a[(0, 1)][1])  # another draw, another crop/flip
    assert torch.equal(a[1][0], a[(1, 0)][0])  # an int key means draw 0


def test_augment_off_only_crops(store: Path) -> None:
    ds = PatchDataset(store, lr_patch=6, augment=False, seed=0)
    _, lr_all = ds.arrays()
    for draw in range(10):
        lr, _ = ds[(2, draw)]
        y, x = np.random.default_rng((0, draw)).integers(0, ds.lr_size - 6 + 1, size=2)
        assert np.array_equal(to_uint8(lr), lr_all[2, y : y + 6, x : x + 6])


def _batches(store: Path, seed: int, workers: int, n: int = 3, start: int = 0) -> list:
    ds = PatchDataset(store, lr_patch=6, seed=seed)
    sampler = PatchSampler(len(ds), batch_size=4, seed=seed, start=start)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers)
    return list(itertools.islice(iter(loader), n))


def test_same_seed_same_batches_other_seed_other_batches(store: Path) -> None:
    a, b, c = _batches(store, 0, 0), _batches(store, 0, 0), _batches(store, 1, 0)
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x[1], y[1]) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("store", [4], indirect=True, ids=["x4"])
def test_batches_do_not_depend_on_worker_count_or_resume(store: Path) -> None:
    serial = _batches(store, 7, 0, n=4)
    parallel = _batches(store, 7, 2, n=4)
    assert all(torch.equal(x[1], y[1]) for x, y in zip(serial, parallel, strict=True))
    resumed = _batches(store, 7, 0, n=2, start=2 * 4)  # resume after two steps of batch 4
    assert all(torch.equal(x[0], y[0]) for x, y in zip(serial[2:], resumed, strict=True))


def test_dataset_pickles_without_its_memory_map(store: Path) -> None:
    ds = PatchDataset(store, lr_patch=6)
    ds[(0, 0)]
    assert ds._arrays is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._arrays is None  # a spawned worker maps its own
    assert torch.equal(clone[(0, 4)][1], ds[(0, 4)][1])
    assert len(pickle.dumps(ds)) < 10_000


def test_dataset_argument_errors(store: Path) -> None:
    with pytest.raises(ValueError, match="lr_patch"):
        PatchDataset(store, lr_patch=1000)
    ds = PatchDataset(store, lr_patch=4)
    with pytest.raises(IndexError):
        ds[(len(ds), 0)]
    with pytest.raises(FileNotFoundError, match="sgsr prepare"):
        PatchDataset(store.parent / "nowhere", lr_patch=4)


# --- sampler ------------------------------------------------------------------------------------


def take(sampler: PatchSampler, n: int) -> list[tuple[int, int]]:
    return list(itertools.islice(iter(sampler), n))


def test_sampler_epochs_are_permutations_with_draw_equal_to_global_index() -> None:
    keys = take(PatchSampler(10, batch_size=3, seed=0), 30)
    assert [d for _, d in keys] == list(range(30))
    for e in range(3):
        assert sorted(i for i, _ in keys[10 * e : 10 * e + 10]) == list(range(10))
    assert [i for i, _ in keys[:10]] != [i for i, _ in keys[10:20]]  # reshuffled per epoch


def test_sampler_seed_changes_order() -> None:
    a = take(PatchSampler(50, 4, seed=0), 50)
    b = take(PatchSampler(50, 4, seed=0), 50)
    c = take(PatchSampler(50, 4, seed=1), 50)
    assert a == b and a != c


@pytest.mark.parametrize("k", [0, 1, 7, 13, 29])
def test_sampler_start_equals_skipping(k: int) -> None:
    full = take(PatchSampler(11, batch_size=4, seed=5, rank=1, world_size=3), k + 25)
    resumed = take(PatchSampler(11, batch_size=4, seed=5, start=k, rank=1, world_size=3), 25)
    assert resumed == full[k:]


def test_sampler_start_is_cheap_far_into_training() -> None:
    far = PatchSampler(1000, batch_size=16, seed=0, start=10**9)
    (index, draw), *_ = take(far, 1)
    assert draw == 10**9 and 0 <= index < 1000


def test_sampler_ranks_are_disjoint_and_cover_the_single_process_stream() -> None:
    world, batch, steps = 3, 4, 5
    per_rank = [
        take(PatchSampler(17, batch, seed=2, rank=r, world_size=world), batch * steps)
        for r in range(world)
    ]
    draws = [{d for _, d in keys} for keys in per_rank]
    assert all(not (draws[a] & draws[b]) for a in range(world) for b in range(a + 1, world))
    single = take(PatchSampler(17, batch * world, seed=2), batch * world * steps)
    for step in range(steps):  # step t of all ranks together = step t of one big process
        together = [k for r in range(world) for k in per_rank[r][step * batch : (step + 1) * batch]]
        assert together == single[step * batch * world : (step + 1) * batch * world]


def test_sampler_argument_errors() -> None:
    with pytest.raises(ValueError, match="rank"):
        PatchSampler(10, 4, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="n_patches"):
        PatchSampler(0, 4, seed=0)
