"""Labeled-frame datasets, keypoint-aware augmentation and the Lightning data module.

Frames are resized to the network input first (the same :func:`video.resize_frame` that
inference uses, so training and prediction see identically resampled pixels); augmentation
then works in that resized space with one OpenCV affine warp whose matrix also moves the
labels. Keypoints travel as (K, 2) float arrays in network-input pixels, NaN = unlabeled
(including labels pushed out of the frame by an augmentation).

With ``data.train_crop`` (crop training at full resolution, DeepLabCut's way) each training
item is a random crop of the resized frame (:class:`CropSampler`), cut by the same warp, so
the labels move with it exactly; validation and test items stay whole frames, as prediction
sees them (the network is fully convolutional).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from element_lightning_pose.engine.config import SPLITS, AugmentationConfig, DataConfig, TrainConfig
from element_lightning_pose.engine.io import LabeledFrames, ProjectError, write_csv_atomic

# light helpers shared with inference (engine.predict must not import Lightning): re-exported here
from element_lightning_pose.engine.labeled import (  # noqa: F401
    image_file,
    load_context_resized,
    load_resized,
    read_splits,
    scale_points,
)

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- splits


def split_frames(n_frames: int, train_prob: float, val_prob: float, seed: int) -> np.ndarray:
    """Seeded assignment of ``n_frames`` labeled frames to train / val / test (array of str).

    Validation gets at least one frame when ``val_prob > 0`` and there are two or more frames,
    because the best checkpoint is chosen on it.
    """
    if n_frames < 1:
        raise ProjectError("no labeled frames to split")
    n_train = max(1, int(round(train_prob * n_frames)))
    n_val = int(round(val_prob * n_frames))
    if val_prob > 0 and n_frames >= 2:
        n_val = max(1, n_val)
    n_train = min(n_train, n_frames - n_val)
    order = np.random.default_rng(seed).permutation(n_frames)
    splits = np.full(n_frames, "test", dtype=object)
    splits[order[:n_train]] = "train"
    splits[order[n_train : n_train + n_val]] = "val"
    return splits


def write_splits(path: PathLike, image_paths: Sequence[str], splits: Sequence[str] | np.ndarray) -> Path:
    frame = pd.DataFrame({"image": list(image_paths), "split": list(splits)}).set_index("image")
    return write_csv_atomic(frame, path)


def splits_from_file(path: PathLike, image_paths: Sequence[str]) -> np.ndarray:
    """The split of each labeled image read from a fixed ``image,split`` CSV (``data.split_file``).

    Lets several models (or another tool, e.g. Lightning Pose's ``set`` column) share the same
    test frames. Every labeled image must be listed once with train, val or test; images listed
    that are not labeled are an error too, since they usually mean a different project.
    """
    path = Path(path)
    saved = read_splits(path)
    bad = [(image, split) for image, split in saved.items() if split not in SPLITS]
    if bad:
        image, split = bad[0]
        raise ProjectError(f"{path}: image {image!r} has split {split!r}; expected one of {', '.join(SPLITS)}")
    missing = [p for p in image_paths if p not in saved]
    if missing:
        raise ProjectError(
            f"{path}: labeled image {missing[0]!r} is not listed ({len(missing)} of {len(image_paths)} missing)"
        )
    extra = sorted(set(saved) - set(image_paths))
    if extra:
        raise ProjectError(f"{path}: image {extra[0]!r} is not in the labels ({len(extra)} unknown images)")
    splits = np.array([saved[p] for p in image_paths], dtype=object)
    if not (splits == "train").any():
        raise ProjectError(f"{path}: no image has split 'train'")
    return splits


# --------------------------------------------------------------------------- training crops


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


# --------------------------------------------------------------------------- augmentation


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


# --------------------------------------------------------------------------- datasets


class LabeledDataset(Dataset):
    """Labeled frames ``rows`` of a project, resized (and augmented when ``augmenter`` is set).

    With ``context=True`` an item's ``image`` is the window t-2..t+2 (5, 3, h, w). With
    ``crop`` an item is a random crop of the resized (augmented) frame, labels in crop pixels.
    """

    def __init__(
        self,
        labels: LabeledFrames,
        rows: Sequence[int] | np.ndarray,
        size: tuple[int, int],
        augmenter: Augmenter | None = None,
        context: bool = False,
        crop: CropSampler | None = None,
    ) -> None:
        self.labels = labels
        self.rows = list(rows)
        height, width = size
        self.size = (height, width)
        self.augmenter = augmenter
        self.context = context
        self.crop = crop

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        row = self.rows[item]
        if self.context:
            return self._context_item(row)
        image, keypoints, _ = load_resized(self.labels, row, self.size)
        if self.augmenter is not None or self.crop is not None:
            rng = self._rng()
            if self.augmenter is not None:
                image, keypoints = self.augmenter(image, keypoints, rng, self.crop)
            elif self.crop is not None:
                image, keypoints = self.crop.crop(image, keypoints, rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
            "keypoints": torch.from_numpy(keypoints.astype(np.float32)),
            "row": torch.tensor(row),
        }

    @staticmethod
    def _rng() -> np.random.Generator:
        # seeded from torch so the DataLoader's generator / worker seeds make it reproducible
        return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))

    def _context_item(self, row: int) -> dict[str, torch.Tensor]:
        frames, keypoints = load_context_resized(self.labels, row, self.size)
        if self.augmenter is not None or self.crop is not None:
            rng = self._rng()
            if self.augmenter is not None:
                frames, keypoints = self.augmenter.augment_frames(frames, keypoints, rng, self.crop)
            elif self.crop is not None:
                frames, keypoints = self.crop.crop(frames, keypoints, rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2),
            "keypoints": torch.from_numpy(keypoints.astype(np.float32)),
            "row": torch.tensor(row),
        }


class PoseDataModule(pl.LightningDataModule):
    """Train / val / test loaders over one labeled project and a fixed split."""

    def __init__(
        self,
        labels: LabeledFrames,
        splits: Sequence[str] | np.ndarray,
        config: TrainConfig,
        clips: Dataset | None = None,
    ) -> None:
        super().__init__()
        self.labels = labels
        self.splits = np.asarray(splits, dtype=object)
        self.config = config
        self.clips = clips  # unlabeled clips (unlabeled.ClipDataset) paired with each labeled batch
        size = config.data.image_resize
        augmenter = Augmenter(config.augmentation, labels.bodyparts) if config.augmentation.enabled else None
        context = config.model.model_type == "context"
        crop = CropSampler.from_config(config.data)  # training only: validation sees whole frames, as prediction does
        self.datasets = {
            "train": LabeledDataset(labels, self.rows("train"), size, augmenter, context, crop),
            "val": LabeledDataset(labels, self.rows("val"), size, context=context),
            "test": LabeledDataset(labels, self.rows("test"), size, context=context),
        }

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        workers = self.config.training.num_workers
        generator = torch.Generator().manual_seed(self.config.training.seed)
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=generator,
        )

    def train_dataloader(self):
        labeled = self._loader("train", self.config.training.batch_size, shuffle=True)
        if self.clips is None:
            return labeled
        from pytorch_lightning.utilities import CombinedLoader

        workers = self.config.training.num_workers
        clips = DataLoader(
            self.clips,
            batch_size=None,  # one clip per step
            shuffle=False,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(self.config.training.seed + 1),
        )
        # each step: one labeled batch and one clip; the epoch ends with the labeled frames
        return CombinedLoader({"labeled": labeled, "unlabeled": clips}, mode="min_size")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.config.training.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.config.training.val_batch_size, shuffle=False)
