"""What a pipeline run prints: one line per stage, libraries' INFO hidden, each warning once."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sgsr import console


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """console.setup on a string buffer; logging and warnings restored afterwards."""
    monkeypatch.delenv(console.SEEN_ENV, raising=False)
    monkeypatch.delenv(console.LEVEL_ENV, raising=False)
    root, sgsr_logger = logging.getLogger(), logging.getLogger("sgsr")
    levels = (root.level, sgsr_logger.level)
    showwarning = warnings.showwarning
    buf = io.StringIO()
    handler = console.setup("sgsr train", stream=buf)
    yield buf
    root.removeHandler(handler)
    root.setLevel(levels[0])
    sgsr_logger.setLevel(levels[1])
    warnings.showwarning = showwarning


def test_own_info_is_one_prefixed_line_and_library_info_is_hidden(captured: io.StringIO) -> None:
    logging.getLogger("sgsr.train").info("edsr-l1-x4: 400 iterations")
    logging.getLogger("papermill").info("Input Notebook: x.ipynb")
    logging.getLogger("papermill").warning("kernel died")
    assert captured.getvalue().splitlines() == [
        "sgsr train: edsr-l1-x4: 400 iterations",
        "WARNING: kernel died",
    ]


def test_a_repeated_warning_is_shown_once(captured: io.StringIO) -> None:
    log = logging.getLogger("sgsr.metrics")
    for _ in range(3):
        log.warning("lpips unavailable: weights absent")
    log.warning("fid unavailable: weights absent")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("checkpoint written for other params", UserWarning, stacklevel=1)
        warnings.warn("checkpoint written for other params", UserWarning, stacklevel=1)
    assert captured.getvalue().splitlines() == [
        "WARNING: lpips unavailable: weights absent",
        "WARNING: fid unavailable: weights absent",
        "WARNING: UserWarning: checkpoint written for other params",
    ]


def test_info_lines_are_never_deduplicated(captured: io.StringIO) -> None:
    for _ in range(2):
        logging.getLogger("sgsr.cli").info("same line")
    assert captured.getvalue().count("same line") == 2


def test_processes_sharing_the_seen_file_show_a_warning_once(tmp_path: Path) -> None:
    """What `make repro` relies on: every stage is a process; the first one shows it."""
    script = (
        "import logging, sys, warnings; from sgsr import console; console.setup('sgsr x'); "
        "logging.getLogger('sgsr.metrics').warning('metric weights absent'); "
        "warnings.warn('only in this process: ' + sys.argv[1])"
    )
    env = {**os.environ, console.SEEN_ENV: str(tmp_path / "seen")}
    env.pop(console.LEVEL_ENV, None)
    outs = [
        subprocess.run(
            [sys.executable, "-c", script, str(i)], env=env, capture_output=True, text=True
        )
        for i in range(3)
    ]
    assert all(p.returncode == 0 for p in outs), [p.stderr for p in outs]
    assert outs[0].stderr.count("WARNING: metric weights absent") == 1
    for i, p in enumerate(outs):
        assert f"UserWarning: only in this process: {i}" in p.stderr
        if i:
            assert "metric weights absent" not in p.stderr
        assert "warnings.warn(" not in p.stderr  # no source line echoed back


def test_log_level_env_shows_library_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(console.LEVEL_ENV, "DEBUG")
    buf = io.StringIO()
    root = logging.getLogger()
    levels = (root.level, logging.getLogger("sgsr").level)
    showwarning = warnings.showwarning
    handler = console.setup("sgsr report", stream=buf)
    try:
        logging.getLogger("papermill").info("Executing notebook")
        assert "Executing notebook" in buf.getvalue()
        monkeypatch.setenv(console.LEVEL_ENV, "LOUD")
        with pytest.raises(ValueError, match="SGSR_LOG_LEVEL='LOUD'"):
            console.setup("sgsr report", stream=buf)
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        logging.getLogger("sgsr").setLevel(levels[1])
        warnings.showwarning = showwarning


@pytest.mark.slow
def test_stages_print_one_line_each(tmp_path: Path) -> None:
    """`sgsr download` and `sgsr prepare` of the sample data: one line each on stderr (no
    library chatter, no progress bar outside a terminal), nothing on stdout."""
    (tmp_path / "params.yaml").write_text(
        "data: {source: sample, metric_weights: false}\n"
        "models: {m: {arch: edsr_baseline, n_resblocks: 1, n_feats: 8}}\n"
        "losses: {l1: {l1: 1.0}}\n"
        "experiment: {models: [m], losses: [l1], scales: [4]}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (console.SEEN_ENV, console.LEVEL_ENV)}
    said = {}
    for stage in ("download", "prepare"):
        proc = subprocess.run(
            [sys.executable, "-m", "sgsr.cli", stage],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"sgsr {stage}: "), proc.stderr
        said[stage] = lines[0]
    assert "(sample_train 5, sample_test 3)" in said["download"]
    assert "x4: 656 training patches, 1 validation image(s)" in said["prepare"]
