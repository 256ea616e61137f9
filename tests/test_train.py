"""The training loop on toy models and toy data (fast), and the `sgsr train` stage end to end on
a tiny prepared patch store (slow). Everything runs on the CPU, where resume is bitwise exact."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from train_helpers import (
    Interrupted,
    assert_same_state,
    cli,
    crashing_source,
    load_weights,
    opts,
    read_tsv,
    smooth_images,
    stage_dir,
    stage_params,
    tiny_model,
    toy_source,
)

from sgsr.checkpoint import load_checkpoint
from sgsr.config import ConfigError, TrainConfig
from sgsr.losses import build_loss
from sgsr.models import build_model
from sgsr.train import (
    TrainingDiverged,
    fixed_batch,
    lr_factor,
    train,
)

# Two shared cores: one thread per test process (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


# --- the loop on toy data ----------------------------------------------------------------------


def test_overfits_one_fixed_batch():
    hr = smooth_images(0, 2, 32)
    lr = F.avg_pool2d(hr, 2)
    model = tiny_model()
    loss = build_loss({"l1": 1.0})
    with torch.no_grad():
        before = loss(model(lr), hr)[0].item()
    result = train(model, loss, fixed_batch(lr, hr), opts(iterations=300, lr=2e-3))
    with torch.no_grad():
        after = loss(model(lr), hr)[0].item()
    assert result.iterations == 300
    assert after < before / 10, (before, after)


def test_sgl_weight_zero_is_bitwise_pure_l1():
    o = opts(iterations=6)
    l1 = train(tiny_model(), build_loss({"l1": 1.0}), toy_source(), o)
    zero = train(
        tiny_model(),
        build_loss({"l1": 1.0, "sgl": {"weight": 0.0, "operator": "laplacian"}}),
        toy_source(),
        o,
    )
    some = train(tiny_model(), build_loss({"l1": 1.0, "sgl": 0.1}), toy_source(), o)
    assert_same_state(l1.model_state, zero.model_state)
    assert zero.last_losses["sgl"] == 0.0
    differs = [k for k in l1.model_state if not torch.equal(l1.model_state[k], some.model_state[k])]
    assert differs, "a non-zero SGL weight should change the weights"


def test_resume_after_crash_is_bitwise_exact_with_every_feature_on(tmp_path):
    """EMA, warmup + cosine, weight decay, clipping: a crash after 10 updates, resume from the
    checkpoint at 9 (whose half-full logging window must be restored too)."""
    o = opts(
        iterations=12,
        schedule="cosine",
        warmup=3,
        ema=0.9,
        grad_clip=0.5,
        weight_decay=1e-4,
        checkpoint_every=3,
        log_every=2,
        val_every=5,
    )
    loss_spec = {"l1": 1.0, "sgl": {"weight": 0.1, "operator": "hessian"}}
    val = lambda m: float(m(torch.full((1, 3, 8, 8), 0.5)).mean())  # noqa: E731

    ref_live = tmp_path / "ref_live"
    ref = train(
        tiny_model(), build_loss(loss_spec), toy_source(), o,
        checkpoint=tmp_path / "ref.pt", live_dir=ref_live, validate=val, progress=False,
    )  # fmt: skip

    ck = tmp_path / "run.pt"
    live = tmp_path / "live"
    with pytest.raises(Interrupted):
        train(
            tiny_model(), build_loss(loss_spec), crashing_source(10), o,
            checkpoint=ck, live_dir=live, validate=val, progress=False,
        )  # fmt: skip
    assert load_checkpoint(ck)["iteration"] == 9
    assert [s for s, _ in read_tsv(live / "plots/metrics/val/psnr_y.tsv")] == [5, 10]
    # rows logged at 10, after the checkpoint, must not be duplicated by the resumed run
    resumed = train(
        tiny_model(), build_loss(loss_spec), toy_source(), o,
        checkpoint=ck, live_dir=live, validate=val, progress=False,
    )  # fmt: skip
    assert resumed.resumed_from == 9
    assert_same_state(ref.model_state, resumed.model_state)
    assert ref.ema_state is not None and resumed.ema_state is not None
    assert_same_state(ref.ema_state, resumed.ema_state)
    diff = [k for k in ref.ema_state if not torch.equal(ref.ema_state[k], ref.model_state[k])]
    assert diff, "EMA weights should differ from the raw weights"
    for name in ("train/total.tsv", "train/l1.tsv", "train/sgl.tsv", "train/lr.tsv"):
        a = read_tsv(ref_live / "plots" / "metrics" / name)
        b = read_tsv(live / "plots" / "metrics" / name)
        assert a == b, name
        assert [s for s, _ in a] == [2, 4, 6, 8, 10, 12]
    assert [s for s, _ in read_tsv(live / "plots/metrics/val/psnr_y.tsv")] == [5, 10, 12]
    written = {p.relative_to(live).as_posix() for p in live.rglob("*") if p.is_file()}
    assert all(p.startswith("plots/metrics/") and p.endswith(".tsv") for p in written), written


def test_resume_rolls_back_log_rows_written_after_the_checkpoint(tmp_path):
    o = opts(iterations=8, checkpoint_every=4, log_every=1)
    ck, live = tmp_path / "ck.pt", tmp_path / "live"
    with pytest.raises(Interrupted):
        train(tiny_model(), build_loss({"l1": 1.0}), crashing_source(6), o,
              checkpoint=ck, live_dir=live)  # fmt: skip
    total = live / "plots" / "metrics" / "train" / "total.tsv"
    assert [s for s, _ in read_tsv(total)] == [1, 2, 3, 4, 5, 6]
    train(tiny_model(), build_loss({"l1": 1.0}), toy_source(), o, checkpoint=ck, live_dir=live)
    assert [s for s, _ in read_tsv(total)] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_changed_params_start_fresh_with_one_info_line_and_no_warning(tmp_path, caplog):
    """A checkpoint of other params is what every params edit leaves (`dvc exp run -S ...`):
    not a fault, so no warning; one info line says training starts at 0 and why."""
    ck = tmp_path / "ck.pt"
    with warnings.catch_warnings(), caplog.at_level(logging.DEBUG, logger="sgsr.checkpoint"):
        warnings.simplefilter("error")  # a fresh run and a stale checkpoint warn about nothing
        train(tiny_model(), build_loss({"l1": 1.0}), toy_source(), opts(iterations=4),
              checkpoint=ck)  # fmt: skip
        assert not [r for r in caplog.records if r.name == "sgsr.checkpoint"]  # fresh: silent
        changed = opts(iterations=4, lr=5e-4)
        again = train(tiny_model(), build_loss({"l1": 1.0}), toy_source(), changed, checkpoint=ck)
    lines = [r for r in caplog.records if r.name == "sgsr.checkpoint"]
    assert [r.levelno for r in lines] == [logging.INFO]
    assert lines[0].getMessage().startswith(f"starting at iteration 0: {ck} holds a run of other")
    assert load_checkpoint(ck)["fingerprint"] == again.fingerprint  # replaced
    fresh = train(tiny_model(), build_loss({"l1": 1.0}), toy_source(), changed)
    assert again.resumed_from == 0
    assert_same_state(again.model_state, fresh.model_state)
    # bookkeeping keys (checkpoint_every, log_every, ...) do not block a resume
    ck2 = tmp_path / "ck2.pt"
    train(tiny_model(), build_loss({"l1": 1.0}), toy_source(), opts(iterations=4), checkpoint=ck2)
    more = opts(iterations=4, log_every=1, checkpoint_every=2)
    t0 = time.perf_counter()
    done = train(tiny_model(), build_loss({"l1": 1.0}), toy_source(), more, checkpoint=ck2)
    assert done.resumed_from == 4 and done.iterations == 4
    assert time.perf_counter() - t0 < 5


class _NaNAt(nn.Module):
    """Wraps a CompositeLoss; its `sgl` component becomes NaN on call `k` (1-based)."""

    def __init__(self, inner: nn.Module, k: int) -> None:
        super().__init__()
        self.inner, self.k, self.calls = inner, k, 0

    def forward(self, sr, hr):
        self.calls += 1
        total, comps = self.inner(sr, hr)
        if self.calls == self.k:
            comps = {**comps, "sgl": comps["sgl"] * float("nan")}
            total = sum(comps.values())
        return total, comps


def test_nan_loss_raises_with_iteration_and_components_and_keeps_checkpoint(tmp_path):
    spec = {"l1": 1.0, "sgl": 0.1}
    o = opts(iterations=10, checkpoint_every=3)
    ck = tmp_path / "ck.pt"
    with pytest.raises(TrainingDiverged) as info:
        train(tiny_model(), _NaNAt(build_loss(spec), 8), toy_source(), o, checkpoint=ck)
    err = info.value
    assert isinstance(err, ArithmeticError)
    assert err.iteration == 8
    assert "iteration 8" in str(err) and "l1=" in str(err) and "sgl=nan" in str(err)
    kept = load_checkpoint(ck)
    assert kept["iteration"] == 6
    clean = train(tiny_model(), build_loss(spec), toy_source(), opts(iterations=6))
    assert_same_state(kept["model"], clean.model_state)


def test_lr_schedules():
    t = TrainConfig(iterations=100, lr=1.0, schedule="multistep", milestones=(10, 20), gamma=0.5)
    assert [lr_factor(s, t) for s in (0, 9, 10, 19, 20, 99)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    w = TrainConfig(iterations=100, schedule="constant", warmup=4)
    assert [lr_factor(s, w) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    c = TrainConfig(iterations=100, schedule="cosine", warmup=0)
    assert lr_factor(0, c) == 1.0
    assert lr_factor(50, c) == pytest.approx(0.5)
    assert lr_factor(100, c) == pytest.approx(0.0)
    assert lr_factor(25, c) > lr_factor(75, c)


def test_loop_logs_lr_actually_used(tmp_path):
    o = opts(iterations=4, schedule="multistep", milestones=(2,), gamma=0.1, log_every=1)
    train(tiny_model(), build_loss({"l1": 1.0}), toy_source(), o, live_dir=tmp_path / "live")
    rows = read_tsv(tmp_path / "live/plots/metrics/train/lr.tsv")
    assert rows == [(1, 1e-3), (2, 1e-3), (3, pytest.approx(1e-4)), (4, pytest.approx(1e-4))]


# --- params validation ------------------------------------------------------------------------


def bad_params() -> dict:
    return {
        "models": {"net": {"arch": "no_such_net", "n_feats": 8}},
        "losses": {"l1": {"l1": 1.0}},
        "experiment": {"models": ["net"], "losses": ["l1"], "scales": [5]},
        "prepare": {"scales": [4]},
        "train": {"lr": -1.0, "batch_size": 0},
    }


def test_bad_params_fail_with_one_message_naming_every_bad_key():
    from sgsr.preflight import parse

    with pytest.raises(ConfigError) as info:
        parse(bad_params())
    msg = str(info.value)
    for key in ("models.net.arch", "experiment.scales", "train.lr", "train.batch_size"):
        assert key in msg, f"{key} missing from: {msg}"


def test_bad_params_stop_sgsr_train_before_any_work(tmp_path, monkeypatch, capsys):
    from sgsr.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad_params()))
    assert main(["train", "--run", "net-l1-x5"]) == 2
    err = capsys.readouterr().err
    assert "train.lr" in err and "train.batch_size" in err and "models.net.arch" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


# --- the pipeline stage on a real patch store --------------------------------------------------


@pytest.mark.slow
def test_stage_writes_weights_card_and_curves_and_rerun_is_quick(tmp_path, prepared, monkeypatch):
    from sgsr.config import load_config
    from sgsr.train import run

    tmp = stage_dir(tmp_path, prepared, ema=0.9)
    monkeypatch.chdir(tmp)
    cfg = load_config("params.yaml")
    out = run(cfg, "tiny-sgl-x2")
    assert out == Path("models/tiny-sgl-x2/model.safetensors")
    card = json.loads(Path("models/tiny-sgl-x2/run.json").read_text())
    assert card["arch"] == "edsr_baseline" and card["scale"] == 2 and card["iterations"] == 40
    assert card["loss_spec"] == {"l1": 1.0, "sgl": 0.1} and card["seed"] == 3
    # the raw weights are a working file beside the checkpoint, not part of the stage output
    raw_file = "models/checkpoints/tiny-sgl-x2/model-raw.safetensors"
    assert card["weights"] == "ema" and card["raw_weights"] == raw_file
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.safetensors", "run.json"]
    assert 10 < card["val_psnr_y"] < 60
    ema, raw = load_weights(out), load_weights(Path(raw_file))
    from safetensors import safe_open

    for name, kind in ((str(out), "ema"), (raw_file, "raw")):
        with safe_open(name, "pt") as fh:
            meta = fh.metadata()
        assert meta["sgsr_weights"] == kind
        embedded = json.loads(meta["sgsr_run"])
        assert embedded["arch"] == "edsr_baseline" and embedded["scale"] == 2
        assert embedded["model_kwargs"] == {"n_resblocks": 1, "n_feats": 8}
        assert "wall_time_s" not in embedded
    model = build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)
    model.load_state_dict(ema)  # strict: the file is a plain state dict
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)
    metrics = Path("models/live/tiny-sgl-x2/plots/metrics")
    total = read_tsv(metrics / "train/total.tsv")
    assert [s for s, _ in total] == list(range(5, 41, 5))
    assert total[-1][1] < total[0][1]
    assert [s for s, _ in read_tsv(metrics / "val/psnr_y.tsv")] == [20, 40]
    assert {p.name for p in (metrics / "train").iterdir()} == {
        "total.tsv", "l1.tsv", "sgl.tsv", "lr.tsv",
    }  # fmt: skip
    assert load_checkpoint(Path("models/checkpoints/tiny-sgl-x2/checkpoint.pt"))["iteration"] == 40
    # a forced rerun of the finished stage (DVC deletes its outputs first) reuses the checkpoint
    # and the curves beside it: same weights and curves, no training
    before = out.read_bytes()
    curves = {p: p.read_bytes() for p in sorted(metrics.rglob("*.tsv"))}
    shutil.rmtree("models/tiny-sgl-x2")
    shutil.rmtree("models/live/tiny-sgl-x2")
    t0 = time.perf_counter()
    run(cfg, "tiny-sgl-x2")
    assert time.perf_counter() - t0 < 10
    assert out.read_bytes() == before
    assert {p: p.read_bytes() for p in sorted(metrics.rglob("*.tsv"))} == curves


@pytest.mark.slow
def test_sigkill_then_rerun_gives_bitwise_the_uninterrupted_weights(tmp_path, prepared):
    ref = stage_dir(tmp_path / "ref", prepared, iterations=120, checkpoint_every=10)
    job = stage_dir(tmp_path / "job", prepared, iterations=120, checkpoint_every=10)
    proc = cli(ref, "train", "--run", "tiny-sgl-x2")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out

    ck = job / "models/checkpoints/tiny-sgl-x2/checkpoint.pt"
    proc = cli(job, "train", "--run", "tiny-sgl-x2")
    seen: set[int] = set()  # each checkpoint is a new file (os.replace): count inodes
    deadline = time.monotonic() + 120
    while len(seen) < 2 and proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            seen.add(ck.stat().st_ino)
        time.sleep(0.005)
    time.sleep(0.05)  # into the next checkpoint interval, so some log rows follow the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = load_checkpoint(ck)["iteration"]
    assert 10 <= killed_at < 120
    assert not (job / "models/tiny-sgl-x2/model.safetensors").exists()
    # the curves grow beside the checkpoint; the stage's curves output is written at the end
    assert (job / "models/checkpoints/tiny-sgl-x2/live/plots/metrics/train/total.tsv").is_file()
    assert not (job / "models/live/tiny-sgl-x2").exists()

    proc = cli(job, "train", "--run", "tiny-sgl-x2")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    a = load_weights(ref / "models/tiny-sgl-x2/model.safetensors")
    b = load_weights(job / "models/tiny-sgl-x2/model.safetensors")
    assert_same_state(a, b)
    card = json.loads((job / "models/tiny-sgl-x2/run.json").read_text())
    assert (
        card["params_hash"]
        == json.loads((ref / "models/tiny-sgl-x2/run.json").read_text())["params_hash"]
    )
    live = "models/live/tiny-sgl-x2/plots/metrics/train/total.tsv"
    assert read_tsv(job / live) == read_tsv(ref / live)


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_mixed_precision_on_cpu_trains_and_resumes_exactly(tmp_path, amp):
    """fp16 carries a GradScaler whose state must survive the checkpoint; bf16 has none."""
    o = opts(iterations=8, amp=amp, checkpoint_every=4)
    spec = {"l1": 1.0, "sgl": 0.1}
    ref = train(tiny_model(), build_loss(spec), toy_source(), o)
    ck = tmp_path / "ck.pt"
    with pytest.raises(Interrupted):
        train(tiny_model(), build_loss(spec), crashing_source(6), o, checkpoint=ck)
    saved = load_checkpoint(ck)
    assert bool(saved["scaler"]) == (amp == "fp16")
    resumed = train(tiny_model(), build_loss(spec), toy_source(), o, checkpoint=ck)
    assert resumed.resumed_from == 4
    assert_same_state(ref.model_state, resumed.model_state)
    assert ref.last_losses["total"] < 1.0


def test_short_batch_source_is_a_clear_error():
    hr = smooth_images(0, 1, 16)
    batches = [(F.avg_pool2d(hr, 2), hr)] * 3
    with pytest.raises(ValueError, match="ran out after iteration 3"):
        train(tiny_model(), build_loss({"l1": 1.0}), batches, opts(iterations=5))


def test_weights_files_are_byte_reproducible(tmp_path):
    """safetensors itself writes metadata keys in random order; ours are canonical."""
    from safetensors.torch import load_file

    from sgsr.weights import save_safetensors

    state = tiny_model().state_dict()
    meta = {"format": "pt", "sgsr_run": '{"arch": "x"}', "sgsr_weights": "raw", "z": "1"}
    blobs = set()
    for i in range(6):
        save_safetensors(state, tmp_path / f"w{i}.safetensors", meta)
        blobs.add((tmp_path / f"w{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    assert_same_state(load_file(str(tmp_path / "w0.safetensors")), state)


def test_zero_iterations_writes_the_initial_weights_as_they_are(tmp_path, prepared, monkeypatch):
    """train.iterations: 0 is a zero-shot run: the warm-start weights, untouched, evaluated by
    the same infer/evaluate stages as every trained run."""
    from safetensors.torch import save_file

    from sgsr.config import load_config
    from sgsr.train import run

    model = build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)
    start = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    save_file(start, str(tmp_path / "start.safetensors"))
    tmp = stage_dir(tmp_path / "p", prepared, iterations=0, init_from="../start.safetensors")
    monkeypatch.chdir(tmp)
    out = run(load_config("params.yaml"), "tiny-l1-x2")
    got = load_weights(out)
    assert got.keys() == start.keys() and all(torch.equal(got[k], start[k]) for k in start)
    card = json.loads(Path("models/tiny-l1-x2/run.json").read_text())
    assert card["iterations"] == 0
    live = Path("models/live/tiny-l1-x2")
    assert live.is_dir() and not any(live.iterdir())  # DVC's output exists, empty


def test_negative_iterations_are_refused_naming_zero_shot(tmp_path) -> None:
    from sgsr.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"train\.iterations: must be an integer >= 0 \(0 = "):
        load_config(stage_params(tmp_path, iterations=-1))
