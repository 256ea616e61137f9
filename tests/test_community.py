"""Community networks through spandrel: detection, file formats, key prefixes, scale and licence
checks, and the wrapper that gives them sgsr's model contract. Tiny random networks, no network
access."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tiny_sr import TinyRRDBNet, TinySRVGG, randomize
from torch import nn

from sgsr.infer import upscale
from sgsr.models.community import (
    CommunityModelError,
    CommunitySR,
    load_descriptor,
    load_state_dict_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def compact() -> TinySRVGG:
    return randomize(TinySRVGG(nf=6, num_conv=2, scale=2), seed=4).eval()


@pytest.fixture(scope="module")
def esrgan() -> TinyRRDBNet:
    # spandrel's RRDBNet has a fixed growth of 32 channels
    return randomize(TinyRRDBNet(nb=1, nf=8, gc=32), seed=5).eval()


def _sd(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_detects_compact_and_matches_the_original_network(compact, tmp_path) -> None:
    path = tmp_path / "compact.safetensors"
    save_file(_sd(compact), str(path))
    model = load_state_dict_model(path, expected_scale=2)
    assert isinstance(model, CommunitySR) and model.training
    assert (model.arch, model.scale, model.n_colors, model.rgb_range) == ("Compact", 2, 3, 1.0)
    x = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), compact(x))


def test_detects_basicsr_rrdbnet_keys_as_esrgan(esrgan) -> None:
    model = load_state_dict_model(_sd(esrgan), expected_scale=4).eval()
    assert model.arch == "ESRGAN" and "1nb" in model.tags and "8nf" in model.tags
    x = torch.rand(1, 3, 4, 6)
    with torch.no_grad():
        assert torch.allclose(model(x), esrgan(x), atol=1e-6)


def test_scale_mismatch_names_file_architecture_and_both_scales(compact, tmp_path) -> None:
    path = tmp_path / "net.safetensors"
    save_file(_sd(compact), str(path))
    with pytest.raises(CommunityModelError) as info:
        load_state_dict_model(path, expected_scale=4)
    message = str(info.value)
    assert str(path) in message and "RealESRGAN Compact" in message
    assert "x2" in message and "x4" in message


def test_state_dict_keys_are_the_networks_own_and_round_trip(compact) -> None:
    model = load_state_dict_model(_sd(compact))
    keys = list(model.state_dict())
    assert keys == list(model.net.state_dict()) == list(compact.state_dict())
    again = load_state_dict_model(model.state_dict(), expected_scale=2)  # spandrel re-detects
    clone = copy.deepcopy(model)
    clone.load_state_dict(_sd(compact), strict=True)
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), clone.eval()(x))
    with pytest.raises(RuntimeError, match="Missing key"):
        clone.load_state_dict({k: v for k, v in _sd(compact).items() if k != "body.0.bias"})


def test_trainable_and_ema_sees_the_same_keys(compact) -> None:
    from sgsr.train import EMA

    model = load_state_dict_model(_sd(compact))
    ema = EMA(model, 0.5)
    assert set(ema.state_dict()) == set(compact.state_dict())
    before = model.net.body[0].weight.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 12, 12)
    F.l1_loss(model(x), y).backward()
    opt.step()
    ema.update(model)
    assert not torch.equal(model.net.body[0].weight, before)
    assert torch.allclose(
        ema.state_dict()["body.0.weight"], (before + model.net.body[0].weight) / 2
    )


def test_rgb_range_is_adapted_around_the_0_1_network(compact) -> None:
    model = load_state_dict_model(_sd(compact), rgb_range=255.0).eval()
    x = torch.rand(1, 3, 5, 5)
    with torch.no_grad():
        assert torch.allclose(model(x * 255.0), compact(x) * 255.0, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="rgb_range"):
        load_state_dict_model(_sd(compact), rgb_range=0.0)


def test_size_requirements_are_met_by_padding(tmp_path) -> None:
    """Real-ESRGAN x2 (pixel-unshuffle RRDBNet) needs sides that are multiples of 4."""
    net = randomize(TinyRRDBNet(nb=1, nf=8, gc=32, in_ch=12, out_ch=3), seed=6)
    desc = load_descriptor(_sd(net))
    assert desc.scale == 2 and desc.size_requirements.multiple_of == 4
    model = load_state_dict_model(_sd(net), expected_scale=2).eval()
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (1, 3, 14, 18)
        assert torch.allclose(y.clamp(0, 1), desc(x), atol=1e-6)  # spandrel's own call API


def test_upscale_runs_it_like_an_sgsr_model(compact) -> None:
    model = load_state_dict_model(_sd(compact), expected_scale=2).eval()
    lr = torch.rand(1, 3, 12, 10)
    whole = upscale(model, lr, 2)
    tiled = upscale(model, lr, 2, tile=8, overlap=2)
    with torch.no_grad():  # upscale feeds the CPU network channels_last (sgsr.infer)
        assert torch.equal(
            whole, compact(lr.contiguous(memory_format=torch.channels_last)).clamp(0, 1)
        )
    assert tiled.shape == whole.shape and (tiled - whole).abs().max() < 0.2
    grey = upscale(model, lr[:, :1], 2)  # a grey image through the RGB network
    assert grey.shape == (1, 1, 24, 20)


# ---------------------------------------------------------------------------------------------
# files and key conventions
# ---------------------------------------------------------------------------------------------
def test_pth_prefers_params_ema_over_params(compact, tmp_path) -> None:
    other = randomize(TinySRVGG(nf=6, num_conv=2, scale=2), seed=9)
    path = tmp_path / "net_g.pth"
    torch.save({"params": _sd(other), "params_ema": _sd(compact)}, path)
    model = load_state_dict_model(path, expected_scale=2)
    assert torch.equal(model.net.body[0].weight, compact.body[0].weight)


@pytest.mark.parametrize("prefix", ["module.", "netG.", "_orig_mod."])
def test_shared_wrapper_prefixes_are_stripped(prefix, compact, tmp_path) -> None:
    path = tmp_path / "net.pth"
    torch.save({prefix + k: v for k, v in _sd(compact).items()}, path)
    assert load_state_dict_model(path).arch == "Compact"


class Payload:
    """An arbitrary pickled object: what weights_only must refuse."""


def test_pth_with_pickled_objects_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"body.0.weight": torch.zeros(1), "x": Payload()}, path)
    with pytest.raises(CommunityModelError, match=r"evil\.pth: cannot be read .*weights_only"):
        load_state_dict_model(path)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("w.bin", b"\0" * 16, "unsupported weights file type '.bin'"),
        ("w.safetensors", b"\x10" + b"\0" * 7 + b"{bad", "not a readable safetensors"),
        ("w.pth", b"not a zip", "cannot be read as a plain weights file"),
    ],
)
def test_unreadable_files_are_named(name, data, message, tmp_path) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CommunityModelError, match=message) as info:
        load_state_dict_model(path)
    assert str(path) in str(info.value)


def test_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(CommunityModelError, match="not found"):
        load_state_dict_model(tmp_path / "absent.safetensors")


def test_unknown_and_malformed_state_dicts_are_refused(compact) -> None:
    with pytest.raises(CommunityModelError, match="no spandrel architecture"):
        load_state_dict_model({"encoder.weight": torch.zeros(3, 3)})
    with pytest.raises(CommunityModelError, match="non-tensor entries: \\['step'\\]"):
        load_state_dict_model({"body.0.weight": torch.zeros(1), "step": 3})
    broken = _sd(compact)
    broken["body.2.weight"] = torch.zeros(6, 5, 3, 3)  # wrong input channels
    with pytest.raises(CommunityModelError, match="could not build the network"):
        load_state_dict_model(broken)


# ---------------------------------------------------------------------------------------------
# licences
# ---------------------------------------------------------------------------------------------
class _Doubler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.restricted = nn.Conv2d(3, 12, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.restricted(x), 2)


@pytest.fixture
def restrictive_arch(monkeypatch) -> None:
    """An architecture registered the way spandrel_extra_arches.install() does it (into spandrel's
    global registry) but implemented outside the spandrel package."""
    import spandrel

    class RestrictedArch(spandrel.Architecture):
        def __init__(self) -> None:
            super().__init__(
                id="RestrictedNet",
                detect=lambda state: "restricted.weight" in state,
            )

        def load(self, state_dict):
            return spandrel.ImageModelDescriptor(
                _Doubler(), state_dict, architecture=self, purpose="SR", tags=[],
                supports_half=False, supports_bfloat16=False, scale=2, input_channels=3,
                output_channels=3,
            )  # fmt: skip

    registry = spandrel.MAIN_REGISTRY.copy()
    registry.add(spandrel.ArchSupport.from_architecture(RestrictedArch()))
    monkeypatch.setattr(spandrel, "MAIN_REGISTRY", registry)


def test_architectures_outside_spandrel_need_explicit_permission(restrictive_arch) -> None:
    state = _sd(_Doubler())
    with pytest.raises(CommunityModelError, match="restrictively licensed architectures excluded"):
        load_state_dict_model(state)
    model = load_state_dict_model(state, expected_scale=2, allow_restrictive=True)
    assert model.arch == "RestrictedNet"


def test_every_bundled_architecture_counts_as_permissive() -> None:
    import spandrel

    from sgsr.models.community import is_permissive

    assert len(spandrel.MAIN_REGISTRY) > 30
    assert all(is_permissive(s.architecture) for s in spandrel.MAIN_REGISTRY)


def test_importing_the_module_does_not_import_spandrel() -> None:
    import subprocess
    import sys

    code = "import sys, sgsr.models.community; print('spandrel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
