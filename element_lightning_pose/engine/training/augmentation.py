"""Keypoint-aware augmentation in network-input pixels: one OpenCV affine warp moves a frame and its labels.

:class:`Augmenter` draws rotation, scale, translation, flips and photometric changes from
``augmentation.*``; with ``data.train_crop`` a :class:`CropSampler` cuts a random crop of the
resized frame with the same warp, so the labels move with it exactly. Labels pushed out of the
frame become NaN (:func:`outside_to_nan`). The unlabeled clips of the unsupervised losses use
the same augmenter (:mod:`.unlabeled`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from element_lightning_pose.engine.config import AugmentationConfig, DataConfig


class CropSampler:
    """Where a training crop of ``size`` (h, w) goes in a (resized, augmented) frame.

    With probability ``focus`` the crop is placed at random among the positions that hold
    every visible labeled keypoint (the animal), or, for an animal larger than the crop,
    among those that lie inside its bounding box; otherwise (and when no keypoint is visible)
    anywhere in the frame, so the network also learns the empty arena and the distractors it
    must not fire on. DeepLabCut's ``KeypointAwareCrop`` mixes keypoint-centred and uniform
    crops the same way. Offsets are whole pixels: a crop of an unwarped frame is an exact
    copy of its pixels, and the labels shift by exactly the offset.
    """

    def __init__(self, size: tuple[int, int], focus: float = 0.5) -> None:
        if not 0 <= focus <= 1:
            raise ValueError(f"train_crop_focus must be in [0, 1] (got {focus})")
        self.size = (int(size[0]), int(size[1]))
        self.focus = float(focus)

    @classmethod
    def from_config(cls, data: DataConfig) -> CropSampler | None:
        """The sampler of ``data.train_crop`` (None when training sees whole frames)."""
        if data.train_crop is None:
            return None
        return cls(data.train_crop, data.train_crop_focus)

    def offset(self, frame_size: tuple[int, int], keypoints: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
        """(x0, y0) of the crop's top-left pixel in a frame of ``frame_size`` (h, w)."""
        (height, width), (crop_h, crop_w) = frame_size, self.size
        if crop_h > height or crop_w > width:
            raise ValueError(f"training crop {self.size} is larger than the frame {tuple(frame_size)}")
        visible = keypoints[np.isfinite(keypoints).all(axis=1)]
        if len(visible) and rng.random() < self.focus:
            x0 = _covering_start(visible[:, 0].min(), visible[:, 0].max(), crop_w, width, rng)
            y0 = _covering_start(visible[:, 1].min(), visible[:, 1].max(), crop_h, height, rng)
            return x0, y0
        return int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))

    def crop(
        self, frames: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Crop (..., h, w, 3) frames (one frame or a context window, the same crop) and shift the labels.

        Labels outside the crop become NaN.
        """
        x0, y0 = self.offset(frames.shape[-3:-1], keypoints, rng)
        crop_h, crop_w = self.size
        out = frames[..., y0 : y0 + crop_h, x0 : x0 + crop_w, :]
        return out, outside_to_nan(keypoints - (x0, y0), self.size)


def _covering_start(low: float, high: float, crop: int, extent: int, rng: np.random.Generator) -> int:
    """A random start s in [0, extent - crop] with [low, high] inside pixels s..s + crop - 1.

    When [low, high] is longer than the crop, the crop lies inside it instead.
    """
    first = int(np.ceil(high - crop + 1))  # the smallest start that still reaches `high`
    last = int(np.floor(low))  # the largest start that still holds `low`
    first, last = min(first, last), max(first, last)
    first, last = min(max(first, 0), extent - crop), min(max(last, 0), extent - crop)
    return int(rng.integers(first, last + 1))


def outside_to_nan(keypoints: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``keypoints`` (K, 2) with those outside an image of ``size`` (h, w) set to NaN.

    A pixel's centre is its integer coordinate, so the image covers -0.5 .. w - 0.5.
    """
    h, w = size
    x, y = keypoints[:, 0], keypoints[:, 1]
    outside = (x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)
    keypoints = keypoints.copy()
    keypoints[outside] = np.nan
    return keypoints


class Augmenter:
    """Random keypoint-aware augmentation of a (resized) uint8 RGB frame and its labels."""

    def __init__(self, config: AugmentationConfig, bodyparts: Sequence[str]) -> None:
        self.config = config
        names = list(bodyparts)
        self.flip_order = np.arange(len(names))
        for left, right in config.flip_pairs:
            for name in (left, right):
                if name not in names:
                    raise ValueError(f"augmentation.flip_pairs: unknown body part {name!r} (known: {names})")
            i, j = names.index(left), names.index(right)
            self.flip_order[i], self.flip_order[j] = j, i

    def geometric_matrix(self, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """A random 2x3 affine matrix (rotation, zoom, shift about the centre) and whether it flips."""
        c = self.config
        h, w = size
        angle = rng.uniform(-c.rotation_deg, c.rotation_deg)
        scale = rng.uniform(*c.scale_range)
        matrix = np.vstack([cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale), [0, 0, 1]])
        shift = rng.uniform(-c.translate_frac, c.translate_frac, size=2) * (w, h)
        matrix[:2, 2] += shift
        flip = bool(c.hflip and rng.random() < 0.5)
        if flip:
            matrix = np.array([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]]) @ matrix
        return matrix[:2], flip

    def warp(
        self,
        image: np.ndarray,
        keypoints: np.ndarray,
        matrix: np.ndarray,
        flip: bool,
        out_size: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply one affine warp to the pixels and the same matrix to the labels.

        ``out_size`` (h, w) is the output's size (default: the input's; a training crop's otherwise).
        """
        h, w = out_size if out_size is not None else image.shape[:2]
        image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        moved = outside_to_nan(keypoints @ matrix[:, :2].T + matrix[:, 2], (h, w))
        if flip:
            moved = moved[self.flip_order]
        return image, moved

    def cropped_matrix(
        self,
        size: tuple[int, int],
        keypoints: np.ndarray,
        rng: np.random.Generator,
        crop: CropSampler | None,
    ) -> tuple[np.ndarray, bool, tuple[int, int] | None]:
        """The random warp of a frame of ``size``, followed by a random crop when ``crop`` is set.

        The crop is placed on the labels as the augmentation moved them, and folded into the
        same matrix: one interpolation, and the labels move exactly as the pixels.
        """
        matrix, flip = self.geometric_matrix(size, rng)
        if crop is None:
            return matrix, flip, None
        moved = outside_to_nan(keypoints @ matrix[:, :2].T + matrix[:, 2], size)
        x0, y0 = crop.offset(size, moved, rng)
        matrix = matrix.copy()
        matrix[:, 2] -= (x0, y0)
        return matrix, flip, crop.size

    def __call__(
        self,
        image: np.ndarray,
        keypoints: np.ndarray,
        rng: np.random.Generator,
        crop: CropSampler | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        matrix, flip, out_size = self.cropped_matrix(image.shape[:2], keypoints, rng, crop)
        image, keypoints = self.warp(image, keypoints, matrix, flip, out_size)
        if rng.random() < c.contrast_prob:
            alpha = rng.uniform(*c.contrast_range)
            # (x - mean) * alpha + mean with uint8 saturation, in one OpenCV call
            image = cv2.addWeighted(image, alpha, image, 0.0, float((1 - alpha) * image.mean()))
        if rng.random() < c.blur_prob:
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, c.blur_sigma_max))
        if rng.random() < c.occlusion_prob:
            image = self._occlude(image, rng)
        return image, keypoints

    def augment_frames(
        self,
        frames: np.ndarray,
        keypoints: np.ndarray,
        rng: np.random.Generator,
        crop: CropSampler | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment a stack of frames (T, h, w, 3) (a context window) with ONE draw of every random choice.

        ``keypoints`` belong to the centre frame; they move with the shared warp (and crop).
        """
        c = self.config
        matrix, flip, out_size = self.cropped_matrix(frames.shape[1:3], keypoints, rng, crop)
        contrast = rng.uniform(*c.contrast_range) if rng.random() < c.contrast_prob else None
        blur = rng.uniform(0.3, c.blur_sigma_max) if rng.random() < c.blur_prob else None
        occlusion_seed = int(rng.integers(0, 2**62)) if rng.random() < c.occlusion_prob else None
        out, moved = [], keypoints
        for frame in frames:
            frame, moved = self.warp(frame, keypoints, matrix, flip, out_size)
            if contrast is not None:
                frame = cv2.addWeighted(frame, contrast, frame, 0.0, float((1 - contrast) * frame.mean()))
            if blur is not None:
                frame = cv2.GaussianBlur(frame, (0, 0), blur)
            if occlusion_seed is not None:  # the same patches on every frame
                frame = self._occlude(frame, np.random.default_rng(occlusion_seed))
            out.append(frame)
        return np.stack(out), moved

    def _occlude(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Paint random flat-coloured rectangles (labels stay: the network must infer them)."""
        image = image.copy()
        h, w = image.shape[:2]
        for _ in range(rng.integers(1, self.config.occlusion_max_patches + 1)):
            ph = max(1, int(rng.uniform(0.05, self.config.occlusion_max_size_frac) * h))
            pw = max(1, int(rng.uniform(0.05, self.config.occlusion_max_size_frac) * w))
            y, x = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
            image[y : y + ph, x : x + pw] = rng.integers(0, 256, size=3, dtype=np.uint8)
        return image
