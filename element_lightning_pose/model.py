"""DataJoint schema for trained models, their evaluation, and pose estimation on recordings.

Tables
------
VideoRecording (+ File)   behaviour videos of a session, taken by a camera (``Device``)
RecordingInfo             frames, fps, size, duration and codec read from the files
BodyPart                  body-part names known to the pipeline
Model (+ BodyPart)        a trained model directory (from ``train.ModelTraining`` or elsewhere)
ModelEvaluation (+ BodyPart)  pixel errors on the labeled frames per split
PoseEstimationTask        which model to run on which recording, and how
PoseEstimation (+ BodyPartPosition)  x, y, likelihood per frame and body part

Upstream tables come from the linking module given to ``activate()``: ``Session``, ``Device``
and ``get_lp_root_data_dir()`` (plus optionally ``get_lp_processed_data_dir()``).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import datajoint as dj
import numpy as np

from element_lightning_pose import paths, train
from element_lightning_pose.dj_compat import (
    BLOB,
    FLOAT64,
    INT16,
    INT32,
    KeyTextChecked,
    fetch_column,
    fetch_dicts,
    fetch_keys,
    match,
)
from element_lightning_pose.engine.config import SPLITS
from element_lightning_pose.engine.safe_paths import inside_root

schema = dj.Schema()
logger = logging.getLogger(__name__)
REQUIRED = ("Session", "Device", "get_lp_root_data_dir")
_LINK = paths.LinkedSchema("model", REQUIRED)
_linking_module: ModuleType | None = None  # the same module as _LINK's (export.dj_nwb reads it)


def activate(
    model_schema_name: str,
    *,
    train_schema_name: str | None = None,
    create_schema: bool = True,
    create_tables: bool = True,
    linking_module: str | ModuleType | None = None,
) -> None:
    """Activate this schema (and the train schema it references).

    Args:
        model_schema_name: schema name on the database server.
        train_schema_name: name of the train schema; activated here when given.
        create_schema: create the schema on the server if it does not exist yet.
        create_tables: create the tables if they do not exist yet.
        linking_module: a module (or its name) providing ``Session``, ``Device``,
            ``get_lp_root_data_dir()`` and optionally ``get_lp_processed_data_dir()``.
    """
    global _linking_module
    module = _LINK.check(linking_module)
    if train_schema_name:
        train.activate(
            train_schema_name, create_schema=create_schema, create_tables=create_tables, linking_module=module
        )
    elif not train.schema.is_activated():
        raise RuntimeError("model.activate(): activate the train schema first or pass train_schema_name")
    _linking_module = _LINK.activate(
        schema, model_schema_name, module, create_schema=create_schema, create_tables=create_tables
    )


root_dirs = _LINK.root_dirs
processed_dir = _LINK.processed_dir


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


# --------------------------------------------------------------------------- recordings


@schema
class VideoRecording(KeyTextChecked, dj.Manual):
    """Behaviour video of a session taken by one camera; one or more consecutive files.

    Attributes:
        recording_id (int): unique within the session.
        Device (foreign key): the camera.
    """

    definition = f"""
    -> Session
    recording_id : {INT32}
    ---
    -> Device
    """

    class File(dj.Part):
        """A video file of the recording, in playback order.

        Attributes:
            file_id (int): order of the file within the recording.
            file_path (varchar): relative to a root data directory.
        """

        definition = f"""
        -> master
        file_id   : {INT16}
        ---
        file_path : varchar(1000)  # relative to a root data directory
        """

    @classmethod
    def file_paths(cls, key: dict) -> list[Path]:
        """Absolute paths of the recording's files on this machine, in order."""
        rows = fetch_dicts(cls.File & match(key), "file_path", order_by="file_id")
        if not rows:
            raise FileNotFoundError(f"VideoRecording {key} has no File rows")
        return [paths.find_full_path(root_dirs(), row["file_path"]) for row in rows]


@schema
class RecordingInfo(dj.Imported):
    """Metadata read from the video files themselves.

    Attributes:
        n_frames (int): frames over all files.
        fps (float64): frames per second (exact float, e.g. 29.97).
        width, height (int): frame size in pixels.
        duration_s (float64): n_frames / fps.
        codec (varchar): FourCC of the first file.
    """

    definition = f"""
    -> VideoRecording
    ---
    n_frames   : {INT32}
    fps        : {FLOAT64}
    width      : {INT32}
    height     : {INT32}
    duration_s : {FLOAT64}
    codec      : varchar(16)
    """

    def make(self, key: dict) -> None:
        from element_lightning_pose.engine.data.video import VideoError, video_info

        infos = [video_info(path) for path in VideoRecording.file_paths(key)]
        first = infos[0]
        for info in infos[1:]:
            if (info.width, info.height) != (first.width, first.height) or abs(info.fps - first.fps) > 1e-6:
                raise VideoError(
                    f"{info.path}: {info.width}x{info.height} at {info.fps} fps differs from "
                    f"{first.path} ({first.width}x{first.height} at {first.fps} fps) in the same recording"
                )
        n_frames = sum(info.n_frames for info in infos)
        self.insert1(
            {
                **key,
                "n_frames": n_frames,
                "fps": float(first.fps),
                "width": first.width,
                "height": first.height,
                "duration_s": n_frames / first.fps,
                "codec": first.codec[:16],
            }
        )


# --------------------------------------------------------------------------- models


@schema
class BodyPart(KeyTextChecked, dj.Lookup):
    """Body-part names known to the pipeline.

    Attributes:
        body_part (varchar): name, as in the label CSV.
        body_part_description (varchar): free text.
    """

    definition = """
    body_part                       : varchar(64)
    ---
    body_part_description = ''      : varchar(1000)
    """

    @classmethod
    def extend(cls, names: list[str]) -> None:
        """Insert the names not yet known."""
        known = set(fetch_column(cls, "body_part"))
        cls.insert({"body_part": n} for n in names if n not in known)


@schema
class Model(KeyTextChecked, dj.Manual):
    """A trained model directory, trained by ``train.ModelTraining`` or elsewhere.

    Attributes:
        model_name (varchar): unique name.
        model_dir (varchar): relative to a root data directory or the processed-data root.
        best_checkpoint (varchar): relative to model_dir.
        backbone, model_type (varchar): network description.
        resize_height, resize_width (int): network input size.
        config (blob): the engine configuration it was trained with.
        engine_version (varchar): version that trained it.
        ModelTraining (nullable foreign key): the training run, when trained by this pipeline.
    """

    definition = f"""
    model_name              : varchar(64)
    ---
    model_dir               : varchar(1000)
    best_checkpoint         : varchar(255)
    backbone                : varchar(32)
    model_type              : varchar(32)
    resize_height           : {INT32}
    resize_width            : {INT32}
    config                  : {BLOB}
    engine_version          : varchar(32)
    model_description = ''  : varchar(1000)
    -> [nullable] train.ModelTraining
    """

    class BodyPart(dj.Part):
        """The body parts a model predicts, in its output order.

        Attributes:
            body_part_index (int): position in the model output.
        """

        definition = f"""
        -> master
        -> BodyPart
        ---
        body_part_index : {INT16}
        """

    @classmethod
    def insert_new_model(
        cls,
        model_name: str,
        model_dir: str | Path,
        *,
        model_description: str = "",
        training_key: dict | None = None,
    ) -> dict:
        """Register a model directory (absolute or relative to a root); returns the key.

        The directory must hold ``model.json``, ``config.yaml`` and the checkpoint.
        """
        from element_lightning_pose.engine.model_dir import read_model_info

        full_dir = _find_model_dir(model_dir)
        info = read_model_info(full_dir)  # raises naming the missing file
        config = info.config
        relative_dir = _relative_model_dir(full_dir)
        row = {
            "model_name": model_name,
            "model_dir": relative_dir,
            "best_checkpoint": Path(info.checkpoint).relative_to(full_dir).as_posix(),
            "backbone": config["model"]["backbone"],
            "model_type": config["model"]["model_type"],
            "resize_height": int(config["data"]["image_resize"][0]),
            "resize_width": int(config["data"]["image_resize"][1]),
            "config": config,
            "engine_version": str(info.engine_version),
            "model_description": model_description,
        }
        if training_key:
            row.update({k: training_key[k] for k in train.ModelTraining.primary_key})
        bodyparts = list(info.bodyparts)
        with cls.connection.transaction:
            BodyPart.extend(bodyparts)
            cls.insert1(row)
            cls.BodyPart.insert(
                {"model_name": model_name, "body_part": bp, "body_part_index": i} for i, bp in enumerate(bodyparts)
            )
        return {"model_name": model_name}

    @classmethod
    def insert_from_training(cls, training_key: dict, model_name: str | None = None, **kwargs) -> dict:
        """Register the model that ``train.ModelTraining`` produced for ``training_key``."""
        row = (train.ModelTraining & training_key).fetch1()
        if model_name is None:
            model_name = Path(row["model_dir"]).name[:64]
        full_dir = processed_dir() / row["model_dir"]
        return cls.insert_new_model(model_name, full_dir, training_key=row, **kwargs)

    @classmethod
    def model_path(cls, key: dict) -> Path:
        return _find_model_dir((cls & match(key)).fetch1("model_dir"))

    @classmethod
    def bodyparts(cls, key: dict) -> list[str]:
        return [r["body_part"] for r in fetch_dicts(cls.BodyPart & match(key), "body_part", order_by="body_part_index")]


def _find_model_dir(model_dir: str | Path) -> Path:
    model_dir = Path(model_dir)
    if model_dir.is_absolute():
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model directory {model_dir} does not exist")
        return model_dir
    return paths.find_full_path([processed_dir(), *root_dirs()], model_dir)


def _relative_model_dir(full_dir: Path) -> str:
    return paths.relative_to_roots([processed_dir(), *root_dirs()], full_dir)


@schema
class ModelEvaluation(dj.Computed):
    """Pixel errors of a model on the labeled frames of the project it was trained on.

    Attributes:
        n_train, n_val, n_test (int): labeled frames in each split.
        train_mean_px ... test_p90_px (float64): error summaries over body parts and frames
            (null for an empty split).
    """

    _stats = [f"{split}_{stat}_px" for split in SPLITS for stat in ("mean", "median", "p90")]
    definition = f"""
    -> Model
    ---
    n_train : {INT32}
    n_val   : {INT32}
    n_test  : {INT32}
    """ + "".join(f"    {name} = null : {FLOAT64}\n" for name in _stats)

    class BodyPart(dj.Part):
        """Errors of one body part in one split.

        Attributes:
            split (enum): train | val | test.
            n_frames (int): labeled frames of this body part in the split.
            mean_px, median_px, p90_px (float64): error summaries (null when none labeled).
        """

        definition = f"""
        -> master
        -> Model.BodyPart
        split        : enum('train', 'val', 'test')
        ---
        n_frames     : {INT32}
        mean_px = null   : {FLOAT64}
        median_px = null : {FLOAT64}
        p90_px = null    : {FLOAT64}
        """

    @property
    def key_source(self):
        # Evaluation needs the labeled project: models trained by this pipeline.
        return Model & "video_set_id is not null"

    def make_fetch(self, key: dict) -> tuple:
        model_dir, video_set_id = (Model & key).fetch1("model_dir", "video_set_id")
        video_set = {"video_set_id": video_set_id}
        project_dir = (train.VideoSet & video_set).fetch1("project_dir")
        return model_dir, project_dir, train.VideoSet.data_config(video_set)

    def make_compute(self, key, model_dir, project_dir, labels_config) -> tuple:
        from element_lightning_pose.engine.data.projects import read_project_labels
        from element_lightning_pose.engine.inference.evaluate import evaluate

        project = paths.find_full_path(root_dirs(), project_dir)
        # every view of a multi-view project, every folder of a DeepLabCut one
        labels = read_project_labels(
            project, labels_config["csv_file"], labels_config["view_names"] or None, check_images=False
        )
        errors = evaluate(_find_model_dir(model_dir), labels)
        return (errors,)

    def make_insert(self, key, errors) -> None:
        master = dict(key)
        parts = []
        for split in SPLITS:
            in_split = errors[errors["split"] == split]
            master[f"n_{split}"] = int(in_split["image"].nunique())
            values = in_split["error_px"].dropna().to_numpy()
            for stat, value in _summaries(values).items():
                master[f"{split}_{stat}_px"] = value
            for bodypart, group in in_split.groupby("bodypart"):
                part_values = group["error_px"].dropna().to_numpy()
                parts.append(
                    {
                        **key,
                        "body_part": bodypart,
                        "split": split,
                        "n_frames": int(len(part_values)),
                        **{f"{stat}_px": v for stat, v in _summaries(part_values).items()},
                    }
                )
        self.insert1(master)
        self.BodyPart.insert(parts)


def _summaries(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"mean": None, "median": None, "p90": None}
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
    }


# --------------------------------------------------------------------------- pose estimation


# the values PoseEstimationTask.precision takes; kept as declared since the attribute came in (a
# table's enum is fixed when it is declared): 'auto' reaches the precisions added since
TASK_PRECISIONS = ("fp32", "bf16", "int8", "auto")


@schema
class PoseEstimationTask(dj.Manual):
    """Which model to run on which recording, and how.

    Attributes:
        task_mode (enum): 'trigger' runs inference; 'load' reads ``predictions.csv`` from
            output_dir (or its only CSV; hidden files ignored, several CSVs an error).
        output_dir (varchar): relative to the processed-data root; derived when empty.
        batch_size (int): frames per network batch.
        precision (enum): the network's arithmetic, as ``elp predict --precision``: 'fp32'; 'bf16'
            or 'int8' where the machine has them and they pass the accuracy gate against fp32 on
            the model's labeled frames (else fp32, logged); 'auto' the fastest that passes
            (``engine.inference.precision``), OpenVINO's ov-fp32 and ov-bf16 included where it is
            installed. Tables declared before this attribute run fp32.
    """

    definition = f"""
    -> VideoRecording
    -> Model
    ---
    task_mode = 'trigger' : enum('load', 'trigger')
    output_dir = ''       : varchar(1000)  # relative to the processed-data root
    batch_size = 16       : {INT16}
    precision = 'fp32'    : enum({", ".join(repr(p) for p in TASK_PRECISIONS)})  # network arithmetic (elp predict --precision)
    """

    @staticmethod
    def default_output_dir(key: dict) -> str:
        """``lp_predictions/<session>/recording<id>/<model>`` (``paths.key_folder_name``: one
        folder per key; values as fetched from the database, a datetime as a datetime)."""
        session = paths.key_folder_name(key, [k for k in key if k not in ("recording_id", "model_name")])
        model_folder = paths.key_folder_name(key, ["model_name"])
        return f"lp_predictions/{session}/recording{key['recording_id']}/{model_folder}"

    @classmethod
    def generate(
        cls,
        recording_key: dict,
        model_name: str,
        *,
        task_mode: str = "trigger",
        batch_size: int = 16,
        precision: str = "fp32",
    ) -> dict:
        """Insert a task for a recording and a model with the default output folder."""
        from element_lightning_pose.engine.inference.precision import check_name

        check_name(precision, "PoseEstimationTask.generate: precision")
        allowed = TASK_PRECISIONS if "precision" in cls.heading.names else ("fp32",)
        if precision not in allowed:
            hint = (
                "'auto' runs OpenVINO's ov-fp32 / ov-bf16 where OpenVINO is installed and they are the fastest "
                "that pass the gate"
                if "auto" in allowed
                else "it was declared before the precision attribute, so its tasks run fp32"
            )
            raise ValueError(
                f"PoseEstimationTask.generate: precision {precision!r}: this table takes {', '.join(allowed)}; {hint}"
            )
        recording = {k: recording_key[k] for k in VideoRecording.primary_key}
        # the database's values (a datetime as a datetime) spell the folder as populate() will
        found = fetch_keys(VideoRecording & match(recording))
        if len(found) != 1:
            raise ValueError(f"PoseEstimationTask.generate: no VideoRecording {recording}")
        key = {**found[0], "model_name": model_name}
        row = {**key, "task_mode": task_mode, "output_dir": cls.default_output_dir(key), "batch_size": batch_size}
        if precision != "fp32" or "precision" in cls.heading.names:  # a table declared before the attribute
            row["precision"] = precision
        cls.insert1(row, skip_duplicates=True)
        return key


@schema
class PoseEstimation(dj.Computed):
    """Keypoints predicted by a model on a recording. Inference runs outside any transaction.

    Attributes:
        predictions_file (varchar): the LP/DLC predictions CSV, relative to the processed root.
        n_frames (int): predicted frames.
        inference_time_s (float64): wall time of inference (0 when loaded).
        frames_per_s (float64): inference speed (null when loaded).
        pose_estimation_time (datetime): when it was done (UTC).
        precision_used (varchar): the arithmetic the network ran in (fp32, bf16, int8, ov-fp32,
            ov-bf16; null when loaded). Not named ``precision``: joined with its task, a shared
            name would be a join condition ('auto' never equals what ran).
    """

    definition = f"""
    -> PoseEstimationTask
    ---
    predictions_file      : varchar(1000)
    n_frames              : {INT32}
    inference_time_s      : {FLOAT64}
    frames_per_s = null   : {FLOAT64}
    pose_estimation_time  : datetime
    precision_used = null : varchar(8)  # arithmetic used: fp32, bf16, int8, ov-fp32, ov-bf16 (null when loaded)
    """

    class BodyPartPosition(dj.Part):
        """Trajectory of one body part, in original-frame pixels.

        Attributes:
            x_pos, y_pos (blob): (n_frames,) coordinates.
            likelihood (blob): (n_frames,) confidence in [0, 1].
        """

        definition = f"""
        -> master
        -> Model.BodyPart
        ---
        x_pos      : {BLOB}
        y_pos      : {BLOB}
        likelihood : {BLOB}
        """

    def make_fetch(self, key: dict) -> tuple:
        task = (PoseEstimationTask & key).fetch1()
        files = [r["file_path"] for r in fetch_dicts(VideoRecording.File & key, "file_path", order_by="file_id")]
        model_dir = (Model & key).fetch1("model_dir")
        n_frames = (RecordingInfo & key).fetch1("n_frames") if RecordingInfo & key else None
        bodyparts = Model.bodyparts(key)
        precision = task.get("precision", "fp32")  # absent from tables declared before the attribute
        project = None
        if precision != "fp32":  # the labeled project the accuracy gate checks on, when this pipeline trained it
            video_set_id = (Model & key).fetch1("video_set_id")
            if video_set_id is not None:
                project = (train.VideoSet & {"video_set_id": video_set_id}).fetch1("project_dir")
        run = (task["task_mode"], task["output_dir"], int(task["batch_size"]), precision, project)
        return run, files, model_dir, n_frames, bodyparts

    def make_compute(self, key, run, files, model_dir, n_frames, expected) -> tuple:
        from element_lightning_pose.engine.data.keypoints import read_predictions, write_predictions

        task_mode, output_dir, batch_size, precision, project = run
        output_dir = output_dir or PoseEstimationTask.default_output_dir(key)
        out_dir = inside_root(processed_dir(), output_dir, f"PoseEstimationTask {key}: output_dir")
        start = time.perf_counter()
        if task_mode == "load":
            source = _find_predictions(out_dir)
            predictions, bodyparts = read_predictions(source)
            elapsed, fps, used = 0.0, None, None
        else:
            from element_lightning_pose.engine.inference.models import load_model
            from element_lightning_pose.engine.inference.precision import select_precision
            from element_lightning_pose.engine.inference.predict import predict_videos

            source = out_dir / "predictions.csv"
            model = load_model(_find_model_dir(model_dir))
            project_dir = paths.find_full_path(root_dirs(), project) if project else None
            model, choice = select_precision(
                model, precision, project=project_dir, batch_size=batch_size, report=logger.info
            )
            used = choice.used
            videos = [paths.find_full_path(root_dirs(), f) for f in files]
            # the next file decodes while the network works on this one; a video that decodes
            # short raises (video.ShortVideoError) before anything is written
            results = predict_videos(model, videos, [None] * len(videos), batch_size=batch_size, progress=False)
            predictions = np.concatenate([result.predictions for result in results], axis=0)
            bodyparts = list(model.bodyparts)
            elapsed = time.perf_counter() - start
            fps = len(predictions) / elapsed if elapsed > 0 else None
        # checked before the CSV is written: a refused result leaves no file behind
        if list(bodyparts) != list(expected):
            raise ValueError(
                f"predictions for {key} have body parts {list(bodyparts)} but model "
                f"{key['model_name']!r} has {list(expected)}"
            )
        if n_frames is not None and len(predictions) != n_frames:
            raise ValueError(f"{source}: {len(predictions)} predicted frames but the recording has {n_frames}")
        if task_mode != "load":
            write_predictions(source, predictions, bodyparts, scorer=key["model_name"])
        predictions_file = paths.relative_to_roots([processed_dir()], source)
        return predictions_file, predictions, bodyparts, elapsed, fps, used

    def make_insert(self, key, predictions_file, predictions, bodyparts, elapsed, fps, used) -> None:
        row = {
            **key,
            "predictions_file": predictions_file,
            "n_frames": int(len(predictions)),
            "inference_time_s": float(elapsed),
            "frames_per_s": fps,
            "pose_estimation_time": _utcnow(),
        }
        if "precision_used" in self.heading.names:  # a table declared before the attribute has no column for it
            row["precision_used"] = used
        self.insert1(row)
        self.BodyPartPosition.insert(
            {
                **key,
                "body_part": bp,
                "x_pos": predictions[:, i, 0].astype(np.float64),
                "y_pos": predictions[:, i, 1].astype(np.float64),
                "likelihood": predictions[:, i, 2].astype(np.float64),
            }
            for i, bp in enumerate(bodyparts)
        )

    @classmethod
    def get_trajectory(cls, key: dict, body_parts: list[str] | str = "all"):
        """The pose of one recording and model as a DataFrame in the LP/DLC layout.

        Columns are (scorer = model name, bodyparts, coords = x, y, likelihood); the index is
        the frame number.
        """
        from element_lightning_pose.engine.data.keypoints import keypoint_frame

        keys = fetch_keys(cls & match(key))
        if len(keys) != 1:
            raise ValueError(f"get_trajectory: {len(keys)} pose estimations match {key}; restrict to one")
        key = keys[0]
        order = Model.bodyparts(key)
        wanted = order if body_parts == "all" else [bp for bp in order if bp in body_parts]
        rows = {r["body_part"]: r for r in fetch_dicts(cls.BodyPartPosition & key)}
        values = np.stack(
            [np.stack([rows[bp]["x_pos"], rows[bp]["y_pos"], rows[bp]["likelihood"]], axis=-1) for bp in wanted],
            axis=1,
        )
        return keypoint_frame(values, wanted, ("x", "y", "likelihood"), key["model_name"])


def _find_predictions(out_dir: Path) -> Path:
    """The predictions CSV a 'load' task reads: ``predictions.csv``, else the folder's only CSV.

    Hidden files (a writer's temporaries) are ignored; several candidates are an error rather
    than a guess.
    """
    named = out_dir / "predictions.csv"
    if named.is_file():
        return named
    csvs = (
        sorted(p for p in out_dir.glob("*.csv") if not p.name.startswith(".") and p.is_file())
        if out_dir.is_dir()
        else []
    )
    if not csvs:
        raise FileNotFoundError(f"task_mode 'load': no predictions.csv in {out_dir}")
    if len(csvs) > 1:
        raise FileNotFoundError(
            f"task_mode 'load': {out_dir} has no predictions.csv and {len(csvs)} other CSVs "
            f"({', '.join(p.name for p in csvs)}); name the one to load predictions.csv"
        )
    return csvs[0]
