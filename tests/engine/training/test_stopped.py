"""A run stopped by a signal (a scheduler's SIGTERM, Ctrl-C's SIGINT) is never reported as
trained, and keeps its finished epochs to resume from.

Lightning catches SIGTERM and ends ``fit()`` as though training had finished: ``elp train`` then
exited 0 with no model, and ``train()`` returned a result for a run that left nothing. A stopped
run then deleted its staging folder, checkpoints included: hours of a preempted cluster job lost.
"""

from __future__ import annotations

import json
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
from element_lightning_pose.engine.config import ConfigError, TrainConfig
from element_lightning_pose.engine.model_dir import ModelInfo, read_model_info
from element_lightning_pose.engine.training import TrainingInterrupted, train
from element_lightning_pose.engine.training.stopping import kept_checkpoint, stopped_checkpoint, stopped_folder
from tests.conftest import CHILD_PYTHONPATH
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


ENV = dict(os.environ, PYTHONPATH=CHILD_PYTHONPATH, OMP_NUM_THREADS="1")


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


def _stop_while_writing_model_info(monkeypatch, module) -> None:
    """Send this process SIGTERM as ``module`` writes a trained run's model.json."""
    write = module.write_model_info

    def stop_then_write(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread as os.kill returns
        return write(*args, **kwargs)

    monkeypatch.setattr(module, "write_model_info", stop_then_write)


def _stop_while_renaming_into(monkeypatch, model_dir: Path) -> None:
    """Send this process SIGTERM as the staging folder of ``model_dir`` is renamed into place."""
    from element_lightning_pose.engine import atomic

    rename = atomic.replace_directory

    def stop_then_rename(source, target):
        if Path(target) == model_dir:
            os.kill(os.getpid(), signal.SIGTERM)
        return rename(source, target)

    monkeypatch.setattr(atomic, "replace_directory", stop_then_rename)


# each kind of run: its configuration, the module that writes its model.json, its model.json kind
STOP_KINDS = {
    "one network": (TINY_CONFIG, "single", "single_stage"),
    "crop zoom": ({**TINY_CONFIG, "crop_zoom": {"enabled": True}}, "crop_zoom", "crop_zoom"),
    "per view": ({**TINY_CONFIG, "data": {**TINY_CONFIG["data"], "multiview": "per_view"}}, "per_view", "per_view"),
}


def _model_kind(model_dir: Path) -> str:
    # read_model_info refuses a per-view directory as a whole (it points at each view's)
    return ModelInfo.from_dict(json.loads((model_dir / "model.json").read_text())).kind


def _project_of(kind: str, tiny_project, tmp_path: Path) -> Path:
    if kind != "per view":
        return tiny_project.root
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    rig = make_rig_project(
        tmp_path / "rig", n_cameras=2, image_size=(96, 64), n_frames=12, n_labeled=8, n_board_frames=2
    )
    return rig.root


@pytest.mark.parametrize("kind", list(STOP_KINDS))
def test_a_stop_while_the_last_files_are_written_keeps_the_run_and_it_resumes(
    kind, tiny_project, tmp_path, monkeypatch
):
    """A crop-zoom run stopped there lost both trained networks (nothing kept, nothing in
    place); a one-network run was kept with its model.json, as a model nothing would replace."""
    from element_lightning_pose.engine.training import crop_zoom, per_view, single

    config_dict, writer, model_kind = STOP_KINDS[kind]
    project = _project_of(kind, tiny_project, tmp_path)
    _stop_while_writing_model_info(
        monkeypatch, {"single": single, "crop_zoom": crop_zoom, "per_view": per_view}[writer]
    )
    runs = tmp_path / "runs"
    model_dir, kept = runs / "model", stopped_folder(runs / "model")
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIGTERM .* kept in .*model\.stopped") as info:
        train(config_dict, project, model_dir, progress=False)
    assert info.value.kept == kept and not model_dir.exists()
    assert not (kept / "model.json").exists() and kept_checkpoint(kept) is not None
    monkeypatch.undo()
    # the pipeline's way: the same configuration goes on from it, here only to write its files
    config = TrainConfig.from_dict(config_dict)
    assert stopped_checkpoint(model_dir, config) == kept_checkpoint(kept)
    result = train(config, project, model_dir, progress=False, resume_stopped=True)
    assert result.model_dir == model_dir and [p.name for p in runs.iterdir()] == ["model"]
    assert _model_kind(model_dir) == model_kind


@pytest.mark.parametrize("kind", list(STOP_KINDS))
def test_a_stop_as_the_model_is_renamed_waits_for_it_and_the_kept_run_is_removed(
    kind, tiny_project, tmp_path, monkeypatch
):
    """Once its files are written, a stopped run is complete: its model goes into place and an
    earlier run's kept epochs are removed, as when it ends unstopped."""
    config_dict, _, model_kind = STOP_KINDS[kind]
    project = _project_of(kind, tiny_project, tmp_path)
    runs = tmp_path / "runs"
    model_dir, kept = runs / "model", stopped_folder(runs / "model")
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "checkpoints" / "last.ckpt").write_bytes(b"an earlier stopped run")
    _stop_while_renaming_into(monkeypatch, model_dir)
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIGTERM .*the run had completed: .*holds its model"):
        train(config_dict, project, model_dir, progress=False)
    assert _model_kind(model_dir) == model_kind
    assert [p.name for p in runs.iterdir()] == ["model"]  # no kept run, no staging folder left


# --------------------------------------------------------------------------- runs of several networks

# each network trains 3 epochs; _stop_in stops the one a test names in its second
CROP_ZOOM_3_EPOCHS = {
    **LONG,
    "crop_zoom": {"enabled": True, "detector_resize": [32, 64]},
    "training": {**LONG["training"], "max_epochs": 3},
}


def _stop_in(network: str, monkeypatch, signum: signal.Signals = signal.SIGTERM) -> None:
    """Send this process ``signum`` once, as ``network`` (its staging folder's name) starts its
    second epoch, its first checkpointed. At a training step, not by the clock: a thread that
    waited for the checkpoint raced the network's end on a loaded machine."""
    from element_lightning_pose.engine.training.heatmap_module import HistoryCallback

    start_epoch = HistoryCallback.on_train_epoch_start
    sent = []

    def stop_in_second_epoch(self, trainer, module):
        in_network = self.path is not None and self.path.parent.name.startswith(f".{network}.")
        if in_network and trainer.current_epoch == 1 and not sent:
            sent.append(network)
            # at its default the signal would end pytest itself: fail the run instead
            assert signal.getsignal(signum) is not signal.SIG_DFL, f"nothing handles {signum.name}"
            os.kill(os.getpid(), signum)  # delivered to the main thread as os.kill returns
        return start_epoch(self, trainer, module)

    monkeypatch.setattr(HistoryCallback, "on_train_epoch_start", stop_in_second_epoch)


def _dropped_best_scores(recwarn) -> list[str]:
    return [str(w.message) for w in recwarn if "dirpath has changed" in str(w.message)]


def test_a_crop_zoom_run_stopped_in_its_pose_stage_keeps_the_detector_and_resumes_the_pose_stage(
    tiny_project, tmp_path, recwarn, monkeypatch
):
    """Crop zoom's stopped run kept nothing: a preempted job lost its finished detector too."""
    model_dir = tmp_path / "model"
    kept = stopped_folder(model_dir)
    _stop_in("pose", monkeypatch)
    with pytest.raises(TrainingInterrupted) as info:
        train(CROP_ZOOM_3_EPOCHS, tiny_project.root, model_dir, progress=False)
    assert info.value.kept == kept and not model_dir.exists()
    # the finished detector as a model directory, the pose stage's epochs as pose.stopped
    assert (kept / "detector" / "model.json").is_file() and not (kept / "detector.stopped").exists()
    assert (kept / "pose.stopped" / "checkpoints" / "last.ckpt").is_file()
    assert kept_checkpoint(kept) == kept / "pose.stopped" / "checkpoints" / "last.ckpt"
    assert f"resume from {kept_checkpoint(kept)} into {model_dir}" in str(info.value)
    detector_weights = (kept / "detector" / "checkpoints" / "best.ckpt").read_bytes()
    pose_epochs = _epochs(kept / "pose.stopped" / "metrics.csv")
    assert pose_epochs == list(range(len(pose_epochs)))

    # another kind of network may not go on from it (and nothing is touched)
    single = {**CROP_ZOOM_3_EPOCHS, "crop_zoom": {"enabled": False}}
    with pytest.raises(ConfigError, match=r"one network of the run of several .* kept in .*model\.stopped"):
        train(single, tiny_project.root, model_dir, resume_from=kept_checkpoint(kept), progress=False)
    other_detector = {**CROP_ZOOM_3_EPOCHS, "crop_zoom": {"enabled": True, "detector_resize": [64, 64]}}
    with pytest.raises(ConfigError, match=r"other settings \(crop_zoom was "):
        train(other_detector, tiny_project.root, model_dir, resume_from=kept_checkpoint(kept), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.stopped"]
    assert (kept / "detector" / "checkpoints" / "best.ckpt").read_bytes() == detector_weights

    # the pipeline's way: the same configuration resumes by itself
    config = TrainConfig.from_dict(CROP_ZOOM_3_EPOCHS)
    assert stopped_checkpoint(model_dir, config) == kept_checkpoint(kept)
    result = train(config, tiny_project.root, model_dir, progress=False, resume_stopped=True)
    assert result.model_dir == model_dir and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (model_dir / "detector" / "checkpoints" / "best.ckpt").read_bytes() == detector_weights  # reused
    resumed_epochs = _epochs(model_dir / "pose" / "metrics.csv")
    assert resumed_epochs[: len(pose_epochs)] == pose_epochs and resumed_epochs == list(range(len(resumed_epochs)))
    info_json = read_model_info(model_dir)
    assert info_json.kind == "crop_zoom" and info_json.extra["crop_zoom"]["pose"]["epochs"] == result.epochs
    # the pose stage's best score so far came back with its checkpoint (Lightning drops it, and
    # says so, when the checkpoints' folder differs: the staging folder is renamed on resume)
    assert not _dropped_best_scores(recwarn)


def test_a_crop_zoom_run_resumes_only_its_own_kept_run(tiny_project, tmp_path, tiny_model_dir):
    config = TrainConfig.from_dict(CROP_ZOOM_3_EPOCHS)
    with pytest.raises(ConfigError, match=r"resumes only the stopped run kept in .*model\.stopped"):
        train(config, tiny_project.root, tmp_path / "model", resume_from=tiny_model_dir / "checkpoints" / "last.ckpt")
    assert not list(tmp_path.iterdir())


def test_a_per_view_run_stopped_in_its_second_view_keeps_the_first_and_resumes(tmp_path, recwarn, monkeypatch):
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    rig = make_rig_project(
        tmp_path / "rig", n_cameras=2, image_size=(96, 64), n_frames=12, n_labeled=8, n_board_frames=2
    )
    per_view = {
        **LONG,
        "data": {**LONG["data"], "multiview": "per_view"},
        "training": {**LONG["training"], "max_epochs": 3},
    }
    model_dir = tmp_path / "model"
    kept = stopped_folder(model_dir)
    _stop_in("cam1", monkeypatch)
    with pytest.raises(TrainingInterrupted) as info:
        train(per_view, rig.root, model_dir, progress=False)
    assert info.value.kept == kept and not model_dir.exists()
    assert (kept / "cam0" / "model.json").is_file() and kept_checkpoint(
        kept
    ) == kept / "cam1.stopped" / "checkpoints" / "last.ckpt"
    first_view = (kept / "cam0" / "checkpoints" / "best.ckpt").read_bytes()
    stopped_epochs = _epochs(kept / "cam1.stopped" / "metrics.csv")

    # as from the command line: the checkpoint the message names, and more epochs
    resumed_config = {**per_view, "training": {**LONG["training"], "max_epochs": len(stopped_epochs) + 1}}
    result = train(resumed_config, rig.root, model_dir, resume_from=kept_checkpoint(kept), progress=False)
    assert set(result.views) == {"cam0", "cam1"} and not kept.exists()
    assert (model_dir / "cam0" / "checkpoints" / "best.ckpt").read_bytes() == first_view  # reused
    assert _epochs(model_dir / "cam1" / "metrics.csv") == list(range(len(stopped_epochs) + 1))
    assert json.loads((model_dir / "model.json").read_text())["kind"] == "per_view"
    assert not _dropped_best_scores(recwarn)


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGHUP], ids=["SIGUSR1 under SLURM", "SIGHUP"])
def test_a_signal_whose_default_ends_the_process_stops_the_run_and_keeps_it(
    signum, tiny_project, tmp_path, monkeypatch
):
    """SIGHUP (the terminal of ``elp train`` closed) ended the process where it found it, the run
    lost with its stage. Under SLURM, Lightning answered SIGUSR1 (``sbatch --signal=USR1@120``) by
    saving a full checkpoint from inside the signal handler, mid-step (Lightning issue 21406: it
    can hang there; under DDP its barrier meets the other processes' collectives out of step),
    for a resume of its own that nothing here takes, and then asked ``scontrol`` for a requeue.
    Both now stop the run as SIGTERM does, and it is kept."""
    if signal.getsignal(signum) is not signal.SIG_DFL:
        pytest.skip(f"{signum.name} is handled or ignored here (nohup): it is then the caller's")
    bin_dir, requeued = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"  # records a requeue asked for, and refuses it
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {requeued}\nexit 1\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    if signum == signal.SIGUSR1:
        slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0", "SLURM_JOB_ID": "4242"}
        for name, value in slurm.items():
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    _stop_in("model", monkeypatch, signum)
    model_dir = tmp_path / "model"
    three_epochs = {**TINY_CONFIG, "training": {**TINY_CONFIG["training"], "max_epochs": 3}}
    with pytest.raises(TrainingInterrupted, match=rf"stopped by {signum.name} before it finished") as info:
        train(three_epochs, tiny_project.root, model_dir, progress=False)
    assert info.value.code == 128 + signum and info.value.kept == stopped_folder(model_dir)
    assert _epochs(info.value.kept / "metrics.csv") == [0] and (info.value.kept / "checkpoints" / "last.ckpt").is_file()
    assert not requeued.exists() and not list(tmp_path.rglob("hpc_ckpt_*"))  # Lightning's requeue never ran
    assert signal.getsignal(signum) is signal.SIG_DFL  # the caller's default is back
