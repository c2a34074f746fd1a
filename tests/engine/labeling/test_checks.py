"""Label checks: each planted defect is the top flag, a clean project raises none, bad input is
a one-line error; and on the real mirror-mouse labels, what was verified by looking."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from element_lightning_pose.engine.data.labels import LabeledFrames, read_labels
from element_lightning_pose.engine.data.projects import read_multiview_labels
from element_lightning_pose.engine.labeling.checks import (
    LabelCheckError,
    LabelReport,
    check_labels,
    symmetric_pairs,
)
from element_lightning_pose.engine.multicam.cameras import read_calibration
from element_lightning_pose.synthetic.projects import make_synthetic_project
from element_lightning_pose.synthetic.rig_project import RigProject, make_rig_project

SKELETON = [
    ("nose", "head"),
    ("head", "centre"),
    ("centre", "tail_base"),
    ("tail_base", "tail_tip"),
    ("centre", "paw_left_front"),
    ("centre", "paw_right_front"),
    ("tail_base", "paw_left_hind"),
    ("tail_base", "paw_right_hind"),
]
LABEL_NOISE_PX = 1.0  # a careful labeler's scatter; the checks must not flag it


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> LabeledFrames:
    """48 labeled frames of two synthetic videos (192 px), with a labeler's 1 px scatter."""
    project = make_synthetic_project(
        tmp_path_factory.mktemp("checks") / "project",
        seed=0,
        image_size=(192, 192),
        n_labeled=48,
        n_video_frames=150,
        n_videos=2,
    )
    clean = read_labels(project.csv_path)
    noise = np.random.default_rng(0).normal(0, LABEL_NOISE_PX, clean.keypoints.shape)
    return replace(clean, keypoints=clean.keypoints + noise)


def planted(labels: LabeledFrames, keypoints: np.ndarray) -> LabeledFrames:
    return replace(labels, keypoints=keypoints)


def test_symmetric_pairs_are_found_from_the_names():
    names = ["nose", "paw_l", "paw_r", "left_ear", "right_ear", "L_hand", "R_hand", "earLeft", "earRight"]
    names += ["paw_fl", "paw_fr", "Foot-L", "Foot-R", "tail", "tailMid", "lwrist", "rwrist"]
    assert symmetric_pairs(names) == [
        ("paw_l", "paw_r"),
        ("left_ear", "right_ear"),
        ("L_hand", "R_hand"),
        ("earLeft", "earRight"),
        ("paw_fl", "paw_fr"),
        ("Foot-L", "Foot-R"),
    ]
    # the mirror-mouse names: the side and the paw number differ (paw1LH / paw4RH), one way each
    mirror = ["paw1LH_top", "paw2LF_top", "paw3RF_top", "paw4RH_top", "nose_top", "paw1LH_bot", "paw4RH_bot"]
    assert symmetric_pairs(mirror) == [
        ("paw1LH_top", "paw4RH_top"),
        ("paw2LF_top", "paw3RF_top"),
        ("paw1LH_bot", "paw4RH_bot"),
    ]
    # numbers alone never pair: finger1_l has two right-hand candidates
    assert symmetric_pairs(["finger1_l", "finger2_r", "finger3_r"]) == []


def test_a_clean_project_raises_no_flag(labels):
    predictions = np.concatenate(
        [
            labels.keypoints + np.random.default_rng(1).normal(0, 1.0, labels.keypoints.shape),
            np.full((*labels.keypoints.shape[:2], 1), 0.95),
        ],
        axis=-1,
    )
    for skeleton in (None, SKELETON):
        report = check_labels(labels, skeleton=skeleton, predictions=predictions)
        assert report.flags == []
        assert report.notes == []


@pytest.mark.parametrize("row", [3, 30])
@pytest.mark.parametrize("pair", [("paw_left_front", "paw_right_front"), ("paw_left_hind", "paw_right_hind")])
def test_a_swapped_pair_is_the_top_flag(labels, row, pair):
    keypoints = labels.keypoints.copy()
    a, b = (labels.bodyparts.index(name) for name in pair)
    keypoints[row, [a, b]] = keypoints[row, [b, a]]
    report = check_labels(planted(labels, keypoints))
    top = report.flags[0]
    assert (top.kind, top.row, top.image, set(top.bodyparts)) == (
        "left_right_swap",
        row,
        labels.image_paths[row],
        set(pair),
    )
    assert top.score >= 1 and "look exchanged" in top.message
    assert json.loads(json.dumps(top.to_dict()))["bodyparts"] == list(pair)


@pytest.mark.parametrize("skeleton", [None, SKELETON], ids=["inferred bones", "skeleton"])
@pytest.mark.parametrize(("moved", "anchor", "factor"), [("nose", "head", 2.5), ("tail_tip", "tail_base", 1.8)])
def test_a_stretched_bone_is_the_top_flag(labels, skeleton, moved, anchor, factor):
    row = 17
    keypoints = labels.keypoints.copy()
    m, a = labels.bodyparts.index(moved), labels.bodyparts.index(anchor)
    keypoints[row, m] = keypoints[row, a] + factor * (keypoints[row, m] - keypoints[row, a])
    report = check_labels(planted(labels, keypoints), skeleton=skeleton)
    top = report.flags[0]
    assert (top.kind, top.row, top.image) == ("bone_length", row, labels.image_paths[row])
    assert moved in top.bodyparts
    assert "too long" in top.message or "looks misplaced" in top.message


def test_a_label_far_from_a_confident_model_is_the_top_flag(labels):
    rng = np.random.default_rng(2)
    predictions = np.concatenate(
        [labels.keypoints + rng.normal(0, 1.0, labels.keypoints.shape), np.full((*labels.keypoints.shape[:2], 1), 0.9)],
        axis=-1,
    )
    nose, paw = labels.bodyparts.index("nose"), labels.bodyparts.index("paw_left_hind")
    size = np.sqrt(np.mean(np.sum((labels.keypoints[8] - labels.keypoints[8].mean(0)) ** 2, -1)))
    predictions[8, nose, :2] += [0.6 * size, 0]  # the model, sure of itself, disagrees
    predictions[12, paw, :2] += [0.0, 0.8 * size]  # the model disagrees but is unsure: no evidence
    predictions[12, paw, 2] = 0.2
    report = check_labels(labels, predictions=predictions)
    assert [(f.kind, f.row, f.bodyparts) for f in report.flags] == [("model_disagreement", 8, ("nose",))]
    assert "likelihood 0.90" in report.flags[0].message


def test_too_few_frames_is_said_not_flagged(labels):
    report = check_labels(labels.subset(range(6)))
    assert report.flags == []
    assert any("left/right swaps of paw_left_front / paw_right_front" in n and "min_frames" in n for n in report.notes)
    assert any(n.startswith("bone lengths: not checked, 6 frame(s)") for n in report.notes)


def test_bad_input_is_a_clear_error(labels):
    with pytest.raises(
        LabelCheckError, match=r"skeleton entry 1 \['head', 'whisker'\]: unknown body part\(s\) \['whisker'\]"
    ):
        check_labels(labels, skeleton=[("nose", "head"), ("head", "whisker")])
    with pytest.raises(LabelCheckError, match=r"symmetric entry 0: expected two different body-part names"):
        check_labels(labels, symmetric=[("nose", "nose")])
    with pytest.raises(LabelCheckError, match=r"predictions: shape \(48, 9, 2\).*expected \(48, 9, 3\)"):
        check_labels(labels, predictions=labels.keypoints)
    with pytest.raises(LabelCheckError, match=r"predictions: shape \(47, 9, 3\)"):
        check_labels(labels, predictions=np.zeros((47, 9, 3)))
    with pytest.raises(LabelCheckError, match=r"label check parameters: .*bone_z"):
        check_labels(labels, params={"bone_z": -1})
    with pytest.raises(LabelCheckError, match=r"unknown key 'swap_margn'"):
        check_labels(labels, params={"swap_margn": 3})


# ------------------------------------------------------------------------------ a calibrated rig


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> tuple[RigProject, LabeledFrames]:
    project = make_rig_project(
        tmp_path_factory.mktemp("rig"), image_size=(320, 240), n_frames=60, n_labeled=30, n_board_frames=2, seed=1
    )
    labels = read_multiview_labels(project.root, project.csv_files, project.camera_names)
    noise = np.random.default_rng(3).normal(0, LABEL_NOISE_PX, labels.keypoints.shape)
    return project, replace(labels, keypoints=labels.keypoints + noise)


def off_epipolar_shift(project: RigProject, instant: int, keypoint: int, view: int, length: float) -> np.ndarray:
    """A shift of ``length`` px in ``view`` as far as can be from every other view's epipolar line
    through the true point (a shift along one would let that pair agree on a wrong point)."""
    group = read_calibration(project.calibration)
    with np.load(project.ground_truth) as truth:
        point = truth["points3d"][truth["labeled_frames"][instant], keypoint]
    camera = group[project.camera_names[view]]
    directions = []
    for other in project.camera_names:
        if other != camera.name:
            centre = -group[other].rotation.T @ group[other].translation
            step = camera.project(point + 0.05 * (point - centre)) - camera.project(point)
            directions.append(step / np.linalg.norm(step))
    angles = np.linspace(0, np.pi, 181)
    candidates = np.stack([np.cos(angles), np.sin(angles)], -1)
    sines = np.abs(np.stack([candidates[:, 0] * d[1] - candidates[:, 1] * d[0] for d in directions]))
    return length * candidates[np.argmax(sines.min(0))]


def test_a_view_moved_by_25_px_is_the_top_flag(rig):
    project, labels = rig
    n_instants, snout, cam1 = len(labels) // 3, labels.bodyparts.index("snout"), 1
    instant = 13
    row = cam1 * n_instants + instant
    keypoints = labels.keypoints.copy()
    keypoints[row, snout] += off_epipolar_shift(project, instant, snout, cam1, 25.0)
    report = check_labels(planted(labels, keypoints), calibration=project.calibration, symmetric=[])
    views = report.of_kind("view_disagreement")
    assert [(f.row, f.view, f.bodyparts) for f in views] == [(row, "cam1", ("snout",))]
    assert report.flags[0] == views[0] and views[0].image == labels.image_paths[row]
    assert "the other views agree without it" in views[0].message
    assert 22 < float(views[0].message.split(" px ")[0].rsplit(" ", 1)[1]) < 28


def test_two_views_that_disagree_are_flagged_once(rig):
    project, labels = rig
    n_instants, snout = len(labels) // 3, labels.bodyparts.index("snout")
    instant = 20
    keypoints = labels.keypoints.copy()
    keypoints[2 * n_instants + instant, snout] = np.nan  # cam2 does not label it: two views left
    keypoints[n_instants + instant, snout] += off_epipolar_shift(project, instant, snout, 1, 25.0)
    report = check_labels(planted(labels, keypoints), calibration=project.calibration, symmetric=[])
    views = report.of_kind("view_disagreement")
    assert len(views) == 1 and views[0].row in (instant, n_instants + instant)
    assert "either may be wrong" in views[0].message


def test_a_clean_rig_has_views_that_agree(rig):
    project, labels = rig
    report = check_labels(labels, calibration=project.calibration)
    assert report.of_kind("view_disagreement") == []
    assert "views in 3D" not in " ".join(report.notes)


def test_a_calibration_must_fit_the_labels(rig, labels):
    project, rig_labels = rig
    with pytest.raises(LabelCheckError, match=r"calibration: given for labels of one view"):
        check_labels(labels, calibration=project.calibration)
    with pytest.raises(LabelCheckError, match=r"none for view 'cam1' \(camera 'top'\); name each view's camera"):
        check_labels(rig_labels, calibration=project.calibration, camera_names={"cam1": "top"})


# ------------------------------------------------------------------------------ real labels


def test_the_mirror_mouse_labels_raise_no_flag(mirror_mouse_dir):
    """Verified by looking: the candidates just under the thresholds are real postures (a tail
    leaving the frame, a hind paw kicked back and up), and in the side view the exchanged front
    or hind paws fit about as well as labeled (they overlap), so nothing is flagged."""
    labels = read_labels(mirror_mouse_dir / "CollectedData.csv")
    assert len(symmetric_pairs(labels.bodyparts)) == 4
    report: LabelReport = check_labels(labels)
    assert report.flags == []
    assert report.notes == ["model disagreement: not checked, no predictions of a cross-validated model given"]


@pytest.mark.parametrize("row", [0, 30, 60, 89])
def test_a_hind_paw_swap_in_the_mirror_mouse_bottom_view_is_the_top_flag(mirror_mouse_dir, row):
    labels = read_labels(mirror_mouse_dir / "CollectedData.csv")
    keypoints = labels.keypoints.copy()
    a, b = labels.bodyparts.index("paw1LH_bot"), labels.bodyparts.index("paw4RH_bot")
    keypoints[row, [a, b]] = keypoints[row, [b, a]]
    top = check_labels(planted(labels, keypoints)).flags[0]
    assert (top.kind, top.row, top.bodyparts) == ("left_right_swap", row, ("paw1LH_bot", "paw4RH_bot"))
