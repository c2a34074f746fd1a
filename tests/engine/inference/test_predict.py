"""Streaming inference: shapes, coordinate mapping, CSV round trip, streaming exactness, CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from element_lightning_pose.cli import main as elp
from element_lightning_pose.engine.data.keypoints import read_predictions
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.data.video import read_frames, video_info
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import ModelDirError, predict_labeled, predict_video


@pytest.fixture(scope="module")
def project(tiny_project):
    # frames 64 high x 96 wide, network input 64 x 64: predictions must be mapped back
    return tiny_project


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


def test_predict_video_returns_original_frame_pixels_and_writes_the_csv(model, project, tmp_path):
    video = project.videos[0]
    info = video_info(video)
    out_csv = tmp_path / "pred" / "v.csv"
    predictions = predict_video(model, video, batch_size=8, out_csv=out_csv, progress=False).predictions
    assert predictions.shape == (info.n_frames, len(project.bodyparts), 3)
    assert np.isfinite(predictions).all()
    assert predictions[..., 0].min() >= -0.5 and predictions[..., 0].max() <= info.width - 0.5
    assert predictions[..., 1].min() >= -0.5 and predictions[..., 1].max() <= info.height - 0.5
    assert ((predictions[..., 2] >= 0) & (predictions[..., 2] <= 1)).all()
    values, bodyparts = read_predictions(out_csv)
    assert bodyparts == project.bodyparts
    np.testing.assert_allclose(values, predictions, rtol=0, atol=1e-5)


def test_streaming_equals_predicting_the_frames_directly(model, project):
    video = project.videos[0]
    streamed = predict_video(model, video, batch_size=7, progress=False).predictions
    frames = read_frames(video, range(len(streamed)))
    direct = model.predict_frames(frames)
    np.testing.assert_allclose(streamed, direct, rtol=0, atol=1e-4)


def test_frame_range_and_csv_index(model, project, tmp_path):
    import pandas as pd

    video = project.videos[0]
    everything = predict_video(model, video, progress=False).predictions
    part = predict_video(
        model, video, start=10, stop=25, batch_size=4, out_csv=tmp_path / "p.csv", progress=False
    ).predictions
    np.testing.assert_allclose(part, everything[10:25], rtol=0, atol=1e-4)
    index = pd.read_csv(tmp_path / "p.csv", header=[0, 1, 2], index_col=0).index
    assert list(index) == list(range(10, 25))


def test_coordinates_scale_with_the_frame(model):
    # a 2x nearest-neighbour upscale resizes back (area averaging) to the very same input,
    # so its predictions must be exactly the pixel-centre-aware 2x of the originals
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    small = model.predict_frames(frames)
    large = model.predict_frames(frames.repeat(2, axis=1).repeat(2, axis=2))
    np.testing.assert_allclose(large[..., :2], (small[..., :2] + 0.5) * 2 - 0.5, rtol=0, atol=1e-3)
    np.testing.assert_allclose(large[..., 2], small[..., 2], rtol=0, atol=1e-5)


def test_predict_labeled_matches_frames(model, project):
    labels, _ = load_project(project.root)
    labeled = predict_labeled(model, labels, batch_size=5)
    assert labeled.shape == (len(labels), len(labels.bodyparts), 3)
    from element_lightning_pose.engine.data.labels import read_image

    first = model.predict_frames(read_image(labels.root / labels.image_paths[0])[None])[0]
    np.testing.assert_allclose(labeled[0], first, rtol=0, atol=1e-4)


def test_load_model_names_the_missing_checkpoint(tmp_path):
    with pytest.raises(ModelDirError) as info:
        load_model(tmp_path)
    assert str(tmp_path / "checkpoints" / "best.ckpt") in str(info.value)


def test_cli_predicts_each_video(model, project, tmp_path, capsys):
    out = tmp_path / "out"
    code = elp(
        ["predict", str(model.model_dir), str(project.videos[0]), "-o", str(out), "--batch-size", "5", "--no-progress"]
    )
    assert code == 0
    values, _ = read_predictions(out / f"{project.videos[0].stem}.csv")
    assert values.shape[0] == video_info(project.videos[0]).n_frames
    code = elp(["predict", str(tmp_path / "nomodel"), str(project.videos[0]), "-o", str(out), "--no-progress"])
    assert code == 2 and "best.ckpt" in capsys.readouterr().err


def test_batchnorm_folding_keeps_the_predictions(model, project):
    plain = load_model(model.model_dir, fuse=False)
    frames = read_frames(project.videos[0], range(8))
    fused_points, plain_points = model.predict_frames(frames), plain.predict_frames(frames)
    np.testing.assert_allclose(fused_points[..., :2], plain_points[..., :2], rtol=0, atol=1e-2)
    np.testing.assert_allclose(fused_points[..., 2], plain_points[..., 2], rtol=0, atol=1e-3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.net.backbone.modules())


# --------------------------------------------------------------------------- damaged videos, result, CLI names


def test_short_decode_is_an_error_and_writes_nothing(model, tmp_path):
    from element_lightning_pose.engine.data.video import ShortVideoError
    from tests.engine.data.damaged_video import N_FRAMES as LISTED
    from tests.engine.data.damaged_video import corrupted, truncated_faststart

    out = tmp_path / "out"
    for video in (corrupted(tmp_path / "corrupt.mp4"), truncated_faststart(tmp_path / "cut.mp4")):
        with pytest.raises(ShortVideoError, match=f"{video.name}: decoding stopped at frame \\d+ of {LISTED}"):
            predict_video(
                model, video, batch_size=8, out_csv=out / "p.csv", diagnostics_csv=out / "d.csv", progress=False
            )
        assert not out.exists() or list(out.iterdir()) == []


def test_allow_short_warns_and_fills_the_missing_frames(model, tmp_path):
    from element_lightning_pose.engine.inference.predict import ShortVideoWarning
    from tests.engine.data.damaged_video import N_FRAMES as LISTED
    from tests.engine.data.damaged_video import corrupted

    video = corrupted(tmp_path / "corrupt.mp4")
    with pytest.warns(ShortVideoWarning, match="corrupt.mp4: decoding stopped at frame"):
        result = predict_video(model, video, batch_size=8, out_csv=tmp_path / "p.csv", progress=False, allow_short=True)
    assert result.n_frames == LISTED and 0 < result.n_decoded < LISTED
    decoded, missing = result.predictions[: result.n_decoded], result.predictions[result.n_decoded :]
    assert np.isfinite(decoded).all()
    assert np.isnan(missing[..., :2]).all() and (missing[..., 2] == 0).all()
    values, _ = read_predictions(tmp_path / "p.csv")
    assert values.shape[0] == LISTED


def test_predict_video_returns_its_timing_in_the_result(model, project, tmp_path):
    result = predict_video(model, project.videos[0], batch_size=8, out_csv=tmp_path / "p.csv", progress=False)
    assert result.out_csv == tmp_path / "p.csv" and result.video == project.videos[0]
    assert result.n_decoded == result.n_frames == video_info(project.videos[0]).n_frames
    assert result.elapsed_s > 0 and result.frames_per_s == pytest.approx(result.n_frames / result.elapsed_s)
    np.testing.assert_array_equal(result.frame_index, np.arange(result.n_frames))
    assert result.bodyparts == project.bodyparts
    assert "last_video_fps" not in (model.info.extra if model.info else {})  # nothing written into the model


def test_cli_short_video_is_one_line_on_stderr(model, tmp_path, capsys):
    import subprocess
    import sys

    from tests.engine.data.damaged_video import N_FRAMES as LISTED
    from tests.engine.data.damaged_video import corrupted

    video = corrupted(tmp_path / "corrupt.mp4")
    out = tmp_path / "out"
    # a separate process, as a user runs it: FFmpeg's own messages would reach stderr too
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "element_lightning_pose.cli",
            "predict",
            str(model.model_dir),
            str(video),
            "-o",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"},
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(video) in lines[0] and f"of {LISTED}" in lines[0], run.stderr
    assert not (out / "corrupt.csv").exists()
    code = elp(["predict", str(model.model_dir), str(video), "-o", str(out), "--no-progress", "--allow-short-video"])
    assert code == 0
    assert "warning" in capsys.readouterr().err
    assert read_predictions(out / "corrupt.csv")[0].shape[0] == LISTED


def test_cli_refuses_two_videos_with_the_same_name_before_any_work(project, tmp_path, capsys):
    import shutil

    first, second = tmp_path / "a" / "video00.mp4", tmp_path / "b" / "video00.mp4"
    for copy in (first, second):
        copy.parent.mkdir()
        shutil.copy(project.videos[0], copy)
    out = tmp_path / "out"
    # the model directory does not exist: the name clash must be found before loading it
    code = elp(["predict", str(tmp_path / "nomodel"), str(first), str(second), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and str(first) in err and str(second) in err and "best.ckpt" not in err
    assert not out.exists()


def test_inference_and_evaluation_load_no_lightning(model, project):
    """Predicting and evaluating (context windows included) import neither Lightning nor DataJoint."""
    import subprocess
    import sys

    script = f"""
import sys
from element_lightning_pose.engine.inference.evaluate import evaluate
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_video
model = load_model({str(model.model_dir)!r}, device="cpu")
predict_video(model, {str(project.videos[0])!r}, stop=8, progress=False)
labels, _ = load_project({str(project.root)!r})
evaluate({str(model.model_dir)!r}, labels, model=model)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pytorch_lightning", "lightning", "lightning_fabric", "datajoint"))
print("LOADED", loaded)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "LOADED []" in run.stdout, run.stdout


def test_multi_video_prediction_writes_the_csvs_of_single_video_prediction(model, project, tmp_path):
    """One call over several videos (the next decoding while the network works) = one call per video."""
    from element_lightning_pose.engine.data.video import iter_frames, write_video

    first = project.videos[0]
    frames = list(iter_frames(first))
    second = write_video(tmp_path / "reversed.mp4", reversed(frames), fps=30.0)
    third = write_video(tmp_path / "short.mp4", frames[:7], fps=30.0)
    videos = [first, second, third]
    together, alone = tmp_path / "together", tmp_path / "alone"
    assert elp(["predict", str(model.model_dir), *map(str, videos), "-o", str(together), "--no-progress"]) == 0
    for video in videos:
        assert elp(["predict", str(model.model_dir), str(video), "-o", str(alone), "--no-progress"]) == 0
    for video in videos:
        name = f"{video.stem}.csv"
        assert (together / name).read_bytes() == (alone / name).read_bytes(), name
    assert sorted(p.name for p in together.iterdir()) == sorted(f"{v.stem}.csv" for v in videos)


def test_predict_videos_opens_every_video_before_any_work(model, project, tmp_path):
    from element_lightning_pose.engine.data.video import VideoError
    from element_lightning_pose.engine.inference.predict import predict_videos

    missing = tmp_path / "missing.mp4"
    out = [tmp_path / "a.csv", tmp_path / "b.csv"]
    with pytest.raises((VideoError, FileNotFoundError), match="missing.mp4"):
        predict_videos(model, [project.videos[0], missing], out, progress=False)
    assert not out[0].exists()


def test_videos_side_by_side_equal_videos_one_after_another(model, project, tmp_path):
    """Two worker threads at one torch thread each write what one video at a time writes."""
    from element_lightning_pose.engine.data.video import iter_frames, write_video
    from element_lightning_pose.engine.inference.predict import predict_videos

    frames = list(iter_frames(project.videos[0]))
    videos = [project.videos[0]] + [write_video(tmp_path / f"v{i}.mp4", frames[i * 3 :], fps=30.0) for i in range(1, 4)]
    threads = torch.get_num_threads()
    done_in: list[tuple[str, str]] = []

    def done(result) -> None:
        import threading

        done_in.append((result.video.name, threading.current_thread().name))

    outputs = {}
    for at_once in (1, 2):
        out = [tmp_path / f"at{at_once}" / f"{v.stem}.csv" for v in videos]
        results = predict_videos(model, videos, out, progress=False, at_once=at_once, on_done=done)
        assert [r.video for r in results] == videos  # the videos' order, whichever finished first
        assert torch.get_num_threads() == threads  # restored
        outputs[at_once] = [p.read_bytes() for p in out]
        for r, v in zip(results, videos):
            assert len(r.predictions) == video_info(v).n_frames
    assert outputs[1] == outputs[2]
    assert sorted(name for name, _ in done_in) == sorted(v.name for v in videos * 2)
    assert {thread for _, thread in done_in} == {"MainThread"}  # the caller's callback, in the caller's thread


def test_a_failing_video_side_by_side_stops_the_others_and_raises_its_error(model, project, tmp_path):
    from element_lightning_pose.engine.inference.predict import predict_videos

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    videos = [project.videos[0]] * 4
    out = [tmp_path / "ok0.csv", blocker / "bad.csv", tmp_path / "ok2.csv", tmp_path / "ok3.csv"]
    threads = torch.get_num_threads()
    with pytest.raises(Exception, match="not_a_folder"):
        predict_videos(model, videos, out, progress=False, at_once=2)
    assert torch.get_num_threads() == threads
    assert not out[3].exists()  # queued behind the failure: never started
    assert not list(tmp_path.glob("*.tmp*"))  # nothing half-written
