"""Checkpoint files: atomic writes, weights-only loading (a code-running pickle is refused), RNG
state round trips, and what the training loop does with unsafe, corrupt or foreign checkpoints."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sgsr.checkpoint import (
    FORMAT,
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class _Payload:
    """Unpickling this calls ``os.mkdir(marker)``: it creates a directory, i.e. runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "model": {}, "evil": _Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    path, marker = _malicious_checkpoint(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists(), "the payload ran during a refused load"
    # The payload is real: the unrestricted unpickler does run it (so the test above can fail).
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_training_refuses_a_malicious_checkpoint(tmp_path):
    """The loop must raise, not quietly start fresh over an unsafe file."""
    from sgsr.config import TrainConfig
    from sgsr.losses import build_loss
    from sgsr.models import build_model
    from sgsr.train import fixed_batch, train

    path, marker = _malicious_checkpoint(tmp_path)
    model = build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)
    lr = torch.rand(1, 3, 8, 8)
    hr = torch.rand(1, 3, 16, 16)
    opts = TrainConfig(iterations=2, batch_size=1, device="cpu")
    with pytest.raises(UnsafeCheckpointError):
        train(model, build_loss({"l1": 1.0}), fixed_batch(lr, hr), opts, checkpoint=path)
    assert not marker.exists()
    assert path.read_bytes()[:2] == b"PK", "the unsafe file must be left for the user to inspect"


def test_round_trip_of_plain_state(tmp_path):
    model = torch.nn.Conv2d(3, 4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model(torch.rand(1, 3, 8, 8)).sum().backward()
    opt.step()
    state = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": rng_state(),
        "iteration": 7,
    }
    path = save_checkpoint(tmp_path / "sub" / "checkpoint.pt", state)
    back = load_checkpoint(path)
    assert back["iteration"] == 7
    for k, v in model.state_dict().items():
        assert torch.equal(back["model"][k], v)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"], "temp file left behind"


def test_rng_state_round_trip_restores_every_generator():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gauss value in numpy's state
    saved = rng_state()
    expected = (random.random(), np.random.standard_normal(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(saved)
    got = (random.random(), np.random.standard_normal(), torch.rand(3))
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert torch.equal(got[2], expected[2])


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": FORMAT, "iteration": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom while writing")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"format": FORMAT, "iteration": 2, "x": Unpicklable()})
    assert load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_truncated_and_foreign_files_raise_checkpoint_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": FORMAT, "iteration": 1, "w": torch.rand(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="delete it to start fresh"):
        load_checkpoint(path)
    torch.save({"iteration": 1}, path)  # safe but not ours
    with pytest.raises(CheckpointError, match="not an sgsr checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")


# --- each broken checkpoint says what is wrong and that deleting it starts fresh ----


def test_random_bytes_are_called_corrupt_not_unsafe(tmp_path):
    """Random bytes used to be reported as "pickled objects which could run code"."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    msg = str(info.value)
    assert str(path) in msg and "not a checkpoint sgsr wrote" in msg
    assert "delete it to start fresh" in msg


def _resume_with(tmp_path: Path, edit) -> str:
    from sgsr.config import TrainConfig
    from sgsr.losses import build_loss
    from sgsr.models import build_model
    from sgsr.train import fixed_batch, train

    opts = TrainConfig(iterations=2, batch_size=1, checkpoint_every=1, device="cpu", amp="off")
    lr, hr = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 16, 16)
    path = tmp_path / "checkpoint.pt"

    def run() -> None:  # same options both times: the checkpoint's fingerprint matches
        model = build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)
        train(model, build_loss({"l1": 1.0}), fixed_batch(lr, hr), opts, checkpoint=path)

    run()
    state = load_checkpoint(path)
    edit(state)
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError) as info:
        run()
    return str(info.value)


@pytest.mark.parametrize(
    ("label", "edit", "words"),
    [
        ("missing optimizer", lambda s: s.pop("optimizer"), "has no optimizer"),
        ("missing rng", lambda s: s.pop("rng"), "has no rng"),
        (
            "wrong shape",
            lambda s: s["model"].__setitem__("head.weight", torch.zeros(3, 3, 3, 3)),
            "size mismatch for head.weight",
        ),
        ("missing tensor", lambda s: s["model"].pop("head.bias"), "Missing key(s) in state_dict"),
        ("bad log window", lambda s: s.__setitem__("log_window", 3), "TypeError"),
    ],
)
def test_valid_checkpoint_that_does_not_fit_names_file_problem_and_remedy(
    tmp_path, label, edit, words
):
    """A KeyError or a state_dict traceback before; now one message naming the file."""
    msg = _resume_with(tmp_path, edit)
    assert str(tmp_path / "checkpoint.pt") in msg, label
    assert words in msg, f"{label}: {msg}"
    assert "delete it to start fresh" in msg
