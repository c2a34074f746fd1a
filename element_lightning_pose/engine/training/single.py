"""One network trained into one model directory: :func:`train_single`.

Reached through :func:`element_lightning_pose.engine.training.train`, which also trains the
stages of a crop-zoom model and the views of a per-view model with it. The model directory is a
contract the DataJoint pipeline relies on (:mod:`element_lightning_pose.engine.model_dir`)::

    model_dir/config.yaml            the full TrainConfig (every default spelled out)
    model_dir/model.json             body parts, frame size, resize, backbone, engine version,
                                     split sizes, wall time, best validation loss
    model_dir/splits.csv             image path -> train | val | test
    model_dir/checkpoints/best.ckpt  best validation loss, the weights alone; loads without the project
    model_dir/checkpoints/last.ckpt  end of the latest epoch (resume from it)
    model_dir/metrics.csv            per-epoch history (losses, pixel error, lr, elapsed time),
                                     rewritten after every epoch, so a running stage can be followed
    model_dir/logs/version_N/        Lightning CSV logs of each run (and TensorBoard when installed)
    model_dir/frame_cache/           decoded unlabeled frames (semi-supervised runs; losses.cache_dir moves it)

Semi-supervised runs (``losses.unsupervised`` not empty) fit the PCA losses on the TRAINING
split's labels in original pixels, decode the project's videos once into the frame cache and
pair every labeled batch with one contiguous clip of it (:mod:`.unsupervised`).

A run is written into a hidden sibling of ``model_dir`` and renamed into place when it
succeeds, so the directory always holds one whole model (the old one, or the new one). The
frame cache is part of the model directory, hence of the stage: a later run into the same
directory (a retrain, a resume, the pipeline re-populating a key) reuses it when videos and
cache parameters match, through hard links; a run that fails discards the cache it built with
everything else, and the retry decodes again (bounded by ``losses.max_cached_frames``). A
cache that must outlive failed runs belongs in ``losses.cache_dir``, which is never staged.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from element_lightning_pose.engine.atomic import atomic_output
from element_lightning_pose.engine.config import ConfigError, TrainConfig
from element_lightning_pose.engine.data.keypoints import write_csv_atomic
from element_lightning_pose.engine.data.labels import LabeledFrames, frame_size
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.data.splits import project_splits, write_splits
from element_lightning_pose.engine.model_dir import (
    MODEL_JSON,
    ModelInfo,
    check_replaceable,
    read_model_info,
    write_model_info,
)
from element_lightning_pose.engine.networks.checkpoint import Checkpoint, load_checkpoint_file, read_checkpoint
from element_lightning_pose.engine.training.advice import advise
from element_lightning_pose.engine.training.callbacks import CollapseGuard, StopsAgreedByProcesses, flat_heatmap_loss
from element_lightning_pose.engine.training.datasets import PoseDataModule
from element_lightning_pose.engine.training.heatmap_module import HeatmapModule, HistoryCallback
from element_lightning_pose.engine.training.stopping import (
    kept_checkpoint,
    resumes_kept_run,
    staged_run,
    stopped_folder,
    stops_agreed_by_processes,
)
from element_lightning_pose.engine.training.unsupervised import unsupervised_inputs
from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.version import __version__

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one training run produced."""

    model_dir: Path
    best_checkpoint: Path
    wall_time_s: float
    epochs: int
    best_val_loss: float | None
    history: pd.DataFrame


_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's noise for the duration of one run, then restore the caller's state.

    The warning filters live inside ``warnings.catch_warnings()`` and the loggers get their
    levels back, so a notebook that calls ``train()`` keeps its own settings.
    """
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        # Lightning's tips about num_workers / logging intervals are noise for tiny projects
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
        # epochs without validation (check_val_every_n_epoch > 1, or max_steps mid-epoch) have no
        # val_loss yet; the best checkpoint is taken at validated epochs, and train() validates the
        # final weights itself when no epoch was validated
        warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
        # raised inside Lightning 2.5 by torch 2.14's pytree API change; nothing for users to do
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _loggers(model_dir: Path) -> list:
    # one numbered version per run (logs/version_N): a resumed run never overwrites earlier logs
    csv = CSVLogger(save_dir=str(model_dir), name="logs")
    loggers: list[Logger] = [csv]
    try:
        import tensorboard  # noqa: F401  (optional: the TensorBoard logger needs it)
    except ImportError:
        return loggers
    # in the same version's folder: each logger numbering its own made two versions per run
    loggers.append(
        TensorBoardLogger(
            save_dir=str(model_dir), name="logs", version=csv.version, sub_dir="tensorboard", default_hp_metric=False
        )
    )
    return loggers


def train_single(
    config: TrainConfig,
    project_root: PathLike,
    model_dir: PathLike,
    *,
    resume_from: PathLike | None = None,
    progress: bool = True,
    keep_stopped: bool = False,
    final_dir: PathLike | None = None,
) -> TrainResult:
    """Train one heatmap network on the labeled project at ``project_root`` into ``model_dir``.

    ``resume_from`` continues from a checkpoint (e.g. ``model_dir/checkpoints/last.ckpt``):
    optimizer, schedule, epoch counter and history carry on; the split is re-read from
    ``model_dir/splits.csv`` when present so resumed training sees the same frames. A checkpoint
    of another network (body parts, backbone or head, :func:`check_resumable`) is refused
    before anything is written.

    The run writes into a staging directory beside ``model_dir`` that replaces it whole only
    when training succeeds: a failed run (bad video, exception mid-fit, a kill) leaves an
    existing model directory exactly as it was and no new one (a killed run's hidden stage is
    removed by the next run into ``model_dir``). A resumed run starts its stage
    from the existing directory's files (earlier logs and checkpoints carry on); a fresh run
    starts empty and reuses only a matching frame cache. A non-empty folder that is not a model
    directory is refused rather than replaced.

    ``keep_stopped`` (a model directory of its own, :mod:`.stopping`): a run stopped by a signal
    after its first epoch keeps its stage as ``<model_dir>.stopped``. Resuming from a checkpoint
    in there starts the stage from that folder's files (splits, history, logs, frame cache)
    instead of ``model_dir``'s, and the run that completes removes it.

    ``final_dir``: where ``model_dir`` ends up, for a network of a run of several whose staging
    folder is renamed when it completes. The checkpoints' saved state names that folder, so the
    best score so far is restored when the kept run is resumed under another staging folder.
    """
    model_dir = Path(model_dir)
    labels, videos = load_project(
        project_root, config.data.csv_file, config.data.video_dir, config.data.view_names or None
    )
    logger.info(advise(labels, config).summary())  # the animal's size in heatmap pixels, and what to train
    if resume_from is not None:
        if not Path(resume_from).is_file():
            raise FileNotFoundError(f"{resume_from}: checkpoint to resume from not found")
        check_resumable(read_checkpoint(resume_from), config, labels.bodyparts)
    check_replaceable(model_dir)
    run_folder = _resumed_folder(model_dir, resume_from)
    splits = project_splits(
        labels, config.data, project_root, saved=run_folder / "splits.csv" if resume_from is not None else None
    )
    # a stop keeps the run once it is seeded, and waits for the model once its files are
    # written; DDP runs train() in every process, and only global rank 0's stage, which holds
    # the checkpoints (Lightning broadcasts its folder), becomes model_dir
    with (
        _quiet_lightning(),
        staged_run(
            model_dir,
            when=global_rank_zero,
            keep=keep_stopped,
            seed=partial(
                seed_stage,
                run_folder,
                resume=resume_from is not None,
                frame_cache=bool(config.losses.unsupervised) and not config.losses.cache_dir,
            ),
        ) as (stage, written),
    ):
        result = _fit(
            config,
            labels,
            videos,
            splits,
            stage,
            model_dir,
            Path(final_dir or model_dir),
            resume_from,
            progress,
            Path(project_root),
        )
        written()
    return result


def global_rank_zero() -> bool:
    """Whether this process is DDP's global rank 0, or the only one (Lightning sets the rank as a
    run starts; before, it is read from the launcher's environment)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def from_global_rank_zero(read: Callable[[], T]) -> T:
    """``read()`` as global rank 0 returns it, in every DDP process (the others may not have its
    files: only rank 0's stage holds the networks), its error raised in every one; ``read()``
    itself in a process alone."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_world_size() == 1:
        return read()
    shared: list[Any] = [None]
    if global_rank_zero():
        try:
            shared[0] = (read(), None)
        except Exception as failed:
            shared[0] = (None, failed)
    torch.distributed.broadcast_object_list(shared, src=0)
    value, failure = shared[0]
    if failure is not None:
        raise failure
    return value


def _resumed_folder(model_dir: Path, resume_from: PathLike | None) -> Path:
    """The folder whose files a resumed run carries on: the stopped run kept for ``model_dir``
    when ``resume_from`` is its checkpoint, else ``model_dir``. A checkpoint of one network of a
    kept run of several is refused: that run goes on only as itself."""
    if resume_from is None or not resumes_kept_run(model_dir, resume_from):
        return model_dir
    kept = stopped_folder(model_dir)
    if Path(resume_from).resolve().parent.parent != kept.resolve():
        raise ConfigError(
            f"{resume_from}: a checkpoint of one network of the run of several (crop zoom, one network per view) "
            f"kept in {kept}; resume that run with its own configuration (crop_zoom, data.multiview)"
        )
    return kept


def finished_result(model_dir: Path) -> TrainResult:
    """What the finished run in ``model_dir`` produced, read back from its files."""
    info = read_model_info(model_dir)
    history = pd.read_csv(model_dir / "metrics.csv") if (model_dir / "metrics.csv").is_file() else pd.DataFrame()
    return TrainResult(
        model_dir,
        model_dir / info.best_checkpoint,
        float(info.wall_time_s or 0.0),
        int(info.epochs or 0),
        info.best_val_loss,
        history,
    )


def train_or_reuse(model_dir: Path, train: Callable[..., TrainResult], final_dir: Path) -> TrainResult:
    """One network of a run of several (crop zoom's stages, one network per view) into
    ``model_dir``, a folder of that run's staging folder, which becomes ``final_dir``.

    A network finished there already (a resumed run's seeded stage) is reused; else
    ``train(resume_from=..., keep_stopped=True, final_dir=final_dir)`` trains it, going on from its own stopped run when
    one is kept beside it, and keeps it as ``<network>.stopped`` when it is stopped in turn, which
    the enclosing run keeps with its stage (:mod:`.stopping`).
    """
    if (model_dir / MODEL_JSON).is_file():
        logger.info("%s: finished before the run was stopped; reused", model_dir.name)
        return finished_result(model_dir)
    return train(resume_from=kept_checkpoint(stopped_folder(model_dir)), keep_stopped=True, final_dir=final_dir)


def check_resumable(checkpoint: Checkpoint, config: TrainConfig, bodyparts: list[str]) -> None:
    """Refuse to resume from a checkpoint of another network than this run's.

    Its heatmap channels must be the project's body parts in the same order (a channel would
    otherwise go on learning another body part), and its backbone and head
    (``model.model_type``) the configuration's (their weights would not fit). The
    :class:`ConfigError` names each difference.
    """
    theirs, ours = checkpoint.config.model, config.model
    differences = []
    if list(checkpoint.bodyparts) != list(bodyparts):
        order = " (the same body parts in another order)" if sorted(checkpoint.bodyparts) == sorted(bodyparts) else ""
        differences.append(f"body parts {list(checkpoint.bodyparts)}, the project's are {list(bodyparts)}{order}")
    if theirs.backbone != ours.backbone:
        differences.append(f"backbone {theirs.backbone!r}, model.backbone is {ours.backbone!r}")
    if theirs.model_type != ours.model_type:
        differences.append(f"head {theirs.model_type!r}, model.model_type is {ours.model_type!r}")
    if differences:
        raise ConfigError(f"{checkpoint.path}: cannot resume from this checkpoint: it has " + "; ".join(differences))
    if not checkpoint.has_optimizer_state:
        raise ConfigError(
            f"{checkpoint.path}: cannot resume from this checkpoint: it holds the weights alone (best.ckpt is "
            "saved for inference); resume from the model directory's checkpoints/last.ckpt"
        )


def _link_or_copy(source: str, target: str) -> None:
    # every file a run writes is replaced by a rename, never rewritten in place, so a hard link
    # shares the old model's bytes without letting the new run change them
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def seed_stage(run_folder: Path, stage: Path, *, resume: bool, frame_cache: bool) -> None:
    """Start the staging directory from ``run_folder`` (the model directory, or the stopped run
    resumed): all of it to resume, else only its frame cache."""
    if not run_folder.is_dir():
        return
    if resume:
        shutil.copytree(run_folder, stage, dirs_exist_ok=True, copy_function=_link_or_copy)
    elif frame_cache and (run_folder / "frame_cache").is_dir():
        # build_frame_cache checks the videos and parameters and rebuilds when they differ
        shutil.copytree(run_folder / "frame_cache", stage / "frame_cache", copy_function=_link_or_copy)


def _fit(
    config: TrainConfig,
    labels: LabeledFrames,
    videos: list[Path],
    splits: np.ndarray,
    stage: Path,
    model_dir: Path,
    final_dir: Path,
    resume_from: PathLike | None,
    progress: bool,
    project_root: Path,
) -> TrainResult:
    """One training run written into ``stage`` (paths in the result are ``model_dir``'s, those in
    the checkpoints' state ``final_dir``'s)."""

    config.to_yaml(stage / "config.yaml")
    write_splits(stage / "splits.csv", labels.image_paths, splits)
    pl.seed_everything(config.training.seed, workers=True, verbose=False)
    pcas, clips, geometry = unsupervised_inputs(config, labels, splits, videos, stage)
    datamodule = PoseDataModule(labels, splits, config, clips)
    has_val = len(datamodule.rows("val")) > 0
    monitor = "val_loss" if has_val else "train_loss"
    module = HeatmapModule(
        config.to_dict(),
        list(labels.bodyparts),
        pca={k: v.to_dict() for k, v in pcas.items()},
        geometry=geometry.to_dict() if geometry is not None else None,
    )
    history = HistoryCallback(stage / "metrics.csv")  # grows per epoch: a run can be followed
    checkpoint = _staged_checkpoint(
        stage / "checkpoints",
        final_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode="min",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
        save_on_train_epoch_end=True,  # after the epoch's train and val metrics are both final
    )
    # DDP's processes stop together, up to the last collective (the final validation's)
    with stops_agreed_by_processes():
        trainer = pl.Trainer(
            accelerator=config.training.accelerator,
            devices=config.training.devices,
            max_epochs=config.training.max_epochs,
            max_steps=config.training.max_steps or -1,
            max_time=timedelta(seconds=config.training.max_time_s) if config.training.max_time_s else None,
            check_val_every_n_epoch=config.training.check_val_every_n_epoch,
            log_every_n_steps=config.training.log_every_n_steps,
            callbacks=[*_guards(config), history, checkpoint, StopsAgreedByProcesses()],
            logger=_loggers(stage),
            plugins=[_atomic_checkpoint_io()],
            # Lightning's own root (cwd by default): under SLURM it resumes by itself from an
            # hpc_ckpt_N.ckpt found there, and its requeue handler saves them there
            default_root_dir=stage,
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if has_val else 0,
        )
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
        run_time = time.perf_counter() - started

        # the checkpoint folder Lightning broadcast from global rank 0, which saved it: every DDP
        # process goes on as rank 0 finds it (one on another node may not see the file)
        best = Path(checkpoint.dirpath) / "best.ckpt"
        best_score = checkpoint.best_model_score
        if not trainer.strategy.broadcast(best.is_file()):
            # max_steps ended the run mid-epoch, before any validation: validate the final weights
            # and make them the best checkpoint, so every run leaves the contract complete
            if has_val:
                scores = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
                best_score = torch.tensor(scores["val_loss"])
                if history.rows:
                    history.rows[-1].update({k: float(v) for k, v in scores.items()})
            trainer.save_checkpoint(best, weights_only=True)
    frame = pd.DataFrame(history.rows)
    write_csv_atomic(frame.set_index("epoch") if len(frame) else frame, stage / "metrics.csv")
    best_val = float(best_score) if (best_score is not None and has_val) else None
    wall_time = history.elapsed() if history.rows else run_time
    info = ModelInfo(
        bodyparts=list(labels.bodyparts),
        frame_size=frame_size(labels),
        image_resize=list(config.data.image_resize),
        backbone=config.model.backbone,
        model_type=config.model.model_type,
        preset=config.preset,
        engine_version=__version__,
        torch_version=torch.__version__,
        n_train=int((splits == "train").sum()),
        n_val=int((splits == "val").sum()),
        n_test=int((splits == "test").sum()),
        epochs=int(trainer.current_epoch),
        steps=int(trainer.global_step),
        wall_time_s=round(float(wall_time), 3),
        best_val_loss=best_val,
        unsupervised_losses=list(config.losses.unsupervised),
        pca={kind: pca.summary() for kind, pca in pcas.items()},
        unlabeled_frames_cached=clips.cache.n_frames if clips is not None else 0,
        project_root=str(project_root.resolve()),  # where inference finds the labeled frames to check a precision on
    )
    write_model_info(stage, info)
    final_best = model_dir / "checkpoints" / "best.ckpt"
    return TrainResult(model_dir, final_best, float(wall_time), int(trainer.current_epoch), best_val, frame)


def _guards(config: TrainConfig) -> list:
    """The collapse guard (engine.callbacks), when enabled: it runs before the history records the epoch."""
    if not config.training.collapse_guard:
        return []

    # a context model's supervised loss sums its two heads' (single-frame and context): two flat maps
    heads = 2 if config.model.model_type == "context" else 1
    return [CollapseGuard(heads * flat_heatmap_loss(config.data.image_resize, config.model.heatmap_sigma))]


def _atomic_checkpoint_io():
    """Lightning's checkpoint writer, through atomic.py (Lightning's own stages in /tmp and,
    across file systems, rewrites the target in place), and its reader (resuming), through the
    engine's weights-only reader."""

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any = None) -> None:
            with atomic_output(path) as tmp:
                torch.save(checkpoint, tmp)

        def load_checkpoint(self, path: PathLike, map_location: Any = None, weights_only: bool | None = None) -> Any:
            # whatever Lightning passes (its weights_only is None by default, and before 2.6 it
            # had none: torch's default then decides, which an environment variable can turn off)
            return load_checkpoint_file(path)

    return AtomicCheckpointIO()


def _rebase(value: Any, old: str, new: str) -> Any:
    """``value`` with paths under ``old`` moved under ``new`` (strings, dict keys, nested)."""
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old) :]
    if isinstance(value, dict):
        return {_rebase(k, old, new): _rebase(v, old, new) for k, v in value.items()}
    return value


def _staged_checkpoint(stage_dir: Path, final_dir: Path, **kwargs: Any):
    """A ModelCheckpoint that writes into the stage but records the model directory's paths.

    Its saved state then names the checkpoints where they end up, and resuming into the same
    model directory restores the best score as it did before staging (Lightning drops it when
    the directory in the checkpoint differs from the callback's).
    """

    class StagedCheckpoint(ModelCheckpoint):
        @property
        def state_key(self) -> str:  # the plain ModelCheckpoint's key: old checkpoints resume
            return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

        def state_dict(self) -> dict[str, Any]:
            return _rebase(super().state_dict(), str(self.dirpath), final)

        def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
            # best.ckpt serves inference: the weights alone, a third of a full checkpoint (Adam
            # keeps two moments per weight); last.ckpt keeps the optimizer, to resume from
            keep, self.save_weights_only = (
                self.save_weights_only,
                self.save_weights_only or filepath != self.last_model_path,
            )
            try:
                super()._save_checkpoint(trainer, filepath)
            finally:
                self.save_weights_only = keep

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            super().on_train_epoch_end(trainer, pl_module)
            # Lightning 2.6 writes last.ckpt only in an epoch that also wrote a new best: resuming
            # would go back to the best epoch and train the epochs after it again
            if (
                self.save_last
                and self._should_save_on_train_epoch_end(trainer)
                and not self._should_skip_saving_checkpoint(trainer)
            ):
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            # compared (and warned about) as the model directory, then moved into the stage
            stage, self.dirpath = self.dirpath, final
            try:
                super().load_state_dict(state_dict)
            finally:
                self.dirpath = stage
            for name in ("best_model_path", "kth_best_model_path", "last_model_path", "best_k_models"):
                setattr(self, name, _rebase(getattr(self, name), final, str(stage)))

    final = os.path.realpath(final_dir)
    return StagedCheckpoint(dirpath=stage_dir, **kwargs)
