"""The pose engine: everything the tables compute, usable without a database.

Packages, in the order data flows through them (imports only go down this list, never across
one line of it; ``tests/engine/test_layers.py`` checks the graph):

- base modules: :mod:`.errors` (``ElpError``, the one boundary of user-facing errors),
  :mod:`.atomic` (files written whole or not at all), :mod:`.config` (training parameters),
  :mod:`.model_dir` (the model directory's contract and its three kinds);
- :mod:`.data` - keypoint tables, labeled projects (Lightning Pose, DeepLabCut, multi-view),
  videos, splits and crop geometry; no torch;
- :mod:`.networks` - backbones, the heatmap head, the temporal context network;
- :mod:`.eks` - the Ensemble Kalman Smoother over an ensemble's predictions;
- :mod:`.multicam` - calibrated cameras, board calibration, triangulation, the 3D smoother;
- :mod:`.training` - ``train(config, project, model_dir)``, the one entry, and what it uses;
- :mod:`.inference` - ``load_model``, ``predict_video``, ``evaluate`` and the metrics.

Nothing below this package imports DataJoint or the rest of the element (schemas, command line,
exporters, synthetic data); the schema modules call into it.
"""
