"""SR networks and the registry the pipeline builds them from.

`MODELS` is a plain dict from name to a callable taking keyword arguments (`scale` plus
architecture knobs) and returning an `nn.Module`; add your own with `MODELS["mynet"] = MyNet`,
or pass an import path `package.module:ClassName` to `build_model` without registering at all.
Every model maps [0, rgb_range] LR images (B, n_colors, H, W) to (B, n_colors, scale*H, scale*W).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from sgsr.models.common import SCALES, MeanShift, Upsampler, count_parameters
from sgsr.models.edsr import EDSR, edsr, edsr_baseline
from sgsr.models.rcan import RCAN
from sgsr.models.srresnet import SRResNet

__all__ = [
    "EDSR",
    "MODELS",
    "RCAN",
    "SCALES",
    "MeanShift",
    "SRResNet",
    "Upsampler",
    "build_model",
    "count_parameters",
    "edsr",
    "edsr_baseline",
    "resolve_model",
]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "edsr_baseline": edsr_baseline,
    "edsr": edsr,
    "rcan": RCAN,
    "srresnet": SRResNet,
}


def _import_path(path: str) -> Callable[..., nn.Module]:
    """Resolve `package.module:Attr` (Attr may be dotted, e.g. `mod:Outer.Inner`)."""
    module_name, _, attr_path = path.partition(":")
    if not module_name or not attr_path or ":" in attr_path:
        raise ValueError(
            f"model import path {path!r} is malformed; write it as 'package.module:ClassName'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # Only translate "that module does not exist"; a missing dependency *inside* the user's
        # module is their bug and keeps its own traceback.
        missing = err.name or ""
        if not missing or not (module_name == missing or module_name.startswith(missing + ".")):
            raise
        raise ValueError(
            f"model import path {path!r}: cannot import module {module_name!r} ({err}); "
            f"check the spelling and that it is on sys.path / installed"
        ) from err
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(
                f"model import path {path!r}: module {module_name!r} has no attribute "
                f"{attr_path!r} (missing {part!r})"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model import path {path!r} names {type(obj).__name__}, not a callable")
    return obj


def resolve_model(name: str) -> Callable[..., nn.Module]:
    """The constructor for a registry name or a `module:Class` import path."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    name = name.strip()
    if ":" in name:
        return _import_path(name)
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(
            f"unknown model {name!r}; available: {sorted(MODELS)}, or an import path "
            f"'package.module:ClassName' for your own network"
        )
    return MODELS[key]


def _check_kwargs(name: str, ctor: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Name the bad or missing key up front instead of a bare TypeError from deep inside."""
    try:
        sig = inspect.signature(ctor)
    except (TypeError, ValueError):  # some builtins have no signature: let the call decide
        return
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {name!r} does not accept {', '.join(map(repr, unknown))}; "
            f"accepted arguments: {accepted}"
        )
    missing = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY)
        and p.name not in kwargs
    ]
    if missing:
        raise ValueError(f"model {name!r} needs {', '.join(map(repr, missing))}; none was given")


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model (`MODELS`) or a user's `package.module:ClassName` with `kwargs`.

    Example: `build_model("edsr_baseline", scale=4, n_resblocks=8, n_feats=32)` is a slim
    EDSR-baseline. Raises ValueError naming the bad name, import path or keyword.
    """
    ctor = resolve_model(name)
    _check_kwargs(name, ctor, kwargs)
    model = ctor(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model
