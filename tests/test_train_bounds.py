"""Bounds checked before work starts: a batch larger than the patch store, bootstrap counts
beyond any use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from sgsr import imaging, train
from sgsr.config import ConfigError, load_config, parse_config
from sgsr.data.prepare import build_patch_store, write_pairs
from sgsr.validation import BelowBicubicWarning


def _pipeline(tmp_path: Path, **train_kw) -> Path:
    """A patch store of 4 patches and a one-image validation split, prepared for real."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    smooth = (128 + 80 * np.sin(xx / 5.0) * np.cos(yy / 7.0))[..., None].repeat(3, axis=2)
    img = tmp_path / "src/a.png"
    imaging.write_image(
        img, np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)
    )
    meta = build_patch_store([("t", img)], tmp_path / "data/prepared/x2/patches", 2, 24, 24)
    assert meta["count"] == 4
    write_pairs([("t", img)], tmp_path / "data/prepared/x2/val", 2)
    params = {
        "prepare": {"scales": [2], "patch_size": 24, "stride": 24},
        "train": {"lr_patch": 8, "device": "cpu", "iterations": 1, **train_kw},
        "models": {"m": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
        "losses": {"l1": {"l1": 1.0}},
        "experiment": {"models": ["m"], "losses": ["l1"], "scales": [2]},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "params.yaml"


def test_a_batch_larger_than_the_patch_store_is_refused(tmp_path: Path) -> None:
    params = _pipeline(tmp_path, batch_size=16)
    with pytest.raises(ValueError, match=r"train\.batch_size \(16.*\(4 patches\)"):
        train.run(load_config(params), "m-l1-x2")
    assert not (tmp_path / "models/m-l1-x2").exists()


def test_a_run_below_bicubic_says_so(tmp_path: Path) -> None:
    """One update of a random network: it validates far below bicubic, and the stage warns
    instead of reporting its PSNR as an ordinary result."""
    params = _pipeline(tmp_path, batch_size=2)
    with pytest.warns(BelowBicubicWarning, match=r"below bicubic's \d+\.\d\d dB"):
        train.run(load_config(params), "m-l1-x2")


@pytest.mark.parametrize("key", ["bootstrap", "fid_bootstrap"])
def test_bootstrap_counts_are_bounded(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"evaluate\.{key}: must be at most 1,000,000"):
        parse_config({"evaluate": {key: 10**11}})
