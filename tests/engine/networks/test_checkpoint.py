"""Reading checkpoints (engine.networks.checkpoint): only what a checkpoint of this engine holds.

A model directory comes from anywhere (another lab, a ``Model`` row), so a checkpoint whose
pickle would call code must be refused before that code runs, on every path that reads one:
inference, the check before a resume, and Lightning's own read when it resumes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.model_dir import ModelDirectoryError
from element_lightning_pose.engine.networks.checkpoint import read_checkpoint
from element_lightning_pose.engine.training import train
from element_lightning_pose.engine.training.single import _atomic_checkpoint_io
from tests.engine.conftest import TINY_CONFIG

pytestmark = pytest.mark.slow  # trains the shared tiny model


class _WritesMarker:
    """Unpickled by Python's full unpickler, this calls ``exec``, which writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _with_payload(checkpoint: Path, marker: Path) -> None:
    """Rewrite one of our own checkpoints with a payload among its hyper-parameters."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own file, trusted
    state["hyper_parameters"]["note"] = _WritesMarker(marker)
    torch.save(state, checkpoint)


@pytest.fixture
def crafted_model_dir(tiny_model_dir, tmp_path) -> tuple[Path, Path]:
    """A copy of the tiny model whose best.ckpt and last.ckpt would write a marker when unpickled."""
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "shared_model"))
    marker = tmp_path / "code_ran"
    for name in ("best.ckpt", "last.ckpt"):
        _with_payload(model_dir / "checkpoints" / name, marker)
    return model_dir, marker


def test_a_checkpoint_that_would_run_code_is_refused_before_it_runs(crafted_model_dir, tiny_project):
    model_dir, marker = crafted_model_dir
    best, last = model_dir / "checkpoints" / "best.ckpt", model_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(ModelDirectoryError, match=r"refused: .* global exec, .*could run code") as info:
        load_model(model_dir)
    assert str(best) in str(info.value) and "\n" not in str(info.value)
    # the check before resuming, and Lightning's own read of the file it resumes from
    with pytest.raises(ModelDirectoryError, match="refused") as info:
        train(TINY_CONFIG, tiny_project.root, model_dir, resume_from=last, progress=False)
    assert str(last) in str(info.value)
    with pytest.raises(ModelDirectoryError, match="refused") as info:
        _atomic_checkpoint_io().load_checkpoint(last, weights_only=False)
    assert str(last) in str(info.value)
    assert not marker.exists()


def test_our_own_checkpoints_load_without_the_full_unpickler(tiny_model_dir):
    best = read_checkpoint(tiny_model_dir / "checkpoints" / "best.ckpt")
    last = read_checkpoint(tiny_model_dir / "checkpoints" / "last.ckpt")
    assert not best.has_optimizer_state and last.has_optimizer_state
    assert best.network_weights.keys() == last.network_weights.keys()
    # everything Lightning needs to resume: loops, callbacks, optimizer and schedule
    state = _atomic_checkpoint_io().load_checkpoint(tiny_model_dir / "checkpoints" / "last.ckpt")
    assert {"loops", "callbacks", "optimizer_states", "lr_schedulers"} <= set(state)
