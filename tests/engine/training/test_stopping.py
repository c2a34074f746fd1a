"""What a stopped run keeps (``<model_dir>.stopped``), what resumes from it, and what its message says.

The whole path, with real signals and training, is in ``test_stopped.py``; these check each rule
on folders made by hand.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest

from element_lightning_pose.engine.atomic import OutputError, default_dir_mode, replace_directory
from element_lightning_pose.engine.config import TrainConfig
from element_lightning_pose.engine.training.stopping import (
    RunStopped,
    _what_is_left,
    discard_stopped,
    keep_if_stopped,
    stopped_checkpoint,
    stopped_folder,
)


def _stage(parent: Path, *, checkpoint: bool, epochs: int = 2, config: TrainConfig | None = None) -> Path:
    stage = parent / ".model.123.abc.tmp"
    (stage / "checkpoints").mkdir(parents=True)
    stage.chmod(0o700)  # as tempfile.mkdtemp makes it
    if checkpoint:
        (stage / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (stage / "metrics.csv").write_text("epoch,train_loss\n" + "".join(f"{e},0.5\n" for e in range(epochs)))
    # Lightning's own log: a row per logged step, not per epoch
    (stage / "logs" / "version_0").mkdir(parents=True)
    (stage / "logs" / "version_0" / "metrics.csv").write_text("step,loss\n" + "0,1\n" * 20)
    (config or TrainConfig()).to_yaml(stage / "config.yaml")
    return stage


def test_stopped_folder_is_beside_the_model_directory(tmp_path):
    assert stopped_folder(tmp_path / "models" / "m.v2") == tmp_path / "models" / "m.v2.stopped"


def test_a_stop_after_a_checkpoint_keeps_the_stage_and_replaces_an_older_kept_run(tmp_path):
    model_dir = tmp_path / "model"
    older = stopped_folder(model_dir)
    (older / "checkpoints").mkdir(parents=True)
    (older / "stale.txt").write_text("from an earlier stop")
    stage = _stage(tmp_path, checkpoint=True)
    with pytest.raises(RunStopped) as info, keep_if_stopped(stage, model_dir):
        raise RunStopped(signal.SIGTERM)
    assert info.value.kept == older
    assert not stage.exists()
    assert (older / "checkpoints" / "last.ckpt").read_bytes() == b"weights"
    assert not (older / "stale.txt").exists()  # replaced whole, never mixed
    assert older.stat().st_mode & 0o777 == default_dir_mode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.stopped"]


def test_a_stop_behind_another_error_keeps_the_stage(tmp_path):
    """The app's cancel signals the process group: the data workers die too, and torch raises
    their deaths while Lightning tears the stopped run down."""
    stage = _stage(tmp_path, checkpoint=True)
    with pytest.raises(RuntimeError) as info, keep_if_stopped(stage, tmp_path / "model"):
        try:
            raise RunStopped(signal.SIGINT)
        except RunStopped:
            raise RuntimeError("DataLoader worker (pid 42) exited unexpectedly") from None
    assert isinstance(info.value.__context__, RunStopped) and info.value.__context__.kept == tmp_path / "model.stopped"
    assert (tmp_path / "model.stopped" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("checkpoint, error", [(False, RunStopped(signal.SIGTERM)), (True, ValueError("bad frame"))])
def test_nothing_is_kept_before_the_first_checkpoint_or_for_a_failure(tmp_path, checkpoint, error):
    stage = _stage(tmp_path, checkpoint=checkpoint)
    with pytest.raises(type(error)), keep_if_stopped(stage, tmp_path / "model"):
        raise error
    assert stage.is_dir()  # left for atomic_directory, which deletes it
    assert not stopped_folder(tmp_path / "model").exists()
    if isinstance(error, RunStopped):
        assert error.kept is None


def test_replace_directory_refuses_a_file_in_the_way(tmp_path):
    source = tmp_path / "new"
    source.mkdir()
    (tmp_path / "target").write_text("a user's file")
    with pytest.raises(OutputError, match=f"{tmp_path / 'target'}: exists and is not a folder"):
        replace_directory(source, tmp_path / "target")
    assert (tmp_path / "target").read_text() == "a user's file" and source.is_dir()


def test_stopped_checkpoint_only_for_the_same_configuration(tmp_path, caplog):
    model_dir = tmp_path / "model"
    config = TrainConfig.from_dict({"training": {"max_epochs": 7}})
    assert stopped_checkpoint(model_dir, config) is None  # nothing kept
    stage = _stage(tmp_path, checkpoint=True, config=config)
    replace_directory(stage, stopped_folder(model_dir))
    assert stopped_checkpoint(model_dir, config) == stopped_folder(model_dir) / "checkpoints" / "last.ckpt"

    other = TrainConfig.from_dict({"training": {"max_epochs": 8}})
    with caplog.at_level(logging.WARNING):
        assert stopped_checkpoint(model_dir, other) is None
    assert f"{stopped_folder(model_dir)}: not resumed: it was trained with another configuration" in caplog.text

    (stopped_folder(model_dir) / "config.yaml").write_text("training: [unclosed")
    with caplog.at_level(logging.WARNING):
        assert stopped_checkpoint(model_dir, config) is None
    assert "its config.yaml cannot be read" in caplog.text


def test_discard_stopped_removes_the_kept_run_but_never_a_model(tmp_path):
    model_dir = tmp_path / "model"
    replace_directory(_stage(tmp_path, checkpoint=True), stopped_folder(model_dir))
    discard_stopped(model_dir)
    assert not stopped_folder(model_dir).exists()
    # a model directory that happens to bear the name (a model called "model.stopped") stays
    (stopped_folder(model_dir) / "checkpoints").mkdir(parents=True)
    (stopped_folder(model_dir) / "model.json").write_text("{}")
    discard_stopped(model_dir)
    assert (stopped_folder(model_dir) / "model.json").is_file()
    stage = _stage(tmp_path, checkpoint=True)
    with pytest.raises(RunStopped) as info, keep_if_stopped(stage, model_dir):
        raise RunStopped(signal.SIGTERM)
    assert info.value.kept is None and (stopped_folder(model_dir) / "model.json").is_file()


def test_only_the_process_that_may_keep_keeps(tmp_path):
    """A DDP process other than global rank 0 (``when`` says no) keeps nothing."""
    stage = _stage(tmp_path, checkpoint=True)
    with pytest.raises(RunStopped) as info, keep_if_stopped(stage, tmp_path / "model", when=lambda: False):
        raise RunStopped(signal.SIGTERM)
    assert info.value.kept is None and stage.is_dir() and not stopped_folder(tmp_path / "model").exists()


def test_the_message_says_what_is_kept_and_how_to_resume(tmp_path):
    model_dir = tmp_path / "model"
    kept = stopped_folder(model_dir)
    replace_directory(_stage(tmp_path, checkpoint=True, epochs=1), kept)
    text = _what_is_left(model_dir, None, None, kept)
    assert text == (
        f"no model directory was written ({model_dir} does not exist); its 1 finished epoch is kept in {kept}: "
        f"resume from {kept / 'checkpoints' / 'last.ckpt'} into {model_dir} "
        "(elp train --resume, train(resume_from=...)) to go on from there"
    )
    (kept / "metrics.csv").write_text("epoch,train_loss\n0,1\n1,1\n2,1\n")
    model_dir.mkdir()
    identity = (model_dir.stat().st_dev, model_dir.stat().st_ino)
    assert _what_is_left(model_dir, identity, None, kept).startswith(
        f"{model_dir} is unchanged; its 3 finished epochs are kept in {kept}: "
    )
    # stopped before any checkpoint: nothing of the run is left, an earlier model's last.ckpt is
    (model_dir / "checkpoints").mkdir()
    (model_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert "(the earlier model, whose" in _what_is_left(model_dir, identity, None, None)
    assert _what_is_left(model_dir, identity, "x.ckpt", None).endswith("resume from x.ckpt again")


def test_a_stop_once_trained_waits_for_the_end_of_the_block(tmp_path, caplog):
    """Real signals, sent by this process to itself: before ``trained()`` a stop ends the run at
    once; after it, at the end of the block (of the outermost block that holds it), also when
    the block fails."""
    import os

    from element_lightning_pose.engine.training.stopping import (
        TrainingInterrupted,
        signals_stop_the_run,
        stops_held_once_trained,
    )

    def stop() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread as os.kill returns

    callers = signal.getsignal(signal.SIGTERM)
    reached = []
    with pytest.raises(TrainingInterrupted):
        with signals_stop_the_run(tmp_path / "model", None), stops_held_once_trained():
            stop()
            reached.append("not held")
    assert reached == []

    with pytest.raises(TrainingInterrupted):
        with signals_stop_the_run(tmp_path / "model", None):
            with stops_held_once_trained() as outer:
                outer()
                with stops_held_once_trained() as inner:
                    inner()
                    stop()
                    stop()  # a second stop while held changes nothing
                    reached.append("inner done")
                reached.append("outer done")  # the outer block holds it too
            reached.append("after the blocks")
    assert reached == ["inner done", "outer done"]

    # a block that fails once the stop is held ends in the stop, the error as its context
    with pytest.raises(TrainingInterrupted) as info:
        with signals_stop_the_run(tmp_path / "model", None), stops_held_once_trained() as trained:
            trained()
            stop()
            raise ValueError("disk full")
    assert isinstance(info.value.__context__.__context__, ValueError)  # RunStopped's context: the error
    assert "while a stop was held: ValueError: disk full" in caplog.text  # and said
    with signals_stop_the_run(tmp_path / "model", None), stops_held_once_trained() as trained:
        trained()  # the stop was raised once: the next run is not stopped
    assert signal.getsignal(signal.SIGTERM) is callers  # outside a run, the caller's handler again


def test_a_run_in_another_thread_does_not_hold_the_main_threads_stop(tmp_path):
    """The held state was one per process: a network trained in a worker thread, between its
    last writes and its rename, held a stop meant for the main thread's run."""
    import os
    import threading

    from element_lightning_pose.engine.training.stopping import (
        TrainingInterrupted,
        signals_stop_the_run,
        stops_held_once_trained,
    )

    holding, release = threading.Event(), threading.Event()

    def worker() -> None:
        with stops_held_once_trained() as trained:
            trained()
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=worker)
    thread.start()
    reached = []
    try:
        assert holding.wait(30)
        with pytest.raises(TrainingInterrupted):
            with signals_stop_the_run(tmp_path / "model", None):
                os.kill(os.getpid(), signal.SIGTERM)
                reached.append("not stopped")
    finally:
        release.set()
        thread.join(30)
    assert reached == []


@pytest.mark.skipif(
    signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL, reason="SIGHUP is handled or ignored here (nohup)"
)
def test_sighup_and_sigusr1_stop_a_run_only_where_the_caller_left_them_at_their_default(tmp_path, monkeypatch):
    """At its default either signal ends the process where it is; a caller's own handler (a
    requeue of its own, ``nohup``'s ignore) keeps its signal through the run. SIGUSR1 is taken
    only in a SLURM job: elsewhere a user may have set faulthandler on it, to dump stacks."""
    import os

    from element_lightning_pose.engine.training.stopping import TrainingInterrupted, signals_stop_the_run

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with signals_stop_the_run(tmp_path / "model", None):
        assert (
            signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL and signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL
        )
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with signals_stop_the_run(tmp_path / "model", None):
        assert signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL

    received = []
    callers_usr1 = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    callers_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals_stop_the_run(tmp_path / "model", None):
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGHUP)
        assert received == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, callers_usr1)
        signal.signal(signal.SIGHUP, callers_hup)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # pytest's
    with pytest.raises(TrainingInterrupted, match="stopped by SIGHUP") as info:
        with signals_stop_the_run(tmp_path / "model", None):
            assert signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL  # else it would end pytest
            os.kill(os.getpid(), signal.SIGHUP)
    assert info.value.code == 129 and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
