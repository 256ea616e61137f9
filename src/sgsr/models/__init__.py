"""SR networks and the registry the pipeline builds them from.

`MODELS` is a plain dict from name to a callable taking keyword arguments (`scale` plus
architecture knobs) and returning an `nn.Module`; add your own with `MODELS["mynet"] = MyNet`,
or, from an installed package, with an entry point in the group ``sgsr.models``.
Every model maps [0, rgb_range] LR images (B, n_colors, H, W) to (B, n_colors, scale*H, scale*W).

Who may name what (an architecture name decides which code runs):

- a *registered* name (MODELS, then the ``sgsr.models`` entry points of installed packages) may
  come from anywhere, a run card or a weights file's metadata included: choosing among code
  the user installed runs nothing new;
- an import path ``package.module:Class`` is code chosen by whoever wrote the string, so it is
  honoured only with ``allow_import=True`` (params.yaml: ``models.<name>.allow_import: true``),
  only when ``package`` belongs to an installed distribution (decided from package metadata,
  before anything is imported), and only if the attribute is a ``torch.nn.Module`` subclass
  (checked after import, before it is called). Run cards and weights files never get it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from sgsr.models.common import SCALES, MeanShift, ModelArgumentError, Upsampler, count_parameters
from sgsr.models.community import community
from sgsr.models.edsr import EDSR, edsr, edsr_baseline
from sgsr.models.rcan import RCAN
from sgsr.models.srresnet import SRResNet
from sgsr.runs import MODEL_META_KEYS, canonical_arch, is_import_path

__all__ = [
    "EDSR",
    "ENTRY_POINT_GROUP",
    "MODELS",
    "RCAN",
    "SCALES",
    "MeanShift",
    "ModelArgumentError",
    "SRResNet",
    "UntrustedModelError",
    "Upsampler",
    "build_model",
    "canonical_arch",
    "check_model_args",
    "count_parameters",
    "edsr",
    "edsr_baseline",
    "is_import_path",
    "registered",
    "resolve_model",
    "setting_problem",
    "size_problem",
    "spec_problems",
]

#: Installed packages register architectures here (pyproject: [project.entry-points."sgsr.models"]
#: mynet = "mylab.nets:MyNet"); they count as registered, like MODELS.
ENTRY_POINT_GROUP = "sgsr.models"


class UntrustedModelError(ValueError):
    """An architecture would import code that nobody allowed (see the module docstring)."""


MODELS: dict[str, Callable[..., nn.Module]] = {
    "edsr_baseline": edsr_baseline,
    "edsr": edsr,
    "rcan": RCAN,
    "srresnet": SRResNet,
    # any spandrel-supported network, built from (and starting at) the weights it names
    "community": community,
}


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return {canonical_arch(ep.name): ep for ep in eps}


def registered(name: str) -> Callable[..., nn.Module] | None:
    """The constructor registered under `name` (MODELS, then ``sgsr.models`` entry points), or
    None. Never interprets `name` as an import path: safe for names read from data files."""
    if not isinstance(name, str) or is_import_path(name) or not name.strip():
        return None
    key = canonical_arch(name)
    if key in MODELS:
        return MODELS[key]
    ep = _entry_points().get(key)
    if ep is None:
        return None
    try:
        ctor = ep.load()
    except Exception as exc:  # the installed package is broken: say which entry point
        raise ValueError(
            f"model {name!r}: entry point {ep.value!r} (group {ENTRY_POINT_GROUP}) failed to "
            f"load: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(ctor):
        raise ValueError(f"model {name!r}: entry point {ep.value!r} is not callable")
    return ctor


def available() -> list[str]:
    """Every registered name, for messages."""
    return sorted({*MODELS, *_entry_points()})


@functools.lru_cache(maxsize=8)
def _distributions_by_package(_sys_path: tuple[str, ...]) -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def installed_problem(path: str) -> str | None:
    """Why `path`'s package may not be imported (None: it may). Reads package metadata only;
    nothing is imported, so a rejected path never runs."""
    module_name, _, attr_path = path.partition(":")
    if not module_name or not attr_path or ":" in attr_path:
        return f"import path {path!r} is malformed; write it as 'package.module:ClassName'"
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names:
        return (
            f"import path {path!r} names the standard library module {top!r}; only classes "
            "from installed packages can be models"
        )
    dists = _distributions_by_package(tuple(sys.path)).get(top)
    if not dists:
        return (
            f"import path {path!r}: {top!r} is not part of any installed package (no "
            "distribution metadata claims it), so it is not imported; install your package "
            "(`pip install -e .` in its folder) or register the class in MODELS"
        )
    return None


def _import_path(path: str) -> Callable[..., nn.Module]:
    """Resolve `package.module:Attr` (Attr may be dotted, e.g. `mod:Outer.Inner`) from an
    installed package, and only to an nn.Module subclass."""
    problem = installed_problem(path)
    if problem:
        raise UntrustedModelError(problem)
    module_name, _, attr_path = path.partition(":")
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
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        raise UntrustedModelError(
            f"model import path {path!r} names {getattr(obj, '__name__', type(obj).__name__)!r}"
            f", which is not a torch.nn.Module subclass, so it is not called (an import path "
            "may only name a model class)"
        )
    return obj


def resolve_model(name: str, allow_import: bool = False) -> Callable[..., nn.Module]:
    """The constructor for a registered name, or (only with `allow_import`) for an import path
    ``package.module:Class`` from an installed package."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    name = name.strip()
    if is_import_path(name):
        if not allow_import:
            raise UntrustedModelError(
                f"model {name!r} is an import path, and importing code was not allowed here: "
                "a run card or weights file may only name a registered architecture "
                f"({', '.join(available())}). To use your own class, register it (MODELS, or "
                f"an entry point in group {ENTRY_POINT_GROUP}), or name it in params.yaml with "
                "models.<name>.allow_import: true. Nothing was imported."
            )
        return _import_path(name)
    ctor = registered(name)
    if ctor is None:
        raise ValueError(
            f"unknown model {name!r}; available: {available()}, or an import path "
            f"'package.module:ClassName' for your own network (params.yaml, with allow_import)"
        )
    return ctor


def _signature(ctor: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(ctor)
    except (TypeError, ValueError):  # some builtins have no signature: let the call decide
        return None


def _check_kwargs(name: str, ctor: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Name the bad or missing key up front instead of a bare TypeError from deep inside."""
    bad = [k for k in kwargs if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        raise ModelArgumentError(
            str(bad[0]), f"model {name!r}: {bad[0]!r} is not a valid argument name"
        )
    sig = _signature(ctor)
    if sig is None:
        return
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ModelArgumentError(
            unknown[0],
            f"model {name!r} does not accept {', '.join(map(repr, unknown))}; "
            f"accepted arguments: {accepted}",
        )
    missing = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY)
        and p.name not in kwargs
    ]
    if missing:
        raise ModelArgumentError(
            missing[0], f"model {name!r} needs {', '.join(map(repr, missing))}; none was given"
        )


def check_model_args(name: str, ctor: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Validate `kwargs` for `ctor` without building: names against its signature, then its
    ``check_args`` hook if it has one (sgsr's models do; it runs the constructor's own checks).
    Raises ModelArgumentError naming the argument."""
    _check_kwargs(name, ctor, kwargs)
    hook = getattr(ctor, "check_args", None)
    sig = _signature(ctor)
    if hook is None or sig is None:
        return
    bound = sig.bind_partial(**kwargs)
    bound.apply_defaults()
    hook(**bound.arguments)


#: Most parameters a network may have when built from params or a run card: 1e9 (4 GB of fp32
#: weights, 23 times EDSR's 43 M). A run card arrives as data (``dvc pull``), and
#: ``n_feats: 100000`` would otherwise try to allocate hundreds of GB before anything is checked.
MAX_PARAMETERS = 1_000_000_000
#: Largest integer setting (blocks, groups, features) of a registered architecture, checked
#: first: counting the parameters of ten million blocks would itself take hours.
MAX_INT_SETTING = 4096


def setting_problem(kwargs: Mapping[str, Any]) -> tuple[str, str] | None:
    """(argument, why) for the first integer setting over :data:`MAX_INT_SETTING`."""
    for key, value in kwargs.items():
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_INT_SETTING:
            return key, (
                f"{key}={value} is over the limit of {MAX_INT_SETTING} for an integer setting "
                "(blocks, groups, features)"
            )
    return None


def size_problem(
    name: str,
    ctor: Callable[..., Any],
    kwargs: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    max_parameters: int = MAX_PARAMETERS,
) -> tuple[str, str] | None:
    """(argument, why) when `ctor(**kwargs)` cannot be built within bounds, else None: the one
    check params, run cards and ``build_model`` share. Integer settings are capped at
    :data:`MAX_INT_SETTING`; then the network is built on the meta device (no memory) and its
    parameters counted against `max_parameters`, and with `shapes` (the tensors of the weights
    file that will be loaded) its state-dict shapes compared with them, so a card that does
    not describe its weights is refused before anything real is allocated. Import paths are
    the params' own code and are not measured; an architecture built from its weights
    (``from_state``) is as large as those weights."""
    if problem := setting_problem(kwargs):
        return problem[0], f"model {name!r}: {problem[1]}"
    if is_import_path(name) or getattr(ctor, "from_state", None) is not None:
        return None
    try:
        with torch.device("meta"):
            probe = ctor(**kwargs)
    except Exception:  # the real build reports its own errors, with their arguments
        return None
    if not isinstance(probe, nn.Module):
        return None
    n = sum(p.numel() for p in probe.parameters())
    if n > max_parameters:
        return "", (
            f"model {name!r} with {dict(kwargs)} would have {n:,} parameters "
            f"({4 * n / 2**30:.1f} GiB in fp32), over the limit of {max_parameters:,}"
        )
    if shapes is not None:
        own = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
        missing, extra = sorted(set(own) - set(shapes)), sorted(set(shapes) - set(own))
        differ = [f"{k} {shapes[k]} vs {own[k]}" for k in sorted(set(own) & set(shapes))
                  if tuple(shapes[k]) != own[k]]  # fmt: skip
        if missing or extra or differ:
            parts = [
                f"{what} {items[:3]}{' ...' if len(items) > 3 else ''}"
                for what, items in (("missing", missing), ("unexpected", extra), ("shapes", differ))
                if items
            ]
            return "", f"model {name!r} {dict(kwargs)} does not fit the weights: " + "; ".join(
                parts
            )
    return None


def build_model(
    name: str,
    *,
    allow_import: bool = False,
    expect_shapes: Mapping[str, tuple[int, ...]] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model (`MODELS`, entry points) with `kwargs`; with `allow_import`,
    also a ``package.module:ClassName`` from an installed package.

    Example: `build_model("edsr_baseline", scale=4, n_resblocks=8, n_feats=32)` is a slim
    EDSR-baseline. Raises ValueError naming the bad name, import path or keyword
    (UntrustedModelError when an import path is not allowed). The network must fit the
    bounds of :func:`size_problem` (and `expect_shapes`, the tensors about to be loaded).
    """
    ctor = resolve_model(name, allow_import=allow_import)
    check_model_args(name, ctor, kwargs)
    if problem := size_problem(name, ctor, kwargs, expect_shapes):
        raise ModelArgumentError(*problem)
    model = ctor(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def spec_problems(spec: Mapping[str, Any], scales: list[int]) -> list[str]:
    """What is wrong with one ``models.<name>`` entry, each as ``.<key>: message``.

    A registered arch is checked against its constructor's signature and its ``check_args``
    hook (the constructor's own checks, nothing built), at every scale the experiment uses. An
    import path needs ``allow_import: true`` and an installed package; it is not imported here
    (its arguments are checked when the run builds it).
    """
    arch, allow = spec.get("arch"), spec.get("allow_import", False)
    if not isinstance(allow, bool):
        return [f".allow_import: must be true or false, got {allow!r}"]
    if not isinstance(arch, str) or not arch.strip():
        return [
            f".arch: must name a model ({', '.join(available())}, or package.module:Class "
            f"with allow_import: true), got {arch!r}"
        ]
    if is_import_path(arch):
        if not allow:
            return [
                f".arch: {arch!r} is an import path, which imports and runs code; sgsr does so "
                "only when the params say so: add allow_import: true to this model (the "
                "package must be installed), or register the class as an entry point in group "
                "sgsr.models and name it"
            ]
        problem = installed_problem(arch)
        return [f".arch: {problem}"] if problem else []
    try:
        ctor = registered(arch)
    except ValueError as exc:  # a broken entry point
        return [f".arch: {exc}"]
    if ctor is None:
        return [
            f".arch: unknown model {arch!r} (available: {', '.join(available())}, or "
            "package.module:Class with allow_import: true)"
        ]
    kwargs = {k: v for k, v in spec.items() if k not in MODEL_META_KEYS}
    if "scale" in kwargs:
        return [
            f".scale: the scale is not a model setting; list it under experiment.scales "
            f"(got {kwargs['scale']!r})"
        ]
    if problem := setting_problem(kwargs):
        return [f".{problem[0]}: {problem[1]}"]
    for s in scales:
        try:
            check_model_args(arch, ctor, {**kwargs, "scale": s})
        except ModelArgumentError as exc:
            return [f".{exc.argument}: {exc}"]
        except Exception as exc:  # a third-party hook: still a bad key, not a traceback
            return [f": {arch} rejects {kwargs} at x{s}: {type(exc).__name__}: {exc}"]
    return []
