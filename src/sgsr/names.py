"""The one rule for names that become paths: model, loss, set, run and profile names.

A name from params.yaml (``models.<name>``, ``losses.<name>``, ``data.train_sets``), from the
command line (``--run``) or from a run card ends up as one folder or file name under the
pipeline folder (``models/<run>/``, ``data/raw/<set>/``). A name that is an absolute path or
holds ``..`` or a separator would put that folder somewhere else: ``raw / "/data/mirror/Set5"``
*is* the mirror's folder, and a model named ``../../x`` trains into two levels above the
project. So every such name must be *plain*: letters, digits and ``_ . + -``, starting with a
letter or digit, at most :data:`MAX_LENGTH` characters. `sgsr.layout` checks every name it
joins into a path, and params validation reports bad names by key before any stage runs.
"""

from __future__ import annotations

import re

#: Longest plain name. A run name joins a model and a loss name (plus ``-x4-s123``); 64 each
#: keeps every file name under the 255 bytes filesystems allow, with room for suffixes.
MAX_LENGTH = 64
#: Longest run name (``<model>-<loss>-x<scale>-s<seed>``).
MAX_RUN_LENGTH = 2 * MAX_LENGTH + 32

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
ALLOWED = "letters, digits and _ . + - (starting with a letter or digit)"


class UnsafeNameError(ValueError):
    """A name that would become a path is not a plain name; nothing was written."""


def name_problem(name: object, max_length: int = MAX_LENGTH) -> str | None:
    """Why `name` cannot be one folder or file name (None: it can)."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    if not _PLAIN.fullmatch(name):
        what = (
            "is a path, not a name"
            if "/" in name or "\\" in name or name.startswith((".", "~"))
            else "holds characters a plain name may not have"
        )
        return f"{what}; names become folder names, so only {ALLOWED} are allowed"
    if len(name) > max_length:
        return f"is {len(name)} characters long; at most {max_length} are allowed"
    return None


def check_name(name: object, what: str, max_length: int = MAX_LENGTH) -> str:
    """`name` itself if it is plain, else UnsafeNameError naming `what` (e.g. "set name")."""
    problem = name_problem(name, max_length)
    if problem:
        raise UnsafeNameError(f"{what} {name!r} {problem}")
    return name  # type: ignore[return-value]


def check_run_name(name: object) -> str:
    """A run name (model-loss-x<s>[-s<seed>] or bicubic-x<s>) that may become a folder."""
    return check_name(name, "run name", MAX_RUN_LENGTH)
