"""Every failure reaching `sgsr`'s main is one message and exit status 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sgsr import cli, imaging
from sgsr.models import build_model
from sgsr.weights import write_weights


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (MemoryError(), "out of memory (MemoryError). Lower what sizes the work: train.batch_size"),
        (RuntimeError("DefaultCPUAllocator: not enough memory"), "out of memory"),
        (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
        (TypeError("f() missing 1 required positional argument"), "unexpected TypeError: f()"),
        (KeyError("weights"), "SGSR_DEBUG=1"),
    ],
)
def test_any_error_class_becomes_a_message_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: Exception, words: str
) -> None:
    def boom(args: object) -> None:
        raise exc

    monkeypatch.setattr(cli, "_runs", boom)
    assert cli.main(["runs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sgsr runs: error: ") and words in err
    assert "Traceback" not in err


def test_a_community_card_without_weights_is_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)
    card = {"arch": "community", "model_kwargs": {}, "scale": 2, "weights": "raw"}
    weights = write_weights(tmp_path / "run", model.state_dict(), card)
    (tmp_path / "run/run.json").write_text(json.dumps(card))
    imaging.write_image(tmp_path / "x.png", np.full((6, 6, 3), 9, np.uint8))
    args = ["upscale", str(tmp_path / "x.png"), str(tmp_path / "y.png"), "--weights", str(weights)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "run.json: cannot build the model" in err and "'weights'" in err


def test_metrics_that_name_nothing_are_refused(tmp_path: Path, capsys) -> None:
    imaging.write_image(tmp_path / "sr/a.png", np.full((8, 8, 3), 9, np.uint8))
    imaging.write_image(tmp_path / "hr/a.png", np.full((8, 8, 3), 9, np.uint8))
    args = ["evaluate", "--sr", str(tmp_path / "sr"), "--hr", str(tmp_path / "hr"), "--scale", "2"]
    assert cli.main([*args, "--metrics", ""]) == 2
    assert "--metrics '' names no metric" in capsys.readouterr().err
