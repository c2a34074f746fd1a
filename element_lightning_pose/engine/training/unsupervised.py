"""What the unsupervised losses need for one run: fitted PCAs, unlabeled clips and the rig's geometry.

The PCA losses are fitted on the TRAINING split's labels in original pixels (:mod:`.pca`); the
project's videos are decoded once into the frame cache and served as clips, one per labeled
training batch (:mod:`.unlabeled`). A multi-view project of separate cameras gets synchronised
clips of every camera, its multi-view PCA spans the cameras, and the calibrated losses get the
rig's geometry (:mod:`.rig_losses`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from element_lightning_pose.engine.config import GEOMETRIC_LOSSES, ConfigError, TrainConfig
from element_lightning_pose.engine.data.labels import LabeledFrames
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.training.augmentation import Augmenter
from element_lightning_pose.engine.training.pca import KeypointPCA, fit_pca, fit_pcas
from element_lightning_pose.engine.training.rig_losses import RigGeometry, fit_rig_geometry, resolve_calibration
from element_lightning_pose.engine.training.unlabeled import (
    ClipDataset,
    MultiCameraClipDataset,
    build_camera_caches,
    build_frame_cache,
)
from element_lightning_pose.engine.types import PathLike


class UnsupervisedInputs(NamedTuple):
    """What a run's unsupervised losses use; empty (``{}, None, None``) for a supervised run."""

    pcas: dict[str, KeypointPCA]
    clips: ClipDataset | MultiCameraClipDataset | None
    geometry: RigGeometry | None


def unsupervised_inputs(
    config: TrainConfig, labels: LabeledFrames, splits: np.ndarray, videos: list[Path], model_dir: Path
) -> UnsupervisedInputs:
    """Fitted PCAs (training split, original pixels), the unlabeled clip dataset and the rig
    geometry of the calibrated losses (None without them); the frame cache goes under ``model_dir``
    unless ``losses.cache_dir`` names another folder."""
    losses = config.losses
    if not losses.unsupervised:
        return UnsupervisedInputs({}, None, None)
    geometric = [name for name in losses.unsupervised if name in GEOMETRIC_LOSSES]
    if geometric and labels.views is None:
        raise ConfigError(
            f"losses.unsupervised: {geometric} need a multi-view project of separate cameras (data.csv_file: one "
            f"label CSV per camera, data.view_names their names in losses.calibration); {labels.csv_path} is one view"
        )
    if labels.views is not None and (geometric or ("pca_multiview" in losses.unsupervised and not losses.view_groups)):
        return camera_rig_inputs(config, labels, splits, videos, model_dir)
    train_rows = np.flatnonzero(splits == "train")
    pcas = fit_pcas(labels.keypoints[train_rows], labels.bodyparts, losses)
    require_unlabeled_videos(config, videos, labels.root)
    cache_dir, cache_options, augmenter, n_clips = clip_settings(config, labels, splits, model_dir)
    cache = build_frame_cache(videos, config.data.image_resize, cache_dir, **cache_options)
    return UnsupervisedInputs(pcas, ClipDataset(cache, losses.clip_length, n_clips, augmenter), None)


def require_unlabeled_videos(config: TrainConfig, videos: list[Path], project_root: PathLike) -> None:
    """A :class:`ProjectError` when the unsupervised losses are asked for and the project has no videos."""
    if config.losses.unsupervised and not videos:
        raise ProjectError(
            f"losses.unsupervised={config.losses.unsupervised} needs unlabeled videos, but "
            f"{Path(project_root) / config.data.video_dir} has none"
        )


def clip_settings(
    config: TrainConfig, labels: LabeledFrames, splits: np.ndarray, model_dir: Path
) -> tuple[Path, dict, Augmenter | None, int]:
    """What one-camera and synchronised-camera clips share: the frame cache's folder and
    options, the clip augmenter, and the clips per epoch (one per labeled training batch)."""
    losses = config.losses
    cache_dir = Path(losses.cache_dir) if losses.cache_dir else model_dir / "frame_cache"
    options = {"max_frames": losses.max_cached_frames, "clip_length": losses.clip_length, "seed": config.training.seed}
    augmenter = Augmenter(config.augmentation, labels.bodyparts) if config.augmentation.enabled else None
    n_clips = int(np.ceil(np.count_nonzero(splits == "train") / config.training.batch_size))
    return cache_dir, options, augmenter, n_clips


def camera_rig_inputs(
    config: TrainConfig, labels: LabeledFrames, splits: np.ndarray, videos: list[Path], model_dir: Path
) -> UnsupervisedInputs:
    """PCAs, synchronised clips of every camera and the rig geometry (None without the
    geometric losses) of a multi-view project of separate cameras.

    Its multi-view PCA (no ``losses.view_groups``) spans the cameras: one sample is an
    instant's keypoints in every view, (C * K) points, fitted on the training instants.
    """

    losses = config.losses
    assert labels.views is not None
    views = list(dict.fromkeys(labels.views))
    n, n_kp = len(labels) // len(views), len(labels.bodyparts)
    train_rows = np.flatnonzero(splits == "train")
    across = "pca_multiview" in losses.unsupervised and not losses.view_groups
    rows_losses = losses.model_copy(
        update={"unsupervised": [k for k in losses.unsupervised if not (across and k == "pca_multiview")]}
    )
    pcas = fit_pcas(labels.keypoints[train_rows], labels.bodyparts, rows_losses)
    per_view = labels.keypoints.reshape(len(views), n, n_kp, 2)[:, np.flatnonzero(splits[:n] == "train")]
    if across:
        instants = per_view.transpose(1, 0, 2, 3).reshape(per_view.shape[1], len(views) * n_kp, 2)
        names = [f"{view}/{part}" for view in views for part in labels.bodyparts]
        groups: list[list[int | str]] = [[c * n_kp + k for k in range(n_kp)] for c in range(len(views))]
        pcas["pca_multiview"] = fit_pca(
            "pca_multiview", instants, names, losses.model_copy(update={"view_groups": groups})
        )
    geometry = None
    if any(name in GEOMETRIC_LOSSES for name in losses.unsupervised):
        geometry = fit_rig_geometry(resolve_calibration(losses, labels.root), views, per_view, labels.bodyparts, losses)
    cache_dir, cache_options, augmenter, n_clips = clip_settings(config, labels, splits, model_dir)
    caches = build_camera_caches(videos, views, config.data.image_resize, cache_dir, **cache_options)
    return UnsupervisedInputs(pcas, MultiCameraClipDataset(caches, losses.clip_length, n_clips, augmenter), geometry)
