"""Outputs: written in the format their suffix names or refused; empty and long names; partial
files of a killed writer cleaned; two folder runs never mix; tile settings checked first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sgsr import imaging, infer
from sgsr.fsutil import remove_stale_temps
from sgsr.models import build_model
from sgsr.weights import write_weights

IMG = np.arange(6 * 7 * 3, dtype=np.uint8).reshape(6, 7, 3)


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    model = build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)
    card = {"arch": "edsr_baseline", "model_kwargs": {"n_resblocks": 1, "n_feats": 8},
            "scale": 2, "weights": "raw"}  # fmt: skip
    return write_weights(tmp_path / "run", model.state_dict(), card)


@pytest.mark.parametrize(("suffix", "fmt"), [(".webp", "WEBP"), (".ppm", "PPM"), (".tif", "TIFF")])
def test_the_suffix_names_the_format(tmp_path: Path, suffix: str, fmt: str) -> None:
    path = tmp_path / f"out{suffix}"
    imaging.write_image(path, IMG)
    with Image.open(path) as im:
        assert im.format == fmt
    assert np.array_equal(imaging.read_image(path), IMG)  # WebP is written lossless


def test_a_suffix_sgsr_cannot_write_is_refused(tmp_path: Path, weights: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot write \.gif"):
        imaging.write_image(tmp_path / "out.gif", IMG)
    imaging.write_image(tmp_path / "x.png", IMG)
    with pytest.raises(ValueError, match=r"cannot write \.gif images"):
        infer.upscale_path(tmp_path / "x.png", tmp_path / "out.gif", weights)
    assert not (tmp_path / "out.gif").exists()  # not made a folder either


def test_an_empty_output_path_is_refused(tmp_path: Path, weights: Path, monkeypatch) -> None:
    imaging.write_image(tmp_path / "in/x.png", IMG)
    monkeypatch.chdir(tmp_path / "in")
    with pytest.raises(ValueError, match="output path is empty"):
        infer.upscale_path("x.png", "", weights)
    assert sorted(os.listdir(".")) == ["x.png"]


def test_a_255_byte_file_name_can_be_written(tmp_path: Path) -> None:
    path = tmp_path / ("a" * 251 + ".png")
    imaging.write_image(path, IMG)
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_partial_files_of_a_killed_writer_are_removed_by_the_next_run(
    tmp_path: Path, weights: Path
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".x.{dead}.sgsr-tmp-abcd1234.png"
    stale.write_bytes(b"\x89PNG half")
    live = out / f".x.{os.getpid()}.sgsr-tmp-efgh5678.png"  # this process: still writing
    live.write_bytes(b"\x89PNG")
    imaging.write_image(tmp_path / "in/x.png", IMG)
    infer.upscale_path(tmp_path / "in", out, weights)
    assert not stale.exists() and live.exists()
    assert remove_stale_temps(out) == []


def test_two_folder_runs_into_one_folder_do_not_mix(tmp_path: Path, weights: Path) -> None:
    imaging.write_image(tmp_path / "a/one.png", IMG)
    imaging.write_image(tmp_path / "b/two.png", IMG)
    out = tmp_path / "out"
    infer.upscale_path(tmp_path / "a", out, weights)
    infer.upscale_path(tmp_path / "a", out, weights)  # a rerun over its own outputs is fine
    with pytest.raises(FileExistsError, match="results of two runs would mix"):
        infer.upscale_path(tmp_path / "b", out, weights)
    assert sorted(p.name for p in out.iterdir()) == ["one.png"]


def test_tile_settings_are_checked_before_the_weights_are_read(tmp_path: Path) -> None:
    imaging.write_image(tmp_path / "x.png", IMG)
    with pytest.raises(ValueError, match="overlap"):
        infer.upscale_path(tmp_path / "x.png", tmp_path / "y.png", "absent.safetensors",
                           tile=4, overlap=2)  # fmt: skip


def test_tiles_without_overlap_warn_about_seams(tmp_path: Path, weights: Path) -> None:
    imaging.write_image(tmp_path / "x.png", IMG)
    with pytest.warns(infer.SeamWarning, match="overlap 0"):
        infer.upscale_path(tmp_path / "x.png", tmp_path / "y.png", weights, tile=4, overlap=0)
