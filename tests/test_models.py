"""sgsr.models: published parameter counts, shapes, registry behaviour, determinism."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from conftest import install_fake_package
from torch import nn

from sgsr.models import (
    MODELS,
    RCAN,
    MeanShift,
    ModelArgumentError,
    UntrustedModelError,
    build_model,
    check_model_args,
    count_parameters,
    registered,
)
from sgsr.models.common import DIV2K_RGB_MEAN

# Small configs so a forward pass costs milliseconds; the real configs are only counted.
SMALL: dict[str, dict] = {
    "edsr_baseline": {"n_resblocks": 2, "n_feats": 8},
    "edsr": {"n_resblocks": 2, "n_feats": 8},  # keeps edsr's res_scale 0.1 default
    "rcan": {"n_groups": 2, "n_resblocks": 2, "n_feats": 16, "reduction": 4},
    "srresnet": {"n_resblocks": 2, "n_feats": 8},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _count_on_meta(name: str, **kwargs) -> int:
    """Count without allocating or initialising (the full EDSR is 43 M parameters)."""
    with torch.device("meta"):
        return count_parameters(build_model(name, **kwargs))


def _conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def _edsr_formula(scale: int, n_resblocks: int, n_feats: int, n_colors: int = 3) -> int:
    """EDSR parameter count derived by hand from the paper's fig. 3 / the official common.py:
    head conv, n_resblocks x (2 convs), body conv, upsampler (x2/x4: one/two conv F->4F stages,
    x3: one conv F->9F), tail conv. MeanShift is a constant here (the official code's frozen 1x1
    convs add 24 more scalars, well inside any rounding of the published numbers)."""
    f = n_feats
    ups = 2 * _conv(f, 4 * f, 3) if scale == 4 else _conv(f, scale * scale * f, 3)
    return (
        _conv(n_colors, f, 3)
        + n_resblocks * 2 * _conv(f, f, 3)
        + _conv(f, f, 3)
        + ups
        + _conv(f, n_colors, 3)
    )


def _srresnet_formula(scale: int, n_resblocks: int, n_feats: int, n_colors: int = 3) -> int:
    """As EDSR but 9x9 head/tail convs and one shared PReLU slope per activation (no BN)."""
    f = n_feats
    stages = 2 if scale == 4 else 1
    ups = stages * (_conv(f, 4 * f, 3) + 1) if scale != 3 else _conv(f, 9 * f, 3) + 1
    return (
        _conv(n_colors, f, 9)
        + 1
        + n_resblocks * (2 * _conv(f, f, 3) + 1)
        + _conv(f, f, 3)
        + ups
        + _conv(f, n_colors, 9)
    )


# ------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize(
    ("name", "scale", "published"),
    [
        ("edsr_baseline", 4, 1.52e6),  # EDSR paper / official repo: baseline x4 1.5 M
        ("edsr_baseline", 2, 1.37e6),  # official repo model zoo: baseline x2 1.37 M
        ("edsr", 4, 43.1e6),  # EDSR paper table 1
        ("edsr", 2, 40.7e6),  # official repo model zoo
        ("rcan", 4, 15.6e6),  # RCAN paper fig. / official repo
    ],
)
def test_parameter_counts_match_published(name: str, scale: int, published: float) -> None:
    n = _count_on_meta(name, scale=scale)
    assert abs(n - published) / published < 0.02, f"{name} x{scale}: {n:,} vs {published:,.0f}"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_baseline_counts_equal_architecture_formula(scale: int) -> None:
    assert _count_on_meta("edsr_baseline", scale=scale) == _edsr_formula(scale, 16, 64)
    assert _count_on_meta("edsr", scale=scale) == _edsr_formula(scale, 32, 256)
    assert _count_on_meta("srresnet", scale=scale) == _srresnet_formula(scale, 16, 64)


def test_slim_config_is_just_kwargs() -> None:
    slim = _count_on_meta("edsr_baseline", scale=4, n_resblocks=8, n_feats=32)
    assert slim == _edsr_formula(4, 8, 32)
    assert slim < _count_on_meta("edsr_baseline", scale=4) / 4


def test_count_parameters_trainable_only() -> None:
    model = build_model("edsr_baseline", scale=2, **SMALL["edsr_baseline"])
    total = count_parameters(model)
    model.head.requires_grad_(False)
    frozen = sum(p.numel() for p in model.head.parameters())
    assert count_parameters(model, trainable_only=True) == total - frozen
    assert count_parameters(model) == total


# ------------------------------------------------------------------ forward
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_output_shape_is_scale_times_input(name: str, scale: int) -> None:
    model = build_model(name, scale=scale, **SMALL[name]).eval()
    x = torch.rand(2, 3, 8, 7)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 8 * scale, 7 * scale)
    assert torch.isfinite(y).all()


def test_real_edsr_baseline_forward() -> None:
    model = build_model("edsr_baseline", scale=4).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 12, 12))
    assert y.shape == (1, 3, 48, 48)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_backward_reaches_every_parameter(name: str) -> None:
    model = build_model(name, scale=2, **SMALL[name])
    model(torch.rand(1, 3, 6, 6)).abs().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", sorted(SMALL))
def test_channels_last_matches_contiguous(name: str) -> None:
    model = build_model(name, scale=2, **SMALL[name]).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ bicubic skip
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_skip_starts_as_bicubic_and_learns_a_residual(scale: int) -> None:
    """Untrained, the network is exactly bicubic upsampling (its residual branch outputs 0);
    one optimiser step moves it off bicubic, and it costs no parameter."""
    torch.manual_seed(0)
    model = build_model("edsr_baseline", scale=scale, bicubic_skip=True, **SMALL["edsr_baseline"])
    x = torch.rand(2, 3, 8, 7)
    bicubic = torch.nn.functional.interpolate(
        x, scale_factor=scale, mode="bicubic", align_corners=False
    )
    with torch.no_grad():
        torch.testing.assert_close(model(x), bicubic, rtol=0, atol=0)
    plain = build_model("edsr_baseline", scale=scale, **SMALL["edsr_baseline"])
    assert count_parameters(model) == count_parameters(plain)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    target = torch.rand(2, 3, 8 * scale, 7 * scale)
    (model(x) - target).abs().mean().backward()
    opt.step()
    with torch.no_grad():
        assert (model(x) - bicubic).abs().max() > 1e-4


def test_bicubic_skip_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="bicubic_skip='yes'"):
        build_model("edsr_baseline", scale=2, bicubic_skip="yes", **SMALL["edsr_baseline"])


# ------------------------------------------------------------------ mean shift
def test_mean_shift_adds_div2k_mean_and_is_not_a_parameter() -> None:
    """With every weight zeroed the network outputs exactly rgb_range * DIV2K mean."""
    model = build_model("edsr_baseline", scale=2, rgb_range=255.0, **SMALL["edsr_baseline"])
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        y = model(torch.rand(1, 3, 4, 4))
    expected = 255.0 * torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1).expand_as(y)
    torch.testing.assert_close(y, expected)
    assert not any("shift" in k for k in model.state_dict())
    assert all("shift" not in n for n, _ in model.named_parameters())


def test_mean_shift_grey_uses_mean_of_rgb_means() -> None:
    sub, add = MeanShift(1.0, n_colors=1, sign=-1), MeanShift(1.0, n_colors=1, sign=1)
    x = torch.rand(1, 1, 3, 3)
    torch.testing.assert_close(sub(x), x - sum(DIV2K_RGB_MEAN) / 3)
    torch.testing.assert_close(add(sub(x)), x)
    model = build_model("rcan", scale=3, n_colors=1, **SMALL["rcan"]).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 5, 5)).shape == (1, 1, 15, 15)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("scale", [1, 5, 8, 2.0, True, "4"])
def test_bad_scale_names_value_and_allowed(scale) -> None:
    with pytest.raises(ValueError, match=r"allowed scales: \[2, 3, 4\]") as err:
        build_model("edsr_baseline", scale=scale, **SMALL["edsr_baseline"])
    assert repr(scale) in str(err.value)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("edsr_baseline", "n_resblocks", 0),
        ("edsr", "n_feats", -8),
        ("rcan", "n_groups", 0),
        ("rcan", "reduction", 0),
        ("srresnet", "n_resblocks", 2.5),
        ("edsr", "res_scale", 0.0),
        ("edsr_baseline", "n_colors", 4),
    ],
)
def test_bad_architecture_values_rejected(name: str, key: str, value) -> None:
    with pytest.raises(ValueError, match=key):
        build_model(name, scale=2, **{**SMALL[name], key: value})


def test_rcan_reduction_larger_than_features_rejected() -> None:
    with pytest.raises(ValueError, match="reduction=32 exceeds n_feats=16"):
        RCAN(scale=2, n_groups=1, n_resblocks=1, n_feats=16, reduction=32)


# ------------------------------------------------------------------ registry
def test_registry_is_a_plain_dict_of_the_four_models_and_community() -> None:
    assert type(MODELS) is dict
    assert set(MODELS) == {"edsr_baseline", "edsr", "rcan", "srresnet", "community"}


def test_unknown_name_lists_available_and_import_form() -> None:
    with pytest.raises(ValueError) as err:
        build_model("esrgan", scale=4)
    msg = str(err.value)
    assert "'esrgan'" in msg
    for name in MODELS:
        assert repr(name) in msg
    assert "package.module:ClassName" in msg


def test_name_is_normalised() -> None:
    model = build_model("EDSR-Baseline", scale=2, **SMALL["edsr_baseline"])
    assert count_parameters(model) == _edsr_formula(2, 2, 8)


def test_unknown_kwarg_names_key_and_accepted() -> None:
    with pytest.raises(ValueError) as err:
        build_model("edsr_baseline", scale=2, n_blocks=8)
    msg = str(err.value)
    assert "'n_blocks'" in msg
    assert "n_resblocks" in msg
    assert "n_feats" in msg


def test_missing_scale_is_named() -> None:
    with pytest.raises(ValueError, match="'scale'"):
        build_model("rcan")


USER_NET = textwrap.dedent(
    """
    import pathlib
    import torch.nn.functional as F
    from torch import nn

    MARKER = pathlib.Path(__file__).with_name("imported.marker")
    MARKER.write_text("module code ran")

    class TinyNet(nn.Module):
        def __init__(self, *, scale: int, width: int = 4) -> None:
            super().__init__()
            self.scale = scale
            self.conv = nn.Conv2d(3, width, 3, padding=1)

        def forward(self, x):
            return F.interpolate(self.conv(x)[:, :3], scale_factor=self.scale)

    def not_a_model(**kwargs):
        return 42
    """
)


def test_import_path_needs_allow_import_and_imports_nothing_without(tmp_path, monkeypatch) -> None:
    root = install_fake_package(tmp_path / "site", "sgsr_test_user_net", USER_NET)
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(UntrustedModelError, match=r"allow_import: true.*Nothing was imported"):
        build_model("sgsr_test_user_net:TinyNet", scale=3)
    assert not (root / "imported.marker").exists()
    assert "sgsr_test_user_net" not in sys.modules


def test_import_path_from_an_installed_package(tmp_path, monkeypatch) -> None:
    root = install_fake_package(tmp_path / "site", "sgsr_test_user_net2", USER_NET)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "sgsr_test_user_net2", raising=False)
    model = build_model("sgsr_test_user_net2:TinyNet", allow_import=True, scale=3, width=5)
    assert model.conv.out_channels == 5
    assert model(torch.rand(1, 3, 4, 4)).shape == (1, 3, 12, 12)
    with pytest.raises(ValueError, match=r"'depth'.*width"):
        build_model("sgsr_test_user_net2:TinyNet", allow_import=True, scale=3, depth=2)
    # a function is never called, even from an installed package
    with pytest.raises(UntrustedModelError, match=r"not a torch\.nn\.Module subclass"):
        build_model("sgsr_test_user_net2:not_a_model", allow_import=True)
    # registering is just a dict assignment, and then no import path is needed
    monkeypatch.setitem(MODELS, "tiny", model.__class__)
    assert build_model("tiny", scale=2).scale == 2


def test_import_path_outside_installed_packages_is_refused_before_import(
    tmp_path, monkeypatch
) -> None:
    """A loose module on sys.path (a file dropped in the working folder) is not an installed
    package: refused from metadata alone, its code never runs."""
    (tmp_path / "sgsr_loose_net.py").write_text(USER_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UntrustedModelError, match=r"'sgsr_loose_net' is not part of any install"):
        build_model("sgsr_loose_net:TinyNet", allow_import=True, scale=2)
    assert not (tmp_path / "imported.marker").exists()
    with pytest.raises(UntrustedModelError, match=r"standard library module 'os'"):
        build_model("os:system", allow_import=True)
    # an installed package, but a callable that is not a Module class: imported, never called
    with pytest.raises(UntrustedModelError, match=r"'load'.*not a torch\.nn\.Module subclass"):
        build_model("torch.hub:load", allow_import=True, repo_or_dir=str(tmp_path))


def test_import_path_builtin_module_class() -> None:
    assert isinstance(build_model("torch.nn:Identity", allow_import=True), nn.Identity)


def test_entry_point_registers_a_model_by_name(tmp_path, monkeypatch) -> None:
    root = install_fake_package(
        tmp_path / "site", "sgsr_test_ep_net", USER_NET, {"ep_tiny": "sgsr_test_ep_net:TinyNet"}
    )
    monkeypatch.syspath_prepend(str(root))
    assert registered("ep_tiny") is not None
    assert build_model("ep_tiny", scale=2, width=3).conv.out_channels == 3
    assert registered("sgsr_test_ep_net:TinyNet") is None  # never an import path


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("sgsr_no_such_module_xyz:Net", "sgsr_no_such_module_xyz"),
        ("torch.nn:NoSuchNet", "NoSuchNet"),
        ("torch.nn:", "package.module:ClassName"),
        (":Identity", "package.module:ClassName"),
    ],
)
def test_bad_import_path(path: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        build_model(path, allow_import=True)


@pytest.mark.parametrize(
    ("name", "kwargs", "argument"),
    [
        ("edsr_baseline", {"n_feats": -16}, "n_feats"),
        ("edsr", {"res_scale": float("nan")}, "res_scale"),
        ("rcan", {"n_feats": 16, "reduction": 32}, "reduction"),
        ("rcan", {"n_groups": "2"}, "n_groups"),
        ("srresnet", {"n_colors": 2}, "n_colors"),
        ("edsr_baseline", {"n_feets": 16}, "n_feets"),
        ("edsr_baseline", {"scale": 5}, "scale"),
    ],
)
def test_check_model_args_names_the_argument_without_building(
    name: str, kwargs: dict, argument: str
) -> None:
    """The validation hook params use: same verdict as the constructor, names the argument."""
    kwargs = {"scale": 2, **kwargs}
    ctor = MODELS[name]
    with pytest.raises(ModelArgumentError) as hook_err:
        check_model_args(name, ctor, kwargs)
    assert hook_err.value.argument == argument
    with pytest.raises(ValueError) as build_err:
        build_model(name, **kwargs)
    assert str(build_err.value) == str(hook_err.value)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_check_model_args_accepts_what_builds(name: str) -> None:
    check_model_args(name, MODELS[name], {"scale": 3, **SMALL[name]})
    build_model(name, scale=3, **SMALL[name])


# ------------------------------------------------------------------ determinism
@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_weights(name: str) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(name, scale=4, **SMALL[name]).state_dict()

    a, b, c = weights(7), weights(7), weights(8)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
