"""train.init_from / train.freeze (sgsr.warmstart), the ``community`` architecture entry, and
the one range convention (models see [0, rgb_range] in training as in inference)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from tiny_sr import TinySRVGG, randomize
from torch import nn

from sgsr import preflight
from sgsr.config import ConfigError, TrainConfig
from sgsr.losses import build_loss
from sgsr.models import build_model
from sgsr.models.common import ModelArgumentError
from sgsr.models.community import CommunityModelError
from sgsr.step import build_optimizer, build_state, train_step
from sgsr.warmstart import freeze, init_problem, load_init, warm_start
from sgsr.weights import load_model, write_weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def compact_file(tmp_path):
    """A tiny SRVGGNetCompact x2 state dict (basicsr keys) as a local weights file."""
    net = randomize(TinySRVGG(nf=4, num_conv=1, scale=2), seed=5)
    path = tmp_path / "compact.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return net, path


def _edsr(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)


# --- the community architecture ---------------------------------------------------------------
def test_community_builds_from_and_starts_at_its_weights(compact_file) -> None:
    net, path = compact_file
    model = build_model("community", scale=2, weights=str(path)).eval()
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.allclose(model(x), net.eval()(x), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "argument", "message"),
    [
        ({"weights": "realesrgan-x4plus"}, "weights", r"x4 network but the run's scale is x2"),
        ({"weights": "lpips_alex"}, "weights", "metric network, not SR"),
        ({"weights": "esrgan.bin"}, "weights", "neither a pretrained SR weight"),
        ({"weights": "a.pth", "sha256": "abc"}, "sha256", "64 lower-case hex"),
        ({"weights": "a.pth", "rgb_range": 0}, "rgb_range", "positive number"),
    ],
)
def test_community_settings_are_checked_without_reading_files(kwargs, argument, message) -> None:
    with pytest.raises(ModelArgumentError, match=message) as info:
        build_model("community", scale=2, **kwargs)
    assert info.value.argument == argument


def test_params_name_the_bad_community_key() -> None:
    raw = {
        "models": {"rrdb": {"arch": "community", "weights": "realesrgan-x4plus"}},
        "losses": {"l1": {"l1": 1.0}},
        "experiment": {"models": ["rrdb"], "losses": ["l1"], "scales": [2]},
    }
    with pytest.raises(ConfigError, match=r"models\.rrdb\.weights: .*x4 network.*x2"):
        preflight.parse(raw)


def test_a_pinned_local_file_that_changed_is_refused(compact_file) -> None:
    _, path = compact_file
    with pytest.raises(CommunityModelError, match=r"compact\.safetensors: sha256 .* pins 0000"):
        build_model("community", scale=2, weights=str(path), sha256="0" * 64)


def test_a_missing_registry_file_says_to_run_download(tmp_path) -> None:
    with pytest.raises(OSError, match=r"realesrgan-x4plus\.safetensors not found"):
        build_model("community", scale=4, weights="realesrgan-x4plus", pretrained_dir=tmp_path)


def test_trained_community_model_reloads_without_its_starting_file(compact_file, tmp_path):
    _, path = compact_file
    model = build_model("community", scale=2, weights=str(path))
    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # "trained": differs from the starting file
    card = {"run": "c", "arch": "community", "model_kwargs": {"weights": str(path)}, "scale": 2,
            "weights": "raw"}  # fmt: skip
    out = write_weights(tmp_path / "run", model.state_dict(), card)
    path.unlink()  # the pretrained file is gone: the trained tensors define the network
    loaded, scale = load_model(out)
    assert scale == 2
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


# --- init_from / freeze -----------------------------------------------------------------------
def test_init_from_another_run_loads_its_weights_and_the_ema_starts_there(tmp_path) -> None:
    donor = _edsr(1)
    card = {"run": "a", "arch": "edsr_baseline", "scale": 2, "weights": "raw",
            "model_kwargs": {"n_resblocks": 1, "n_feats": 8}}  # fmt: skip
    write_weights(tmp_path / "models" / "a", donor.state_dict(), card)
    model = _edsr(2)
    assert not torch.equal(model.head.weight, donor.head.weight)
    done = warm_start(model, "run:a", (), tmp_path, "b")
    assert done == {"init_from": "run:a", "frozen_parameters": 0}
    assert all(torch.equal(v, donor.state_dict()[k]) for k, v in model.state_dict().items())
    state = build_state(model, build_loss({"l1": 1.0}), TrainConfig(ema=0.9, device="cpu"))
    assert torch.equal(state.ema.shadow["head.weight"], donor.head.weight)


def test_a_zero_shot_run_writes_its_starting_weights_as_they_are(tmp_path) -> None:
    """experiment.zero_shot: no loss, optimizer, EMA or patch store, the weights untouched."""
    from sgsr.config import parse_config
    from sgsr.train import run

    donor = _edsr(3)
    start = {k: v.contiguous() for k, v in donor.state_dict().items()}
    save_file(start, tmp_path / "w.safetensors")
    cfg = parse_config(
        {"root": str(tmp_path), "prepare": {"scales": [2]},
         "models": {"m": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
         "losses": {"l1": {"l1": 1.0}},
         "train": {"init_from": str(tmp_path / "w.safetensors"), "ema": 0.9, "iterations": 50},
         "experiment": {"models": ["m"], "losses": ["l1"], "scales": [2], "zero_shot": ["m"]}}
    )  # fmt: skip
    weights = run(cfg, "m-zeroshot-x2", root=tmp_path)  # no data/prepared: nothing read from it
    assert weights == tmp_path / "models" / "m-zeroshot-x2" / "model.safetensors"
    model, scale = load_model(weights)
    assert scale == 2
    assert all(torch.equal(v, donor.state_dict()[k]) for k, v in model.state_dict().items())
    card = json.loads((weights.parent / "run.json").read_text())
    assert card["iterations"] == 0 and card["weights"] == "raw" and card["loss"] == "zeroshot"
    assert card["init_from"] == str(tmp_path / "w.safetensors") and card["train"]["ema"] == 0.0
    assert sorted(p.name for p in weights.parent.iterdir()) == ["model.safetensors", "run.json"]
    assert not (tmp_path / "models" / "live").exists()  # no curves: nothing was trained


def test_init_from_errors_name_the_source_and_keys(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot start from its own weights"):
        warm_start(_edsr(0), "run:a", (), tmp_path, "a")
    with pytest.raises(FileNotFoundError, match=r"models/b/model\.safetensors not found.*--run b"):
        warm_start(_edsr(0), "run:b", (), tmp_path, "a")
    bigger = build_model("edsr_baseline", scale=2, n_resblocks=2, n_feats=8).state_dict()
    with pytest.raises(ValueError, match=r"x\.pth does not fit .*unexpected \['body\.1\."):
        load_init(_edsr(0), bigger, "x.pth")


def test_init_from_forms_are_checked_in_the_params() -> None:
    assert init_problem("run:a", ["a"]) is None and init_problem("w.pth", []) is None
    assert "runs: a" in init_problem("run:zz", ["a"])
    assert "known: lpips_alex" in init_problem("pretrained:nope", [])
    assert "must be pretrained:<weight>" in init_problem("weights.bin", [])


def test_freeze_stops_gradients_and_the_optimizer_skips_them() -> None:
    model = _edsr(0)
    frozen = freeze(model, ["head", "body.0"])
    assert frozen and all(n.startswith(("head", "body.0")) for n in frozen)
    opt = build_optimizer(model, TrainConfig())
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in in_opt) == (name not in frozen)
    with pytest.raises(ValueError, match=r"'heda' matches no parameter.*\['body', 'head'"):
        freeze(_edsr(0), ["heda"])
    with pytest.raises(ValueError, match="freezes every parameter"):
        freeze(_edsr(0), [""])


# --- one range convention ---------------------------------------------------------------------
class _Probe(nn.Module):
    """Identity-ish x2 model that records the largest input it saw."""

    def __init__(self, rgb_range: float) -> None:
        super().__init__()
        self.rgb_range = rgb_range
        self.w = nn.Parameter(torch.ones(()))
        self.seen = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = max(self.seen, float(x.max()))
        return nn.functional.interpolate(x, scale_factor=2) * self.w


def test_training_feeds_the_range_inference_feeds() -> None:
    from sgsr.infer import upscale

    lr = torch.full((1, 3, 4, 4), 0.5)
    probe = _Probe(255.0)
    state = build_state(probe, build_loss({"l1": 1.0}), TrainConfig(device="cpu"))
    out = train_step(state, lr, torch.full((1, 3, 8, 8), 0.5))
    assert probe.seen == pytest.approx(127.5) and out["total"] == pytest.approx(0.0, abs=1e-6)
    probe.seen = 0.0
    upscale(probe, lr, 2)
    assert probe.seen == pytest.approx(127.5)
