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

import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sgsr import layout
from sgsr.config import DEFAULT_MAX_PIXELS, Config, allows_import
from sgsr.devices import resolve_device
from sgsr.imaging import (
    IMAGE_SUFFIXES,
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
from sgsr.runs import bicubic_scale

#: Key prefixes under which a trainer may store a second copy of the weights.
_EMA_PREFIX = "ema."
_STRIP_PREFIXES = ("module.", "_orig_mod.")
#: Smallest blending weight, so every output pixel has a positive total weight.
_FLOOR = 1e-6


# --------------------------------------------------------------------------------------------
# loading trained weights
# --------------------------------------------------------------------------------------------
def _select_state(
    tensors: dict[str, torch.Tensor], kind: str | None, path: Path
) -> tuple[dict[str, torch.Tensor], str]:
    """Pick the weights to run: EMA when the file has them, unless `kind` says "raw".

    Layouts understood: plain keys (the trainer's: ``model.safetensors`` holds the EMA model
    when train.ema > 0, ``model-raw.safetensors`` the raw one, each saying which in its
    metadata ``sgsr_weights`` and run.json ``"weights"``), or plain keys plus an ``ema.``-prefixed
    copy. DDP/compile prefixes are stripped.
    """
    if kind not in (None, "ema", "raw"):
        raise ValueError(f"{path}: weights kind must be 'ema' or 'raw', got {kind!r}")
    ema = {k[len(_EMA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_EMA_PREFIX)}
    raw = {k: v for k, v in tensors.items() if not k.startswith(_EMA_PREFIX)}
    if ema and kind != "raw":
        state, kind = ema, "ema"
    elif raw:
        state, kind = raw, kind or "as stored"
    else:
        raise ValueError(f"{path}: holds only ema.* tensors, but raw weights were asked for")
    cleaned = {}
    for key, value in state.items():
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        cleaned[key] = value
    return cleaned, kind


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    return tensors, meta


def _run_card(path: Path, meta: dict[str, str]) -> tuple[dict[str, Any], Path | str]:
    """run.json beside the weights, else the copy the trainer embeds in the file's metadata."""
    card_path = path.parent / "run.json"
    if card_path.is_file():
        try:
            return json.loads(card_path.read_text()), card_path
        except json.JSONDecodeError as exc:
            raise ValueError(f"{card_path}: not valid JSON ({exc})") from exc
    if "sgsr_run" in meta:
        try:
            return json.loads(meta["sgsr_run"]), f"{path} (metadata sgsr_run)"
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: metadata sgsr_run is not valid JSON ({exc})") from exc
    raise FileNotFoundError(
        f"{card_path} not found and {path} carries no run card: run.json names the architecture "
        "(arch, model_kwargs, scale); keep it beside the weights"
    )


@dataclass(frozen=True)
class TrustedArch:
    """The architecture as params.yaml defines a run (trusted, unlike a run card in
    ``models/<run>/``, which arrives as data, e.g. from ``dvc pull``)."""

    arch: str
    model_kwargs: Mapping[str, Any]
    allow_import: bool = False


def _json_normal(value: Any) -> Any:
    """What `value` looks like after a trip through run.json (tuples become lists, ...)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def load_model(
    weights_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    trusted: TrustedArch | None = None,
) -> tuple[nn.Module, int]:
    """Rebuild the network from ``run.json`` beside `weights_path` and load its weights.

    run.json (or, when absent, the run card in the file's metadata) needs ``arch``,
    ``model_kwargs`` and ``scale``. A card is data, so its ``arch`` may only name a registered
    architecture (sgsr.models.registered): an import path there is refused before anything is
    imported. With `trusted` (the pipeline passes the params' definition of the run) the card
    must agree with it and the params' arch is what gets built. Returns ``(model in eval mode
    on device, scale)``; the model gets ``.sgsr_weights`` ("ema", "raw" or "as stored").
    Loading is strict: a tensor missing or extra for the architecture is an error naming the
    file.
    """
    from sgsr.models import build_model

    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"weights {path} not found (train the run first: sgsr train)")
    tensors, meta = _read_weights(path)
    card, card_src = _run_card(path, meta)
    if not isinstance(card, dict):
        raise ValueError(f"{card_src}: must be a JSON object, got {type(card).__name__}")
    missing = [k for k in ("arch", "model_kwargs", "scale") if k not in card]
    if missing:
        raise ValueError(f"{card_src}: missing key(s) {missing} (need arch, model_kwargs, scale)")
    scale = card["scale"]
    if not isinstance(scale, int) or isinstance(scale, bool):
        raise ValueError(f"{card_src}: scale must be an integer, got {scale!r}")
    card_kwargs = card["model_kwargs"] or {}
    if not isinstance(card_kwargs, dict):
        raise ValueError(f"{card_src}: model_kwargs must be an object, got {card_kwargs!r}")
    card_kwargs = {k: v for k, v in card_kwargs.items() if k != "scale"}
    if not isinstance(card["arch"], str):
        raise ValueError(f"{card_src}: arch must be a string, got {card['arch']!r}")
    arch, kwargs, allow = card["arch"], card_kwargs, False
    if trusted is not None:
        ours = {k: v for k, v in trusted.model_kwargs.items() if k != "scale"}
        same_arch = card["arch"].strip() == trusted.arch.strip()
        if not same_arch or _json_normal(card_kwargs) != _json_normal(ours):
            raise ValueError(
                f"{card_src}: the weights were built as {card['arch']!r} {card_kwargs}, but the "
                f"params define this run as {trusted.arch!r} {dict(ours)}; they belong to another "
                "model: retrain the run (sgsr train, or dvc repro)"
            )
        arch, kwargs, allow = trusted.arch, dict(ours), trusted.allow_import
    try:
        model = build_model(arch, allow_import=allow, scale=scale, **kwargs)
    except ValueError as exc:
        raise ValueError(f"{card_src}: cannot build the model ({exc})") from exc
    # The file's own label wins: run.json's "weights" describes model.safetensors only.
    kind = meta.get("sgsr_weights") or card.get("weights")
    state, kind = _select_state(tensors, kind, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit {arch} {kwargs}: {exc}") from exc
    model.sgsr_weights = kind
    return model.eval().to(resolve_device(device)), scale


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


def _model_range(model: nn.Module) -> float:
    return float(getattr(model, "rgb_range", 1.0))


def _tiled(model: nn.Module, x: torch.Tensor, scale: int, tile: int, overlap: int) -> torch.Tensor:
    """Core of `upscale`: x (B, C, H, W) float in [0, 1] on CPU -> unclamped float32 SR."""
    device = next(model.parameters()).device
    rgb_range = _model_range(model)
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
            pred = model(window * rgb_range) if rgb_range != 1.0 else model(window)
            pred = pred.float().cpu()
            if rgb_range != 1.0:
                pred = pred / rgb_range
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


def upscale(
    model: nn.Module, lr: torch.Tensor, scale: int, tile: int = 0, overlap: int = 8
) -> torch.Tensor:
    """Super-resolve one LR image (1, C, H, W) in [0, 1]; returns (1, C, sH, sW) float32 on
    the CPU, clamped to [0, 1] (quantise with `imaging.to_uint8`).

    `tile` is the window side in LR pixels (0 = whole image), `overlap` the minimum overlap
    between windows (must be < tile / 2). A 1-channel image through a 3-channel model is
    replicated to RGB and the output averaged back to one channel (equal weights, so a gray
    result stays exactly its gray value); a 3-channel image through a 1-channel model runs each
    channel on its own.
    """
    if lr.dim() != 4 or lr.shape[0] != 1:
        raise ValueError(f"upscale expects one image (1, C, H, W), got {tuple(lr.shape)}")
    if tile < 0 or overlap < 0:
        raise ValueError(f"tile and overlap must be >= 0, got tile={tile}, overlap={overlap}")
    if tile and 2 * overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be less than half of tile ({tile})")
    model_colors = int(getattr(model, "n_colors", lr.shape[1]))
    channels = lr.shape[1]
    x = lr.detach().cpu()
    with torch.inference_mode():
        if channels == model_colors:
            sr = _tiled(model, x, scale, tile, overlap)
        elif channels == 1 and model_colors == 3:
            sr = _tiled(model, x.expand(-1, 3, -1, -1), scale, tile, overlap).mean(1, keepdim=True)
        elif channels == 3 and model_colors == 1:
            sr = _tiled(model, x.transpose(0, 1), scale, tile, overlap).transpose(0, 1)
        else:
            raise ValueError(f"cannot run a {model_colors}-channel model on {channels} channels")
    return sr.clamp(0.0, 1.0)  # out of inference mode: a normal tensor callers may modify


def upscale_image(
    model: nn.Module, image: np.ndarray, scale: int, tile: int = 0, overlap: int = 8
) -> np.ndarray:
    """uint8 (H, W, C) LR -> uint8 (sH, sW, C) SR."""
    return to_uint8(upscale(model, to_tensor(image), scale, tile, overlap))


# --------------------------------------------------------------------------------------------
# the pipeline stage and the user command
# --------------------------------------------------------------------------------------------
def _progress(items: list, desc: str) -> Iterator:
    from tqdm import tqdm

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
    folder itself as the output folder, or two inputs written to one output."""
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
        is_file_target = dst.suffix.lower() in IMAGE_SUFFIXES and not dst.is_dir()
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
    return plan


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
