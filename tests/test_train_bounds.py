"""Bounds checked before work starts: a batch larger than the patch store, bootstrap counts
beyond any use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from sgsr import imaging, train
from sgsr.config import ConfigError, load_config, parse_config
from sgsr.data.prepare import build_patch_store


def test_a_batch_larger_than_the_patch_store_is_refused(tmp_path: Path) -> None:
    img = tmp_path / "src/a.png"
    imaging.write_image(img, np.random.default_rng(0).integers(0, 255, (48, 48, 3), np.uint8))
    meta = build_patch_store([("t", img)], tmp_path / "data/prepared/x2/patches", 2, 24, 24)
    assert meta["count"] == 4
    params = {
        "prepare": {"scales": [2], "patch_size": 24, "stride": 24},
        "train": {"batch_size": 16, "lr_patch": 8, "device": "cpu", "iterations": 1},
        "models": {"m": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
        "losses": {"l1": {"l1": 1.0}},
        "experiment": {"models": ["m"], "losses": ["l1"], "scales": [2]},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"train\.batch_size \(16.*\(4 patches\)"):
        train.run(load_config(tmp_path / "params.yaml"), "m-l1-x2")
    assert not (tmp_path / "models/m-l1-x2").exists()


@pytest.mark.parametrize("key", ["bootstrap", "fid_bootstrap"])
def test_bootstrap_counts_are_bounded(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"evaluate\.{key}: must be at most 1,000,000"):
        parse_config({"evaluate": {key: 10**11}})
