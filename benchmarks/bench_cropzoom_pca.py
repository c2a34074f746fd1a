#!/usr/bin/env python
"""How a crop-zoom model's pose PCA reads poses in frame pixels: as it was read before e6df18d, and now.

    python benchmarks/bench_cropzoom_pca.py [--datasets arena reaching]

No training. The pose stage's PCA is fitted as crop zoom fits it: the training frames' labels in
label-centred crops at the pose input size (``data.image_resize``), each frame's keypoints
relative to their mean (``pca_singleview_centred``), epsilon from held-out residuals. Then the
labels of every frame, in frame pixels (what the model predicts), are read by it:

* before: the crop-input PCA on frame pixels (the app's model-guided picks, ``model_pcas``);
* now: ``KeypointPCA.read_at_scale`` (the crop's zoom per axis), as ``elp predict --diagnostics``
  and the app read a crop-zoom model since;
* truth: the same labels in their crops, read by the PCA as fitted, divided by the zoom.

A pose's residual is the distance of its keypoints from the subspace of plausible poses; on true
poses it should be small (under the epsilon for 99% of keypoints). Reported: median and 95th
percentile of the residual per keypoint, over held-out (val + test) frames, in frame pixels.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import RESULTS, header, markdown_table, write_results

from element_lightning_pose.engine.config import LossesConfig
from element_lightning_pose.engine.data.crops import (
    apply_affine,
    crop_matrix,
    crop_origin,
    crop_scale,
    crop_size_from_labels,
    label_centres,
)
from element_lightning_pose.engine.data.labels import frame_size
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.data.splits import split_frames
from element_lightning_pose.engine.training.advice import DEFAULT_RESIZE
from element_lightning_pose.engine.training.pca import fit_pca
from element_lightning_pose.synthetic.projects import make_synthetic_project

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def labels_of(name: str, work: Path):
    if name == "arena":  # bench_small_animal's synthetic arena: a small animal in a 480x640 frame
        project = make_synthetic_project(
            work / "arena", seed=1, image_size=(480, 640), n_labeled=116, n_video_frames=130, scene="arena"
        )
        return load_project(project.root)[0]
    if name == "reaching":  # DeepLabCut's reaching example (real labels)
        root = SHARED / "dlc-reaching-example"
        return load_project(root, "labeled-data/reachingvideo1/CollectedData_Mackenzie.csv")[0]
    raise ValueError(f"unknown dataset {name!r}")


def measure(name: str, labels, input_side: int) -> dict:
    splits = split_frames(len(labels), 0.8, 0.1, seed=0)
    train = splits == "train"
    height, width = frame_size(labels)
    crop_size = crop_size_from_labels(labels.keypoints[train], (height, width), margin=0.25)
    input_size = (input_side, input_side)
    origins = crop_origin(label_centres(labels.keypoints), crop_size)
    in_crops = apply_affine(crop_matrix(origins, crop_size, input_size), labels.keypoints)
    losses = LossesConfig(unsupervised=["pca_singleview"], pca_singleview_centred=True)
    pca = fit_pca("pca_singleview", in_crops[train], labels.bodyparts, losses)
    scale = crop_scale(crop_size, input_size)
    held = ~train
    n = len(labels.bodyparts)
    before = pca.residual_table(labels.keypoints[held], n)
    now = pca.read_at_scale(scale).residual_table(labels.keypoints[held], n)
    truth = pca.residual_table(in_crops[held], n) / scale[0]  # square crop, square input: one zoom
    assert np.allclose(now, truth, equal_nan=True)
    epsilon = pca.epsilon / scale[0]
    return {
        "dataset": name,
        "frames": f"{int(train.sum())} train / {int(held.sum())} held out",
        "crop": f"{crop_size[0]} px -> {input_size[0]} px (zoom {scale[0]:.2f})",
        "epsilon": epsilon,
        "before": before,
        "now": now,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["arena", "reaching"])
    parser.add_argument(
        "--inputs", nargs="+", type=int, default=[DEFAULT_RESIZE[0], 128], help="pose input sides (data.image_resize)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "cropzoom_pca.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            labels = labels_of(name, Path(tmp))
            for side in args.inputs:
                r = measure(name, labels, side)
                rows.append(
                    [
                        r["dataset"],
                        r["frames"],
                        r["crop"],
                        f"{r['epsilon']:.2f}",
                        f"{np.nanmedian(r['before']):.2f} / {np.nanpercentile(r['before'], 95):.2f}",
                        f"{np.nanmedian(r['now']):.2f} / {np.nanpercentile(r['now'], 95):.2f}",
                        f"{np.nanmedian(r['before']) / np.nanmedian(r['now']):.1f}x",
                    ]
                )
                print(rows[-1], flush=True)
    columns = [
        "dataset",
        "labeled frames",
        "crop side -> pose input",
        "epsilon (frame px)",
        "before: residual median / p95 (px)",
        "now: median / p95 (px)",
        "before / now (medians)",
    ]
    lines = [
        *header("A crop-zoom model's pose PCA read on frame pixels: before and after e6df18d"),
        "",
        __doc__.split("\n\n", 2)[2].strip(),
        "",
        *markdown_table(columns, rows),
    ]
    print(write_results(args.out, lines))


if __name__ == "__main__":
    main()
