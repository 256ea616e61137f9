"""A training that explodes without reaching inf stops as diverged (train.diverge_factor), and
the message names the likely cause and what is on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sgsr.config import ConfigError, TrainConfig, parse_config
from sgsr.losses import build_loss
from sgsr.models import build_model
from sgsr.step import divergence_advice, explosion
from sgsr.train import TrainingDiverged, fixed_batch, train


def _setup(**kw):
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 16, 16)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    model = build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)
    base = dict(iterations=40, batch_size=2, lr_patch=8, schedule="constant", device="cpu")
    return model, fixed_batch(lr, hr), TrainConfig(**{**base, **kw})


def test_a_finite_explosion_is_divergence_not_success(tmp_path: Path) -> None:
    model, batches, opts = _setup(lr=10.0, checkpoint_every=1)
    with pytest.raises(TrainingDiverged) as info:
        train(model, build_loss({"l1": 1.0}), batches, opts, checkpoint=tmp_path / "ck.pt")
    text = str(info.value)
    assert "train.diverge_factor (1000) times its lowest value" in text
    assert "train.lr is 10" in text
    assert f"checkpoint on disk is from iteration {info.value.iteration - 1}" in text


def test_without_a_checkpoint_the_message_says_so() -> None:
    model, batches, opts = _setup(lr=10.0)
    with pytest.raises(TrainingDiverged, match="No checkpoint was written"):
        train(model, build_loss({"l1": 1.0}), batches, opts)


def test_a_normal_training_does_not_trip_the_rule() -> None:
    model, batches, opts = _setup(lr=1e-3)
    result = train(model, build_loss({"l1": 1.0}), batches, opts)
    assert result.iterations == 40


def test_advice_names_the_option_that_is_off_not_always_lr() -> None:
    text = divergence_advice(TrainConfig(weight_decay=5.0), None, 7)
    assert "train.weight_decay is 5" in text and "train.lr is" not in text
    assert "init_from" in divergence_advice(TrainConfig(init_from="run:a-l1-x4"), 3, 1)
    assert not explosion(1e30, 0.1, 0.0)  # 0 disables
    assert explosion(101.0, 0.1, 1000.0) and not explosion(99.0, 0.1, 1000.0)


@pytest.mark.parametrize(
    ("key", "value"),
    [("weight_decay", float("nan")), ("grad_clip", float("inf")), ("diverge_factor", 0.5)],
)
def test_non_finite_or_meaningless_train_numbers_are_refused(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"train\.{key}"):
        parse_config({"train": {key: value}})
