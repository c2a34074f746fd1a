"""Two stages for a small animal in a large frame: detect, crop, zoom.

A *detector* (the same heatmap network as the pose model, trained at the low resolution
``crop_zoom.detector_resize`` to predict ONE keypoint, the animal's centre = the mean of the
labeled keypoints) finds the animal in the whole frame. A crop of ``crop_zoom.crop_size``
ORIGINAL pixels centred on that detection is resized to ``data.image_resize`` and given to the
*pose* model, trained on label-centred crops shifted at random by up to ``jitter_frac`` of the
crop side. Its keypoints are mapped back to original-frame pixels through the crop's affine
matrix, so every public boundary (predictions CSV, PoseEstimation, EKS, NWB) sees original
pixels.

Both stages are ordinary single-stage models trained by :func:`.single.train_single` on derived
projects written into a temporary folder: the detector's CSV names the original images with
one ``centre`` keypoint; the pose stage's images are the crops, already at the network input
size (cut with the same :func:`crop_frames` that inference uses, so training and prediction
see identically resampled pixels). A context pose model gets each labeled frame's neighbours
cropped around the same centre; the unsupervised losses get the project's videos cropped by
the trained detector (:func:`write_cropped_videos`). The model directory holds both::

    model_dir/model.json          "kind": "crop_zoom", the crop size, both stages
    model_dir/config.yaml         the full TrainConfig (crop_zoom.crop_size resolved)
    model_dir/splits.csv          original image path -> train | val | test (both stages)
    model_dir/metrics.csv         both stages' per-epoch history (column "stage")
    model_dir/detector/           a complete single-stage model directory (1 keypoint)
    model_dir/pose/               a complete single-stage model directory (the body parts)

The crop geometry (boxes, affine maps, detected centres) is
:mod:`element_lightning_pose.engine.data.crops`, shared with inference.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from element_lightning_pose.engine.config import ConfigError, TrainConfig, crop_zoom_unsupported
from element_lightning_pose.engine.data.crops import (
    apply_affine,
    crop_centres,
    crop_frames,
    crop_size_from_labels,
    label_centres,
)
from element_lightning_pose.engine.data.keypoints import write_csv_atomic, write_keypoint_csv
from element_lightning_pose.engine.data.labels import (
    LabeledFrames,
    context_image_paths,
    frame_size,
    image_file,
    load_context_frames,
    read_image,
    scale_points,
)
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.data.splits import project_splits, write_splits
from element_lightning_pose.engine.data.video import iter_batches, video_info, write_video
from element_lightning_pose.engine.model_dir import (
    CONFIG_YAML,
    DETECTOR_CENTRE,
    ModelInfo,
    check_replaceable,
    read_model_info,
    write_model_info,
)
from element_lightning_pose.engine.networks.checkpoint import network_from_weights, read_checkpoint
from element_lightning_pose.engine.training.single import (
    TrainResult,
    from_global_rank_zero,
    global_rank_zero,
    seed_stage,
    train_or_reuse,
    train_single,
)
from element_lightning_pose.engine.training.stopping import (
    check_same_networks,
    staged_run,
    stopped_folder,
)
from element_lightning_pose.engine.training.unlabeled import plan_segments
from element_lightning_pose.engine.training.unsupervised import require_unlabeled_videos
from element_lightning_pose.engine.types import PathLike

logger = logging.getLogger(__name__)

DETECTOR_DIR = "detector"
POSE_DIR = "pose"


# --------------------------------------------------------------------------- geometry


# --------------------------------------------------------------------------- labels -> stages


def _relative_png(image_path: str) -> str:
    path = Path(image_path)
    parts = path.parts[1:] if path.is_absolute() else path.parts
    return str(Path(*parts).with_suffix(".png"))


def write_detector_project(labels: LabeledFrames, out: Path, target: str = "centre") -> Path:
    """A project of the original images (linked, under their own paths) labeled with one
    ``centre`` keypoint (``target="centre"``) or with every body part (``"keypoints"``)."""

    out.mkdir(parents=True, exist_ok=True)
    root = Path(labels.root).resolve()
    for top in sorted({Path(p).parts[0] for p in labels.image_paths}):
        try:
            (out / top).symlink_to(root / top, target_is_directory=(root / top).is_dir())
        except OSError:  # no symbolic links here: copy the labeled images themselves
            for row, path in enumerate(labels.image_paths):
                (out / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(image_file(labels, row), out / path)
            break
    if target == "keypoints":
        points, names = labels.keypoints, list(labels.bodyparts)
    else:
        points, names = label_centres(labels.keypoints)[:, None, :], [DETECTOR_CENTRE]
    write_keypoint_csv(out / "CollectedData.csv", points, names, ("x", "y"), labels.scorer, labels.image_paths)
    return out


def write_pose_project(
    labels: LabeledFrames,
    rows: np.ndarray,
    crop_size: tuple[int, int],
    input_size: tuple[int, int],
    out: Path,
    *,
    context: bool = False,
) -> tuple[Path, list[str]]:
    """A project of label-centred crops (already at ``input_size``) of labeled ``rows``; its image paths.

    The labels are in crop-input pixels; a keypoint outside its crop is NaN (no target). With
    ``context`` (a context pose model), the neighbouring files t-2..t+2 of each labeled frame
    are cropped around the SAME centre and written beside it under their own names, where the
    context model looks for them; a neighbour that is itself labeled keeps its own crop.
    """

    out.mkdir(parents=True, exist_ok=True)
    centres = label_centres(labels.keypoints)
    images, points = [], []
    for row in rows:
        frame = read_image(image_file(labels, int(row)))
        crops, matrices = crop_frames(frame[None], centres[row][None], crop_size, input_size)
        moved = apply_affine(matrices[0], labels.keypoints[row])
        h, w = input_size
        outside = (moved[:, 0] < -0.5) | (moved[:, 0] > w - 0.5) | (moved[:, 1] < -0.5) | (moved[:, 1] > h - 0.5)
        moved[outside] = np.nan
        relative = _relative_png(labels.image_paths[row])
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / relative), cv2.cvtColor(crops[0], cv2.COLOR_RGB2BGR))
        images.append(relative)
        points.append(moved)
    if context:
        written = set(images)
        for row in rows:
            window = load_context_frames(labels, int(row))
            paths = context_image_paths(labels.root, labels.image_paths[int(row)])
            crops, _ = crop_frames(window, np.repeat(centres[row][None], len(window), axis=0), crop_size, input_size)
            for path, crop in zip(paths, crops):
                relative = _relative_png(path)
                if relative not in written:
                    cv2.imwrite(str(out / relative), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
                    written.add(relative)
    write_keypoint_csv(out / "CollectedData.csv", np.stack(points), labels.bodyparts, ("x", "y"), labels.scorer, images)
    return out, images


def write_cropped_videos(
    detector_dir: Path,
    videos: list[Path],
    config: TrainConfig,
    crop_size: tuple[int, int],
    out: Path,
    *,
    batch_size: int = 32,
) -> list[Path]:
    """The unlabeled videos as the pose stage will see them: cropped around the trained detector's
    detections, at the pose input size; one video per segment the frame cache would keep.

    The segments are the frame cache's (``losses.max_cached_frames``, ``losses.clip_length``,
    the training seed; :func:`unlabeled.plan_segments`), so the pose stage's own cache takes them
    whole. Each frame is cropped around its own temporally smoothed detection, weak frames at
    the detector's best guess (:func:`crops.crop_centres`): what inference does, so the
    unsupervised losses see the crops the pose model will be given. Written losslessly enough
    for training (Motion JPEG), under ``out``; returns their paths.
    """
    # under DDP, every process crops its own copy; the detector is in global rank 0's stage alone
    saved = from_global_rank_zero(partial(read_checkpoint, detector_dir / "checkpoints" / "best.ckpt"))
    net = network_from_weights(saved.config, len(saved.bodyparts), saved.network_weights).eval()
    detector_size = saved.config.data.image_resize
    infos = [video_info(v) for v in videos]
    losses = config.losses
    plan = plan_segments(
        [i.n_frames for i in infos], losses.max_cached_frames, losses.clip_length, config.training.seed
    )
    out.mkdir(parents=True, exist_ok=True)
    logger.info(
        "crop zoom: cropping %d frames of %d video(s) around the detector's detections for the unsupervised losses",
        sum(p[2] for p in plan),
        len({p[0] for p in plan}),
    )
    written = []
    for number, (video, start, length) in enumerate(plan):
        info = infos[video]
        detections = []
        with torch.inference_mode():
            for _, small in iter_batches(videos[video], batch_size, detector_size, start=start, stop=start + length):
                batch = torch.from_numpy(small).permute(0, 3, 1, 2)
                points = net.keypoints(batch).numpy().astype(np.float64)
                points[..., :2] = scale_points(points[..., :2], detector_size, (info.height, info.width))
                detections.append(points)
        centres, _ = crop_centres(
            np.concatenate(detections), config.crop_zoom.min_detection_confidence, config.crop_zoom.detection_smoothing
        )

        def crops(video: int = video, start: int = start, centres: np.ndarray = centres):
            for indices, frames in iter_batches(videos[video], batch_size, start=start, stop=start + len(centres)):
                yield from crop_frames(frames, centres[indices - start], crop_size, config.data.image_resize)[0]

        path = out / f"{Path(videos[video]).stem}_{number:03d}.avi"
        written.append(write_video(path, crops(), info.fps if info.fps > 0 else 30.0, codec="MJPG"))
    return written


def _write_split_file(path: Path, images: list[str], splits: np.ndarray) -> Path:
    return write_csv_atomic(pd.DataFrame({"image": images, "split": list(splits)}).set_index("image"), path)


def stage_configs(config: TrainConfig) -> tuple[TrainConfig, TrainConfig]:
    """The detector's and the pose stage's single-stage configs derived from a crop-zoom config."""
    base = config.to_dict()
    base["crop_zoom"] = {"enabled": False}
    # each stage trains on a project of its own, one CSV (a view's network of a per-view model too)
    base["data"].update(
        {"csv_file": "CollectedData.csv", "view_names": [], "video_dir": "videos", "split_file": "splits_fixed.csv"}
    )
    # the detector looks at single whole frames, supervised: the context model and the unlabeled
    # clips are the pose stage's
    detector = {
        **base,
        "data": {**base["data"], "image_resize": list(config.crop_zoom.detector_resize)},
        "model": {**base["model"], "model_type": "heatmap"},
        "losses": {**base["losses"], "unsupervised": []},
    }
    # the crop's jitter is the pose stage's translation augmentation, a fraction of the crop side
    augmentation = dict(base["augmentation"])
    augmentation["translate_frac"] = max(augmentation["translate_frac"], config.crop_zoom.jitter_frac)
    if config.crop_zoom.jitter_frac > 0:
        augmentation["enabled"] = True
    # input: data.image_resize, the size the crops are cut at; the frame cache of the cropped clips
    # is the pose stage's own (a shared losses.cache_dir holds whole frames)
    # and its pose PCA is of the keypoints relative to their mean: the labeled crops are centred on the
    # labels, the clips on a detection off by up to tens of pixels, which an uncentred subspace reads
    # as an implausible pose (the arena's true poses in detector crops: 12 px median residual, 1.6 px
    # in label-centred ones, epsilon 6 px; benchmarks/results/cropzoom_semi.md)
    losses = {**base["losses"], "cache_dir": None, "pca_singleview_centred": True}
    pose = {**base, "augmentation": augmentation, "losses": losses}
    budget = config.training.max_time_s
    if budget:
        # one wall-time budget for the whole model, shared by the stages as their pixels per frame
        detector_pixels = float(np.prod(config.crop_zoom.detector_resize))
        share = detector_pixels / (detector_pixels + float(np.prod(config.data.image_resize)))
        detector["training"] = {**base["training"], "max_time_s": budget * share}
        pose["training"] = {**base["training"], "max_time_s": budget * (1 - share)}
    return TrainConfig.from_dict(detector, "crop_zoom detector"), TrainConfig.from_dict(pose, "crop_zoom pose")


def _check_supported(config: TrainConfig, model_dir: Path, resume_from: PathLike | None) -> None:
    unsupported = crop_zoom_unsupported(config)
    if unsupported:
        raise ConfigError(f"crop_zoom.enabled: crop zoom does not train {unsupported}")
    if resume_from is not None:
        check_same_networks(model_dir, resume_from, config, "crop_zoom.enabled")


def train_crop_zoom(
    config: TrainConfig,
    project_root: PathLike,
    model_dir: PathLike,
    *,
    resume_from: PathLike | None = None,
    progress: bool = True,
    keep_stopped: bool = False,
    final_dir: PathLike | None = None,
) -> TrainResult:
    """Train the detector into ``model_dir/detector`` and the pose model into ``model_dir/pose``.

    Both stages share one train / val / test split of the labeled frames. The whole model
    directory is staged and renamed into place when both stages succeed (as
    :func:`.single.train_single` does for one). Returns the pose stage's :class:`TrainResult`
    with ``model_dir`` the top-level directory and ``wall_time_s`` both stages'.

    ``keep_stopped``: a run stopped by a signal after an epoch of either stage is kept as
    ``<model_dir>.stopped`` (:mod:`.stopping`), a finished detector and the stopped stage's
    epochs included. ``resume_from`` is a checkpoint inside that folder: the run goes on from it
    with the same split and crop-zoom settings, reusing the finished detector. ``final_dir``:
    where ``model_dir`` ends up when it is a network of a run of several (a per-view model's view).
    """
    model_dir = Path(model_dir)
    _check_supported(config, model_dir, resume_from)
    labels, videos = load_project(
        project_root, config.data.csv_file, config.data.video_dir, config.data.view_names or None
    )
    require_unlabeled_videos(config, videos, project_root)  # before the detector trains, not after
    check_replaceable(model_dir)
    kept = stopped_folder(model_dir) if resume_from is not None else None
    splits = project_splits(labels, config.data, project_root, saved=kept / "splits.csv" if kept else None)
    height, width = frame_size(labels)
    crop_size = config.crop_zoom.crop_size or crop_size_from_labels(
        labels.keypoints[splits == "train"], (height, width), config.crop_zoom.margin
    )
    resolved = config.model_copy(deep=True)
    resolved.crop_zoom.crop_size = (int(crop_size[0]), int(crop_size[1]))
    # frames without any label have no centre: nothing to crop, nothing to learn for the pose stage
    pose_rows = np.flatnonzero(np.isfinite(label_centres(labels.keypoints)).all(axis=1))
    # a stop keeps the run with its finished stages, and waits for the model once its files are written
    with (
        tempfile.TemporaryDirectory(prefix="elp-cropzoom-") as tmp,
        staged_run(
            model_dir,
            when=global_rank_zero,
            keep=keep_stopped,
            seed=partial(seed_stage, kept, resume=True, frame_cache=False) if kept is not None else None,
            started_with=config,
        ) as (stage, written),
    ):
        detector, pose = _train_stages(
            config,
            resolved,
            labels,
            videos,
            splits,
            pose_rows,
            crop_size,
            stage,
            Path(final_dir or model_dir),
            Path(tmp),
            progress,
        )
        wall_time = detector.wall_time_s + pose.wall_time_s
        result = TrainResult(
            model_dir,
            model_dir / POSE_DIR / "checkpoints" / "best.ckpt",
            float(wall_time),
            pose.epochs,
            pose.best_val_loss,
            pose.history,
        )
        if not global_rank_zero():
            return result  # another DDP process: its stage holds no networks, and is discarded
        resolved.to_yaml(stage / CONFIG_YAML)
        history = pd.concat(
            [detector.history.assign(stage=DETECTOR_DIR), pose.history.assign(stage=POSE_DIR)],
            ignore_index=True,
        )
        write_csv_atomic(history, stage / "metrics.csv")
        info = ModelInfo.of_crop_zoom(
            read_model_info(stage / POSE_DIR),
            read_model_info(stage / DETECTOR_DIR),
            frame_size=[height, width],
            splits=splits,
            wall_time_s=wall_time,
            settings={
                "crop_size": [int(crop_size[0]), int(crop_size[1])],
                "detector_resize": list(config.crop_zoom.detector_resize),
                "detector_target": config.crop_zoom.detector_target,
                "detection_smoothing": config.crop_zoom.detection_smoothing,
                "min_detection_confidence": config.crop_zoom.min_detection_confidence,
                "on_miss": config.crop_zoom.on_miss,
            },
            stages={
                name: {
                    "dir": name,
                    "epochs": result.epochs,
                    "best_val_loss": result.best_val_loss,
                    "wall_time_s": round(float(result.wall_time_s), 3),
                }
                for name, result in ((DETECTOR_DIR, detector), (POSE_DIR, pose))
            },
        )
        write_model_info(stage, info)
        written()
    return result


def _train_stages(
    config: TrainConfig,
    resolved: TrainConfig,
    labels: LabeledFrames,
    videos: list[Path],
    splits: np.ndarray,
    pose_rows: np.ndarray,
    crop_size: tuple[int, int],
    stage: Path,
    final: Path,
    tmp: Path,
    progress: bool,
) -> tuple[TrainResult, TrainResult]:
    """The detector, then the pose stage, into ``stage`` (which becomes ``final``); each reused
    when a resumed run had finished it (:func:`.single.train_or_reuse`)."""
    # the run's own configuration and split first: a stopped run kept with them is resumed with
    # the same split, and only by a caller with the same configuration (stopping.stopped_checkpoint)
    config.to_yaml(stage / CONFIG_YAML)
    write_splits(stage / "splits.csv", labels.image_paths, splits)
    detector_config, pose_config = stage_configs(resolved)
    detector_project = write_detector_project(labels, tmp / "detector", config.crop_zoom.detector_target)
    _write_split_file(detector_project / "splits_fixed.csv", labels.image_paths, splits)
    pose_project, pose_images = write_pose_project(
        labels,
        pose_rows,
        crop_size,
        config.data.image_resize,
        tmp / "pose",
        context=config.model.model_type == "context",
    )
    _write_split_file(pose_project / "splits_fixed.csv", pose_images, splits[pose_rows])
    detector = train_or_reuse(
        stage / DETECTOR_DIR,
        partial(train_single, detector_config, detector_project, stage / DETECTOR_DIR, progress=progress),
        final / DETECTOR_DIR,
    )
    if config.losses.unsupervised:
        write_cropped_videos(stage / DETECTOR_DIR, videos, resolved, crop_size, pose_project / "videos")
    pose = train_or_reuse(
        stage / POSE_DIR,
        partial(train_single, pose_config, pose_project, stage / POSE_DIR, progress=progress),
        final / POSE_DIR,
    )
    return detector, pose


# --------------------------------------------------------------------------- detections
