"""The 2D error scale per body part that the 3D smoother takes from a model's evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from element_lightning_pose.engine.inference.metrics import RAYLEIGH_MEAN, error_scale_px


def test_error_scale_pools_held_out_splits_and_falls_back_to_train():
    summary = pd.DataFrame(
        {
            "body_part": ["snout", "snout", "snout", "tail", "tail", "paw"],
            "split": ["train", "val", "test", "train", "val", "val"],
            "n_frames": [20, 1, 3, 20, 0, 0],
            "mean_px": [1.0, 8.0, 4.0, 2.0, None, None],
        }
    )
    scales = error_scale_px(summary)
    assert set(scales) == {"snout", "tail"}  # paw: nothing labeled
    np.testing.assert_allclose(scales["snout"], (8.0 + 3 * 4.0) / 4 / RAYLEIGH_MEAN)  # val+test, by frames
    np.testing.assert_allclose(scales["tail"], 2.0 / RAYLEIGH_MEAN)  # no held-out frame: train


def test_error_scale_is_the_sd_per_axis_of_a_gaussian_error():
    rng = np.random.default_rng(0)
    distance = np.linalg.norm(rng.normal(0, 5.0, (20000, 2)), axis=1)
    summary = pd.DataFrame(
        {"bodypart": ["a"], "split": ["test"], "n_frames": [distance.size], "mean_px": [distance.mean()]}
    )
    assert abs(error_scale_px(summary)["a"] - 5.0) < 0.1
