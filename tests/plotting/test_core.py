"""Trace plots, labeled videos and evaluation figures, on a tiny synthetic project whose ground
truth stands in for predictions (real PNG and mp4 files, decoded again with OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from element_lightning_pose import plotting
from element_lightning_pose.cli import main as elp_main
from element_lightning_pose.engine import eks
from element_lightning_pose.engine.data.keypoints import write_predictions
from element_lightning_pose.engine.data.video import read_frames, video_info
from element_lightning_pose.synthetic.projects import make_synthetic_project

N_FRAMES = 30


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("plotting") / "synth"
    synth = make_synthetic_project(root, seed=3, image_size=(64, 64), n_labeled=6, n_video_frames=N_FRAMES)
    truth, _ = synth.ground_truth(synth.videos[0])
    return synth, truth


def as_predictions(truth: np.ndarray, likelihood: float = 0.99) -> np.ndarray:
    return np.concatenate([truth, np.full((*truth.shape[:2], 1), likelihood)], axis=-1)


def ensemble_of(truth: np.ndarray, n_members: int = 3, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([as_predictions(truth + rng.normal(0, noise, truth.shape)) for _ in range(n_members)])


def band_collections(figure) -> list[PolyCollection]:
    return [c for ax in figure.axes for c in ax.collections if c.get_gid() == plotting.POSTERIOR_BAND_GID]


def isolated_keypoints(points: np.ndarray, min_distance: float) -> list[int]:
    """Keypoints farther than ``min_distance`` from every other one and clear of the frame number."""
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    clear_of_text = (points[:, 0] > 22) | (points[:, 1] > 16)
    return [k for k in range(len(points)) if distance[k].min() > min_distance and clear_of_text[k]]


# ------------------------------------------------------------------------------ traces


def test_trace_png_decodes_at_the_figure_size(project, tmp_path):
    synth, truth = project
    out = tmp_path / "figs" / "traces.png"
    figure = plotting.plot_traces(
        truth[..., 0],
        truth[..., 1],
        np.full(truth.shape[:2], 0.95),
        synth.bodyparts,
        fps=30.0,
        keypoints=["nose", "tail_tip"],
        out=out,
    )
    image = cv2.imread(str(out))
    assert image is not None and out.stat().st_size > 0
    width, height = np.round(figure.get_size_inches() * 100).astype(int)
    assert image.shape == (height, width, 3)
    assert len(figure.axes) == 2 * 3  # two body parts x (x, y, likelihood)
    assert figure.axes[-1].get_xlabel() == "time (s)"
    assert figure.axes[0].get_ylabel().startswith("nose")
    assert not list(tmp_path.glob("figs/.*"))  # no temporary file left behind


def test_time_axis_is_in_frames_without_fps(project):
    synth, truth = project
    figure = plotting.plot_traces(
        truth[..., 0],
        truth[..., 1],
        np.ones(truth.shape[:2]),
        synth.bodyparts,
        keypoints=[0],
        frames=(5, 20),
        first_frame=100,
    )
    assert figure.axes[-1].get_xlabel() == "frame"
    line = figure.axes[0].get_lines()[0]
    assert line.get_xdata()[0] == 105 and len(line.get_xdata()) == 15
    np.testing.assert_allclose(line.get_ydata(), truth[5:20, 0, 0])


def test_posterior_band_spans_1_96_sigma_and_changes_the_picture(project, tmp_path):
    synth, truth = project
    result = eks.smooth(ensemble_of(truth), synth.bodyparts)
    common = dict(keypoints=["centre", "paw_left_hind"], fps=30.0)
    with_band = plotting.plot_traces(
        result.x,
        result.y,
        result.likelihood,
        synth.bodyparts,
        posterior_var=result.posterior_var,
        out=tmp_path / "band.png",
        **common,
    )
    without = plotting.plot_traces(
        result.x, result.y, result.likelihood, synth.bodyparts, out=tmp_path / "plain.png", **common
    )
    assert len(band_collections(without)) == 0
    bands = band_collections(with_band)
    assert len(bands) == 4 and all(isinstance(b, PolyCollection) for b in bands)
    k = synth.bodyparts.index("centre")
    upper = result.x[:, k] + 1.959964 * np.sqrt(result.posterior_var[:, k, 0])
    lower = result.x[:, k] - 1.959964 * np.sqrt(result.posterior_var[:, k, 0])
    vertices = bands[0].get_paths()[0].vertices[:, 1]
    assert vertices.max() == pytest.approx(upper.max()) and vertices.min() == pytest.approx(lower.min())
    a, b = cv2.imread(str(tmp_path / "band.png")), cv2.imread(str(tmp_path / "plain.png"))
    assert a.shape == b.shape and (np.abs(a.astype(int) - b.astype(int)).sum(axis=2) > 30).mean() > 0.01


def test_members_and_ground_truth_are_drawn(project):
    synth, truth = project
    members = ensemble_of(truth, n_members=4)
    figure = plotting.plot_traces(
        members[0, ..., 0],
        members[0, ..., 1],
        members[0, ..., 2],
        synth.bodyparts,
        members=members,
        ground_truth=truth,
        keypoints=["head"],
    )
    lines = figure.axes[0].get_lines()
    assert len(lines) == 4 + 1 + 1  # members, estimate, ground truth
    dashed = [line for line in lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1
    np.testing.assert_allclose(dashed[0].get_ydata(), truth[:, 1, 0])


def test_trace_inputs_are_checked(project):
    synth, truth = project
    x, y, lik = truth[..., 0], truth[..., 1], np.ones(truth.shape[:2])
    with pytest.raises(ValueError, match="posterior_var"):
        plotting.plot_traces(x, y, lik, synth.bodyparts, posterior_var=np.ones((N_FRAMES, 2, 2)))
    with pytest.raises(ValueError, match="unknown body part 'snout'"):
        plotting.plot_traces(x, y, lik, synth.bodyparts, keypoints=["snout"])
    with pytest.raises(ValueError, match="body part names"):
        plotting.plot_traces(x, y, lik, synth.bodyparts[:-1])
    with pytest.raises(ValueError, match="select no rows"):
        plotting.plot_traces(x, y, lik, synth.bodyparts, frames=(40, 50))


# ------------------------------------------------------------------------------ labeled video


def test_labeled_video_keeps_frames_and_draws_each_part_in_its_colour(project, tmp_path):
    synth, truth = project
    out = plotting.write_labeled_video(
        synth.videos[0], as_predictions(truth), synth.bodyparts, tmp_path / "labeled.mp4"
    )
    source, labeled = video_info(synth.videos[0]), video_info(out)
    assert labeled.n_frames == source.n_frames == N_FRAMES
    assert (labeled.width, labeled.height, labeled.fps) == (source.width, source.height, source.fps)
    colours = plotting.bodypart_colours(len(synth.bodyparts)).astype(float)
    frames = (3, 14, 27)
    drawn = read_frames(out, frames).astype(float)
    checked = 0
    for frame, t in zip(drawn, frames):
        for k in isolated_keypoints(truth[t], min_distance=6):
            x, y = np.round(truth[t, k]).astype(int)
            distances = np.linalg.norm(colours - frame[y, x], axis=1)
            assert distances[k] < 45, (t, synth.bodyparts[k], frame[y, x], colours[k])
            assert distances.argmin() == k
            checked += 1
    assert checked >= 3


def test_low_confidence_keypoints_are_hollow(project, tmp_path):
    synth, truth = project
    confident, doubtful = as_predictions(truth, 0.99), as_predictions(truth, 0.2)
    kwargs = dict(likelihood_threshold=0.9, dot_radius=3)
    high = plotting.write_labeled_video(synth.videos[0], confident, synth.bodyparts, tmp_path / "hi.mp4", **kwargs)
    low = plotting.write_labeled_video(synth.videos[0], doubtful, synth.bodyparts, tmp_path / "lo.mp4", **kwargs)
    frames = range(0, N_FRAMES, 3)
    source = read_frames(synth.videos[0], frames).astype(float)
    high, low = read_frames(high, frames).astype(float), read_frames(low, frames).astype(float)
    colours = plotting.bodypart_colours(len(synth.bodyparts)).astype(float)
    checked = 0
    for i, t in enumerate(frames):
        for k in isolated_keypoints(truth[t], min_distance=8):
            x, y = np.round(truth[t, k]).astype(int)
            assert np.linalg.norm(high[i, y, x] - colours[k]) < 40  # filled dot
            assert np.linalg.norm(low[i, y, x] - source[i, y, x]) < 40  # centre left as it was
            assert np.linalg.norm(low[i, y, x] - colours[k]) > 80
            ring = low[i, y - 3 : y + 4, x - 3 : x + 4] - source[i, y - 3 : y + 4, x - 3 : x + 4]
            assert np.abs(ring).mean() > 15  # but the ring around it is drawn
            checked += 1
    assert checked >= 3


def test_nan_keypoints_are_not_drawn_and_ranges_and_files_chain(project, tmp_path):
    synth, truth = project
    predictions = as_predictions(np.full_like(truth, np.nan))
    out = plotting.write_labeled_video(
        synth.videos[0], predictions, synth.bodyparts, tmp_path / "nan.mp4", start=4, stop=11
    )
    assert video_info(out).n_frames == 7
    drawn, source = read_frames(out, [2]).astype(float)[0], read_frames(synth.videos[0], [6]).astype(float)[0]
    assert np.abs(drawn[20:, :] - source[20:, :]).mean() < 6  # below the frame number: untouched
    # two consecutive files form one recording; predictions cover both
    both = np.concatenate([as_predictions(truth), as_predictions(truth)])
    out = plotting.write_labeled_video(
        [synth.videos[0], synth.videos[0]], both, synth.bodyparts, tmp_path / "two.mp4", start=25, stop=40
    )
    assert video_info(out).n_frames == 15


def test_predictions_that_do_not_fit_the_video_are_refused(project, tmp_path):
    synth, truth = project
    out = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="predictions cover video frames 0..19"):
        plotting.write_labeled_video(synth.videos[0], as_predictions(truth[:20]), synth.bodyparts, out)
    with pytest.raises(ValueError, match="has 30 frames"):
        plotting.write_labeled_video(
            synth.videos[0], as_predictions(np.concatenate([truth, truth])), synth.bodyparts, out
        )
    with pytest.raises(ValueError, match="unknown body part 'tail'"):
        plotting.write_labeled_video(
            synth.videos[0], as_predictions(truth), synth.bodyparts, out, skeleton=[("nose", "tail")]
        )
    assert not out.exists() and not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ evaluation


def evaluation_table(bodyparts: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = []
    for i in range(12):
        split = ("train", "train", "val", "test")[i % 4]
        for bp in bodyparts:
            rows.append(
                {
                    "image": f"labeled-data/v/img{i:03d}.png",
                    "split": split,
                    "bodypart": bp,
                    "error_px": abs(rng.normal(0, 3)) if (i + len(bp)) % 7 else np.nan,
                    "likelihood": 0.9,
                }
            )
    return pd.DataFrame(rows)


def test_evaluation_bars_are_the_mean_error_per_body_part_and_split(project, tmp_path):
    synth, _ = project
    errors = evaluation_table(synth.bodyparts[:4])
    figure = plotting.plot_evaluation(errors, tmp_path / "eval.png")
    assert cv2.imread(str(tmp_path / "eval.png")) is not None
    heights = sorted(round(p.get_height(), 9) for p in figure.axes[0].patches if np.isfinite(p.get_height()))
    means = errors.groupby(["bodypart", "split"])["error_px"].mean().tolist()
    means += errors.groupby("split")["error_px"].mean().tolist()  # the "all" group
    assert heights == sorted(round(m, 9) for m in means)
    assert figure.axes[0].get_ylabel() == "pixel error (px)"
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "train (6 frames)" in labels and "test (3 frames)" in labels


def test_evaluation_needs_its_columns():
    with pytest.raises(ValueError, match="error_px"):
        plotting.plot_evaluation(pd.DataFrame({"image": [], "split": [], "bodypart": []}))
    with pytest.raises(ValueError, match="no finite"):
        plotting.plot_evaluation(
            pd.DataFrame({"image": ["a"], "split": ["train"], "bodypart": ["nose"], "error_px": [np.nan]})
        )


# ------------------------------------------------------------------------------ command line


def test_cli_traces_video_and_evaluation(project, tmp_path, capsys):
    synth, truth = project
    predictions = write_predictions(tmp_path / "pred.csv", as_predictions(truth), synth.bodyparts)
    members = [write_predictions(tmp_path / f"m{i}.csv", m, synth.bodyparts) for i, m in enumerate(ensemble_of(truth))]
    smoothed = eks.smooth([str(m) for m in members]).to_csv(tmp_path / "eks.csv")

    assert (
        elp_main(
            [
                "plot",
                "traces",
                str(predictions),
                "-o",
                str(tmp_path / "t.png"),
                "--fps",
                "30",
                "--keypoints",
                "nose",
                "head",
                "--frames",
                "2:20",
            ]
        )
        == 0
    )
    assert cv2.imread(str(tmp_path / "t.png")) is not None
    assert (
        elp_main(
            ["plot", "traces", str(smoothed), "--eks", "--members", *map(str, members), "-o", str(tmp_path / "eks.png")]
        )
        == 0
    )
    assert cv2.imread(str(tmp_path / "eks.png")) is not None
    assert elp_main(["plot", "traces", str(predictions), "--eks", "-o", str(tmp_path / "no.png")]) == 2
    assert "x_posterior_var" in capsys.readouterr().err and not (tmp_path / "no.png").exists()

    assert (
        elp_main(
            [
                "plot",
                "video",
                str(synth.videos[0]),
                str(smoothed),
                "-o",
                str(tmp_path / "v.mp4"),
                "--start",
                "5",
                "--stop",
                "25",
                "--threshold",
                "0.5",
                "--skeleton",
                "nose-head,head-centre",
            ]
        )
        == 0
    )
    assert video_info(tmp_path / "v.mp4").n_frames == 20
    assert elp_main(["plot", "video", str(synth.videos[0]), str(predictions), "-o", str(tmp_path / "all.mp4")]) == 0
    assert video_info(tmp_path / "all.mp4").n_frames == N_FRAMES
    assert (
        elp_main(["plot", "video", str(synth.videos[0]), str(tmp_path / "missing.csv"), "-o", str(tmp_path / "x.mp4")])
        == 2
    )

    evaluation_table(synth.bodyparts).to_csv(tmp_path / "errors.csv", index=False)
    assert elp_main(["plot", "evaluation", str(tmp_path / "errors.csv"), "-o", str(tmp_path / "e.png")]) == 0
    assert cv2.imread(str(tmp_path / "e.png")) is not None


def test_cli_video_uses_the_frame_numbers_of_a_range_prediction(project, tmp_path):
    synth, truth = project
    partial = write_predictions(
        tmp_path / "part.csv", as_predictions(truth[10:20]), synth.bodyparts, index=np.arange(10, 20)
    )
    assert (
        elp_main(
            [
                "plot",
                "video",
                str(synth.videos[0]),
                str(partial),
                "-o",
                str(tmp_path / "p.mp4"),
                "--start",
                "10",
                "--stop",
                "20",
            ]
        )
        == 0
    )
    assert video_info(tmp_path / "p.mp4").n_frames == 10
    assert elp_main(["plot", "video", str(synth.videos[0]), str(partial), "-o", str(tmp_path / "q.mp4")]) == 2
