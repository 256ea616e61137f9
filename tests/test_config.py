from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sgsr.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.parent for p in (REPO / "profiles").glob("*/params.yaml"))


def _default() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


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
    assert run.sibling("l1") == "other-l1-x4"
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
        parse_config(raw, source="p.yaml")
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
        parse_config(raw)


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
