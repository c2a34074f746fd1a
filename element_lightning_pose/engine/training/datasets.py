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

from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from element_lightning_pose.engine.config import TrainConfig

# light helpers shared with inference (engine.predict must not import Lightning): re-exported here
from element_lightning_pose.engine.data.labels import (
    LabeledFrames,
    load_context_resized,
    load_resized,
)
from element_lightning_pose.engine.training.augmentation import Augmenter, CropSampler

# --------------------------------------------------------------------------- splits


# --------------------------------------------------------------------------- training crops


# --------------------------------------------------------------------------- augmentation


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
