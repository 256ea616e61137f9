"""Helpers of the training tests: toy models and batch sources for the loop, and a tiny
prepared patch store plus params for the `sgsr train` stage (shared by several test files)."""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from sgsr.config import TrainConfig, parse_config
from sgsr.models import build_model

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def smooth_images(seed: int, n: int, size: int) -> Tensor:
    """Smooth random RGB images (bicubic-upsampled 4x4 noise): learnable SR targets."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 4, 4, generator=g)
    return F.interpolate(base, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def toy_source(scale: int = 2, batch: int = 2, lr_size: int = 8):
    """A batch source whose batch i is a pure function of i (what exact resume requires)."""

    def source(start: int) -> Iterator[tuple[Tensor, Tensor]]:
        for i in itertools.count(start):
            hr = smooth_images(1000 + i, batch, lr_size * scale)
            yield F.avg_pool2d(hr, scale), hr

    return source


def tiny_model(scale: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return build_model("edsr_baseline", scale=scale, n_resblocks=1, n_feats=8)


def opts(**kw) -> TrainConfig:
    base = dict(iterations=12, batch_size=2, lr=1e-3, schedule="constant", device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def read_tsv(path: Path) -> list[tuple[int, float]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    name = next(k for k in rows[0] if k not in ("step", "timestamp"))
    return [(int(r["step"]), float(r[name])) for r in rows]


def assert_same_state(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


class Interrupted(Exception):
    """Stands for the process dying: raised by :func:`crashing_source`."""


def crashing_source(die_at: int, inner=None):
    """`inner` (default toy_source) that raises when iteration `die_at` asks for its batch (a
    crash mid-run)."""
    inner = inner or toy_source()

    def source(start: int):
        for i, batch in zip(itertools.count(start), inner(start), strict=False):
            if i == die_at:
                raise Interrupted(f"killed at {i}")
            yield batch

    return source


def stage_params(tmp: Path, **train_kw) -> Path:
    """A params file for a tiny x2 run on a store prepared from two small sample images."""
    train = dict(
        iterations=40, batch_size=4, lr_patch=10, lr=1e-3, schedule="multistep",
        milestones=[30], device="cpu", checkpoint_every=10, val_every=20, log_every=5,
    )  # fmt: skip
    train.update(train_kw)
    params = {
        "seed": 3,
        "data": {"source": "sample"},
        "prepare": {"scales": [2], "patch_size": 24, "stride": 24, "val_images": 1},
        "models": {"tiny": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
        "losses": {"l1": {"l1": 1.0}, "sgl": {"l1": 1.0, "sgl": 0.1}},
        "experiment": {"models": ["tiny"], "losses": ["l1", "sgl"], "scales": [2]},
        "train": train,
    }
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def build_store(root: Path) -> None:
    """Write small sample photographs and run sgsr.data.prepare on them (no network): 2 images
    cut into x2 patches, 1 held out as the validation split, 1 as a test set."""
    from skimage import data as skdata

    from sgsr.data import prepare
    from sgsr.imaging import write_image

    raw = root / "data" / "raw"
    sets = {
        "sample_train": {"astronaut": skdata.astronaut(), "chelsea": skdata.chelsea(),
                         "coffee": skdata.coffee()},
        "sample_test": {"rocket": skdata.rocket()},
    }  # fmt: skip
    for set_name, imgs in sets.items():
        for name, img in imgs.items():
            t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
            small = F.interpolate(t, size=(72, 72), mode="area")[0].permute(1, 2, 0)
            write_image(raw / set_name / f"{name}.png", small.round().byte().numpy())
    cfg = parse_config(yaml.safe_load(stage_params(root).read_text()))
    prepare.run(cfg, root=root)


def stage_dir(tmp: Path, prepared: Path, **train_kw) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "data").symlink_to(prepared, target_is_directory=True)
    stage_params(tmp, **train_kw)
    return tmp


def cli(tmp: Path, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [PYTHON, "-m", "sgsr.cli", "--params", str(tmp / "params.yaml"), *args],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def load_weights(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
