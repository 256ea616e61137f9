"""The validation split during training: its images, read once, the PSNR-Y the trainer logs
(``val/psnr_y``) and writes to the run card, and bicubic's on the same images (a trained network
below it is worse than none: the stage says so)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import nn

from sgsr.config import DEFAULT_MAX_PIXELS
from sgsr.imaging import list_images, read_image, to_tensor, to_uint8, upscale_bicubic
from sgsr.metrics import psnr
from sgsr.models.common import rgb_range_of, unit_forward


def load_val_pairs(
    folder: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, lr, hr) uint8 RGB images from ``<folder>/{lr,hr}/``, matched by file name."""
    folder = Path(folder)
    if not (folder / "hr").is_dir() or not (folder / "lr").is_dir():
        return []
    hr_files = {p.stem: p for p in list_images(folder / "hr")}
    lr_files = {p.stem: p for p in list_images(folder / "lr")}
    unmatched = sorted(set(hr_files) ^ set(lr_files))
    if unmatched:
        raise ValueError(
            f"validation split {folder}: hr/ and lr/ differ ({', '.join(unmatched[:5])}); "
            "rerun sgsr prepare"
        )
    return [
        (
            stem,
            read_image(lr_files[stem], mode="rgb", max_pixels=max_pixels),
            read_image(hr_files[stem], mode="rgb", max_pixels=max_pixels),
        )
        for stem in sorted(hr_files)
    ]


def psnr_validator(
    pairs: list[tuple[str, np.ndarray, np.ndarray]], scale: int
) -> Callable[[nn.Module], float]:
    """Mean PSNR-Y (dB, `scale` border cropped) of whole validation images, computed in fp32."""

    def validate(model: nn.Module) -> float:
        device = next(model.parameters()).device
        scores = []
        for _, lr, hr in pairs:
            x = to_tensor(lr).to(device)
            sr = unit_forward(model, x, rgb_range_of(model)).float().cpu()
            scores.append(psnr(to_uint8(sr), hr, border=scale))
        return float(np.mean(scores))

    return validate


class BelowBicubicWarning(UserWarning):
    """A trained run validates below bicubic upsampling of the same images."""


def bicubic_psnr(pairs: list[tuple[str, np.ndarray, np.ndarray]], scale: int) -> float:
    """Mean PSNR-Y of MATLAB-bicubic upsampling over `pairs`, scored as `psnr_validator`."""
    return float(
        np.mean([psnr(upscale_bicubic(lr, scale), hr, border=scale) for _, lr, hr in pairs])
    )
