"""A SLEAP labels file (made here with sleap-io itself) imported as a Lightning Pose project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import yaml

from element_lightning_pose.engine.data.labels import read_image
from element_lightning_pose.engine.data.projects import detect_layout, load_project
from element_lightning_pose.engine.data.sleap import INSTALL_HINT
from element_lightning_pose.engine.data.video import read_frames, write_video
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.labeling.imports import import_sleap
from tests.conftest import IN_CI

try:
    import sleap_io as sio
except ImportError:  # the [sleap] extra; CI installs it (dev), so there a missing one is a failure
    if IN_CI:
        raise
    pytest.skip(f"the SLEAP import tests need sleap-io: {INSTALL_HINT}", allow_module_level=True)

NODES = ["snout", "ear_l", "tail"]
EDGES = [("snout", "ear_l"), ("ear_l", "tail")]
LABELED = {3: 0.0, 6: 1.5, 9: 3.25}  # frame -> offset of its points
N_FRAMES, HEIGHT, WIDTH = 14, 48, 64


def make_video(path: Path, seed: int = 0) -> Path:
    """Smooth frames (a gradient and a bright square that moves), distinct from frame to frame."""
    rng = np.random.default_rng(seed)
    base = np.add.outer(np.arange(HEIGHT) * 2, np.arange(WIDTH) * 2).astype(np.uint8)
    frames = []
    for t in range(N_FRAMES):
        frame = np.repeat(base[..., None], 3, axis=2).copy()
        y, x = 4 + (t * 2) % 30, 4 + int(rng.integers(0, 40))
        frame[y : y + 10, x : x + 10] = (250, 200, 40)
        frames.append(frame)
    return write_video(path, frames, fps=10.0)


def points(offset: float) -> np.ndarray:
    """The user instance of a frame: the tail not visible."""
    return np.array([[10.5, 20.25], [30.125, 15.0], [np.nan, np.nan]]) + offset


def make_slp(
    folder: Path,
    name: str = "mouse.slp",
    *,
    video: Path | None = None,
    embed: bool = False,
    extra_instance_on: int | None = None,
    predicted_only_on: int | None = None,
    second_skeleton: bool = False,
) -> Path:
    """A SLEAP file of one skeleton and the frames of LABELED, each with one user instance."""
    video = video or make_video(folder / "session1.mp4")
    skeleton = sio.Skeleton(list(NODES), edges=list(EDGES), name="mouse")  # it converts the list in place
    movie = sio.load_video(str(video))
    frames = []
    for frame, offset in LABELED.items():
        instances = [sio.Instance.from_numpy(points(offset), skeleton=skeleton)]
        # a prediction beside a user instance is not a label (nor a second animal)
        instances.append(sio.PredictedInstance.from_numpy(points(offset) + 5, skeleton=skeleton))
        if frame == extra_instance_on:
            instances.append(sio.Instance.from_numpy(points(offset) + 9, skeleton=skeleton))
        frames.append(sio.LabeledFrame(video=movie, frame_idx=frame, instances=instances))
    if predicted_only_on is not None:
        prediction = sio.PredictedInstance.from_numpy(points(0.0), skeleton=skeleton)
        frames.append(sio.LabeledFrame(video=movie, frame_idx=predicted_only_on, instances=[prediction]))
    skeletons = [skeleton] + ([sio.Skeleton(["a", "b"], name="other")] if second_skeleton else [])
    labels = sio.Labels(labeled_frames=frames, videos=[movie], skeletons=skeletons)
    path = folder / name
    sio.save_slp(labels, str(path), embed="user" if embed else False, verbose=False)
    movie.close()
    return path


def make_sleap1_package(folder: Path, name: str = "val.pkg.slp") -> tuple[Path, dict[int, np.ndarray]]:
    """A labels package laid out as SLEAP 1.x wrote the osg-htc tutorial's ``val.pkg.slp``, and its
    greyscale frames: the video's metadata is ``{"backend": {"filename": ".", "dataset": ...}}``
    (no ``type``, no ``has_embedded_images``), the frames are variable-length PNG bytes in
    ``video0/video`` listed out of order in ``video0/frame_numbers``, and ``source_video`` names
    the package the frames were copied from, not a video."""
    skeleton = sio.Skeleton(list(NODES), edges=list(EDGES), name="mouse")
    movie = sio.Video(filename="placeholder.mp4", open_backend=False)  # its metadata is rewritten below
    frames = [
        sio.LabeledFrame(video=movie, frame_idx=f, instances=[sio.Instance.from_numpy(points(o), skeleton=skeleton)])
        for f, o in LABELED.items()
    ]
    path = folder / name
    sio.save_slp(sio.Labels(labeled_frames=frames, videos=[movie], skeletons=[skeleton]), str(path), verbose=False)
    rng = np.random.default_rng(3)
    images = {frame: rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8) for frame in LABELED}
    order = sorted(LABELED, reverse=True)
    backend = {"filename": ".", "dataset": "video0/video", "input_format": "channels_last", "convert_range": False}
    source = {"filename": "sleap_labels.pkg.slp", "dataset": "video0/video"} | {
        k: backend[k] for k in ("input_format", "convert_range")
    }
    with h5py.File(path, "r+") as h5:
        del h5["videos_json"]
        h5.create_dataset("videos_json", data=np.array([json.dumps({"backend": backend}).encode()]))
        stored = h5.create_dataset("video0/video", (len(order),), dtype=h5py.vlen_dtype(np.dtype("int8")))
        for i, frame in enumerate(order):
            stored[i] = cv2.imencode(".png", images[frame])[1].ravel().view(np.int8)
        stored.attrs.update(channels=np.int32(1), format="png", height=np.int32(HEIGHT), width=np.int32(WIDTH))
        h5.create_dataset("video0/frame_numbers", data=np.array(order, dtype=np.int32))
        h5.create_group("video0/source_video").attrs["json"] = json.dumps({"backend": source})
    return path, images


def expected_keypoints() -> np.ndarray:
    return np.stack([points(offset) for offset in LABELED.values()])


def refused(slp: Path, project: Path, **kwargs) -> str:
    """The one-line message of a refused import, after checking that it left nothing behind."""
    before = sorted(os.listdir(project.parent))
    with pytest.raises(ProjectError) as caught:
        import_sleap(slp, project, **kwargs)
    assert not project.exists() and sorted(os.listdir(project.parent)) == before  # no staging folder either
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_slp_with_its_video_becomes_a_project_the_engine_reads_alike(tmp_path):
    slp = make_slp(tmp_path, predicted_only_on=12)
    done = import_sleap(slp, tmp_path / "imported")
    project = tmp_path / "imported"
    labels, videos = load_project(project)
    assert detect_layout(project).kind == "lightning_pose"
    assert labels.bodyparts == NODES
    assert labels.image_paths == [f"labeled-data/session1/img{f:08d}.png" for f in LABELED]
    np.testing.assert_allclose(labels.keypoints, expected_keypoints(), rtol=0, atol=1e-9)  # the tail NaN
    assert np.isnan(labels.keypoints[:, 2]).all()
    settings = yaml.safe_load((project / "elp_project.yaml").read_text())
    assert settings["skeleton"] == [list(edge) for edge in EDGES] and settings["bodyparts"] == NODES
    # the video is linked, and each labeled frame is written with its +-2 context frames
    assert [v.name for v in videos] == ["session1.mp4"] and videos[0].resolve() == (tmp_path / "session1.mp4")
    written = sorted(p.name for p in (project / "labeled-data" / "session1").iterdir())
    assert written == [f"img{f:08d}.png" for f in range(1, 12)]
    decoded = read_frames(tmp_path / "session1.mp4", [6])[0]
    np.testing.assert_array_equal(read_image(project / labels.image_paths[1]), decoded)
    # the frame holding only a prediction is left out, and the import says so
    assert any("only predicted instances" in note for note in done.notes)
    assert done.videos == ["session1.mp4"] and len(done.labels) == len(LABELED)
    for path in project.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert path.stat().st_mode & 0o777 == 0o644, path


def test_a_labels_package_imports_from_its_embedded_images_when_the_video_is_gone(tmp_path):
    slp = make_slp(tmp_path, "mouse.pkg.slp", embed=True)
    decoded = read_frames(tmp_path / "session1.mp4", list(LABELED))
    (tmp_path / "session1.mp4").unlink()
    done = import_sleap(slp, tmp_path / "imported")
    labels, videos = load_project(tmp_path / "imported")
    np.testing.assert_allclose(labels.keypoints, expected_keypoints(), rtol=0, atol=1e-9)
    assert videos == [] and not (tmp_path / "imported" / "videos").exists()
    folder = tmp_path / "imported" / "labeled-data" / "session1"
    assert sorted(p.name for p in folder.iterdir()) == [f"img{f:08d}.png" for f in LABELED]  # no context
    for image, frame in zip(labels.image_paths, decoded):
        np.testing.assert_array_equal(read_image(tmp_path / "imported" / image), frame)  # PNG: lossless
    assert any("not found" in note and "without context frames" in note for note in done.notes)


def test_a_labels_package_beside_its_video_takes_the_context_frames_from_it(tmp_path):
    slp = make_slp(tmp_path, "mouse.pkg.slp", embed=True)
    import_sleap(slp, tmp_path / "imported")
    assert len(list((tmp_path / "imported" / "labeled-data" / "session1").iterdir())) == 11


def test_embedded_images_that_another_video_does_not_show_are_refused(tmp_path):
    slp = make_slp(tmp_path, "mouse.pkg.slp", embed=True)
    make_video(tmp_path / "session1.mp4", seed=7)  # the same name and size, other frames
    message = refused(slp, tmp_path / "imported")
    assert str(slp) in message and "differs from frame" in message and "imported" in message
    assert ".tmp" not in message  # the staging folder is not named


def test_a_sleap1_package_without_embedding_metadata_imports_its_embedded_frames(tmp_path):
    slp, images = make_sleap1_package(tmp_path)
    done = import_sleap(slp, tmp_path / "imported")
    labels, videos = load_project(tmp_path / "imported")
    assert labels.image_paths == [f"labeled-data/sleap_labels.pkg/img{f:08d}.png" for f in LABELED]
    np.testing.assert_allclose(labels.keypoints, expected_keypoints(), rtol=0, atol=1e-9)
    for image, frame in zip(labels.image_paths, LABELED):
        np.testing.assert_array_equal(read_image(tmp_path / "imported" / image)[..., 0], images[frame])
    assert videos == [] and any("without context frames" in note for note in done.notes)


def test_a_package_whose_source_is_another_package_beside_it_reads_its_own_frames(tmp_path):
    slp, images = make_sleap1_package(tmp_path)
    shutil.copy(slp, tmp_path / "sleap_labels.pkg.slp")  # the package it was made from: no video
    import_sleap(slp, tmp_path / "imported")
    labels, videos = load_project(tmp_path / "imported")
    assert videos == [] and len(labels.image_paths) == len(LABELED)
    np.testing.assert_array_equal(read_image(tmp_path / "imported" / labels.image_paths[0])[..., 0], images[3])


def test_the_video_is_looked_for_beside_the_slp_when_it_moved(tmp_path):
    (tmp_path / "recorded").mkdir()
    (tmp_path / "moved").mkdir()
    make_slp(tmp_path / "recorded", video=make_video(tmp_path / "recorded" / "session1.mp4"))
    for name in ("mouse.slp", "session1.mp4"):
        (tmp_path / "recorded" / name).rename(tmp_path / "moved" / name)
    import_sleap(tmp_path / "moved" / "mouse.slp", tmp_path / "imported")
    assert (tmp_path / "imported" / "videos" / "session1.mp4").resolve() == tmp_path / "moved" / "session1.mp4"


def test_two_instances_in_a_frame_are_refused_naming_the_frame(tmp_path):
    slp = make_slp(tmp_path, extra_instance_on=6)
    message = refused(slp, tmp_path / "imported")
    assert message.startswith(f"{slp}: video 0 (") and "frame 6: 2 user instances" in message


def test_two_skeletons_are_refused(tmp_path):
    message = refused(make_slp(tmp_path, second_skeleton=True), tmp_path / "imported")
    assert "2 skeletons ['mouse', 'other']" in message


def test_a_missing_video_without_embedded_frames_is_refused_naming_it(tmp_path):
    slp = make_slp(tmp_path)
    (tmp_path / "session1.mp4").unlink()
    message = refused(slp, tmp_path / "imported")
    assert str(slp) in message and "session1.mp4" in message and ".pkg.slp" in message


def test_a_video_outside_the_allowed_folders_is_not_read(tmp_path):
    (tmp_path / "root").mkdir()
    slp = make_slp(tmp_path / "root", video=make_video(tmp_path / "outside.mp4"))
    message = refused(slp, tmp_path / "root" / "imported", video_roots=[tmp_path / "root"])
    assert "outside.mp4" in message and "inside the app's folders" in message


def test_a_labeled_frame_past_the_videos_end_is_refused(tmp_path):
    slp = make_slp(tmp_path)
    short = [read_frames(tmp_path / "session1.mp4", [0])[0]] * 5
    write_video(tmp_path / "session1.mp4", short, fps=10.0)
    message = refused(slp, tmp_path / "imported")
    assert "frame 6 is labeled but" in message and "has 5 frames" in message


def test_bad_files_and_an_existing_project_are_one_line_errors(tmp_path):
    assert "SLEAP labels file not found" in refused(tmp_path / "absent.slp", tmp_path / "p")
    (tmp_path / "notes.txt").write_text("x")
    assert "not a SLEAP labels file" in refused(tmp_path / "notes.txt", tmp_path / "p")
    (tmp_path / "damaged.slp").write_bytes(b"not HDF5 at all")
    message = refused(tmp_path / "damaged.slp", tmp_path / "p")
    assert message.startswith(f"{tmp_path / 'damaged.slp'}: not a readable SLEAP labels file")
    slp = make_slp(tmp_path)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ProjectError, match="exists already"):
        import_sleap(slp, tmp_path / "taken")


def test_a_multi_view_session_is_refused(tmp_path):
    slp = make_slp(tmp_path)
    labels = sio.load_slp(str(slp))
    other = sio.Video(filename=str(make_video(tmp_path / "session1_side.mp4")), open_backend=False)
    labels.videos.append(other)
    session = sio.RecordingSession(
        camera_group=sio.CameraGroup(cameras=[sio.Camera(name="top"), sio.Camera(name="side")])
    )
    session.add_video(labels.videos[0], session.camera_group.cameras[0])
    session.add_video(other, session.camera_group.cameras[1])
    labels.sessions.append(session)
    sio.save_slp(labels, str(tmp_path / "rig.slp"), verbose=False)
    message = refused(tmp_path / "rig.slp", tmp_path / "imported")
    assert "multi-view SLEAP session (2 cameras)" in message


def test_without_sleap_io_the_import_names_the_file_and_the_extra(tmp_path):
    slp = make_slp(tmp_path)
    code = (
        "import sys; sys.modules['sleap_io'] = None\n"
        "from element_lightning_pose.engine.labeling.imports import import_sleap\n"
        "from element_lightning_pose.engine.errors import ProjectError\n"
        f"try:\n    import_sleap({str(slp)!r}, {str(tmp_path / 'imported')!r})\n"
        "except ProjectError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"{slp}: reading SLEAP files needs sleap-io: {INSTALL_HINT}"
    assert not (tmp_path / "imported").exists()


def test_a_file_of_predictions_only_is_refused(tmp_path):
    skeleton = sio.Skeleton(list(NODES), name="mouse")
    movie = sio.load_video(str(make_video(tmp_path / "session1.mp4")))
    prediction = sio.PredictedInstance.from_numpy(points(0.0), skeleton=skeleton)
    frames = [sio.LabeledFrame(video=movie, frame_idx=2, instances=[prediction])]
    sio.save_slp(sio.Labels(labeled_frames=frames, videos=[movie], skeletons=[skeleton]), str(tmp_path / "p.slp"))
    movie.close()
    message = refused(tmp_path / "p.slp", tmp_path / "imported")
    assert (
        message
        == f"{tmp_path / 'p.slp'}: no user-labeled frame (1 frame(s) hold only predicted instances, which are not labels)"
    )
