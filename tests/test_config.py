from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sgsr import preflight
from sgsr.config import ConfigError, device_problem, load_config, parse_config
from sgsr.devices import resolve_device

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.parent for p in (REPO / "profiles").glob("*/params.yaml"))


def _default() -> dict:
    """The default params without their generated runs: block, so a test may edit the matrix
    (test_run_index.py pins the block)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.pop("runs")
    return raw


@pytest.mark.parametrize(
    "params",
    [REPO / "params.yaml", *(p / "params.yaml" for p in PROFILES)],
    ids=lambda p: p.parent.name,
)
def test_every_shipped_profile_is_valid(params: Path) -> None:
    cfg = load_config(params)
    assert cfg.runs, "a profile must define at least one run"
    names = [r.name for r in cfg.runs]
    assert len(names) == len(set(names))


def test_profiles_share_the_root_pipeline() -> None:
    for profile in PROFILES:
        dvc_yaml = profile / "dvc.yaml"
        if profile.name in ("finetune", "gan"):  # own copies: tests/test_<name>_profile.py
            continue
        assert dvc_yaml.is_symlink(), f"{dvc_yaml} must link to the root dvc.yaml"
        assert dvc_yaml.resolve() == (REPO / "dvc.yaml").resolve()
        root = load_config(profile / "params.yaml").root
        assert (profile / root / "notebooks").resolve() == (REPO / "notebooks").resolve()


def test_runs_are_the_experiment_matrix() -> None:
    raw = _default()
    raw["models"]["other"] = {"arch": "rcan", "n_groups": 1, "n_resblocks": 1}
    raw["experiment"] = {"models": ["edsr_tiny", "other"], "losses": ["l1", "sgl"], "scales": [4]}
    cfg = parse_config(raw)
    assert [r.name for r in cfg.runs] == [
        "edsr_tiny-l1-x4",
        "edsr_tiny-sgl-x4",
        "other-l1-x4",
        "other-sgl-x4",
    ]
    run = cfg.run("other-sgl-x4")
    assert run.arch == "rcan" and run.model_kwargs == {"n_groups": 1, "n_resblocks": 1}
    assert run.sibling_name("l1") == "other-l1-x4"
    with pytest.raises(ConfigError, match="edsr_tiny-l1-x4"):
        cfg.run("nope")


def test_one_message_names_every_bad_key() -> None:
    raw = _default()
    raw["models"]["edsr_tiny"]["arch"] = "edsr_nonexistent"
    raw["experiment"]["scales"] = [5]
    raw["train"]["lr"] = -1.0
    raw["train"]["batch_size"] = 0
    raw["train"]["bogus"] = 1
    with pytest.raises(ConfigError) as info:
        preflight.parse(raw, source="p.yaml")
    msg = str(info.value)
    for key in (
        "models.edsr_tiny.arch",
        "experiment.scales",
        "train.lr",
        "train.batch_size",
        "train.bogus",
        "edsr_baseline",
    ):
        assert key in msg, f"{key} missing from:\n{msg}"
    assert msg.startswith("p.yaml: 5 bad key(s)")


def test_bad_loss_spec_is_reported_with_its_name() -> None:
    raw = _default()
    raw["losses"]["sgl"] = {"l1": 1.0, "sgl": -0.5}
    with pytest.raises(ConfigError, match=r"losses\.sgl:.*sgl"):
        preflight.parse(raw)


def test_types_are_checked() -> None:
    raw = _default()
    raw["train"]["iterations"] = "many"
    raw["data"]["source"] = "ftp"
    raw["train"]["channels_last"] = "yes"
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    msg = str(info.value)
    assert "train.iterations: must be an integer, got 'many'" in msg
    assert "data.source" in msg and "sample, official, dir" in msg
    assert "train.channels_last: must be true or false" in msg


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


# ------------------------------------------------------------------ YAML and models
def test_duplicate_keys_are_refused_with_the_key_and_both_lines(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys without a word; params must not."""
    path = tmp_path / "params.yaml"
    path.write_text(
        "seed: 0\n"
        "data:\n"
        "  source: sample\n"
        "  on_bad_image: error\n"
        "  source: dir\n"
        "train: {lr: 1.0e-4, lr: 1.0e-3}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "data.source (line 3 and line 5)" in msg
    assert "train.lr (line 6 and line 6)" in msg


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    raw = _default()
    # an anchor + merge with an overriding key is legitimate YAML, not a duplicate
    path.write_text(
        yaml.safe_dump({k: v for k, v in raw.items() if k != "models"}, sort_keys=False)
        + "models:\n  edsr_tiny:\n    <<: {arch: edsr_baseline, n_resblocks: 2, n_feats: 8}\n"
        "    n_resblocks: 4\n"
    )
    cfg = load_config(path)
    assert cfg.models["edsr_tiny"] == {"arch": "edsr_baseline", "n_resblocks": 4, "n_feats": 8}


@pytest.mark.parametrize(
    "path",
    sorted({*REPO.glob("*.yaml"), *REPO.glob("profiles/*/*.yaml"), *REPO.glob("*.yml")}),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_every_committed_yaml_has_unique_keys(path: Path) -> None:
    """params files are read by load_config; dvc.yaml and environment.yml by other tools, which
    must not see a key twice either."""
    from sgsr.yamlio import load_yaml

    load_yaml(path)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "~\n"])
def test_empty_params_file_is_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"params\.yaml: the file is empty"):
        load_config(path)


def test_sgsr_runs_on_an_empty_params_file_fails(tmp_path: Path, capsys) -> None:
    from sgsr.cli import main

    (tmp_path / "params.yaml").write_text("")
    assert main(["--params", str(tmp_path / "params.yaml"), "runs"]) == 2
    assert "the file is empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"n_feats": -16}, "models.edsr_tiny.n_feats", "must be a positive integer"),
        ({"n_resblocks": 2.5}, "models.edsr_tiny.n_resblocks", "must be a positive integer"),
        ({"res_scale": 0}, "models.edsr_tiny.res_scale", "must be a positive number"),
        ({"n_colors": 2}, "models.edsr_tiny.n_colors", "use 3 (RGB) or 1"),
        ({"n_feets": 16}, "models.edsr_tiny.n_feets", "does not accept 'n_feets'"),
        ({"scale": 4}, "models.edsr_tiny.scale", "experiment.scales"),
        ({"allow_import": "yes"}, "models.edsr_tiny.allow_import", "true or false"),
        ({"arch": "rcan", "n_feats": 8}, "models.edsr_tiny.reduction", "exceeds n_feats=8"),
    ],
)
def test_model_kwargs_are_checked_at_config_time(change: dict, key: str, words: str) -> None:
    """A bad model setting fails when the params are read (every stage, `sgsr runs`), naming
    the key, instead of when training builds the network."""
    raw = _default()
    spec = raw["models"]["edsr_tiny"]
    if "arch" in change:  # another architecture: none of the EDSR-only keys carry over
        spec.clear()
    spec.update(change)
    with pytest.raises(ConfigError) as info:
        preflight.parse(raw)
    assert f"{key}: " in str(info.value) and words in str(info.value)


_MARKER_MODULE = """
import pathlib
pathlib.Path(__file__).with_name("imported.marker").write_text("ran")
from torch import nn
class Net(nn.Module):
    def __init__(self, *, scale, width=4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
"""


def test_import_path_in_params_needs_allow_import_and_is_not_imported(
    tmp_path: Path, monkeypatch
) -> None:
    """os:system used to be imported before it was rejected; a module beside params.yaml ran."""
    (tmp_path / "sgsr_cfg_loose.py").write_text(_MARKER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    for arch in ("os:system", "sgsr_cfg_loose:Net", "torch.hub:load"):
        raw = _default()
        raw["models"]["edsr_tiny"] = {"arch": arch}
        with pytest.raises(ConfigError, match=r"models\.edsr_tiny\.arch: .*allow_import: true"):
            preflight.parse(raw)
    raw["models"]["edsr_tiny"] = {"arch": "sgsr_cfg_loose:Net", "allow_import": True}
    with pytest.raises(ConfigError, match="not part of any installed package"):
        preflight.parse(raw)
    raw["models"]["edsr_tiny"] = {"arch": "os:system", "allow_import": True}
    with pytest.raises(ConfigError, match="standard library"):
        preflight.parse(raw)
    assert not (tmp_path / "imported.marker").exists()


def test_import_path_of_an_installed_package_loads_without_importing(
    tmp_path: Path, monkeypatch
) -> None:
    from conftest import install_fake_package

    from sgsr.config import allows_import

    root = install_fake_package(tmp_path / "site", "sgsr_cfg_pkg", _MARKER_MODULE)
    monkeypatch.syspath_prepend(str(root))
    raw = _default()
    raw["models"]["edsr_tiny"] = {"arch": "sgsr_cfg_pkg:Net", "allow_import": True, "width": 3}
    cfg = parse_config(raw)
    assert allows_import(cfg, "edsr_tiny")
    assert cfg.runs[0].model_kwargs == {"width": 3}  # allow_import is not a constructor argument
    assert not (root / "imported.marker").exists(), "validation must not import user code"


# ------------------------------------------------------------------ property: any mapping
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5) | st.integers(0, 3), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    return out


_DEFAULT_PATHS = _paths(_default())


@st.composite
def _mutated_params(draw: st.DrawFn) -> tuple[dict, set[str]]:
    """The default params with 1-4 random edits (replace, delete or add a key anywhere)."""
    raw = copy.deepcopy(_default())
    touched: set[str] = set()
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_DEFAULT_PATHS))
        parent = raw
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        touched.add(str(path[0]))
        action = draw(st.sampled_from(("replace", "delete", "add")))
        if action == "replace":
            parent[path[-1]] = draw(_VALUES)
        elif action == "delete":
            parent.pop(path[-1], None)
        else:
            parent[draw(st.text(min_size=1, max_size=5))] = draw(_VALUES)
    return raw, touched


def _check_loads_or_names_a_key(raw: Any, touched: set[str]) -> None:
    before = repr(raw)
    try:
        cfg = parse_config(raw, source="p.yaml")
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith("p.yaml: "), msg
        assert any(key in msg for key in touched), f"no touched key {touched} in: {msg}"
    else:
        assert isinstance(cfg.runs, tuple)
    assert repr(raw) == before, "parse_config modified its input"


@settings(max_examples=120, derandomize=True, database=None, deadline=None)
@given(_mutated_params())
def test_any_edit_of_the_params_loads_or_raises_config_error_naming_the_key(edit) -> None:
    raw, touched = edit
    _check_loads_or_names_a_key(raw, touched)


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(st.dictionaries(st.text(max_size=8) | st.integers(), _VALUES, max_size=4))
def test_any_mapping_loads_or_raises_config_error(raw: dict) -> None:
    _check_loads_or_names_a_key(raw, {str(k) for k in raw} or {""})


@settings(max_examples=25, derandomize=True, database=None, deadline=None)
@given(_mutated_params())
def test_load_config_writes_nothing(tmp_path_factory, edit) -> None:
    """Reading params never writes: not the params file, not a file beside it."""
    folder = tmp_path_factory.mktemp("cfg")
    raw, _ = edit
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    before = path.read_bytes()
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
    assert sorted(p.name for p in folder.iterdir()) == ["params.yaml"]
    assert path.read_bytes() == before


@pytest.mark.slow
@settings(max_examples=3000, derandomize=True, database=None, deadline=None)
@given(_mutated_params())
def test_many_edits_of_the_params_load_or_name_the_key(edit) -> None:
    raw, touched = edit
    _check_loads_or_names_a_key(raw, touched)


def test_arch_spelling_is_normalised_in_one_place() -> None:
    """``EDSR-baseline`` names the registered ``edsr_baseline``: params accept it and the runs
    (hence run cards and fingerprints) carry the registry's spelling; import paths keep theirs."""
    from sgsr.models import EDSR, build_model, canonical_arch

    raw = _default()
    raw["models"]["edsr_tiny"]["arch"] = "EDSR-baseline"
    cfg = parse_config(raw)
    assert {r.arch for r in cfg.runs} == {"edsr_baseline"}
    assert canonical_arch(" EDSR-Baseline ") == "edsr_baseline"
    assert canonical_arch("my_pkg.nets:My-Net") == "my_pkg.nets:My-Net"
    assert isinstance(build_model("EDSR-baseline", scale=4), EDSR)


@pytest.mark.parametrize("value", ["tpu", "cuda:x", "cuda0", "cuda:", "CPU", ""])
def test_params_and_the_torch_side_refuse_the_same_device_strings(value: Any) -> None:
    """config.device_problem is the one device-string rule: params validation and
    devices.resolve_device (what training, inference and evaluation call) give the same answer."""
    rule = device_problem(value)
    assert rule == "must be one of auto, cpu, cuda or cuda:N"
    raw = _default()
    raw["infer"]["device"] = value
    with pytest.raises(ConfigError, match=f"infer.device: {rule}, got {value!r}"):
        parse_config(raw)
    with pytest.raises(ValueError, match=f"infer.device {rule}, got {value!r}"):
        resolve_device(value, key="infer.device")


@pytest.mark.parametrize("value", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_every_device_string_the_rule_accepts_parses(value: str) -> None:
    assert device_problem(value) is None
    raw = _default()
    raw["train"]["device"] = value
    assert parse_config(raw).train.device == value
