"""DataJoint schema for training pose models: labeled projects, parameters, training runs.

Tables
------
VideoSet (+ File)   a labeled project (label CSV, labeled images, videos for unlabeled frames)
TrainingParamSet    validated engine parameters, deduplicated by a hash of their canonical form
TrainingTask        VideoSet x TrainingParamSet x training_id: one training run to do
ModelTraining       the trained network: model directory, best checkpoint, curves, wall time

The schema is thin: validation and training live in ``element_lightning_pose.engine``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import datajoint as dj

from element_lightning_pose import paths
from element_lightning_pose.dj_compat import (
    BLOB,
    FLOAT64,
    INT16,
    INT32,
    KeyTextChecked,
    fetch_column,
    fetch_dicts,
    match,
)
from element_lightning_pose.engine.safe_paths import inside_root
from element_lightning_pose.params import ImmutableParams, params_hash  # noqa: F401  (train.params_hash: the hash of every set)

logger = logging.getLogger(__name__)

schema = dj.Schema()
REQUIRED_FUNCTIONS = ("get_lp_root_data_dir",)
_LINK = paths.LinkedSchema("train", REQUIRED_FUNCTIONS)


def activate(
    train_schema_name: str,
    *,
    create_schema: bool = True,
    create_tables: bool = True,
    linking_module: str | ModuleType | None = None,
) -> None:
    """Activate this schema.

    Args:
        train_schema_name: schema name on the database server.
        create_schema: create the schema on the server if it does not exist yet.
        create_tables: create the tables if they do not exist yet.
        linking_module: a module (or its name) that provides ``get_lp_root_data_dir()`` and
            optionally ``get_lp_processed_data_dir()``.
    """
    _LINK.activate(schema, train_schema_name, linking_module, create_schema=create_schema, create_tables=create_tables)


linking_module = _LINK.linking_module
root_dirs = _LINK.root_dirs
processed_dir = _LINK.processed_dir


def _finite_or_none(value) -> float | None:
    """Databases store no NaN: a missing number is NULL."""
    import math

    return float(value) if value is not None and math.isfinite(float(value)) else None


def file_md5(path: Path) -> str:
    """MD5 hex digest of a file's bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _project_layout(
    full_dir: Path, csv_file: str | list[str], view_names: list[str] | None
) -> tuple[str, list[str], list[tuple[str, str]]]:
    """(csv_file to store, every label file relative to the project, [(view, CSV)] or []).

    Raises ProjectError (naming the file) for a layout that cannot be read, before anything
    is inserted."""
    from element_lightning_pose.engine.data.dlc import DLC_CONFIG, dlc_label_files
    from element_lightning_pose.engine.data.projects import (
        DEFAULT_CSV,
        derive_view_names,
        detect_layout,
    )
    from element_lightning_pose.engine.errors import ProjectError

    if isinstance(csv_file, str) and csv_file == DEFAULT_CSV and not (full_dir / csv_file).exists():
        layout = detect_layout(full_dir)
        csv_file = layout.csv_file
        view_names = layout.view_names or view_names
    if not isinstance(csv_file, str):
        files = list(csv_file)
        if not files:
            raise ProjectError(f"{full_dir}: csv_file is an empty list (one label CSV per view expected)")
        names = list(view_names) if view_names else derive_view_names(files)
        if len(names) != len(files) or len(set(names)) != len(names):
            raise ProjectError(f"{full_dir}: view_names {names} must name each of {files} once")
        return files[0], files, list(zip(names, files))
    if view_names:
        raise ProjectError(f"{full_dir}: view_names {view_names} needs csv_file to be one CSV per view")
    if Path(csv_file).name == DLC_CONFIG:
        label_files = [Path(p).relative_to(full_dir).as_posix() for p in dlc_label_files(full_dir)]
        return csv_file, [csv_file, *label_files], []
    return csv_file, [csv_file], []


def _labels_hash(full_dir: Path, label_files: list[str]) -> str | None:
    """MD5 of the label file's bytes (one file), or of each file's name and MD5 (several);
    None when a file is missing (the label reader then names it)."""
    if not all((full_dir / name).is_file() for name in label_files):
        return None
    if len(label_files) == 1:
        return file_md5(full_dir / label_files[0])
    listing = "".join(f"{name} {file_md5(full_dir / name)}\n" for name in label_files)
    return hashlib.md5(listing.encode()).hexdigest()


# --------------------------------------------------------------------------- tables


@schema
class VideoSet(dj.Manual):
    """A labeled project: the label CSV, its images, and videos that give unlabeled frames.

    Attributes:
        video_set_id (int): unique id of the project.
        project_dir (varchar): project folder, relative to a root data directory.
        csv_file (varchar): label CSV, relative to the project folder (a multi-view project:
            its first view's, every view in ``View``; a DeepLabCut project: ``config.yaml``).
        labels_hash (char): MD5 of the label CSV's bytes at registration (null for rows
            registered before it was recorded; add the column to an older database with
            ``VideoSet.alter()``).
        n_labeled_frames (int): labeled frames in the CSV.
        bodyparts (blob): body-part names, in CSV order.
        video_set_description (varchar): free text.
    """

    definition = f"""
    video_set_id          : {INT32}
    ---
    project_dir           : varchar(1000)  # relative to a root data directory
    csv_file              : varchar(255)   # relative to project_dir
    labels_hash = null    : char(32)       # md5 of the label CSV's bytes
    n_labeled_frames      : {INT32}
    bodyparts             : {BLOB}         # list of body-part names in CSV order
    video_set_description = '' : varchar(1000)
    """

    class File(dj.Part):
        """A file of the project: the label CSV, a labeled image, or a video.

        Attributes:
            file_id (int): index within the project.
            file_path (varchar): relative to the project folder.
            file_type (enum): labels | image | video.
        """

        definition = f"""
        -> master
        file_id   : {INT32}
        ---
        file_path : varchar(1000)  # relative to the project folder
        file_type : enum('labels', 'image', 'video')
        """

    class View(KeyTextChecked, dj.Part):
        """One camera view of a multi-view project (Lightning Pose's layout: one label CSV per
        view, the same frames labeled in each). Single-view projects have no rows here; the
        part table is created beside an older database's tables on activation.

        Attributes:
            view_name (varchar): the view's name (``data.view_names``; in its video file names).
            view_index (int): position of the view in ``data.csv_file``.
            csv_file (varchar): the view's label CSV, relative to the project folder.
            n_labeled_frames (int): labeled frames of the view.
        """

        definition = f"""
        -> master
        view_name        : varchar(64)
        ---
        view_index       : {INT16}
        csv_file         : varchar(255)   # relative to project_dir
        n_labeled_frames : {INT32}
        """

    @classmethod
    def insert_project(
        cls,
        project_dir: str | Path,
        *,
        video_set_id: int | None = None,
        csv_file: str | list[str] = "CollectedData.csv",
        view_names: list[str] | None = None,
        video_dir: str = "videos",
        description: str = "",
    ) -> dict:
        """Validate a labeled project and register it with its files; returns the key.

        Labels must parse, every labeled image must exist and decode, every video must decode.
        Nothing is inserted when any check fails.

        Layouts: a label CSV (Lightning Pose); a list of CSVs with ``view_names`` (Lightning
        Pose's multi-view layout: ``csv_file`` holds the first view's CSV, ``VideoSet.View``
        every view, the videos are those whose name contains a view name); a DeepLabCut
        project (``csv_file="config.yaml"``, its ``labeled-data/<video>/CollectedData_<scorer>``
        files merged). With the default ``csv_file`` and no ``CollectedData.csv``, the layout
        is found on disk (``engine.data.projects.detect_layout``).

        A project registered before is not registered again: when a VideoSet has the same
        project folder (relative to the data roots), the same label CSV, the same label bytes
        (``labels_hash``, over every label file of the layout) and the same videos, its key is
        returned and a message logged. A changed label file or video list makes a new VideoSet
        (the old one keeps describing what earlier models were trained on). Passing a
        ``video_set_id`` other than the existing one's for the same project raises ``ValueError``.
        """
        from element_lightning_pose.engine.data import video
        from element_lightning_pose.engine.data.projects import (
            find_videos,
            read_project_labels,
        )

        roots = root_dirs()
        full_dir = paths.find_full_path(roots, project_dir)
        relative_dir = paths.relative_to_roots(roots, full_dir)
        stored_csv, label_files, views = _project_layout(full_dir, csv_file, view_names)
        video_dir_path = full_dir / video_dir
        videos = find_videos(video_dir_path) if video_dir_path.is_dir() else []
        if views:
            videos = [p for p in videos if any(name in p.name for name, _ in views)]
        video_files = [Path(p).relative_to(full_dir).as_posix() for p in videos]
        labels_hash = _labels_hash(full_dir, label_files)
        existing = cls._same_project(relative_dir, stored_csv, labels_hash, video_files)
        if existing is not None:
            if video_set_id is not None and video_set_id != existing["video_set_id"]:
                raise ValueError(
                    f"VideoSet: project {relative_dir!r} with these labels and videos is already "
                    f"registered as video_set_id {existing['video_set_id']}, not {video_set_id}"
                )
            logger.warning(
                "VideoSet: project %r (labels %s) is already registered as %s; not inserted again",
                relative_dir,
                stored_csv,
                existing,
            )
            return existing
        if views:
            labels = read_project_labels(full_dir, [c for _, c in views], [n for n, _ in views], check_images=True)
        else:
            labels = read_project_labels(full_dir, stored_csv, check_images=True)
        for path in videos:
            video.video_info(path)  # raises VideoError naming the file
        if video_set_id is None:
            video_set_id = max(fetch_column(cls, "video_set_id"), default=0) + 1
        key = {"video_set_id": int(video_set_id)}
        files = [(p, "labels") for p in label_files]
        files += [(p, "image") for p in labels.image_paths]
        files += [(p, "video") for p in video_files]
        n_per_view = len(labels) // len(views) if views else 0
        with cls.connection.transaction:
            cls.insert1(
                {
                    **key,
                    "project_dir": relative_dir,
                    "csv_file": stored_csv,
                    "labels_hash": labels_hash,
                    "n_labeled_frames": len(labels),
                    "bodyparts": list(labels.bodyparts),
                    "video_set_description": description,
                }
            )
            cls.File.insert(
                {**key, "file_id": i, "file_path": path, "file_type": kind} for i, (path, kind) in enumerate(files)
            )
            cls.View.insert(
                {**key, "view_name": name, "view_index": i, "csv_file": csv, "n_labeled_frames": n_per_view}
                for i, (name, csv) in enumerate(views)
            )
        return key

    @classmethod
    def views(cls, key: dict) -> list[tuple[str, str]]:
        """``(view name, label CSV)`` of a multi-view VideoSet, in view order; [] for one view."""
        rows = fetch_dicts(cls.View & key, "view_name", "csv_file", order_by="view_index")
        return [(r["view_name"], r["csv_file"]) for r in rows]

    @classmethod
    def data_config(cls, key: dict) -> dict:
        """The ``data`` parameters that name this VideoSet's labels (``csv_file``, ``view_names``)."""
        views = cls.views(key)
        if views:
            return {"csv_file": [c for _, c in views], "view_names": [n for n, _ in views]}
        return {"csv_file": (cls & key).fetch1("csv_file"), "view_names": []}

    @classmethod
    def read_labels(cls, key: dict, *, check_images: bool = False):
        """The labels of a registered project (every view, every DeepLabCut folder) as
        ``engine.data.labels.LabeledFrames``, image paths relative to the project folder."""
        from element_lightning_pose.engine.data.projects import (
            read_project_labels,
        )

        data = cls.data_config(key)
        return read_project_labels(
            cls.project_path(key), data["csv_file"], data["view_names"] or None, check_images=check_images
        )

    @classmethod
    def _same_project(
        cls, project_dir: str, csv_file: str, labels_hash: str | None, video_files: list[str]
    ) -> dict | None:
        """The key of a VideoSet with this folder, label file, label bytes and videos, if any."""
        if labels_hash is None:
            return None
        candidates = cls & match({"project_dir": project_dir, "csv_file": csv_file, "labels_hash": labels_hash})
        for video_set_id in sorted(fetch_column(candidates, "video_set_id")):
            key = {"video_set_id": int(video_set_id)}
            rows = fetch_dicts(cls.File & key & {"file_type": "video"}, "file_path", order_by="file_id")
            if sorted(r["file_path"] for r in rows) == sorted(video_files):
                return key
        return None

    @classmethod
    def project_path(cls, key: dict) -> Path:
        """Absolute path of a registered project on this machine."""
        return paths.find_full_path(root_dirs(), (cls & key).fetch1("project_dir"))


@schema
class TrainingParamSet(ImmutableParams, dj.Lookup):
    """Validated engine parameters for training (``engine.config.TrainConfig``).

    ``update1`` of ``params`` or ``param_set_hash`` is refused (``params.ParamSetUpdateError``):
    the hash would describe other parameters. Insert a new set instead.

    Attributes:
        paramset_idx (int): unique id.
        paramset_desc (varchar): description.
        param_set_hash (char): hash of the canonical parameters; one row per distinct set.
        params (blob): the full parameter dict, defaults filled in.
    """

    definition = f"""
    paramset_idx   : {INT16}
    ---
    paramset_desc  : varchar(1000)
    param_set_hash : char(32)  # md5 of the canonical params (uuid restrictions fail on 2.x/PostgreSQL)
    params         : {BLOB}
    unique index (param_set_hash)
    """
    params_example = "{'training': {'max_epochs': 10}}"

    @classmethod
    def canonical_params(cls, params: Mapping[str, Any]) -> dict:
        """``params`` checked by ``engine.config.TrainConfig``, defaults filled in."""
        from element_lightning_pose.engine.config import TrainConfig

        return TrainConfig.from_dict(dict(params), source="TrainingParamSet params").to_dict()

    @classmethod
    def insert_new_params(cls, paramset_desc: str, params: dict, paramset_idx: int | None = None) -> int:
        """Validate ``params`` and insert them; returns the id of the new or existing set.

        Unknown keys and bad values raise ``ConfigError`` naming the key. Parameters that only
        differ from an existing set by defaults or key order are the same set. A
        ``paramset_idx`` holding other parameters raises ``params.ParamSetConflictError``
        (:meth:`params.ImmutableParams.insert_canonical`).
        """
        return cls.insert_canonical(paramset_desc, params, paramset_idx)

    @classmethod
    def insert_preset(cls, name: str, video_set: dict | None = None, **options: Any) -> int:
        """Insert a named preset (``presets.PRESETS``: e.g. ``small_animal_crop_zoom``), or
        ``"auto"``: the one the rule picks for ``video_set`` (a VideoSet key); returns its id.

        ``options`` go to :func:`element_lightning_pose.presets.insert_preset` (``frame_size``,
        ``base``, ``paramset_desc``, ``paramset_idx``).
        """
        from element_lightning_pose import presets

        if video_set is not None:
            # the rule reads the VideoSet's labels: its folder, its CSV, its views
            base = dict(options.pop("base", None) or {})
            base["data"] = {**base.get("data", {}), **VideoSet.data_config(video_set)}
            options.update(base=base, project_root=VideoSet.project_path(video_set))
        return presets.insert_preset(cls, name, **options)


@schema
class TrainingTask(dj.Manual):
    """One training run to do: a project, a parameter set and a training id.

    Attributes:
        training_id (int): distinguishes runs with the same project and parameters.
        model_prefix (varchar): prefix of the model directory name.
        seed (int): training seed (weights init, augmentation, batch order).
        model_dir (varchar): output folder, relative to the processed-data root; derived
            when empty.
    """

    definition = f"""
    -> VideoSet
    -> TrainingParamSet
    training_id        : {INT16}
    ---
    model_prefix = ''  : varchar(64)
    seed = 0           : {INT32}
    model_dir = ''     : varchar(1000)  # relative to the processed-data root
    """

    @staticmethod
    def default_model_dir(key: dict, model_prefix: str = "") -> str:
        prefix = f"{model_prefix}_" if model_prefix else ""
        return f"lp_models/{prefix}videoset{key['video_set_id']}_params{key['paramset_idx']}_train{key['training_id']}"


@schema
class ModelTraining(dj.Computed):
    """A trained network. Training runs outside any database transaction (three-part make).

    A worker stopped by SIGTERM or SIGUSR1 (a preempted or timed-out cluster job) inserts nothing and
    leaves an error job (``TrainingInterrupted``), and the run's epochs are kept beside the
    model directory (``<model_dir>.stopped``); once that error is cleared (``elp jobs clear
    --table ModelTraining``), the next ``populate`` of the key goes on from them when the
    parameters are the same.

    Attributes:
        model_dir (varchar): model directory, relative to the processed-data root.
        best_checkpoint (varchar): best checkpoint, relative to model_dir.
        wall_time_s (float64): training wall time.
        n_epochs (int): epochs trained.
        best_val_loss (float64): validation loss of the best checkpoint (null without val frames).
        history (blob): per-epoch training curves {column: array}.
        engine_version (varchar): element-lightning-pose version that trained it.
        trained_at (datetime): end of training (UTC).
    """

    definition = f"""
    -> TrainingTask
    ---
    model_dir        : varchar(1000)
    best_checkpoint  : varchar(255)
    wall_time_s      : {FLOAT64}
    n_epochs         : {INT32}
    best_val_loss = null : {FLOAT64}  # null without validation frames
    history          : {BLOB}
    engine_version   : varchar(32)
    trained_at       : datetime
    """

    def make_fetch(self, key: dict) -> tuple:
        """Paths and parameters only (this runs twice: keep it cheap)."""
        project_dir = (VideoSet & key).fetch1("project_dir")
        params = (TrainingParamSet & key).fetch1("params")
        task = (TrainingTask & key).fetch1()
        labels_config = VideoSet.data_config(key)
        return project_dir, params, task["seed"], task["model_prefix"], task["model_dir"], labels_config

    def make_compute(self, key, project_dir, params, seed, model_prefix, model_dir, labels_config) -> tuple:
        from element_lightning_pose.engine.config import TrainConfig
        from element_lightning_pose.engine.training import train
        from element_lightning_pose.engine.training.advice import differences_from_auto

        source = f"TrainingParamSet {key['paramset_idx']}"
        config = TrainConfig.from_dict(params, source=source)
        config = config.model_copy(update={"training": config.training.model_copy(update={"seed": int(seed)})})
        # the labels are the VideoSet's (its CSV, its views), not the parameter set's file names
        config = config.model_copy(update={"data": config.data.model_copy(update=labels_config)})
        relative_model_dir = model_dir or TrainingTask.default_model_dir(key, model_prefix)
        full_model_dir = inside_root(processed_dir(), relative_model_dir, f"TrainingTask {key}: model_dir")
        project = paths.find_full_path(root_dirs(), project_dir)
        if config.preset != "auto":  # a set written by hand: say where it parts from the rule's pick
            auto, differences = differences_from_auto(config, project)
            if differences:
                logger.warning(
                    "%s differs from what preset auto trains on VideoSet %s (%s): %s",
                    source,
                    key["video_set_id"],
                    auto.config.preset,
                    "; ".join(differences),
                )
        # a ModelTraining row is one network: the engine refuses multiview=per_view on a multi-view set.
        # A run of this key stopped by a signal (a preempted worker) was kept: go on from it.
        result = train(
            config, project, full_model_dir, one_network=True, source=source, progress=False, resume_stopped=True
        )
        history = {str(col): result.history[col].to_numpy() for col in result.history.columns}
        return (
            relative_model_dir,
            Path(result.best_checkpoint).relative_to(full_model_dir).as_posix(),
            float(result.wall_time_s),
            int(result.epochs),
            _finite_or_none(result.best_val_loss),
            history,
        )

    def make_insert(self, key, model_dir, best_checkpoint, wall_time_s, n_epochs, best_val_loss, history):
        from element_lightning_pose.version import __version__

        self.insert1(
            {
                **key,
                "model_dir": model_dir,
                "best_checkpoint": best_checkpoint,
                "wall_time_s": wall_time_s,
                "n_epochs": n_epochs,
                "best_val_loss": best_val_loss,
                "history": history,
                "engine_version": __version__,
                "trained_at": datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0),
            }
        )
