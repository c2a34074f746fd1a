"""``elp demo``: the whole pipeline on a local database, from data to NWB, plots and video.

- :mod:`.single_camera` - one camera: a synthetic labeled project (or ``--project``), two
  models, their evaluation, a session video predicted by each, the EKS ensemble, NWB checked
  by nwbinspector, trace plots and a labeled video (:func:`run_demo`);
- :mod:`.rig` - a calibrated camera rig (``--rig``): board videos, calibration, one network
  shared by the views, pose per camera, 3D with posterior variances, 3D plots and NWB
  (:func:`run_rig_demo`);
- :mod:`.common` - what both share: sizes for a laptop, the connection, timed steps.

Running a demo again reuses what exists.
"""

from element_lightning_pose.demo.common import DEMO_PREFIX, fill_defaults
from element_lightning_pose.demo.rig import print_rig_summary, run_rig_demo
from element_lightning_pose.demo.single_camera import print_summary, run_demo

__all__ = ["DEMO_PREFIX", "fill_defaults", "print_rig_summary", "print_summary", "run_demo", "run_rig_demo"]
