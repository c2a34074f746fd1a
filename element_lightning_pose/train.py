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
import importlib
import inspect
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import datajoint as dj

from . import paths
from .dj_compat import BLOB, FLOAT64, INT16, INT32, fetch_column, fetch_dicts
from .params import ImmutableParams

logger = logging.getLogger(__name__)

schema = dj.Schema()
_linking_module: ModuleType | None = None

REQUIRED_FUNCTIONS = ("get_lp_root_data_dir",)


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
    global _linking_module
    _linking_module = check_linking_module(linking_module, REQUIRED_FUNCTIONS, "train")
    schema.activate(
        train_schema_name,
        create_schema=create_schema,
        create_tables=create_tables,
        add_objects=_linking_module.__dict__,
    )


def check_linking_module(linking_module, required: tuple[str, ...], schema_label: str) -> ModuleType:
    """Import the linking module and check that it provides everything ``required``."""
    if isinstance(linking_module, str):
        linking_module = importlib.import_module(linking_module)
    if not inspect.ismodule(linking_module):
        raise TypeError(
            f"{schema_label}.activate(): linking_module must be a module or a module name, "
            f"not {type(linking_module).__name__}"
        )
    missing = [name for name in required if not hasattr(linking_module, name)]
    if missing:
        raise AttributeError(
            f"{schema_label}.activate(): the linking module {linking_module.__name__!r} lacks "
            f"{', '.join(missing)} (required: {', '.join(required)})"
        )
    return linking_module


def linking_module() -> ModuleType:
    if _linking_module is None:
        raise RuntimeError("train schema is not activated: call train.activate(...) first")
    return _linking_module


def root_dirs() -> list[Path]:
    return paths.root_dirs(linking_module())


def processed_dir() -> Path:
    return paths.processed_dir(linking_module())


def _finite_or_none(value) -> float | None:
    """Databases store no NaN: a missing number is NULL."""
    import math

    return float(value) if value is not None and math.isfinite(float(value)) else None


def params_hash(params: dict) -> str:
    """MD5 hex digest of the canonical JSON of ``params`` (key order does not matter)."""
    canonical = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.md5(canonical.encode()).hexdigest()


def file_md5(path: Path) -> str:
    """MD5 hex digest of a file's bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- tables


@schema
class VideoSet(dj.Manual):
    """A labeled project: the label CSV, its images, and videos that give unlabeled frames.

    Attributes:
        video_set_id (int): unique id of the project.
        project_dir (varchar): project folder, relative to a root data directory.
        csv_file (varchar): label CSV, relative to the project folder.
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

    @classmethod
    def insert_project(
        cls,
        project_dir: str | Path,
        *,
        video_set_id: int | None = None,
        csv_file: str = "CollectedData.csv",
        video_dir: str = "videos",
        description: str = "",
    ) -> dict:
        """Validate a labeled project and register it with its files; returns the key.

        Labels must parse, every labeled image must exist and decode, every video must decode.
        Nothing is inserted when any check fails.

        A project registered before is not registered again: when a VideoSet has the same
        project folder (relative to the data roots), the same label CSV, the same label bytes
        (``labels_hash``) and the same videos, its key is returned and a message logged. A
        changed label file or video list makes a new VideoSet (the old one keeps describing
        what earlier models were trained on). Passing a ``video_set_id`` other than the
        existing one's for the same project raises ``ValueError``.
        """
        from .engine import io, video

        roots = root_dirs()
        full_dir = paths.find_full_path(roots, project_dir)
        relative_dir = paths.relative_to_roots(roots, full_dir)
        video_dir_path = full_dir / video_dir
        videos = io.find_videos(video_dir_path) if video_dir_path.is_dir() else []
        video_files = [Path(p).relative_to(full_dir).as_posix() for p in videos]
        labels_hash = file_md5(full_dir / csv_file) if (full_dir / csv_file).is_file() else None
        existing = cls._same_project(relative_dir, csv_file, labels_hash, video_files)
        if existing is not None:
            if video_set_id is not None and video_set_id != existing["video_set_id"]:
                raise ValueError(
                    f"VideoSet: project {relative_dir!r} with these labels and videos is already "
                    f"registered as video_set_id {existing['video_set_id']}, not {video_set_id}"
                )
            logger.warning(
                "VideoSet: project %r (labels %s) is already registered as %s; not inserted again",
                relative_dir,
                csv_file,
                existing,
            )
            return existing
        labels = io.read_labels(full_dir / csv_file, full_dir, check_images=True)
        for path in videos:
            video.video_info(path)  # raises VideoError naming the file
        if video_set_id is None:
            video_set_id = max(fetch_column(cls, "video_set_id"), default=0) + 1
        key = {"video_set_id": int(video_set_id)}
        files = [(csv_file, "labels")]
        files += [(p, "image") for p in labels.image_paths]
        files += [(p, "video") for p in video_files]
        with cls.connection.transaction:
            cls.insert1(
                {
                    **key,
                    "project_dir": relative_dir,
                    "csv_file": csv_file,
                    "labels_hash": labels_hash,
                    "n_labeled_frames": len(labels),
                    "bodyparts": list(labels.bodyparts),
                    "video_set_description": description,
                }
            )
            cls.File.insert(
                {**key, "file_id": i, "file_path": path, "file_type": kind} for i, (path, kind) in enumerate(files)
            )
        return key

    @classmethod
    def _same_project(
        cls, project_dir: str, csv_file: str, labels_hash: str | None, video_files: list[str]
    ) -> dict | None:
        """The key of a VideoSet with this folder, label file, label bytes and videos, if any."""
        if labels_hash is None:
            return None
        candidates = cls & {"project_dir": project_dir, "csv_file": csv_file, "labels_hash": labels_hash}
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

    @classmethod
    def insert_new_params(cls, paramset_desc: str, params: dict, paramset_idx: int | None = None) -> int:
        """Validate ``params`` and insert them; returns the id of the new or existing set.

        Unknown keys and bad values raise ``ConfigError`` naming the key. Parameters that only
        differ from an existing set by defaults or key order are the same set.
        """
        from .engine.config import TrainConfig

        canonical = TrainConfig.from_dict(params, source="TrainingParamSet params").to_dict()
        digest = params_hash(canonical)
        existing = cls & {"param_set_hash": digest}
        if existing:
            return int(existing.fetch1("paramset_idx"))
        if paramset_idx is None:
            paramset_idx = max(fetch_column(cls, "paramset_idx"), default=0) + 1
        elif cls & {"paramset_idx": paramset_idx}:
            raise ValueError(f"paramset_idx {paramset_idx} already holds different parameters")
        cls.insert1(
            {
                "paramset_idx": paramset_idx,
                "paramset_desc": paramset_desc,
                "param_set_hash": digest,
                "params": canonical,
            }
        )
        return int(paramset_idx)


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
        return project_dir, params, task["seed"], task["model_prefix"], task["model_dir"]

    def make_compute(self, key, project_dir, params, seed, model_prefix, model_dir) -> tuple:
        from .engine.config import TrainConfig
        from .engine.train import train

        config = TrainConfig.from_dict(params, source=f"TrainingParamSet {key['paramset_idx']}")
        config = config.model_copy(update={"training": config.training.model_copy(update={"seed": int(seed)})})
        relative_model_dir = model_dir or TrainingTask.default_model_dir(key, model_prefix)
        full_model_dir = processed_dir() / relative_model_dir
        project = paths.find_full_path(root_dirs(), project_dir)
        result = train(config, project, full_model_dir, progress=False)
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
        from .version import __version__

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
