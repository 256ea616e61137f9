"""Image-quality metrics under the SR benchmark protocol (DESIGN.md section 4)."""

from __future__ import annotations

import math

import numpy as np

from sgsr.imaging import luminance

#: PSNR of identical images is infinite; JSON and CSV write it as ``inf``.
PSNR_IDENTICAL = math.inf


def _check_pair(sr: np.ndarray, hr: np.ndarray) -> None:
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {sr.shape} differs from HR shape {hr.shape}")


def crop_border(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border] if border > 0 else image


def psnr(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR in dB on Y (BT.601, rounded) or the single channel, `border` pixels cropped."""
    _check_pair(sr, hr)
    a = crop_border(luminance(sr), border)
    b = crop_border(luminance(hr), border)
    mse = float(np.mean((a - b) ** 2))
    return PSNR_IDENTICAL if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
