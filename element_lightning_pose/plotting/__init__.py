"""Trace plots, labeled videos and evaluation figures of pose estimates.

- :mod:`.core` works on arrays and files, without a database (``plot_traces``,
  ``write_labeled_video``, ``plot_evaluation``);
- :mod:`.db` fetches from the element's tables and calls the core (``plot_pose_estimation``,
  ``plot_ensemble``, ``labeled_video_for``, ``plot_model_evaluation``); it imports the schema
  modules only when called, so importing this package loads no DataJoint.

``elp plot`` is the command line (:mod:`element_lightning_pose.cli.plot`).
"""

from element_lightning_pose.plotting.core import (
    ALL_BODYPARTS,
    EVALUATION_COLUMNS,
    POSTERIOR_BAND_GID,
    SPLIT_COLOURS,
    SPLIT_ORDER,
    Z_95,
    bodypart_colours,
    plot_evaluation,
    plot_traces,
    save_figure,
    write_labeled_video,
)
from element_lightning_pose.plotting.db import (
    labeled_video_for,
    plot_ensemble,
    plot_model_evaluation,
    plot_pose_estimation,
)

__all__ = [
    "ALL_BODYPARTS",
    "EVALUATION_COLUMNS",
    "POSTERIOR_BAND_GID",
    "SPLIT_COLOURS",
    "SPLIT_ORDER",
    "Z_95",
    "bodypart_colours",
    "labeled_video_for",
    "plot_ensemble",
    "plot_evaluation",
    "plot_model_evaluation",
    "plot_pose_estimation",
    "plot_traces",
    "save_figure",
    "write_labeled_video",
]
