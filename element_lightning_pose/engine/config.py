"""Validated training parameters (pydantic v2) with the defaults of the reference method.

A :class:`TrainConfig` is what ``engine.training.train`` consumes and what a model directory
keeps as ``config.yaml``. Every section forbids unknown keys so that a typo (``lerning_rate``)
fails loudly instead of being silently ignored; :class:`ConfigError` names the dotted key at
fault. :func:`parameter_reference` lists every parameter for the documentation.
"""

from __future__ import annotations

import numbers
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from element_lightning_pose.engine.atomic import write_text_atomic
from element_lightning_pose.engine.errors import ElpError, describe_validation_error
from element_lightning_pose.engine.safe_paths import UnsafePathError, check_name
from element_lightning_pose.engine.types import PathLike


def _is_numpy_bool(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")


def _plain_integer(value: Any) -> Any:
    # numpy integers (np.arange sweeps) are integers; bools and strings are not (strict below)
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


def _plain_real(value: Any) -> Any:
    # an int is a fine float (1 -> 1.0), and so is a numpy float32; bools and strings are not
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not _is_numpy_bool(value):
        return float(value)
    return value


def _plain_bool(value: Any) -> Any:
    return bool(value) if _is_numpy_bool(value) else value


# Strict scalars: lax pydantic stores `max_epochs: true` as 1 and "5" as 5; a YAML typo must fail instead.
# No parameter means anything at inf or NaN (`.inf` seconds overflowed the trainer's timedelta).
Int = Annotated[int, BeforeValidator(_plain_integer), Strict()]
Float = Annotated[float, BeforeValidator(_plain_real), Strict(), Field(allow_inf_nan=False)]
Bool = Annotated[bool, BeforeValidator(_plain_bool), Strict()]

# The largest training.max_time_s (about 32 years): the trainer holds it as a timedelta, whose range ends
# near 8.6e13 s; a limit beyond any run is better left empty (null)
MAX_TIME_S = 1e9

# The one list of backbones: networks.backbones builds these, the parameter model accepts them.
Backbone = Literal["resnet18", "resnet34", "resnet50", "efficientnet_lite0"]
BACKBONES: tuple[str, ...] = typing.get_args(Backbone)
# The one list of split names (data.split_file, the datamodule, ModelEvaluation, the plots).
SPLITS = ("train", "val", "test")


class ConfigError(ElpError, ValueError):
    """A configuration is invalid; the message names each offending key."""


class _ExponentFloatLoader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1), reading ``1e-9`` as the number YAML 1.2 and JSON make it.

    YAML 1.1 wants a dot in a float (``1.0e-9``): without this, ``1e-9`` is a string, which a
    parameter then refuses as "not a valid number".
    """


_ExponentFloatLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parameters written as YAML (a config file, a ``--set`` value), ``1e-9`` read as a number."""
    return yaml.load(text, Loader=_ExponentFloatLoader)  # a SafeLoader: no Python objects


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong in a YAML text and where, on one line (PyYAML's message spans several)."""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the labels are and how frames are sized and split."""

    csv_file: str | list[str] = Field(
        "CollectedData.csv",
        description="label CSV, relative to the project root; a list: one CSV per view (Lightning Pose's "
        "multi-view layout, with view_names); config.yaml: a DeepLabCut project. When CollectedData.csv is "
        "absent, a DeepLabCut project or two or more CollectedData_<view>.csv are found by themselves",
    )
    view_names: list[str] = Field(
        [], description="multi-view projects: one name per CSV of csv_file, contained in that view's video file names"
    )
    multiview: Literal["shared", "per_view"] = Field(
        "shared",
        description="multi-view projects: one network for every view (shared) or one network per view "
        "(per_view, in MODEL_DIR/<view>/)",
    )
    video_dir: str = Field("videos", description="folder of project videos, relative to the project root")
    image_resize: tuple[Int, Int] = Field((256, 256), description="(height, width) the network sees; multiples of 32")
    train_prob: Float = Field(0.8, gt=0, le=1, description="fraction of labeled frames used for training")
    val_prob: Float = Field(0.1, ge=0, lt=1, description="fraction used for validation (best checkpoint)")
    split_seed: Int = Field(0, description="seed of the train/val/test split")
    split_file: str | None = Field(
        None,
        description="CSV with columns image,split (train|val|test) fixing the split instead of the seed "
        "(relative to the project root or absolute; every labeled image must be listed)",
    )
    # crop training at full resolution (DeepLabCut's way; docs/small_animals.md)
    train_crop: tuple[Int, Int] | None = Field(
        None,
        description="(height, width) of the random crops of the resized frame that training sees, in "
        "network-input pixels (multiples of 32, at most image_resize); validation and prediction see the whole "
        "frame. Set image_resize to the frame size (rounded to multiples of 32) to train at full resolution; keep "
        "crops >= 3/4 of each side (smaller ones leave background never ranked below the animal: whole frames "
        "then peak there)",
    )
    train_crop_focus: Float = Field(
        0.5, ge=0, le=1, description="probability that a training crop is placed to contain the labeled animal"
    )

    @field_validator("train_crop")
    @classmethod
    def _crop_multiple_of_32(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and any(v <= 0 or v % 32 for v in value):
            raise ValueError(f"must be positive multiples of 32 (got {tuple(value)})")
        return value

    @model_validator(mode="after")
    def _crop_fits(self) -> DataConfig:
        if self.train_crop is not None:
            crop, size = tuple(self.train_crop), tuple(self.image_resize)
            if crop[0] > size[0] or crop[1] > size[1]:
                raise ValueError(f"train_crop {crop} is larger than image_resize {size}")
        return self

    @field_validator("image_resize")
    @classmethod
    def _multiple_of_32(cls, value: tuple[int, int]) -> tuple[int, int]:
        bad = [v for v in value if v <= 0 or v % 32]
        if bad:
            raise ValueError(f"must be positive multiples of 32 (got {tuple(value)})")
        return value

    @model_validator(mode="after")
    def _probabilities_fit(self) -> DataConfig:
        if self.train_prob + self.val_prob > 1 + 1e-9:
            raise ValueError(f"train_prob + val_prob = {self.train_prob + self.val_prob:g} exceeds 1")
        return self

    @model_validator(mode="after")
    def _views_match_files(self) -> DataConfig:
        files = self.csv_file if isinstance(self.csv_file, list) else None
        if files is not None and (not files or len(set(files)) != len(files)):
            raise ValueError(f"data.csv_file: a list needs one distinct CSV per view, got {files}")
        if self.view_names and files is None:
            raise ValueError(
                f"data.view_names {self.view_names} needs data.csv_file to be a list (one CSV per view), "
                f"not {self.csv_file!r}"
            )
        if files is not None and self.view_names:
            if len(self.view_names) != len(files):
                raise ValueError(
                    f"data.view_names has {len(self.view_names)} name(s) {self.view_names} for "
                    f"{len(files)} file(s) in data.csv_file {files}"
                )
            if len(set(self.view_names)) != len(self.view_names) or not all(self.view_names):
                raise ValueError(f"data.view_names must be distinct, non-empty names, got {self.view_names}")
        for name in self.view_names or []:  # per-view model folders and frame caches are named by them
            try:
                check_name(name, "data.view_names:")
            except UnsafePathError as exc:
                raise ValueError(str(exc)) from None
        return self


class ModelConfig(_Section):
    """Network architecture and heatmap targets."""

    backbone: Backbone = Field("resnet50", description="feature extractor, truncated before pooling")
    pretrained: Bool | str = Field(
        True,
        description="ImageNet weights (true), random init (false), or a path to a weights file",
    )
    model_type: Literal["heatmap", "context"] = Field(
        "heatmap",
        description="heatmap (single frame) or context (frames t-2..t+2 through a temporal head beside the single-frame head)",
    )
    heatmap_sigma: Float = Field(1.25, gt=0, description="Gaussian target sigma, in heatmap pixels")
    nan_keypoints: Literal["mask", "uniform"] = Field(
        "mask",
        description="unlabeled keypoints: no target (mask) or a flat target that teaches low confidence (uniform)",
    )


class TrainingConfig(_Section):
    """Optimisation schedule and hardware."""

    batch_size: Int = Field(8, gt=0, description="labeled frames per training batch")
    val_batch_size: Int = Field(16, gt=0, description="frames per validation batch")
    max_epochs: Int = Field(300, gt=0, description="number of epochs")
    max_steps: Int | None = Field(None, gt=0, description="stop after this many optimizer steps (overrides epochs)")
    max_time_s: Float | None = Field(
        None,
        gt=0,
        le=MAX_TIME_S,
        description="stop after this much training wall time, in seconds (with the epoch and step limits); "
        "empty: no time limit",
    )
    learning_rate: Float = Field(1e-3, gt=0, description="Adam learning rate")
    unfreeze_epoch: Int = Field(20, ge=0, description="backbone frozen before this epoch")
    backbone_lr_ratio: Float = Field(
        0.1,
        gt=0,
        le=1,
        description="at unfreeze the backbone's learning rate starts at this fraction of the head's "
        "(Lightning Pose's 0.1): Adam's first steps move every weight by about the learning rate",
    )
    backbone_lr_warmup_epochs: Int = Field(
        5, ge=0, description="epochs over which the backbone's learning rate ramps linearly up to the head's"
    )
    backbone_batchnorm: Literal["train", "frozen", "after_unfreeze"] = Field(
        "train",
        description="backbone BatchNorm statistics: 'train' = batch statistics from the first epoch, also while "
        "the backbone is frozen (Lightning Pose's train_bn); 'frozen' = the pretrained running statistics all "
        "along; 'after_unfreeze' = running statistics until unfreeze, then batch statistics (this engine before "
        "0.2: the switch sent the heatmaps back to flat, benchmarks/results/small_animal.md)",
    )
    collapse_guard: Bool = Field(
        True,
        description="when an epoch's training loss returns to the flat-heatmap value after the model "
        "had learned, restore the best weights and optimizer state and halve the learning rate",
    )
    lr_milestones: list[Int] = Field([150, 200, 250], description="epochs at which the learning rate decays")
    lr_gamma: Float = Field(0.5, gt=0, le=1, description="learning-rate decay factor at each milestone")
    seed: Int = Field(0, description="seed of weights init, augmentation and batch order")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        "auto", description="PyTorch Lightning accelerator"
    )
    devices: Int | str = Field("auto", description="PyTorch Lightning devices")
    num_workers: Int = Field(2, ge=0, description="data-loading worker processes")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="arithmetic of the backbone in training: fp32; bf16 autocast (heads and losses stay fp32) on "
        "hardware with native bf16 (CPUs with AMX or AVX512-BF16, Ampere or later GPUs; elsewhere fp32 with a "
        "warning); auto = bf16 where native, else fp32 (benchmarks/results/training.md)",
    )
    check_val_every_n_epoch: Int = Field(1, gt=0, description="validation period, in epochs")
    log_every_n_steps: Int = Field(10, gt=0, description="logging period, in steps")


class AugmentationConfig(_Section):
    """Keypoint-aware augmentation of training frames (labels move with the pixels)."""

    enabled: Bool = Field(True, description="augment training frames")
    rotation_deg: Float = Field(15.0, ge=0, le=180, description="rotation uniformly in +-rotation_deg")
    scale_range: tuple[Float, Float] = Field((0.85, 1.15), description="zoom factor range")
    translate_frac: Float = Field(0.05, ge=0, le=0.5, description="shift up to this fraction of the frame")
    hflip: Bool = Field(False, description="random horizontal flips (use flip_pairs to swap left/right names)")
    flip_pairs: list[tuple[str, str]] = Field([], description="body-part pairs swapped by a horizontal flip")
    blur_prob: Float = Field(0.1, ge=0, le=1, description="probability of a Gaussian blur")
    blur_sigma_max: Float = Field(1.5, gt=0, description="largest blur sigma, in pixels")
    contrast_prob: Float = Field(0.5, ge=0, le=1, description="probability of a contrast change")
    contrast_range: tuple[Float, Float] = Field((0.7, 1.3), description="contrast factor range")
    occlusion_prob: Float = Field(0.2, ge=0, le=1, description="probability of occluding patches")
    occlusion_max_patches: Int = Field(3, ge=1, description="at most this many patches")
    occlusion_max_size_frac: Float = Field(0.2, gt=0, le=1, description="patch side, fraction of the frame")

    @field_validator("scale_range", "contrast_range")
    @classmethod
    def _ordered_positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"must be (low, high) with 0 < low <= high (got {tuple(value)})")
        return value


UNSUPERVISED_LOSSES = ("temporal", "pca_singleview", "pca_multiview", "reprojection", "limb_length")
# losses that need a calibrated rig (losses.calibration) and synchronised clips of every camera
GEOMETRIC_LOSSES = ("reprojection", "limb_length")
KeypointRef = Int | str


class LossesConfig(_Section):
    """Unsupervised losses on clips of unlabeled video frames (none by default).

    Every loss is ``relu(value - epsilon)`` averaged, in ORIGINAL-frame pixels, and its weight
    is ramped up linearly over ``warmup_epochs``. The default weights (0.001) keep one step's
    unsupervised gradient no larger than the supervised one: at 0.01 (Lightning Pose's
    scale) it was 3-5x larger and pointed no consistent way from one clip to the next, which
    made the models worse (``benchmarks/results/loss_gradients.md``).
    """

    unsupervised: list[str] = Field(
        [], description=f"unsupervised losses to use, any of {list(UNSUPERVISED_LOSSES)} (empty: supervised only)"
    )
    warmup_epochs: Float = Field(
        2.0, ge=0, description="unsupervised weights grow linearly from 0 over this many epochs"
    )
    # 4 keeps a step with the losses within 1.5x of a supervised step (labeled batch 8, 256x256:
    # 1.40x at 4 frames, 1.73x at 8, 2.98x at 16; benchmarks/results/unsupervised_cost.md)
    clip_length: Int = Field(4, ge=2, description="contiguous unlabeled frames per training step")
    max_cached_frames: Int = Field(
        5000,
        ge=2,
        description="most unlabeled frames decoded into the cache (contiguous segments of long videos; 5,000 frames at 256x256 take about 1 GB)",
    )
    cache_dir: str | None = Field(
        None, description="folder of the unlabeled-frame cache (default: MODEL_DIR/frame_cache)"
    )
    temporal_weight: Float = Field(
        0.001, ge=0, description="weight of the temporal loss (pixels; the heatmap loss is ~0.01-1)"
    )
    temporal_epsilon: Float | list[Float] = Field(
        20.0, description="temporal loss: allowed displacement between frames, pixels (one value or one per keypoint)"
    )
    temporal_min_confidence: Float = Field(
        0.5, ge=0, le=1, description="temporal loss ignores a pair of frames where either confidence is below this"
    )
    pca_singleview_weight: Float = Field(0.001, ge=0, description="weight of the pose PCA loss (pixels)")
    pca_singleview_keypoints: list[KeypointRef] | None = Field(
        None, description="keypoints (names or indices) of the pose PCA (default: all)"
    )
    pca_singleview_components: Int | None = Field(
        None, gt=0, description="pose PCA components (default: enough for pca_explained_variance)"
    )
    pca_singleview_centred: Bool = Field(
        False,
        description="pose PCA of each frame's keypoints relative to their mean (the pose, not where the animal "
        "is); crop zoom's pose stage always uses it, its crops being centred on a detection",
    )
    pca_explained_variance: Float = Field(
        0.99, gt=0, le=1, description="pose PCA keeps components up to this explained variance"
    )
    pca_multiview_weight: Float = Field(0.001, ge=0, description="weight of the multi-view PCA loss (pixels)")
    view_groups: list[list[KeypointRef]] = Field(
        [], description="multi-view PCA: one list per view, the same keypoints in the same order (names or indices)"
    )
    pca_multiview_components: Int = Field(3, gt=0, description="multi-view PCA components (3: a 3D point)")
    pca_epsilon: Float | None = Field(
        None,
        ge=0,
        description="PCA losses: allowed residual, pixels (default: pca_epsilon_percentile of training residuals)",
    )
    pca_epsilon_percentile: Float = Field(
        99.0, ge=0, le=100, description="percentile (0-100) of label residuals used as PCA epsilon"
    )
    pca_epsilon_residuals: Literal["held_out", "training"] = Field(
        "held_out",
        description="residuals the epsilon percentile is taken of: 'held_out' = each training label's residual from a "
        "PCA fitted without it (10-fold), which a new true pose also has; 'training' = in-sample (Lightning Pose), "
        "too small when few frames are labeled",
    )
    pca_min_confidence: Float = Field(
        0.5,
        ge=0,
        le=1,
        description="PCA losses ignore keypoints predicted with a confidence below this (keeps them off until the labels have shaped the heatmaps)",
    )
    calibration: str | None = Field(
        None,
        description="reprojection / limb_length: the rig's calibration.toml (anipose layout), relative to the project "
        "folder or absolute; each view of the multi-view project must be one of its cameras",
    )
    camera_names: dict[str, str] = Field(
        {}, description="view name -> camera name in the calibration, where they differ (default: the same name)"
    )
    reprojection_weight: Float = Field(
        0.001, ge=0, description="weight of the calibrated reprojection loss (original pixels)"
    )
    reprojection_epsilon: Float | None = Field(
        None,
        ge=0,
        description="reprojection loss: allowed reprojection error, pixels (default: the 95th percentile of the "
        "training labels' own reprojection errors, at least 1 px)",
    )
    reprojection_min_confidence: Float = Field(
        0.5,
        ge=0,
        le=1,
        description="geometric losses: a view predicted below this confidence does not triangulate (it is still "
        "pulled to where the other views place the keypoint)",
    )
    limb_length_weight: Float = Field(
        0.001, ge=0, description="weight of the limb-length loss (calibration units, e.g. mm)"
    )
    limb_bones: list[list[KeypointRef]] | None = Field(
        None,
        description="limb_length: pairs of keypoints whose 3D distance is a bone (default: the spanning tree of the "
        "pairs whose triangulated label distances vary least)",
    )
    limb_length_epsilon: Float | None = Field(
        None,
        ge=0,
        description="limb-length loss: allowed deviation from each bone's length, calibration units (default: the "
        "95th percentile of the training labels' deviations per bone)",
    )

    @field_validator("unsupervised")
    @classmethod
    def _known_losses(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in UNSUPERVISED_LOSSES]
        if unknown:
            raise ValueError(f"unknown loss name(s) {unknown}; known: {list(UNSUPERVISED_LOSSES)}")
        return list(dict.fromkeys(value))

    @field_validator("temporal_epsilon")
    @classmethod
    def _non_negative(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if not values or any(v < 0 for v in values):
            raise ValueError(f"must be >= 0 pixels (one value or one per keypoint), got {value!r}")
        return value

    @field_validator("view_groups")
    @classmethod
    def _equal_views(cls, value: list[list[KeypointRef]]) -> list[list[KeypointRef]]:
        lengths = [len(group) for group in value]
        if value and (len(value) < 2 or len(set(lengths)) != 1 or lengths[0] == 0):
            raise ValueError(
                f"needs two or more views listing the same number of keypoints; got {len(value)} view(s) "
                f"of lengths {lengths}"
            )
        return value

    @model_validator(mode="after")
    def _geometry_needs_calibration(self) -> LossesConfig:
        geometric = [name for name in self.unsupervised if name in GEOMETRIC_LOSSES]
        if geometric and not self.calibration:
            raise ValueError(
                f"{geometric} need losses.calibration (the rig's calibration.toml) and a multi-view project "
                "whose views are its cameras"
            )
        for bone in self.limb_bones or []:
            if len(bone) != 2:
                raise ValueError(f"limb_bones: each bone is a pair of keypoints, got {bone!r}")
        return self


class CropZoomConfig(_Section):
    """Two stages for a small animal in a large frame ("detect, crop, zoom"; see docs/small_animals.md).

    A detector (the same heatmap network at ``detector_resize``, one keypoint: the animal's
    centre, the mean of its labeled keypoints) finds the animal in the whole frame; a crop of
    ``crop_size`` ORIGINAL pixels around the temporally smoothed detection is resized to
    ``data.image_resize`` for the pose model, trained on label-centred crops shifted at random
    by up to ``jitter_frac``. Predictions are mapped back to original-frame pixels.
    """

    enabled: Bool = Field(False, description="train and predict in two stages (detector, then pose on a crop)")
    detector_resize: tuple[Int, Int] = Field(
        (128, 128), description="(height, width) the detector sees the whole frame at; multiples of 32"
    )
    detector_target: Literal["centre", "keypoints"] = Field(
        "centre",
        description="what the detector predicts: one 'centre' keypoint (the mean of the labeled keypoints), or "
        "every body part, the centre then being the confidence-weighted mean of the confident ones",
    )
    crop_size: tuple[Int, Int] | None = Field(
        None,
        description="(height, width) of the crop in ORIGINAL pixels (default: the largest extent of the labeled "
        "animal over the training frames times 1 + 2 * margin, square, even, at most the frame)",
    )
    margin: Float = Field(0.25, ge=0, le=2, description="crop_size from the labels: extra fraction on each side")
    jitter_frac: Float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="pose stage training: random shift of the crop centre, up to this fraction of the crop side "
        "(teaches the pose model the detector's errors)",
    )
    detection_smoothing: Int = Field(
        5, ge=1, description="frames of the running median of the detected centre in a video (1: none)"
    )
    min_detection_confidence: Float = Field(
        0.1,
        ge=0,
        le=1,
        description="a detection below this confidence is not trusted: the frame is cropped at the confident "
        "detections around it (within detection_smoothing), or, with none, as on_miss says",
    )
    on_miss: Literal["best_guess", "nan"] = Field(
        "best_guess",
        description="a frame with no confident detection around it: 'best_guess' crops at the detector's faint "
        "peak and lets the pose model's likelihoods judge; 'nan' gives it no pose (every keypoint NaN, "
        "likelihood 0)",
    )

    @field_validator("detector_resize")
    @classmethod
    def _detector_multiple_of_32(cls, value: tuple[int, int]) -> tuple[int, int]:
        bad = [v for v in value if v <= 0 or v % 32]
        if bad:
            raise ValueError(f"must be positive multiples of 32 (got {tuple(value)})")
        return value

    @field_validator("crop_size")
    @classmethod
    def _positive_crop(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 2:
            raise ValueError(f"must be (height, width) of at least 2 pixels each (got {tuple(value)})")
        return value


def crop_zoom_unsupported(config: TrainConfig) -> str:
    """What of ``config`` crop zoom cannot train, in words ('' when it can train all of it).

    Each camera is cropped around its own detection, so the losses that relate separate cameras
    (the geometric ones) have no common frame. The multi-view PCA is refused too: a crop shifts
    the keypoints of every view in it by the detector's error, a move its subspace reads as
    views that disagree. The temporal and pose PCA losses train on the cropped clips (the pose
    PCA of keypoints relative to their mean, ``losses.pca_singleview_centred``).
    """
    losses = config.losses
    spanning = [name for name in losses.unsupervised if name in GEOMETRIC_LOSSES]
    if spanning:
        return f"the losses that relate separate cameras ({', '.join(spanning)})"
    if "pca_multiview" in losses.unsupervised:
        return "the multi-view PCA loss (a crop moves every view's keypoints by the detector's error)"
    return ""


# The named starting points of a training run: each is a partial set of parameters that
# engine.training.advice completes for a project (preset_params) and chooses among for
# ``preset: auto`` (its rule, from the project alone).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # data.image_resize and data.train_crop come from the project's frame size (preset_params)
    "full_resolution_crops": {"data": {"train_crop_focus": 0.5}},
    "small_animal_crop_zoom": {"crop_zoom": {"enabled": True}},
}
PRESET_DESCRIPTIONS = {
    "default": "single stage, the whole frame resized to data.image_resize",
    "full_resolution_crops": "single stage at the frame's resolution, trained on random crops, predicting whole frames",
    "small_animal_crop_zoom": "two stages: a detector finds the animal, the pose model sees a zoomed crop",
}
AUTO_PRESET = "auto"


class TrainConfig(_Section):
    """All the parameters of one training run."""

    preset: str | None = Field(
        None,
        description="the preset the parameters start from: 'auto' (chosen from the project when training starts, "
        "by the rule of engine.training.advice), one of " + ", ".join(PRESETS) + ", or null (as written). "
        "A model's config.yaml and model.json record the preset it was resolved to",
    )
    data: DataConfig = Field(default_factory=DataConfig, description="labels, resizing, split")
    model: ModelConfig = Field(default_factory=ModelConfig, description="network")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="schedule")
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig, description="augmentation")
    losses: LossesConfig = Field(default_factory=LossesConfig, description="unsupervised losses")
    crop_zoom: CropZoomConfig = Field(default_factory=CropZoomConfig, description="two-stage detect, crop, zoom")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value != AUTO_PRESET and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known: {AUTO_PRESET}, {', '.join(PRESETS)}")
        return value

    @model_validator(mode="after")
    def _multiview_needs_groups(self) -> TrainConfig:
        losses = self.losses
        if (
            "pca_multiview" in losses.unsupervised
            and not losses.view_groups
            and not isinstance(self.data.csv_file, list)
        ):
            raise ValueError(
                "pca_multiview needs losses.view_groups (e.g. [[0, 1, 2], [3, 4, 5]]: keypoints per view of one "
                "frame), or a multi-view project of separate cameras (data.csv_file: one label CSV per camera)"
            )
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, source: str = "config") -> TrainConfig:
        """Validate a (possibly partial) nested dict; missing keys take their defaults."""
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of sections, got {type(values).__name__}")
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, source, cls, per_key_lines=True)) from None

    @classmethod
    def from_yaml(cls, path: PathLike) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            values = load_yaml(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        return cls.from_dict(values, source=str(path))

    @classmethod
    def load(cls, config: TrainConfig | dict | PathLike | None) -> TrainConfig:
        """Accept a TrainConfig, a dict, a YAML path, or None (defaults)."""
        if isinstance(config, TrainConfig):
            return config
        if config is None or isinstance(config, dict):
            return cls.from_dict(config)
        return cls.from_yaml(config)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self, path: PathLike) -> Path:
        """Write the full config (every default spelled out) atomically."""
        return write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """Apply ``section.key=value`` strings (values parsed as YAML), e.g. from ``--set``."""
        values = self.to_dict()
        for assignment, parts, value in parse_assignments(assignments, "override", "training.max_epochs=10"):
            node = values
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"override {assignment!r}: unknown section {part!r}")
                node = node[part]
            node[parts[-1]] = value
        return TrainConfig.from_dict(values, source="overrides")


def dotted_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as ``{dotted key: value}`` (``{"training.max_epochs": 10}``), in order;
    the one flattening of parameter dicts (``--set`` options, diffs, the app's form)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(dotted_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def parse_assignments(items: list[str], what: str, example: str) -> list[tuple[str, list[str], Any]]:
    """``KEY=VALUE`` strings (``--set``) as ``(item, dotted key parts, value)``, each value read as
    YAML (:func:`load_yaml`: ``1e-9`` is a number). ``what`` and ``example`` word the one-line
    :class:`ConfigError` of an item that is not ``KEY=VALUE`` or whose value is not YAML."""
    parsed = []
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(part.strip() for part in parts):
            raise ConfigError(f"{what} {item!r}: expected KEY=VALUE, e.g. {example}")
        try:
            value = load_yaml(raw)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or type(exc).__name__
            mark = getattr(exc, "problem_mark", None)
            where = f" at character {mark.column + 1}" if mark is not None else ""
            raise ConfigError(f"{what} {item!r}: the value is not valid YAML ({problem}{where})") from None
        parsed.append((item, [part.strip() for part in parts], value))
    return parsed


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Annotated:  # Int, Float, Bool: the reference shows the plain type
        return _type_name(typing.get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def parameter_reference() -> list[dict[str, str]]:
    """Every parameter as ``{field, type, default, description}`` (dotted field names)."""
    rows = []
    for section_name, section_field in TrainConfig.model_fields.items():
        section_cls = section_field.annotation
        if not (isinstance(section_cls, type) and issubclass(section_cls, BaseModel)):  # a top-level value (preset)
            rows.append(_reference_row(section_name, section_field))
            continue
        for name, field in section_cls.model_fields.items():
            rows.append(_reference_row(f"{section_name}.{name}", field))
    return rows


def _reference_row(name: str, field: Any) -> dict[str, str]:
    return {
        "field": name,
        "type": _type_name(field.annotation),
        "default": repr(field.get_default(call_default_factory=True)),
        "description": field.description or "",
    }
