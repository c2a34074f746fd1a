"""Choose for the user: how large the animal is to the network, and which model to train.

:func:`advise` reads the labels and reports the original pixels per heatmap pixel, the
animal's size in heatmap pixels, and the preset its rule picks among :data:`PRESETS` from the
project alone (the config given changes what is reported, never the pick)::

    default                 the animal is large enough at the default input (256x256)
    small_animal_crop_zoom  two stages: detect the animal, then the pose model on a crop (crop_zoom)
    full_resolution_crops   single stage at the frame's own resolution, trained on random crops
                            (data.train_crop), predicting the whole frame (never picked: see
                            SMALL_ANIMAL_HEATMAP_PX; a lab may still name it)

:func:`resolve_preset` applies a preset to a configuration (``preset: auto`` resolved by the
rule, the backbone swapped for one whose ImageNet weights can be had); ``elp train``,
:func:`element_lightning_pose.engine.training.train` and the pipeline's
:func:`element_lightning_pose.presets.insert_preset` go through it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from element_lightning_pose.engine.config import (
    AUTO_PRESET,
    PRESET_DESCRIPTIONS,
    PRESETS,
    ConfigError,
    DataConfig,
    TrainConfig,
    crop_zoom_unsupported,
    dotted_params,
    parse_assignments,
)
from element_lightning_pose.engine.data.labels import LabeledFrames, check_image
from element_lightning_pose.engine.data.projects import load_project, project_views
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.networks.backbones import imagenet_weights_available
from element_lightning_pose.engine.networks.heads import HEATMAP_STRIDE
from element_lightning_pose.engine.types import PathLike

# The rule of ``preset: auto``: crop zoom when the animal spans fewer heatmap pixels than this at
# the default input (DEFAULT_RESIZE), else the default single stage (any number of views). 16 heatmap pixels are 64
# network-input pixels: two cells of the backbone's deepest, stride-32 features, so the whole
# pose is read from about four feature vectors; and with the target Gaussian's sigma of 1.25
# heatmap pixels (+-2 sigma = 5 px), the 4-5 keypoints of such an animal sit one or two target
# widths apart, so their maps overlap and a one-pixel heatmap error is 1/16 of the body.
# Evidence, efficientnet_lite0 at an equal training budget (benchmarks/results/presets.md,
# benchmarks/results/small_animal.md, and issue 27's outside check):
#   DeepLabCut's open-field mouse, ~11 heatmap px: crop zoom 1.89 px test mean, default 4.00,
#     full-resolution crops 4.67 (outside check, 30 min each);
#   the synthetic arena, 480x640, ~8 heatmap px: crop zoom 18.1 px, default 33.5, crops 33.5;
#   DeepLabCut's reaching example, 18.8 heatmap px: default 13.4 px, crop zoom 45.8, crops 82.6;
#   mirror-mouse, 58.7 heatmap px: the default (the animal fills the frame).
# Full-resolution crop training never won, so the rule never picks it.
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


# The input the rule measures the animal at: the default data.image_resize (the pick must not
# depend on the config given, or a config that already asks for crop zoom would "recommend" it).
DEFAULT_RESIZE: tuple[int, int] = (int(DataConfig().image_resize[0]), int(DataConfig().image_resize[1]))

# Frames smaller than the network input on both sides are predicted at their own size (rounded to
# multiples of 32) by preset auto's default, when the animal still spans SMALL_ANIMAL_HEATMAP_PX
# heatmap pixels there: an upsampled input adds pixels, not information, and costs their time.
# The SLEAP fly (192x192 frames, the animal 33 heatmap px at its own size), 480 s of training
# each (benchmarks/results/presets.md): 3.9 px test mean at 192x192 (49 epochs), 4.4 px at the
# default 256x256 (29 epochs). A tiny frame whose animal is smaller than that keeps the
# upsampled input, where the heatmap's resolution is what limits the keypoints.


def own_size_input(advice: Advice, image_resize: tuple[int, int]) -> tuple[int, int] | None:
    """The input for frames smaller than ``image_resize`` on both sides (see above), or None."""
    (h, w), (rh, rw) = advice.frame_size, image_resize
    if not (h < rh and w < rw) or math.isnan(advice.animal_frame_px):
        return None
    own = round_to_32((h, w))
    animal = advice.animal_frame_px / HEATMAP_STRIDE * min(own[0] / h, own[1] / w)
    return own if animal >= SMALL_ANIMAL_HEATMAP_PX else None


# Backbones tried, in order, when the configured one's ImageNet weights cannot be had (no cache,
# no internet): efficientnet_lite0's ship with a package.
FALLBACK_BACKBONES = ("efficientnet_lite0", "resnet18", "resnet34", "resnet50")


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
    for key, value in dotted_params(params, prefix).items():
        text = "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list | tuple) else value
        text = str(text).lower() if isinstance(value, bool) else text
        options.append(f"--set '{key}={text}'")
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
    """How large the animal is to the network, and the preset the rule picks for the project."""

    frame_size: tuple[int, int]  # (height, width) of the labeled frames
    image_resize: tuple[int, int]  # the network input of the config
    frame_px_per_heatmap_px: tuple[float, float]  # (vertical, horizontal) frame pixels per heatmap pixel
    n_frames_measured: int  # labeled frames with two or more labeled keypoints
    animal_frame_px: float  # median over those frames of the keypoints' larger extent, frame pixels
    animal_heatmap_px: float  # the same in heatmap pixels at image_resize (median of the frames)
    animal_heatmap_px_default: float  # the same at DEFAULT_RESIZE: what the rule reads
    full_resize: tuple[int, int]  # the frame rounded to multiples of 32
    full_resize_frames_per_s: float  # estimated CPU prediction rate of the whole frame at full_resize
    budget_resize: tuple[int, int]  # the largest input (<= full_resize) that predicts at min_frames_per_s
    animal_heatmap_px_budget: float  # the animal in heatmap pixels at budget_resize
    n_views: int  # label files of the project (cameras); 1 for one file, mirror views included
    preset: str  # the key of PRESETS the rule picks
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
    n_views: int = 1,
) -> Advice:
    """The advice for training on ``labels`` (see :data:`SMALL_ANIMAL_HEATMAP_PX`).

    The pick reads the project alone: the animal's extent in heatmap pixels at
    :data:`DEFAULT_RESIZE`. ``config`` sets what is reported about its own input
    (``image_resize``) and the backbone of the CPU rate estimates; ``n_views`` is reported.
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
    animal_hm_default = _median_heatmap_extent(extent, _px_per_heatmap_px(frame_size, DEFAULT_RESIZE))
    animal_hm_budget = _median_heatmap_extent(extent, _px_per_heatmap_px(frame_size, within))
    full_rate = cpu_frames_per_s(config.model.backbone, full)
    preset, reason = choose_preset(animal_hm_default)
    params = preset_params(preset, frame_size=frame_size, image_resize=within) if preset != "default" else {}
    return Advice(
        frame_size,
        resize,
        scale,
        len(extent),
        animal_px,
        animal_hm,
        animal_hm_default,
        full,
        full_rate,
        within,
        animal_hm_budget,
        n_views,
        preset,
        reason,
        params,
    )


def choose_preset(animal_heatmap_px: float) -> tuple[str, str]:
    """The rule of ``preset: auto``: (preset, why) from the animal's median extent in heatmap
    pixels at :data:`DEFAULT_RESIZE` (the evidence is at :data:`SMALL_ANIMAL_HEATMAP_PX`). A
    multi-view project is measured over all its views' labels: crop zoom crops each view's
    frames, with one network over the views or one per view."""
    small = SMALL_ANIMAL_HEATMAP_PX
    at = f"{DEFAULT_RESIZE[0]}x{DEFAULT_RESIZE[1]}"
    if math.isnan(animal_heatmap_px):
        return "default", "fewer than two keypoints labeled per frame: the animal's size is unknown"
    if animal_heatmap_px >= small:
        return "default", f"the animal spans {animal_heatmap_px:.1f} >= {small:g} heatmap pixels at {at}"
    return "small_animal_crop_zoom", (
        f"the animal spans {animal_heatmap_px:.1f} < {small:g} heatmap pixels at {at}: "
        "a detector finds it and the pose model sees it zoomed"
    )


@dataclass(frozen=True)
class ResolvedPreset:
    """A configuration with its preset applied, and what to tell the user about it."""

    config: TrainConfig  # ``preset`` holds the resolved name (never 'auto')
    advice: Advice | None  # the rule's reading of the project (None for a named preset)
    notes: list[str]  # one line each: what was chosen and why, a backbone swapped


def resolve_preset(
    config: TrainConfig | dict | PathLike | None,
    project_root: PathLike,
    name: str | None = None,
    overrides: Sequence[str] = (),
) -> ResolvedPreset:
    """``config`` with preset ``name`` (default: ``config.preset``) applied for the project at
    ``project_root``, then ``overrides`` (``elp train --set KEY=VALUE``) on top.

    The preset's parameters are merged over the config's and ``preset`` is set to the preset
    resolved. ``auto`` picks by :func:`choose_preset` (crop zoom only for what it can train) and,
    unless ``overrides`` name the backbone, swaps a backbone whose ImageNet weights cannot be had
    here (no cache, no internet) for the first of :data:`FALLBACK_BACKBONES` whose weights can.
    Without a preset, the overrides alone are applied.
    """
    config = TrainConfig.load(config)
    name = config.preset if name is None else name
    if name is None:
        return ResolvedPreset(config.with_overrides(list(overrides)), None, [])
    if name != AUTO_PRESET and name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {AUTO_PRESET}, {', '.join(PRESETS)}")
    advice = advise_project(project_root, config) if name == AUTO_PRESET else None
    chosen = advice.preset if advice is not None else name
    notes = [f"training with preset {chosen} ({'picked by preset auto' if advice is not None else 'named'})"]
    if name == AUTO_PRESET and chosen == "small_animal_crop_zoom":
        unsupported = crop_zoom_unsupported(config)
        if unsupported:
            chosen = "default"
            notes = [f"training with preset default: crop zoom, picked by preset auto, does not train {unsupported}"]
    frame = advice.frame_size if advice is not None else None
    if chosen == "full_resolution_crops" and frame is None:
        frame = advise_project(project_root, config).frame_size
    values = preset_params(chosen, frame_size=frame, base=config.to_dict())
    values["preset"] = chosen
    named = {".".join(parts) for _, parts, _ in parse_assignments(list(overrides), "override", "model.backbone=x")}
    if advice is not None and chosen == "default" and "data.image_resize" not in named:
        given = tuple(config.data.image_resize)
        own = own_size_input(advice, (int(given[0]), int(given[1])))
        if own is not None:
            values["data"]["image_resize"] = list(own)
            notes.append(
                f"data.image_resize {own[0]}x{own[1]} instead of {given[0]}x{given[1]}: the frames "
                f"({advice.frame_size[0]}x{advice.frame_size[1]}) are smaller than the input and the animal spans "
                f">= {SMALL_ANIMAL_HEATMAP_PX:g} heatmap pixels at their own size; upsampling adds pixels, not detail"
            )
    resolved = TrainConfig.from_dict(values, source=f"preset {chosen}").with_overrides(list(overrides))
    backbone = resolved.model.backbone
    if (
        name == AUTO_PRESET
        and not named & {"model.backbone", "model.pretrained"}
        and resolved.model.pretrained is True
        and not imagenet_weights_available(backbone)
    ):
        usable = next((b for b in FALLBACK_BACKBONES if b != backbone and imagenet_weights_available(b)), None)
        if usable is not None:
            resolved = resolved.model_copy(update={"model": resolved.model.model_copy(update={"backbone": usable})})
            notes.append(
                f"model.backbone {usable} instead of {backbone}: {backbone}'s ImageNet weights are not cached and "
                f"could not be downloaded, {usable}'s are installed"
            )
    return ResolvedPreset(resolved, advice, notes)


def differences_from_auto(config: TrainConfig | dict, project_root: PathLike) -> tuple[ResolvedPreset, list[str]]:
    """What ``preset: auto`` would train on the project, and the parameters of ``config`` that
    differ from it (``'key=ours (auto: theirs)'``, dotted keys; the preset's name aside). The
    pipeline logs them when a parameter set was not written with ``preset: auto``."""
    config = TrainConfig.load(config)
    auto = resolve_preset(config, project_root, AUTO_PRESET)
    ours, theirs = dotted_params(config.to_dict()), dotted_params(auto.config.to_dict())
    keys = sorted(k for k in ours.keys() | theirs.keys() if k != "preset" and ours.get(k) != theirs.get(k))
    return auto, [f"{k}={ours.get(k)!r} (auto: {theirs.get(k)!r})" for k in keys]


def advise_project(project_root: PathLike, config: TrainConfig | dict | PathLike | None = None) -> Advice:
    """:func:`advise` for the labels of the project at ``project_root`` (``data.csv_file``; one
    view per label file)."""
    config = TrainConfig.load(config)
    labels, _ = load_project(project_root, config.data.csv_file, config.data.video_dir)  # train()'s checks
    n_views = max(1, len(project_views(project_root, config.data.csv_file, config.data.view_names)))
    return advise(labels, config, n_views=n_views)


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
