"""sgsr.data.prepare: LR/HR pairs, the validation split, the patch store, bad and odd images,
the protocol acceptance on Set5/Set14, and `dvc repro prepare` from a fresh copy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import bomb_png, copy_pipeline_sources, smooth_rgb
from PIL import Image

from sgsr import layout, pretrained
from sgsr.config import parse_config
from sgsr.data import download, prepare
from sgsr.data.common import BadImageWarning, ImageTooSmallError, SkippedImageWarning
from sgsr.imaging import (
    AlphaDroppedWarning,
    ImageReadError,
    ImageTooLargeError,
    downscale,
    mod_crop,
    read_image,
    upscale_bicubic,
)
from sgsr.metric_registry import REGISTRY
from sgsr.metrics import psnr

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    if mode:
        img = img.convert(mode)
    img.save(path)
    return path


def make_raw(root: Path) -> dict[str, Path]:
    """Two train sets with interleaved names, and a test set with grayscale and odd sizes."""
    raw = root / layout.RAW
    files = {
        "b1": save(raw / "trA" / "b1.png", smooth_rgb(1, 50, 61)),
        "d1": save(raw / "trA" / "d1.png", smooth_rgb(2, 40, 40)),
        "a2": save(raw / "trB" / "a2.png", smooth_rgb(3, 48, 52)),
        "c2": save(raw / "trB" / "c2.png", smooth_rgb(4, 44, 37), mode="P"),  # palette
        "t_rgb": save(raw / "te" / "t_rgb.png", smooth_rgb(5, 30, 43)),
        "t_gray": save(raw / "te" / "t_gray.png", smooth_rgb(6, 33, 26)[..., :1]),
    }
    return files


def config(root: Path, **over: Any):
    raw = {
        "data": {"train_sets": ["trA", "trB"], "test_sets": ["te"], "metric_weights": False},
        "prepare": {"scales": [2, 4], "patch_size": 16, "stride": 8, "val_images": 1},
        "train": {"lr_patch": 4},
        # small test images: PSNR/SSIM need 2 x scale + 11 px; LPIPS would need 2 x scale + 31
        "evaluate": {"metrics": ["psnr", "ssim"]},
    }
    for key, value in over.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    return parse_config(raw, source=str(root / "params.yaml"))


def png(path: Path) -> np.ndarray:
    return read_image(path)


def test_pairs_are_modcropped_hr_and_matlab_lr(tmp_path: Path) -> None:
    files = make_raw(tmp_path)
    prepare.run(config(tmp_path), root=tmp_path)
    for s in (2, 4):
        out = tmp_path / layout.prepared_set(s, "te")
        assert sorted(p.name for p in (out / "hr").iterdir()) == ["t_gray.png", "t_rgb.png"]
        for stem in ("t_rgb", "t_gray"):
            src = read_image(files[stem])
            hr, lr = png(out / "hr" / f"{stem}.png"), png(out / "lr" / f"{stem}.png")
            assert np.array_equal(hr, mod_crop(src, s))
            assert hr.shape[0] % s == 0 and hr.shape[1] % s == 0
            assert np.array_equal(lr, downscale(hr, s))
            assert lr.shape == (hr.shape[0] // s, hr.shape[1] // s, src.shape[2])
        assert png(out / "hr" / "t_gray.png").shape[2] == 1  # grayscale stays one channel


def test_validation_split_is_last_images_by_name_across_train_sets(tmp_path: Path) -> None:
    make_raw(tmp_path)
    prepare.run(config(tmp_path, prepare__val_images=2), root=tmp_path)
    val = tmp_path / layout.prepared_set(4, layout.VAL_SET)
    # names across trA + trB sorted: a2, b1, c2, d1 -> the last two are c2 (trB), d1 (trA)
    assert sorted(p.stem for p in (val / "hr").iterdir()) == ["c2", "d1"]
    meta = json.loads((tmp_path / layout.patch_store(4) / "meta.json").read_text())
    assert sorted(src["file"] for src in meta["sources"]) == ["a2.png", "b1.png"]


def test_val_name_clash_across_sets_gets_set_prefix(tmp_path: Path) -> None:
    raw = tmp_path / layout.RAW
    save(raw / "trA" / "z.png", smooth_rgb(1, 32, 32))
    save(raw / "trB" / "z.png", smooth_rgb(2, 32, 32))
    save(raw / "trA" / "a.png", smooth_rgb(3, 32, 32))
    save(raw / "te" / "t.png", smooth_rgb(4, 32, 32))
    prepare.run(config(tmp_path, prepare__val_images=2, prepare__scales=[4]), root=tmp_path)
    val = tmp_path / layout.prepared_set(4, layout.VAL_SET)
    assert sorted(p.stem for p in (val / "hr").iterdir()) == ["trA-z", "trB-z"]


def test_patch_store_contents(tmp_path: Path) -> None:
    files = make_raw(tmp_path)
    prepare.run(config(tmp_path), root=tmp_path)
    for s in (2, 4):
        store = tmp_path / layout.patch_store(s)
        meta = json.loads((store / "meta.json").read_text())
        hr = np.load(store / "hr.npy", mmap_mode="r")
        lr = np.load(store / "lr.npy", mmap_mode="r")
        coords = np.load(store / "coords.npy")
        assert hr.dtype == lr.dtype == np.uint8
        assert hr.shape == (meta["count"], 16, 16, 3)
        assert lr.shape == (meta["count"], 16 // s, 16 // s, 3)
        assert meta["scale"] == s and meta["lr_patch_size"] == 16 // s
        expected = 0
        for src in meta["sources"]:
            image = mod_crop(read_image(files[Path(src["file"]).stem], mode="rgb"), s)
            ys = prepare.grid(image.shape[0], 16, 8)
            xs = prepare.grid(image.shape[1], 16, 8)
            assert src["count"] == len(ys) * len(xs)
            expected += src["count"]
            low = downscale(image, s)
            for k in range(src["first"], src["first"] + src["count"]):
                _, y, x = coords[k]
                assert np.array_equal(hr[k], image[y : y + 16, x : x + 16])
                # LR cut from the LR of the whole image, not the LR of the cut HR
                assert np.array_equal(lr[k], low[y // s : (y + 16) // s, x // s : (x + 16) // s])
        assert meta["count"] == expected
        # the palette image (c2) became RGB patches; d1 is the held-out val image
        assert {src["file"] for src in meta["sources"]} == {"a2.png", "b1.png", "c2.png"}


def test_patch_lr_differs_from_downscaling_the_cut_patch_at_its_border(tmp_path: Path) -> None:
    """Why LR is cut from the whole image: downscaling a cut patch mirrors at the cut."""
    make_raw(tmp_path)
    prepare.run(config(tmp_path, prepare__scales=[2]), root=tmp_path)
    store = tmp_path / layout.patch_store(2)
    hr, lr = np.load(store / "hr.npy"), np.load(store / "lr.npy")
    coords = np.load(store / "coords.npy")
    inner = [k for k in range(len(hr)) if coords[k, 1] > 0 and coords[k, 2] > 0]
    k = inner[0]
    naive = downscale(np.ascontiguousarray(hr[k]), 2)
    assert np.array_equal(naive[2:-2, 2:-2], lr[k][2:-2, 2:-2])  # same in the interior
    assert not np.array_equal(naive, lr[k])  # different at the border


def test_grid_covers_the_image_and_skips_small_sides() -> None:
    assert prepare.grid(40, 16, 8) == [0, 8, 16, 24]
    assert prepare.grid(44, 16, 8) == [0, 8, 16, 24, 28]  # last patch flush with the end
    assert prepare.grid(16, 16, 8) == [0]
    assert prepare.grid(15, 16, 8) == []


def test_small_training_images_are_skipped_with_a_warning(tmp_path: Path) -> None:
    make_raw(tmp_path)
    save(tmp_path / layout.RAW / "trA" / "0tiny.png", smooth_rgb(9, 12, 30))
    with pytest.warns(SkippedImageWarning, match=r"0tiny\.png"):
        prepare.run(config(tmp_path, prepare__scales=[4]), root=tmp_path)
    meta = json.loads((tmp_path / layout.patch_store(4) / "meta.json").read_text())
    assert "0tiny.png" not in {s["file"] for s in meta["sources"]}
    assert any("0tiny.png" in s for s in meta["skipped_small"])


def test_rgba_and_16bit_training_images_are_normalised(tmp_path: Path) -> None:
    raw = tmp_path / layout.RAW
    rgba = np.dstack([smooth_rgb(1, 32, 32), np.full((32, 32), 7, np.uint8)])
    save(raw / "tr" / "a_rgba.png", rgba)
    wide = smooth_rgb(2, 32, 32)[..., 0].astype(np.uint16) * 257
    Image.fromarray(wide).save(raw / "tr" / "b_gray16.png")
    assert Image.open(raw / "tr" / "b_gray16.png").mode.startswith("I;16")
    save(raw / "tr" / "c_last.png", smooth_rgb(3, 32, 32))
    save(raw / "te" / "t.png", smooth_rgb(4, 32, 32))
    cfg = config(tmp_path, data__train_sets=["tr"], prepare__scales=[4])
    with pytest.warns(AlphaDroppedWarning, match=r"partly transparent: .*a_rgba\.png"):
        prepare.run(cfg, root=tmp_path)
    store = tmp_path / layout.patch_store(4)
    hr = np.load(store / "hr.npy")
    meta = json.loads((store / "meta.json").read_text())
    first = {s["file"]: s["first"] for s in meta["sources"]}
    assert np.array_equal(hr[first["a_rgba.png"]], rgba[:16, :16, :3])  # alpha dropped
    g = hr[first["b_gray16.png"]]
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 0], g[..., 2])
    assert np.array_equal(g[..., 0], (wide[:16, :16] / 257).round().astype(np.uint8))


def _truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("kind", ["truncated", "zero-byte", "not-an-image"])
def test_bad_training_image_error_or_skip(tmp_path: Path, kind: str) -> None:
    make_raw(tmp_path)
    bad = save(tmp_path / layout.RAW / "trA" / "a0bad.png", smooth_rgb(7, 40, 40))
    if kind == "truncated":  # header fine, pixels missing: found only when decoding
        _truncated(bad)
    elif kind == "zero-byte":
        bad.write_bytes(b"")
    else:
        bad.write_text("hello")
    with pytest.raises(ImageReadError, match=r"a0bad\.png"):
        prepare.run(config(tmp_path), root=tmp_path)
    with pytest.warns(BadImageWarning, match=r"a0bad\.png"):
        prepare.run(config(tmp_path, data__on_bad_image="skip"), root=tmp_path)
    store = tmp_path / layout.patch_store(4)
    meta = json.loads((store / "meta.json").read_text())
    assert "a0bad.png" not in {s["file"] for s in meta["sources"]}
    assert np.load(store / "hr.npy", mmap_mode="r").shape[0] == meta["count"] > 0
    assert meta["count"] == sum(s["count"] for s in meta["sources"])


def test_on_bad_image_through_download_and_prepare(tmp_path: Path) -> None:
    """Config level: a corrupt file in a `dir` mirror, error vs skip, end to end."""
    mirror = tmp_path / "mirror"
    save(mirror / "Tr" / "good.png", smooth_rgb(1, 40, 40))
    save(mirror / "Tr" / "other.png", smooth_rgb(2, 40, 40))
    _truncated(save(mirror / "Tr" / "broken.png", smooth_rgb(3, 64, 64)))
    save(mirror / "Te" / "t.png", smooth_rgb(4, 24, 24))

    def cfg(policy: str):
        return config(
            tmp_path,
            data__source="dir",
            data__dir=str(mirror),
            data__train_sets=["Tr"],
            data__test_sets=["Te"],
            data__on_bad_image=policy,
            prepare__scales=[4],
        )

    with pytest.raises(ImageReadError, match=re.escape(str(mirror / "Tr" / "broken.png"))):
        download.run(cfg("error"), root=tmp_path)
    with pytest.warns(BadImageWarning, match=r"broken\.png"):
        download.run(cfg("skip"), root=tmp_path)
    prepare.run(cfg("skip"), root=tmp_path)
    raw = sorted(p.name for p in (tmp_path / layout.RAW / "Tr").iterdir())
    assert raw == ["good.png", "other.png"]
    assert (tmp_path / layout.prepared_set(4, "val") / "hr" / "other.png").is_file()


# --- images too small to score, too large to decode, transparent ---------------------


def _tiny_test_set(tmp_path: Path) -> Path:
    make_raw(tmp_path)
    return save(tmp_path / layout.RAW / "te" / "tiny.png", smooth_rgb(8, 8, 8))


def test_test_image_too_small_for_the_protocol_is_refused_naming_it(tmp_path: Path) -> None:
    """An 8x8 test image at x4 used to be prepared, then scored PSNR NaN ("identical")."""
    tiny = _tiny_test_set(tmp_path)
    with pytest.raises(ImageTooSmallError) as info:
        prepare.run(config(tmp_path, prepare__scales=[4]), root=tmp_path)
    msg = str(info.value)
    assert f"{tiny}: 8x8 px" in msg and "at least 19x19 px" in msg
    assert "data.on_bad_image: skip" in msg
    assert not (tmp_path / layout.prepared_set(4, "te")).exists()


def test_test_image_too_small_is_skipped_under_skip(tmp_path: Path) -> None:
    tiny = _tiny_test_set(tmp_path)
    cfg = config(tmp_path, prepare__scales=[2, 4], data__on_bad_image="skip")
    with pytest.warns(BadImageWarning, match=re.escape(f"{tiny}: 8x8 px")):
        prepare.run(cfg, root=tmp_path)
    for s in (2, 4):
        hr = tmp_path / layout.prepared_set(s, "te") / "hr"
        assert sorted(p.name for p in hr.iterdir()) == ["t_gray.png", "t_rgb.png"]


def test_the_minimum_follows_the_configured_metrics() -> None:
    assert prepare.protocol_min_side(4, ["psnr"]) == 9
    assert prepare.protocol_min_side(4, ["psnr", "ssim"]) == 19
    assert prepare.protocol_min_side(2, ["psnr", "ssim", "ms_ssim"]) == 15
    assert prepare.protocol_min_side(4, ["psnr", "lpips"]) == 39


MIN_SIDE = {name: spec.min_side for name, spec in REGISTRY.items()}


@pytest.mark.parametrize(
    "metric", sorted(m for m, spec in REGISTRY.items() if spec.scope == "image")
)
def test_metric_min_side_is_what_the_metric_needs(metric: str) -> None:
    """Each registry min_side is measured: the metric is finite at that side (border 0)
    and fails or is not finite one pixel below. (FID and KID pool samples over a set: no
    minimum.)"""
    from sgsr import metrics

    need = MIN_SIDE[metric]
    rng = np.random.default_rng(0)
    kwargs = {}
    if metric == "lpips":
        import lpips  # random backbone: only the network's input-size limits are exercised

        kwargs["net"] = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    elif metric in ("lpips_vgg", "dists"):
        kwargs["net"] = metrics.LOADERS[metric](None, random_backbone=True)
    fn = metrics.METRICS[metric].fn

    def value(side: int) -> float:
        a, b = (rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(2))
        return fn(a, b, 0, **kwargs)

    assert np.isfinite(value(need))
    if need > 1:
        try:
            below = value(need - 1)
        except (ValueError, RuntimeError):
            return
        assert not np.isfinite(below)


@pytest.mark.parametrize("where", ["tr", "te"])
def test_huge_images_in_raw_are_refused_from_the_header(tmp_path: Path, where: str) -> None:
    """A bomb that reached data/raw (copied by hand, or from an archive) is never decoded:
    the patch store's size pass and the test pairs both check the header first."""
    make_raw(tmp_path)
    bomb = bomb_png(tmp_path / layout.RAW / ("trA" if where == "tr" else "te") / "0bomb.png")
    cfg = config(tmp_path, prepare__scales=[4])
    with pytest.raises(ImageTooLargeError, match=re.escape(f"{bomb}: the header declares")):
        prepare.run(cfg, root=tmp_path)
    skip = config(tmp_path, prepare__scales=[4], data__on_bad_image="skip")
    with pytest.warns(BadImageWarning, match=re.escape(f"{bomb}: the header declares 30000x30000")):
        prepare.run(skip, root=tmp_path)


def test_transparency_is_reported_once_per_set_naming_the_files(tmp_path: Path) -> None:
    make_raw(tmp_path)
    clear = np.dstack([smooth_rgb(1, 40, 40), np.zeros((40, 40), np.uint8)])
    half = np.dstack([smooth_rgb(2, 40, 40), np.full((40, 40), 128, np.uint8)])
    opaque = np.dstack([smooth_rgb(3, 40, 40), np.full((40, 40), 255, np.uint8)])
    save(tmp_path / layout.RAW / "te" / "clear.png", clear)
    save(tmp_path / layout.RAW / "te" / "half.png", half)
    save(tmp_path / layout.RAW / "te" / "opaque.png", opaque)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare.run(config(tmp_path), root=tmp_path)  # two scales, one warning
    notes = [str(w.message) for w in caught if issubclass(w.category, AlphaDroppedWarning)]
    assert len(notes) == 1, notes
    note = notes[0]
    assert "test set te" in note
    assert re.search(r"fully transparent .*clear\.png", note)
    assert re.search(r"partly transparent: .*half\.png", note)
    assert "opaque.png" not in note  # an all-opaque alpha channel loses nothing


def test_geometry_and_split_errors_name_the_keys(tmp_path: Path) -> None:
    make_raw(tmp_path)
    with pytest.raises(ValueError, match=r"prepare\.patch_size .* multiples of every scale"):
        prepare.run(config(tmp_path, prepare__scales=[3], prepare__patch_size=16), root=tmp_path)
    with pytest.raises(ValueError, match=r"prepare\.val_images \(4\)"):
        prepare.run(config(tmp_path, prepare__val_images=4), root=tmp_path)
    with pytest.raises(FileNotFoundError, match="sgsr download"):
        prepare.run(config(tmp_path, data__test_sets=["Set5"]), root=tmp_path)


def test_rerun_replaces_outputs_atomically(tmp_path: Path) -> None:
    make_raw(tmp_path)
    cfg = config(tmp_path, prepare__scales=[4])
    prepare.run(cfg, root=tmp_path)
    out = tmp_path / layout.PREPARED / "x4"
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    prepare.run(cfg, root=tmp_path)
    second = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert first == second  # deterministic
    hidden = [p for p in (tmp_path / layout.PREPARED).rglob(".*")]
    assert hidden == []  # no staging folders or temp files left


# --- protocol acceptance -------------------------------------------------------------------------


@pytest.mark.dataset
def test_protocol_bicubic_baseline_set5_set14_x4(shared_datasets: Path, tmp_path: Path) -> None:
    """LR made by prepare and upscaled with bicubic reproduces the published table."""
    cfg = parse_config(
        {
            "data": {
                "source": "dir",
                "dir": str(shared_datasets),
                "train_sets": ["Set5"],
                "test_sets": ["Set5", "Set14"],
                "metric_weights": False,
            },
            "prepare": {"scales": [4], "patch_size": 96, "stride": 96, "val_images": 0},
        },
        source=str(tmp_path / "params.yaml"),
    )
    download.run(cfg, root=tmp_path)
    prepare.run(cfg, root=tmp_path)
    published = {"Set5": 28.42, "Set14": 26.00}
    for name, expected in published.items():
        folder = tmp_path / layout.prepared_set(4, name)
        scores = [
            psnr(upscale_bicubic(png(lr), 4), png(folder / "hr" / lr.name), border=4)
            for lr in sorted((folder / "lr").iterdir())
        ]
        assert len(scores) == {"Set5": 5, "Set14": 14}[name]
        assert abs(np.mean(scores) - expected) <= 0.02, (name, np.mean(scores))


# --- dvc ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dvc_repro_prepare_on_sample_source_from_a_fresh_copy(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    bindir = Path(sys.executable).parent
    dvc = bindir / "dvc"
    if not dvc.exists():
        pytest.skip(f"dvc not installed in {bindir}")
    repo_data_existed = (REPO / "data").exists()
    work = tmp_path / "pipeline"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    copy_pipeline_sources(work)  # the code the stages depend on (root: .)
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "SGSR_OFFLINE": "1",  # tests use no network: the weights are recorded as absent
        "SGSR_CACHE_DIR": str(tmp_path / "cache"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }

    def sh(*cmd: str | Path) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [str(c) for c in cmd], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )
        assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}\n{res.stderr}"
        return res

    sh("git", "init", "-q")
    sh(dvc, "init", "-q")
    sh(dvc, "config", "core.analytics", "false")
    sh(dvc, "repro", "prepare")
    for name in ("sample_train", "sample_test"):
        assert list((work / "data" / "raw" / name).glob("*.png"))
    manifest = pretrained.load_manifest(work / layout.PRETRAINED_MANIFEST)
    assert all(not e["present"] and "SGSR_OFFLINE" in e["reason"] for e in manifest.values())
    x4 = work / layout.PREPARED / "x4"
    assert list((x4 / "sample_test" / "lr").glob("*.png"))
    assert list((x4 / layout.VAL_SET / "hr").glob("*.png"))
    assert json.loads((x4 / "patches" / "meta.json").read_text())["count"] > 0
    assert (work / "dvc.lock").is_file()
    status = sh(dvc, "status", "prepare")
    assert "changed" not in status.stdout
    assert (REPO / "data").exists() == repo_data_existed  # the repo's own data/ untouched
