"""read_views: the cameras' prediction files are the same frames, numbered once, with likelihoods
in [0, 1] (issue 26, item 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from element_lightning_pose.engine.data.keypoints import write_predictions
from element_lightning_pose.engine.multicam.io import ViewError, ViewSource, read_views

BODYPARTS = ["snout", "tail"]


def predictions(path: Path, index, likelihood: float = 0.9, seed: int = 0) -> Path:
    """A predictions CSV of ``len(index)`` rows indexed by ``index``."""
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.uniform(10, 50, (len(index), 2, 2)), np.full((len(index), 2, 1), likelihood)], -1)
    return write_predictions(path, values, BODYPARTS, index=list(index))


def read(tmp_path: Path, files: dict, offsets: dict | None = None):
    offsets = offsets or {}
    sources = [
        ViewSource(camera, tuple(paths) if isinstance(paths, list) else (paths,), offsets.get(camera, 0))
        for camera, paths in files.items()
    ]
    return read_views(sources, context="test: ")


def test_views_of_the_same_frames_are_read(tmp_path):
    views = read(
        tmp_path, {"a": predictions(tmp_path / "a.csv", range(40)), "b": predictions(tmp_path / "b.csv", range(40))}
    )
    assert views.pixels.shape == (2, 40, 2, 2) and views.index == list(range(40))


def test_a_view_of_other_frames_is_refused(tmp_path):
    """A view indexed 100..139 was paired row by row with views indexed 0..39."""
    files = {"a": predictions(tmp_path / "a.csv", range(40)), "b": predictions(tmp_path / "b.csv", range(100, 140))}
    with pytest.raises(ViewError) as caught:
        read(tmp_path, files)
    message = str(caught.value)
    assert message.startswith("test: camera 'b': ") and "b.csv: row 0 is frame 100" in message
    assert "camera 'a'" in message and "row 0) is frame 0" in message and "(40 rig frame(s) differ)" in message


def test_frame_offsets_shift_the_frame_numbers(tmp_path):
    """Rig frame t is frame t + offset: a file that starts 5 frames earlier, offset 5, is the same frames."""
    files = {"a": predictions(tmp_path / "a.csv", range(40)), "b": predictions(tmp_path / "b.csv", range(45))}
    views = read(tmp_path, files, {"b": 5})
    assert views.pixels.shape[1] == 40
    # the offset given, but the file kept its own numbering from 5: row 5 is frame 10, not rig frame 0's
    files["b"] = predictions(tmp_path / "b2.csv", range(5, 50))
    with pytest.raises(ViewError, match=r"b2\.csv: row 5 is frame 10, .* after the frame offsets"):
        read(tmp_path, files, {"b": 5})


@pytest.mark.parametrize(
    "index", [[0, 1, 2, 2, 4], ["x.png", "y.png", "x.png", "z.png", "w.png"]], ids=["numbers", "names"]
)
def test_a_frame_listed_twice_is_refused(tmp_path, index):
    files = {"a": predictions(tmp_path / "a.csv", range(5)), "b": predictions(tmp_path / "b.csv", index)}
    with pytest.raises(
        ViewError, match=rf"camera 'b': .*b\.csv: frame index {index[2]!r} on rows \d and \d; each frame once"
    ):
        read(tmp_path, files)


def test_an_index_that_is_not_frame_numbers_is_refused(tmp_path):
    files = {"a": predictions(tmp_path / "a.csv", range(3)), "b": predictions(tmp_path / "b.csv", [0, 1.5, 2])}
    with pytest.raises(ViewError, match=r"b\.csv: frame index 1\.5 \(row 1\) is not a frame number"):
        read(tmp_path, files)


def test_image_names_as_index_are_not_compared_across_views(tmp_path):
    """Predictions on labeled images are indexed by the images, which differ between views."""
    files = {
        "a": predictions(tmp_path / "a.csv", [f"top/img{i}.png" for i in range(3)]),
        "b": predictions(tmp_path / "b.csv", [f"side/img{i}.png" for i in range(3)]),
    }
    assert read(tmp_path, files).pixels.shape == (2, 3, 2, 2)


@pytest.mark.parametrize("value", [5.0, -0.5, 1.0001])
def test_a_likelihood_outside_0_1_is_refused(tmp_path, value):
    files = {"a": predictions(tmp_path / "a.csv", range(4)), "b": predictions(tmp_path / "b.csv", range(4), value)}
    with pytest.raises(
        ViewError, match=rf"b\.csv: likelihood {value:g} \(row 0, body part 'snout'\) is not in \[0, 1\]; 8 value"
    ):
        read(tmp_path, files)


def test_the_members_of_an_ensemble_list_the_same_frames(tmp_path):
    members = [predictions(tmp_path / "a1.csv", range(6)), predictions(tmp_path / "a2.csv", [0, 1, 2, 3, 4, 7])]
    files = {"a": members, "b": predictions(tmp_path / "b.csv", range(6))}
    with pytest.raises(
        ViewError,
        match=r"a2\.csv and .*a1\.csv are members of one ensemble but list other frames \(frame index 7 and 5 on row 5\)",
    ):
        read(tmp_path, files)
