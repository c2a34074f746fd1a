"""SmoothingParamSet validates at insert (the engine's SmoothingParams, as `elp smooth`), and a
project without a labeled keypoint is not registered."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"fit_range": "zzz"}, "fit_range"),
        ({"keypoint_groups": 5}, "keypoint_groups"),
        ({"s": "4"}, "s"),
        ({"noise": "gaussian"}, "noise"),
        ({"smoothness": 2.0}, "'smoothness'"),
    ],
    ids=["fit_range", "keypoint_groups", "s-text", "noise", "unknown-key"],
)
def test_bad_smoothing_params_are_refused_at_insert(lp, params, key):
    table = lp.ensemble.SmoothingParamSet
    before = len(table())
    with pytest.raises(ValueError) as caught:  # engine.eks.params.SmoothingParamError
        table.insert_new_params("bad", params)
    assert str(caught.value).startswith("SmoothingParamSet: ") and key in str(caught.value)
    assert len(table()) == before


def test_smoothing_params_are_stored_canonical_and_deduplicated(lp):
    from element_lightning_pose import train

    table = lp.ensemble.SmoothingParamSet
    idx = table.insert_new_params("groups", {"s": 2, "fit_range": "0:40", "keypoint_groups": "0,1;2"})
    stored = (table & {"smoothing_paramset_idx": idx}).fetch1("params")
    assert stored["s"] == 2.0 and stored["centre"] == "median" and stored["noise"] == "auto"
    assert [int(v) for v in stored["fit_range"]] == [0, 40]
    assert [[int(v) for v in group] for group in stored["keypoint_groups"]] == [[0, 1], [2]]
    # the same choice spelt as lists is the same parameter set
    assert table.insert_new_params("again", {"s": 2.0, "fit_range": (0, 40), "keypoint_groups": [[0, 1], [2]]}) == idx
    # the defaults hash as they always did: existing parameter sets are found again
    default = table.insert_new_params("auto s", {})
    old_canonical = {
        "s": None,
        "centre": "median",
        "var_mode": "confidence_weighted",
        "keypoint_groups": None,
        "fit_range": None,
        "noise": "auto",
    }
    assert (table & {"smoothing_paramset_idx": default}).fetch1("param_set_hash") == train.params_hash(old_canonical)


def test_project_without_labeled_keypoints_is_not_registered(lp, lp_root):
    from element_lightning_pose.engine.errors import ProjectError

    root, project = lp_root
    blank = root / "projects" / "no_labels"
    shutil.copytree(project.root, blank)
    frame = pd.read_csv(blank / "CollectedData.csv", header=[0, 1, 2], index_col=0)
    frame.iloc[:, :] = np.nan  # every keypoint of every image unlabeled
    frame.to_csv(blank / "CollectedData.csv")
    before = len(lp.train.VideoSet()), len(lp.train.VideoSet.File())
    with pytest.raises(ProjectError, match="no labeled keypoints in .*no_labels/CollectedData.csv"):
        lp.train.VideoSet.insert_project("projects/no_labels")
    assert (len(lp.train.VideoSet()), len(lp.train.VideoSet.File())) == before


def test_member_without_any_prediction_fails_naming_its_file(lp, flow):
    from element_lightning_pose import dj_compat
    from element_lightning_pose.engine.data.keypoints import read_predictions, write_predictions

    assert dj_compat.populate(lp.model.PoseEstimation, flow["rec"]).errors == []
    idx = lp.ensemble.SmoothingParamSet.insert_new_params("fixed s", {"s": 4.0})
    key = lp.ensemble.EnsembleSmoothingTask.create(flow["rec"], flow["names"], idx, ensemble_id=30)
    member = {**flow["rec"], "model_name": flow["names"][1]}
    path = lp.model.processed_dir() / (lp.model.PoseEstimation & member).fetch1("predictions_file")
    original = path.read_bytes()
    values, bodyparts = read_predictions(path)
    try:
        write_predictions(path, np.full_like(values, np.nan), bodyparts)
        result = dj_compat.populate(lp.ensemble.EnsembleSmoothing, key, suppress_errors=True)
        assert len(result.errors) == 1
        message = result.errors[0][1]
        assert str(path) in message and "no finite prediction" in message and flow["names"][1] in message
        assert not lp.ensemble.EnsembleSmoothing & key
    finally:
        path.write_bytes(original)
    assert dj_compat.populate(lp.ensemble.EnsembleSmoothing, key).errors == []
    assert len(lp.ensemble.EnsembleSmoothing.BodyPartPosition & key) == len(bodyparts)


def test_paramset_chooses_robust_options_and_the_multiview_smoother(lp, flow):
    """The robust options and view groups are stored, refused when bad, and EnsembleSmoothing
    runs the smoother they choose (the same numbers as the engine on the member files)."""
    from element_lightning_pose import dj_compat
    from element_lightning_pose.engine import eks
    from element_lightning_pose.engine.data.keypoints import read_predictions

    table = lp.ensemble.SmoothingParamSet
    with pytest.raises(ValueError, match="view_groups"):
        table.insert_new_params("one view", {"view_groups": [[0]]})
    with pytest.raises(ValueError, match="cannot be combined"):
        table.insert_new_params("both", {"view_groups": "0,1", "keypoint_groups": "2"})
    with pytest.raises(ValueError, match="outlier_threshold"):
        table.insert_new_params("low threshold", {"outlier_threshold": 1})
    idx = table.insert_new_params(
        "two views, robust", {"view_groups": "0,1", "outliers": "reject", "outlier_threshold": 4}
    )
    stored = (table & {"smoothing_paramset_idx": idx}).fetch1("params")
    assert stored["outliers"] == "reject" and stored["outlier_threshold"] == 4.0
    assert [[int(v) for v in g] for g in stored["view_groups"]] == [[0, 1]]
    assert dj_compat.populate(lp.model.PoseEstimation, flow["rec"]).errors == []
    key = lp.ensemble.EnsembleSmoothingTask.create(flow["rec"], flow["names"], idx, ensemble_id=31)
    assert dj_compat.populate(lp.ensemble.EnsembleSmoothing, key).errors == []
    files = [
        lp.model.processed_dir()
        / (lp.model.PoseEstimation & {**flow["rec"], "model_name": m}).fetch1("predictions_file")
        for m in sorted(flow["names"])
    ]
    expected = eks.smooth_multiview(
        [read_predictions(f)[0] for f in files],
        [[0, 1]],
        read_predictions(files[0])[1],
        outliers="reject",
        outlier_threshold=4.0,
    )
    rows = dj_compat.fetch_dicts(lp.ensemble.EnsembleSmoothing.BodyPartPosition & key, "body_part", "x_pos")
    by_part = {row["body_part"]: row for row in rows}
    for k, part in enumerate(expected.bodyparts):
        assert np.allclose(by_part[part]["x_pos"], expected.x[:, k], equal_nan=True)
