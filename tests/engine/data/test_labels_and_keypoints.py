"""Labeled-project reading and prediction writing, on the real example and tiny generated files."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from element_lightning_pose.engine.data.keypoints import (
    keypoint_frame,
    read_keypoint_csv,
    read_predictions,
    write_keypoint_csv,
    write_predictions,
)
from element_lightning_pose.engine.data.labels import context_image_paths, read_image, read_labels
from element_lightning_pose.engine.data.projects import find_videos, load_project
from element_lightning_pose.engine.errors import ProjectError

HEADER = "scorer,me,me,me,me\nbodyparts,nose,nose,tail,tail\ncoords,x,y,x,y\n"


def _project(tmp_path: Path, csv_text: str, images: tuple[str, ...] = ("labeled-data/img0.png",)) -> Path:
    """A tiny project: 8x8 images and a CollectedData.csv with the given text."""
    for name in images:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 100, np.uint8))
    csv_path = tmp_path / "CollectedData.csv"
    csv_path.write_text(csv_text)
    return csv_path


def test_real_mirror_mouse_project_loads(mirror_mouse_dir: Path) -> None:
    labels, videos = load_project(mirror_mouse_dir)
    n_rows = len(pd.read_csv(mirror_mouse_dir / "CollectedData.csv", header=[0, 1, 2], index_col=0))
    assert len(labels) == n_rows == 90
    assert labels.keypoints.shape == (n_rows, 17, 2)
    assert len(labels.bodyparts) == len(set(labels.bodyparts)) == 17
    assert labels.visible is None
    assert all((mirror_mouse_dir / p).is_file() for p in labels.image_paths)
    assert [v.name for v in videos] == ["test_vid.mp4"]
    # every keypoint is either fully labeled or fully missing
    assert np.array_equal(np.isnan(labels.keypoints[..., 0]), np.isnan(labels.keypoints[..., 1]))
    reference = pd.read_csv(mirror_mouse_dir / "CollectedData.csv", header=[0, 1, 2], index_col=0)
    np.testing.assert_array_equal(labels.keypoints.reshape(n_rows, -1), reference.to_numpy(float))
    image = read_image(mirror_mouse_dir / labels.image_paths[0])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_subset_keeps_rows_in_order(mirror_mouse_dir: Path) -> None:
    labels = read_labels(mirror_mouse_dir / "CollectedData.csv", check_images=False)
    part = labels.subset([5, 2])
    assert part.image_paths == [labels.image_paths[5], labels.image_paths[2]]
    np.testing.assert_array_equal(part.keypoints, labels.keypoints[[5, 2]])
    assert len(part) == 2 and len(labels) == 90
    with pytest.raises(IndexError):
        labels.subset([90])


def test_visible_column_and_unlabeled_keypoints(tmp_path: Path) -> None:
    csv_path = _project(
        tmp_path,
        "scorer,me,me,me,me,me,me\n"
        "bodyparts,nose,nose,nose,tail,tail,tail\n"
        "coords,x,y,visible,x,y,visible\n"
        "labeled-data/img0.png,1.5,2.5,1,,,0\n",
    )
    labels = read_labels(csv_path)
    np.testing.assert_array_equal(labels.keypoints[0, 0], [1.5, 2.5])
    assert np.isnan(labels.keypoints[0, 1]).all()
    assert labels.visible is not None and labels.visible.tolist() == [[True, False]]


def test_deeplabcut_three_column_index(tmp_path: Path) -> None:
    csv_path = _project(
        tmp_path,
        "scorer,,,me,me,me,me\nbodyparts,,,nose,nose,tail,tail\ncoords,,,x,y,x,y\nlabeled-data,vid1,img0.png,1,2,3,4\n",
        images=("labeled-data/vid1/img0.png",),
    )
    labels = read_labels(csv_path)
    assert labels.image_paths == ["labeled-data/vid1/img0.png"]
    np.testing.assert_array_equal(labels.keypoints[0], [[1, 2], [3, 4]])


def test_greyscale_image_is_expanded_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), np.arange(64, dtype=np.uint8).reshape(8, 8))
    image = read_image(path)
    assert image.shape == (8, 8, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    assert image[7, 7, 1] == 63


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("labeled-data/img0.png,1,,3,4\n", ["line 4", "labeled-data/img0.png", "nose"]),
        ("labeled-data/img0.png,1,2,abc,4\n", ["line 4", "labeled-data/img0.png", "tail", "abc"]),
        ("labeled-data/img0.png,1,2,3,4\nlabeled-data/img0.png,1,2,3,4\n", ["line 5", "twice"]),
        ("labeled-data/nope.png,1,2,3,4\n", ["line 4", "labeled-data/nope.png", "not found"]),
    ],
    ids=["half-nan", "non-numeric", "duplicate-row", "missing-image"],
)
def test_bad_rows_name_file_line_and_keypoint(tmp_path: Path, body: str, expected: list[str]) -> None:
    csv_path = _project(tmp_path, HEADER + body)
    with pytest.raises(ProjectError) as caught:
        read_labels(csv_path)
    message = str(caught.value)
    assert str(csv_path) in message
    for text in expected:
        assert text in message


def test_duplicate_body_part_is_rejected(tmp_path: Path) -> None:
    csv_path = _project(
        tmp_path,
        "scorer,me,me,me,me,me,me\n"
        "bodyparts,nose,nose,tail,tail,nose,nose\n"
        "coords,x,y,x,y,x,y\n"
        "labeled-data/img0.png,1,2,3,4,5,6\n",
    )
    with pytest.raises(ProjectError, match="duplicate body part 'nose'"):
        read_labels(csv_path)


@pytest.mark.parametrize(
    "text",
    [
        # two header rows: the data row lands where coords should be
        "bodyparts,nose,nose,tail,tail\ncoords,x,y,x,y\nlabeled-data/img0.png,1,2,3,4\n",
        # four header rows (multi-animal DLC adds "individuals")
        "scorer,me,me,me,me\nindividuals,a,a,a,a\nbodyparts,nose,nose,tail,tail\n"
        "coords,x,y,x,y\nlabeled-data/img0.png,1,2,3,4\n",
        # no labels in the first column and only 2 header rows
        ",nose,nose,tail,tail\n,x,y,x,y\nlabeled-data/img0.png,1,2,3,4\n",
    ],
    ids=["two-rows", "four-rows", "unnamed-two-rows"],
)
def test_header_that_is_not_three_rows_is_rejected(tmp_path: Path, text: str) -> None:
    csv_path = _project(tmp_path, text)
    with pytest.raises(ProjectError, match="3 rows") as caught:
        read_labels(csv_path)
    assert str(csv_path) in str(caught.value)


def test_unreadable_image_is_rejected_unless_unchecked(tmp_path: Path) -> None:
    csv_path = _project(tmp_path, HEADER + "labeled-data/img0.png,1,2,3,4\n")
    (tmp_path / "labeled-data/img0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    with pytest.raises(ProjectError, match="labeled-data/img0.png.*unreadable"):
        read_labels(csv_path)
    assert len(read_labels(csv_path, check_images=False)) == 1
    with pytest.raises(ProjectError, match="img0.png"):
        read_image(tmp_path / "labeled-data/img0.png")


def test_missing_csv_and_video_folder(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="CollectedData.csv"):
        load_project(tmp_path)
    with pytest.raises(ProjectError, match="videos"):
        find_videos(tmp_path / "videos")


def test_find_videos_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ["b.MP4", "a.avi", "c.txt", ".hidden.mp4", "d.mkv"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_videos(tmp_path)] == ["a.avi", "b.MP4", "d.mkv"]


def test_predictions_load_in_pandas_and_movement(tmp_path: Path) -> None:
    load_poses = pytest.importorskip("movement.io.load_poses")
    rng = np.random.default_rng(0)
    predictions = rng.uniform(0, 100, size=(6, 3, 3))
    predictions[..., 2] = rng.uniform(0, 1, size=(6, 3))
    bodyparts = ["nose", "ear", "tail"]
    path = write_predictions(tmp_path / "pred.csv", predictions, bodyparts)

    frame = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    np.testing.assert_allclose(frame.to_numpy().reshape(6, 3, 3), predictions)
    values, names = read_predictions(path)
    np.testing.assert_allclose(values, predictions)
    assert names == bodyparts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for loader in (load_poses.from_lp_file, load_poses.from_dlc_file):
            dataset = loader(path, fps=30)
            assert list(dataset.keypoints.values) == bodyparts
            position = dataset.position.transpose("time", "keypoints", "space", "individuals").values
            np.testing.assert_allclose(position[..., 0], predictions[..., :2])
            confidence = dataset.confidence.transpose("time", "keypoints", "individuals").values
            np.testing.assert_allclose(confidence[..., 0], predictions[..., 2])


def test_context_image_paths_keep_padding_and_fall_back_towards_the_centre(tmp_path: Path) -> None:
    folder = tmp_path / "labeled-data" / "vid"
    folder.mkdir(parents=True)
    for t in (0, 1, 2, 3, 5):
        (folder / f"img{t:04d}.png").write_bytes(b"")
    assert context_image_paths(tmp_path, "labeled-data/vid/img0002.png") == [
        f"labeled-data/vid/img{t:04d}.png"
        for t in (0, 1, 2, 3, 3)  # 4 missing: 3 stands in
    ]
    assert context_image_paths(tmp_path, "labeled-data/vid/img0000.png", radius=1) == [
        "labeled-data/vid/img0000.png",
        "labeled-data/vid/img0000.png",
        "labeled-data/vid/img0001.png",
    ]
    assert context_image_paths(tmp_path, "frame.png", radius=1) == ["frame.png"] * 3


def test_context_frames_of_the_real_project(mirror_mouse_dir: Path) -> None:
    labels = read_labels(mirror_mouse_dir / "CollectedData.csv", check_images=False)
    for image_path in labels.image_paths[:5]:
        paths = context_image_paths(mirror_mouse_dir, image_path)
        assert len(paths) == 5 and paths[2] == image_path
        assert all((mirror_mouse_dir / p).is_file() for p in paths)


def test_rows_without_any_value_round_trip_first_middle_and_last(tmp_path: Path) -> None:
    """An all-NaN first frame used to be taken by pandas for an index-name row and dropped."""
    rng = np.random.default_rng(1)
    predictions = rng.uniform(0, 100, size=(60, 2, 3))
    for frame in (0, 1, 30, 59):  # two empty frames in a row at the start
        predictions[frame] = np.nan
    path = write_predictions(tmp_path / "pred.csv", predictions, ["nose", "tail"])
    values, bodyparts, coords, index = read_keypoint_csv(path)
    assert values.shape == (60, 2, 3) and list(index) == list(range(60))
    np.testing.assert_array_equal(values, predictions)  # NaN where NaN, every value in its frame
    assert bodyparts == ["nose", "tail"] and coords == ["x", "y", "likelihood"]
    np.testing.assert_array_equal(read_predictions(path)[0], predictions)
    # image-path index (a label-like table) with an unlabeled first image
    named = write_keypoint_csv(
        tmp_path / "labels.csv",
        predictions[:3, :, :2],
        ["nose", "tail"],
        ("x", "y"),
        index=[f"labeled-data/img{i}.png" for i in range(3)],
    )
    values, _, _, index = read_keypoint_csv(named)
    assert list(index) == [f"labeled-data/img{i}.png" for i in range(3)]
    np.testing.assert_array_equal(values, predictions[:3, :, :2])


def test_index_name_row_written_by_pandas_is_skipped(tmp_path: Path) -> None:
    frame = keypoint_frame(np.full((3, 1, 3), np.nan), ["nose"], ("x", "y", "likelihood"), "me")
    frame.iloc[1:] = 1.0
    frame.index.name = "frame"  # pandas writes a 4th line "frame,,," before the data
    path = tmp_path / "named.csv"
    frame.to_csv(path)
    assert path.read_text().splitlines()[3] == "frame,,,"
    values, _, _, index = read_keypoint_csv(path)
    assert values.shape == (3, 1, 3) and np.isnan(values[0]).all() and (values[1:] == 1).all()
    assert list(index) == [0, 1, 2] and index.name == "frame"


def test_header_only_keypoint_csv_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty_preds.csv"
    path.write_text("scorer,me,me,me\nbodyparts,nose,nose,nose\ncoords,x,y,likelihood\n")
    with pytest.raises(ProjectError, match="no data rows") as caught:
        read_keypoint_csv(path)
    assert str(path) in str(caught.value)
    with pytest.raises(ProjectError, match=str(path)):
        read_predictions(path)


def test_labels_without_any_labeled_keypoint_are_refused(tmp_path: Path) -> None:
    csv_path = _project(tmp_path, HEADER + "labeled-data/img0.png,,,,\n")
    with pytest.raises(ProjectError) as caught:
        read_labels(csv_path)
    assert str(caught.value).startswith(f"no labeled keypoints in {csv_path}")
    with pytest.raises(ProjectError, match="no labeled keypoints"):
        load_project(tmp_path)
    (tmp_path / "CollectedData.csv").write_text(HEADER)  # header only
    with pytest.raises(ProjectError, match=f"no labeled keypoints in {csv_path}"):
        read_labels(csv_path)
    # one labeled keypoint anywhere is enough
    (tmp_path / "CollectedData.csv").write_text(HEADER + "labeled-data/img0.png,,,3,4\n")
    assert np.isfinite(read_labels(csv_path).keypoints).sum() == 2


def test_elp_train_refuses_labels_without_keypoints_and_writes_nothing(tmp_path: Path, capsys) -> None:
    from element_lightning_pose.cli import main as elp_main

    _project(tmp_path / "project", HEADER + "labeled-data/img0.png,,,,\n")
    model_dir = tmp_path / "model"
    tiny = [
        "--set",
        "model.backbone=resnet18",
        "--set",
        "model.pretrained=false",
        "--set",
        "data.image_resize=[32,32]",
        "--set",
        "training.max_steps=1",
        "--set",
        "training.num_workers=0",
    ]  # the old code trained on it
    assert elp_main(["train", str(tmp_path / "project"), "--model-dir", str(model_dir), "--no-progress", *tiny]) == 2
    captured = capsys.readouterr()
    assert f"no labeled keypoints in {tmp_path / 'project' / 'CollectedData.csv'}" in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err
    assert not model_dir.exists()


def test_vectorised_writer_keeps_the_layout_and_round_trips_the_printed_digits(tmp_path: Path) -> None:
    """``significant=10`` writes the same header, index and cells as pandas (NaN empty, inf and
    values outside the fixed-point range by repr), each value read back is exactly the decimal
    printed, and writing what was read gives the same bytes."""
    import csv

    from element_lightning_pose.engine.data.keypoints import write_keypoint_csv

    rng = np.random.default_rng(0)
    values = rng.normal(300.0, 100.0, (50, 3, 4))
    values[0] = np.nan  # an empty first row stays a row
    values[5, 1] = [1e-7, 1e17, -0.0, np.inf]
    values[6, 0] = [1.0, 0.1, 99999.99999999, -0.001]
    values[7, 2] = [123456789.123, 5e-5, 3e-12, -2.5]
    names, coords = ["nose", "ear", "tail"], ["x", "y", "likelihood", "var"]
    fast = write_keypoint_csv(tmp_path / "fast.csv", values, names, coords, significant=10)
    slow = write_keypoint_csv(tmp_path / "slow.csv", values, names, coords)
    fast_rows = list(csv.reader(fast.open()))
    slow_rows = list(csv.reader(slow.open()))
    assert fast_rows[:3] == slow_rows[:3] and [r[0] for r in fast_rows] == [r[0] for r in slow_rows]
    for fast_row, slow_row in zip(fast_rows[3:], slow_rows[3:]):
        for f, s in zip(fast_row[1:], slow_row[1:]):
            assert (f == s == "") or float(f) == float(s) or float(f) == pytest.approx(float(s), rel=1e-9)
    back = read_keypoint_csv(fast)[0]
    printed = np.array([[float(c) if c else np.nan for c in row[1:]] for row in fast_rows[3:]])
    assert np.array_equal(back.reshape(printed.shape), printed, equal_nan=True)
    again = write_keypoint_csv(tmp_path / "again.csv", back, names, coords, significant=10)
    assert again.read_bytes() == fast.read_bytes()
    assert fast_rows[9][1:5] == ["1.0", "0.1", "100000.0", "-0.001"]  # 10 digits, carry kept


@pytest.mark.parametrize("significant", [1, 3, 6, 10, 12])
def test_vectorised_writer_rounds_to_the_last_printed_digit(tmp_path: Path, significant: int) -> None:
    """Every plain cell is ``-?int.frac`` with no padding zeros, within half a unit of its last
    printed digit of the value, with at most ``significant`` digits (or its whole integer part);
    a decimal that already has that few digits is printed as Python's repr prints it, carries
    (9.99.. -> 10.0) included."""
    import re

    from element_lightning_pose.engine.data.keypoints import format_csv_body

    rng = np.random.default_rng(significant)
    magnitudes = 10.0 ** rng.uniform(-3, 11, 4000)
    values = (magnitudes * rng.choice([-1.0, 1.0], 4000)).reshape(400, 10)
    # decimals of at most `significant` digits: m / 10^k, signed, with a carry case
    mantissas = rng.integers(1, 10**significant, 400) * rng.choice([-1, 1], 400)
    short = np.append(mantissas / 10.0 ** rng.integers(0, 4, 400), 10.0**significant - 1)
    cells = [row.split(",")[1:] for row in format_csv_body(values, range(400), significant).decode().splitlines()]
    pattern = re.compile(r"-?(0|[1-9][0-9]*)\.([0-9]*[1-9]|0)")
    for value, cell in zip(values.ravel(), (c for row in cells for c in row)):
        assert pattern.fullmatch(cell), cell
        decimals = min(max(significant - 1 - int(np.floor(np.log10(abs(value)))), 0), 15)
        assert abs(float(cell) - value) <= 0.5 * 10.0**-decimals * (1 + 1e-9) + 4 * np.spacing(abs(value)), (
            value,
            cell,
        )
        digits = cell.lstrip("-").replace(".", "").lstrip("0").rstrip("0") or "0"
        integer_digits = len(cell.lstrip("-").split(".")[0])  # printed in full when more than `significant`
        assert len(digits) <= max(significant, integer_digits), (value, cell)
    printed = format_csv_body(short[:, None], range(short.size), significant).decode().splitlines()
    assert [row.split(",")[1] for row in printed] == [repr(float(v)) for v in short]


def test_keypoint_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path: Path) -> None:
    """Spreadsheet programs save CSVs with a UTF-8 byte-order mark; it is not part of 'scorer'."""
    rng = np.random.default_rng(3)
    plain = write_predictions(tmp_path / "plain.csv", rng.uniform(0, 100, (20, 2, 3)), ["nose", "tail"])
    marked = tmp_path / "marked.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    for got, expected in zip(read_keypoint_csv(marked), read_keypoint_csv(plain)):
        if isinstance(got, np.ndarray):
            np.testing.assert_array_equal(got, expected)
        elif isinstance(got, pd.Index):
            assert got.equals(expected) and got.dtype == expected.dtype and got.name == expected.name
        else:
            assert got == expected


def test_vectorised_writer_with_no_cells_writes_no_rows() -> None:
    from element_lightning_pose.engine.data.keypoints import format_csv_body

    assert format_csv_body(np.zeros((0, 3)), [], 6) == b""
