"""The GPU trainer options and their numerical contracts.

On the CPU: fused and foreach Adam give the eager for-loop step's losses to tolerance; the
step body that a CUDA graph records is bitwise the eager step; the defaults leave CPU training
(and every run's fingerprint) exactly as before; resume stays exact with the new options; a
capture the device cannot do falls back with a message; runs trained together in one process
equal runs trained alone. Tests marked ``cuda`` need a GPU and are skipped without one;
``benchmarks/gpu_check.py`` runs them on a GPU machine.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor
from train_helpers import Interrupted, crashing_source

from sgsr.checkpoint import options_fingerprint
from sgsr.config import ConfigError, TrainConfig, parse_config
from sgsr.data.prefetch import PrefetchIterator, prefetched
from sgsr.losses import build_loss
from sgsr.models import build_model
from sgsr.optim import IMPLEMENTATION_KEYS, adam_kwargs, implementation
from sgsr.step import build_optimizer, build_state, train_step
from sgsr.step_capture import CaptureFallbackWarning, GraphStep, make_step
from sgsr.train import train

CUDA = torch.cuda.is_available()


def cuda(test):
    """Marked ``cuda`` (what benchmarks/gpu_check.py selects), skipped without a GPU, run in
    full fp32 (no TF32), so that comparisons measure the implementations, not TF32 rounding."""
    skip = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (benchmarks/gpu_check.py)")
    return pytest.mark.cuda(skip(pytest.mark.usefixtures("_no_tf32")(test)))


@pytest.fixture
def _no_tf32():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def assert_same_run(got: dict[str, Tensor], ref: dict[str, Tensor], frac: float) -> None:
    """`got` ended where `ref` did, relative to how far training moved the weights from their
    initialisation: mean |got - ref| <= frac * mean |ref - init| over all weights. (Adam moves
    a weight whose gradient is mostly noise by about lr per step in either direction, so
    element-wise tolerances would fail on GPU noise alone.)"""
    init = {k: v.to(torch.float32) for k, v in tiny_model().state_dict().items()}
    diff = sum(float((got[k].float() - ref[k].float()).abs().sum()) for k in ref)
    moved = sum(float((ref[k].float() - init[k]).abs().sum()) for k in ref)
    assert moved > 0 and diff <= frac * moved, (diff, moved)


EVERY_FEATURE = dict(
    schedule="cosine", warmup=3, ema=0.9, grad_clip=0.02, weight_decay=1e-4, log_every=2
)
SGL = {"l1": 1.0, "sgl": {"weight": 0.1, "operator": "hessian"}}


# Two shared cores: one thread per test process (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def opts(**kw) -> TrainConfig:
    base = dict(iterations=12, batch_size=2, lr=1e-3, schedule="constant", device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def batches(start: int = 0, n: int = 2, lr_size: int = 8, scale: int = 2):
    """Batch i is a pure function of i (smooth random images and their 2x average pool)."""
    for i in itertools.count(start):
        g = torch.Generator().manual_seed(1000 + i)
        hr = F.interpolate(
            torch.rand(n, 3, 4, 4, generator=g), size=(lr_size * scale,) * 2, mode="bicubic"
        ).clamp(0, 1)
        yield F.avg_pool2d(hr, scale), hr


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)


def run_steps(o: TrainConfig, steps: int, spec=SGL, step_factory=None, device="cpu"):
    """(per-step logged values, final weights, EMA) of `steps` updates from the same start."""
    state = build_state(tiny_model().to(device), build_loss(spec), o)
    step = step_factory(state) if step_factory else make_step(state)
    logged = [step(lr, hr) for lr, hr in itertools.islice(batches(), steps)]
    ema = state.ema.state_dict() if state.ema is not None else None
    cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
    return logged, cpu(state.module.state_dict()), cpu(ema) if ema else None


def assert_same(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


# --- optimizer implementation -------------------------------------------------------------------


def test_auto_is_fused_on_cuda_and_torch_default_on_cpu():
    assert adam_kwargs("auto", torch.device("cpu")) == {}
    assert adam_kwargs("auto", torch.device("cuda:0")) == {"fused": True}
    assert adam_kwargs("foreach", torch.device("cpu")) == {"foreach": True, "fused": False}
    assert adam_kwargs("fused", torch.device("cuda")) == {"fused": True}
    with pytest.raises(ValueError, match=r"train\.optimizer_impl.*'fast'.*auto, for_loop"):
        adam_kwargs("fast", torch.device("cpu"))


def test_default_cpu_optimizer_is_the_one_the_trainer_always_built():
    """Same flags as a plain torch.optim.Adam, so CPU runs and their checkpoints are unchanged."""
    model = tiny_model()
    o = opts(betas=(0.9, 0.999), weight_decay=1e-4)
    ours = build_optimizer(model, o)
    plain = torch.optim.Adam(
        model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay
    )
    strip = lambda g: {k: v for k, v in g.items() if k != "params"}  # noqa: E731
    assert strip(ours.param_groups[0]) == strip(plain.param_groups[0])
    assert implementation(ours) == "for_loop"
    assert implementation(build_optimizer(model, opts(optimizer_impl="fused"))) == "fused"


def test_implementation_keys_are_not_part_of_the_fingerprint():
    """The study's checkpoints and weights metadata (params_hash) stay valid: the defaults'
    fingerprint is the value the trainer computed before these keys existed."""
    assert options_fingerprint(TrainConfig(), 0) == "f417e869391e0f41"
    changed = TrainConfig(
        optimizer_impl="fused", capture="cuda_graph", prefetch=4, runs_per_process=5
    )
    assert options_fingerprint(changed, 0) == options_fingerprint(TrainConfig(), 0)
    assert set(IMPLEMENTATION_KEYS) == {"optimizer_impl", "capture", "prefetch", "runs_per_process"}
    assert options_fingerprint(TrainConfig(lr=1e-3), 0) != options_fingerprint(TrainConfig(), 0)


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_fused_and_foreach_match_the_for_loop_step_over_many_iterations(impl):
    """Same losses to tolerance over 40 updates with every feature on (EMA, clipping, weight
    decay, cosine warm-up), and the same final weights to tolerance."""
    ref, ref_w, ref_ema = run_steps(opts(iterations=40, **EVERY_FEATURE), 40)
    got, got_w, got_ema = run_steps(opts(iterations=40, optimizer_impl=impl, **EVERY_FEATURE), 40)
    assert [r["lr"] for r in ref] == [g["lr"] for g in got]
    for i, (r, g) in enumerate(zip(ref, got, strict=True)):
        for k in r:
            assert math.isclose(r[k], g[k], rel_tol=1e-4, abs_tol=1e-7), (i, k, r[k], g[k])
    assert ref[-1]["total"] < ref[0]["total"]  # it trains
    assert_same_run(got_w, ref_w, 0.01)  # the criterion the GPU tests use
    for k in ref_w:
        torch.testing.assert_close(got_w[k], ref_w[k], rtol=1e-4, atol=1e-5)
    assert ref_ema is not None and got_ema is not None
    for k in ref_ema:
        torch.testing.assert_close(got_ema[k], ref_ema[k], rtol=1e-4, atol=1e-5)


def test_a_checkpoint_resumes_in_another_implementation(tmp_path):
    """A checkpoint written by the for-loop Adam (the CPU, the study) resumed with fused Adam
    keeps the fused kernel (torch would adopt the saved flags) and trains on from it."""
    o = opts(iterations=8, checkpoint_every=4, **EVERY_FEATURE)
    ck = tmp_path / "ck.pt"
    train(tiny_model(), build_loss(SGL), batches, dataclasses.replace(o, iterations=4),
          checkpoint=ck)  # fmt: skip
    fused = opts(optimizer_impl="fused", **EVERY_FEATURE)
    state = build_state(tiny_model(), build_loss(SGL), fused)
    from sgsr.checkpoint import load_checkpoint

    saved = load_checkpoint(ck)["optimizer"]
    assert saved["param_groups"][0]["fused"] is None
    state.optimizer.load_state_dict(saved)
    assert implementation(state.optimizer) == "fused"
    first = next(iter(state.optimizer.state.values()))
    assert float(first["step"]) == 4.0
    # the reverse: a fused state dict into the for-loop optimizer
    back = build_state(tiny_model(), build_loss(SGL), opts(**EVERY_FEATURE))
    back.optimizer.load_state_dict(state.optimizer.state_dict())
    assert implementation(back.optimizer) == "for_loop"
    train_step(back, *next(batches(4)))  # a step in the for-loop kernel runs


# --- the captured step's math -------------------------------------------------------------------


@pytest.mark.parametrize("spec", [{"l1": 1.0}, SGL], ids=["l1", "sgl"])
def test_the_body_a_graph_records_is_bitwise_the_eager_step(spec):
    """GraphStep without capture runs exactly what a CUDA graph records (step_body) with the
    graph's bookkeeping (lr from the scheduler's formula, deferred loss read): on the CPU it
    must give train_step's weights, EMA and logged values bit for bit."""
    o = opts(iterations=10, **EVERY_FEATURE)
    ref, ref_w, ref_ema = run_steps(o, 10, spec=spec, step_factory=lambda s: (
        lambda lr, hr: train_step(s, lr, hr)))  # fmt: skip
    got, got_w, got_ema = run_steps(o, 10, spec=spec, step_factory=lambda s: GraphStep(s, False))
    assert ref == got
    assert_same(ref_w, got_w)
    assert ref_ema is not None and got_ema is not None
    assert_same(ref_ema, got_ema)


def test_a_learning_rate_tensor_is_filled_by_the_scheduler_and_saved_as_a_float():
    """What a captured step does with the rate, on the CPU (fused Adam takes a tensor rate
    there too): the scheduler fills the tensor in place (a graph keeps its address), the
    logged rate is the eager float, the update matches the float rate's to float32 rounding,
    and the optimizer's state dict (the checkpoint) holds a float."""
    from sgsr.step_capture import prepare_capturable

    o = opts(iterations=12, optimizer_impl="fused", **EVERY_FEATURE)
    ref, ref_w, _ = run_steps(o, 12, step_factory=lambda s: GraphStep(s, False))
    tensors = []

    def with_tensor_lr(state):
        prepare_capturable(state.optimizer, state.device, capturable=False)
        tensors.append(state.optimizer.param_groups[0]["lr"])
        return GraphStep(state, False)

    got, got_w, _ = run_steps(o, 12, step_factory=with_tensor_lr)
    assert [r["lr"] for r in ref] == [g["lr"] for g in got]
    for r, g in zip(ref, got, strict=True):
        assert math.isclose(r["total"], g["total"], rel_tol=1e-5), (r, g)
    assert_same_run(got_w, ref_w, 1e-3)
    state = build_state(tiny_model(), build_loss(SGL), o)
    with_tensor_lr(state)
    lr = state.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, Tensor) and lr is tensors[-1]
    with warnings.catch_warnings():  # a scheduler step without an update, on purpose
        warnings.simplefilter("ignore", UserWarning)
        state.scheduler.step()
    assert state.optimizer.param_groups[0]["lr"] is lr  # filled in place, not replaced
    assert float(lr) == pytest.approx(current_lr_of(state), rel=1e-6)
    saved = state.optimizer.state_dict()["param_groups"][0]["lr"]
    assert isinstance(saved, float) and saved == pytest.approx(float(lr))


def current_lr_of(state) -> float:
    from sgsr.step_capture import current_lr

    return current_lr(state)


def test_warmup_updates_are_undone_exactly():
    """Capture warms up with real updates and must put every tensor back: snapshot/restore
    (on the CPU, on a fresh optimizer whose state the warm-up creates) leaves the next
    updates bitwise those of a run without warm-up."""
    from sgsr.step_capture import restore, snapshot, step_body

    o = opts(iterations=6, **EVERY_FEATURE)
    ref, ref_w, _ = run_steps(o, 6, step_factory=lambda s: GraphStep(s, False))

    def warmed(state):
        lr, hr = next(batches(50))
        saved = snapshot(state)
        for _ in range(3):
            step_body(state, lr, hr)
        assert any(not torch.equal(a, b) for a, b in zip(saved[0], saved[1], strict=False))
        restore(state, saved)
        return GraphStep(state, False)

    got, got_w, _ = run_steps(o, 6, step_factory=warmed)
    assert ref == got
    assert_same(ref_w, got_w)


def test_cuda_graph_on_cpu_falls_back_to_the_eager_step_and_says_why():
    o = opts(iterations=4, capture="cuda_graph")
    with pytest.warns(CaptureFallbackWarning, match=r"train\.capture: cuda_graph needs a CUDA"):
        got, got_w, _ = run_steps(o, 4)
    ref, ref_w, _ = run_steps(opts(iterations=4), 4)
    assert ref == got
    assert_same(ref_w, got_w)


def test_capture_with_fp16_is_a_config_error_naming_the_keys():
    raw = {"train": {"capture": "cuda_graph", "amp": "fp16", "optimizer_impl": "turbo",
                     "prefetch": -1, "runs_per_process": 0}}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    msg = str(info.value)
    assert "train.capture: cannot run with train.amp: fp16" in msg
    assert "train.optimizer_impl: must be one of auto, for_loop, foreach, fused, got 'turbo'" in msg
    assert "train.prefetch: must be >= 0" in msg and "train.runs_per_process" in msg
    with pytest.raises(ConfigError, match=r"train\.capture: must be one of off, cuda_graph"):
        parse_config({"train": {"capture": "graph"}})


# --- exact resume with the new options ----------------------------------------------------------


def _dying(die_at: int):
    """`batches` with a crash when iteration `die_at` asks for its batch."""
    return crashing_source(die_at, batches)


def test_resume_after_a_crash_is_bitwise_exact_with_fused_adam_and_prefetch(tmp_path):
    o = opts(iterations=12, checkpoint_every=3, optimizer_impl="fused", prefetch=2,
             **EVERY_FEATURE)  # fmt: skip
    source = prefetched(lambda s: batches(s), o.prefetch)
    ref = train(tiny_model(), build_loss(SGL), source, o, checkpoint=tmp_path / "ref.pt")
    ck = tmp_path / "run.pt"
    with pytest.raises(Interrupted):
        train(tiny_model(), build_loss(SGL), prefetched(_dying(10), 2), o, checkpoint=ck)
    resumed = train(tiny_model(), build_loss(SGL), source, o, checkpoint=ck)
    assert resumed.resumed_from == 9
    assert_same(ref.model_state, resumed.model_state)
    assert ref.ema_state is not None and resumed.ema_state is not None
    assert_same(ref.ema_state, resumed.ema_state)


# --- prefetch -----------------------------------------------------------------------------------


def test_prefetch_yields_the_source_in_order_from_any_start():
    src = lambda s: batches(s, n=1, lr_size=4)  # noqa: E731
    for start in (0, 7):
        want = list(itertools.islice(src(start), 5))
        got = list(itertools.islice(prefetched(src, 3)(start), 5))
        for (a, b), (c, d) in zip(want, got, strict=True):
            assert torch.equal(a, c) and torch.equal(b, d)
    assert prefetched(src, 0) is src


def test_prefetch_raises_the_source_error_at_its_item_and_ends_cleanly():
    def src(start: int):
        yield from itertools.islice(batches(start, n=1, lr_size=4), 2)
        raise OSError("patch store unreadable")

    it = prefetched(src, 4)(0)
    assert len([next(it), next(it)]) == 2
    with pytest.raises(OSError, match="patch store unreadable"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    short = prefetched(lambda s: iter([(torch.zeros(1), torch.zeros(1))]), 2)(0)
    assert len(list(short)) == 1
    with pytest.raises(ValueError, match="depth must be >= 1"):
        PrefetchIterator(iter([]), 0, pin=False)


def test_closing_a_prefetch_stops_its_thread_even_with_a_full_queue():
    it = prefetched(lambda s: batches(s, n=1, lr_size=4), 2)(0)
    next(it)
    deadline = time.monotonic() + 5
    while it._queue.qsize() < 2 and time.monotonic() < deadline:  # the producer is now blocked
        time.sleep(0.01)
    it.close()
    assert not it._thread.is_alive()
    assert not [t for t in threading.enumerate() if t is it._thread]


# --- several runs in one process ----------------------------------------------------------------


def _matrix(tmp: Path, **train_kw) -> Path:
    from train_helpers import stage_params

    tmp.mkdir(parents=True, exist_ok=True)
    path = stage_params(tmp, **train_kw)
    raw = yaml.safe_load(path.read_text())
    raw["experiment"]["replicates"] = [7]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_companions_are_the_next_runs_that_still_need_training(tmp_path):
    from sgsr.config import load_config
    from sgsr.gpu_share import companions, is_trained
    from sgsr.train import params_hash

    cfg = load_config(_matrix(tmp_path, runs_per_process=3))
    names = [r.name for r in cfg.runs]
    assert names == ["tiny-l1-x2", "tiny-l1-x2-s7", "tiny-sgl-x2", "tiny-sgl-x2-s7"]
    assert companions(cfg, "tiny-l1-x2", tmp_path) == ["tiny-l1-x2-s7", "tiny-sgl-x2"]
    assert companions(cfg, "tiny-sgl-x2", tmp_path) == ["tiny-sgl-x2-s7", "tiny-l1-x2"]
    # tiny-l1-x2-s7 finished with these params: skipped; with other params: trained again
    spec = cfg.run("tiny-l1-x2-s7")
    card = tmp_path / "models" / spec.name / "run.json"
    card.parent.mkdir(parents=True)
    (card.parent / "model.safetensors").write_bytes(b"x")
    good = {"params_hash": params_hash(cfg, spec, tmp_path / "data/prepared/x2/patches"),
            "iterations": cfg.train.iterations}  # fmt: skip
    card.write_text(json.dumps(good))
    assert is_trained(cfg, spec.name, tmp_path)
    assert companions(cfg, "tiny-l1-x2", tmp_path) == ["tiny-sgl-x2", "tiny-sgl-x2-s7"]
    card.write_text(json.dumps({**good, "params_hash": "other"}))
    assert not is_trained(cfg, spec.name, tmp_path)
    one = load_config(_matrix(tmp_path / "one", runs_per_process=1))
    assert companions(one, "tiny-l1-x2", tmp_path) == []


def _rows(tsv: Path) -> list[dict[str, str]]:
    with open(tsv, newline="") as fh:
        rows = [{k: v for k, v in r.items() if k != "timestamp"} for r in csv.DictReader(
            fh, delimiter="\t")]  # fmt: skip
    assert rows
    return rows


def test_runs_trained_together_equal_runs_trained_alone(tmp_path, monkeypatch):
    """`sgsr train --run A` with runs_per_process 2 trains A and the next run at once, in two
    threads of one process; each gets bitwise the weights and curves it gets alone, and the
    companion's own stage then only writes its weights from the complete checkpoint."""
    from train_helpers import build_store

    from sgsr.config import load_config
    from sgsr.gpu_share import run as run_together
    from sgsr.train import run as run_alone

    build_store(tmp_path / "store")
    store = tmp_path / "store" / "data"
    kw = dict(iterations=30, checkpoint_every=10, val_every=15, log_every=5, ema=0.9)
    folders = {}
    for name, per in (("alone", 1), ("together", 2)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "data").symlink_to(store, target_is_directory=True)
        folders[name] = folder
        _matrix(folder, runs_per_process=per, **kw)
    monkeypatch.chdir(folders["alone"])
    cfg = load_config("params.yaml")
    for name in ("tiny-l1-x2", "tiny-l1-x2-s7"):
        run_alone(cfg, name)
    monkeypatch.chdir(folders["together"])
    cfg = load_config("params.yaml")
    run_together(cfg, "tiny-l1-x2")
    companion = folders["together"] / "models/checkpoints/tiny-l1-x2-s7/checkpoint.pt"
    from sgsr.checkpoint import load_checkpoint

    assert load_checkpoint(companion)["iteration"] == 30  # trained beside tiny-l1-x2
    before = companion.stat()
    run_together(cfg, "tiny-l1-x2-s7")  # its own stage: nothing left to train
    after = companion.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # and, having nothing to train itself, it starts no other run either
    assert not (folders["together"] / "models/checkpoints/tiny-sgl-x2").exists()
    from safetensors.torch import load_file

    for name in ("tiny-l1-x2", "tiny-l1-x2-s7"):
        for f in (f"{name}/model.safetensors", f"checkpoints/{name}/model-raw.safetensors"):
            a = (folders["alone"] / "models" / f).read_bytes()
            b = (folders["together"] / "models" / f).read_bytes()
            assert a == b, f
        tsv = f"models/live/{name}/plots/metrics/train/total.tsv"
        assert _rows(folders["alone"] / tsv) == _rows(folders["together"] / tsv)
    w = load_file(str(folders["together"] / "models/tiny-l1-x2/model.safetensors"))
    w7 = load_file(str(folders["together"] / "models/tiny-l1-x2-s7/model.safetensors"))
    assert any(not torch.equal(w[k], w7[k]) for k in w)  # different seeds, different nets


def test_a_failing_companion_warns_and_the_main_run_still_succeeds(tmp_path, monkeypatch):
    """A companion that cannot train (here: its checkpoint is not a checkpoint) is reported
    as a warning naming it; the stage's own run is trained and written."""
    from train_helpers import build_store

    from sgsr.config import load_config
    from sgsr.gpu_share import CompanionRunWarning
    from sgsr.gpu_share import run as run_together

    build_store(tmp_path)
    _matrix(tmp_path, runs_per_process=2, iterations=3, checkpoint_every=3, val_every=3)
    bad = tmp_path / "models/checkpoints/tiny-l1-x2-s7/checkpoint.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = run_together(load_config("params.yaml"), "tiny-l1-x2")
    assert out.name == "model.safetensors" and (tmp_path / out).is_file()
    msgs = [str(w.message) for w in seen if issubclass(w.category, CompanionRunWarning)]
    assert len(msgs) == 1 and "tiny-l1-x2-s7, trained beside tiny-l1-x2, failed" in msgs[0]
    assert not (tmp_path / "models/tiny-l1-x2-s7/model.safetensors").exists()


# --- torch.compile (CPU: slow, a C++ compiler builds the kernels) ---------------------------------


@pytest.mark.slow
def test_compiled_step_matches_the_eager_step_on_cpu():
    pytest.importorskip("torch._inductor")
    o = opts(iterations=5, capture="compile")
    got, got_w, _ = run_steps(o, 5, spec={"l1": 1.0})
    ref, ref_w, _ = run_steps(opts(iterations=5), 5, spec={"l1": 1.0})
    for r, g in zip(ref, got, strict=True):
        assert math.isclose(r["total"], g["total"], rel_tol=1e-4), (r, g)
    for k in ref_w:
        torch.testing.assert_close(got_w[k], ref_w[k], rtol=1e-4, atol=1e-5)


# --- on a GPU (skipped here; benchmarks/gpu_check.py runs them) ---------------------------------


def _gpu_opts(**kw) -> TrainConfig:
    """GPU options: fp32, channels_last, cuDNN free to pick kernels; `kw` overrides any."""
    return opts(**{"device": "cuda", "amp": "off", "channels_last": True,
                   "deterministic": False, **kw})  # fmt: skip


@cuda
@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_cuda_optimizer_impls_match_the_for_loop(impl):
    ref, ref_w, _ = run_steps(_gpu_opts(iterations=30, optimizer_impl="for_loop",
                                        **EVERY_FEATURE), 30, device="cuda")  # fmt: skip
    got, got_w, _ = run_steps(_gpu_opts(iterations=30, optimizer_impl=impl, **EVERY_FEATURE),
                              30, device="cuda")  # fmt: skip
    for r, g in zip(ref, got, strict=True):
        assert math.isclose(r["total"], g["total"], rel_tol=1e-3, abs_tol=1e-6), (r, g)
    assert_same_run(got_w, ref_w, 0.01)


@cuda
@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_cuda_graph_step_matches_the_eager_fused_step(amp):
    """Whole-step capture: same losses to tolerance over 30 updates as the eager fused step
    (every feature on), the learning rate logged the same, and the graph really replays."""
    kw = dict(iterations=30, optimizer_impl="fused", amp=amp, **EVERY_FEATURE)
    ref, ref_w, ref_ema = run_steps(_gpu_opts(**kw), 30, device="cuda")
    steps: list[GraphStep] = []

    def graph(state):
        steps.append(GraphStep(state))
        return steps[-1]

    got, got_w, got_ema = run_steps(_gpu_opts(capture="cuda_graph", **kw), 30,
                                    step_factory=graph, device="cuda")  # fmt: skip
    assert steps[0].graph is not None
    tol = 1e-3 if amp == "off" else 2e-2
    assert [r["lr"] for r in ref] == [g["lr"] for g in got]
    for r, g in zip(ref, got, strict=True):
        assert math.isclose(r["total"], g["total"], rel_tol=tol, abs_tol=1e-5), (r, g)
    assert_same_run(got_w, ref_w, 0.02 if amp == "off" else 0.1)
    assert ref_ema is not None and got_ema is not None
    assert_same_run(got_ema, ref_ema, 0.02 if amp == "off" else 0.1)


@cuda
def test_cuda_graph_checkpoint_resumes_eagerly_and_in_a_graph(tmp_path):
    """A checkpoint written from a captured run holds a float learning rate and resumes both
    in the eager step and in a new capture, ending where the uninterrupted graph run ends."""
    o = _gpu_opts(iterations=12, checkpoint_every=3, capture="cuda_graph", **EVERY_FEATURE)
    ref = train(tiny_model(), build_loss(SGL), lambda s: batches(s), o,
                checkpoint=tmp_path / "ref.pt")  # fmt: skip
    from sgsr.checkpoint import load_checkpoint

    saved = load_checkpoint(tmp_path / "ref.pt")
    assert isinstance(saved["optimizer"]["param_groups"][0]["lr"], float)
    ck = tmp_path / "run.pt"
    with pytest.raises(Interrupted):
        train(tiny_model(), build_loss(SGL), _dying(7), o, checkpoint=ck)
    resumed = train(tiny_model(), build_loss(SGL), lambda s: batches(s), o, checkpoint=ck)
    assert resumed.resumed_from == 6
    assert_same_run(resumed.model_state, ref.model_state, 0.02)
    eager = dataclasses.replace(o, capture="off")
    ck2 = tmp_path / "run2.pt"
    with pytest.raises(Interrupted):
        train(tiny_model(), build_loss(SGL), _dying(7), o, checkpoint=ck2)
    back = train(tiny_model(), build_loss(SGL), batches, eager, checkpoint=ck2)
    assert back.resumed_from == 6


@cuda
def test_cuda_compiled_step_matches_the_eager_step():
    kw = dict(iterations=8, optimizer_impl="fused")
    ref, ref_w, _ = run_steps(_gpu_opts(**kw), 8, device="cuda")
    got, got_w, _ = run_steps(_gpu_opts(capture="compile", **kw), 8, device="cuda")
    for r, g in zip(ref, got, strict=True):
        assert math.isclose(r["total"], g["total"], rel_tol=1e-3, abs_tol=1e-5), (r, g)
    assert_same_run(got_w, ref_w, 0.02)


@cuda
def test_cuda_prefetch_pins_batches():
    it = prefetched(lambda s: batches(s), 2, pin=True)(0)
    lr, hr = next(it)
    assert lr.is_pinned() and hr.is_pinned()
    it.close()


@cuda
def test_cuda_runs_in_threads_with_graphs_match_runs_alone():
    """Two captured runs trained at once in two threads, each on its own stream, end where
    each ends alone (to tolerance: GPU kernels are not bitwise reproducible)."""
    from sgsr.step_capture import set_first_step_hook

    o = _gpu_opts(iterations=20, capture="cuda_graph", optimizer_impl="fused", **EVERY_FEATURE)
    alone = [run_steps(o, 20, device="cuda")[1] for _ in range(2)]
    out: dict[int, dict[str, Tensor]] = {}

    def work(i: int, ready: threading.Event) -> None:
        torch.cuda.set_stream(torch.cuda.Stream())
        set_first_step_hook(ready.set)
        try:
            out[i] = run_steps(o, 20, device="cuda")[1]
        finally:
            ready.set()

    threads = []
    for i in range(2):
        ready = threading.Event()
        threads.append(threading.Thread(target=work, args=(i, ready)))
        threads[-1].start()
        ready.wait()
    for t in threads:
        t.join()
    for i in range(2):
        assert_same_run(out[i], alone[i], 0.02)
