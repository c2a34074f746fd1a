"""Atomic output: the old file or nothing, never a partial one; ordinary file modes."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from element_lightning_pose.engine.atomic import atomic_output, write_text_atomic
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
    from element_lightning_pose.engine.atomic import atomic_directory

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
