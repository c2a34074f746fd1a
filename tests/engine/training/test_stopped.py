"""A run stopped by a signal (a scheduler's SIGTERM, Ctrl-C's SIGINT) is never reported as
trained, and keeps its finished epochs to resume from.

Lightning catches SIGTERM and ends ``fit()`` as though training had finished: ``elp train`` then
exited 0 with no model, and ``train()`` returned a result for a run that left nothing. A stopped
run then deleted its staging folder, checkpoints included: hours of a preempted cluster job lost.
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

from element_lightning_pose.engine.atomic import default_dir_mode
from element_lightning_pose.engine.training import TrainingInterrupted, train
from element_lightning_pose.engine.training.stopping import stopped_folder
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


def _staged_checkpoint(model_dir: Path, timeout: float = 300) -> None:
    """Wait until the run into ``model_dir`` has written an epoch's checkpoint into its staging folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(model_dir.parent.glob(f".{model_dir.name}.*.tmp/checkpoints/last.ckpt")):
            return
        time.sleep(0.2)
    raise AssertionError(f"no epoch of the run into {model_dir} within {timeout} s")


def _epochs(metrics: Path) -> list[int]:
    return [int(line.split(",", 1)[0]) for line in metrics.read_text().splitlines()[1:] if line.strip()]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


def _deliver_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _elp_train(project_root: Path, model_dir: Path, *options: str) -> list[str]:
    command = [sys.executable, "-m", "element_lightning_pose.cli", "train", str(project_root)]
    command += ["--model-dir", str(model_dir), "--no-progress", "--preset", "none", *options]
    for assignment in LONG_SETS:
        command += ["--set", assignment]
    return command


ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")


def _stop_elp_train(project_root: Path, model_dir: Path, signum: int) -> subprocess.CompletedProcess:
    """``elp train`` as a user runs it, sent ``signum`` once its first epoch's checkpoint is written."""
    command = _elp_train(project_root, model_dir)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        # as from a terminal: a shell without job control starts background commands (a CI
        # script run with `&`) with SIGINT ignored, their children inherit that, and train()
        # rightly leaves an ignored signal ignored
        preexec_fn=_deliver_sigint,
    )
    try:
        _staged_checkpoint(model_dir)
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_elp_train_stopped_by_sigterm_exits_143_keeps_its_epochs_and_resumes_from_them(tiny_project, tmp_path):
    model_dir = tmp_path / "model"
    kept = tmp_path / "model.stopped"
    stopped = _stop_elp_train(tiny_project.root, model_dir, signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("elp train: training stopped by SIGTERM before it finished: ")
    assert f"no model directory was written ({model_dir} does not exist); its " in last
    assert f"kept in {kept}: resume from {kept / 'checkpoints' / 'last.ckpt'} into {model_dir}" in last
    assert "Traceback" not in stopped.stderr and "trained" not in stopped.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.stopped"]  # no model, no staging folder
    for name in ("config.yaml", "splits.csv", "metrics.csv", "checkpoints/last.ckpt"):
        assert (kept / name).is_file(), name
    assert kept.stat().st_mode & 0o777 == default_dir_mode()  # readable by the lab, as a model directory
    done_epochs = _epochs(kept / "metrics.csv")
    assert done_epochs and done_epochs == list(range(len(done_epochs)))

    # going on from the kept epochs: the history carries on, the split is the stopped run's
    stopped_splits = (kept / "splits.csv").read_bytes()
    epochs = len(done_epochs) + 2
    resumed = subprocess.run(
        _elp_train(tiny_project.root, model_dir, "--resume", str(kept / "checkpoints" / "last.ckpt"))
        + ["--set", f"training.max_epochs={epochs}"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _epochs(model_dir / "metrics.csv") == list(range(epochs))
    assert (model_dir / "splits.csv").read_bytes() == stopped_splits
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the kept run is spent


def test_elp_train_stopped_by_sigint_exits_130_and_leaves_the_old_model(tiny_model_dir, tiny_project, tmp_path):
    """The model directory stays the earlier model; the stopped run is kept beside it."""
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    before = _snapshot(model_dir)
    stopped = _stop_elp_train(tiny_project.root, model_dir, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("elp train: training stopped by SIGINT before it finished: ")
    assert f"{model_dir} is unchanged; its " in last and f"kept in {tmp_path / 'model.stopped'}: resume" in last
    assert _snapshot(model_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.stopped"]


def test_train_raises_training_interrupted_and_restores_the_callers_handlers(tiny_project, tmp_path):
    model_dir = tmp_path / "model"
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:

        def stop_once_training() -> None:
            _staged_checkpoint(model_dir)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=stop_once_training, daemon=True).start()
        with pytest.raises(TrainingInterrupted, match=r"stopped by SIGTERM.*no model directory was written") as info:
            train(LONG, tiny_project.root, model_dir, progress=False)
        # the status a shell gives SIGTERM, and a SystemExit: populate(suppress_errors=True) stops on it
        assert info.value.code == 143 and isinstance(info.value, SystemExit)
        assert info.value.kept == stopped_folder(model_dir)
        assert not model_dir.exists() and [p.name for p in tmp_path.iterdir()] == ["model.stopped"]
        os.kill(os.getpid(), signal.SIGTERM)  # the caller's handler is back
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
