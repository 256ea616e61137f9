"""Image-quality metrics under the SR benchmark protocol (docs/evaluation.md).

Every image metric takes uint8 (H, W, C) arrays (C = 1 or 3, as `imaging.read_image` returns
them) and the `border` (= the scale) cropped from every side before scoring, so all metrics see
the same pixels.

- PSNR and SSIM follow the published tables: Y of BT.601 rounded to integers (MATLAB
  ``rgb2ycbcr`` on uint8), or the single channel of a grayscale image; SSIM is the reference
  MATLAB ``ssim_index`` (Gaussian 11x11 window, sigma 1.5, K1 0.01, K2 0.03, L 255, 'valid'
  filtering, mean of the SSIM map), computed in float64.
- MS-SSIM, GMSD and HaarPSI come from ``piq`` and run on RGB in [0, 1] (data_range 1.0); a
  grayscale image is replicated to three channels first.
- LPIPS (``lpips`` 0.1, AlexNet backbone) and FID (``pytorch-fid`` InceptionV3 pool3 features
  over non-overlapping patches) need pretrained weights. They are loaded only from the
  safetensors files in ``models/pretrained/`` whose sha256 matches the pin in
  ``sgsr.pretrained.WEIGHTS``; otherwise the metric is *unavailable* (`MetricUnavailable` with a
  reason), never a number from random weights.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sgsr import pretrained
from sgsr.fid import FID_BATCH as FID_BATCH  # re-exported: FID's pieces live in sgsr.fid
from sgsr.fid import PROTOCOL_SEED as PROTOCOL_SEED
from sgsr.fid import fid_features, frechet_distance
from sgsr.fid import fid_patch_features as fid_patch_features
from sgsr.fid import fid_patches as fid_patches
from sgsr.fid import patch_cells as patch_cells
from sgsr.imaging import crop_border, luminance, rgb01
from sgsr.metric_registry import REGISTRY, MetricInfo

log = logging.getLogger(__name__)

#: PSNR of identical images is infinite (JSON outputs write it as null, CSV as ``inf``).
PSNR_IDENTICAL = math.inf

#: Registry names (sgsr.pretrained.WEIGHTS) of the weights the perceptual metrics need.
LPIPS_WEIGHTS = REGISTRY["lpips"].backbone
FID_WEIGHTS = REGISTRY["fid"].backbone

#: SSIM constants of the reference implementation (Wang et al. 2004, ``ssim_index.m``).
SSIM_K1, SSIM_K2, SSIM_L = 0.01, 0.03, 255.0
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
#: MS-SSIM scale weights (Wang et al. 2003); piq's defaults.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

FID_DIMS = 2048


#: A metric cannot be computed honestly here (weights absent or corrupt); str = reason.
MetricUnavailable = pretrained.WeightsUnavailable


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _check_pair(sr: np.ndarray, hr: np.ndarray) -> None:
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {sr.shape} differs from HR shape {hr.shape}")


_rgb01 = rgb01


# --------------------------------------------------------------------------------------------
# PSNR / SSIM on Y (the published-table protocol)
# --------------------------------------------------------------------------------------------
def psnr(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR in dB on Y (BT.601, rounded) or the single channel, `border` pixels cropped.

    ``10 log10(255^2 / MSE)``; identical images give ``inf``.
    """
    _check_pair(sr, hr)
    a = crop_border(luminance(sr), border)
    b = crop_border(luminance(hr), border)
    mse = float(np.mean((a - b) ** 2))
    return PSNR_IDENTICAL if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is MATLAB ``fspecial('gaussian', 11, 1.5)``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation with `g` x `g`, 'valid' output (no padded pixel is used)."""
    # scipy: only the numpy SSIM path uses it
    from scipy.ndimage import correlate1d

    r = len(g) // 2
    out = correlate1d(image, g, axis=0, mode="constant")[r:-r]
    return correlate1d(out, g, axis=1, mode="constant")[:, r:-r]


def ssim_y(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two float64 single-channel images in [0, 255], MATLAB ``ssim_index`` exactly."""
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs equal shapes, got {a.shape} and {b.shape}")
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} after the border crop, "
            f"got {a.shape[1]}x{a.shape[0]}"
        )
    g = gaussian_window()
    c1 = (SSIM_K1 * SSIM_L) ** 2
    c2 = (SSIM_K2 * SSIM_L) ** 2
    mu1, mu2 = _filter_valid(a, g), _filter_valid(b, g)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = _filter_valid(a * a, g) - mu1_sq
    s2 = _filter_valid(b * b, g) - mu2_sq
    s12 = _filter_valid(a * b, g) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def ssim(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """SSIM on Y (BT.601, rounded) or the single channel, `border` pixels cropped."""
    _check_pair(sr, hr)
    return ssim_y(crop_border(luminance(sr), border), crop_border(luminance(hr), border))


# --------------------------------------------------------------------------------------------
# weight-free perceptual metrics (piq)
# --------------------------------------------------------------------------------------------
def ms_ssim_levels(height: int, width: int) -> int:
    """Scales MS-SSIM can use: each needs ``10 * 2^(levels-1) + 1`` px (161 px for all 5)."""
    side = min(height, width)
    levels = len(MS_SSIM_WEIGHTS)
    while levels > 0 and (SSIM_WINDOW - 1) * 2 ** (levels - 1) + 1 > side:
        levels -= 1
    return levels


def _blur_valid(maps: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' correlation of every channel of `maps` (N, C, H, W) with `g` x `g`:
    the 11 x 11 Gaussian as two 11-tap passes, ~2.5x faster than piq's 2-D depthwise kernel."""
    n, k = maps.shape[1], len(g)
    out = torch.nn.functional.conv2d(maps, g.view(1, 1, k, 1).repeat(n, 1, 1, 1), groups=n)
    return torch.nn.functional.conv2d(out, g.view(1, 1, 1, k).repeat(n, 1, 1, 1), groups=n)


def ms_ssim_rgb(x: torch.Tensor, y: torch.Tensor, levels: int) -> float:
    """MS-SSIM of (1, C, H, W) images in [0, 1] as ``piq.multi_scale_ssim`` computes it (its
    replicate-padded 2x average pooling between scales, 'valid' Gaussian statistics per
    channel, cs at every scale but the last, relu, weighted product, mean over channels),
    on the first `levels` scales (the weights renormalised unless all 5 are used, piq's rule).

    The Gaussian runs separably (`_blur_valid`): float32 rounds differently from piq's 2-D
    kernel, measured within 3e-6 of piq in float32 and 1e-6 of piq in float64 (tested).
    """
    g = torch.from_numpy(gaussian_window()).to(x.dtype)
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=x.dtype)
    if levels < len(MS_SSIM_WEIGHTS):
        weights = weights / weights.sum()
    channels = x.shape[1]
    mcs: list[torch.Tensor] = []
    ssim_val = torch.zeros(0)
    for level in range(levels):
        if level:
            pad = max(x.shape[2] % 2, x.shape[3] % 2)
            x = torch.nn.functional.pad(x, [pad, 0, pad, 0], mode="replicate")
            y = torch.nn.functional.pad(y, [pad, 0, pad, 0], mode="replicate")
            x = torch.nn.functional.avg_pool2d(x, kernel_size=2, padding=0)
            y = torch.nn.functional.avg_pool2d(y, kernel_size=2, padding=0)
        stats = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), g)
        mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(channels, dim=1)
        mu_xx, mu_yy, mu_xy = mu_x**2, mu_y**2, mu_x * mu_y
        cs = (2.0 * (e_xy - mu_xy) + c2) / ((e_xx - mu_xx) + (e_yy - mu_yy) + c2)
        ss = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs
        ssim_val = ss.mean(dim=(-1, -2))
        mcs.append(cs.mean(dim=(-1, -2)))
    values = torch.relu(torch.stack([*mcs[:-1], ssim_val], dim=0))
    return float(torch.prod(values ** weights.view(-1, 1, 1), dim=0).mean())


def ms_ssim(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """MS-SSIM (piq's algorithm, RGB in [0, 1], 11x11 Gaussian, 5 scales: `ms_ssim_rgb`).

    Images under 161 px a side after the crop use the first scales that fit, their weights
    renormalised (piq's rule for custom weights); under 11 px it is an error.
    """
    _check_pair(sr, hr)
    # float32: torch's CPU convolutions are ~40x slower in double (512 px: 2.9 s vs 0.06 s)
    x, y = _rgb01(sr, border, torch.float32), _rgb01(hr, border, torch.float32)
    levels = ms_ssim_levels(x.shape[-2], x.shape[-1])
    if levels == 0:
        raise ValueError(
            f"MS-SSIM needs at least {SSIM_WINDOW} px a side after the border crop, "
            f"got {x.shape[-1]}x{x.shape[-2]}"
        )
    with torch.inference_mode():
        value = ms_ssim_rgb(x, y, levels)
    return min(value, 1.0)  # <= 1 exactly in real arithmetic; float32 can overshoot by ~4e-6


def gmsd(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """Gradient Magnitude Similarity Deviation (piq, RGB in [0, 1]); lower is better."""
    # piq (~1 s to import): only the metrics that use it pay
    import piq

    _check_pair(sr, hr)
    return float(piq.gmsd(_rgb01(sr, border), _rgb01(hr, border), data_range=1.0))


def haarpsi(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """HaarPSI (piq, RGB in [0, 1], 3 scales, subsampled); higher is better."""
    # piq (~1 s to import): only the metrics that use it pay
    import piq

    _check_pair(sr, hr)
    return float(piq.haarpsi(_rgb01(sr, border), _rgb01(hr, border), data_range=1.0))


# --------------------------------------------------------------------------------------------
# the LPIPS / FID networks (weights: sgsr.pretrained)
# --------------------------------------------------------------------------------------------
def load_lpips(
    pretrained_dir: str | os.PathLike[str] | None,
    *,
    device: str | torch.device = "cpu",
    random_backbone: bool = False,
) -> torch.nn.Module:
    """LPIPS 0.1, AlexNet trunk and heads from ``<pretrained_dir>/lpips_alex.safetensors``
    (sha256-pinned, loaded strictly; see `sgsr.pretrained`). ``random_backbone=True`` skips
    the file: for plumbing tests and timing only."""
    return pretrained.load_lpips(pretrained_dir, "alex", random_backbone=random_backbone).to(device)


def load_fid(
    pretrained_dir: str | os.PathLike[str] | None,
    *,
    device: str | torch.device = "cpu",
    random_backbone: bool = False,
    dims: int = FID_DIMS,
) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (FID Inception 2015-12-05) from
    ``<pretrained_dir>/fid_inception.safetensors``; ``dims`` picks the feature block (2048 =
    pool3, the standard; 64 is cheap, for tests)."""
    return pretrained.load_fid_inception(
        pretrained_dir, random_backbone=random_backbone, dims=dims
    ).to(device)


# --------------------------------------------------------------------------------------------
# LPIPS / FID
# --------------------------------------------------------------------------------------------
def lpips_features(image: np.ndarray, border: int, net: torch.nn.Module) -> list[torch.Tensor]:
    """One side of LPIPS: each trunk layer's unit-normalised features of the image (RGB in
    [0, 1] mapped to [-1, 1], gray replicated), exactly as ``lpips.LPIPS.forward`` computes
    them. The HR side is the same for every run, so it can be computed once and cached
    (`sgsr.refcache`)."""
    if net.version != "0.1" or not net.lpips or net.spatial:
        raise ValueError("LPIPS features need lpips.LPIPS version 0.1 with heads, not spatial")
    device = next(net.parameters()).device
    x = _rgb01(image, border, torch.float32).to(device)
    with torch.inference_mode():
        outs = net.net.forward(net.scaling_layer(2 * x - 1))
        # lpips.normalize_tensor, the same operations
        return [o / (torch.sqrt(torch.sum(o**2, dim=1, keepdim=True)) + 1e-10) for o in outs]


def lpips_compare(net: torch.nn.Module, f0: list[torch.Tensor], f1: list[torch.Tensor]) -> float:
    """LPIPS from two sides' :func:`lpips_features`: the heads on the squared differences,
    spatially averaged and summed over layers in ``lpips.LPIPS.forward``'s order."""
    if [tuple(a.shape) for a in f0] != [tuple(b.shape) for b in f1]:
        raise ValueError("LPIPS features of the two images differ in shape")
    with torch.inference_mode():
        val: Any = 0
        for k in range(net.L):
            val += net.lins[k]((f0[k] - f1[k]) ** 2).mean([2, 3], keepdim=True)
        return float(val.item())


def lpips_distance(
    sr: np.ndarray,
    hr: np.ndarray,
    border: int,
    net: torch.nn.Module,
    reference: list[torch.Tensor] | None = None,
) -> float:
    """LPIPS (lower is better) on RGB in [0, 1] (lpips maps it to [-1, 1]), gray replicated;
    equal to ``net(x, y, normalize=True)``. `reference`: the HR side's :func:`lpips_features`
    when already computed (cached), else they are computed here."""
    _check_pair(sr, hr)
    if reference is None:
        reference = lpips_features(hr, border, net)
    return lpips_compare(net, lpips_features(sr, border, net), reference)


def load_lpips_vgg(
    pretrained_dir: str | os.PathLike[str] | None,
    *,
    device: str | torch.device = "cpu",
    random_backbone: bool = False,
) -> torch.nn.Module:
    """LPIPS 0.1 with the VGG16 trunk (``lpips_vgg.safetensors``), as a metric."""
    return pretrained.load_lpips(pretrained_dir, "vgg", random_backbone=random_backbone).to(device)


def load_dists(
    pretrained_dir: str | os.PathLike[str] | None,
    *,
    device: str | torch.device = "cpu",
    random_backbone: bool = False,
) -> torch.nn.Module:
    """DISTS (``dists.safetensors`` + the VGG16 trunk of ``lpips_vgg.safetensors``)."""
    return pretrained.load_dists(pretrained_dir, random_backbone=random_backbone).to(device)


def dists_distance(sr: np.ndarray, hr: np.ndarray, border: int, net: torch.nn.Module) -> float:
    """DISTS (lower is better) on RGB in [0, 1] at full resolution, gray replicated."""
    _check_pair(sr, hr)
    device = next(iter(net.buffers())).device
    x = _rgb01(sr, border, torch.float32).to(device)
    y = _rgb01(hr, border, torch.float32).to(device)
    with torch.inference_mode():
        return float(net(x, y).item())


def fid(
    sr_images: Sequence[np.ndarray],
    hr_images: Sequence[np.ndarray],
    border: int,
    net: torch.nn.Module,
    patch: int = 64,
) -> float:
    """Set-level FID (lower is better) between SR and HR patches of one test set."""
    if len(sr_images) != len(hr_images):
        raise ValueError(f"FID needs paired sets, got {len(sr_images)} SR, {len(hr_images)} HR")
    return frechet_distance(
        fid_features(sr_images, border, patch, net), fid_features(hr_images, border, patch, net)
    )


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """A registry entry (`sgsr.metric_registry`) bound to the function computing it; calling it
    calls `fn`. Image metrics take ``(sr, hr, border)`` (plus ``net`` when `backbone` is set);
    the set metric (FID) takes lists of images."""

    info: MetricInfo
    fn: Callable[..., float]

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def higher_is_better(self) -> bool:
        return self.info.higher_is_better

    @property
    def scope(self) -> str:
        return self.info.scope

    @property
    def backbone(self) -> str | None:
        return self.info.backbone

    def __call__(self, *args: Any, **kwargs: Any) -> float:
        return self.fn(*args, **kwargs)


_FUNCTIONS: dict[str, Callable[..., float]] = {
    "psnr": psnr,
    "ssim": ssim,
    "ms_ssim": ms_ssim,
    "gmsd": gmsd,
    "haarpsi": haarpsi,
    "lpips": lpips_distance,
    "fid": fid,
    "kid": fid,  # never called per image: the scorer computes both from pooled features
    "dists": dists_distance,
    "lpips_vgg": lpips_distance,
}
METRICS: dict[str, Metric] = {name: Metric(i, _FUNCTIONS[name]) for name, i in REGISTRY.items()}

#: Loaders for the metrics that need a network.
LOADERS: dict[str, Callable[..., torch.nn.Module]] = {
    "lpips": load_lpips,
    "fid": load_fid,
    "kid": load_fid,
    "dists": load_dists,
    "lpips_vgg": load_lpips_vgg,
}


def load_backbones(
    names: Iterable[str],
    pretrained_dir: str | os.PathLike[str] | None,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, torch.nn.Module], dict[str, str]]:
    """Networks for the requested metrics that need one, and {metric: reason} for those that
    are unavailable (each also logged as a one-line warning)."""
    nets: dict[str, torch.nn.Module] = {}
    unavailable: dict[str, str] = {}
    by_backbone: dict[str, torch.nn.Module | MetricUnavailable] = {}  # FID and KID share one
    for name in names:
        if name not in LOADERS:
            continue
        backbone = REGISTRY[name].backbone or name
        if backbone not in by_backbone:
            try:
                by_backbone[backbone] = LOADERS[name](pretrained_dir, device=device)
            except MetricUnavailable as exc:
                by_backbone[backbone] = exc
        got = by_backbone[backbone]
        if isinstance(got, MetricUnavailable):
            unavailable[name] = str(got)
            log.warning("%s unavailable, reported as null: %s", name, got)
        else:
            nets[name] = got
    return nets, unavailable
