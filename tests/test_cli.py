from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sgsr.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_runs_lists_the_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--params", str(REPO / "params.yaml"), "runs"]) == 0
    assert capsys.readouterr().out.split() == ["edsr_tiny-l1-x4", "edsr_tiny-sgl-x4"]


def test_bad_params_exit_2_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text().replace("batch_size: 8", "batch_size: 0"))
    assert main(["--params", str(params), "train", "--run", "edsr_tiny-l1-x4"]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size" in err and str(params) in err


def test_unknown_run_names_the_available_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--params", str(REPO / "params.yaml"), "train", "--run", "x-y-x4"]) == 2
    assert "edsr_tiny-sgl-x4" in capsys.readouterr().err


def test_console_script_help_lists_every_stage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sgsr.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for stage in (
        "download",
        "prepare",
        "train",
        "infer",
        "evaluate",
        "summarize",
        "report",
        "upscale",
    ):
        assert stage in out


def _pair(tmp_path: Path) -> Path:
    import numpy as np

    from sgsr.imaging import write_image

    for side in ("sr", "hr"):
        write_image(tmp_path / side / "x.png", np.full((24, 24, 3), 99, np.uint8))
    return tmp_path


@pytest.mark.parametrize("value", ["0", "-4", "four"])
def test_evaluate_bad_scale_says_so(tmp_path: Path, capsys, value: str) -> None:
    """--scale 0 used to say "needs all of --sr DIR --hr DIR --scale S" though all were given."""
    d = _pair(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--sr", str(d / "sr"), "--hr", str(d / "hr"), "--scale", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --scale: must be a positive integer, got '{value}'" in err
    assert "needs all of" not in err


def test_evaluate_and_upscale_refuse_images_over_max_pixels(tmp_path: Path, capsys) -> None:
    """The 167-byte bomb used to end both commands in Pillow's DecompressionBombError
    traceback; now a named error before decoding, adjustable with --max-pixels."""
    import json

    from conftest import bomb_png
    from safetensors.torch import save_file

    from sgsr.models import build_model

    d = _pair(tmp_path)
    bomb_png(d / "sr" / "x.png")
    args = ["evaluate", "--sr", str(d / "sr"), "--hr", str(d / "hr"), "--scale", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{d / 'sr' / 'x.png'}: the header declares 30000x30000 = 900,000,000 pixels" in err
    assert "Traceback" not in err and "DecompressionBomb" not in err
    assert main([*args, "--max-pixels", "1000"]) == 2
    assert "over the limit of 1,000" in capsys.readouterr().err

    model = build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)
    (d / "run").mkdir()
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(d / "run/w.safetensors"))
    card = {"arch": "edsr_baseline", "model_kwargs": {"n_resblocks": 1, "n_feats": 8}, "scale": 2}
    (d / "run/run.json").write_text(json.dumps(card))
    up = ["upscale", str(d / "sr"), str(d / "up"), "--weights", str(d / "run/w.safetensors")]
    assert main([*up, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "the header declares 30000x30000" in err and "raise --max-pixels" in err
    assert "data.max_pixels" not in err and "data.on_bad_image" not in err
    assert main([*up, "--device", "cpu", "--max-pixels", "100"]) == 2
    assert "over the limit of 100" in capsys.readouterr().err


_NO_TORCH = """
import sys
from sgsr.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help, --version
    code = exc.code
print("TORCH" if "torch" in sys.modules else "NO-TORCH", code)
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["runs"], ["runs", "--write"], ["results"], ["train", "--help"]],
)
def test_commands_that_need_no_tensors_import_no_torch(tmp_path: Path, argv: list[str]) -> None:
    """`sgsr runs`, params validation, help and `sgsr results` never import torch (seconds
    per call on a loaded machine); params loaded only to list runs are not built."""
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.csv").write_text(
        "run,model,loss,scale,set,n_images,psnr,ssim\n"
        "bicubic-x4,bicubic,,4,A,1,27.5,0.76\nnet-l1-x4,net,l1,4,A,1,28.5,0.79\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, "--params", str(params), *argv],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines()[-1] == "NO-TORCH 0", out


def test_python_dash_m_sgsr_and_version() -> None:
    from sgsr import __version__

    out = subprocess.run(
        [sys.executable, "-m", "sgsr", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"sgsr {__version__}"


def test_every_option_has_help_and_shows_its_default() -> None:
    """Every option of every command says what it does, and those with a default say which."""
    import argparse

    from sgsr.cli import build_parser
    from sgsr.metric_registry import NAMES

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"sgsr {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where}: no help text"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in action.help, f"{where}: help does not give the default"
    evaluate_help = commands.choices["evaluate"].format_help()
    assert all(m in evaluate_help for m in NAMES)
    upscale_help = " ".join(commands.choices["upscale"].format_help().split())
    assert "(default: 0, the whole image at once)" in upscale_help
    assert "(default: 16)" in upscale_help
    assert "--params" not in upscale_help  # upscale reads no params: it is not offered


def test_upscale_prints_one_summary_line(tmp_path: Path, capsys) -> None:
    import json

    from safetensors.torch import save_file

    from sgsr.models import build_model

    d = _pair(tmp_path)
    model = build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)
    (d / "run").mkdir()
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(d / "run/w.safetensors"))
    card = {"arch": "edsr_baseline", "model_kwargs": {"n_resblocks": 1, "n_feats": 8}, "scale": 2}
    (d / "run/run.json").write_text(json.dumps(card))
    weights = str(d / "run/w.safetensors")
    assert main(["upscale", str(d / "hr"), str(d / "up"), "--weights", weights]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "upscaled" in ln]
    assert lines == [f"sgsr upscale: 1 image(s) upscaled with {weights} -> {d / 'up'}"]
    assert (d / "up" / "x.png").is_file()
