"""Images as they are shown: EXIF orientation applied; animated and multi-page files refused
instead of silently losing every frame but the first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sgsr.imaging import ImageReadError, read_image


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A 'rotate 90 CW' tag (6) on a 10x4 landscape: shown upright it is 4 wide, 10 high."""
    stored = np.zeros((4, 10, 3), np.uint8)
    stored[:, :5] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=100)
    upright = read_image(path)
    assert upright.shape == (10, 4, 3)
    assert upright[:3].mean() > 200 and upright[-3:].mean() < 50  # the white half is on top


@pytest.mark.parametrize("suffix", [".gif", ".png", ".tiff", ".webp"])
def test_multi_frame_images_are_refused(tmp_path: Path, suffix: str) -> None:
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 128, 255)]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match="holds 3 frames"):
        read_image(path)


def test_a_single_frame_gif_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "one.gif"
    Image.fromarray(np.full((8, 8, 3), 40, np.uint8)).save(path)
    assert read_image(path).shape == (8, 8, 3)
