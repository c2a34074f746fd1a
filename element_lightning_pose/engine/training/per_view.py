"""One network per view of a multi-view project: :func:`train_per_view`.

A multi-view project in Lightning Pose's layout has one label CSV per view (``data.csv_file``
a list, ``data.view_names`` one name each, the same instants labeled in every view) and videos
whose file names contain the view name (see ``docs/concepts.md`` for views, multi-view projects
and camera rigs). ``data.multiview`` chooses:

``shared``
    one network for every view: each view's labeled frames are samples of one dataset
    (:func:`~element_lightning_pose.engine.data.projects.read_multiview_labels` concatenates
    them and keeps each row's view); trained as any single network.
``per_view``
    one network per view into ``model_dir/<view>/`` (each a complete model directory);
    ``model_dir/model.json`` lists the views and ``model_dir/config.yaml`` keeps the whole
    configuration. The directory is replaced whole only when every view has trained; a run
    stopped by a signal keeps its finished views and the stopped one's epochs as
    ``<model_dir>.stopped`` (:mod:`.stopping`), to resume from a checkpoint in there.

Reached through :func:`element_lightning_pose.engine.training.train`, which also chooses how
each view's network is trained (one stage or crop zoom) and passes that trainer in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from element_lightning_pose.engine.config import DataConfig, TrainConfig
from element_lightning_pose.engine.data.projects import project_views, read_multiview_labels
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.model_dir import ModelInfo, check_replaceable, write_model_info
from element_lightning_pose.engine.training.single import TrainResult, global_rank_zero, seed_stage, train_or_reuse
from element_lightning_pose.engine.training.stopping import (
    check_same_networks,
    staged_run,
    stopped_folder,
)
from element_lightning_pose.engine.types import PathLike

# trains one network (any kind) on (config, project_root, model_dir, resume_from=, progress=,
# keep_stopped=, final_dir=) and says what it produced
NetworkTrainer = Callable[..., TrainResult]


@dataclass
class PerViewResult:
    """What a per-view run produced: one :class:`TrainResult` per view (in view order)."""

    model_dir: Path
    views: dict[str, TrainResult]
    wall_time_s: float


def view_config(config: TrainConfig, view: str, csv_file: str) -> TrainConfig:
    """The configuration of one view's network: that view's CSV (and videos) only."""
    values = {**config.data.model_dump(), "csv_file": [csv_file], "view_names": [view], "multiview": "shared"}
    return config.model_copy(update={"data": DataConfig.model_validate(values)})


def train_per_view(
    config: TrainConfig,
    project_root: PathLike,
    model_dir: PathLike,
    *,
    train_network: NetworkTrainer,
    progress: bool = True,
    resume_from: PathLike | None = None,
) -> PerViewResult:
    """One network per view into ``model_dir/<view>/`` (each by ``train_network``), and the
    ``model.json`` listing them.

    ``resume_from``: a checkpoint inside the stopped run kept for ``model_dir``; the views it
    finished are reused and the one it was stopped in goes on from its last epoch.
    """
    model_dir = Path(model_dir)
    if resume_from is not None:
        check_same_networks(model_dir, resume_from, config, "data.multiview=per_view")
    views = project_views(project_root, config.data.csv_file, config.data.view_names)
    if not views:
        raise ProjectError(f"{project_root}: not a multi-view project (no per-view label CSVs)")
    # every view's labels checked (same body parts, same frames) before hours of training
    names, files = [v for v, _ in views], [c for _, c in views]
    bodyparts = read_multiview_labels(project_root, files, names, check_images=True).bodyparts
    check_replaceable(model_dir)
    results: dict[str, TrainResult] = {}
    # a stop keeps the run with its finished views, and waits for the model once its files are written
    seed = (
        partial(seed_stage, stopped_folder(model_dir), resume=True, frame_cache=False)
        if resume_from is not None
        else None
    )
    with staged_run(model_dir, when=global_rank_zero, seed=seed) as (stage, written):
        config.to_yaml(stage / "config.yaml")  # first: a kept run is resumed only with the same networks
        for view, csv_file in views:
            train = partial(train_network, view_config(config, view, csv_file), project_root, stage / view)
            trained = train_or_reuse(stage / view, partial(train, progress=progress), model_dir / view)
            results[view] = _moved(trained, stage, model_dir)
        wall_time = sum(r.wall_time_s for r in results.values())
        if not global_rank_zero():
            # another DDP process: its stage holds no networks, and is discarded
            return PerViewResult(model_dir, results, float(wall_time))
        info = ModelInfo.of_per_view(
            list(bodyparts),
            image_resize=list(config.data.image_resize),
            backbone=config.model.backbone,
            model_type=config.model.model_type,
            preset=config.preset,
            wall_time_s=wall_time,
            # each view's network is a whole model directory of its own: load those
            views={
                view: {
                    "model_dir": view,
                    "csv_file": csv_file,
                    "best_val_loss": results[view].best_val_loss,
                    "epochs": results[view].epochs,
                }
                for view, csv_file in views
            },
        )
        write_model_info(stage, info)
        written()
    return PerViewResult(model_dir, results, float(wall_time))


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
