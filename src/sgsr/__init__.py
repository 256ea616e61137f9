"""sgsr: single-image super-resolution with a second-order gradient loss (SGL).

The public names resolve lazily so that `import sgsr` (and the `sgsr` command) stays fast and
pulls in torch-heavy modules only when they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SecondOrderGradientLoss": "sgsr.losses",
    "FirstOrderGradientLoss": "sgsr.losses",
    "CompositeLoss": "sgsr.losses",
    "build_loss": "sgsr.losses",
    "second_order_gradient_loss": "sgsr.losses",
    "build_model": "sgsr.models",
    "MODELS": "sgsr.models",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sgsr' has no attribute {name!r}")
