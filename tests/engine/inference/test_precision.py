"""Inference precision chosen at run time: the accuracy gate, its fallback to fp32, and what the
model directory keeps (``engine.inference.precision``)."""

from __future__ import annotations

import json
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from element_lightning_pose.cli import main as elp
from element_lightning_pose.engine.data.keypoints import read_predictions
from element_lightning_pose.engine.hardware import native_bf16
from element_lightning_pose.engine.inference import precision
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.openvino import OpenVINOBackbone, openvino_version
from element_lightning_pose.engine.inference.predict import predict_labeled
from element_lightning_pose.engine.model_dir import PRECISION_JSON, QUANTISED_DIR

INT8_HERE = precision.unavailable_reason(precision.INT8, __import__("torch").device("cpu")) is None
needs_int8 = pytest.mark.skipif(not INT8_HERE, reason="this torch has no FX int8 quantisation")


@pytest.fixture
def model_dir(tiny_model_dir, tmp_path):
    """A private copy of the shared tiny model: the precision checks write into it."""
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


@needs_int8
def test_a_failing_gate_falls_back_to_fp32_and_says_so(model_dir, tiny_project, monkeypatch):
    # the real int8 path, measured on the real labeled frames; only the tolerance is made impossible
    monkeypatch.setattr(precision, "GATE_MEDIAN_PX", -1.0)
    model = load_model(model_dir, device="cpu")
    said = []
    used, choice = precision.select_precision(model, "int8", project=tiny_project.root, report=said.append)
    assert choice.used == "fp32" and used is model
    assert "median distance to fp32" in choice.message and "using fp32" in choice.message
    assert said[-1] == choice.message
    # the failed check is kept: the next run says so again without re-checking
    again = []
    _, choice = precision.select_precision(load_model(model_dir, device="cpu"), "int8", report=again.append)
    assert choice.used == "fp32" and not any("checking" in m for m in again)


@needs_int8
def test_a_quantised_model_round_trips_through_its_model_directory(model_dir, tiny_project, monkeypatch):
    # the tiny model's one epoch leaves broad heatmaps whose peaks int8 may move past the gate;
    # this test is about what the directory keeps, so any int8 result is let through
    for tolerance in ("GATE_MEDIAN_PX", "GATE_P99_PX", "GATE_ERROR_RISE"):
        monkeypatch.setattr(precision, tolerance, float("inf"))
    model = load_model(model_dir, device="cpu")
    said = []
    fast, choice = precision.select_precision(model, "int8", project=tiny_project.root, report=said.append)
    assert choice.used == "int8", choice.message
    assert any("checking int8" in m for m in said)
    assert choice.gates["int8"].passed
    labels = precision.labeled_frames_of(model, tiny_project.root)
    first = predict_labeled(fast, labels)
    assert not np.array_equal(first, predict_labeled(model, labels))  # int8 really ran

    record = json.loads((model_dir / PRECISION_JSON).read_text())
    weights = list((model_dir / QUANTISED_DIR).iterdir())
    assert len(weights) == 1 and record["checkpoint_sha256"]
    for path in (model_dir / PRECISION_JSON, *weights):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not list(model_dir.glob(".*tmp*"))

    # a new process's view: load the directory again; no project, no re-calibration, same keypoints
    said = []
    reloaded, choice = precision.select_precision(load_model(model_dir, device="cpu"), "int8", report=said.append)
    assert choice.used == "int8" and not any("checking" in m for m in said)
    assert np.array_equal(predict_labeled(reloaded, labels), first)


@needs_int8
def test_checks_of_another_checkpoint_are_not_trusted(model_dir, tiny_project):
    precision.select_precision(load_model(model_dir, device="cpu"), "int8", project=tiny_project.root)
    record = json.loads((model_dir / PRECISION_JSON).read_text())
    record["checkpoint_sha256"] = "0" * 64  # as if the checkpoint had been replaced since
    (model_dir / PRECISION_JSON).write_text(json.dumps(record))
    said = []
    precision.select_precision(
        load_model(model_dir, device="cpu"), "int8", project=tiny_project.root, report=said.append
    )
    assert any("checking int8" in m for m in said)


def test_without_labeled_frames_a_fast_path_is_not_used(model_dir, tmp_path):
    model = load_model(model_dir, device="cpu")
    model.info.project_root = str(tmp_path / "moved-away")
    _, choice = precision.select_precision(model, "auto")
    assert choice.used == "fp32" and "fp32" in choice.message
    assert not (model_dir / PRECISION_JSON).exists()


def test_bf16_is_refused_without_native_bf16(model_dir, tiny_project):
    model = load_model(model_dir, device="cpu")
    _, choice = precision.select_precision(model, "bf16", project=tiny_project.root)
    if native_bf16("cpu"):
        assert choice.used in ("bf16", "fp32") and "bf16" in choice.message
    else:
        assert choice.used == "fp32" and "no native bf16" in choice.message


def test_unknown_precision_is_one_error(model_dir):
    with pytest.raises(precision.PrecisionError, match="'fp16'.*auto, fp32, bf16, int8"):
        precision.select_precision(load_model(model_dir, device="cpu"), "fp16")


@needs_int8
def test_cli_auto_says_which_precision_it_used(model_dir, tiny_project, tmp_path, capsys):
    video = tiny_project.videos[0]
    code = elp(
        ["predict", str(model_dir), str(video), "-o", str(tmp_path / "out"), "--no-progress", "--precision", "auto"]
    )
    err = capsys.readouterr().err
    assert code == 0 and "elp predict: precision" in err
    assert read_predictions(tmp_path / "out" / f"{video.stem}.csv")[0].shape[0] > 0


OPENVINO_HERE = precision.unavailable_reason(precision.OPENVINO_FP32, __import__("torch").device("cpu")) is None
needs_openvino = pytest.mark.skipif(not OPENVINO_HERE, reason="openvino is not installed")


@needs_openvino
def test_openvino_fp32_keeps_pytorchs_keypoints_and_is_checked_once(model_dir, tiny_project):
    model = load_model(model_dir, device="cpu")
    said = []
    fast, choice = precision.select_precision(model, "ov-fp32", project=tiny_project.root, report=said.append)
    assert choice.used == "ov-fp32", choice.message
    assert any("checking ov-fp32" in m for m in said)
    assert isinstance(fast.net.backbone, OpenVINOBackbone) and not isinstance(model.net.backbone, OpenVINOBackbone)
    labels = precision.labeled_frames_of(model, tiny_project.root)
    reference, points = predict_labeled(model, labels), predict_labeled(fast, labels)
    assert np.nanmax(np.abs(points[..., :2] - reference[..., :2])) < 0.01  # the same arithmetic, compiled
    record = json.loads((model_dir / PRECISION_JSON).read_text())
    (device,) = record["devices"].values()
    assert device["openvino_version"] == openvino_version() and device["results"]["ov-fp32"]["passed"]

    # the next run trusts the check; another OpenVINO version is checked again
    again = []
    _, choice = precision.select_precision(load_model(model_dir, device="cpu"), "ov-fp32", report=again.append)
    assert choice.used == "ov-fp32" and not any("checking" in m for m in again)
    device["openvino_version"] = "2020.1"
    device["results"]["ov-bf16"] = {**device["results"]["ov-fp32"], "precision": "ov-bf16"}  # checked by 2020.1
    (model_dir / PRECISION_JSON).write_text(json.dumps(record))
    again = []
    precision.select_precision(
        load_model(model_dir, device="cpu"), "ov-fp32", project=tiny_project.root, report=again.append
    )
    assert any("checking ov-fp32" in m for m in again)
    # the other OpenVINO path's old result is forgotten with it, not trusted under the new version
    (device,) = json.loads((model_dir / PRECISION_JSON).read_text())["devices"].values()
    assert "ov-bf16" not in device["results"] and device["openvino_version"] == openvino_version()


@needs_openvino
def test_the_backbone_openvino_converted_is_kept_and_read_back_on_the_next_run(model_dir, tiny_project, monkeypatch):
    """Converting the backbone (a torch.jit trace) took 2.6 s of each resnet18 run on the AMD EPYC."""
    from element_lightning_pose.engine.inference import openvino

    model = load_model(model_dir, device="cpu")
    fast, choice = precision.select_precision(model, "ov-fp32", project=tiny_project.root)
    assert choice.used == "ov-fp32", choice.message
    (folder,) = (model_dir / QUANTISED_DIR).glob("openvino-*")
    kept = folder / "backbone.xml"
    assert kept.with_suffix(".bin").is_file()
    for path in (kept, kept.with_suffix(".bin")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # readable by the lab
    labels = precision.labeled_frames_of(model, tiny_project.root)
    first = predict_labeled(fast, labels)

    def no_converting(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(openvino, "_convert", no_converting)
    again, choice = precision.select_precision(load_model(model_dir, device="cpu"), "ov-fp32")
    assert choice.used == "ov-fp32" and np.array_equal(predict_labeled(again, labels), first)

    # a damaged file is converted again and replaced
    monkeypatch.undo()
    kept.write_text("not a network")
    repaired, choice = precision.select_precision(load_model(model_dir, device="cpu"), "ov-fp32")
    assert choice.used == "ov-fp32" and np.array_equal(predict_labeled(repaired, labels), first)
    assert kept.read_text().startswith("<?xml")
    assert [p.name for p in (model_dir / QUANTISED_DIR).iterdir()] == [folder.name]
    assert {p.name for p in folder.iterdir()} == {kept.name, kept.with_suffix(".bin").name}


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@needs_openvino
def test_openvino_bf16_needs_native_bf16(model_dir, tiny_project):
    model = load_model(model_dir, device="cpu")
    _, choice = precision.select_precision(model, "ov-bf16", project=tiny_project.root)
    if native_bf16("cpu"):
        assert choice.used in ("ov-bf16", "fp32") and "ov-bf16" in choice.message
        assert "ov-bf16" in choice.gates  # measured against fp32, whichever way it went
    else:
        assert choice.used == "fp32" and "no native bf16" in choice.message


@needs_openvino
def test_an_openvino_backbone_serves_several_threads(model_dir):
    """Videos predicted side by side share the model: each thread has its own inference request."""
    import torch

    model = load_model(model_dir, device="cpu")
    fast = precision.with_openvino(model, "ov-fp32")
    frames = [torch.rand(3, 3, *model.image_resize) for _ in range(6)]
    alone = [fast.net.encode(f) for f in frames]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(fast.net.encode, frames))
    for one, other in zip(alone, together):
        assert torch.equal(one, other)


def test_openvino_missing_is_said_and_fp32_used(model_dir, tiny_project, monkeypatch):
    monkeypatch.setattr(precision, "openvino_runtime", lambda: None)
    _, choice = precision.select_precision(load_model(model_dir, device="cpu"), "ov-fp32", project=tiny_project.root)
    assert choice.used == "fp32"
    assert "openvino is not installed (pip install element-lightning-pose[openvino])" in choice.message


@needs_openvino
def test_a_process_that_used_openvino_stops_a_later_training_cleanly():
    """Dropping the last OpenVINO Core unloaded its CPU plugin, and a training stopped by SIGTERM
    later in the same process died of a segmentation fault (a pipeline worker predicts, then
    trains). The two tests that found it, run in one process of their own: exit 139 before."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    tests = [
        "tests/engine/inference/test_precision.py::test_openvino_fp32_keeps_pytorchs_keypoints_and_is_checked_once",
        "tests/engine/training/test_stopped.py::test_train_raises_training_interrupted_and_restores_the_callers_handlers",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {(done.stdout + done.stderr)[-2000:]}"
