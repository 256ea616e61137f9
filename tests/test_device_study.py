"""benchmarks/device_study.py at tiny size on the CPU: pack the images and packages, train both
profiles as the device would, return the runs in several parts, import them into DVC projects,
commit and publish. Then DVC sees the train stages up to date. Slow; needs ../shared/datasets."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from benchmarks import device_study as ds
from benchmarks.gpu_profile import TINY, deep_update, make_profile_copy, tool_env
from sgsr import publish

IMAGES = 4  # per set
TINY_GPU = deep_update(copy.deepcopy(TINY), {"experiment": {"replicates": []}})
TINY_STUDY = {
    "data": {"train_sets": ["T91"], "test_sets": ["Set5"]},
    "prepare": {"patch_size": 64, "stride": 64, "val_images": 1},
    "models": {"edsr_slim": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
    "experiment": {"losses": ["l1"], "replicates": [1]},
    "train": {
        "iterations": 4, "batch_size": 4, "lr_patch": 12, "milestones": [2],
        "checkpoint_every": 2, "val_every": 2, "log_every": 1,
    },
}  # fmt: skip
OVERRIDES = {"gpu": TINY_GPU, "study": TINY_STUDY}


def _mini_mirror(shared: Path, dest: Path, sets: list[str]) -> Path:
    """The images the pack takes (the first IMAGES of each set), as the local mirror here."""
    for name in sets:
        files = sorted(p for p in (shared / name).iterdir() if p.is_file())
        files = [p for p in files if p.suffix.lower() != ".tsv" and not p.name.startswith(".")]
        (dest / name).mkdir(parents=True)
        for path in files[:IMAGES]:
            shutil.copy2(path, dest / name / path.name)
    return dest


@pytest.mark.slow
@pytest.mark.dataset
def test_pack_train_collect_import_publish_at_tiny_size(
    tmp_path: Path, shared_datasets: Path
) -> None:
    env = tool_env()
    env["OMP_NUM_THREADS"] = "1"
    info = ds.pack(tmp_path / "pack", ds.PROFILES, shared_datasets, max_images=IMAGES)
    assert info["sets"] == ["T91", "BSD200", "Set5"]
    assert any(c.startswith("dvclive==") for c in info["carried"])
    with tarfile.open(tmp_path / "pack" / "site.tar") as tar:
        assert "dvclive/live.py" in tar.getnames()

    work = tmp_path / "device"
    status = ds.device_train(tmp_path / "pack", work, ds.PROFILES, 900, OVERRIDES, 2)
    for profile in ds.PROFILES:
        got = status["profiles"][profile]
        assert got["runs_done"] == got["runs_total"] == 2, got
    decoded = work / "datasets" / "T91"
    assert sorted(p.name for p in decoded.iterdir()) == sorted(
        p.name for p in sorted((shared_datasets / "T91").iterdir())[:IMAGES]
    )  # original names and formats (the patch store records them)

    parts, k, total = [], 1, None
    while total is None or k <= total:
        out = tmp_path / f"part{k}"
        total = ds.collect(work, out, k, ds.PROFILES, chunk_bytes=40_000, per_call=1)["parts"]
        parts.append(out)
        k += 1
    assert total > 1  # split across calls
    with pytest.raises(FileNotFoundError, match="not returned"):
        ds.gather(parts[:-1])

    mirror = _mini_mirror(shared_datasets, tmp_path / "mirror", ["T91", "Set5"])
    folders = {}
    for profile, over in OVERRIDES.items():
        params = deep_update(copy.deepcopy(over), {"data": {"dir": str(mirror)}})
        folder = make_profile_copy(tmp_path / f"home-{profile}", params, profile, env=env)
        remote = tmp_path / f"home-{profile}" / "published"
        subprocess.run(
            ["dvc", "remote", "add", publish.REMOTE, str(remote)], cwd=folder, env=env, check=True
        )
        folders[profile] = folder
    result = ds.import_results(parts, folders, publish=True, env=env)
    assert {p: len(r) for p, r in result["imported"].items()} == {"gpu": 2, "study": 2}

    for profile, folder in folders.items():
        status = subprocess.run(
            ["dvc", "status", "--json"], cwd=folder, env=env, capture_output=True, text=True
        )
        changed = set(json.loads(status.stdout))
        assert not {s for s in changed if publish.is_train_stage(s)}, changed
        outs = publish.check(folder)  # every train output is in the published remote
        assert len(outs) == 4  # two runs: weights and curves each
        for out in outs:
            name = "plots/metrics/train/total.tsv" if "/live/" in out.path else "run.json"
            mine = (folder / out.path / name).read_bytes()
            theirs = (ds.profile_dir(work, profile) / out.path / name).read_bytes()
            assert mine == theirs, out.path


def test_a_corrupt_chunk_is_refused_before_anything_is_extracted(tmp_path: Path) -> None:
    """gather checks each chunk against its manifest's sha256 before anything is extracted."""
    out = tmp_path / "part1"
    out.mkdir()
    (out / "chunk-00.tar").write_bytes(b"not what was sent")
    manifest = {"part": 1, "parts": 1, "chunks": {"chunk-00.tar": []}, "sha256": {}}
    manifest["sha256"]["chunk-00.tar"] = "0" * 64
    (out / "manifest-1.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="sha256 differs"):
        ds.gather([out])


def test_chunks_keep_runs_whole_and_respect_the_limit(tmp_path: Path) -> None:
    groups = []
    for run, sizes in {"a": [300, 200], "b": [400], "c": [100, 100]}.items():
        group = []
        for i, size in enumerate(sizes):
            path = tmp_path / f"{run}{i}"
            path.write_bytes(b"x" * size)
            group.append((path, f"p/models/{run}/{i}"))
        groups.append(group)
    chunks = ds.plan_chunks(groups, limit=4000)  # each file counts 1 KiB of tar header
    assert [[n for _, n in c] for c in chunks] == [
        ["p/models/a/0", "p/models/a/1", "p/models/b/0"],
        ["p/models/c/0", "p/models/c/1"],
    ]
    with pytest.raises(ValueError, match="over the chunk limit"):
        ds.plan_chunks(groups, limit=1000)
