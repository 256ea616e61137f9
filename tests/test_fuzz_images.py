"""Hostile image files through every command that reads images.

Random bytes, truncations, flipped bytes, corrupted PNG chunks (with and without a fixed CRC)
and headers declaring huge sizes go through `sgsr download` (dir source), `sgsr prepare`,
`sgsr upscale` and `sgsr evaluate --sr/--hr`, run as the command line runs them (`cli.main`).
Each run must end in success, a named error (exit 2, the message names the file) or a named
skip (a warning naming the file): never a traceback, never a silent drop. Examples are
derandomized, so a failure reproduces; the slow variant runs many more.
"""

from __future__ import annotations

import io
import json
import math
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from sgsr.cli import main
from sgsr.imaging import IMAGE_SUFFIXES, ImageReadError, read_image, write_image

#: Small enough that any header the fuzzer inflates is refused before decoding (fast), large
#: enough for the 24x24 good images.
LIMIT = 4096
FAST = settings(
    max_examples=12,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SLOW = settings(FAST, max_examples=300)

pytestmark = pytest.mark.usefixtures("one_thread")


def _encode(fmt: str, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (24, 24, 4), dtype=np.uint8)
    image = Image.fromarray(arr, "RGBA").convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


#: Valid files to damage: (suffix, bytes).
BASES: dict[str, tuple[str, bytes]] = {
    "png": (".png", _encode("PNG")),
    "png_rgba": (".png", _encode("PNG", "RGBA")),
    "png_gray": (".png", _encode("PNG", "L")),
    "png_palette": (".png", _encode("PNG", "P")),
    "bmp": (".bmp", _encode("BMP")),
    "jpeg": (".jpg", _encode("JPEG")),
    "tiff": (".tif", _encode("TIFF")),
    "webp": (".webp", _encode("WEBP")),
    "ppm": (".ppm", _encode("PPM")),
}


def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset of the chunk's length field, data length) for each chunk."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((pos, length))
        pos += 12 + length
    return out


@st.composite
def hostile_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, bytes) of a file that claims to be an image."""
    kind = draw(st.sampled_from(["random", "truncate", "flip", "png_chunk", "huge_header"]))
    if kind == "random":
        return draw(st.sampled_from(IMAGE_SUFFIXES)), draw(st.binary(max_size=300))
    suffix, base = BASES[draw(st.sampled_from(sorted(BASES)))]
    data = bytearray(base)
    if kind == "truncate":
        return suffix, bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return suffix, bytes(data)
    if kind == "png_chunk":
        suffix, base = BASES[draw(st.sampled_from(["png", "png_rgba", "png_gray", "png_palette"]))]
        data = bytearray(base)
        chunks = _png_chunks(base)
        pos, length = chunks[draw(st.integers(0, len(chunks) - 1))]
        start = pos + 4  # chunk type + data
        span = 4 + length
        for _ in range(draw(st.integers(1, 4))):
            data[start + draw(st.integers(0, span - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):  # a fixed CRC gets the damage past Pillow's CRC check
            crc = zlib.crc32(bytes(data[start : start + span])) & 0xFFFFFFFF
            data[start + span : start + span + 4] = struct.pack(">I", crc)
        return suffix, bytes(data)
    # huge_header: a real file whose header declares another (often enormous) size
    width = draw(st.integers(1, 2**31 - 1))
    height = draw(st.integers(1, 2**31 - 1))
    fmt = draw(st.sampled_from(["png", "bmp"]))
    suffix, base = BASES[fmt]
    data = bytearray(base)
    if fmt == "png":
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    else:
        data[18:26] = struct.pack("<ii", width, height)
    return suffix, bytes(data)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    """cli.main as the console runs it: (exit code, stderr, warning messages)."""
    rc, _out, err, notes = _run_out(args, capsys)
    return rc, err, notes


def _run_out(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str, list[str]]:
    """:func:`_run` with stdout too: (exit code, stdout, stderr, warning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err, [str(w.message) for w in caught]


def _check(rc: int, err: str, notes: list[str], bad: Path, produced: Callable[[], bool]) -> None:
    """Success (the file was usable and used), a named error, or a named skip."""
    assert rc in (0, 2), f"exit {rc}: {err}"
    if rc == 2:
        assert str(bad) in err, f"the error does not name {bad}: {err}"
        assert "Traceback" not in err
    elif not produced():  # a named skip: a recorded warning, or the console's warning line
        shown = [*notes, *err.splitlines()]
        assert any(str(bad) in n for n in shown), f"{bad} left out silently: {shown}"


def _good(path: Path, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    write_image(path, rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    return path


def _params(folder: Path, policy: str, **data: object) -> Path:
    params = {
        "data": {"on_bad_image": policy, "max_pixels": LIMIT, "metric_weights": False, **data},
        "prepare": {"scales": [2], "patch_size": 8, "stride": 8, "val_images": 0},
        "train": {"lr_patch": 4},
        "evaluate": {"metrics": ["psnr", "ssim"]},
    }
    path = folder / "params.yaml"
    path.write_text(json.dumps(params))
    return path


# --- read_image itself ---------------------------------------------------------------------


@settings(FAST, max_examples=150)
@given(hostile_file())
def test_read_image_ends_in_an_image_or_a_named_error(case: tuple[str, bytes]) -> None:
    suffix, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(data)
        try:
            arr = read_image(path, max_pixels=LIMIT)
        except ImageReadError as exc:
            assert str(path) in str(exc)
        else:
            assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] in (1, 3)


# --- the commands ----------------------------------------------------------------------------


def _download(case: tuple[str, bytes], policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    suffix, data = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _good(root / "mirror/S/good.png")
        bad = root / "mirror/S" / f"bad{suffix}"
        bad.write_bytes(data)
        params = _params(root, policy, source="dir", dir=str(root / "mirror"),
                         train_sets=["S"], test_sets=["S"])  # fmt: skip
        rc, err, notes = _run(["--params", str(params), "download"], capsys)
        _check(rc, err, notes, bad, lambda: (root / "data/raw/S" / bad.name).is_file())


def _prepare(case: tuple[str, bytes], policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    suffix, data = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _good(root / "data/raw/Tr/a.png")
        _good(root / "data/raw/Te/good.png", 2)
        set_name = "Te" if len(data) % 2 else "Tr"  # test pairs and the patch store alike
        bad = root / "data/raw" / set_name / f"bad{suffix}"
        bad.write_bytes(data)
        params = _params(root, policy, train_sets=["Tr"], test_sets=["Te"])
        rc, err, notes = _run(["--params", str(params), "prepare"], capsys)

        def produced() -> bool:
            if set_name == "Te":
                return (root / "data/prepared/x2/Te/hr/bad.png").is_file()
            meta = json.loads((root / "data/prepared/x2/patches/meta.json").read_text())
            return any(s["file"] == bad.name for s in meta["sources"]) or any(
                bad.name in s for s in meta["skipped_small"]
            )

        _check(rc, err, notes, bad, produced)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sgsr.models import build_model

    folder = tmp_path_factory.mktemp("weights")
    model = build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=4)
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(folder / "w.st"))
    card = {"arch": "edsr_baseline", "model_kwargs": {"n_resblocks": 1, "n_feats": 4}, "scale": 2}
    (folder / "run.json").write_text(json.dumps(card))
    return folder / "w.st"


def _upscale(
    case: tuple[str, bytes], policy: str, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suffix, data = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _good(root / "in/a.png")
        bad = root / "in" / f"bad{suffix}"
        bad.write_bytes(data)
        args = ["upscale", str(root / "in"), str(root / "out"), "--weights", str(weights)]
        args += ["--device", "cpu", "--on-bad-image", policy, "--max-pixels", str(LIMIT)]
        rc, err, notes = _run(args, capsys)
        _check(rc, err, notes, bad, lambda: (root / "out/bad.png").is_file())
        if rc == 2:  # stopped part-way: whatever was written is whole
            for out in (root / "out").glob("*") if (root / "out").exists() else []:
                assert not out.name.startswith("."), f"temp file left: {out}"
                read_image(out)


def _evaluate(case: tuple[str, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    suffix, data = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _good(root / "hr/x.png")
        bad = root / "sr" / f"x{suffix}"
        bad.parent.mkdir()
        bad.write_bytes(data)
        args = ["evaluate", "--sr", str(root / "sr"), "--hr", str(root / "hr"), "--scale", "2"]
        rc, out, err, notes = _run_out([*args, "--max-pixels", str(LIMIT), "--json"], capsys)

        def scored() -> bool:  # the hostile file decoded to the right size and was scored
            images = json.loads(out)["images"] if out.strip() else []
            return [i["image"] for i in images] == ["x"] and not math.isnan(images[0]["psnr"])

        _check(rc, err, notes, bad, scored)


@FAST
@given(hostile_file(), st.sampled_from(["error", "skip"]))
def test_download_dir_source(capsys, case, policy) -> None:
    _download(case, policy, capsys)


@FAST
@given(hostile_file(), st.sampled_from(["error", "skip"]))
def test_prepare(capsys, case, policy) -> None:
    _prepare(case, policy, capsys)


@FAST
@given(hostile_file(), st.sampled_from(["error", "skip"]))
def test_upscale(capsys, weights, case, policy) -> None:
    _upscale(case, policy, weights, capsys)


@FAST
@given(hostile_file())
def test_evaluate_sr_hr(capsys, case) -> None:
    _evaluate(case, capsys)


@pytest.mark.slow
@SLOW
@given(hostile_file(), st.sampled_from(["error", "skip"]))
def test_many_hostile_files_through_every_command(capsys, weights, case, policy) -> None:
    _download(case, policy, capsys)
    _prepare(case, policy, capsys)
    _upscale(case, policy, weights, capsys)
    _evaluate(case, capsys)
