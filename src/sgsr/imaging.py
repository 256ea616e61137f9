"""Image I/O and the resize and colour conventions behind comparable SR numbers.

Conventions (DESIGN.md section 4):

- Images are ``uint8`` arrays of shape (H, W, C) with C = 1 (grayscale) or 3 (RGB). Reading
  normalises what comes in the wild: palette and CMYK images become RGB, an alpha channel is
  dropped, 16-bit images are scaled to 8 bit (``round(v / 257)``), and a grayscale file stays
  single-channel unless ``mode="rgb"`` asks for three channels (training does; evaluation scores
  a single-channel image on its own channel).
- Resizing is MATLAB ``imresize`` bicubic (Keys kernel a = -0.5, antialiased when shrinking):
  torch's antialiased bicubic equals MATLAB in the interior, and padding symmetrically first and
  cropping afterwards makes it equal at the border too.
- Y is BT.601 "studio swing" luma, ``16 + (65.481 R + 128.553 G + 24.966 B) / 255``, rounded
  to integers for scoring like MATLAB's ``rgb2ycbcr`` on uint8 images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from sgsr.fsutil import atomic_path

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".webp")

#: Symmetric padding, in LR pixels, around an image before resizing. The bicubic kernel reaches
#: 2 taps x scale input pixels when shrinking; 4 is a safe margin for every scale.
_PAD_LR = 4


class ImageReadError(ValueError):
    """A file that should be an image could not be decoded; the message names the file."""


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def read_image(path: str | os.PathLike[str], mode: str = "keep") -> np.ndarray:
    """Decode `path` to uint8 (H, W, C); ``mode`` is "keep" (1 or 3 channels) or "rgb"."""
    if mode not in ("keep", "rgb"):
        raise ValueError(f"read_image mode must be 'keep' or 'rgb', got {mode!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes); re-download or remove it")
    try:
        with Image.open(path) as im:
            im.load()
            arr = _to_uint8_array(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageReadError(
            f"{path}: not a readable image ({exc}); the file is truncated, corrupt or not an "
            "image: replace it, remove it, or set data.on_bad_image: skip"
        ) from exc
    if mode == "rgb" and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr


def _to_uint8_array(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(im, dtype=np.float64)
        scale = 257.0 if wide.max(initial=0) <= 65535 else wide.max() / 255.0
        arr = np.clip(np.round(wide / scale), 0, 255).astype(np.uint8)[..., None]
    elif im.mode in ("L", "1"):
        arr = np.asarray(im.convert("L"), dtype=np.uint8)[..., None]
    elif im.mode == "LA":
        arr = np.asarray(im.getchannel("L"), dtype=np.uint8)[..., None]
    else:  # RGB, RGBA, P, CMYK, YCbCr, ...: RGB with any alpha dropped
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write a uint8 (H, W, C) array as an image, atomically (PNG unless the suffix says else)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(
            f"write_image({path}): expected uint8 (H, W, 1|3), got {image.dtype} {image.shape}"
        )
    pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    with atomic_path(path) as tmp:
        pil.save(tmp, format=_pil_format(Path(path)))


def _pil_format(path: Path) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        path.suffix.lower(), "PNG"
    )


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop bottom/right so both sides are multiples of `scale` (the SR benchmark convention)."""
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def to_tensor(image: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (H, W, C) -> float (1, C, H, W) in [0, 1]."""
    arr = np.ascontiguousarray(image)
    if not arr.flags.writeable:
        arr = arr.copy()
    t = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)
    return t.to(dtype) / 255.0


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float (1, C, H, W) or (C, H, W) in [0, 1] -> uint8 (H, W, C), rounded like MATLAB."""
    t = tensor.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"to_uint8 expects one image, got batch of {t.shape[0]}")
        t = t[0]
    arr = (t.to(torch.float64) * 255.0).clamp(0, 255).round().to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


def _symmetric_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """MATLAB 'symmetric' padding (edge pixel repeated: ``c b a | a b c``) on the last two dims."""
    h, w = x.shape[-2:]
    rows = _symmetric_index(h, pad, x.device)
    cols = _symmetric_index(w, pad, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _symmetric_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    idx = torch.arange(-pad, n + pad, device=device)
    period = 2 * n
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - 1 - idx, idx)


def resize_bicubic(x: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB-compatible ``imresize(x, scale, 'bicubic')`` for a float (B, C, H, W) tensor.

    Shrinking needs both sides to be multiples of ``1/scale`` (mod-crop first); growing needs an
    integer scale. No rounding or clamping: callers quantise when they write uint8.
    """
    if x.dim() != 4:
        raise ValueError(f"resize_bicubic expects (B, C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if scale >= 1:
        s = round(scale)
        if abs(s - scale) > 1e-9:
            raise ValueError(f"upscaling supports integer scales only, got {scale}")
        pad = _PAD_LR
        padded = _symmetric_pad(x, pad)
        out = F.interpolate(
            padded, scale_factor=s, mode="bicubic", antialias=True, align_corners=False
        )
        return out[..., pad * s : pad * s + h * s, pad * s : pad * s + w * s]
    factor = round(1 / scale)
    if abs(factor * scale - 1) > 1e-9:
        raise ValueError(f"downscaling supports 1/integer scales only, got {scale}")
    if h % factor or w % factor:
        raise ValueError(
            f"image of size {h}x{w} is not a multiple of scale {factor}: mod_crop it first"
        )
    pad = _PAD_LR * factor
    padded = _symmetric_pad(x, pad)
    size = ((h + 2 * pad) // factor, (w + 2 * pad) // factor)
    out = F.interpolate(padded, size=size, mode="bicubic", antialias=True, align_corners=False)
    return out[..., _PAD_LR : _PAD_LR + h // factor, _PAD_LR : _PAD_LR + w // factor]


def downscale(image: np.ndarray, scale: int) -> np.ndarray:
    """uint8 HR (mod-cropped) -> uint8 LR, MATLAB bicubic, computed in float64."""
    lr = resize_bicubic(to_tensor(image, torch.float64), 1.0 / scale)
    return to_uint8(lr)


def upscale_bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    """uint8 LR -> uint8 bicubic SR (the baseline row of every table)."""
    return to_uint8(resize_bicubic(to_tensor(image, torch.float64), float(scale)))


def rgb_to_y(image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """BT.601 Y in [16, 235] from RGB in [0, 255] (last axis for numpy, dim -3 for torch)."""
    if isinstance(image, torch.Tensor):
        r, g, b = image.unbind(-3)
        return (16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0).unsqueeze(-3)
    img = np.asarray(image, dtype=np.float64)
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def luminance(image: np.ndarray, quantize: bool = True) -> np.ndarray:
    """The channel an SR benchmark scores: Y for RGB, the image itself for single-channel.

    ``quantize`` rounds Y to integers, as MATLAB's ``rgb2ycbcr`` does for uint8 input: that is
    the convention behind the published tables (unrounded Y reads Set5 x2 bicubic 0.02 dB high).
    """
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0].astype(np.float64)
    if image.ndim == 2:
        return image.astype(np.float64)
    y = rgb_to_y(image)
    return np.round(y) if quantize else y
