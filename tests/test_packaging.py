"""`pip install sgsr` without extras: the library alone (SGL in someone's training loop,
`sgsr upscale`, `sgsr evaluate --sr --hr`) in a fresh virtual environment, built from this
checkout's wheel, with none of the pipeline's packages.

The environment holds only what pip installs for the wheel's dependencies, at the low end of
the supported torch range (the CPU build of torch 2.13; requirements.lock pins the top).
Installing torch is the slow part, so the environment is kept in pytest's cache under a key
made of the dependency list: a changed list builds a new one (so does CI's fresh clone). It is
installed without byte-compiling, which took longer than the install itself; the modules used
compile when imported. Each run reinstalls the wheel over it and `pip check` confirms that its
declared dependencies are all there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The torch the environment gets (override to test another): the range's low end, CPU build.
TORCH = os.environ.get("SGSR_FRESH_VENV_TORCH", "torch==2.13.0+cpu")

pytestmark = pytest.mark.slow

_LIBRARY_USE = """
import importlib.util, json, sys
import torch
from sgsr import SecondOrderGradientLoss, build_model
from safetensors.torch import save_file
from sgsr.imaging import write_image
import numpy as np

for extra in ("dvc", "pandas", "matplotlib", "papermill", "spandrel", "skimage"):
    assert importlib.util.find_spec(extra) is None, f"{extra} is installed: not a bare install"
torch.manual_seed(0)
sr = torch.rand(2, 3, 16, 16, requires_grad=True)
loss = SecondOrderGradientLoss()(sr, torch.rand(2, 3, 16, 16))
loss.backward()
assert loss.item() > 0 and sr.grad is not None and sr.grad.abs().sum() > 0
from sgsr import cstencil
assert cstencil.available(), "the wheel's fused SGL kernel (sgsr._cstencil) did not load"
model = build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, "w.safetensors")
card = {"arch": "edsr_baseline", "model_kwargs": {"n_resblocks": 1, "n_feats": 8}, "scale": 2}
open("run.json", "w").write(json.dumps(card))
rng = np.random.default_rng(0)
write_image("lr/a.png", rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
print("torch", torch.__version__)
"""


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    return sorted(ln for ln in lines if ln.startswith("Requires-Dist:") and "extra ==" not in ln)


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=1500
    )


def _fresh_venv(cache: Path, wheel: Path) -> Path:
    key = hashlib.sha256("\n".join([TORCH, *_requires(wheel)]).encode()).hexdigest()[:16]
    venv = cache / f"venv-{key}"
    if (venv / "ready").is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    got = _pip("--python", py, "install", "-q", "--no-compile", TORCH, str(wheel))
    if got.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        if "No matching distribution" in got.stderr or "Could not find" in got.stderr:
            pytest.skip(f"{TORCH} (or a dependency) cannot be had here: {got.stderr[-500:]}")
        raise AssertionError(got.stderr[-3000:])
    (venv / "ready").write_text(key)
    return venv


def test_the_library_installs_and_runs_without_extras(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    built = _pip("wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO), "-w", str(tmp_path))
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(tmp_path.glob("sgsr-*.whl"))
    venv = _fresh_venv(Path(request.config.cache.mkdir("fresh-venv")), wheel)
    py, sgsr = str(venv / "bin" / "python"), str(venv / "bin" / "sgsr")
    again = _pip("--python", py, "install", "-q", "--no-deps", "--force-reinstall", str(wheel))
    assert again.returncode == 0, again.stderr[-3000:]
    check = _pip("--python", py, "check")
    assert check.returncode == 0, check.stdout + check.stderr  # every dependency declared is in
    work = tmp_path / "use"
    work.mkdir()
    env = {"PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path)}
    env["OMP_NUM_THREADS"] = "1"

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        return proc.stdout + proc.stderr

    assert "torch 2.13" in run(py, "-c", _LIBRARY_USE) or "SGSR_FRESH_VENV_TORCH" in os.environ
    out = run(sgsr, "upscale", "lr", "sr", "--weights", "w.safetensors", "--device", "cpu")
    assert "1 image(s) upscaled" in out and (work / "sr" / "a.png").is_file()
    # piq's metrics import torchvision, whose only builds here are CUDA ones that do not load
    # under CPU torch (a user gets both from one index): scored when torchvision imports
    vision = subprocess.run([py, "-c", "import torchvision"], env=env, capture_output=True)
    metrics = "psnr,ssim" + (",ms_ssim,gmsd,haarpsi" if vision.returncode == 0 else "")
    table = run(sgsr, "evaluate", "--sr", "sr", "--hr", "sr", "--scale", "2", "--metrics", metrics)
    assert metrics.split(",")[-1] in table and "inf" in table  # identical: PSNR is infinite
    assert run(sgsr, "--version").strip().startswith("sgsr ")
