"""The one way to train: :func:`train` (``elp train``, the pipeline's ``ModelTraining``, the docs).

It chooses, from the configuration and the project on disk:

- the **layout**: one network over every view (``data.multiview=shared``, and any single-view
  project), or one network per view of a multi-view project (``per_view``, :mod:`.per_view`);
- the **kind** of each network: one stage (:mod:`.single`), or a detector and a pose model on
  crops (``crop_zoom.enabled``, :mod:`.crop_zoom`).

The trainers below never import this module: :func:`train_per_view` is handed the kind
dispatch (:func:`train_network`) for its views.

A run stopped by SIGTERM (a scheduler's kill, the app's cancel), SIGINT (Ctrl-C), or SIGHUP or
SIGUSR1 left at their default (:mod:`.stopping`) raises
:class:`~.stopping.TrainingInterrupted`; a one-network run stopped after its first epoch is kept
as ``<model_dir>.stopped`` to resume from (:mod:`.stopping`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from element_lightning_pose.engine.allocation import reuse_freed_memory
from element_lightning_pose.engine.config import AUTO_PRESET, ConfigError, TrainConfig
from element_lightning_pose.engine.data.projects import project_views
from element_lightning_pose.engine.training.advice import resolve_preset
from element_lightning_pose.engine.training.crop_zoom import train_crop_zoom
from element_lightning_pose.engine.training.per_view import PerViewResult, train_per_view
from element_lightning_pose.engine.training.single import TrainResult, train_single
from element_lightning_pose.engine.training.stopping import (
    TrainingInterrupted,
    signals_stop_the_run,
    stopped_checkpoint,
    stopped_folder,
)
from element_lightning_pose.engine.types import PathLike

logger = logging.getLogger(__name__)

__all__ = ["TrainingInterrupted", "train", "train_network"]


def train(
    config: TrainConfig | dict | PathLike | None,
    project_root: PathLike,
    model_dir: PathLike,
    *,
    resume_from: PathLike | None = None,
    progress: bool = True,
    one_network: bool = False,
    source: str = "",
    resume_stopped: bool = False,
) -> TrainResult | PerViewResult:
    """Train on the labeled project at ``project_root`` into ``model_dir``.

    ``config`` is a TrainConfig, a (partial) dict, a YAML path, or None for the defaults; with
    ``preset: auto`` the preset is picked for the project first
    (:func:`.advice.resolve_preset`).
    ``resume_from`` continues one network from a checkpoint (e.g.
    ``model_dir/checkpoints/last.ckpt``). Returns a :class:`TrainResult` for one network, a
    :class:`PerViewResult` for one network per view.

    ``one_network=True`` is for a caller that keeps one network per model directory (the
    pipeline: a ``Model`` row is one network): ``data.multiview=per_view`` on a multi-view
    project is then refused before any training, with a ``ConfigError`` that begins with
    ``source`` (e.g. ``"TrainingParamSet 3"``) and says what to do instead. Without it, the same
    parameter on a single-view project is refused (there are no views to train apart).

    A stop signal during the run (:mod:`.stopping`) raises :class:`TrainingInterrupted` (a run is never
    returned unfinished); ``model_dir`` is then as it was. A run stopped after its first epoch
    (of any of its networks: crop zoom's stages, the views of a per-view model) is kept as
    ``<model_dir>.stopped``, and the message names the checkpoint to resume from;
    ``resume_stopped=True`` (the pipeline re-populating a preempted key) resumes from it by
    itself when it was trained with the same configuration and ``resume_from`` is not given.
    """
    reuse_freed_memory()  # each batch's activations and gradients reuse the last one's pages
    with signals_stop_the_run(Path(model_dir), resume_from):
        return _train(config, project_root, model_dir, resume_from, progress, one_network, source, resume_stopped)


def _train(
    config: TrainConfig | dict | PathLike | None,
    project_root: PathLike,
    model_dir: PathLike,
    resume_from: PathLike | None,
    progress: bool,
    one_network: bool,
    source: str,
    resume_stopped: bool,
) -> TrainResult | PerViewResult:
    config = TrainConfig.load(config)
    if config.preset == AUTO_PRESET:  # picked from the project now; config.yaml and model.json record the pick
        resolved = resolve_preset(config, project_root)
        for note in resolved.notes:
            logger.info(note)
        config = resolved.config
    if config.data.multiview == "per_view":
        views = project_views(project_root, config.data.csv_file, config.data.view_names)
        if one_network and views:
            prefix = f"{source}: " if source else ""
            raise ConfigError(
                f"{prefix}data.multiview=per_view trains one network per view ({', '.join(v for v, _ in views)}), "
                "but one network is trained here: train each view as a project of its own "
                f"(data.csv_file={views[0][1]}, ...; in the pipeline, one VideoSet per view, "
                "csv_file='CollectedData_<view>.csv'), or use data.multiview=shared"
            )
        if not one_network:
            if not views:
                raise ConfigError(
                    f"data.multiview=per_view: {project_root} is not a multi-view project "
                    "(set data.csv_file to one CSV per view, or lay it out as CollectedData_<view>.csv)"
                )
            return train_per_view(
                config, project_root, model_dir, train_network=train_network, progress=progress, resume_from=resume_from
            )
    if resume_stopped and resume_from is None:
        resume_from = stopped_checkpoint(model_dir, config)
        if resume_from is not None:
            logger.info("resuming the stopped run kept in %s", stopped_folder(model_dir))
    return train_network(config, project_root, model_dir, resume_from=resume_from, progress=progress, keep_stopped=True)


def train_network(
    config: TrainConfig,
    project_root: PathLike,
    model_dir: PathLike,
    *,
    resume_from: PathLike | None = None,
    progress: bool = True,
    keep_stopped: bool = False,
    final_dir: PathLike | None = None,
) -> TrainResult:
    """One network of the kind ``config`` asks for: crop zoom (two stages) or one stage.

    ``keep_stopped``: a run stopped by a signal is kept as ``<model_dir>.stopped``
    (:mod:`.stopping`) to resume from. ``final_dir``: where ``model_dir`` ends up when it is a
    network of a run of several (a per-view model's view).
    """
    trainer = train_crop_zoom if config.crop_zoom.enabled else train_single
    return trainer(
        config,
        project_root,
        model_dir,
        resume_from=resume_from,
        progress=progress,
        keep_stopped=keep_stopped,
        final_dir=final_dir,
    )
