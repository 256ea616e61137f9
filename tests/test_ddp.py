"""Multi-process training on the CPU with gloo: the library loop under DistributedDataParallel
matches single-process training on the same global batch, and `sgsr train` under torchrun runs,
writes once (rank 0) and its loss goes down."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from train_helpers import (
    PYTHON,
    load_weights,
    opts,
    read_tsv,
    smooth_images,
    stage_dir,
    tiny_model,
)

from sgsr.distributed import global_batch, per_rank_batch

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_source(rank: int, world: int, batch: int = 4):
    """Rank `rank`'s share of a global batch that is a pure function of the iteration."""

    def source(start: int):
        i = start
        while True:
            hr = smooth_images(1000 + i, batch, 16)[rank::world]
            yield F.avg_pool2d(hr, 2), hr
            i += 1

    return source


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from sgsr.distributed import init_from_env, shutdown
    from sgsr.losses import build_loss
    from sgsr.train import train

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
    )  # fmt: skip
    ctx = init_from_env("cpu")
    assert dist.get_backend() == "gloo" and ctx.world_size == world
    try:
        result = train(
            tiny_model(), build_loss({"l1": 1.0, "sgl": 0.1}), global_source(rank, world),
            opts(iterations=5, batch_size=4), ctx=ctx, progress=False,
        )  # fmt: skip
        torch.save({"model": result.model_state, "loss": result.last_losses}, f"{out}.{rank}")
    finally:
        shutdown(ctx)


@pytest.mark.slow
def test_ddp_two_gloo_ranks_match_one_process_on_the_same_global_batch(tmp_path):
    from sgsr.losses import build_loss
    from sgsr.train import train

    torch.set_num_threads(1)
    out = str(tmp_path / "ddp")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    r0 = torch.load(f"{out}.0", weights_only=True)
    r1 = torch.load(f"{out}.1", weights_only=True)
    single = train(
        tiny_model(), build_loss({"l1": 1.0, "sgl": 0.1}), global_source(0, 1),
        opts(iterations=5, batch_size=4), progress=False,
    )  # fmt: skip
    for k, v in single.model_state.items():
        assert torch.equal(r0["model"][k], r1["model"][k]), f"ranks disagree on {k}"
        assert torch.allclose(r0["model"][k], v, atol=1e-5, rtol=1e-4), k
    # the logged loss is the mean over ranks, i.e. the single-process batch loss
    assert r0["loss"]["total"] == r1["loss"]["total"]
    assert r0["loss"]["total"] == pytest.approx(single.last_losses["total"], rel=1e-4)
    init = tiny_model().state_dict()
    assert any(not torch.equal(v, init[k]) for k, v in single.model_state.items())


@pytest.mark.slow
def test_sgsr_train_under_torchrun_two_cpu_processes(tmp_path, prepared):
    job = stage_dir(tmp_path, prepared, iterations=40, batch_size=4, checkpoint_every=20)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        # `--` ends torchrun's options: without it torchrun reads our `--run` as an ambiguous
        # abbreviation of its own --run-path (Python 3.11 argparse)
        "-m", "--", "sgsr.cli", "--params", str(job / "params.yaml"),
        "train", "--run", "tiny-l1-x2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=job, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = job / "models" / "tiny-l1-x2"
    card = json.loads((run_dir / "run.json").read_text())
    assert card["world_size"] == 2 and card["batch_size"] == 4 and card["iterations"] == 40
    weights = load_weights(run_dir / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    total = read_tsv(job / "models/live/tiny-l1-x2/plots/metrics/train/total.tsv")
    assert [s for s, _ in total] == list(range(5, 41, 5)), "one writer: no duplicated rows"
    assert total[-1][1] < 0.8 * total[0][1], total
    ck = torch.load(job / "models/checkpoints/tiny-l1-x2/checkpoint.pt", weights_only=True)
    assert ck["world_size"] == 2 and ck["iteration"] == 40
    assert sorted(p.name for p in (job / "models").iterdir()) == [
        "checkpoints",
        "live",
        "tiny-l1-x2",
    ]
    assert "Traceback" not in proc.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_one_rule_splits_the_global_batch_over_processes() -> None:
    """per_rank_batch (what each process loads) and global_batch (what checkpoints record and
    the run card reports) are one rule: a remainder is dropped, with a warning."""
    assert per_rank_batch(16, 1) == 16 and global_batch(16, 1) == 16
    assert per_rank_batch(16, 4) == 4 and global_batch(16, 4) == 16
    with pytest.warns(
        UserWarning, match="not divisible by 3 processes: each uses 5, a global batch of 15"
    ):
        assert per_rank_batch(16, 3) == 5
    assert global_batch(16, 3) == 15
    with pytest.raises(
        ValueError, match=r"train.batch_size \(2\) is smaller than the number of processes \(3\)"
    ):
        per_rank_batch(2, 3)
