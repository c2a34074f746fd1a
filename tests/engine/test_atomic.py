"""Atomic output: the old file or nothing, never a partial one; ordinary file modes."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from element_lightning_pose.engine.atomic import atomic_output, write_text_atomic
from element_lightning_pose.engine.io import write_predictions


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
