"""What each data source offers: set names, published URLs with their pinned sha256 and the
bundled sample photographs (pretrained weights: `sgsr.pretrained.WEIGHTS`).

A table, not code, so adding a set is one entry. A hash of ``None`` means *nobody has verified
it*: the downloader refuses such an entry before touching the network (fail closed), and the
message says how to pin it. Never fill in a hash you have not checked against the real file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Remote:
    """One published file: where it lives, what it must hash to, and how to unpack it."""

    url: str
    sha256: str | None  # None = TODO-unverified: downloads of it are refused
    size: int | None = None  # bytes, when known: sizes the progress bar, sanity-checks servers
    inner: str | None = None  # folder inside the archive holding the images (None: search all)
    provenance: str = ""  # where the pinned hash comes from, for the next person to re-check


# --- official: DIV2K and the classic benchmark sets from their published URLs ----------------

#: DIV2K hashes and sizes: tensorflow/datasets url_checksums/div2k.txt (TFDS verifies them on
#: every download). The benchmark archives are the per-set HR tarballs of the Hugging Face
#: dataset repos eugenesiow/<Set> (the URLs most SR code uses); no sha256 for them could be
#: checked from here, so they are TODO-unverified and refused until someone pins them.
OFFICIAL: dict[str, Remote] = {
    "DIV2K_train": Remote(
        url="https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
        sha256="9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
        size=3530603713,
        inner="DIV2K_train_HR",
        provenance="tensorflow/datasets url_checksums/div2k.txt",
    ),
    "DIV2K_valid": Remote(
        url="https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",
        sha256="20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
        size=448993893,
        inner="DIV2K_valid_HR",
        provenance="tensorflow/datasets url_checksums/div2k.txt",
    ),
    "Set5": Remote(
        url="https://huggingface.co/datasets/eugenesiow/Set5/resolve/main/data/Set5_HR.tar.gz",
        sha256=None,  # TODO-unverified
        inner="Set5_HR",
    ),
    "Set14": Remote(
        url="https://huggingface.co/datasets/eugenesiow/Set14/resolve/main/data/Set14_HR.tar.gz",
        sha256=None,  # TODO-unverified
        inner="Set14_HR",
    ),
    "B100": Remote(
        url="https://huggingface.co/datasets/eugenesiow/BSD100/resolve/main/data/BSD100_HR.tar.gz",
        sha256=None,  # TODO-unverified
        inner="BSD100_HR",
    ),
    "Urban100": Remote(
        url=(
            "https://huggingface.co/datasets/eugenesiow/Urban100/resolve/main/data/"
            "Urban100_HR.tar.gz"
        ),
        # TODO-unverified. Public code (deepinv examples) pins this archive by md5
        # 65d9d84a34b72c6f7ca1e26a12df1e4c: a lead for whoever pins the sha256, not a pin.
        sha256=None,
        inner="Urban100_HR",
    ),
}

#: Names that mean the same set. The first name of a group is the canonical one (the key in
#: OFFICIAL); a config may use any of them, and ``dir`` sources may name the folder either way
#: (../shared/datasets calls B100 ``BSD100``).
ALIAS_GROUPS: tuple[tuple[str, ...], ...] = (
    ("B100", "BSD100"),
    ("Urban100", "U100"),
    ("DIV2K_train", "DIV2K"),
)


def equivalent_names(name: str) -> tuple[str, ...]:
    """`name` first, then the other names of its alias group (case as written in the table)."""
    for group in ALIAS_GROUPS:
        if name in group:
            return (name, *(g for g in group if g != name))
    return (name,)


def canonical(name: str) -> str:
    """The OFFICIAL key for a set name or one of its aliases (the name itself if none)."""
    for group in ALIAS_GROUPS:
        if name in group:
            return group[0]
    return name


def known_official() -> list[str]:
    """Every accepted official set name, aliases included, for error messages."""
    names = list(OFFICIAL)
    for group in ALIAS_GROUPS:
        names += [g for g in group[1:] if group[0] in OFFICIAL]
    return names


# --- sample: photographs bundled with scikit-image ---------------------------------------------


def _sk(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        # scikit-image (~1 s to import): only when a sample image is read
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _motorcycle() -> np.ndarray:
    # scikit-image (~1 s to import): only when a sample image is read
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]


#: Fixed split. Every file here ships inside the scikit-image wheel (no pooch download), so the
#: sample source works offline. The test set has a grayscale image (camera, scored on its own
#: channel) and odd sizes (chelsea 451x300, motorcycle 741x500) so the mod-crop and
#: single-channel paths run in the default profile; the largest (hubble, 1000x872) is training.
#: Never add ``skimage.data.cat`` (it *is* chelsea) or ``stereo_motorcycle()[1]`` (the other
#: view of the motorcycle) to training. Adding the wheel's textures and gray photographs (brick,
#: coins, grass, gravel, page) was measured and did not help the default profile (README).
SAMPLE_SETS: dict[str, dict[str, Callable[[], np.ndarray]]] = {
    "sample_train": {
        "astronaut": _sk("astronaut"),
        "coffee": _sk("coffee"),
        "hubble_deep_field": _sk("hubble_deep_field"),
        "immunohistochemistry": _sk("immunohistochemistry"),
        "rocket": _sk("rocket"),
    },
    "sample_test": {
        "camera": _sk("camera"),
        "chelsea": _sk("chelsea"),
        "motorcycle": _motorcycle,
    },
}
