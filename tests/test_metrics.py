from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sgsr import imaging, metrics, pretrained
from sgsr.metric_registry import check_metric_names
from sgsr.metrics import MetricUnavailable


def _pair(shape=(48, 56, 3), noise=12, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish HR image and a noisy copy of it (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = 120 + 60 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None]
    hr = np.clip(base + rng.normal(0, 20, size=shape), 0, 255).astype(np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-noise, noise + 1, size=shape), 0, 255)
    return sr.astype(np.uint8), hr


# --------------------------------------------------------------------------------------------
# the acceptance test of the protocol: published bicubic numbers
# --------------------------------------------------------------------------------------------
PUBLISHED = {  # (set, scale): (PSNR, SSIM) from ../shared/datasets/README.md
    ("Set5", 2): (33.66, 0.9299),
    ("Set14", 2): (30.24, 0.8688),
    ("Set5", 3): (30.39, 0.8682),
    ("Set14", 3): (27.55, 0.7742),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 4): (26.00, 0.7027),
}
# The same table measured here with rounded Y (PSNR to 3 decimals, as the lead measured it).
MEASURED_PSNR = {
    ("Set5", 2): 33.649,
    ("Set14", 2): 30.224,
    ("Set5", 3): 30.386,
    ("Set14", 3): 27.533,
    ("Set5", 4): 28.419,
    ("Set14", 4): 25.993,
}


@pytest.mark.dataset
def test_bicubic_reproduces_published_table(shared_datasets: Path) -> None:
    for (name, scale), (pub_psnr, pub_ssim) in PUBLISHED.items():
        psnrs, ssims = [], []
        for path in imaging.list_images(shared_datasets / name):
            hr = imaging.mod_crop(imaging.read_image(path), scale)
            sr = imaging.upscale_bicubic(imaging.downscale(hr, scale), scale)
            psnrs.append(metrics.psnr(sr, hr, scale))
            ssims.append(metrics.ssim(sr, hr, scale))
        p, s = float(np.mean(psnrs)), float(np.mean(ssims))
        assert abs(p - MEASURED_PSNR[(name, scale)]) < 0.0006, (name, scale, p)
        assert abs(p - pub_psnr) < 0.02, (name, scale, p, pub_psnr)
        assert abs(s - pub_ssim) < 0.002, (name, scale, s, pub_ssim)


@pytest.mark.dataset
def test_single_channel_image_is_scored_on_its_own_channel(shared_datasets: Path) -> None:
    """Set14 bridge.png is mode L: scoring it as Y of replicated RGB would differ."""
    hr = imaging.mod_crop(imaging.read_image(shared_datasets / "Set14" / "bridge.png"), 4)
    assert hr.shape[2] == 1
    sr = imaging.upscale_bicubic(imaging.downscale(hr, 4), 4)
    own = metrics.psnr(sr, hr, 4)
    as_rgb = metrics.psnr(np.repeat(sr, 3, 2), np.repeat(hr, 3, 2), 4)
    assert as_rgb - own > 0.5  # Y compresses the range to [16, 235]: inflated PSNR


# --------------------------------------------------------------------------------------------
# PSNR / SSIM properties and an independent reference
# --------------------------------------------------------------------------------------------
def test_identical_images_give_inf_psnr_and_unit_ssim() -> None:
    _, hr = _pair()
    assert metrics.psnr(hr, hr, 2) == math.inf
    assert metrics.ssim(hr, hr, 2) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ms_ssim(hr, hr, 2) == pytest.approx(1.0, abs=1e-6)  # float32 (see ms_ssim)
    assert metrics.gmsd(hr, hr, 2) == pytest.approx(0.0, abs=1e-9)
    assert metrics.haarpsi(hr, hr, 2) == pytest.approx(1.0, abs=1e-9)


def test_psnr_matches_its_formula_on_rounded_y() -> None:
    sr, hr = _pair()
    a = np.round(imaging.rgb_to_y(sr))[3:-3, 3:-3]
    b = np.round(imaging.rgb_to_y(hr))[3:-3, 3:-3]
    expected = 10 * np.log10(255.0**2 / np.mean((a - b) ** 2))
    assert metrics.psnr(sr, hr, 3) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", ["psnr", "ssim", "ms_ssim", "gmsd", "haarpsi"])
def test_full_reference_metrics_are_symmetric_and_get_worse_with_noise(name: str) -> None:
    fn = metrics.METRICS[name]
    sr, hr = _pair(noise=8)
    worse, _ = _pair(noise=40)
    assert fn(sr, hr, 4) == pytest.approx(fn(hr, sr, 4), rel=1e-6)  # piq runs in float32
    better_first = fn(sr, hr, 4), fn(worse, hr, 4)
    if fn.higher_is_better:
        assert better_first[0] > better_first[1]
    else:
        assert better_first[0] < better_first[1]


@pytest.mark.parametrize(
    ("shape", "border"), [((40, 52, 3), 2), ((37, 45, 1), 3), ((64, 64, 3), 4)]
)
def test_ssim_matches_skimage_reference(shape: tuple[int, int, int], border: int) -> None:
    from skimage.metrics import structural_similarity

    sr, hr = _pair(shape=shape, noise=25, seed=shape[0])
    a = imaging.luminance(sr)[border:-border, border:-border]
    b = imaging.luminance(hr)[border:-border, border:-border]
    ref = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert metrics.ssim(sr, hr, border) == pytest.approx(ref, abs=1e-6)
    assert 0.3 < ref < 0.999  # a non-trivial comparison


def test_gaussian_window_is_matlab_fspecial() -> None:
    g = metrics.gaussian_window()
    assert g.shape == (11,) and g.sum() == pytest.approx(1.0)
    x = np.arange(-5, 6)
    w2 = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    assert np.allclose(np.outer(g, g), w2 / w2.sum(), atol=1e-15)


def test_shape_mismatch_and_tiny_images_are_refused() -> None:
    sr, hr = _pair()
    with pytest.raises(ValueError, match="differs"):
        metrics.psnr(sr[:-1], hr, 2)
    tiny = hr[:14, :14]
    with pytest.raises(ValueError, match="at least 11"):
        metrics.ssim(tiny, tiny, 2)
    with pytest.raises(ValueError, match="at least 11"):
        metrics.ms_ssim(tiny, tiny, 2)


def test_ms_ssim_reduces_scales_for_small_images() -> None:
    assert metrics.ms_ssim_levels(161, 400) == 5
    assert metrics.ms_ssim_levels(160, 400) == 4
    assert metrics.ms_ssim_levels(41, 41) == 3
    assert metrics.ms_ssim_levels(10, 41) == 0
    sr, hr = _pair(shape=(52, 60, 3))  # 44 px after a 4 px border: 3 scales
    value = metrics.ms_ssim(sr, hr, 4)
    assert 0 < value < 1


@pytest.mark.parametrize(
    ("shape", "border"), [((180, 196, 3), 4), ((52, 61, 3), 4), ((90, 77, 1), 2)]
)
def test_ms_ssim_equals_piq_to_float32_rounding(shape: tuple[int, int, int], border: int) -> None:
    """The separable Gaussian is piq's algorithm: within 3e-6 of piq in float32 and 1e-6 of
    piq in float64 (5 scales, and fewer with piq's renormalised weights; odd sizes pad)."""
    import piq

    sr, hr = _pair(shape=shape, noise=25, seed=shape[1])
    ours = metrics.ms_ssim(sr, hr, border)
    levels = metrics.ms_ssim_levels(shape[0] - 2 * border, shape[1] - 2 * border)
    weights = None if levels == 5 else torch.tensor(metrics.MS_SSIM_WEIGHTS[:levels])
    for dtype, tol in ((torch.float32, 3e-6), (torch.float64, 1e-6)):
        x, y = metrics._rgb01(sr, border, dtype), metrics._rgb01(hr, border, dtype)
        w = None if weights is None else weights.to(dtype)
        ref = float(piq.multi_scale_ssim(x, y, data_range=1.0, scale_weights=w))
        assert ours == pytest.approx(ref, abs=tol), (dtype, levels)
    assert 0.2 < ours < 0.999


def test_grayscale_is_replicated_for_piq_metrics() -> None:
    sr, hr = _pair(shape=(48, 48, 1))
    for name in ("ms_ssim", "gmsd", "haarpsi"):
        fn = metrics.METRICS[name]
        gray = fn(sr, hr, 2)
        rgb = fn(np.repeat(sr, 3, 2), np.repeat(hr, 3, 2), 2)
        assert gray == pytest.approx(rgb, abs=1e-12), name


def test_registry_names_and_directions() -> None:
    assert set(metrics.METRICS) == {
        "psnr", "ssim", "ms_ssim", "gmsd", "haarpsi", "lpips", "fid", "kid", "dists", "lpips_vgg"
    }  # fmt: skip
    lower = {n for n, m in metrics.METRICS.items() if not m.higher_is_better}
    assert lower == {"gmsd", "lpips", "fid", "kid", "dists", "lpips_vgg"}
    assert {n for n, m in metrics.METRICS.items() if m.scope == "set"} == {"fid", "kid"}
    with pytest.raises(ValueError, match="unknown metric"):
        check_metric_names(["psnr", "niqe"])


# --------------------------------------------------------------------------------------------
# LPIPS / FID plumbing (random backbones: never a reportable number)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lpips_random() -> torch.nn.Module:
    torch.manual_seed(0)  # random heads can weigh a layer negatively: fixed, whatever runs first
    return metrics.load_lpips(None, random_backbone=True)


@pytest.fixture(scope="module")
def fid_random() -> torch.nn.Module:
    torch.manual_seed(0)
    return metrics.load_fid(None, random_backbone=True, dims=64)


def test_lpips_plumbing(lpips_random: torch.nn.Module) -> None:
    sr, hr = _pair(shape=(40, 40, 3), noise=30)
    assert metrics.lpips_distance(hr, hr, 2, lpips_random) == 0.0
    d = metrics.lpips_distance(sr, hr, 2, lpips_random)
    assert d > 0
    assert d == pytest.approx(metrics.lpips_distance(hr, sr, 2, lpips_random), rel=1e-5)
    gray_sr, gray_hr = _pair(shape=(40, 40, 1))
    assert metrics.lpips_distance(gray_sr, gray_hr, 2, lpips_random) > 0
    assert "random" in lpips_random.sgsr_weights


def test_lpips_from_its_two_sides_equals_the_package_forward_exactly(
    lpips_random: torch.nn.Module,
) -> None:
    """The HR side computed once (as the reference cache keeps it, float32 round trip through
    numpy) gives the value of ``lpips.LPIPS.forward`` on the pair, bit for bit."""
    for shape in ((40, 44, 3), (36, 40, 1)):
        sr, hr = _pair(shape=shape, noise=30)
        x = metrics._rgb01(sr, 2, torch.float32)
        y = metrics._rgb01(hr, 2, torch.float32)
        with torch.inference_mode():
            package = float(lpips_random(x, y, normalize=True).item())
        stored = [
            torch.from_numpy(f.numpy().copy()) for f in metrics.lpips_features(hr, 2, lpips_random)
        ]
        assert metrics.lpips_distance(sr, hr, 2, lpips_random) == package
        assert metrics.lpips_distance(sr, hr, 2, lpips_random, reference=stored) == package
        assert package != 0


def test_fid_plumbing(fid_random: torch.nn.Module) -> None:
    rng = np.random.default_rng(0)
    hr = [_pair(shape=(68, 68, 3), seed=i)[1] for i in range(2)]  # 2 x 16 patches of 16 px
    assert metrics.fid_patches(hr[0], 2, 16).shape == (16, 3, 16, 16)
    same = metrics.fid(hr, hr, 2, fid_random, patch=16)
    assert abs(same) < 1e-6

    def noisy(images: list[np.ndarray], sigma: float) -> list[np.ndarray]:
        return [np.clip(i + rng.normal(0, sigma, i.shape), 0, 255).astype(np.uint8) for i in images]

    small = metrics.fid(noisy(hr, 10), hr, 2, fid_random, patch=16)
    large = metrics.fid(noisy(hr, 60), hr, 2, fid_random, patch=16)
    assert 0 < small < large


def test_frechet_distance_equals_pytorch_fid_formula() -> None:
    """Our eigenvalue form of tr(sqrt(S1 S2)) against pytorch-fid's sqrtm, full-rank case."""
    import warnings

    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 16))
    b = rng.normal(size=(250, 16)) @ rng.normal(size=(16, 16)) * 0.3 + 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = calculate_frechet_distance(
            a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
        )
    assert metrics.frechet_distance(a, b) == pytest.approx(ref, rel=1e-9)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fid_needs_patches(fid_random: torch.nn.Module) -> None:
    _, hr = _pair(shape=(20, 20, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.fid([hr], [hr], 2, fid_random, patch=16)


# --------------------------------------------------------------------------------------------
# where the weights come from (sgsr.pretrained): the pinned file, else null with a reason
# --------------------------------------------------------------------------------------------
def _fake(monkeypatch: pytest.MonkeyPatch, folder: Path, name: str, tensors: dict) -> Path:
    """Write `tensors` as weight `name` and pin them, standing in for the real file's pin."""
    blob = pretrained.safetensors_bytes(tensors, {})
    monkeypatch.setitem(
        pretrained.WEIGHTS,
        name,
        dataclasses.replace(pretrained.WEIGHTS[name], sha256=hashlib.sha256(blob).hexdigest()),
    )
    path = folder / pretrained.WEIGHTS[name].filename
    path.write_bytes(blob)
    return path


def test_missing_folder_or_file_is_unavailable_with_the_manifest_reason(tmp_path: Path) -> None:
    with pytest.raises(MetricUnavailable, match="no pretrained-weights folder"):
        metrics.load_lpips(None)
    with pytest.raises(MetricUnavailable, match=r"manifest\.json not found"):
        metrics.load_lpips(tmp_path)
    manifest = {
        "format": 2,
        "weights": {
            "lpips_alex": {
                "path": "lpips_alex.safetensors",
                "sha256": pretrained.WEIGHTS["lpips_alex"].sha256,
                "present": False,
                "reason": "offline: no network",
                "source": None,
            }
        },
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MetricUnavailable, match="offline: no network"):
        metrics.load_lpips(tmp_path)
    with pytest.raises(MetricUnavailable, match="no entry for fid_inception"):
        metrics.load_fid(tmp_path)


def test_wrong_checksum_gives_null_reason_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in (metrics.LPIPS_WEIGHTS, metrics.FID_WEIGHTS):  # files, but not the pinned ones
        (tmp_path / pretrained.WEIGHTS[name].filename).write_bytes(b"not the real weights")
    with caplog.at_level(logging.WARNING, logger="sgsr.metrics"):
        nets, unavailable = metrics.load_backbones(["psnr", "lpips", "fid"], tmp_path)
    assert nets == {}
    assert set(unavailable) == {"lpips", "fid"}
    assert "differs from the pinned" in unavailable["lpips"]
    assert "differs from the pinned" in unavailable["fid"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and all("\n" not in w for w in warned)
    assert any("lpips unavailable" in w for w in warned)


def test_lpips_really_loads_the_verified_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.models import alexnet

    torch.manual_seed(123)
    state = {k: v for k, v in alexnet(weights=None).state_dict().items() if "features" in k}
    widths = [64, 192, 384, 256, 256]
    heads = {f"lin{k}.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(widths)}
    path = _fake(monkeypatch, tmp_path, "lpips_alex", {**state, **heads})
    net = metrics.load_lpips(tmp_path)
    trunk = dict(net.net.named_parameters())
    assert len(trunk) == len(state) == 10
    for name, param in trunk.items():
        assert torch.equal(param, state["features." + name.split(".", 1)[1]]), name
    assert torch.equal(net.lin4.model[1].weight, heads["lin4.weight"])
    assert net.sgsr_weights == str(path)
    # and a truncated file (tensors missing) is refused, not half-loaded
    _fake(monkeypatch, tmp_path, "lpips_alex", {k: v for k, v in state.items() if "10" not in k})
    with pytest.raises(MetricUnavailable, match=r"slice5\.10"):
        metrics.load_lpips(tmp_path)


def test_fid_really_loads_the_verified_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(321)
    net = pretrained.fid_inception()
    state = {k: v for k, v in net.state_dict().items() if "num_batches" not in k}
    path = _fake(monkeypatch, tmp_path, "fid_inception", state)
    fid_net = metrics.load_fid(tmp_path, dims=64)
    assert torch.equal(fid_net.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    assert fid_net.sgsr_weights == str(path)
    assert fid_net.sgsr_dims == 64 and len(fid_net.blocks) == 1
