"""Synthetic data with known ground truth, for the demo, the tests and the benchmarks.

Beside the engine, not in it (as movement keeps its sample data apart from its maths): the
engine never imports this package; these generators call the engine's writers.

- :mod:`.projects` - labeled single-camera projects (one or two views in a frame, an arena
  with a small animal), rendered videos and per-frame ground truth (``make_synthetic_project``);
- :mod:`.sessions` - recording sessions of one animal that differ the way real sessions do
  (light, contrast, scale, distractors, blur, occluders) and out-of-distribution projects;
- :mod:`.rig` - calibrated camera rigs, a 3D body, corrupted 2D observations, board videos;
- :mod:`.rig_project` - a labeled multi-camera project rendered from a rig, in Lightning
  Pose's layout, with its ``calibration.toml`` (``make_rig_project``).

Every generator is deterministic by seed and writes through the engine's atomic writers.
"""
