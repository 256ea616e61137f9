"""The one compiled part of sgsr: the fused CPU kernels of SGL (``sgsr._cstencil``, plain C with
no torch headers). Optional: where it cannot be built, the install goes on and the losses run
the same computation as torch ops (`sgsr.cstencil.available()` says which)."""

import hashlib
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
SOURCES = ["src/sgsr/_cstencil.c"]
HEADERS = ["src/sgsr/_cstencil_impl.h"]
# sgsr.cstencil compares this with the sources beside it: a stale build is not used
digest = hashlib.sha256(b"".join((HERE / f).read_bytes() for f in SOURCES + HEADERS)).hexdigest()
unix = sys.platform != "win32"
setup(
    ext_modules=[
        Extension(
            "sgsr._cstencil",
            SOURCES,
            depends=HEADERS,
            define_macros=[("SGSR_CSTENCIL_SOURCE", f'"{digest}"')],
            extra_compile_args=["-O3", "-fno-math-errno", "-fopenmp", "-std=c99"]
            if unix
            else ["/O2"],
            extra_link_args=["-fopenmp"] if unix else [],
            optional=True,
        )
    ]
)
