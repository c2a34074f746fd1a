"""Inference: a trained model on videos and on labeled frames.

- :mod:`.models` - ``load_model(model_dir)``: a :class:`PoseModel` (or a two-stage
  :class:`CropZoomModel`) ready to run on frames, original pixels in and out;
- :mod:`.predict` - streaming prediction over a video (:func:`predict_video`, decode of the
  next batches overlapping the network) and over labeled frames (:func:`predict_labeled`);
- :mod:`.evaluate` - a model on its labeled frames, by split (:func:`evaluate`);
- :mod:`.metrics` - pixel errors, temporal norms, PCA residuals, per-frame diagnostics.
"""
