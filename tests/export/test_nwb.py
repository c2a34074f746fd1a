"""NWB export: real files written with pynwb / ndx-pose, read back, and checked by nwbinspector."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from ndx_pose import CalibratedCamera, MultiCameraPoseEstimation
from nwbinspector import Importance
from pynwb import NWBHDF5IO, TimeSeries
from pynwb.device import Device

from element_lightning_pose.engine.data.labels import read_image, read_labels
from element_lightning_pose.engine.multicam.cameras import CameraGroup
from element_lightning_pose.export.nwb import (
    REFERENCE_FRAME,
    CameraPose,
    MultiCameraPose,
    SessionInfo,
    SubjectInfo,
    TrainingLabels,
    append_pose,
    build_nwbfile,
    camera_object_names,
    dandi_filename,
    inspect_dandi,
    multicam_object_names,
    training_frame_name,
    write_nwb,
)
from element_lightning_pose.synthetic.rig import make_body, make_rig

N_FRAMES = 24
BODYPARTS = ["nose", "paw_left", "paw_right", "tail_base"]
WIDTH, HEIGHT = 64, 48
DANDI_BLOCKING = {
    Importance.ERROR,
    Importance.PYNWB_VALIDATION,
    Importance.CRITICAL,
    Importance.BEST_PRACTICE_VIOLATION,
}


def write_video(path: Path, n_frames: int = N_FRAMES) -> Path:
    """A real (tiny) MP4 so that the external-file checks have something to find."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (WIDTH, HEIGHT))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for index in range(n_frames):
        writer.write(np.full((HEIGHT, WIDTH, 3), index * 8 % 256, dtype=np.uint8))
    writer.release()
    return path


def make_camera(name: str, video: Path, seed: int, **overrides) -> CameraPose:
    rng = np.random.default_rng(seed)
    shape = (N_FRAMES, len(BODYPARTS))
    camera = CameraPose(
        camera_name=name,
        camera_description=f"{name} view, 30 Hz",
        video_path=str(video),
        bodyparts=list(BODYPARTS),
        x=rng.uniform(0, WIDTH, shape),
        y=rng.uniform(0, HEIGHT, shape),
        likelihood=rng.uniform(0, 1, shape),
        fps=30.0,
        scorer=f"lp_model_{seed}",
        source_software="Lightning Pose",
        source_software_version="1.7.0",
        confidence_definition="Maximum of the softmax-normalised heatmap of the network.",
        description="Ensemble of models m1, m2.",
        skeleton_edges=[(0, 1), (0, 2), (0, 3)],
        image_width=WIDTH,
        image_height=HEIGHT,
    )
    return replace(camera, **overrides)


def session_info(**overrides) -> SessionInfo:
    session = SessionInfo(
        session_id="2024-03-01_a",
        session_start_time=datetime(2024, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=-5))),
        session_description="Head-fixed mouse on a wheel, two camera views.",
        identifier="test-identifier-0001",
        experimenter=["Doe, Jane"],
        lab="Pose Lab",
        institution="Example University",
        experiment_description="Pose tracking test session.",
        keywords=["pose estimation"],
    )
    return replace(session, **overrides)


def subject_info(**overrides) -> SubjectInfo:
    subject = SubjectInfo(
        subject_id="mouse_01",
        species="Mus musculus",
        sex="F",
        age="P90D",
        description="Wild-type test mouse.",
        strain="C57BL/6J",
        weight="25 g",
    )
    return replace(subject, **overrides)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def videos(tmp_path: Path) -> dict[str, Path]:
    return {name: write_video(tmp_path / f"{name}.mp4") for name in ("top", "bot")}


@pytest.fixture()
def two_cameras(videos: dict[str, Path]) -> list[CameraPose]:
    rng = np.random.default_rng(7)
    irregular = 2.0 + np.cumsum(rng.uniform(0.030, 0.036, N_FRAMES))
    variance_shape = (N_FRAMES, len(BODYPARTS), 2)
    top = make_camera("top", videos["top"], seed=1)  # timed by fps
    bot = make_camera(
        "bot",
        videos["bot"],
        seed=2,
        timestamps=irregular,
        skeleton_edges=None,
        posterior_var=rng.uniform(0, 4, variance_shape),
        ensemble_var=rng.uniform(0, 9, variance_shape),
    )
    return [top, bot]


def assert_dandi_clean(path: Path) -> None:
    messages = inspect_dandi(path)
    blocking = [m for m in messages if m.importance in DANDI_BLOCKING]
    assert not blocking, [(m.importance.name, m.check_function_name, m.message) for m in blocking]


def assert_pose_matches(nwbfile, camera: CameraPose, stored_video_path: str) -> None:
    names = camera_object_names(camera.camera_name)
    behavior = nwbfile.processing["behavior"]
    pose = behavior[names.pose_estimation]
    assert pose.scorer == camera.scorer
    assert pose.source_software == camera.source_software
    assert pose.source_software_version == camera.source_software_version
    assert pose.description == camera.description
    assert list(pose.skeleton.nodes[:]) == camera.bodyparts
    expected_edges = np.asarray(camera.skeleton_edges or np.zeros((0, 2)), dtype=np.uint8)
    np.testing.assert_array_equal(pose.skeleton.edges[:], expected_edges)
    assert pose.skeleton is behavior["Skeletons"][names.skeleton]
    assert pose.device is nwbfile.devices[camera.camera_name]
    assert pose.device.description == camera.camera_description
    video = pose.source_video
    assert video is nwbfile.acquisition[names.video]
    assert list(video.external_file[:]) == [stored_video_path]
    assert video.format == "external"
    assert list(video.starting_frame[:]) == [0]
    assert list(video.dimension[:]) == [camera.image_width, camera.image_height]
    assert list(pose.pose_estimation_series) == camera.bodyparts
    for k, bodypart in enumerate(camera.bodyparts):
        series = pose.pose_estimation_series[bodypart]
        np.testing.assert_array_equal(series.data[:, 0], camera.x[:, k])
        np.testing.assert_array_equal(series.data[:, 1], camera.y[:, k])
        np.testing.assert_array_equal(series.confidence[:], camera.likelihood[:, k])
        assert series.confidence_definition == camera.confidence_definition
        assert series.unit == "pixels"
        assert series.reference_frame == REFERENCE_FRAME
        if camera.timestamps is None:
            assert series.rate == camera.fps
            assert series.starting_time == camera.starting_time
            assert series.timestamps is None
        else:
            np.testing.assert_array_equal(series.timestamps[:], camera.timestamps)
    variances = {
        names.posterior_variance: camera.posterior_var,
        names.ensemble_variance: camera.ensemble_var,
    }
    for name, expected in variances.items():
        if expected is None:
            assert name not in behavior.data_interfaces
            continue
        stored = behavior[name]
        np.testing.assert_array_equal(stored.data[:], expected)
        assert stored.unit == "pixels^2"
        assert str(camera.bodyparts) in stored.description
        if camera.timestamps is not None:
            np.testing.assert_array_equal(stored.timestamps[:], camera.timestamps)


def test_two_cameras_round_trip_and_pass_dandi_inspection(tmp_path, two_cameras):
    path = write_nwb(tmp_path, session_info(), subject_info(), two_cameras)

    assert path == tmp_path / "sub-mouse-01_ses-2024-03-01-a_behavior+image.nwb"
    with NWBHDF5IO(str(path), mode="r") as io:
        nwbfile = io.read()
        assert nwbfile.session_id == "2024-03-01_a"
        assert nwbfile.identifier == "test-identifier-0001"
        assert nwbfile.session_start_time == session_info().session_start_time
        assert list(nwbfile.experimenter) == ["Doe, Jane"]
        assert nwbfile.institution == "Example University"
        subject = nwbfile.subject
        assert (subject.subject_id, subject.species, subject.sex, subject.age) == (
            "mouse_01",
            "Mus musculus",
            "F",
            "P90D",
        )
        assert subject.weight == "25 g"
        for camera in two_cameras:
            # The videos were given as absolute paths; DANDI wants them relative to the file.
            assert_pose_matches(nwbfile, camera, f"{camera.camera_name}.mp4")
            assert (
                nwbfile.processing["behavior"]["Skeletons"][camera_object_names(camera.camera_name).skeleton].subject
                is nwbfile.subject
            )

    assert_dandi_clean(path)


def test_series_of_one_camera_share_one_timestamps_dataset(tmp_path, two_cameras):
    path = write_nwb(tmp_path / "shared.nwb", session_info(), subject_info(), two_cameras)

    names = camera_object_names("bot")
    with h5py.File(path, "r") as handle:
        owner = handle[f"processing/behavior/{names.pose_estimation}/{BODYPARTS[0]}/timestamps"]
        others = [
            f"processing/behavior/{names.pose_estimation}/{bodypart}/timestamps" for bodypart in BODYPARTS[1:]
        ] + [
            f"processing/behavior/{names.posterior_variance}/timestamps",
            f"processing/behavior/{names.ensemble_variance}/timestamps",
            f"acquisition/{names.video}/timestamps",
        ]
        for other in others:
            assert handle[other] == owner, other  # the same HDF5 object, not a copy


def test_regular_timestamps_are_stored_as_rate(tmp_path, videos):
    timestamps = 5.0 + np.arange(N_FRAMES) / 30.0
    camera = make_camera("top", videos["top"], seed=3, timestamps=timestamps, fps=30.0)

    path = write_nwb(tmp_path / "regular.nwb", session_info(), subject_info(), [camera])

    with NWBHDF5IO(str(path), mode="r") as io:
        pose = io.read().processing["behavior"][camera_object_names("top").pose_estimation]
        for series in pose.pose_estimation_series.values():
            assert series.timestamps is None
            assert series.rate == 30.0
            assert series.starting_time == 5.0
            np.testing.assert_allclose(series.starting_time + np.arange(N_FRAMES) / series.rate, timestamps, atol=1e-9)
    assert not [m for m in inspect_dandi(path) if m.check_function_name == "check_regular_timestamps"]


def make_existing_file(path: Path) -> None:
    """An NWB file that another tool wrote: a raw signal, a behavior module, a camera device."""
    nwbfile = build_nwbfile(session_info(), subject_info())
    nwbfile.add_acquisition(
        TimeSeries(
            name="wheel_position",
            description="Wheel angle.",
            data=np.linspace(0, 1, 50),
            unit="radians",
            rate=100.0,
        )
    )
    behavior = nwbfile.create_processing_module(name="behavior", description="Behavior.")
    behavior.add(
        TimeSeries(
            name="running_speed",
            description="Running speed.",
            data=np.arange(50, dtype=float),
            unit="m/s",
            rate=100.0,
        )
    )
    nwbfile.add_device(Device(name="top", description="Existing top camera."))
    with NWBHDF5IO(str(path), mode="w") as io:
        io.write(nwbfile)


def test_append_keeps_existing_contents(tmp_path, two_cameras):
    path = tmp_path / "existing.nwb"
    make_existing_file(path)
    top, bot = two_cameras

    append_pose(path, [top])
    append_pose(path, [bot])  # a second append adds to the Skeletons written by the first

    with NWBHDF5IO(str(path), mode="r") as io:
        nwbfile = io.read()
        np.testing.assert_array_equal(nwbfile.acquisition["wheel_position"].data[:], np.linspace(0, 1, 50))
        behavior = nwbfile.processing["behavior"]
        np.testing.assert_array_equal(behavior["running_speed"].data[:], np.arange(50))
        assert behavior.description == "Behavior."
        assert nwbfile.devices["top"].description == "Existing top camera."  # reused, not replaced
        assert sorted(behavior["Skeletons"].skeletons) == ["Skeleton_bot", "Skeleton_top"]
        assert_pose_matches(nwbfile, replace(top, camera_description="Existing top camera."), "top.mp4")
        assert_pose_matches(nwbfile, bot, "bot.mp4")
    assert_dandi_clean(path)


def test_append_refuses_an_existing_pose_and_leaves_the_file_unchanged(tmp_path, two_cameras):
    path = tmp_path / "existing.nwb"
    make_existing_file(path)
    append_pose(path, two_cameras[:1])
    before = sha256(path)

    with pytest.raises(ValueError, match="PoseEstimation_top already exists"):
        append_pose(path, two_cameras)

    assert sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".mp4") == ["existing.nwb"]


@pytest.mark.parametrize(
    ("subject_changes", "session_changes", "field"),
    [
        ({"species": None}, {}, "species"),
        ({"species": "mouse"}, {}, "species"),
        ({"sex": "male"}, {}, "sex"),
        ({"sex": None}, {}, "sex"),
        ({"age": "90 days"}, {}, "age"),
        ({"age": None, "date_of_birth": None}, {}, "date_of_birth"),
        ({"subject_id": ""}, {}, "subject_id"),
        ({"subject_id": "cage/3"}, {}, "subject_id"),
        ({"weight": "25"}, {}, "weight"),
        ({}, {"session_start_time": datetime(2024, 3, 1, 9, 30)}, "session_start_time"),
        ({}, {"session_id": "a/b"}, "session_id"),
    ],
)
def test_missing_dandi_metadata_raises_naming_the_field(tmp_path, two_cameras, subject_changes, session_changes, field):
    target = tmp_path / "bad.nwb"
    with pytest.raises(ValueError, match=field):
        write_nwb(target, session_info(**session_changes), subject_info(**subject_changes), two_cameras)
    assert not target.exists()


def test_date_of_birth_replaces_age(tmp_path, two_cameras):
    birth = datetime(2023, 12, 1, tzinfo=timezone.utc)
    path = write_nwb(
        tmp_path / "dob.nwb",
        session_info(),
        subject_info(age=None, date_of_birth=birth),
        two_cameras,
    )
    with NWBHDF5IO(str(path), mode="r") as io:
        assert io.read().subject.date_of_birth == birth
    assert_dandi_clean(path)


def test_refuses_to_overwrite_unless_asked(tmp_path, two_cameras):
    path = write_nwb(tmp_path / "pose.nwb", session_info(), subject_info(), two_cameras)
    before = sha256(path)

    with pytest.raises(FileExistsError, match="pose.nwb"):
        write_nwb(path, session_info(identifier="another"), subject_info(), two_cameras)
    assert sha256(path) == before

    write_nwb(path, session_info(identifier="another"), subject_info(), two_cameras, overwrite=True)
    with NWBHDF5IO(str(path), mode="r") as io:
        assert io.read().identifier == "another"


def test_mismatched_array_lengths_leave_no_file(tmp_path, two_cameras):
    top, bot = two_cameras
    short_y = replace(bot, y=bot.y[:-1])
    with pytest.raises(ValueError, match=r"'bot'.*y has shape"):
        write_nwb(tmp_path / "pose.nwb", session_info(), subject_info(), [top, short_y])
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".mp4", ".mp4"]


def test_failure_while_writing_leaves_no_file_and_keeps_the_old_one(tmp_path, two_cameras):
    top, bot = two_cameras
    # A lone surrogate passes every check but cannot be encoded as UTF-8 by HDF5: the failure
    # comes from inside the HDF5 write, after the temporary file was created.
    unwritable = replace(bot, description="ensemble \udc80")
    path = tmp_path / "pose.nwb"
    with pytest.raises(Exception, match="Could not create scalar dataset description"):
        write_nwb(path, session_info(), subject_info(), [top, unwritable])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bot.mp4", "top.mp4"]

    write_nwb(path, session_info(), subject_info(), [top])
    before = sha256(path)
    with pytest.raises(Exception, match="Could not create scalar dataset description"):
        write_nwb(path, session_info(), subject_info(), [top, unwritable], overwrite=True)
    assert sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bot.mp4", "pose.nwb", "top.mp4"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"likelihood": np.full((N_FRAMES, len(BODYPARTS)), 1.5)}, "likelihood must lie in"),
        ({"bodyparts": ["nose", "nose", "paw_right", "tail_base"]}, "duplicate body parts"),
        ({"bodyparts": ["nose", "paw/left", "paw_right", "tail_base"]}, "paw/left"),
        ({"skeleton_edges": [(0, 4)]}, "skeleton_edges index"),
        ({"fps": None}, "fps must be a positive number"),
        ({"timestamps": np.arange(N_FRAMES)[::-1] / 30.0}, "strictly increasing"),
        ({"posterior_var": np.ones((N_FRAMES, len(BODYPARTS)))}, "posterior_var has shape"),
        ({"camera_name": "top/left"}, "camera_name"),
    ],
)
def test_bad_camera_input_is_rejected_before_writing(tmp_path, videos, changes, message):
    camera = make_camera("top", videos["top"], seed=4, **changes)
    with pytest.raises(ValueError, match=message):
        write_nwb(tmp_path / "pose.nwb", session_info(), subject_info(), [camera])
    assert not (tmp_path / "pose.nwb").exists()


def test_two_cameras_with_one_name_are_rejected(tmp_path, videos):
    cameras = [make_camera("top", videos["top"], seed=5), make_camera("top", videos["bot"], seed=6)]
    with pytest.raises(ValueError, match="camera names repeat"):
        write_nwb(tmp_path / "pose.nwb", session_info(), subject_info(), cameras)


@pytest.mark.parametrize(
    ("subject_id", "session_id", "expected"),
    [
        ("M1", "S1", "sub-M1_ses-S1_behavior+image.nwb"),
        ("mouse_01", "2024-03-01 a.b", "sub-mouse-01_ses-2024-03-01-a-b_behavior+image.nwb"),
        ("cage/3*x", "ses:+1", "sub-cage-3-x_ses-ses-1_behavior+image.nwb"),
    ],
)
def test_dandi_filename_sanitises_ids(subject_id, session_id, expected):
    assert dandi_filename(subject_id, session_id) == expected


def test_dandi_filename_rejects_ids_with_nothing_usable():
    with pytest.raises(ValueError, match="subject_id"):
        dandi_filename("___", "S1")


def mirror_mouse_labels(mirror_mouse_dir: Path, rows: list[int], with_images: bool) -> TrainingLabels:
    labels = read_labels(mirror_mouse_dir / "CollectedData.csv", check_images=False).subset(rows)
    images = [read_image(labels.root / path) for path in labels.image_paths] if with_images else None
    return TrainingLabels(
        camera_name="mirror",
        bodyparts=labels.bodyparts,
        image_paths=labels.image_paths,
        keypoints=labels.keypoints,
        images=images,
        annotator=labels.scorer,
    )


def test_labeled_frames_round_trip_as_pose_training(tmp_path, mirror_mouse_dir):
    rows = [0, 3, 7, 42, 89]
    labels = mirror_mouse_labels(mirror_mouse_dir, rows, with_images=True)
    assert np.isnan(labels.keypoints).any(), "the example should include unlabeled keypoints"
    video = write_video(tmp_path / "mirror.mp4")
    rng = np.random.default_rng(11)
    shape = (N_FRAMES, len(labels.bodyparts))
    camera = make_camera(
        "mirror",
        video,
        seed=11,
        bodyparts=labels.bodyparts,
        x=rng.uniform(0, WIDTH, shape),
        y=rng.uniform(0, HEIGHT, shape),
        likelihood=rng.uniform(0, 1, shape),
        skeleton_edges=[(0, 1), (8, 9)],
    )

    path = write_nwb(tmp_path, session_info(), subject_info(), [camera], training=[labels])

    names = camera_object_names("mirror")
    with NWBHDF5IO(str(path), mode="r") as io:
        behavior = io.read().processing["behavior"]
        training = behavior[names.pose_training]
        frames = training.training_frames.training_frames
        assert sorted(frames) == sorted(training_frame_name(p) for p in labels.image_paths)
        skeleton = behavior[names.pose_estimation].skeleton  # pose and labels share the skeleton
        np.testing.assert_array_equal(skeleton.edges[:], [(0, 1), (8, 9)])
        for index, image_path in enumerate(labels.image_paths):
            frame = frames[training_frame_name(image_path)]
            assert "/" not in frame.name
            assert frame.annotator == "rick"
            (instance,) = frame.skeleton_instances.skeleton_instances.values()
            assert instance.skeleton is skeleton
            np.testing.assert_array_equal(instance.node_locations[:], labels.keypoints[index])
            np.testing.assert_array_equal(instance.node_visibility[:], ~np.isnan(labels.keypoints[index]).any(axis=1))
            assert frame.source_frame.description == image_path
            np.testing.assert_array_equal(frame.source_frame.data[:], labels.images[index])
    assert_dandi_clean(path)


def test_labeled_frames_can_be_appended_without_images(tmp_path, mirror_mouse_dir):
    path = tmp_path / "existing.nwb"
    make_existing_file(path)
    labels = mirror_mouse_labels(mirror_mouse_dir, [1, 2], with_images=False)

    append_pose(path, [], training=[labels])

    with NWBHDF5IO(str(path), mode="r") as io:
        behavior = io.read().processing["behavior"]
        assert "running_speed" in behavior.data_interfaces
        frames = behavior[camera_object_names("mirror").pose_training].training_frames.training_frames
        assert len(frames) == 2
        assert all(frame.source_frame is None for frame in frames.values())
        assert list(behavior["Skeletons"]["Skeleton_mirror"].nodes[:]) == labels.bodyparts
    assert_dandi_clean(path)


def test_labels_that_disagree_with_the_camera_skeleton_are_rejected(tmp_path, mirror_mouse_dir, videos):
    labels = mirror_mouse_labels(mirror_mouse_dir, [0], with_images=False)
    camera = make_camera("mirror", videos["top"], seed=12)  # other body parts
    with pytest.raises(ValueError, match="Skeleton 'Skeleton_mirror' already exists"):
        write_nwb(tmp_path / "pose.nwb", session_info(), subject_info(), [camera], training=[labels])
    assert not (tmp_path / "pose.nwb").exists()


def test_missing_source_video_warns_and_is_critical_for_dandi(tmp_path, videos):
    camera = make_camera("top", videos["top"], seed=13, video_path="videos/absent.mp4")
    with pytest.warns(UserWarning, match="absent.mp4"):
        path = write_nwb(tmp_path / "pose.nwb", session_info(), subject_info(), [camera])
    critical = [m for m in inspect_dandi(path) if m.importance == Importance.CRITICAL]
    assert [m.check_function_name for m in critical] == ["check_image_series_external_file_valid"]


# ----------------------------------------------------------------------------------------------
# Multi-camera 3D pose (CalibratedCamera, MultiCameraPoseEstimation) and the dandiset layout

RIG_FRAME = "(0, 0, 0) is the arena centre on the floor; z points up; axes in millimeters"


@pytest.fixture()
def rig_pose(tmp_path: Path) -> MultiCameraPose:
    """Three calibrated 64x48 cameras watching a synthetic body; 2D views are its projections."""
    rig = make_rig(3, image_size=(WIDTH, HEIGHT))
    body = make_body(N_FRAMES)
    n_parts = 5  # enough for a skeleton; fewer series keep the inspector fast
    bodyparts = list(body.bodyparts[:n_parts])
    edges = [(bodyparts[a], bodyparts[b]) for a, b in body.edges if a < n_parts and b < n_parts]
    assert edges
    pixels = rig.project(body.points[:, :n_parts])  # (C, T, K, 2)
    rng = np.random.default_rng(21)
    shape = pixels.shape[1:3]
    views = [
        make_camera(
            camera.name,
            write_video(tmp_path / f"{camera.name}.mp4"),
            seed=c,
            bodyparts=bodyparts,
            x=pixels[c, ..., 0],
            y=pixels[c, ..., 1],
            likelihood=rng.uniform(0, 1, shape),
            skeleton_edges=None,
            posterior_var=rng.uniform(0, 2, (*shape, 2)) if c == 0 else None,
        )
        for c, camera in enumerate(rig.cameras)
    ]
    points = body.points[:, :n_parts].copy()
    points[3, 1] = np.nan  # a body part that was not triangulated in one frame
    return MultiCameraPose(
        name="rig1",
        rig=rig,
        views=views,
        bodyparts=bodyparts,
        points=points,
        variance=rng.uniform(0, 5, points.shape),
        reprojection_error=rng.uniform(0, 1, (*shape, 3)),
        cameras_used=rng.integers(2, 4, shape),
        units="mm",
        reference_frame=RIG_FRAME,
        description="3D smoother over the three views",
        scorer="smoother",
        fps=30.0,
        skeleton_edges=edges,
    )


def assert_rig_pose_matches(nwbfile, pose: MultiCameraPose, video_dir: str = "") -> None:
    names = multicam_object_names(pose.name)
    behavior = nwbfile.processing["behavior"]
    stored = behavior[names.pose_estimation]
    assert isinstance(stored, MultiCameraPoseEstimation)
    assert (stored.description, stored.scorer) == (pose.description, pose.scorer)
    assert list(stored.skeleton.nodes[:]) == pose.bodyparts
    assert stored.skeleton is behavior["Skeletons"][names.skeleton]
    expected_edges = [(pose.bodyparts.index(a), pose.bodyparts.index(b)) for a, b in pose.skeleton_edges]
    np.testing.assert_array_equal(stored.skeleton.edges[:], expected_edges)
    assert sorted(stored.pose_estimation_series) == sorted(pose.bodyparts)  # HDF5 lists names sorted
    for k, bodypart in enumerate(pose.bodyparts):
        series = stored.pose_estimation_series[bodypart]
        np.testing.assert_array_equal(series.data[:], pose.points[:, k, :])  # NaN where not triangulated
        assert series.unit == "millimeters"
        assert series.reference_frame == RIG_FRAME
        assert (series.rate, series.starting_time) == (pose.fps, pose.starting_time)
    np.testing.assert_array_equal(behavior[names.posterior_variance].data[:], pose.variance)
    assert behavior[names.posterior_variance].unit == "millimeters^2"
    np.testing.assert_array_equal(behavior[names.reprojection_error].data[:], pose.reprojection_error)
    np.testing.assert_array_equal(behavior[names.cameras_used].data[:], pose.cameras_used)
    assert sorted(stored.pose_estimations) == sorted(f"PoseEstimation_{view.camera_name}" for view in pose.views)
    for view in pose.views:
        camera = pose.rig[view.camera_name]
        device = nwbfile.devices[view.camera_name]
        assert isinstance(device, CalibratedCamera)
        for stored_value, expected in (
            (device.intrinsic_matrix, camera.matrix),
            (device.rotation_matrix, camera.rotation),
            (device.translation_vector, camera.translation),
            (device.distortion_coefficients, camera.distortion),
        ):
            np.testing.assert_array_equal(stored_value[:], expected)  # float64, bit for bit
        view_names = names.view(view.camera_name)
        view_pose = stored.pose_estimations[view_names.pose_estimation]
        assert view_pose.device is device
        assert view_pose.skeleton is stored.skeleton
        assert view_pose.source_video is nwbfile.acquisition[view_names.video]
        assert list(view_pose.source_video.external_file[:]) == [f"{video_dir}{Path(view.video_path).name}"]
        for k, bodypart in enumerate(pose.bodyparts):
            series = view_pose.pose_estimation_series[bodypart]
            np.testing.assert_array_equal(series.data[:], np.column_stack([view.x[:, k], view.y[:, k]]))
            np.testing.assert_array_equal(series.confidence[:], view.likelihood[:, k])
            assert series.unit == "pixels"
        if view.posterior_var is None:
            assert view_names.posterior_variance not in behavior.data_interfaces
        else:
            np.testing.assert_array_equal(behavior[view_names.posterior_variance].data[:], view.posterior_var)


def test_rig_pose_round_trips_and_passes_dandi_inspection(tmp_path, rig_pose):
    path = write_nwb(tmp_path / "rig.nwb", session_info(), subject_info(), [], multicam=[rig_pose])

    with NWBHDF5IO(str(path), mode="r") as io:
        assert_rig_pose_matches(io.read(), rig_pose)
    assert_dandi_clean(path)


def test_rig_pose_appends_beside_single_cameras_and_existing_content(tmp_path, rig_pose, two_cameras):
    path = tmp_path / "existing.nwb"
    make_existing_file(path)  # holds a plain Device "top", reused by the single camera "top"

    append_pose(path, two_cameras)
    append_pose(path, [], multicam=[rig_pose])
    second = replace(rig_pose, name="rig1_robust", variance=None, reprojection_error=None, cameras_used=None)
    append_pose(path, [], multicam=[second])  # the same rig again: cameras and videos are reused

    with NWBHDF5IO(str(path), mode="r") as io:
        nwbfile = io.read()
        np.testing.assert_array_equal(nwbfile.acquisition["wheel_position"].data[:], np.linspace(0, 1, 50))
        assert_pose_matches(nwbfile, replace(two_cameras[0], camera_description="Existing top camera."), "top.mp4")
        assert_pose_matches(nwbfile, two_cameras[1], "bot.mp4")
        assert_rig_pose_matches(nwbfile, rig_pose)
        second_pose = nwbfile.processing["behavior"][multicam_object_names("rig1_robust").pose_estimation]
        first_pose = nwbfile.processing["behavior"][multicam_object_names("rig1").pose_estimation]
        for view in rig_pose.views:
            name = f"PoseEstimation_{view.camera_name}"
            assert second_pose.pose_estimations[name].device is first_pose.pose_estimations[name].device
        assert (
            multicam_object_names("rig1_robust").posterior_variance
            not in nwbfile.processing["behavior"].fields["data_interfaces"]
        )
    assert_dandi_clean(path)


def moved_camera(rig_pose: MultiCameraPose) -> MultiCameraPose:
    camera = rig_pose.rig.cameras[0]
    moved = camera.with_pose(camera.rotation, camera.translation + 1.0)
    return replace(rig_pose, rig=CameraGroup((moved, *rig_pose.rig.cameras[1:])), name="other")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: replace(p, rig=p.rig.subset(p.rig.names[:2])), r"views \['cam2'\] are not cameras"),
        (lambda p: replace(p, units="furlongs"), "units 'furlongs'"),
        (lambda p: replace(p, points=p.points[:, :, :2]), "points has shape"),
        (lambda p: replace(p, variance=-np.ones_like(p.points)), "variance holds negative"),
        (lambda p: replace(p, reprojection_error=np.ones(p.points.shape[:2])), "reprojection_error has shape"),
        (lambda p: replace(p, skeleton_edges=[(p.bodyparts[0], "wing")]), "names 'wing'"),
        (
            lambda p: replace(p, views=[replace(p.views[0], bodyparts=p.bodyparts[::-1]), *p.views[1:]]),
            "has body parts",
        ),
        (
            lambda p: replace(p, views=[replace(p.views[0], image_width=WIDTH * 2), *p.views[1:]]),
            "calibration is for 64x48",
        ),
        (lambda p: replace(p, views=[p.views[0], p.views[0], p.views[2]]), "camera views repeat"),
        (lambda p: replace(p, fps=None), "fps must be a positive number"),
    ],
)
def test_bad_rig_pose_is_rejected_before_writing(tmp_path, rig_pose, change, message):
    target = tmp_path / "rig.nwb"
    with pytest.raises(ValueError, match=message):
        write_nwb(target, session_info(), subject_info(), [], multicam=[change(rig_pose)])
    assert not target.exists()


def test_append_refuses_another_calibration_of_a_stored_camera_and_leaves_the_file(tmp_path, rig_pose):
    path = write_nwb(tmp_path / "rig.nwb", session_info(), subject_info(), [], multicam=[rig_pose])
    before = sha256(path)

    with pytest.raises(ValueError, match="devices/cam0 already exists .* not a CalibratedCamera with this calibration"):
        append_pose(path, [], multicam=[moved_camera(rig_pose)])
    with pytest.raises(ValueError, match="MultiCameraPoseEstimation_rig1 already exists"):
        append_pose(path, [], multicam=[rig_pose])
    with pytest.raises(ValueError, match=r"cameras \['cam0'\] are given both as single cameras and as views"):
        append_pose(path, [rig_pose.views[0]], multicam=[replace(rig_pose, name="again")])

    assert sha256(path) == before


def external_files(path: Path, cameras: list[str]) -> list[str]:
    """The external file of each camera's source video, in ``cameras`` order."""
    with NWBHDF5IO(str(path), mode="r") as io:
        acquisition = io.read().acquisition
        return [str(f) for camera in cameras for f in acquisition[camera_object_names(camera).video].external_file]


def test_dandiset_layout_places_videos_beside_the_file_and_dandi_validates(tmp_path, rig_pose, two_cameras, dandi_cli):
    dandiset = tmp_path / "dandiset"
    dandiset.mkdir()
    (dandiset / "dandiset.yaml").write_text("identifier: '000000'\nname: ELP test\ndescription: NWB export test\n")
    single = write_nwb(dandiset, session_info(), subject_info(), two_cameras, dandi_layout=True)
    rig = write_nwb(dandiset, session_info(), subject_info(subject_id="m2"), [], multicam=[rig_pose], dandi_layout=True)

    assert single.relative_to(dandiset).as_posix() == "sub-mouse-01/sub-mouse-01_ses-2024-03-01-a_behavior+image.nwb"
    assert rig.relative_to(dandiset).as_posix() == "sub-m2/sub-m2_ses-2024-03-01-a_behavior+image.nwb"
    for path, views in ((single, two_cameras), (rig, rig_pose.views)):
        stored = external_files(path, [view.camera_name for view in views])
        assert stored == [f"{path.stem}/{Path(view.video_path).name}" for view in views]
        for view, relative in zip(views, stored):
            placed = path.parent / relative
            assert placed.resolve().is_relative_to(dandiset.resolve())
            assert placed.samefile(view.video_path)  # a hard link, not a copy, on one file system
    with NWBHDF5IO(str(rig), mode="r") as io:
        assert_rig_pose_matches(io.read(), rig_pose, video_dir=f"{rig.stem}/")
    assert_dandi_clean(rig)

    result = subprocess.run(
        [dandi_cli, "validate", "--min-severity", "HINT", str(dandiset)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No errors found" in result.stdout, result.stdout


def test_dandiset_layout_failure_leaves_no_file_and_no_placed_video(tmp_path, two_cameras):
    top, bot = two_cameras
    unwritable = replace(bot, description="ensemble \udc80")  # fails inside the HDF5 write
    with pytest.raises(Exception, match="Could not create scalar dataset description"):
        write_nwb(tmp_path / "ds", session_info(), subject_info(), [top, unwritable], dandi_layout=True)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "bot.mp4",
        "ds",
        "ds/sub-mouse-01",
        "top.mp4",
    ]

    missing = replace(top, video_path=tmp_path / "absent.mp4")
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        write_nwb(tmp_path / "ds", session_info(), subject_info(), [missing], dandi_layout=True)


def test_dandiset_layout_append_places_videos_beside_the_existing_file(tmp_path, two_cameras):
    path = tmp_path / "sub-mouse-01_ses-1_ecephys.nwb"
    make_existing_file(path)
    append_pose(path, two_cameras[:1], place_videos_beside=True)
    append_pose(path, two_cameras[1:], place_videos_beside=True)

    assert external_files(path, ["top", "bot"]) == [
        "sub-mouse-01_ses-1_ecephys/top.mp4",
        "sub-mouse-01_ses-1_ecephys/bot.mp4",
    ]
    assert (tmp_path / "sub-mouse-01_ses-1_ecephys" / "bot.mp4").samefile(two_cameras[1].video_path)
    assert_dandi_clean(path)


def test_rig_pose_with_irregular_timestamps_shares_one_dataset(tmp_path, rig_pose):
    timestamps = 1.0 + np.cumsum(np.random.default_rng(3).uniform(0.030, 0.036, N_FRAMES))
    pose = replace(rig_pose, fps=None, timestamps=timestamps)
    path = write_nwb(tmp_path / "rig.nwb", session_info(), subject_info(), [], multicam=[pose])

    names = multicam_object_names("rig1")
    with h5py.File(path, "r") as handle:
        group = f"processing/behavior/{names.pose_estimation}"
        owner = handle[f"{group}/{pose.bodyparts[0]}/timestamps"]
        np.testing.assert_array_equal(owner[:], timestamps)
        for other in [f"{group}/{bp}/timestamps" for bp in pose.bodyparts[1:]] + [
            f"processing/behavior/{names.posterior_variance}/timestamps",
            f"processing/behavior/{names.reprojection_error}/timestamps",
        ]:
            assert handle[other] == owner, other
