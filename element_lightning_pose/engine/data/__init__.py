"""Data on disk, as the engine reads and writes it: keypoint tables, labeled projects, videos,
splits and crop geometry. Nothing here imports torch or Lightning.

Modules, in the order data flows through them:

- :mod:`.keypoints` - the keypoint table (a 3-row ``scorer / bodyparts / coords`` header), read
  and written atomically, for labels and predictions (:func:`read_keypoint_csv`,
  :func:`write_predictions`);
- :mod:`.labels` - hand labels: :class:`LabeledFrames`, the label-table parser with its checks
  (:func:`read_labels`), images, and a labeled frame resized for the network with its labels;
- :mod:`.dlc` - DeepLabCut projects (``config.yaml`` + ``labeled-data/``, CSV or .h5 labels);
- :mod:`.sleap` - a SLEAP labels file (through the optional sleap-io) read as one single-animal
  table (:func:`read_sleap`);
- :mod:`.projects` - which layout a project folder holds and :func:`load_project`, the one
  entry to a project's labels (any layout) and videos;
- :mod:`.video` - streaming decode and atomic write (OpenCV), :func:`resize_frame`;
- :mod:`.splits` - the train / val / test split: drawn, kept per instant across views, read
  from ``data.split_file`` or a model's ``splits.csv`` (:func:`project_splits`);
- :mod:`.crops` - the crop-zoom model's boxes, affine maps and detected centres.
"""
