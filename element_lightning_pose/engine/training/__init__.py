"""Training: ``train(config, project, model_dir)`` is the one entry, for every layout and kind.

Modules, from the entry down:

- :mod:`.entry` - :func:`train`: dispatches the layout (one network over every view, or one
  per view) and the kind (one stage, or crop zoom); the trainers below never import it;
- :mod:`.single` - one network into one model directory (staged, atomic): the Lightning run,
  its checkpoints, ``metrics.csv`` and ``model.json``;
- :mod:`.per_view` - one network per view of a multi-view project, ``model_dir/<view>/``;
- :mod:`.crop_zoom` - detector + pose stages for a small animal in a large frame;
- :mod:`.stopping` - a run stopped by a signal (SIGTERM, SIGINT, SIGHUP, SIGUSR1): the error it raises, and the stopped
  run kept as ``<model_dir>.stopped`` to resume from;
- :mod:`.datasets` - labeled-frame datasets and the Lightning data module;
- :mod:`.augmentation` - keypoint-aware affine augmentation and training crops;
- :mod:`.unlabeled` - the decoded-once frame cache and unlabeled clips (one camera or a rig);
- :mod:`.unsupervised` - what the unsupervised losses need: fitted PCAs, clips, rig geometry;
- :mod:`.losses` - the heatmap loss, the temporal and PCA losses;
- :mod:`.rig_losses` - a calibrated rig's losses: differentiable triangulation, reprojection,
  limb length;
- :mod:`.pca` - pose PCA and multi-view PCA fitted on training labels (original pixels);
- :mod:`.heatmap_module` - the LightningModule (supervised, semi-supervised, context);
- :mod:`.callbacks` - the guard against a collapse to flat heatmaps;
- :mod:`.advice` - how large the animal is to the network, and which preset to train.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from element_lightning_pose.engine.training.entry import train
    from element_lightning_pose.engine.training.per_view import PerViewResult
    from element_lightning_pose.engine.training.single import TrainResult
    from element_lightning_pose.engine.training.stopping import TrainingInterrupted

__all__ = ["PerViewResult", "TrainResult", "TrainingInterrupted", "train"]

_LAZY = {
    "train": "element_lightning_pose.engine.training.entry",
    "TrainingInterrupted": "element_lightning_pose.engine.training.stopping",
    "PerViewResult": "element_lightning_pose.engine.training.per_view",
    "TrainResult": "element_lightning_pose.engine.training.single",
}


def __getattr__(name: str) -> Any:
    # The entry imports Lightning; inference imports this package's PCA (diagnostics) and must
    # not load Lightning, so the package itself stays light and the entry loads on first use.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
