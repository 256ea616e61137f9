from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sgsr import imaging, infer
from sgsr.devices import resolve_device
from sgsr.models import build_model
from sgsr.weights import load_model

#: Tiling tolerance stated in docs/evaluation.md for a 4-block EDSR-baseline x4, overlap 8.
TILE_TOL_MAX, TILE_TOL_MEAN, TILE_TOL_UINT8 = 1e-2, 1e-3, 2


@pytest.fixture(scope="module")
def small_edsr() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("edsr_baseline", scale=4, n_resblocks=4, n_feats=32).eval()


def _lr(h: int = 40, w: int = 52, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """A textured LR image in [0, 1] (smooth pattern plus noise)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = 0.5 + 0.3 * torch.sin(xx / 3.0) * torch.cos(yy / 4.0)
    img = base + 0.1 * torch.rand(channels, h, w, generator=g)
    return img.clamp(0, 1).unsqueeze(0)


def test_one_tile_is_bitwise_whole_image_inference(small_edsr: torch.nn.Module) -> None:
    lr = _lr()
    with torch.inference_mode():
        direct = small_edsr(lr.contiguous(memory_format=torch.channels_last)).clamp(0, 1)
    whole = infer.upscale(small_edsr, lr, 4, tile=0)
    big_tile = infer.upscale(small_edsr, lr, 4, tile=64, overlap=8)
    assert whole.shape == (1, 3, 160, 208)
    assert torch.equal(whole, direct)
    assert torch.equal(big_tile, direct)
    assert not whole.is_inference()  # callers may modify it in place


def test_cpu_runs_channels_last_within_one_grey_level_of_the_contiguous_layout(
    small_edsr: torch.nn.Module,
) -> None:
    seen: list[bool] = []
    hook = small_edsr.head.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        image = imaging.to_uint8(_lr(36, 44))
        for tile in (0, 16):
            fast = infer.upscale_image(small_edsr, image, 4, tile=tile, overlap=4)
            plain = infer.upscale_image(
                small_edsr, image, 4, tile=tile, overlap=4, memory_format=torch.contiguous_format
            )
            levels = np.abs(fast.astype(int) - plain.astype(int))
            assert levels.max() <= 1 and (levels > 0).mean() < 0.01, (tile, levels.max())
    finally:
        hook.remove()
    assert seen and seen[0] is True and seen[-1] is False  # the default on the CPU; the override
    assert infer.memory_format_for(torch.device("cpu")) == torch.channels_last
    assert infer.memory_format_for(torch.device("cuda")) == torch.contiguous_format


def test_small_tiles_stay_within_the_stated_tolerance(small_edsr: torch.nn.Module) -> None:
    lr = _lr()
    whole = infer.upscale(small_edsr, lr, 4)
    tiled = infer.upscale(small_edsr, lr, 4, tile=24, overlap=8)
    diff = (tiled - whole).abs()
    assert diff.max() > 0  # the tiles were really used
    assert diff.max() < TILE_TOL_MAX
    assert diff.mean() < TILE_TOL_MEAN
    q = np.abs(imaging.to_uint8(tiled).astype(int) - imaging.to_uint8(whole).astype(int))
    assert q.max() <= TILE_TOL_UINT8
    # at the same tile size, more overlap gives a smaller error (the cut edges are hidden)
    errors = [
        (infer.upscale(small_edsr, lr, 4, tile=16, overlap=o) - whole).abs().mean()
        for o in (2, 6)  # windows [0, 12, 24] vs [0, 8, 16, 24] on the 40 px axis
    ]
    assert errors[0] > 2 * errors[1]


@pytest.mark.parametrize("size", [1, 7, 24, 25, 47, 100, 257])
@pytest.mark.parametrize(("tile", "overlap"), [(24, 8), (16, 0), (10, 4)])
def test_tile_windows_cover_the_axis_with_the_minimum_overlap(
    size: int, tile: int, overlap: int
) -> None:
    starts, length = infer.tile_windows(size, tile, overlap)
    assert length <= min(tile, size)
    assert starts[0] == 0 and starts[-1] + length == size
    for a, b in itertools.pairwise(starts):
        assert a + length - b >= overlap  # consecutive windows share >= overlap pixels
        assert b > a
    if len(starts) > 1:  # balanced: one pixel shorter would break the overlap somewhere
        n = len(starts)
        assert n * (length - 1) - (n - 1) * overlap < size


def test_blending_weights_sum_to_one_across_windows() -> None:
    """Identity 'model': any tiling must reproduce the input up to float rounding."""

    class Nearest(torch.nn.Module):
        n_colors = 3

        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    lr = _lr(33, 50)
    expected = torch.nn.functional.interpolate(lr, scale_factor=2, mode="nearest")
    for tile, overlap in ((8, 3), (12, 5), (20, 0)):
        out = infer.upscale(Nearest(), lr, 2, tile=tile, overlap=overlap)
        assert torch.allclose(out, expected, atol=1e-6), (tile, overlap)


def test_grayscale_through_rgb_model_is_channel_mean(small_edsr: torch.nn.Module) -> None:
    gray = _lr(channels=1)
    out = infer.upscale(small_edsr, gray, 4)
    rgb = infer.upscale(small_edsr, gray.expand(-1, 3, -1, -1), 4)
    assert out.shape == (1, 1, 160, 208)
    assert torch.allclose(out, rgb.mean(1, keepdim=True).clamp(0, 1), atol=1e-6)


def test_bad_arguments_are_refused(small_edsr: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="less than half"):
        infer.upscale(small_edsr, _lr(), 4, tile=16, overlap=8)
    with pytest.raises(ValueError, match="one image"):
        infer.upscale(small_edsr, torch.rand(2, 3, 8, 8), 4)
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")


# --------------------------------------------------------------------------------------------
# weights on disk
# --------------------------------------------------------------------------------------------
def _save_run(folder: Path, model: torch.nn.Module, card: dict, prefix: str = "", **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    tensors.update(extra)
    path = folder / "model.safetensors"
    save_file(tensors, str(path))
    (folder / "run.json").write_text(json.dumps(card))
    return path


CARD = {"arch": "edsr_baseline", "model_kwargs": {"n_resblocks": 2, "n_feats": 16}, "scale": 2}


def test_load_model_rebuilds_from_run_json(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    path = _save_run(tmp_path / "run", model, {**CARD, "weights": "ema"})
    loaded, scale = load_model(path)
    assert scale == 2 and loaded.sgsr_weights == "ema"
    lr = _lr(12, 10)
    with torch.inference_mode():
        assert torch.equal(loaded(lr), model.eval()(lr))


def test_load_model_prefers_ema_copy_unless_raw_is_asked(tmp_path: Path) -> None:
    torch.manual_seed(2)
    raw = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    ema = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    extra = {"ema." + k: v.clone() for k, v in ema.state_dict().items()}
    path = _save_run(tmp_path / "a", raw, CARD, **extra)
    loaded, _ = load_model(path)
    assert loaded.sgsr_weights == "ema"
    assert torch.equal(loaded.head.weight, ema.head.weight)
    path = _save_run(tmp_path / "b", raw, {**CARD, "weights": "raw"}, **extra)
    loaded, _ = load_model(path)
    assert torch.equal(loaded.head.weight, raw.head.weight)


def test_load_model_uses_the_card_in_the_file_metadata_without_run_json(tmp_path: Path) -> None:
    model = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    path = tmp_path / "copied.safetensors"
    meta = {"sgsr_run": json.dumps(CARD), "sgsr_weights": "raw"}
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    loaded, scale = load_model(path)
    assert scale == 2 and loaded.sgsr_weights == "raw"


def test_load_model_errors_name_the_file(tmp_path: Path) -> None:
    model = build_model(
        "edsr_baseline", scale=2, n_resblocks=3, n_feats=16
    )  # not what run.json says
    path = _save_run(tmp_path / "bad", model, CARD)
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        load_model(path)
    (tmp_path / "bad" / "run.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"run\.json"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="nothere"):
        load_model(tmp_path / "nothere.safetensors")


# --------------------------------------------------------------------------------------------
# the stage and the user command
# --------------------------------------------------------------------------------------------
def _pipeline(tmp_path: Path) -> Path:
    """A pipeline folder with params.yaml and prepared x2 LR/HR for one tiny test set."""
    params = {
        "data": {"test_sets": ["tiny"]},
        "prepare": {"scales": [2], "patch_size": 48},
        "train": {"lr_patch": 12},
        "infer": {"tile": 12, "overlap": 4, "device": "cpu"},
        "models": {"m": {"arch": "edsr_baseline", "n_resblocks": 2, "n_feats": 16}},
        "losses": {"l1": {"l1": 1.0}},
        "experiment": {"models": ["m"], "losses": ["l1"], "scales": [2]},
    }
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(30, 34, 3), (26, 40, 1)]):
        hr = imaging.mod_crop(rng.integers(0, 256, shape, dtype=np.uint8), 2)
        root = tmp_path / "data/prepared/x2/tiny"
        imaging.write_image(root / "hr" / f"im{i}.png", hr)
        imaging.write_image(root / "lr" / f"im{i}.png", imaging.downscale(hr, 2))
    return tmp_path


def test_run_bicubic_and_trained(tmp_path: Path) -> None:
    from sgsr.config import load_config

    base = _pipeline(tmp_path)
    cfg = load_config(base / "params.yaml")
    stale = base / "results/sr/bicubic-x2/tiny/old.png"
    imaging.write_image(stale, np.zeros((4, 4, 3), np.uint8))
    infer.run(cfg, "bicubic-x2")
    assert not stale.exists()
    for i in range(2):
        lr = imaging.read_image(base / f"data/prepared/x2/tiny/lr/im{i}.png")
        out = imaging.read_image(base / f"results/sr/bicubic-x2/tiny/im{i}.png")
        assert np.array_equal(out, imaging.upscale_bicubic(lr, 2))

    torch.manual_seed(3)
    model = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    _save_run(base / "models/m-l1-x2", model, {**CARD, "weights": "raw"})
    infer.run(cfg, "m-l1-x2")
    for i in range(2):
        hr = imaging.read_image(base / f"data/prepared/x2/tiny/hr/im{i}.png")
        sr = imaging.read_image(base / f"results/sr/m-l1-x2/tiny/im{i}.png")
        assert sr.shape == hr.shape  # grayscale in, grayscale out
    with pytest.raises(Exception, match="no run named"):
        infer.run(cfg, "nope-l1-x2")


def test_run_refuses_a_card_with_another_scale(tmp_path: Path) -> None:
    base = _pipeline(tmp_path)
    from sgsr.config import load_config

    model = build_model("edsr_baseline", scale=3, n_resblocks=2, n_feats=16)
    _save_run(base / "models/m-l1-x2", model, {**CARD, "scale": 3})
    with pytest.raises(ValueError, match="scale 3"):
        infer.run(load_config(base / "params.yaml"), "m-l1-x2")


def test_upscale_path_file_and_folder(tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    weights = _save_run(tmp_path / "run", model, CARD)
    src = tmp_path / "in"
    imaging.write_image(src / "a.png", np.full((9, 11, 3), 100, np.uint8))
    imaging.write_image(src / "b.png", np.full((7, 5, 1), 50, np.uint8))
    written = infer.upscale_path(src, tmp_path / "out", weights, tile=0, overlap=0, device="cpu")
    assert [p.name for p in written] == ["a.png", "b.png"]
    assert imaging.read_image(tmp_path / "out/a.png").shape == (18, 22, 3)
    assert imaging.read_image(tmp_path / "out/b.png").shape == (14, 10, 1)
    one = infer.upscale_path(src / "a.png", tmp_path / "single.png", weights, device="cpu")
    assert one == [tmp_path / "single.png"]
    assert np.array_equal(imaging.read_image(one[0]), imaging.read_image(tmp_path / "out/a.png"))
    (src / "c.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"c\.png"):
        infer.upscale_path(src, tmp_path / "out2", weights, device="cpu")


def test_cli_upscale(tmp_path: Path) -> None:
    from sgsr.cli import main

    model = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    weights = _save_run(tmp_path / "run", model, CARD)
    imaging.write_image(tmp_path / "x.png", np.full((6, 6, 3), 10, np.uint8))
    rc = main(
        [
            "upscale",
            str(tmp_path / "x.png"),
            str(tmp_path / "y.png"),
            "--weights",
            str(weights),
            "--tile",
            "4",
            "--overlap",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert imaging.read_image(tmp_path / "y.png").shape == (12, 12, 3)


# --------------------------------------------------------------------------------------------
# a model folder cannot run code; upscale never overwrites its inputs
# --------------------------------------------------------------------------------------------
HUBCONF = """
import pathlib
pathlib.Path({marker!r}).write_text("hubconf.py ran")

def load(**kwargs):
    raise SystemExit("hubconf.py ran")
"""


def _hub_folder(folder: Path, marker: Path, via: str) -> Path:
    """A model folder whose card names ``torch.hub:load`` on itself: loading it the old way ran
    the hubconf.py beside the weights (before the weights were even checked)."""
    card = {
        "arch": "torch.hub:load",
        "model_kwargs": {"repo_or_dir": str(folder), "model": "load", "source": "local"},
        "scale": 2,
    }
    model = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    folder.mkdir(parents=True)
    (folder / "hubconf.py").write_text(HUBCONF.format(marker=str(marker)))
    path = folder / "model.safetensors"
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    if via == "run.json":
        save_file(tensors, str(path))
        (folder / "run.json").write_text(json.dumps(card))
    else:
        save_file(tensors, str(path), metadata={"sgsr_run": json.dumps(card)})
    return path


@pytest.mark.parametrize("via", ["run.json", "metadata"])
def test_upscale_weights_folder_cannot_run_code(tmp_path: Path, via: str, capsys) -> None:
    from sgsr.cli import main

    marker = tmp_path / "MARKER"
    weights = _hub_folder(tmp_path / "model", marker, via)
    imaging.write_image(tmp_path / "x.png", np.full((6, 6, 3), 10, np.uint8))
    args = ["upscale", str(tmp_path / "x.png"), str(tmp_path / "y.png"), "--weights", str(weights)]
    assert main([*args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "'torch.hub:load' is an import path" in err and "Nothing was imported" in err
    assert ("run.json" if via == "run.json" else "metadata sgsr_run") in err
    assert not marker.exists(), "code from the model folder ran"
    assert not (tmp_path / "y.png").exists()


def test_infer_run_builds_what_params_say_not_what_the_model_folder_says(
    tmp_path: Path, capsys
) -> None:
    """models/<run>/ comes from `dvc pull`: its run.json cannot pick the code that runs."""
    from sgsr.cli import main

    base = _pipeline(tmp_path)
    marker = tmp_path / "MARKER"
    _hub_folder(base / "models/m-l1-x2", marker, "run.json")
    assert main(["--params", str(base / "params.yaml"), "infer", "--run", "m-l1-x2"]) == 2
    err = capsys.readouterr().err
    assert "run.json" in err and "'torch.hub:load'" in err and "'edsr_baseline'" in err
    assert not marker.exists(), "code from the model folder ran"
    # a card that agrees with the params but differs in a knob is refused too
    model = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    card = {"arch": "edsr_baseline", "model_kwargs": {"n_resblocks": 2, "n_feats": 8}, "scale": 2}
    _save_run(base / "models/m-l1-x2", model, card)
    assert main(["--params", str(base / "params.yaml"), "infer", "--run", "m-l1-x2"]) == 2
    assert "belong to another model" in capsys.readouterr().err


def test_upscale_accepts_an_architecture_registered_by_an_installed_package(
    tmp_path: Path, monkeypatch
) -> None:
    from conftest import install_fake_package

    source = (
        "from sgsr.models import edsr_baseline\n"
        "def tiny(*, scale, n_feats=16):\n"
        "    return edsr_baseline(scale=scale, n_resblocks=2, n_feats=n_feats)\n"
    )
    root = install_fake_package(
        tmp_path / "site", "sgsr_infer_ep", source, {"tiny": "sgsr_infer_ep:tiny"}
    )
    monkeypatch.syspath_prepend(str(root))
    model = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    weights = _save_run(tmp_path / "run", model, {"arch": "tiny", "model_kwargs": {}, "scale": 2})
    loaded, scale = load_model(weights)
    assert scale == 2 and torch.equal(loaded.head.weight, model.head.weight)


def _png(path: Path, value: int = 100) -> Path:
    imaging.write_image(path, np.full((6, 7, 3), value, np.uint8))
    return path


def _digest(paths: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in paths]


def _overwrite_cases(tmp: Path) -> list[tuple[str, str, str, str]]:
    """(label, input, output, words in the error) for every way an output can hit an input."""
    _png(tmp / "same.png")
    _png(tmp / "dir/a.png")
    _png(tmp / "dir/b.png", 50)
    (tmp / "link_dir").symlink_to(tmp / "dir", target_is_directory=True)
    (tmp / "alias.png").symlink_to(tmp / "same.png")
    os.link(tmp / "same.png", tmp / "hard.png")
    (tmp / "out").mkdir()
    (tmp / "out/a.png").symlink_to(tmp / "dir/a.png")
    return [
        ("same file", "same.png", "same.png", "would overwrite the input"),
        ("folder onto itself", "dir", "dir", "is the input folder"),
        ("file into its own folder", "dir/a.png", "dir", "would overwrite the input"),
        ("folder onto a link to it", "dir", "link_dir", "resolves to"),
        ("output is a symlink to the input", "same.png", "alias.png", "would overwrite"),
        ("input is a symlink to the output", "alias.png", "same.png", "resolves to"),
        ("hard link", "same.png", "hard.png", "would overwrite the input"),
        ("existing output links to an input", "dir", "out", "would overwrite the input"),
    ]


def test_upscale_never_overwrites_its_inputs(tmp_path: Path, capsys) -> None:
    """Each refused before any work: the weights path does not even exist."""
    from sgsr.cli import main

    cases = _overwrite_cases(tmp_path)
    originals = sorted(p for p in tmp_path.rglob("*.png") if p.is_file() and not p.is_symlink())
    before = _digest(originals)
    for label, src, dst, words in cases:
        rc = main(["upscale", str(tmp_path / src), str(tmp_path / dst), "--weights", "absent.st"])
        err = capsys.readouterr().err
        assert rc == 2, label
        assert words in err, f"{label}: {err}"
        assert "absent.st" not in err, f"{label}: the refusal must come before loading weights"
    assert _digest(originals) == before


def test_upscale_refuses_two_inputs_with_one_output(tmp_path: Path) -> None:
    _png(tmp_path / "in/a.png")
    imaging.write_image(tmp_path / "in/a.jpg", np.full((6, 7, 3), 9, np.uint8))
    with pytest.raises(FileExistsError, match=r"a\.jpg and .*a\.png would both be written"):
        infer.upscale_path(tmp_path / "in", tmp_path / "out", tmp_path / "absent.safetensors")


def _bad_in_the_middle(tmp_path: Path) -> tuple[Path, Path]:
    model = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    weights = _save_run(tmp_path / "run", model, CARD)
    _png(tmp_path / "in/a.png")
    (tmp_path / "in/b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    _png(tmp_path / "in/c.png")
    return weights, tmp_path / "in"


def test_upscale_error_part_way_says_what_was_done_and_leaves_no_partial_file(
    tmp_path: Path, capsys
) -> None:
    from sgsr.cli import main

    weights, src = _bad_in_the_middle(tmp_path)
    out = tmp_path / "out"
    assert main(["upscale", str(src), str(out), "--weights", str(weights), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{src / 'b.png'}: not a readable image" in err
    assert f"Done before the error (1 of 3): {src / 'a.png'} -> {out / 'a.png'}" in err
    assert f"not written: {src / 'b.png'}, {src / 'c.png'}" in err
    assert "--on-bad-image skip" in err
    assert "data.on_bad_image" not in err, "upscale does not read params"
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # no temp file, no partial c.png


def test_upscale_on_bad_image_skip_leaves_it_out_with_a_warning(tmp_path: Path) -> None:
    weights, src = _bad_in_the_middle(tmp_path)
    with pytest.warns(infer.SkippedInputWarning, match=r"b\.png: not a readable image"):
        written = infer.upscale_path(src, tmp_path / "out", weights, on_bad_image="skip")
    assert [p.name for p in written] == ["a.png", "c.png"]


def test_upscale_write_failure_keeps_earlier_outputs_whole(tmp_path: Path) -> None:
    """An error while writing (here: the target is a folder) leaves no temp or partial file."""
    model = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=16)
    weights = _save_run(tmp_path / "run", model, CARD)
    _png(tmp_path / "in/a.png")
    _png(tmp_path / "in/b.png")
    (tmp_path / "out/b.png").mkdir(parents=True)
    with pytest.raises(infer.UpscaleError, match=r"b\.png.*Done before the error \(1 of 2\)"):
        infer.upscale_path(tmp_path / "in", tmp_path / "out", weights, device="cpu")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    assert imaging.read_image(tmp_path / "out/a.png").shape == (12, 14, 3)
