"""Community SR networks (ESRGAN/RRDBNet, SRVGGNetCompact, SwinIR, HAT, ...) through spandrel.

Why: users fine-tune networks they already have, stored as bare state dicts. spandrel
(``spandrel==0.4.2``) recognises the architecture and its hyper-parameters from the tensor
names and shapes and builds the network from code in the installed package: a weights file
only ever *selects* one of spandrel's registered architectures, it never names code to import.

- Files: ``.safetensors`` (no code at all), or ``.pth``/``.pt``/``.ckpt`` read with
  ``torch.load(weights_only=True)`` (tensors and plain containers only; TorchScript and pickled
  objects are refused).
- Key conventions: spandrel's ``canonicalize_state_dict`` unwraps a nested dict under
  ``model_state_dict``, ``state_dict``, ``params_ema``, ``params-ema``, ``params``, ``model``
  or ``net`` (first match in that order, so basicsr's ``params_ema`` wins over ``params``)
  or a single-key wrapper, and strips a ``module.`` or ``netG.`` prefix shared by every key;
  here a shared ``_orig_mod.`` (torch.compile) prefix is stripped too.
- Licences: the ``spandrel`` package holds only permissively licensed architectures; the
  restrictive (e.g. non-commercial) ones live in ``spandrel_extra_arches``, which can add them
  to spandrel's global registry. Detection here uses only architectures implemented inside
  ``spandrel.architectures`` unless ``allow_restrictive=True``.
- Value range: spandrel's networks map [0, 1] to [0, 1]; sgsr's map [0, rgb_range] to
  [0, rgb_range] (rgb_range 1.0 by default; the trainer feeds [0, 1]). :class:`CommunitySR`
  divides by / multiplies with ``rgb_range`` (nothing at all when it is 1.0) and pads inputs
  to the architecture's size requirements, so the rest of sgsr uses it like its own models.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from sgsr import layout
from sgsr.fsutil import sha256sum
from sgsr.models.common import ModelArgumentError
from sgsr.pretrained import SR_WEIGHTS, WEIGHTS, verified_tensors
from sgsr.weight_check import check_weights

#: Module prefix of the architectures shipped in the ``spandrel`` package itself.
PERMISSIVE_PREFIX = "spandrel.architectures."
_PTH_SUFFIXES = (".pth", ".pt", ".ckpt")
_CHILD = "net."


class CommunityModelError(ValueError):
    """A state dict that cannot be used as a community SR network; the message says why."""


def _first_line(exc: BaseException, limit: int = 300) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else ""
    if len(line) > limit:  # whole sentences only: a cut sentence can read as other advice
        cut = line[:limit].rfind(". ")
        line = line[: cut + 1] if cut > 0 else line[:limit] + " ..."
    return f"{type(exc).__name__}: {line}"


def _unpickling_reason(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused, without its advice to load the file with
    ``weights_only=False`` (which would run the code it just refused)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    specific = [
        ln for ln in lines if ln.startswith(("Trying to load", "Unsupported", "WeightsUnpickler"))
    ]
    if specific:
        return f"{type(exc).__name__}: {specific[0]}"
    return _first_line(exc)


# --------------------------------------------------------------------------------------------
# reading and canonicalising state dicts
# --------------------------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw (possibly nested) dict stored in a weights file, loaded without running code."""
    path = Path(path)
    if not path.is_file():
        raise CommunityModelError(f"weights file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CommunityModelError(f"{path}: not a readable safetensors file ({exc})") from exc
    if suffix in _PTH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, RuntimeError (TorchScript, zip), EOFError
            raise CommunityModelError(
                f"{path}: cannot be read as a plain weights file with torch.load("
                f"weights_only=True) ({_unpickling_reason(exc)}). "
                "Only tensors in plain dicts are accepted: pickled objects and TorchScript "
                "could run code. Convert it to .safetensors where you trust it."
            ) from exc
        if not isinstance(obj, Mapping):
            raise CommunityModelError(
                f"{path}: holds a {type(obj).__name__}, not a state dict (a dict of tensors)"
            )
        return dict(obj)
    raise CommunityModelError(
        f"{path}: unsupported weights file type {suffix!r}; use .safetensors (or .pth/.pt/.ckpt "
        "holding a plain state dict)"
    )


def canonical_state_dict(obj: Mapping[str, Any], source: str = "state dict") -> dict[str, Tensor]:
    """A flat ``{name: tensor}`` dict in the key convention spandrel detects (see module doc)."""
    # spandrel (its 40 architectures): only community models load it
    from spandrel import canonicalize_state_dict

    state = canonicalize_state_dict(dict(obj))
    prefix = "_orig_mod."
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if not state or bad:
        raise CommunityModelError(
            f"{source}: not a flat state dict of tensors after unwrapping "
            f"(non-tensor entries: {bad[:5] or 'the dict is empty'}); top-level keys were "
            f"{sorted(map(str, obj))[:8]}"
        )
    check_weights(state, source)
    return state


# --------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------
def is_permissive(arch: Any) -> bool:
    """Whether a spandrel architecture object is implemented in the ``spandrel`` package."""
    return type(arch).__module__.startswith(PERMISSIVE_PREFIX)


def _registry(allow_restrictive: bool) -> Any:
    # spandrel (its 40 architectures): only community models load it
    from spandrel import MAIN_REGISTRY, ArchRegistry

    if allow_restrictive:
        return MAIN_REGISTRY
    registry = ArchRegistry()
    registry.add(*(s for s in MAIN_REGISTRY.architectures() if is_permissive(s.architecture)))
    return registry


def load_descriptor(
    path_or_state: str | os.PathLike[str] | Mapping[str, Any],
    *,
    allow_restrictive: bool = False,
    source: str | None = None,
) -> Any:
    """spandrel's ``ImageModelDescriptor`` for a weights file or an in-memory state dict
    (`source` names the latter in messages)."""
    # spandrel (its 40 architectures): only community models load it
    from spandrel import ImageModelDescriptor, UnsupportedModelError

    if isinstance(path_or_state, Mapping):
        source, raw = source or "state dict", path_or_state
    else:
        source, raw = str(path_or_state), read_state_dict(path_or_state)
    state = canonical_state_dict(raw, source)
    try:
        desc = _registry(allow_restrictive).load(state)
    except UnsupportedModelError:
        extra = "" if allow_restrictive else " (restrictively licensed architectures excluded)"
        raise CommunityModelError(
            f"{source}: no spandrel architecture{extra} matches these {len(state)} tensors "
            f"(first keys: {list(state)[:4]}); see spandrel's list of supported architectures"
        ) from None
    except Exception as exc:  # a detected architecture whose tensors do not fit it
        raise CommunityModelError(
            f"{source}: spandrel could not build the network from these weights "
            f"({_first_line(exc)})"
        ) from exc
    name = desc.architecture.name
    if not allow_restrictive and not is_permissive(desc.architecture):
        raise CommunityModelError(
            f"{source}: detected architecture {name} comes from "
            f"{type(desc.architecture).__module__}, not the permissively licensed spandrel "
            "package; pass allow_restrictive=True if its licence allows your use"
        )
    if not isinstance(desc, ImageModelDescriptor):
        raise CommunityModelError(
            f"{source}: {name} is a {type(desc).__name__} ({desc.purpose}), not an "
            "image-to-image SR network"
        )
    if desc.input_channels != desc.output_channels or desc.input_channels not in (1, 3):
        raise CommunityModelError(
            f"{source}: {name} maps {desc.input_channels} to {desc.output_channels} channels; "
            "sgsr runs networks that map 3 -> 3 (RGB) or 1 -> 1 (grey)"
        )
    return desc


# --------------------------------------------------------------------------------------------
# the module sgsr uses
# --------------------------------------------------------------------------------------------
def _strip_child_prefix(module: nn.Module, state: dict, prefix: str, _meta: Any) -> None:
    """state_dict hook: ``<prefix>net.<key>`` -> ``<prefix><key>``."""
    inner = prefix + _CHILD
    for key in [k for k in state if k.startswith(inner)]:
        state[prefix + key[len(inner) :]] = state.pop(key)


def _add_child_prefix(module: nn.Module, state: dict, prefix: str, *_: Any) -> None:
    """load_state_dict pre-hook: the inverse of :func:`_strip_child_prefix`."""
    for key in [k for k in state if k.startswith(prefix)]:
        state[prefix + _CHILD + key[len(prefix) :]] = state.pop(key)


def _default_call(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def _pad(x: Tensor, pad_w: int, pad_h: int) -> Tensor:
    """Right/bottom padding as spandrel's call API does: reflect as far as it can, then
    replicate."""
    rw, rh = min(pad_w, x.shape[-1] - 1), min(pad_h, x.shape[-2] - 1)
    if rw or rh:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if pad_w - rw or pad_h - rh:
        x = F.pad(x, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
    return x


class CommunitySR(nn.Module):
    """A spandrel network behind sgsr's model contract.

    ``forward`` maps (B, n_colors, H, W) in [0, rgb_range] to (B, n_colors, scale*H, scale*W),
    unclamped like sgsr's own models. ``net`` is spandrel's plain module; ``state_dict()`` and
    ``load_state_dict()`` use *its* key names (no ``net.`` prefix), so a saved fine-tune is
    again a state dict that spandrel detects. Attributes: ``scale``, ``n_colors``,
    ``rgb_range``, ``arch`` (spandrel's architecture id), ``tags``.
    """

    def __init__(self, descriptor: Any, rgb_range: float = 1.0) -> None:
        super().__init__()
        if not rgb_range > 0:
            raise ValueError(f"rgb_range must be positive, got {rgb_range!r}")
        self.net: nn.Module = descriptor.model
        self.scale = int(descriptor.scale)
        self.n_colors = int(descriptor.input_channels)
        self.rgb_range = float(rgb_range)
        self.arch = str(descriptor.architecture.id)
        self.tags = list(descriptor.tags)
        self.size_requirements = descriptor.size_requirements
        # Some architectures' forward returns a tuple or another range; spandrel's descriptor
        # carries the call that yields [0, 1] images (the identity call for most of them).
        self._call: Callable[[nn.Module, Tensor], Tensor] = (
            getattr(descriptor, "_call_fn", None) or _default_call
        )
        self.register_state_dict_post_hook(_strip_child_prefix)
        self.register_load_state_dict_pre_hook(_add_child_prefix)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pad_w, pad_h = self.size_requirements.get_padding(w, h)
        if pad_w or pad_h:
            x = _pad(x, pad_w, pad_h)
        if self.rgb_range != 1.0:
            x = x / self.rgb_range
        y = self._call(self.net, x)
        if self.rgb_range != 1.0:
            y = y * self.rgb_range
        if pad_w or pad_h:
            y = y[..., : h * self.scale, : w * self.scale]
        return y

    def adapt_state(self, state: Mapping[str, Any], source: str) -> dict[str, Tensor]:
        """`state` in this network's key names: spandrel maps other conventions of the same
        architecture (e.g. basicsr's RRDBNet keys onto its ESRGAN ones); for ``init_from``."""
        desc = load_descriptor(state, source=source, allow_restrictive=True)
        return dict(desc.model.state_dict())

    def extra_repr(self) -> str:
        return f"arch={self.arch}, scale={self.scale}, n_colors={self.n_colors}, " + (
            f"rgb_range={self.rgb_range}"
        )


def load_state_dict_model(
    path_or_state: str | os.PathLike[str] | Mapping[str, Any],
    expected_scale: int | None = None,
    *,
    allow_restrictive: bool = False,
    rgb_range: float = 1.0,
    source: str | None = None,
) -> CommunitySR:
    """Detect the architecture of a state dict (file or mapping) and build the network.

    ``expected_scale`` (the run's scale) must equal the scale spandrel reads from the weights;
    a mismatch is an error naming the file, the architecture and both scales. Returns a
    :class:`CommunitySR` in train mode (like a freshly built sgsr model), weights loaded.
    """
    desc = load_descriptor(path_or_state, allow_restrictive=allow_restrictive, source=source)
    if not isinstance(path_or_state, Mapping):
        source = str(path_or_state)
    source = source or "state dict"
    if expected_scale is not None and desc.scale != expected_scale:
        raise CommunityModelError(
            f"{source}: the weights are a x{desc.scale} {desc.architecture.name} "
            f"({', '.join(desc.tags)}), but the run's scale is x{expected_scale}; use weights "
            f"trained for x{expected_scale} or set the run's scale to {desc.scale}"
        )
    return CommunitySR(desc, rgb_range=rgb_range).train()


# --------------------------------------------------------------------------------------------
# the registered architecture ``community`` (models.<name>: {arch: community, weights: ...})
# --------------------------------------------------------------------------------------------
STATE_SUFFIXES = (".safetensors", *_PTH_SUFFIXES)


def _arg_error(argument: str, message: str) -> Exception:
    return ModelArgumentError(argument, message)


def check_community_args(
    scale: int,
    weights: object,
    rgb_range: object = 1.0,
    allow_restrictive: object = False,
    sha256: object = None,
    pretrained_dir: object = None,
) -> None:
    """``models.<name>`` checks that read no file: `weights` names an SR weight of the
    pretrained registry of this scale, or a state-dict file; the pin is 64 hex digits."""
    if not isinstance(weights, str) or not weights.strip():
        raise _arg_error("weights", f"must name a pretrained SR weight or a file, got {weights!r}")
    known = ", ".join(SR_WEIGHTS)
    if weights in SR_WEIGHTS:
        have = SR_WEIGHTS[weights].scale
        if have != scale:
            raise _arg_error(
                "weights",
                f"{weights!r} is a x{have} network but the run's scale is x{scale}; list "
                f"{have} in experiment.scales for this model",
            )
    elif weights in WEIGHTS:
        raise _arg_error("weights", f"{weights!r} is a metric network, not SR; SR: {known}")
    elif Path(weights).suffix.lower() not in STATE_SUFFIXES:
        raise _arg_error(
            "weights",
            f"{weights!r} is neither a pretrained SR weight ({known}) nor a state-dict file "
            f"({', '.join(STATE_SUFFIXES)})",
        )
    if sha256 is not None and (
        not isinstance(sha256, str) or len(sha256) != 64 or set(sha256) - set("0123456789abcdef")
    ):
        raise _arg_error("sha256", f"must be 64 lower-case hex digits, got {sha256!r}")
    if not isinstance(allow_restrictive, bool):
        raise _arg_error("allow_restrictive", f"must be true or false, got {allow_restrictive!r}")
    if isinstance(rgb_range, bool) or not isinstance(rgb_range, int | float) or rgb_range <= 0:
        raise _arg_error("rgb_range", f"must be a positive number, got {rgb_range!r}")


def community_state(
    weights: str, pretrained_dir: str | os.PathLike[str] | None, sha256: str | None
) -> tuple[dict[str, Any], str]:
    """The tensors `weights` names and a label for messages: a registry weight re-hashed
    against its pin, or a local file (checked against `sha256` when one is given)."""
    if weights in SR_WEIGHTS:
        folder = Path(pretrained_dir) if pretrained_dir is not None else layout.PRETRAINED
        return verified_tensors(weights, folder), f"{folder / SR_WEIGHTS[weights].filename}"
    path = Path(weights)
    if sha256 is not None and path.is_file() and (got := sha256sum(path)) != sha256:
        raise CommunityModelError(
            f"{path}: sha256 {got}, but models.<name>.sha256 pins {sha256}; the file changed "
            "(replace it, or update the pin if the change is intended)"
        )
    return read_state_dict(path), str(path)


def community(
    scale: int,
    weights: str,
    rgb_range: float = 1.0,
    allow_restrictive: bool = False,
    sha256: str | None = None,
    pretrained_dir: str | os.PathLike[str] | None = None,
) -> CommunitySR:
    """A community network as an sgsr model, *starting from* `weights`: spandrel reads the
    architecture and its settings from those tensors, so they come with it.

    `weights`: a pretrained SR weight (``realesrgan-x4plus``: fetched and pinned by the download
    stage into `pretrained_dir`, default ``models/pretrained``) or a state-dict file (optionally
    pinned by `sha256`). The scale read from the weights must equal the run's.
    """
    check_community_args(scale, weights, rgb_range, allow_restrictive, sha256)
    state, source = community_state(weights, pretrained_dir, sha256)
    return load_state_dict_model(
        state, scale, allow_restrictive=allow_restrictive, rgb_range=rgb_range, source=source
    )


def community_from_state(state: Mapping[str, Any], scale: int, **kwargs: Any) -> CommunitySR:
    """Rebuild a trained community model from its own weights (``sgsr.weights.load_model``):
    the architecture is in them, so the pretrained file it started from is not needed.
    `kwargs` are the run's ``models.<name>`` settings, checked as `community` checks them."""
    check_community_args(scale, **{k: v for k, v in kwargs.items() if k != "pretrained_dir"})
    return load_state_dict_model(
        state,
        scale,
        allow_restrictive=kwargs.get("allow_restrictive", False),
        rgb_range=kwargs.get("rgb_range", 1.0),
        source=f"trained weights of a community model (started from {kwargs.get('weights')})",
    )


community.check_args = check_community_args  # type: ignore[attr-defined]
community.from_state = community_from_state  # type: ignore[attr-defined]
