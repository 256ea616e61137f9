"""What can go wrong with pretrained weights (shared by every module of the package)."""

from __future__ import annotations


class WeightsUnavailable(OSError):
    """Verified weights are not there (absent, corrupt, not the pinned file); ``str()`` says
    why and what to do. An OSError, so the CLI reports it as one line, like a missing file."""


class ConversionError(ValueError):
    """An artifact was read but does not convert to the pinned tensors."""


class WeightsAbsentWarning(UserWarning):
    """A weight could not be had from any source; the manifest records why."""
