from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from sgsr.pipeline_copy import copy_sources

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("SGSR_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

#: Overrides that make the gpu profile a CPU smoke test: tiny network, 4 iterations, T91 only,
#: Set5 only, two losses x two seeds, and two runs per process (the sharing path through DVC).
GPU_TINY = {
    "data": {"train_sets": ["T91"], "test_sets": ["Set5"]},
    "prepare": {"patch_size": 64, "stride": 64, "val_images": 1},
    "models": {"edsr_baseline": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
    "experiment": {"losses": ["l1", "sgl_hess"], "replicates": [1]},
    "train": {
        "iterations": 4, "batch_size": 4, "lr_patch": 12, "warmup": 1, "checkpoint_every": 2,
        "val_every": 2, "log_every": 1, "num_workers": 0, "runs_per_process": 2,
    },
    "evaluate": {"metrics": ["psnr", "ssim"], "bootstrap": 200, "fid_bootstrap": 0},
}  # fmt: skip


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _private_hash_cache(tmp_path_factory: pytest.TempPathFactory):
    """Digests the tests compute go to a file of this session, never the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGSR_HASH_CACHE", str(tmp_path_factory.mktemp("hashcache") / "sha256.json"))
        yield


@pytest.fixture
def shared_datasets() -> Path:
    """The offline copy of the classic SR sets; tests that need it skip with a reason if absent."""
    if not (SHARED_DATASETS / "Set5").is_dir():
        pytest.skip(f"{SHARED_DATASETS} not present (set SGSR_SHARED_DATASETS to a mirror)")
    return SHARED_DATASETS


@pytest.fixture(params=["fused", "torch"])
def stencil_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A CPU loss test run twice: through the fused C kernel (`sgsr.cstencil`, which `make
    setup` builds: its absence fails) and through the torch ops that stand in without it."""
    from sgsr import cstencil

    if request.param == "torch":
        monkeypatch.setattr(cstencil, "_lib", None)
    elif not cstencil.available():
        pytest.fail("sgsr._cstencil is not built or is stale: run `make setup` (pip install -e .)")
    return request.param


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: a second OpenMP thread only adds contention on the shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smooth_rgb(seed: int, h: int, w: int, noise: float = 8.0) -> np.ndarray:
    """Random but spatially correlated uint8 RGB (like a photo, unlike white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 4 + 2, w // 4 + 2, 3))
    big = np.kron(small, np.ones((4, 4, 1)))[:h, :w]
    return np.clip(big * 255 + rng.normal(0, noise, big.shape), 0, 255).astype(np.uint8)


def install_fake_package(
    root: Path, module: str, source: str, entry_points: dict[str, str] | None = None
) -> Path:
    """Make `module` look pip-installed from `root`: the module file plus a ``.dist-info`` with
    ``top_level.txt`` (and ``entry_points.txt``), which is what importlib.metadata reads. The
    caller puts `root` on sys.path (monkeypatch.syspath_prepend)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(source)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "top_level.txt").write_text(module + "\n")
    if entry_points:
        lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[sgsr.models]\n{lines}\n")
    return root


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A 167-byte PNG whose header declares `width` x `height` RGB (30000x30000: 2.7 GB once
    decoded); only its first row is present. Built here, not committed."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = b"\x00" + b"\x00" * (3 * width)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row, 9))
        + chunk(b"IEND", b"")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def huge_real_png(path: Path, side: int = 10000) -> Path:
    """A genuine, fully decodable `side` x `side` grey PNG (10000: 97 KB on disk, 100 MB of
    pixels, 1.2 GB of prepared data before the pixel limit)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (side, side)).save(path)
    return path


def noisy(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """`image` plus seeded Gaussian noise, clipped back to uint8: a stand-in for a trained
    run's output that differs from bicubic image by image."""
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """data/prepared/x2/{patches,val} built by the data engineer's prepare step."""
    pytest.importorskip("sgsr.data.patches", reason="sgsr.data.patches not written yet")
    root = tmp_path_factory.mktemp("prepared")
    from train_helpers import build_store

    build_store(root)
    return root / "data"


def copy_pipeline_sources(dest: Path) -> None:
    """The notebooks and the library's source files into `dest`, a pipeline copy whose params say
    ``root: .``: what its stages depend on through ``${root}`` (they run the installed sgsr; the
    copy is what DVC hashes)."""
    copy_sources(REPO, dest)


def make_dry_run(*args: str) -> str:
    """What ``make -n <args>`` would run in the repository (skips where make is missing)."""
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    return subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True).stdout


def tiny_profile(repo: Path, test_size: tuple[int, int]):
    """A tiny dataset mirror in `repo`/datasets (3 training images, 1 test image of
    `test_size`) and a runner for commands in `repo` that fails with their output's tail.
    Shared by the profile tests that drive real `dvc repro` at tiny size."""

    from sgsr.data.common import download_cache
    from sgsr.imaging import write_image

    for i in range(3):
        write_image(repo / "datasets" / "tr" / f"t{i}.png", smooth_rgb(i, 40, 36))
    write_image(repo / "datasets" / "te" / "a.png", smooth_rgb(9, *test_size))
    env = {**os.environ, "SGSR_CACHE_DIR": str(download_cache()), "OMP_NUM_THREADS": "2",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip

    def sh(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        return proc.stdout + proc.stderr

    return sh


def git_clone(dest: Path) -> tuple[Path, dict[str, str]]:
    """A fresh `git clone` of this repository's committed state at `dest` (no data, no DVC
    cache, no team remote beside it), and an environment whose `sgsr` and `dvc` run the clone's
    code. Skips without git or outside a git checkout."""
    import shutil
    import sys

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout")
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    env = dict(os.environ, PYTHONPATH=str(dest / "src"), OMP_NUM_THREADS="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return dest, env
