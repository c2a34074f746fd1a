"""Supervised training of a heatmap pose model: ``train(config, project, model_dir)``.

The model directory is a contract the DataJoint pipeline relies on::

    model_dir/config.yaml            the full TrainConfig (every default spelled out)
    model_dir/model.json             body parts, frame size, resize, backbone, engine version,
                                     split sizes, wall time, best validation loss
    model_dir/splits.csv             image path -> train | val | test
    model_dir/checkpoints/best.ckpt  best validation loss; loads without the project
    model_dir/checkpoints/last.ckpt  end of the latest epoch (resume from it)
    model_dir/metrics.csv            per-epoch history (losses, pixel error, lr, elapsed time)
    model_dir/logs/version_N/        Lightning CSV logs of each run (and TensorBoard when installed)
    model_dir/frame_cache/           decoded unlabeled frames (semi-supervised runs; losses.cache_dir moves it)

Semi-supervised runs (``losses.unsupervised`` not empty) fit the PCA losses on the TRAINING
split's labels in original pixels, decode the project's videos once into the frame cache and
pair every labeled batch with one contiguous clip of it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..version import __version__
from .config import ConfigError, TrainConfig
from .io import LabeledFrames, ProjectError, load_project, read_image, write_csv_atomic

PathLike = str | os.PathLike


@dataclass
class TrainResult:
    """What one training run produced."""

    model_dir: Path
    best_checkpoint: Path
    wall_time_s: float
    epochs: int
    best_val_loss: float | None
    history: pd.DataFrame


def write_json_atomic(data: dict[str, Any], path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _frame_size(labels: LabeledFrames) -> list[int]:
    """(height, width) of the labeled frames (the first one; projects share one camera size)."""
    from .data import image_file

    return list(read_image(image_file(labels, 0)).shape[:2])


def _quiet_lightning() -> None:
    # Lightning's tips about num_workers / logging intervals are noise for tiny projects
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
    # epochs without validation (check_val_every_n_epoch > 1, or max_steps mid-epoch) have no
    # val_loss yet; the best checkpoint is taken at validated epochs, and train() validates the
    # final weights itself when no epoch was validated
    warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
    # raised inside Lightning 2.5 by torch 2.14's pytree API change; nothing for users to do
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")


def _loggers(model_dir: Path) -> list:
    from pytorch_lightning.loggers import CSVLogger

    # one numbered version per run (logs/version_N): a resumed run never overwrites earlier logs
    loggers = [CSVLogger(save_dir=str(model_dir), name="logs")]
    try:
        import tensorboard  # noqa: F401
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(model_dir), name="logs", default_hp_metric=False))
    except ImportError:
        pass
    return loggers


def train(
    config: TrainConfig | dict | PathLike | None,
    project_root: PathLike,
    model_dir: PathLike,
    *,
    resume_from: PathLike | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a heatmap model on the labeled project at ``project_root`` into ``model_dir``.

    ``config`` is a TrainConfig, a (partial) dict, a YAML path, or None for the defaults.
    ``resume_from`` continues from a checkpoint (e.g. ``model_dir/checkpoints/last.ckpt``):
    optimizer, schedule, epoch counter and history carry on; the split is re-read from
    ``model_dir/splits.csv`` when present so resumed training sees the same frames.
    """
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint

    from .data import PoseDataModule, read_splits, split_frames, splits_from_file, write_splits
    from .module import HeatmapModule, HistoryCallback

    config = TrainConfig.load(config)
    model_dir = Path(model_dir)
    labels, videos = load_project(project_root, config.data.csv_file, config.data.video_dir)
    if resume_from is not None and not Path(resume_from).is_file():
        raise FileNotFoundError(f"{resume_from}: checkpoint to resume from not found")

    splits_path = model_dir / "splits.csv"
    if resume_from is not None and splits_path.is_file():
        saved = read_splits(splits_path)
        splits = np.array([saved.get(p, "unused") for p in labels.image_paths], dtype=object)
    elif config.data.split_file is not None:
        splits = splits_from_file(Path(project_root) / config.data.split_file, labels.image_paths)
    else:
        splits = split_frames(len(labels), config.data.train_prob, config.data.val_prob, config.data.split_seed)
    model_dir.mkdir(parents=True, exist_ok=True)
    config.to_yaml(model_dir / "config.yaml")
    write_splits(splits_path, labels.image_paths, splits)

    _quiet_lightning()
    pl.seed_everything(config.training.seed, workers=True, verbose=False)
    pcas, clips = _unsupervised_inputs(config, labels, splits, videos, model_dir)
    datamodule = PoseDataModule(labels, splits, config, clips)
    has_val = len(datamodule.rows("val")) > 0
    monitor = "val_loss" if has_val else "train_loss"
    module = HeatmapModule(config.to_dict(), list(labels.bodyparts), pca={k: v.to_dict() for k, v in pcas.items()})
    history = HistoryCallback()
    checkpoint = ModelCheckpoint(
        dirpath=model_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode="min",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
        save_on_train_epoch_end=True,  # after the epoch's train and val metrics are both final
    )
    trainer = pl.Trainer(
        accelerator=config.training.accelerator,
        devices=config.training.devices,
        max_epochs=config.training.max_epochs,
        max_steps=config.training.max_steps or -1,
        check_val_every_n_epoch=config.training.check_val_every_n_epoch,
        log_every_n_steps=config.training.log_every_n_steps,
        callbacks=[history, checkpoint],
        logger=_loggers(model_dir),
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if has_val else 0,
    )
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    run_time = time.perf_counter() - started

    best = model_dir / "checkpoints" / "best.ckpt"
    best_score = checkpoint.best_model_score
    if not best.is_file():
        # max_steps ended the run mid-epoch, before any validation: validate the final weights
        # and make them the best checkpoint, so every run leaves the contract complete
        if has_val:
            scores = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
            best_score = torch.tensor(scores["val_loss"])
            if history.rows:
                history.rows[-1].update({k: float(v) for k, v in scores.items()})
        trainer.save_checkpoint(best)
    frame = pd.DataFrame(history.rows)
    write_csv_atomic(frame.set_index("epoch") if len(frame) else frame, model_dir / "metrics.csv")
    best_val = float(best_score) if (best_score is not None and has_val) else None
    wall_time = history.elapsed() if history.rows else run_time
    info = {
        "bodyparts": list(labels.bodyparts),
        "frame_size": _frame_size(labels),
        "image_resize": list(config.data.image_resize),
        "backbone": config.model.backbone,
        "model_type": config.model.model_type,
        "engine_version": __version__,
        "torch_version": torch.__version__,
        "n_train": int((splits == "train").sum()),
        "n_val": int((splits == "val").sum()),
        "n_test": int((splits == "test").sum()),
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "wall_time_s": round(float(wall_time), 3),
        "best_val_loss": best_val,
        "best_checkpoint": "checkpoints/best.ckpt",
        "unsupervised_losses": list(config.losses.unsupervised),
        "pca": {kind: {"keypoints": pca.views, "components": int(pca.components.shape[1]),
                       "explained_variance_ratio": round(pca.explained_variance_ratio, 6),
                       "epsilon_px": round(pca.epsilon, 4), "n_samples": pca.n_samples}
                for kind, pca in pcas.items()},
        "unlabeled_frames_cached": clips.cache.n_frames if clips is not None else 0,
    }
    from .model_dir import write_model_info  # the one writer of model.json (atomic, 0644)

    write_model_info(model_dir, info)
    return TrainResult(model_dir, best, float(wall_time), int(trainer.current_epoch), best_val, frame)


def _unsupervised_inputs(config: TrainConfig, labels: LabeledFrames, splits: np.ndarray, videos: list[Path],
                         model_dir: Path):
    """Fitted PCAs (training split, original pixels) and the unlabeled clip dataset, or ({}, None)."""
    losses = config.losses
    if not losses.unsupervised:
        return {}, None
    from .data import Augmenter
    from .pca import fit_pcas
    from .unlabeled import ClipDataset, build_frame_cache

    train_rows = np.flatnonzero(splits == "train")
    pcas = fit_pcas(labels.keypoints[train_rows], labels.bodyparts, losses)
    if not videos:
        raise ProjectError(f"losses.unsupervised={losses.unsupervised} needs unlabeled videos, but "
                           f"{Path(labels.root) / config.data.video_dir} has none")
    cache_dir = Path(losses.cache_dir) if losses.cache_dir else model_dir / "frame_cache"
    cache = build_frame_cache(videos, tuple(config.data.image_resize), cache_dir, max_frames=losses.max_cached_frames,
                              clip_length=losses.clip_length, seed=config.training.seed)
    augmenter = Augmenter(config.augmentation, labels.bodyparts) if config.augmentation.enabled else None
    steps = int(np.ceil(len(train_rows) / config.training.batch_size))
    return pcas, ClipDataset(cache, losses.clip_length, steps, augmenter)


# --------------------------------------------------------------------------- command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config_or_project", help="a config YAML, or a project folder (then default parameters)")
    parser.add_argument("--project", help="labeled project folder (CollectedData.csv, labeled-data/, videos/)")
    parser.add_argument("--model-dir", required=True, help="output folder of the trained model")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set training.max_epochs=20 (repeatable)")
    parser.add_argument("--resume", help="checkpoint to resume from (e.g. MODEL_DIR/checkpoints/last.ckpt)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_cli(args: argparse.Namespace) -> int:
    from .networks import WeightsError

    source = Path(args.config_or_project)
    try:
        if source.is_dir():
            # a project folder: default parameters (plus any --set)
            project, config = Path(args.project) if args.project else source, TrainConfig()
        else:
            if not args.project:
                raise ConfigError("--project is required when the first argument is a config file")
            project, config = Path(args.project), TrainConfig.from_yaml(source)
        config = config.with_overrides(args.overrides)
        result = train(config, project, args.model_dir, resume_from=args.resume, progress=not args.no_progress)
    except (ConfigError, ProjectError, WeightsError, FileNotFoundError) as exc:
        print(f"elp train: error: {exc}")
        return 2
    best = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.5g}"
    print(f"trained {result.epochs} epoch(s) in {result.wall_time_s:.1f} s; best val loss {best}; "
          f"model in {result.model_dir}")
    return 0
