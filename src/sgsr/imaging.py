"""Image I/O and the resize and colour conventions behind comparable SR numbers.

Conventions (the evaluation protocol, docs/evaluation.md):

- Images are ``uint8`` arrays of shape (H, W, C) with C = 1 (grayscale) or 3 (RGB). Reading
  normalises what comes in the wild: palette and CMYK images become RGB, an alpha channel is
  dropped (`decode_image` says so, and the stages warn), 16-bit images are scaled to 8 bit
  (``round(v / 257)``), and a grayscale file stays single-channel unless ``mode="rgb"`` asks
  for three channels (training does; evaluation scores a single-channel image on its own
  channel).
- Untrusted files: the header's declared size is checked against a pixel limit before
  anything is decoded (decompression bombs), and every decoder failure becomes an
  ImageReadError naming the file. An EXIF orientation is applied (pixels as the image is
  shown); an animated or multi-page file is refused rather than read as its first frame.
- Resizing is MATLAB ``imresize`` bicubic (Keys kernel a = -0.5, antialiased when shrinking):
  torch's antialiased bicubic equals MATLAB in the interior, and padding symmetrically first and
  cropping afterwards makes it equal at the border too.
- Y is BT.601 "studio swing" luma, ``16 + (65.481 R + 128.553 G + 24.966 B) / 255``, rounded
  to integers for scoring like MATLAB's ``rgb2ycbcr`` on uint8 images.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from sgsr.config import DEFAULT_MAX_PIXELS
from sgsr.fsutil import atomic_path

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".webp")

#: Symmetric padding, in LR pixels, around an image before resizing. The bicubic kernel reaches
#: 2 taps x scale input pixels when shrinking; 4 is a safe margin for every scale.
_PAD_LR = 4


class ImageReadError(ValueError):
    """A file that should be an image could not be decoded; the message names the file.

    The message says what is wrong with the file, not what to do about it: the caller knows
    which knob applies (``data.on_bad_image`` in the pipeline, ``--on-bad-image`` for
    ``sgsr upscale``) and adds it with :func:`with_advice`.
    """


class ImageTooLargeError(ImageReadError):
    """The header declares more pixels than the limit: refused before anything is decoded."""


class AlphaDroppedWarning(UserWarning):
    """Images whose transparency was dropped on reading (the message lists them)."""


def with_advice(exc: ImageReadError, advice: str) -> ImageReadError:
    """The same error (same class) with what-to-do appended, for a caller that knows the knob."""
    return type(exc)(f"{exc}. {advice}")


#: The ``alpha`` of a decoded image: no alpha channel, all opaque (nothing lost by dropping
#: it), partly transparent, or fully transparent (nothing of it is visible).
ALPHA_KINDS = ("none", "opaque", "partial", "transparent")

#: Pillow's own bomb check (MAX_IMAGE_PIXELS) is a process-wide setting; sgsr lifts it only
#: while it opens a file whose size it checks itself, under this lock.
_PILLOW_LIMIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Decoded:
    """A decoded image and whether an alpha channel was dropped to get it."""

    array: np.ndarray
    alpha: str = "none"


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


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _opened(path: Path, max_pixels: int | None) -> Iterator[Image.Image]:
    """Open `path` lazily (header only) and refuse it if it declares more than `max_pixels`.

    Pillow's MAX_IMAGE_PIXELS would raise its own DecompressionBombError (a traceback, no file
    name) before the size can be read, so it is lifted here and sgsr's limit applies instead;
    the block runs under the same lifting, so a decoder that re-checks at load time agrees.
    """
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            try:
                im = Image.open(path)
            except Exception as exc:  # a decoder raises anything on hostile bytes
                raise ImageReadError(
                    f"{path}: not a readable image ({_describe(exc)}); the file is truncated, "
                    "corrupt or not an image"
                ) from exc
            with im:
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageTooLargeError(
                        f"{path}: the header declares {w}x{h} = {w * h:,} pixels, over the "
                        f"limit of {max_pixels:,}; not decoded (a decompression bomb, or a "
                        "genuinely huge image)"
                    )
                yield im
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def image_size(
    path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """(height, width) from the header alone; raises like `read_image` (nothing is decoded)."""
    with _opened(Path(path), max_pixels) as im:
        w, h = im.size
    return h, w


def decode_image(
    path: str | os.PathLike[str],
    mode: str = "keep",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Decoded:
    """`read_image`, also saying whether an alpha channel was dropped (``Decoded.alpha``)."""
    if mode not in ("keep", "rgb"):
        raise ValueError(f"read_image mode must be 'keep' or 'rgb', got {mode!r}")
    path = Path(path)
    with _opened(path, max_pixels) as im:
        frames = getattr(im, "n_frames", 1)
        if frames > 1 and im.format in MULTI_FRAME_FORMATS:
            raise ImageReadError(
                f"{path}: holds {frames} frames (an animated or multi-page {im.format}); sgsr "
                "reads one image per file, so it would silently use the first. Save the frame "
                "you mean as its own file"
            )
        try:
            im.load()
            alpha = _alpha_kind(im)
            arr = _to_uint8_array(_upright(im))
        except Exception as exc:  # truncated data, bad chunks, decoder limits: all "bad file"
            raise ImageReadError(
                f"{path}: not a readable image ({_describe(exc)}); the file is truncated, "
                "corrupt or not an image"
            ) from exc
    if mode == "rgb" and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return Decoded(arr, alpha)


def read_image(
    path: str | os.PathLike[str],
    mode: str = "keep",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode `path` to uint8 (H, W, C); ``mode`` is "keep" (1 or 3 channels) or "rgb".

    The header is checked first: more than `max_pixels` pixels (None: no limit) raises
    ImageTooLargeError before any decoding. Any failure raises ImageReadError naming the file.
    """
    return decode_image(path, mode, max_pixels).array


def _alpha_kind(im: Image.Image) -> str:
    """One of ALPHA_KINDS for an opened image (alpha channel or a palette/tRNS transparency)."""
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        channel = im.getchannel("A")
    elif "transparency" in im.info:
        with warnings.catch_warnings():  # Pillow's advice to convert such images: we do
            warnings.simplefilter("ignore", UserWarning)
            channel = im.convert("RGBA").getchannel("A")
    else:
        return "none"
    low, high = channel.getextrema()
    if low == 255:
        return "opaque"
    return "transparent" if high == 0 else "partial"


def alpha_note(files: Sequence[tuple[Path, str]], what: str) -> str | None:
    """One message for every image of `what` whose transparency was dropped, or None."""
    dropped = [(p, kind) for p, kind in files if kind in ("partial", "transparent")]
    if not dropped:
        return None
    clear = [str(p) for p, kind in dropped if kind == "transparent"]
    partial = [str(p) for p, kind in dropped if kind == "partial"]
    parts = []
    if clear:
        parts.append(
            f"fully transparent (nothing of them is visible; their RGB is whatever the encoder "
            f"left there): {', '.join(clear)}"
        )
    if partial:
        parts.append(f"partly transparent: {', '.join(partial)}")
    return (
        f"{len(dropped)} image(s) of {what} have an alpha channel, which is dropped (RGB kept, "
        f"not composited onto a background): " + "; ".join(parts)
    )


#: Formats whose extra frames are further images (animation, pages). A camera's MPO JPEG
#: also has several frames, but the first is the photograph (the rest are previews or the
#: other view), so it is read like any JPEG.
MULTI_FRAME_FORMATS = ("GIF", "PNG", "TIFF", "WEBP")


def _upright(im: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: its EXIF orientation applied (a phone's JPEG is
    often stored sideways with a tag saying how to turn it)."""
    if im.getexif().get(_ORIENTATION, 1) in (None, 1):
        return im  # the common case: no copy
    return ImageOps.exif_transpose(im)


_ORIENTATION = 0x0112  # EXIF tag


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
    """Write a uint8 (H, W, C) array as an image, atomically, in the format its suffix names
    (:data:`WRITE_FORMATS`; another suffix is a ValueError)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(
            f"write_image({path}): expected uint8 (H, W, 1|3), got {image.dtype} {image.shape}"
        )
    fmt = _pil_format(Path(path))
    pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    with atomic_path(path) as tmp:
        pil.save(tmp, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))


#: The format each writable suffix names (every suffix sgsr reads; WebP is written lossless).
WRITE_FORMATS = {
    ".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF",
    ".tiff": "TIFF", ".ppm": "PPM", ".webp": "WEBP",
}  # fmt: skip


def _pil_format(path: Path) -> str:
    """The format `path`'s suffix names; any other suffix is refused (never PNG bytes under
    another name)."""
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: cannot write {path.suffix or 'a file without a suffix'!s}; the suffix "
            f"decides the format, and sgsr writes {', '.join(WRITE_FORMATS)}"
        )
    return fmt


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


def crop_border(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border] if border > 0 else image


def rgb01(image: np.ndarray, border: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """uint8 (H, W, C) -> (1, 3, H', W') in [0, 1], `border` px cropped, gray replicated (as
    PIL's ``convert("RGB")`` does, which the reference metric libraries use)."""
    arr = crop_border(np.asarray(image), border)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0)
    return t.to(dtype) / 255.0
