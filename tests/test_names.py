"""Names that become paths: one plain-name rule (sgsr.names), applied by sgsr.layout and
reported by params validation; the dir source never writes into the folder it reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sgsr import imaging, layout
from sgsr.config import ConfigError, load_config
from sgsr.data.download import UnsafeSourceError, copy_from_dir
from sgsr.names import MAX_LENGTH, UnsafeNameError, name_problem

REPO = Path(__file__).resolve().parents[1]


def _params(tmp: Path, **changes) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[key] = value
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "name", ["../../esc", "/data/mirror/Set5", "a/b", "..", ".", ".hidden", "", "a b", "x" * 65]
)
def test_names_that_are_paths_or_odd_are_refused(name: str) -> None:
    assert name_problem(name) is not None


@pytest.mark.parametrize("name", ["edsr_tiny", "sgl_hess_w1", "DIV2K_train", "B100", "a.b+c-d"])
def test_the_repository_s_names_are_plain(name: str) -> None:
    assert name_problem(name) is None


def test_every_profile_s_names_are_plain() -> None:
    for path in [REPO / "params.yaml", *sorted(REPO.glob("profiles/*/params.yaml"))]:
        load_config(path)  # raises on a name the rule refuses
        assert name_problem(path.parent.name if path.parent != REPO else "default") is None


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_a_plain_name_is_always_one_child_folder(tmp_path_factory, name: str) -> None:
    """Property: whatever the rule accepts, joined to a folder, is a direct child of it."""
    if name_problem(name) is not None:
        with pytest.raises(UnsafeNameError):
            layout.run_dir(name)
        return
    base = tmp_path_factory.getbasetemp()
    joined = (base / name).resolve()
    assert joined.parent == base.resolve() and joined.name == name
    assert len(name) <= MAX_LENGTH


def test_a_model_named_as_a_path_fails_validation_naming_the_key(tmp_path: Path) -> None:
    path = _params(
        tmp_path,
        models={"../../esc": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
        experiment__models=["../../esc"],
    )
    with pytest.raises(ConfigError, match=r"models: the name '\.\./\.\./esc' is a path"):
        load_config(path)


def test_layout_refuses_a_run_that_would_leave_the_project() -> None:
    with pytest.raises(UnsafeNameError, match="run name"):
        layout.run_dir("../../esc-l1-x4")
    with pytest.raises(UnsafeNameError, match="set name"):
        layout.raw_set("/data/mirror/Set5", "data/raw")


@pytest.mark.parametrize("key", ["test_sets", "train_sets"])
def test_a_set_named_by_an_absolute_path_fails_validation(tmp_path: Path, key: str) -> None:
    path = _params(tmp_path, **{f"data__{key}": [str(tmp_path / "mirror/Set5")]})
    with pytest.raises(ConfigError, match=rf"data\.{key}: the set name .* is a path"):
        load_config(path)


def test_the_dir_source_never_replaces_the_folder_it_reads(tmp_path: Path) -> None:
    """data.dir pointing at data/raw itself: copying Set5 would replace the source folder,
    deleting what is beside the images (a README here). Refused, nothing touched."""
    raw = tmp_path / "data/raw"
    imaging.write_image(raw / "Set5/a.png", np.full((8, 8, 3), 7, np.uint8))
    (raw / "Set5/README.txt").write_text("keep me")
    with pytest.raises(UnsafeSourceError, match="never written into the folder it is read from"):
        copy_from_dir(raw, ["Set5"], raw)
    assert (raw / "Set5/README.txt").read_text() == "keep me"
    mirror = raw / "Set5/mirror"  # a mirror inside the folder that Set5 would replace
    imaging.write_image(mirror / "Set5/b.png", np.full((8, 8, 3), 9, np.uint8))
    with pytest.raises(UnsafeSourceError, match="holds the source folder"):
        copy_from_dir(mirror, ["Set5"], raw)
    assert (mirror / "Set5/b.png").is_file()
