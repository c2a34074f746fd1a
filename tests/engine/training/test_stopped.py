"""A run stopped by a signal (a scheduler's SIGTERM, Ctrl-C's SIGINT) is never reported as trained.

Lightning catches SIGTERM and ends ``fit()`` as though training had finished: ``elp train`` then
exited 0 with no model, and ``train()`` returned a result for a run that left nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from element_lightning_pose.engine.training import TrainingInterrupted, train
from tests.conftest import REPO_ROOT
from tests.engine.conftest import TINY_CONFIG

pytestmark = pytest.mark.slow  # trains networks

# far more epochs than a test waits for: only a signal ends the run
LONG = {**TINY_CONFIG, "training": {**TINY_CONFIG["training"], "max_epochs": 10_000}}
LONG_SETS = [
    "model.backbone=resnet18",
    "model.pretrained=false",
    "data.image_resize=[64,64]",
    "training.unfreeze_epoch=0",
    "training.num_workers=0",
    "training.max_epochs=10000",
]


def _staged_epoch(model_dir: Path, timeout: float = 300) -> None:
    """Wait until the run into ``model_dir`` has written an epoch into its staging folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(model_dir.parent.glob(f".{model_dir.name}.*.tmp/metrics.csv")):
            return
        time.sleep(0.2)
    raise AssertionError(f"no epoch of the run into {model_dir} within {timeout} s")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


def _deliver_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_elp_train(project_root: Path, model_dir: Path, signum: int) -> subprocess.CompletedProcess:
    """``elp train`` as a user runs it, sent ``signum`` once its first epoch is written."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "element_lightning_pose.cli", "train", str(project_root)]
    command += ["--model-dir", str(model_dir), "--no-progress", "--preset", "none"]
    for assignment in LONG_SETS:
        command += ["--set", assignment]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # as from a terminal: a shell without job control starts background commands (a CI
        # script run with `&`) with SIGINT ignored, their children inherit that, and train()
        # rightly leaves an ignored signal ignored
        preexec_fn=_deliver_sigint,
    )
    try:
        _staged_epoch(model_dir)
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_elp_train_stopped_by_sigterm_exits_143_and_says_nothing_was_kept(tiny_project, tmp_path):
    model_dir = tmp_path / "model"
    stopped = _stop_elp_train(tiny_project.root, model_dir, signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("elp train: training stopped by SIGTERM before it finished: ")
    assert f"no model directory was written ({model_dir} does not exist)" in last
    assert "nothing of this run is left to resume from" in last
    assert "Traceback" not in stopped.stderr and "trained" not in stopped.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no model, no staging folder


def test_elp_train_stopped_by_sigint_exits_130_and_leaves_the_old_model(tiny_model_dir, tiny_project, tmp_path):
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    before = _snapshot(model_dir)
    stopped = _stop_elp_train(tiny_project.root, model_dir, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("elp train: training stopped by SIGINT before it finished: ")
    assert f"{model_dir} is unchanged (the earlier model, whose {model_dir / 'checkpoints' / 'last.ckpt'}" in last
    assert _snapshot(model_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_train_raises_training_interrupted_and_restores_the_callers_handlers(tiny_project, tmp_path):
    model_dir = tmp_path / "model"
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:

        def stop_once_training() -> None:
            _staged_epoch(model_dir)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=stop_once_training, daemon=True).start()
        with pytest.raises(TrainingInterrupted, match=r"stopped by SIGTERM.*no model directory was written") as info:
            train(LONG, tiny_project.root, model_dir, progress=False)
        # the status a shell gives SIGTERM, and a SystemExit: populate(suppress_errors=True) stops on it
        assert info.value.code == 143 and isinstance(info.value, SystemExit)
        assert not model_dir.exists() and not list(tmp_path.iterdir())
        os.kill(os.getpid(), signal.SIGTERM)  # the caller's handler is back
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
