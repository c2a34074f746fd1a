"""Training on a multi-view project: one network shared by the views, or one network per view.

A multi-view project in Lightning Pose's layout has one label CSV per view (``data.csv_file``
a list, ``data.view_names`` one name each, the same frames labeled in every view) and videos
whose file names contain the view name. ``data.multiview`` chooses:

``shared``
    one network for every view: each view's labeled frames are samples of one dataset
    (``io.read_multiview_labels`` concatenates them and keeps each row's view). This is
    :func:`engine.train.train` as it is.
``per_view``
    one network per view, trained by :func:`engine.train.train` into ``model_dir/<view>/``
    (each a complete model directory); ``model_dir/model.json`` lists the views and
    ``model_dir/config.yaml`` keeps the whole configuration. The directory is replaced whole
    only when every view has trained.

:func:`train_project` dispatches on the layout and is what ``elp train`` calls;
:func:`train_one_network` is what a caller that keeps one network per model directory calls
(the pipeline's ``ModelTraining``: a ``Model`` row is one network), and it refuses
``per_view`` on a multi-view project.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from element_lightning_pose.engine.atomic import atomic_directory
from element_lightning_pose.engine.config import ConfigError, DataConfig, TrainConfig
from element_lightning_pose.engine.data.projects import (
    DEFAULT_CSV,
    derive_view_names,
    detect_layout,
    read_multiview_labels,
)
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.model_dir import write_model_info
from element_lightning_pose.engine.training.single import TrainResult, train
from element_lightning_pose.version import __version__

PathLike = str | os.PathLike


@dataclass
class MultiViewResult:
    """What a per-view run produced: one :class:`TrainResult` per view (in view order)."""

    model_dir: Path
    views: dict[str, TrainResult]
    wall_time_s: float


def project_views(config: TrainConfig, project_root: PathLike) -> list[tuple[str, str]]:
    """``(view name, label CSV)`` of each view of the project, from the config or the layout
    found on disk (no ``data.csv_file`` given); empty for a single-view project."""
    data = config.data
    if isinstance(data.csv_file, list):
        names = data.view_names or derive_view_names(data.csv_file)
        return list(zip(names, data.csv_file))
    if data.csv_file == DEFAULT_CSV and not (Path(project_root) / DEFAULT_CSV).exists():
        layout = detect_layout(project_root)
        if layout.kind == "multiview":
            return list(zip(layout.view_names, list(layout.csv_file)))
    return []


def view_config(config: TrainConfig, view: str, csv_file: str) -> TrainConfig:
    """The configuration of one view's network: that view's CSV (and videos) only."""
    values = {**config.data.model_dump(), "csv_file": [csv_file], "view_names": [view], "multiview": "shared"}
    return config.model_copy(update={"data": DataConfig.model_validate(values)})


def train_project(
    config: TrainConfig | dict | PathLike | None,
    project_root: PathLike,
    model_dir: PathLike,
    *,
    resume_from: PathLike | None = None,
    progress: bool = True,
) -> TrainResult | MultiViewResult:
    """Train on any project layout: :func:`train_per_view` when ``data.multiview`` is
    ``per_view`` on a multi-view project, else :func:`engine.train.train`."""
    config = TrainConfig.load(config)
    if config.data.multiview == "per_view":
        views = project_views(config, project_root)
        if not views:
            raise ConfigError(
                f"data.multiview=per_view: {project_root} is not a multi-view project "
                "(set data.csv_file to one CSV per view, or lay it out as CollectedData_<view>.csv)"
            )
        if resume_from is not None:
            raise ConfigError(
                "data.multiview=per_view: --resume is not supported (resume each view's model_dir/<view>)"
            )
        return train_per_view(config, project_root, model_dir, progress=progress)
    return train(config, project_root, model_dir, resume_from=resume_from, progress=progress)


def train_one_network(
    config: TrainConfig | dict | PathLike | None,
    project_root: PathLike,
    model_dir: PathLike,
    *,
    source: str = "",
    progress: bool = True,
) -> TrainResult:
    """Train exactly one network into ``model_dir`` (:func:`engine.train.train`).

    ``data.multiview=per_view`` on a multi-view project would be one network per view: it is
    refused with a ``ConfigError`` naming the parameter, the views and what to do instead
    (train each view's CSV as a project of its own, or ``data.multiview=shared``), before any
    training. On a single-view project ``multiview`` has nothing to choose. ``source`` (e.g.
    ``"TrainingParamSet 3"``) begins the message.
    """
    config = TrainConfig.load(config)
    if config.data.multiview == "per_view":
        views = project_views(config, project_root)
        if views:
            prefix = f"{source}: " if source else ""
            raise ConfigError(
                f"{prefix}data.multiview=per_view trains one network per view ({', '.join(v for v, _ in views)}), "
                "but one network is trained here: train each view as a project of its own "
                f"(data.csv_file={views[0][1]}, ...; in the pipeline, one VideoSet per view, "
                "csv_file='CollectedData_<view>.csv'), or use data.multiview=shared"
            )
    return train(config, project_root, model_dir, progress=progress)


def train_per_view(
    config: TrainConfig | dict | PathLike | None,
    project_root: PathLike,
    model_dir: PathLike,
    *,
    progress: bool = True,
) -> MultiViewResult:
    """One network per view into ``model_dir/<view>/``, and the ``model.json`` listing them."""
    config = TrainConfig.load(config)
    model_dir = Path(model_dir)
    views = project_views(config, project_root)
    if not views:
        raise ProjectError(f"{project_root}: not a multi-view project (no per-view label CSVs)")
    # every view's labels checked (same body parts, same frames) before hours of training
    names, files = [v for v, _ in views], [c for _, c in views]
    bodyparts = read_multiview_labels(project_root, files, names, check_images=True).bodyparts
    _check_replaceable(model_dir)
    results: dict[str, TrainResult] = {}
    with atomic_directory(model_dir) as stage:
        for view, csv_file in views:
            staged = train(view_config(config, view, csv_file), project_root, stage / view, progress=progress)
            results[view] = _moved(staged, stage, model_dir)
        config.to_yaml(stage / "config.yaml")
        wall_time = sum(r.wall_time_s for r in results.values())
        write_model_info(
            stage,
            {
                "bodyparts": list(bodyparts),
                "image_resize": list(config.data.image_resize),
                "backbone": config.model.backbone,
                "model_type": config.model.model_type,
                "engine_version": __version__,
                "wall_time_s": round(wall_time, 3),
                "multiview": "per_view",
                # each view's network is a whole model directory of its own: load those
                "views": {
                    view: {
                        "model_dir": view,
                        "csv_file": csv_file,
                        "best_val_loss": results[view].best_val_loss,
                        "epochs": results[view].epochs,
                    }
                    for view, csv_file in views
                },
            },
        )
    return MultiViewResult(model_dir, results, float(wall_time))


def _moved(result: TrainResult, stage: Path, model_dir: Path) -> TrainResult:
    """``result`` with its paths where the stage ends up."""

    def move(path: Path) -> Path:
        return model_dir / Path(path).relative_to(stage)

    return TrainResult(
        move(result.model_dir),
        move(result.best_checkpoint),
        result.wall_time_s,
        result.epochs,
        result.best_val_loss,
        result.history,
    )


def _check_replaceable(model_dir: Path) -> None:
    """Refuse to replace a folder that holds something other than a model (a wrong --model-dir)."""
    if not model_dir.exists():
        return
    if not model_dir.is_dir():
        raise FileExistsError(f"{model_dir}: exists and is not a folder; choose another model directory")
    names = {p.name for p in model_dir.iterdir() if not p.name.startswith(".")}
    if names and not names & {"config.yaml", "model.json"}:
        raise FileExistsError(
            f"{model_dir}: not empty and not a model directory (no config.yaml or model.json); "
            "training replaces the whole folder, so choose another one"
        )
