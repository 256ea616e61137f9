"""The trained-model file: ``model.safetensors`` (plus ``run.json`` beside it), written by the
trainer and read by inference, ``sgsr upscale`` and anything that ships weights.

- Writing (:func:`write_weights`, :func:`save_safetensors`): a plain state dict whose metadata
  says ``sgsr_weights`` ("ema" or "raw") and ``sgsr_run`` (the run-card keys needed to rebuild
  the network), with a canonical header so identical trainings give identical bytes; written
  atomically.
- Reading (:func:`load_model`): rebuild the network from ``run.json`` (or the card in the
  metadata) and load the weights strictly. A card is data, so it may only name a registered
  architecture; the pipeline passes the params' definition of the run (:class:`TrustedArch`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sgsr.devices import resolve_device
from sgsr.fsutil import atomic_write, write_text
from sgsr.layout import CARD_NAME, RAW_WEIGHTS_NAME, WEIGHTS_NAME
from sgsr.weight_check import check_weights

#: Run-card keys copied into the safetensors header (metadata ``sgsr_run``): enough to rebuild
#: the network from the weights file alone (load_model falls back to it without run.json), and
#: nothing that varies between identical runs, so identical trainings give identical bytes.
WEIGHTS_METADATA_KEYS = ("run", "arch", "model_kwargs", "scale", "loss", "params_hash")


def save_safetensors(
    tensors: Mapping[str, Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str]
) -> None:
    """safetensors file with a canonical header, written atomically.

    safetensors serialises the metadata map in random order, so the same tensors give different
    bytes from run to run (and DVC sees a changed output). The header is re-emitted with sorted
    keys; tensor offsets are relative to the data block, which is copied unchanged.
    """
    from safetensors.torch import save

    blob = save(
        {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, dict(metadata)
    )
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered: dict[str, Any] = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    ordered.update(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes with spaces
    with atomic_write(path) as fh:
        fh.write(len(text).to_bytes(8, "little"))
        fh.write(text)
        fh.write(blob[8 + n :])


def write_weights(
    out_dir: str | os.PathLike[str],
    weights: Mapping[str, Tensor],
    card: Mapping[str, Any],
    raw: Mapping[str, Tensor] | None = None,
    raw_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """``model.safetensors`` (`weights`: the EMA weights when EMA is on, as ``card["weights"]``
    says), ``model-raw.safetensors`` (`raw`, the non-averaged weights; EMA on only) in
    `raw_dir` (default `out_dir`) and ``run.json`` (`card`), each written atomically; a raw
    file left in either folder by an earlier run is removed (stale).

    Each weights file is a plain state dict; its metadata says ``sgsr_weights`` ("ema" or "raw")
    and ``sgsr_run`` (JSON of :data:`WEIGHTS_METADATA_KEYS` from the run card).
    """
    out_dir = Path(out_dir)
    raw_path = Path(raw_dir if raw_dir is not None else out_dir) / RAW_WEIGHTS_NAME
    files = [(out_dir / WEIGHTS_NAME, weights, card["weights"])]
    if raw is not None:
        files.append((raw_path, raw, "raw"))
    kept = {raw_path} if raw is not None else set()
    for stale in {out_dir / RAW_WEIGHTS_NAME, raw_path} - kept:
        stale.unlink(missing_ok=True)
    summary = json.dumps(
        {k: card[k] for k in WEIGHTS_METADATA_KEYS if k in card}, sort_keys=True, default=str
    )
    for path, tensors, kind in files:
        meta = {"format": "pt", "sgsr_run": summary, "sgsr_weights": kind}
        save_safetensors(tensors, path, meta)
    write_text(out_dir / CARD_NAME, json.dumps(card, indent=2, default=str) + "\n")
    return out_dir / WEIGHTS_NAME


# --------------------------------------------------------------------------------------------
# reading

#: Key prefixes under which a trainer may store a second copy of the weights.
_EMA_PREFIX = "ema."
_STRIP_PREFIXES = ("module.", "_orig_mod.")


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
    check_weights(tensors, str(path))
    return tensors, meta


def read_shipped_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict a ``model.safetensors`` ships (EMA when the file has them), with no
    network built: what another run starts from (``train.init_from: run:<name>``)."""
    tensors, meta = _read_weights(Path(path))
    return _select_state(tensors, meta.get("sgsr_weights"), Path(path))[0]


def _run_card(path: Path, meta: dict[str, str]) -> tuple[dict[str, Any], Path | str]:
    """run.json beside the weights, else the copy the trainer embeds in the file's metadata."""
    card_path = path.parent / CARD_NAME
    if card_path.is_file():
        try:
            return json.loads(card_path.read_text()), card_path
        except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: deep nesting
            raise ValueError(f"{card_path}: not valid JSON ({exc})") from exc
    if "sgsr_run" in meta:
        try:
            return json.loads(meta["sgsr_run"]), f"{path} (metadata sgsr_run)"
        except (json.JSONDecodeError, RecursionError) as exc:
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
    from sgsr.models import build_model, canonical_arch, check_model_args, resolve_model

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
        same_arch = canonical_arch(card["arch"]) == canonical_arch(trusted.arch)
        if not same_arch or _json_normal(card_kwargs) != _json_normal(ours):
            raise ValueError(
                f"{card_src}: the weights were built as {card['arch']!r} {card_kwargs}, but the "
                f"params define this run as {trusted.arch!r} {dict(ours)}; they belong to another "
                "model: retrain the run (sgsr train, or dvc repro)"
            )
        arch, kwargs, allow = trusted.arch, dict(ours), trusted.allow_import
    # The file's own label wins: run.json's "weights" describes model.safetensors only.
    kind = meta.get("sgsr_weights") or card.get("weights")
    state, kind = _select_state(tensors, kind, path)
    try:
        # An architecture read from weights (arch: community) is rebuilt from these trained
        # tensors (its `from_state` hook), so the pretrained file it started from is not needed.
        ctor = resolve_model(arch, allow_import=allow)
        from_state = getattr(ctor, "from_state", None)
        if from_state is not None:
            check_model_args(arch, ctor, {**kwargs, "scale": scale})
            model = from_state(state, scale=scale, **kwargs)
        else:
            shapes = {k: tuple(v.shape) for k, v in state.items()}
            model = build_model(
                arch, allow_import=allow, expect_shapes=shapes, scale=scale, **kwargs
            )
    except ValueError as exc:
        raise ValueError(f"{card_src}: cannot build the model of {path} ({exc})") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit {arch} {kwargs}: {exc}") from exc
    model.sgsr_weights = kind
    return model.eval().to(resolve_device(device)), scale
