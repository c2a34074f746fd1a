"""Training under DDP: two processes on the CPU (gloo), as a multi-GPU or cluster job runs.

Before, only the one-network run came through whole. Under two processes a per-view run put a
model directory in place with its model.json but neither view's network (the second process's
stage, which holds no checkpoints, was renamed over the first's); a crop-zoom run's second
process failed once both stages had trained, which fails a cluster job, and with unsupervised
losses as soon as its detector had (it looked for the detector in its own stage, which has
none); and each process averaged the epoch's losses over its own share of the batches, so the
collapse guard and the choice of the best epoch could decide differently in each.

A stop signal that reached the processes at different moments, or only one of them, stopped
each where it found it: the others waited in their next collective, or failed on the closed
connection and deleted the run with its epochs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from pytorch_lightning.utilities import rank_zero_only

from element_lightning_pose.engine.model_dir import ModelInfo, read_model_info
from element_lightning_pose.engine.training.single import from_global_rank_zero

SCRIPT = Path(__file__).with_name("ddp_runs.py")


def _records(path: Path) -> dict[str, dict]:
    return {r["kind"]: r for r in map(json.loads, path.read_text().splitlines())} if path.is_file() else {}


def _ddp_env() -> dict[str, str]:
    """Two processes of one thread each; Lightning picks a free port."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_PORT", None)
    return env


def test_every_kind_of_run_trains_under_two_ddp_processes(tmp_path):
    env = _ddp_env()
    kinds = ["single", "crop_zoom", "per_view", "semi_supervised", "crop_zoom_semi"]
    command = [sys.executable, str(SCRIPT), str(tmp_path), *kinds]
    try:  # 35 s on an idle 2-core machine
        run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    except subprocess.TimeoutExpired as late:
        done = [p.name for p in tmp_path.glob("rank*.jsonl")]
        pytest.fail(f"no end in {late.timeout} s; finished: {done}\n{late.stderr!s:.6000}")
    output = run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == 0, output
    # the weights were made channels-last after DDP had laid out its gradient buckets: every
    # gradient was copied strided into them, every step
    assert "Grad strides do not match bucket view strides" not in run.stderr
    first, second = _records(tmp_path / "rank0.jsonl"), _records(tmp_path / "rank1.jsonl")
    assert list(first) == kinds, output
    assert list(second) == kinds, output  # the second process came through every run too

    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == sorted(kinds)  # no staging folder left
    read_model_info(models / "single")
    assert read_model_info(models / "semi_supervised").unsupervised_losses == ["temporal"]
    assert read_model_info(models / "crop_zoom").kind == "crop_zoom"
    assert read_model_info(models / "crop_zoom_semi" / "pose").unsupervised_losses == ["temporal"]
    assert (models / "crop_zoom" / "detector" / "checkpoints" / "best.ckpt").is_file()
    per_view = ModelInfo.from_dict(json.loads((models / "per_view" / "model.json").read_text()))
    assert per_view.kind == "per_view"
    for view in ("cam0", "cam1"):
        assert read_model_info(models / "per_view" / view).kind == "single_stage"

    # the epoch metrics are averaged over both processes: each saw the same
    for kind in ("single", "crop_zoom", "semi_supervised"):
        ours, theirs = first[kind]["history"], second[kind]["history"]
        for column in ("train_loss", "val_loss", "val_pixel_error"):
            assert ours[column] == pytest.approx(theirs[column], rel=1e-6), (kind, column)


@pytest.mark.parametrize("signalled", ["the second process", "the process group"])
def test_a_stop_ends_every_ddp_process_at_the_same_step_and_keeps_the_run(tmp_path, signalled):
    env = _ddp_env()
    command = [sys.executable, str(SCRIPT), str(tmp_path), "long"]
    run = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    models = tmp_path / "models"
    try:
        deadline = time.monotonic() + 300
        while not list(models.glob("*/checkpoints/last.ckpt")):  # an epoch is done: the run is worth keeping
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0][-6000:]
            time.sleep(0.2)
        if signalled == "the process group":  # a cancel from the app, Ctrl-C: every process, each in its own moment
            os.killpg(run.pid, signal.SIGTERM)
        else:  # the first process learns of the stop from the second
            os.kill(int((tmp_path / "pid1").read_text()), signal.SIGTERM)
        output, _ = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        pytest.fail(
            f"the processes did not end: {_records(tmp_path / 'rank0.jsonl')}, {_records(tmp_path / 'rank1.jsonl')}"
        )
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 128 + signal.SIGTERM, output[-6000:]
    for rank in (0, 1):
        assert _records(tmp_path / f"rank{rank}.jsonl")["long"]["stopped_by"] == signal.SIGTERM, output[-6000:]
    kept = models / "long.stopped"
    assert sorted(p.name for p in models.iterdir()) == ["long.stopped"]  # nothing half-written beside it
    assert (kept / "checkpoints" / "last.ckpt").is_file()
    assert _records(tmp_path / "rank0.jsonl")["long"]["kept"] == str(kept)


def _read_in_two_processes(rank: int, folder: str) -> None:
    """One of two gloo processes: what global rank 0 reads, every process gets, or its error."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    rank_zero_only.rank = rank  # as Lightning sets it
    try:
        here = Path(folder, f"only_rank_{rank}.txt")  # a file the other process does not have
        here.write_text(f"written by {rank}")
        got = from_global_rank_zero(Path(folder, "only_rank_0.txt").read_text)
        Path(folder, f"got{rank}").write_text(got)
        try:
            from_global_rank_zero(Path(folder, "missing.txt").read_text)
        except FileNotFoundError as error:  # raised in every process, not left waiting in the broadcast
            Path(folder, f"error{rank}").write_text(str(error))
    finally:
        dist.destroy_process_group()


def test_what_global_rank_zero_reads_reaches_every_process_and_so_does_its_error(tmp_path):
    mp.start_processes(_read_in_two_processes, args=(str(tmp_path),), nprocs=2, start_method="spawn", join=True)
    for rank in (0, 1):
        assert (tmp_path / f"got{rank}").read_text() == "written by 0"
        assert "missing.txt" in (tmp_path / f"error{rank}").read_text()
