"""The metrics sgsr knows and the facts every part reads about them: which way is better, the
unit and how a value prints, whether it scores an image or a set, which pretrained weights it
needs, and the smallest image it scores.

One dict (timm's habit: a single registry of names). Params validation, prepare, evaluate,
summarize, the results table and the figures read it; `sgsr.metrics` binds each entry to the
function that computes it. Nothing heavy is imported here, so the CLI and params checking read
it for free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """What is known about a metric besides how to compute it."""

    name: str
    higher_is_better: bool
    label: str  # table header, e.g. "PSNR-Y"
    unit: str = ""  # e.g. "dB"
    fmt: str = ".4f"  # how a value prints
    scope: str = "image"  # "image": per image, then averaged; "set": over a whole test set
    backbone: str | None = None  # the pretrained weights it needs (sgsr.pretrained.WEIGHTS)
    #: Smallest side (pixels, after the border crop) with a finite value, measured with the
    #: metric functions themselves (tests/test_prepare.py pins each number): SSIM and MS-SSIM
    #: need one 11x11 window, piq's HaarPSI 16 px, LPIPS-AlexNet 31 px. FID pools patches over a
    #: whole set, so it sets no per-image minimum.
    min_side: int = 1
    #: The note metrics_info.json carries (FID's and KID's name their protocol: ``{protocol}``,
    #: ``{samples}``).
    note: str = ""

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


#: Measured like the others (tests/test_prepare.py): DISTS' L2 poolings pad, so any side works;
#: LPIPS-VGG's max poolings need 16 px.
DISTS_MIN_SIDE = 1
LPIPS_VGG_MIN_SIDE = 16

REGISTRY: dict[str, MetricInfo] = {
    "psnr": MetricInfo(
        "psnr", True, "PSNR-Y", unit="dB", fmt=".2f",
        note="dB, Y BT.601 rounded (gray: own channel); inf = identical, nan = undefined",
    ),
    "ssim": MetricInfo(
        "ssim", True, "SSIM", min_side=11, note="Y, Gaussian 11x11 sigma 1.5, valid window"
    ),
    "ms_ssim": MetricInfo("ms_ssim", True, "MS-SSIM", min_side=11, note="piq, RGB [0,1]"),
    "gmsd": MetricInfo("gmsd", False, "GMSD", note="piq, RGB [0,1], lower is better"),
    "haarpsi": MetricInfo("haarpsi", True, "HaarPSI", min_side=16, note="piq, RGB [0,1]"),
    "lpips": MetricInfo(
        "lpips", False, "LPIPS", backbone="lpips_alex", min_side=31,
        note="AlexNet backbone (lpips 0.1)",
    ),
    "fid": MetricInfo(
        "fid", False, "FID", scope="set", backbone="fid_inception",
        note="pytorch-fid InceptionV3 pool3, protocol {protocol}: {samples}",
    ),
    "kid": MetricInfo(
        "kid", False, "KID", fmt=".5f", scope="set", backbone="fid_inception",
        note="torch-fidelity KID (unbiased MMD^2, cubic polynomial kernel) on FID's features "
        "(protocol {protocol}): mean of 100 subsets of min(1000, n) samples; SD in "
        "metrics_info.json",
    ),
    "dists": MetricInfo(
        "dists", False, "DISTS", backbone="dists", min_side=DISTS_MIN_SIDE,
        note="DISTS_pytorch 0.1 (ImageNet VGG16 + its alpha/beta), RGB [0,1], full resolution",
    ),
    "lpips_vgg": MetricInfo(
        "lpips_vgg", False, "LPIPS-VGG", backbone="lpips_vgg", min_side=LPIPS_VGG_MIN_SIDE,
        note="VGG16 backbone (lpips 0.1)",
    ),
}  # fmt: skip

#: What evaluate.metrics defaults to: the metrics every profile has always computed (DISTS and
#: LPIPS-VGG run VGG16 at full resolution, several times LPIPS-Alex's cost: asked for by name).
DEFAULT_NAMES: tuple[str, ...] = ("psnr", "ssim", "ms_ssim", "gmsd", "haarpsi", "lpips", "fid")
#: The metrics folder scoring (``sgsr evaluate --sr --hr``, scoring.Scorer, score_folders)
#: computes when none is named, and the ones the evaluate stage's log line shows: no network.
QUICK_NAMES: tuple[str, ...] = ("psnr", "ssim")
#: The metrics computed from a set's pooled Inception features.
SET_NAMES: tuple[str, ...] = ("fid", "kid")

#: Every metric name, in registry order.
NAMES: tuple[str, ...] = tuple(REGISTRY)
LOWER_IS_BETTER: frozenset[str] = frozenset(
    n for n, m in REGISTRY.items() if not m.higher_is_better
)


def check_metric_names(names: Iterable[str]) -> tuple[str, ...]:
    """`names` as a tuple; ValueError naming the unknown ones and what exists."""
    names = tuple(names)
    bad = [n for n in names if n not in REGISTRY]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; available: {', '.join(REGISTRY)}")
    return names
