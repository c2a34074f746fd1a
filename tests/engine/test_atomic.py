"""Atomic output: the old file or nothing, never a partial one; ordinary file modes."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from element_lightning_pose.engine.atomic import OutputError, atomic_directory, atomic_output, write_text_atomic
from element_lightning_pose.engine.data.keypoints import write_predictions


def test_success_replaces_with_a_shareable_mode(tmp_path):
    old_mask = os.umask(0o022)
    try:
        path = write_predictions(tmp_path / "p.csv", np.zeros((3, 2, 3)), ["a", "b"])
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "notes.txt", "old")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_output(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("midway")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_secret_mode_is_never_widened(tmp_path):
    old_mask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "secret.json", "{}", mode=0o600)
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    dead_pid = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = tmp_path / f".p.{dead_pid}.abc123.tmp.csv"
    stale.write_text("half")
    live = tmp_path / f".p.{os.getpid()}.def456.tmp.csv"  # a writer still at work
    live.write_text("busy")
    write_text_atomic(tmp_path / "p.csv", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["p.csv", live.name])


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as staging:
            (staging / "b.txt").write_text("second")
            raise RuntimeError("training failed")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with atomic_directory(target) as staging:
        (staging / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def _char_device(path):
    """A character device node like /dev/zero (1, 5) at ``path``; skips where mknod is not allowed."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    return path


def test_a_device_node_is_refused_never_replaced(tmp_path):
    device = _char_device(tmp_path / "zero")
    with pytest.raises(OutputError, match="character device"):
        write_predictions(device, np.zeros((3, 2, 3)), ["a", "b"])
    assert stat.S_ISCHR(device.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zero"]


def test_a_named_pipe_is_refused_never_replaced(tmp_path):
    pipe = tmp_path / "pipe.csv"
    os.mkfifo(pipe)
    with pytest.raises(OutputError, match="named pipe"):
        write_text_atomic(pipe, "x")
    assert stat.S_ISFIFO(pipe.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.csv"]


def test_the_null_device_discards_the_output(tmp_path):
    """``-o /dev/null`` means "discard": the writer runs, /dev/null stays the null device."""
    null = tmp_path / "null-link"
    null.symlink_to(os.devnull)
    before = os.stat(os.devnull)
    assert write_predictions(null, np.zeros((3, 2, 3)), ["a", "b"]) == null
    after = os.stat(os.devnull)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert null.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["null-link"]


def test_a_folder_target_is_refused_before_the_writer_runs(tmp_path):
    (tmp_path / "out.csv").mkdir()
    ran = []
    with pytest.raises(OutputError, match="is a folder"):
        with atomic_output(tmp_path / "out.csv") as tmp:
            ran.append(tmp)
    assert ran == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_atomic_directory_never_deletes_a_file_in_its_place(tmp_path):
    labels = tmp_path / "CollectedData.csv"
    labels.write_text("precious")
    with pytest.raises(OutputError, match="not a folder"):
        with atomic_directory(labels) as staging:
            (staging / "model.json").write_text("{}")
    assert labels.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CollectedData.csv"]
