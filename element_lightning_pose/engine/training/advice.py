"""Choose for the user: how large the animal is to the network, and which model to train.

:func:`advise` reads the labels and the config and reports the original pixels per heatmap
pixel, the animal's size in heatmap pixels, and a recommendation among the named
:data:`PRESETS` (``elp train`` prints it before training)::

    default                 the animal is large enough at data.image_resize
    full_resolution_crops   single stage at the frame's own resolution, trained on random crops
                            (data.train_crop), predicting the whole frame
    small_animal_crop_zoom  two stages: detect the animal, then the pose model on a crop (crop_zoom)

The pipeline inserts a preset with :func:`element_lightning_pose.presets.insert_preset`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from element_lightning_pose.engine.config import TrainConfig
from element_lightning_pose.engine.data.labels import LabeledFrames, check_image
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.networks.heads import HEATMAP_STRIDE
from element_lightning_pose.engine.types import PathLike

# An animal spanning fewer heatmap pixels than this gets a crop (zoom, or full-resolution crops).
# 16 heatmap pixels are 64 network-input pixels: two cells of the backbone's deepest, stride-32
# features, so the whole pose is read from about four feature vectors; and with the target
# Gaussian's sigma of 1.25 heatmap pixels (+-2 sigma = 5 px), the 4-5 keypoints of such an
# animal sit one or two target widths apart, so their maps overlap and a one-pixel heatmap error
# is 1/16 of the body. The open-field mouse of issue 19 (1/6 of a 640-pixel frame wide: ~11
# heatmap pixels at 256x256) trains poorly (test mean 20-36 px, tail base off the body);
# mirror-mouse, whose animal fills the frame (59 heatmap pixels), trains to 6-7 px.
SMALL_ANIMAL_HEATMAP_PX = 16.0

# The frame rate a whole-frame model must keep on a CPU (issue 19's target for a 640x480 video).
MIN_FRAMES_PER_S = 20.0

# CPU milliseconds per megapixel of network input for one frame of predict_video (BatchNorm fused,
# decoding included), measured with one torch thread on this project's 2-core CPU (Dec 2026,
# synthetic 640x480 video; the cost is linear in the pixels within 5%): resnet18 79 ms a frame
# at 256x256 and 352 ms at 480x640, efficientnet_lite0 48 and 225 ms, resnet34 123 ms and
# resnet50 185 ms at 256x256.
CPU_MS_PER_MEGAPIXEL = {"resnet18": 1200.0, "resnet34": 1900.0, "resnet50": 2800.0, "efficientnet_lite0": 730.0}
CPU_CORES = 2  # the rate estimate assumes both cores (torch's intra-op threads) work for it

# Training crops of the full-resolution preset: 3/4 of each side of the network input (at least
# 256 pixels, the default input). Smaller crops train faster but predict worse on whole frames:
# the spatial-softmax loss only ranks pixels within a crop, so background that never shares a
# crop with the animal is never pushed below it, and a whole frame shows spurious peaks there.
# Measured on a synthetic 128x192 project (efficientnet_lite0, 150 steps, no augmentation): test
# mean 9.1 px on whole frames (163 s), 15.7 px with 96x128 crops (3/4 of each side; 95 s; 7.1 px
# in 260 steps, 170 s), 68.6 px with 64x64 crops (4.5 px on crops around the animal: the whole
# frames peak elsewhere).
TRAIN_CROP_FRACTION = 0.75
MIN_TRAIN_CROP = 256


def train_crop_for(resize: tuple[int, int]) -> tuple[int, int]:
    """The preset's training crop for a network input of ``resize`` (see :data:`TRAIN_CROP_FRACTION`)."""
    height, width = (min(side, max(MIN_TRAIN_CROP, int(side * TRAIN_CROP_FRACTION) // 32 * 32)) for side in resize)
    return height, width


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


def round_to_32(size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) rounded to the nearest positive multiples of 32 (what the network takes)."""
    return (max(32, int(round(size[0] / 32)) * 32), max(32, int(round(size[1] / 32)) * 32))


def preset_params(
    name: str,
    *,
    frame_size: tuple[int, int] | None = None,
    base: dict[str, Any] | None = None,
    image_resize: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The (partial) parameters of preset ``name`` merged over ``base`` (nested dicts).

    ``full_resolution_crops`` needs the project's ``frame_size`` (height, width): its
    ``data.image_resize`` is the frame rounded to multiples of 32 (or ``image_resize``, e.g.
    :func:`budget_resize`'s) and its ``data.train_crop`` :func:`train_crop_for` that input.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    extra = copy.deepcopy(PRESETS[name])
    if name == "full_resolution_crops":
        if frame_size is None:
            raise ValueError(f"preset {name!r} needs frame_size=(height, width) of the project's frames")
        resize = round_to_32(frame_size) if image_resize is None else tuple(image_resize)
        crop = train_crop_for((int(resize[0]), int(resize[1])))
        extra["data"] = {"image_resize": list(resize), "train_crop": list(crop), **extra["data"]}
    return _merge(copy.deepcopy(base or {}), extra)


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def set_options(params: dict[str, Any], prefix: str = "") -> list[str]:
    """Nested parameters as ``elp train --set`` options (``--set 'data.image_resize=[480, 640]'``)."""
    options = []
    for key, value in params.items():
        if isinstance(value, dict):
            options += set_options(value, f"{prefix}{key}.")
        else:
            text = "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list | tuple) else value
            text = str(text).lower() if isinstance(value, bool) else text
            options.append(f"--set '{prefix}{key}={text}'")
    return options


def animal_extent(keypoints: np.ndarray) -> np.ndarray:
    """Per labeled frame, (width, height) of the box around its labeled keypoints, (N, 2) pixels.

    NaN for a frame with fewer than two labeled keypoints (no extent to measure).
    """
    points = np.asarray(keypoints, dtype=float)
    labeled = np.isfinite(points).all(axis=-1)
    with np.errstate(all="ignore"):
        masked = np.where(labeled[..., None], points, np.nan)
        lo, hi = np.nanmin(masked, axis=1), np.nanmax(masked, axis=1)
    extent = hi - lo
    extent[labeled.sum(axis=1) < 2] = np.nan
    return extent


def cpu_frames_per_s(backbone: str, size: tuple[int, ...]) -> float:
    """Estimated CPU prediction rate of a network input of ``size`` (see :data:`CPU_MS_PER_MEGAPIXEL`)."""
    ms = CPU_MS_PER_MEGAPIXEL.get(backbone, max(CPU_MS_PER_MEGAPIXEL.values())) * size[0] * size[1] / 1e6
    return CPU_CORES * 1000.0 / ms


def budget_resize(
    frame_size: tuple[int, int], backbone: str, min_frames_per_s: float = MIN_FRAMES_PER_S
) -> tuple[int, int]:
    """The frame rounded to multiples of 32, shrunk (same aspect) until it predicts at ``min_frames_per_s``."""
    full = round_to_32(frame_size)
    ms_per_px = CPU_MS_PER_MEGAPIXEL.get(backbone, max(CPU_MS_PER_MEGAPIXEL.values())) / 1e6
    max_px = CPU_CORES * 1000.0 / (ms_per_px * min_frames_per_s)
    if full[0] * full[1] <= max_px:
        return full
    factor = math.sqrt(max_px / (frame_size[0] * frame_size[1]))
    return (max(32, int(frame_size[0] * factor) // 32 * 32), max(32, int(frame_size[1] * factor) // 32 * 32))


@dataclass(frozen=True)
class Advice:
    """How large the animal is to the network, and the preset recommended for it."""

    frame_size: tuple[int, int]  # (height, width) of the labeled frames
    image_resize: tuple[int, int]  # the network input of the config
    frame_px_per_heatmap_px: tuple[float, float]  # (vertical, horizontal) frame pixels per heatmap pixel
    n_frames_measured: int  # labeled frames with two or more labeled keypoints
    animal_frame_px: float  # median over those frames of the keypoints' larger extent, frame pixels
    animal_heatmap_px: float  # the same in heatmap pixels at image_resize (median of the frames)
    full_resize: tuple[int, int]  # the frame rounded to multiples of 32
    full_resize_frames_per_s: float  # estimated CPU prediction rate of the whole frame at full_resize
    budget_resize: tuple[int, int]  # the largest input (<= full_resize) that predicts at min_frames_per_s
    animal_heatmap_px_budget: float  # the animal in heatmap pixels at budget_resize
    preset: str  # the recommended key of PRESETS
    reason: str
    params: dict[str, Any] = field(default_factory=dict)  # the preset's parameters for this project

    def summary(self) -> str:
        """The lines ``elp train`` prints."""
        (h, w), (rh, rw), (sy, sx) = self.frame_size, self.image_resize, self.frame_px_per_heatmap_px
        lines = [
            f"frames {h}x{w} px, network input {rh}x{rw}: one heatmap pixel is {sy:.2f} x {sx:.2f} frame pixels "
            "(height x width)"
        ]
        if self.n_frames_measured:
            lines.append(
                f"animal (extent of the labeled keypoints, median of {self.n_frames_measured} frames): "
                f"{self.animal_frame_px:.0f} frame px = {self.animal_heatmap_px:.1f} heatmap px"
            )
        lines.append(f"recommended: {self.preset} ({PRESET_DESCRIPTIONS[self.preset]}): {self.reason}")
        options = set_options(self.params)
        if options:
            lines.append("  " + " ".join(options))
        return "\n".join(lines)


def advise(
    labels: LabeledFrames,
    config: TrainConfig | dict | PathLike | None = None,
    *,
    min_frames_per_s: float = MIN_FRAMES_PER_S,
) -> Advice:
    """The advice for training ``config`` on ``labels`` (see :data:`SMALL_ANIMAL_HEATMAP_PX`).

    The animal is small when it spans fewer than ``SMALL_ANIMAL_HEATMAP_PX`` heatmap pixels at
    ``data.image_resize``. Then: crop training (``full_resolution_crops``) at the frame's own
    resolution, or at the largest one whose whole frame still predicts at ``min_frames_per_s``
    on a CPU (:func:`budget_resize`), when the animal is large enough there; crop zoom when it
    is not. Otherwise the default.
    """
    config = TrainConfig.load(config)
    if len(labels) == 0:
        raise ProjectError(f"{labels.csv_path}: no labeled frames")
    frame_size = check_image(_image_file(labels, 0))
    resize = (int(config.data.image_resize[0]), int(config.data.image_resize[1]))
    full = round_to_32(frame_size)
    within = budget_resize(frame_size, config.model.backbone, min_frames_per_s)
    extent = animal_extent(labels.keypoints)  # (N, 2): width, height in frame pixels
    extent = extent[np.isfinite(extent).all(axis=1)]
    scale = _px_per_heatmap_px(frame_size, resize)
    animal_px = float(np.median(extent.max(axis=1))) if len(extent) else math.nan
    animal_hm = _median_heatmap_extent(extent, scale)
    animal_hm_budget = _median_heatmap_extent(extent, _px_per_heatmap_px(frame_size, within))
    full_rate = cpu_frames_per_s(config.model.backbone, full)
    preset, reason = _choose(config, resize, full, full_rate, within, animal_hm, animal_hm_budget, min_frames_per_s)
    params = preset_params(preset, frame_size=frame_size, image_resize=within) if preset != "default" else {}
    return Advice(
        frame_size,
        resize,
        scale,
        len(extent),
        animal_px,
        animal_hm,
        full,
        full_rate,
        within,
        animal_hm_budget,
        preset,
        reason,
        params,
    )


def advise_project(project_root: PathLike, config: TrainConfig | dict | PathLike | None = None) -> Advice:
    """:func:`advise` for the labels of the project at ``project_root`` (``data.csv_file``)."""
    config = TrainConfig.load(config)
    labels, _ = load_project(project_root, config.data.csv_file, config.data.video_dir)  # train()'s checks
    return advise(labels, config)


def _image_file(labels: LabeledFrames, row: int) -> Path:
    path = Path(labels.image_paths[row])
    return path if path.is_absolute() else Path(labels.root) / path


def _px_per_heatmap_px(frame_size: tuple[int, int], resize: tuple[int, int]) -> tuple[float, float]:
    return (frame_size[0] * HEATMAP_STRIDE / resize[0], frame_size[1] * HEATMAP_STRIDE / resize[1])


def _median_heatmap_extent(extent: np.ndarray, scale: tuple[float, float]) -> float:
    """Median over frames of the larger side of the animal's box, in heatmap pixels."""
    if not len(extent):
        return math.nan
    return float(np.median(np.maximum(extent[:, 0] / scale[1], extent[:, 1] / scale[0])))


def _choose(
    config: TrainConfig,
    resize: tuple[int, int],
    full: tuple[int, int],
    full_rate: float,
    within: tuple[int, int],
    animal_hm: float,
    animal_hm_budget: float,
    min_frames_per_s: float,
) -> tuple[str, str]:
    small = SMALL_ANIMAL_HEATMAP_PX
    if getattr(getattr(config, "crop_zoom", None), "enabled", False):
        return "small_animal_crop_zoom", "crop_zoom.enabled is already set"
    if config.data.train_crop is not None:
        return "full_resolution_crops", f"data.train_crop {tuple(config.data.train_crop)} is already set"
    if math.isnan(animal_hm):
        return "default", "fewer than two keypoints labeled per frame: the animal's size is unknown"
    if animal_hm >= small:
        return "default", f"the animal spans {animal_hm:.1f} >= {small:g} heatmap pixels"
    small_here = f"the animal spans {animal_hm:.1f} < {small:g} heatmap pixels at {resize[0]}x{resize[1]}"
    if within == full:
        where = (
            f"the frame's resolution {full[0]}x{full[1]} (whole frames predict at ~{full_rate:.0f} frames/s on a CPU)"
        )
    else:
        where = (
            f"{within[0]}x{within[1]}, the largest input that predicts at >= {min_frames_per_s:g} frames/s on a CPU "
            f"(the frame's {full[0]}x{full[1]}: ~{full_rate:.0f} frames/s)"
        )
    if animal_hm_budget >= small and within[0] * within[1] > resize[0] * resize[1]:
        return "full_resolution_crops", f"{small_here}, {animal_hm_budget:.1f} at {where}"
    return "small_animal_crop_zoom", f"{small_here}, and only {animal_hm_budget:.1f} at {where}"
