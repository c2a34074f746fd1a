"""The train / val / test split of a project's labeled frames: drawn, read from a file, saved.

One owner for every trainer: :func:`project_splits` chooses the split of a run (the saved one of a
resumed model, ``data.split_file``, instants kept together across the views of a multi-view
project, or a seeded draw), and ``splits.csv`` in a model directory is written and read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from element_lightning_pose.engine.config import SPLITS, DataConfig
from element_lightning_pose.engine.data.keypoints import write_csv_atomic
from element_lightning_pose.engine.data.labels import LabeledFrames
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.types import PathLike


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


def read_splits(path: PathLike) -> dict[str, str]:
    """``splits.csv`` as {image path: split}."""
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: splits file not found")
    frame = pd.read_csv(path)
    if list(frame.columns[:2]) != ["image", "split"]:
        raise ProjectError(f"{path}: expected columns image,split (found {list(frame.columns)})")
    duplicated = frame["image"].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise ProjectError(f"{path}, line {row + 2}: image {frame['image'].iloc[row]!r} is listed twice")
    return dict(zip(frame["image"].astype(str), frame["split"].astype(str)))


def instant_splits(labels: LabeledFrames, train_prob: float, val_prob: float, seed: int) -> np.ndarray:
    """The train/val/test split of a multi-view project's rows with every instant in the same
    split in every view (no frame of a test instant trains the shared network from another
    view), and the split each per-view network gets from the same seed.

    Rows are laid out as :func:`.projects.read_multiview_labels` gives them: view after view,
    row ``i`` of every view the same instant. A single-view project gets :func:`split_frames`.
    """
    if labels.views is None:
        return split_frames(len(labels), train_prob, val_prob, seed)
    views = list(dict.fromkeys(labels.views))
    n = len(labels) // len(views)
    if n * len(views) != len(labels) or labels.views != [v for v in views for _ in range(n)]:
        raise ProjectError(f"{labels.csv_path}: rows are not view after view with {n} frames each")
    return np.tile(split_frames(n, train_prob, val_prob, seed), len(views))


def project_splits(
    labels: LabeledFrames, data: DataConfig, project_root: PathLike, saved: PathLike | None = None
) -> np.ndarray:
    """The split of each labeled row for one training run, in the order of precedence:

    1. ``saved``, a model's ``splits.csv`` (a resumed run sees the same frames; rows it does not
       list are ``"unused"``);
    2. ``data.split_file``, relative to the project (several models share their test frames);
    3. a multi-view project: every instant in the same split in every view (:func:`instant_splits`);
    4. a seeded draw (:func:`split_frames`).
    """
    if saved is not None and Path(saved).is_file():
        kept = read_splits(saved)
        return np.array([kept.get(p, "unused") for p in labels.image_paths], dtype=object)
    if data.split_file is not None:
        return splits_from_file(Path(project_root) / data.split_file, labels.image_paths)
    return instant_splits(labels, data.train_prob, data.val_prob, data.split_seed)
