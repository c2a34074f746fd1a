"""The labeling loop's computations: which frames to label next, and what is wrong with the labels.

Above inference in the engine's layers (it reads a model's or an ensemble's diagnostics); the
browser app (:mod:`element_lightning_pose.app`) and the command line call it, it imports neither.

- :mod:`.selection` - frames worth labeling: k-means on downsampled frames among high-motion
  frames, uniform, and model-guided (frames ranked by a model's, an ensemble's or a rig's
  diagnostics, spread by k-means), each suggestion with the reason it was picked; and the
  export of the chosen frames with their context frames into a project's ``labeled-data/``;
- :mod:`.checks` - flags in the human labels: left/right swaps, bone lengths far from the
  project's, views of one instant that disagree in 3D, labels far from a cross-validated model;
- :mod:`.traces` - a video's prediction files (a model's, an ensemble's, a rig's reprojections,
  diagnostics): their series by range, decimated with every spike kept, and the worst frames;
- :mod:`.imports` - another tool's labels (a SLEAP file) written as a new Lightning Pose project;
- :mod:`.prefill` - the model's prediction of a frame sent to the labeler, which labeling starts from;
- :mod:`.rounds` - the loop's rounds: a project's models, each with its pixel error on the labels
  as they are now (per split, cached in the model directory) beside the labels it was trained on;
- :mod:`.journal` - the JSON-lines files kept beside the labels (the label history, the prefills).
"""
