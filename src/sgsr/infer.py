"""Apply a trained network (or bicubic) to LR images, tile by tile, in bounded memory.

Tiling: the LR image is covered by a grid of `tile` x `tile` windows that overlap their
neighbours by at least `overlap` LR pixels. Each window's SR output is weighted by a separable
ramp that falls linearly towards the sides shared with a neighbour (never towards the image
border), accumulated into the output, and the sum is divided by the accumulated weights. With
one window (tile 0, or tile >= the image) every weight is exactly 1, so tiled and whole-image
inference are the same code path and bitwise equal. Peak memory is one window's activations
plus the output image itself.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sgsr import layout
from sgsr.config import DEFAULT_MAX_PIXELS, Config, allows_import
from sgsr.fsutil import remove_stale_temps
from sgsr.imaging import (
    IMAGE_SUFFIXES,
    WRITE_FORMATS,
    AlphaDroppedWarning,
    ImageReadError,
    ImageTooLargeError,
    alpha_note,
    decode_image,
    list_images,
    read_image,
    to_tensor,
    to_uint8,
    upscale_bicubic,
    write_image,
)
from sgsr.models.common import rgb_range_of, unit_forward
from sgsr.runs import bicubic_scale
from sgsr.weights import TrustedArch, load_model

#: Smallest blending weight, so every output pixel has a positive total weight.
_FLOOR = 1e-6


# --------------------------------------------------------------------------------------------
# tiled inference
# --------------------------------------------------------------------------------------------
def tile_windows(size: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Window starts and common length along one axis.

    As few windows as tiles of side `tile` need, each shrunk to the shortest length that still
    covers the axis with >= `overlap` shared pixels between neighbours: balanced windows
    recompute less than full-size tiles pushed against the far edge.
    """
    if tile <= 0 or tile >= size:
        return [0], size
    n = math.ceil((size - overlap) / (tile - overlap))
    length = min(tile, math.ceil((size + (n - 1) * overlap) / n))
    step = (size - length) / (n - 1)
    return [round(i * step) for i in range(n)], length


def _ramp(length: int, lead: int, trail: int) -> torch.Tensor:
    """Weights along one window axis (HR pixels) for a window sharing `lead` pixels with the
    previous window and `trail` with the next (0 = image border: that side stays exactly 1).

    Over a shared stretch of L pixels the weight is ~0 for the first L/4 (the pixels next to
    the window's cut edge, where its zero padding reaches), rises linearly to 1 over the middle
    half and is 1 after; the neighbour's weight mirrors it, so the two sum to 1.
    """
    k = torch.arange(length, dtype=torch.float64) + 0.5
    w = torch.ones(length, dtype=torch.float64)
    for shared, dist in ((lead, k), (trail, length - k)):
        if shared > 0:
            margin = shared / 4.0
            w = torch.minimum(w, ((dist - margin) / (shared - 2 * margin)).clamp(_FLOOR, 1.0))
    return w.float()


def _axis_windows(size: int, tile: int, overlap: int, scale: int) -> list[tuple[int, int, Any]]:
    """(LR start, LR length, HR weights) for each window along one axis."""
    starts, length = tile_windows(size, tile, overlap)
    out = []
    for i, s in enumerate(starts):
        lead = (starts[i - 1] + length - s) if i > 0 else 0
        trail = (s + length - starts[i + 1]) if i + 1 < len(starts) else 0
        out.append((s, length, _ramp(length * scale, lead * scale, trail * scale)))
    return out


def memory_format_for(device: torch.device) -> torch.memory_format:
    """The layout windows are fed in: channels_last on the CPU, where oneDNN's convolutions run
    it ~1.2x faster for EDSR-baseline x4 (same outputs to float rounding); the default
    elsewhere (CUDA is left as it was until measured)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def _tiled(
    model: nn.Module,
    x: torch.Tensor,
    scale: int,
    tile: int,
    overlap: int,
    memory_format: torch.memory_format | None = None,
) -> torch.Tensor:
    """Core of `upscale`: x (B, C, H, W) float in [0, 1] on CPU -> unclamped float32 SR."""
    device = next(model.parameters()).device
    fmt = memory_format if memory_format is not None else memory_format_for(device)
    rgb_range = rgb_range_of(model)
    b, _, h, w = x.shape
    rows = _axis_windows(h, tile, overlap, scale)
    cols = _axis_windows(w, tile, overlap, scale)
    out: torch.Tensor | None = None
    norm_h = torch.zeros(h * scale)
    norm_w = torch.zeros(w * scale)
    for y0, th, wy in rows:
        norm_h[y0 * scale : (y0 + th) * scale] += wy
    for x0, tw, wx in cols:
        norm_w[x0 * scale : (x0 + tw) * scale] += wx
    for y0, th, wy in rows:
        for x0, tw, wx in cols:
            window = x[..., y0 : y0 + th, x0 : x0 + tw].to(device, torch.float32)
            window = window.contiguous(memory_format=fmt)
            pred = unit_forward(model, window, rgb_range).float().cpu()
            if pred.shape[-2:] != (th * scale, tw * scale):
                raise ValueError(
                    f"model output {tuple(pred.shape)} is not {scale}x its input "
                    f"{tuple(window.shape)}: wrong scale for these weights?"
                )
            if out is None:
                out = torch.zeros(b, pred.shape[1], h * scale, w * scale)
            ys, xs = slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale)
            out[..., ys, xs] += pred * (wy[:, None] * wx[None, :])
    assert out is not None
    return out / (norm_h[:, None] * norm_w[None, :])


class SeamWarning(UserWarning):
    """Tiles without overlap: each tile's border sees zero padding, so seams show."""


def check_tiling(tile: int, overlap: int) -> None:
    """Refuse impossible tile settings (before any model is loaded)."""
    if tile < 0 or overlap < 0:
        raise ValueError(f"tile and overlap must be >= 0, got tile={tile}, overlap={overlap}")
    if tile and 2 * overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be less than half of tile ({tile})")


def upscale(
    model: nn.Module,
    lr: torch.Tensor,
    scale: int,
    tile: int = 0,
    overlap: int = 8,
    memory_format: torch.memory_format | None = None,
) -> torch.Tensor:
    """Super-resolve one LR image (1, C, H, W) in [0, 1]; returns (1, C, sH, sW) float32 on
    the CPU, clamped to [0, 1] (quantise with `imaging.to_uint8`).

    `tile` is the window side in LR pixels (0 = whole image), `overlap` the minimum overlap
    between windows (must be < tile / 2). A 1-channel image through a 3-channel model is
    replicated to RGB and the output averaged back to one channel (equal weights, so a gray
    result stays exactly its gray value); a 3-channel image through a 1-channel model runs each
    channel on its own. `memory_format`: the layout windows run in (default
    :func:`memory_format_for` the model's device).
    """
    if lr.dim() != 4 or lr.shape[0] != 1:
        raise ValueError(f"upscale expects one image (1, C, H, W), got {tuple(lr.shape)}")
    check_tiling(tile, overlap)
    model_colors = int(getattr(model, "n_colors", lr.shape[1]))
    channels = lr.shape[1]
    x = lr.detach().cpu()
    with torch.inference_mode():
        fmt = memory_format
        if channels == model_colors:
            sr = _tiled(model, x, scale, tile, overlap, fmt)
        elif channels == 1 and model_colors == 3:
            sr = _tiled(model, x.expand(-1, 3, -1, -1), scale, tile, overlap, fmt).mean(
                1, keepdim=True
            )
        elif channels == 3 and model_colors == 1:
            sr = _tiled(model, x.transpose(0, 1), scale, tile, overlap, fmt).transpose(0, 1)
        else:
            raise ValueError(f"cannot run a {model_colors}-channel model on {channels} channels")
    return sr.clamp(0.0, 1.0)  # out of inference mode: a normal tensor callers may modify


def upscale_image(
    model: nn.Module,
    image: np.ndarray,
    scale: int,
    tile: int = 0,
    overlap: int = 8,
    memory_format: torch.memory_format | None = None,
) -> np.ndarray:
    """uint8 (H, W, C) LR -> uint8 (sH, sW, C) SR."""
    return to_uint8(upscale(model, to_tensor(image), scale, tile, overlap, memory_format))


# --------------------------------------------------------------------------------------------
# the pipeline stage and the user command
# --------------------------------------------------------------------------------------------
def _progress(items: list, desc: str) -> Iterator:
    return iter(tqdm(items, desc=desc, unit="img", leave=False, dynamic_ncols=True))


def run(cfg: Config, run_name: str) -> None:
    """Upscale every test set's LR images into ``results/sr/<run>/<set>/<stem>.png``."""
    base = layout.pipeline_root(cfg)
    scale = bicubic_scale(run_name)
    model = None
    if scale is None:
        run_cfg = cfg.run(run_name)
        scale = run_cfg.scale
        trusted = TrustedArch(run_cfg.arch, run_cfg.model_kwargs, allows_import(cfg, run_cfg.model))
        model, card_scale = load_model(
            base / layout.weights(run_name), cfg.infer.device, trusted=trusted
        )
        if card_scale != scale:
            raise ValueError(
                f"{base / layout.run_card(run_name)}: scale {card_scale} but run {run_name} "
                f"is x{scale}"
            )
    elif scale not in cfg.prepare.scales:
        raise ValueError(
            f"run {run_name}: scale {scale} is not among prepare.scales {list(cfg.prepare.scales)}"
        )
    for set_name in cfg.data.test_sets:
        lr_dir = base / layout.prepared_set(scale, set_name) / "lr"
        out_dir = base / layout.sr_set(run_name, set_name)
        files = list_images(lr_dir)
        if not files:
            raise FileNotFoundError(f"{lr_dir} holds no images (run sgsr prepare)")
        remove_stale_temps(out_dir)
        for path in _progress(files, f"{run_name} {set_name}"):
            try:
                lr = read_image(path, max_pixels=cfg.data.max_pixels)
                if model is None:
                    sr = upscale_bicubic(lr, scale)
                else:
                    sr = upscale_image(model, lr, scale, cfg.infer.tile, cfg.infer.overlap)
            except (ValueError, RuntimeError) as exc:
                raise ValueError(f"{path}: {exc}") from exc
            write_image(out_dir / f"{path.stem}.png", sr)
        _remove_stale(out_dir, {p.stem for p in files})


def _remove_stale(out_dir: Path, stems: set[str]) -> None:
    """Drop SR images left from an earlier run whose LR image is gone (evaluation would fail)."""
    for old in list_images(out_dir):
        if old.stem not in stems:
            old.unlink()


UPSCALE_POLICIES = ("error", "skip")


class UpscaleError(ValueError):
    """`sgsr upscale` stopped on one input; the message also says which inputs were done."""


class SkippedInputWarning(UserWarning):
    """`sgsr upscale --on-bad-image skip` left inputs out (the message lists them and why)."""


def _listing(paths: list[Path], limit: int = 10) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def plan_upscale(
    input: str | os.PathLike[str], output: str | os.PathLike[str]
) -> list[tuple[Path, Path]]:
    """(input image, output path) pairs for `sgsr upscale`, refusing before any work an output
    that would replace an input: the same file (through symlinks or hard links too), the input
    folder itself as the output folder, or two inputs written to one output; and, for a
    folder input, an output folder already holding other images (two runs would mix). An
    output file's suffix must be one sgsr writes (the suffix decides the format)."""
    for what, value in (("input", input), ("output", output)):
        if not str(value).strip():
            raise ValueError(f"the {what} path is empty; name a file or folder")
    src, dst = Path(input), Path(output)
    if src.is_dir():
        files = list_images(src)
        if not files:
            raise FileNotFoundError(f"{src} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        if dst.exists() and not dst.is_dir():
            raise FileExistsError(f"output {dst} is a file; a folder input needs an output folder")
        if dst.resolve() == src.resolve():
            raise FileExistsError(
                f"output folder {dst} is the input folder {src}"
                + (f" (it resolves to {src.resolve()})" if dst.is_symlink() else "")
                + ": the results would replace or mix with the originals; choose another folder"
            )
        plan = [(p, dst / f"{p.stem}.png") for p in files]
    elif src.is_file():
        is_file_target = bool(dst.suffix) and not dst.is_dir()
        if is_file_target and dst.suffix.lower() not in WRITE_FORMATS:
            raise ValueError(
                f"output {dst}: sgsr cannot write {dst.suffix} images (the suffix decides the "
                f"format: {', '.join(WRITE_FORMATS)}); to write into a folder of that name, "
                "create it first"
            )
        plan = [(src, dst if is_file_target else dst / f"{src.stem}.png")]
    else:
        raise FileNotFoundError(f"input {src} does not exist")
    inputs = [p for p, _ in plan]
    by_path = {p.resolve(): p for p in inputs}
    by_inode = {(st.st_dev, st.st_ino): p for p in inputs for st in [p.stat()]}
    for _, target in plan:
        image = by_path.get(target.resolve())
        if image is None and target.exists():
            st = target.stat()
            image = by_inode.get((st.st_dev, st.st_ino))
        if image is not None:
            raise FileExistsError(
                f"output {target} would overwrite the input {image}"
                + (f" ({target} resolves to {target.resolve()})" if target != image else "")
                + "; sgsr upscale never replaces its inputs: choose another output path"
            )
    seen: dict[Path, Path] = {}
    for image, target in plan:
        if target in seen:
            raise FileExistsError(
                f"{seen[target]} and {image} would both be written to {target}; rename one "
                "or upscale them separately"
            )
        seen[target] = image
    if src.is_dir():  # a folder's results go to a folder of their own
        _refuse_mixing(dst, set(seen))
    return plan


def _refuse_mixing(folder: Path, targets: set[Path]) -> None:
    """An output folder that already holds images this run does not write would end up with
    the results of two runs side by side; refuse it (a rerun over its own outputs is fine)."""
    if not folder.is_dir():
        return
    others = [p for p in list_images(folder) if p not in targets]
    if others:
        raise FileExistsError(
            f"output folder {folder} already holds {len(others)} image(s) this run does not "
            f"write ({_listing(others, 3)}): the results of two runs would mix. Choose an "
            "empty folder, or remove them first"
        )


def upscale_path(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    tile: int = 0,
    overlap: int = 8,
    device: str = "auto",
    on_bad_image: str = "error",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> list[Path]:
    """Apply trained weights to an image file or to every image in a folder.

    A file goes to `output` (a file path, or a folder to hold ``<stem>.png``); a folder goes to
    ``output/<stem>.png``. An output that would replace an input is refused before anything is
    loaded (see plan_upscale). Each output is written atomically, so an error part-way leaves
    only complete files, and its message says which inputs were done. `on_bad_image`: "error"
    stops at an unreadable or over-`max_pixels` image, "skip" leaves it out with a warning.
    Returns the written paths.
    """
    if on_bad_image not in UPSCALE_POLICIES:
        raise ValueError(f"on_bad_image must be one of {UPSCALE_POLICIES}, got {on_bad_image!r}")
    check_tiling(tile, overlap)
    if tile and not overlap:
        warnings.warn(
            f"tile {tile} with overlap 0: every tile's border sees zero padding instead of its "
            "neighbours, so the output differs from whole-image inference along the seams; "
            "an overlap of 8 to 16 LR pixels removes the difference",
            SeamWarning,
            stacklevel=2,
        )
    plan = plan_upscale(input, output)
    model, scale = load_model(weights, device)
    done: list[tuple[Path, Path]] = []
    skipped: list[str] = []
    alpha: list[tuple[Path, str]] = []

    def stop(problem: str) -> UpscaleError:
        finished = [f"{a} -> {b}" for a, b in done]
        left = [p for p, _ in plan[len(done) + len(skipped) :]]
        return UpscaleError(
            f"{problem}. Done before the error ({len(done)} of {len(plan)}): "
            f"{_listing(finished) or 'none'}; not written: {_listing(left)}"
        )

    for folder in {t.parent for _, t in plan}:
        remove_stale_temps(folder)  # partial files of a writer that was killed
    for path, target in _progress(plan, "upscale"):
        try:
            image = decode_image(path, max_pixels=max_pixels)
        except ImageReadError as exc:
            advice = (
                f"If the image is genuine, raise --max-pixels (now {max_pixels:,}); otherwise "
                "remove it, or pass --on-bad-image skip to leave it out"
                if isinstance(exc, ImageTooLargeError)
                else "Replace or remove it, or pass --on-bad-image skip to leave it out"
            )
            if on_bad_image == "skip":
                skipped.append(str(exc))
                continue
            raise stop(f"{exc}. {advice}") from exc
        alpha.append((path, image.alpha))
        try:
            sr = upscale_image(model, image.array, scale, tile, overlap)
            write_image(target, sr)
        except (ValueError, RuntimeError, OSError) as exc:
            raise stop(f"{path}: {exc}") from exc
        done.append((path, target))
    note = alpha_note(alpha, str(input))
    if note:
        warnings.warn(note, AlphaDroppedWarning, stacklevel=2)
    if skipped:
        warnings.warn(
            f"--on-bad-image skip: {len(skipped)} input(s) left out:\n  " + "\n  ".join(skipped),
            SkippedInputWarning,
            stacklevel=2,
        )
        if not done:
            raise UpscaleError(f"every input was skipped; nothing was written ({input})")
    return [t for _, t in done]
