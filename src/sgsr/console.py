"""What the ``sgsr`` command prints while a pipeline runs: one line per stage, progress bars,
and each distinct warning once.

- Our own messages (the ``sgsr`` loggers) at INFO, everything else (papermill, jupyter, torch)
  only from WARNING up: the libraries' INFO chatter is not for the person running a pipeline.
  ``SGSR_LOG_LEVEL=DEBUG`` shows everything.
- ``warnings.warn`` goes through the same handler as one line (no source line echoed back).
- Each distinct warning is printed once per process, and once per pipeline run when
  ``SGSR_SEEN_WARNINGS`` names a file: every stage is its own process under ``dvc repro``, so
  the Makefile points them all at one file and a warning that every evaluate stage hits (e.g.
  LPIPS weights absent) is shown by the first only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import warnings
from pathlib import Path

#: Environment variable naming the file that records the warnings already shown in this run.
SEEN_ENV = "SGSR_SEEN_WARNINGS"
LEVEL_ENV = "SGSR_LOG_LEVEL"


class OncePerRun(logging.Filter):
    """Pass a WARNING-or-above record only the first time its text is seen (in this process,
    and in every process sharing the ``seen`` file). INFO and below always pass."""

    def __init__(self, seen: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.seen = Path(seen) if seen else None
        self._shown: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = hashlib.sha256(f"{record.levelname}\0{record.getMessage()}".encode()).hexdigest()
        if key in self._shown:
            return False
        self._shown.add(key)
        if self.seen is None:
            return True
        try:
            if key in self.seen.read_text().split():
                return False
        except FileNotFoundError:
            pass
        except OSError:  # an unreadable record file must not hide a warning
            return True
        try:
            with open(self.seen, "a") as fh:  # one short append: atomic under O_APPEND
                fh.write(key + "\n")
        except OSError:
            pass
        return True


class _Format(logging.Formatter):
    """``<prefix>: message`` for INFO, ``WARNING: message`` (the level named) above it."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname}: {text}"
        if record.levelno < logging.INFO:
            return f"{record.levelname} {record.name}: {text}"
        return f"{self.prefix}: {text}" if self.prefix else text


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replacement: log the warning as one line. Our own categories
    speak for themselves; a library's keeps its category name for context."""
    text = str(message)
    if not category.__module__.startswith("sgsr"):
        text = f"{category.__name__}: {text}"
    logging.getLogger("sgsr.warnings").warning("%s", text)


def setup(prefix: str = "sgsr", stream: object = None) -> logging.Handler:
    """Configure logging for one ``sgsr`` command (idempotent); returns the handler.

    ``prefix`` starts every INFO line (``sgsr train`` gives ``sgsr train: ...``).
    """
    level_name = os.environ.get(LEVEL_ENV, "").upper()
    level = logging.getLevelName(level_name) if level_name else logging.INFO
    if not isinstance(level, int):
        raise ValueError(f"{LEVEL_ENV}={level_name!r}: use DEBUG, INFO, WARNING or ERROR")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_sgsr", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._sgsr = True  # type: ignore[attr-defined]
    handler.setFormatter(_Format(prefix))
    handler.addFilter(OncePerRun(os.environ.get(SEEN_ENV) or None))
    root.addHandler(handler)
    # libraries from WARNING up unless asked for more; our loggers at the chosen level
    root.setLevel(min(level, logging.WARNING) if level_name else logging.WARNING)
    logging.getLogger("sgsr").setLevel(level)
    warnings.showwarning = _show_warning
    return handler
