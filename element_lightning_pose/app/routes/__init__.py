"""The app's routes, one module per page's concern; ``common`` resolves what every route is given.

- :mod:`.pages` - the HTML pages (server-rendered; each page's script calls the API);
- :mod:`.projects` - list, open, create and describe projects, edit a skeleton;
- :mod:`.imports` - a SLEAP file (``.slp``, ``.pkg.slp``) imported as a new project;
- :mod:`.media` - video frames (decoded on the server) and labeled images;
- :mod:`.labels` - the label store: queued frames, one frame's labels, saving a frame, a
  calibrated instant's projections and epipolar curves;
- :mod:`.select` - frames to label next (k-means, uniform, model-guided) and queuing them;
- :mod:`.checks` - flags in the human labels, against a held-out model's predictions too;
- :mod:`.review` - a video's prediction files, traces by range, worst frames, send to the
  labeler (and the prefill it keeps), predicting a video, "did this round help";
- :mod:`.train` - presets and advice, parameters checked per field, training jobs, the models;
- :mod:`.pipeline_rows` - with a database, the pipeline's rows about a project (VideoSets,
  models, PoseEstimation, EnsembleSmoothing, Triangulation) and their files for the review and
  select routes.
"""
