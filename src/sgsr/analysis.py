"""What the report's image figures show, computed: crops and where two outputs differ most,
second-order maps on luminance, error maps and second-order statistics. `sgsr.plotting` draws
the results; nothing here draws."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from sgsr.gradients import get_operator
from sgsr.imaging import luminance


def crop(image: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """``image[y:y+size, x:x+size]`` for ``box = (y, x, size)``."""
    y, x, size = box
    return image[y : y + size, x : x + size]


def max_diff_box(a: np.ndarray, b: np.ndarray, size: int, border: int = 0) -> tuple[int, int, int]:
    """(y, x, size) of the ``size`` x ``size`` window where mean |Y(a) - Y(b)| is largest.

    An integral image makes this O(H W); ``border`` pixels at each edge are not considered.
    """
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    diff = np.abs(luminance(a, quantize=False) - luminance(b, quantize=False))
    h, w = diff.shape
    border = max(0, min(border, (min(h, w) - 1) // 2))
    diff = diff[border : h - border, border : w - border]
    size = int(max(1, min(size, *diff.shape)))
    ii = np.pad(diff.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y) + border, int(x) + border, size


def second_order(image: np.ndarray, operator: str = "laplacian") -> np.ndarray:
    """The operator on luminance in [0, 1] (Y for RGB): (K, H, W) float64, K = 1 or 3.

    Y rather than RGB so there is one map per image; the loss itself sees RGB.
    """
    y = luminance(image, quantize=False)
    t = torch.from_numpy(np.ascontiguousarray(y))[None, None] / 255.0
    return get_operator(operator)(t).squeeze(0).numpy()


def second_order_crop(
    image: np.ndarray, box: tuple[int, int, int], operator: str = "laplacian", margin: int = 4
) -> np.ndarray:
    """:func:`second_order` of a crop, computed with ``margin`` px of context so the crop's
    own edges carry no padding artefacts."""
    y, x, size = box
    h, w = image.shape[:2]
    y0, x0 = max(0, y - margin), max(0, x - margin)
    y1, x1 = min(h, y + size + margin), min(w, x + size + margin)
    maps = second_order(image[y0:y1, x0:x1], operator)
    return maps[:, y - y0 : y - y0 + size, x - x0 : x - x0 + size]


def error_maps(
    crops: Mapping[str, np.ndarray], maps: Mapping[str, np.ndarray], hr_key: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per output (every key but `hr_key`): |Y(SR) - Y(HR)| of the crops (unrounded Y, 0-255)
    and |op(SR) - op(HR)| of their second-order maps, averaged over components."""
    hr = crops[hr_key].astype(np.float64)
    others = [k for k in crops if k != hr_key]
    pix = {
        k: np.abs(luminance(crops[k], quantize=False) - luminance(hr, quantize=False))
        for k in others
    }
    op = {k: np.abs(maps[k] - maps[hr_key]).mean(0) for k in others}
    return pix, op


def gradient_stats(
    hr: np.ndarray, outputs: Mapping[str, np.ndarray], operator: str, border: int
) -> list[dict[str, float | str]]:
    """Per output: second-order energy relative to HR (mean |op(SR)| / mean |op(HR)|; < 1
    means smoother than the ground truth) and the L1 distance mean |op(SR) - op(HR)|."""

    def inner(m: np.ndarray) -> np.ndarray:
        b = border
        return m[:, b:-b, b:-b] if b and min(m.shape[1:]) > 2 * b else m

    ref = inner(second_order(hr, operator))
    ref_energy = float(np.abs(ref).mean()) or 1e-12
    rows = []
    for name, sr in outputs.items():
        m = inner(second_order(sr, operator))
        rows.append(
            {
                "output": name,
                "energy_ratio": float(np.abs(m).mean()) / ref_energy,
                "distance": float(np.abs(m - ref).mean()),
            }
        )
    return rows
