"""Multi-camera 3D: camera models and calibration files, board calibration, triangulation
(linear, robust) and a robust Bayesian 3D smoother.

Modules:

* :mod:`.cameras` - :class:`~.cameras.Camera` / :class:`~.cameras.CameraGroup` (pinhole +
  OpenCV distortion, fisheye), projection, undistortion, anipose's ``calibration.toml``;
* :mod:`.triangulate` - weighted DLT and robust (camera-pair hypotheses + Student-t IRLS);
* :mod:`.smoother` - the Bayesian 3D smoother (random walk, Student-t views, limb lengths);
* :mod:`.calibrate` / :mod:`.boards` - ChArUco / checkerboard detection, intrinsics,
  extrinsics, bundle adjustment;
* :mod:`.io` - the 3D points CSV layout and reading per-camera predictions.

Synthetic rigs with ground truth live beside the engine, in :mod:`element_lightning_pose.synthetic.rig`.
Nothing here imports DataJoint.
"""
