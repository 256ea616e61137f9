"""Adversarial training: the discriminators, the GAN objectives, the perceptual term on the real
VGG16 trunk, and the trainer's alternating updates (resume bitwise exact for both networks,
divergence stops with the term's name, a gan term of weight 0 changes nothing)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from toy_training import (
    Interrupt,
    assert_same_state,
    dying_source,
    read_tsv,
    tiny_generator,
    toy_source,
)

from sgsr import preflight, pretrained
from sgsr.adversarial import discriminator_loss, generator_loss
from sgsr.checkpoint import load_checkpoint
from sgsr.config import ConfigError, TrainConfig
from sgsr.discriminators import DISCRIMINATORS, build_discriminator
from sgsr.losses import (
    AdversarialLoss,
    CompositeLoss,
    L1Loss,
    PerceptualLoss,
    build_loss,
    loss_options,
)
from sgsr.train import TrainingDiverged, train

pytestmark = pytest.mark.usefixtures("one_thread")

#: A discriminator small enough for 32 px patches on one CPU thread.
TINY_D = {"arch": "vgg128", "num_feat": 4, "input_size": 32}


def gan_spec(kind: str = "relativistic", weight: float = 0.05, **d) -> dict:
    return {"l1": 1.0, "gan": {"weight": weight, "kind": kind, "discriminator": {**TINY_D, **d}}}


def opts(**kw) -> TrainConfig:
    base = dict(iterations=8, batch_size=2, lr=1e-3, schedule="constant", device="cpu")
    base.update(kw)
    return TrainConfig(**base)


# --- discriminators ----------------------------------------------------------------------------


def test_discriminators_have_basicsr_key_names_and_output_shapes():
    vgg = build_discriminator({"arch": "vgg128", "num_feat": 4})
    convs = ["conv0_0.weight", "conv0_0.bias", "conv0_1.weight"]
    bns = ["bn0_1"]
    for i in range(1, 5):
        convs += [f"conv{i}_0.weight", f"conv{i}_1.weight"]
        bns += [f"bn{i}_0", f"bn{i}_1"]
    stats = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    expected = {*convs, *(f"{b}.{s}" for b in bns for s in stats)}
    expected |= {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}
    assert set(vgg.state_dict()) == expected
    assert vgg.linear1.in_features == 4 * 8 * 4 * 4  # 128 px / 2^5 = 4 x 4
    assert vgg(torch.rand(2, 3, 128, 128)).shape == (2, 1)
    with pytest.raises(ValueError, match="takes 128 px patches"):
        vgg(torch.rand(2, 3, 64, 64))

    unet = build_discriminator({"arch": "unet_sn", "num_feat": 4})
    keys = {"conv0.weight", "conv0.bias", "conv9.weight", "conv9.bias"}
    keys |= {f"conv{i}.weight_{s}" for i in range(1, 9) for s in ("orig", "u", "v")}
    assert set(unet.state_dict()) == keys
    assert unet(torch.rand(2, 3, 24, 40)).shape == (2, 1, 24, 40)


def test_discriminator_specs_are_checked_without_drawing_random_numbers():
    before = torch.get_rng_state()
    for arch in DISCRIMINATORS:
        assert next(build_discriminator(arch, device="meta").parameters()).is_meta
    assert torch.equal(before, torch.get_rng_state())
    with pytest.raises(ValueError, match="unknown discriminator 'patchgan'"):
        build_discriminator("patchgan")
    with pytest.raises(ValueError, match="unknown option 'width'; allowed: input_size"):
        build_discriminator({"arch": "vgg128", "width": 3})
    with pytest.raises(ValueError, match="multiple of 32"):
        build_discriminator({"arch": "vgg128", "input_size": 100})


# --- objectives --------------------------------------------------------------------------------


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_gan_objectives_match_their_written_definitions():
    """BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x): the formulas of the module docstring,
    evaluated by hand on four logits."""
    real, fake = torch.tensor([2.0, 1.0]), torch.tensor([-1.0, 0.5])
    mr, mf = 1.5, -0.25

    def mean(xs):
        return sum(xs) / len(xs)

    rs, fs = (2.0, 1.0), (-1.0, 0.5)
    rel_g = (mean([softplus(r - mf) for r in rs]) + mean([softplus(-(f - mr)) for f in fs])) / 2
    rel_d = (mean([softplus(-(r - mf)) for r in rs]) + mean([softplus(f - mr) for f in fs])) / 2
    cases = {
        ("relativistic", "g"): rel_g,
        ("relativistic", "d"): rel_d,
        ("vanilla", "g"): mean([softplus(1.0), softplus(-0.5)]),
        ("vanilla", "d"): mean([softplus(-2), softplus(-1)]) + mean([softplus(-1), softplus(0.5)]),
        ("hinge", "g"): 0.25,
        ("hinge", "d"): mean([0.0, 0.0]) + mean([0.0, 1.5]),
    }  # fmt: skip
    for (kind, who), want in cases.items():
        fn = generator_loss if who == "g" else discriminator_loss
        assert fn(kind, real, fake).item() == pytest.approx(want, rel=1e-6), (kind, who)
    # the generator's relativistic loss treats D(hr) as a constant
    r = real.clone().requires_grad_(True)
    f = fake.clone().requires_grad_(True)
    generator_loss("relativistic", r, f).backward()
    assert r.grad is None and f.grad is not None and f.grad.abs().sum() > 0


def test_gan_term_spec_is_validated_and_refuses_to_run_without_its_discriminator():
    assert loss_options("gan") == ["betas", "discriminator", "kind", "lr", "weight", "weight_decay"]
    assert loss_options("perceptual") == ["layers", "network", "vgg19_file", "weight"]
    loss = build_loss(gan_spec())
    with pytest.raises(RuntimeError, match="has no discriminator"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    bad = {
        "wgan": ({"kind": "wgan"}, "unknown kind 'wgan'; allowed: relativistic, vanilla, hinge"),
        "arch": ({"discriminator": "patchgan"}, "unknown discriminator 'patchgan'"),
        "lr": ({"lr": 0}, "lr must be a positive number"),
        "betas": ({"betas": [0.9]}, "betas must be two numbers"),
    }
    for label, (options, words) in bad.items():
        with pytest.raises(ValueError, match=words) as info:
            build_loss({"l1": 1.0, "gan": {"weight": 0.1, **options}})
        assert "loss spec 'gan'" in str(info.value), label
    raw = {
        "models": {"m": {"arch": "edsr_baseline"}},
        "losses": {"g": {"l1": 1.0, "gan": {"weight": 0.1, "kind": "wgan"}},
                   "p": {"l1": 1.0, "perceptual": {"weight": 1.0, "layers": {"conv5_4": 1.0}}}},
        "experiment": {"models": ["m"], "losses": ["g", "p"], "scales": [4]},
    }  # fmt: skip
    with pytest.raises(ConfigError) as info:
        preflight.parse(raw)
    text = str(info.value)
    assert "losses.g: loss spec 'gan': unknown kind 'wgan'" in text
    assert "losses.p: loss spec 'perceptual': vgg16 has no layer 'conv5_4'" in text


# --- perceptual term on the real VGG16 trunk ---------------------------------------------------


@pytest.fixture(scope="module")
def vgg16_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The verified lpips_vgg file (torchvision's VGG16 trunk) from the download cache."""
    from sgsr.data.common import download_cache

    folder = tmp_path_factory.mktemp("pretrained")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pretrained.WeightsAbsentWarning)
        manifest = pretrained.fetch_weights(folder, cache=download_cache(), names=("lpips_vgg",))
    if not manifest["lpips_vgg"]["present"]:
        pytest.skip(f"lpips_vgg unavailable: {manifest['lpips_vgg']['reason']}")
    return folder


def test_perceptual_features_are_torchvision_vgg16_before_the_relu(vgg16_dir: Path):
    from torchvision.models.vgg import cfgs, make_layers

    tv = make_layers(cfgs["D"]).eval()  # torchvision's vgg16().features
    tensors = pretrained.verified_tensors("lpips_vgg", vgg16_dir)
    trunk = {k.removeprefix("features."): v for k, v in tensors.items() if k.startswith("feat")}
    tv.load_state_dict(trunk)
    term = PerceptualLoss("realesrgan", pretrained_dir=vgg16_dir)
    assert term.indices == {"conv1_2": 2, "conv2_2": 7, "conv3_3": 14, "conv4_3": 21, "conv5_3": 28}
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = tv[:29]((x - mean) / std)  # up to conv5_3, its ReLU (index 29) not applied
        got = term.features(x)["conv5_3"]
    assert (want < 0).any(), "pre-ReLU maps have negative values"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    sr = torch.rand(2, 3, 32, 32, requires_grad=True)
    hr = torch.rand(2, 3, 32, 32)
    value = term(sr, hr)
    fs, fh = term.features(sr), term.features(hr)
    weights = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_3": 1.0, "conv4_3": 1.0, "conv5_3": 1.0}
    expected = sum(w * F.l1_loss(fs[k], fh[k]) for k, w in weights.items())
    torch.testing.assert_close(value, expected)
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in term.parameters())
    esrgan = PerceptualLoss("esrgan", pretrained_dir=vgg16_dir)
    assert list(esrgan.layer_weights) == ["conv5_3"] and len(esrgan.net) == 29


def test_vgg19_is_read_only_from_torchvisions_published_file(tmp_path: Path):
    fake = tmp_path / "vgg19.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, fake)
    with pytest.raises(pretrained.WeightsUnavailable) as info:
        PerceptualLoss("esrgan", network="vgg19", vgg19_file=str(fake), pretrained_dir=tmp_path)
    assert str(fake) in str(info.value) and "vgg19-dcbb9e9d.pth" in str(info.value)
    with pytest.raises(pretrained.WeightsUnavailable, match="not found"):
        PerceptualLoss("esrgan", network="vgg19", vgg19_file=str(tmp_path / "no.pth"),
                       pretrained_dir=tmp_path)  # fmt: skip
    term = PerceptualLoss("realesrgan", network="vgg19")  # validation only: no file read
    assert list(term.indices.values()) == [2, 7, 16, 25, 34]


# --- the trainer -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["relativistic", "hinge"])
def test_gan_resume_after_crash_is_bitwise_exact_for_both_networks(tmp_path, kind):
    o = opts(iterations=8, schedule="cosine", warmup=2, ema=0.9, checkpoint_every=3, log_every=2)
    ref_live = tmp_path / "ref_live"
    ref = train(tiny_generator(), build_loss(gan_spec(kind)), toy_source(), o,
                live_dir=ref_live, progress=False)  # fmt: skip
    assert ref.discriminator_state is not None
    ck, live = tmp_path / "ck.pt", tmp_path / "live"
    with pytest.raises(Interrupt):
        train(tiny_generator(), build_loss(gan_spec(kind)), dying_source(7, toy_source()), o,
              checkpoint=ck, live_dir=live, progress=False)  # fmt: skip
    saved = load_checkpoint(ck)
    assert saved["iteration"] == 6 and set(saved["gan"]) == {
        "discriminator", "optimizer", "scheduler", "scaler",
    }  # fmt: skip
    resumed = train(tiny_generator(), build_loss(gan_spec(kind)), toy_source(), o,
                    checkpoint=ck, live_dir=live, progress=False)  # fmt: skip
    assert resumed.resumed_from == 6
    assert_same_state(ref.model_state, resumed.model_state)
    assert_same_state(ref.ema_state, resumed.ema_state)
    assert_same_state(ref.discriminator_state, resumed.discriminator_state)
    torch.manual_seed(0)  # train() seeds with 0, then builds the discriminator
    init = build_discriminator(TINY_D).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in ref.discriminator_state.items())
    metrics = live / "plots" / "metrics" / "train"
    for name in ("gan", "l1", "total", "d_loss", "d_real", "d_fake", "d_lr"):
        got, want = metrics / f"{name}.tsv", ref_live / "plots/metrics/train" / f"{name}.tsv"
        assert read_tsv(got) == read_tsv(want), name
    lrs = [v for _, v in read_tsv(metrics / "d_lr.tsv")]
    assert lrs[0] < 1e-4 and lrs[-1] < lrs[1], "the discriminator follows the cosine schedule"


def test_gan_weight_zero_trains_bitwise_like_no_gan_term():
    o = opts(iterations=4)
    plain = train(tiny_generator(), build_loss({"l1": 1.0}), toy_source(), o, progress=False)
    zero = train(tiny_generator(), build_loss(gan_spec(weight=0.0)), toy_source(), o,
                 progress=False)  # fmt: skip
    assert zero.discriminator_state is None and "d_loss" not in zero.last_losses
    assert_same_state(plain.model_state, zero.model_state)
    used = train(tiny_generator(), build_loss(gan_spec()), toy_source(), o, progress=False)
    assert any(not torch.equal(plain.model_state[k], v) for k, v in used.model_state.items())


class _NaNGan(AdversarialLoss):
    """The gan term, NaN on its call `k` (1-based)."""

    def __init__(self, k: int) -> None:
        super().__init__(discriminator=TINY_D)
        self.k, self.calls = k, 0

    def forward(self, sr, hr):
        self.calls += 1
        out = super().forward(sr, hr)
        return out * float("nan") if self.calls == self.k else out


def test_non_finite_gan_term_stops_naming_iteration_and_term_and_keeps_the_last_checkpoint(
    tmp_path,
):
    ck = tmp_path / "ck.pt"
    loss = CompositeLoss({"l1": (1.0, L1Loss()), "gan": (0.05, _NaNGan(5))})
    with pytest.raises(TrainingDiverged) as info:
        train(tiny_generator(), loss, toy_source(), opts(checkpoint_every=2), checkpoint=ck)
    err = info.value
    assert err.iteration == 5 and err.terms == ["gan"]
    assert "iteration 5: non-finite gan" in str(err)
    kept = load_checkpoint(ck)
    assert kept["iteration"] == 4
    states = [kept["model"], kept["gan"]["discriminator"]]
    assert all(torch.isfinite(v).all() for s in states for v in s.values() if v.is_floating_point())


# --- the stage, killed with SIGKILL mid-run -----------------------------------------------------


def _stage(folder: Path, datasets: Path) -> Path:
    params = {
        "seed": 2,
        "data": {"source": "dir", "dir": str(datasets), "train_sets": ["tr"], "test_sets": ["te"],
                 "metric_weights": False},
        "prepare": {"scales": [2], "patch_size": 32, "stride": 16, "val_images": 1},
        "models": {"tiny": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
        "losses": {"gan": {**gan_spec(), "sgl": 0.1}},
        "experiment": {"models": ["tiny"], "losses": ["gan"], "scales": [2]},
        "train": {"iterations": 80, "batch_size": 2, "lr_patch": 16, "lr": 1e-3, "ema": 0.9,
                  "device": "cpu", "checkpoint_every": 10, "val_every": 40, "log_every": 5},
    }  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def _sgsr(folder: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "sgsr.cli", "--params", str(folder / "params.yaml"), *args],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_sigkill_mid_gan_run_then_rerun_gives_bitwise_both_networks(tmp_path: Path) -> None:
    from conftest import smooth_rgb
    from safetensors.torch import load_file

    from sgsr.config import load_config
    from sgsr.data import prepare
    from sgsr.gan import DISCRIMINATOR_NAME
    from sgsr.imaging import write_image

    datasets = tmp_path / "datasets"
    for i in range(3):
        write_image(datasets / "tr" / f"t{i}.png", smooth_rgb(i, 48, 48))
    write_image(datasets / "te" / "a.png", smooth_rgb(9, 48, 48))
    ref, job = _stage(tmp_path / "ref", datasets), _stage(tmp_path / "job", datasets)
    for folder in (ref, job):
        shutil.copytree(datasets, folder / "data" / "raw")
        prepare.run(load_config(folder / "params.yaml"), root=folder)
    run = "tiny-gan-x2"
    proc = _sgsr(ref, "train", "--run", run)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out

    ck = job / "models/checkpoints" / run / "checkpoint.pt"
    proc = _sgsr(job, "train", "--run", run)
    seen: set[int] = set()  # each checkpoint is a new file (os.replace): count inodes
    deadline = time.monotonic() + 300
    while len(seen) < 2 and proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            seen.add(ck.stat().st_ino)
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert 10 <= load_checkpoint(ck)["iteration"] < 80
    assert not (job / "models" / run / "model.safetensors").exists()

    proc = _sgsr(job, "train", "--run", run)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    for folder, name in (
        ("models", "model.safetensors"),
        ("models/checkpoints", "model-raw.safetensors"),  # a working file, not an output
        ("models", DISCRIMINATOR_NAME),
    ):
        a = load_file(ref / folder / run / name)
        b = load_file(job / folder / run / name)
        assert_same_state(a, b)
    curve = "models/live/tiny-gan-x2/plots/metrics/train/d_loss.tsv"
    assert read_tsv(job / curve) == read_tsv(ref / curve)
