"""The model directory: its description (``model.json``) written and read in one place.

The training engine writes (see ``engine.training.single``): ``config.yaml`` (the full TrainConfig),
``model.json`` (body parts, frame size, resize, backbone, versions, split sizes) and
``checkpoints/best.ckpt``. :func:`write_model_info` is the only writer of ``model.json``,
:func:`read_model_info` its only reader, and :class:`ModelDirectoryError` the one error for a
model directory that breaks the contract. Registering a model in a database needs only the
description and the checkpoint's existence, so this stays cheap (no torch import).

Three kinds of model directory, each with one constructor of its ``model.json`` here
(:attr:`ModelInfo.kind` tells them apart):

``single_stage``
    one network (:mod:`element_lightning_pose.engine.training.single`): :class:`ModelInfo` itself;
``crop_zoom``
    two stages, ``detector/`` and ``pose/``, each a complete single-stage model directory
    (:mod:`element_lightning_pose.engine.training.crop_zoom`); its ``best_checkpoint`` is the pose
    stage's and :meth:`ModelInfo.stage_dirs` finds them: :meth:`ModelInfo.of_crop_zoom`;
``per_view``
    one network per view of a multi-view project, ``<view>/`` each a model directory of its
    own (:mod:`element_lightning_pose.engine.training.per_view`); it is loaded view by view:
    :meth:`ModelInfo.of_per_view`.

Training replaces a model directory whole; :func:`check_replaceable` is the one rule that
refuses to replace a folder that is not one.

Inference adds what it checked once per model (``engine.inference.precision``):
``precision.json`` (the accuracy gate's results of the fast paths against fp32, per kind of
processor, tied to the checkpoint's SHA-256) and ``precision/`` (the int8 weights calibrated on
the project's frames, and the backbones OpenVINO converted). :func:`read_precision_checks`,
:func:`write_precision_checks`, :func:`quantised_weights_path` and :func:`write_quantised_weights`
are their reader and writers; a new training run replaces them with the rest of the directory.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from element_lightning_pose.engine.atomic import write_bytes_atomic, write_text_atomic
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.safe_paths import UnsafePathError, check_path_part
from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.version import __version__

MODEL_JSON = "model.json"
CONFIG_YAML = "config.yaml"
BEST_CHECKPOINT = "checkpoints/best.ckpt"
SINGLE_STAGE = "single_stage"
CROP_ZOOM = "crop_zoom"
PER_VIEW = "per_view"
KINDS = (SINGLE_STAGE, CROP_ZOOM, PER_VIEW)
# what only a model directory holds: a folder with none of them is not replaced by training
MODEL_DIR_MARKERS = (CONFIG_YAML, MODEL_JSON, "splits.csv", "checkpoints")
PRECISION_JSON = "precision.json"
QUANTISED_DIR = "precision"

# A crop-zoom model's stages (sub-directories) and the one keypoint of a detector of the animal's centre
CROP_ZOOM_STAGES = ("detector", "pose")
DETECTOR_CENTRE = "centre"
DETECTOR_TARGETS = ("centre", "keypoints")  # crop_zoom.detector_target: one centre, or every body part

# Fields read from model.json / config.yaml, not stored in model.json itself.
_CONTEXT_FIELDS = ("extra", "model_dir", "config", "checkpoint")


class ModelDirectoryError(ElpError, FileNotFoundError):
    """A model directory lacks a file of the contract, or holds one that does not parse."""


@dataclass
class ModelInfo:
    """What ``model.json`` says about a trained model (field order = file order).

    Only ``bodyparts`` is required; keys this version does not know are kept in ``extra`` and
    written back. :func:`read_model_info` also fills ``model_dir``, ``config`` (config.yaml as
    a dict) and ``checkpoint`` (absolute path), which are not part of ``model.json``.
    """

    bodyparts: list[str]
    frame_size: list[int] | None = None
    image_resize: list[int] | None = None
    backbone: str | None = None
    model_type: str | None = None
    preset: str | None = None  # the preset its parameters were resolved from (config.yaml's preset)
    engine_version: str = "unknown"
    torch_version: str | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    epochs: int | None = None
    steps: int | None = None
    wall_time_s: float | None = None
    best_val_loss: float | None = None
    best_checkpoint: str = BEST_CHECKPOINT
    unsupervised_losses: list[str] = field(default_factory=list)
    pca: dict[str, Any] = field(default_factory=dict)
    unlabeled_frames_cached: int = 0
    project_root: str | None = None  # the labeled project it was trained on (absolute, as given then)
    extra: dict[str, Any] = field(default_factory=dict)
    model_dir: Path | None = field(default=None, compare=False)
    config: dict[str, Any] | None = field(default=None, compare=False)
    checkpoint: Path | None = field(default=None, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = MODEL_JSON) -> ModelInfo:
        """Build from ``model.json``'s content; ``source`` names the file in errors."""
        if not isinstance(data, dict):
            raise ModelDirectoryError(f"{source}: expected a JSON object, got {type(data).__name__}")
        bodyparts = data.get("bodyparts")
        if bodyparts is None:
            raise ModelDirectoryError(f"{source}: lacks 'bodyparts'")
        if not isinstance(bodyparts, list) or not bodyparts or not all(isinstance(b, str) for b in bodyparts):
            raise ModelDirectoryError(f"{source}: 'bodyparts' must be a non-empty list of names, got {bodyparts!r}")
        stored = [f.name for f in dataclasses.fields(cls) if f.name not in _CONTEXT_FIELDS]
        known = {k: v for k, v in data.items() if k in stored}
        extra = {k: v for k, v in data.items() if k not in stored}
        return cls(**known, extra=extra)

    @classmethod
    def of_crop_zoom(
        cls,
        pose: ModelInfo,
        detector: ModelInfo,
        *,
        frame_size: list[int],
        splits: Any,
        wall_time_s: float,
        settings: dict[str, Any],
        stages: dict[str, dict[str, Any]],
    ) -> ModelInfo:
        """A crop-zoom model's description: the pose stage's (body parts, resize, backbone), with
        the whole frame's size, both stages' split sizes and wall time, and the ``crop_zoom`` block
        (``settings``: crop size and detection options; ``stages``: each stage's dir, epochs, loss)."""
        fields = {k: v for k, v in pose.to_dict().items() if k not in pose.extra}
        counts = {name: int((splits == name).sum()) for name in ("train", "val", "test")}
        block = {**settings}
        for name, info in (("detector", detector), ("pose", pose)):
            stage = stages[name]
            block[name] = {**stage, "best_checkpoint": f"{stage['dir']}/{info.best_checkpoint}"}
        fields.update(
            frame_size=list(frame_size),
            n_train=counts["train"],
            n_val=counts["val"],
            n_test=counts["test"],
            wall_time_s=round(float(wall_time_s), 3),
            best_checkpoint=block["pose"]["best_checkpoint"],
        )
        return cls(**fields, extra={"kind": CROP_ZOOM, "crop_zoom": block})

    @classmethod
    def of_per_view(
        cls,
        bodyparts: list[str],
        *,
        image_resize: list[int],
        backbone: str,
        model_type: str,
        wall_time_s: float,
        views: dict[str, dict[str, Any]],
        preset: str | None = None,
    ) -> ModelInfo:
        """A per-view model's description: what the views share and, per view, its directory, label
        CSV, best validation loss and epochs (``views``: view -> those fields)."""
        return cls(
            bodyparts=list(bodyparts),
            image_resize=list(image_resize),
            backbone=backbone,
            model_type=model_type,
            preset=preset,
            engine_version=__version__,
            wall_time_s=round(float(wall_time_s), 3),
            # "multiview" is what readers before the "kind" key look for
            extra={"kind": PER_VIEW, "multiview": PER_VIEW, "views": views},
        )

    @property
    def kind(self) -> str:
        """``"single_stage"`` (one network), ``"crop_zoom"`` (detector + pose on crops) or
        ``"per_view"`` (one network per view)."""
        if "kind" in self.extra:
            return str(self.extra["kind"])
        return PER_VIEW if self.extra.get("multiview") == PER_VIEW else SINGLE_STAGE

    @property
    def crop_zoom(self) -> dict[str, Any]:
        """A crop-zoom model's ``crop_zoom`` block of ``model.json`` (crop size, stages); else {}."""
        block = self.extra.get("crop_zoom") if self.kind == CROP_ZOOM else None
        return dict(block) if isinstance(block, dict) else {}

    def stage_dirs(self) -> dict[str, Path]:
        """``{"detector": path, "pose": path}`` of a crop-zoom model (needs ``model_dir``); else {}.

        A stage's entry in the ``crop_zoom`` block is an object whose ``dir`` (default: the
        stage's name) is a folder name inside the model directory; else ModelDirectoryError.
        """
        if self.kind != CROP_ZOOM or self.model_dir is None:
            return {}
        block, source = self.crop_zoom, self.model_dir / MODEL_JSON
        dirs = {}
        for name in CROP_ZOOM_STAGES:
            stage = block.get(name, {})
            if not isinstance(stage, dict):
                raise ModelDirectoryError(
                    f"{source}: crop_zoom.{name} must be an object with the stage's 'dir', got "
                    f"{type(stage).__name__} {stage!r}"
                )
            folder = stage.get("dir", name)
            if not isinstance(folder, str):
                raise ModelDirectoryError(f"{source}: crop_zoom.{name}.dir must be a folder name, got {folder!r}")
            try:  # the stage is a folder of the model directory, never a path out of it
                check_path_part(folder, f"{source}: crop_zoom.{name}.dir {folder!r}")
            except UnsafePathError as exc:
                raise ModelDirectoryError(f"{exc}; it names the stage's folder inside the model directory") from None
            dirs[name] = self.model_dir / folder
        return dirs

    @property
    def crop_size(self) -> tuple[int, int]:
        """A crop-zoom model's crop (h, w) in original pixels; ModelDirectoryError if missing or invalid."""
        try:
            height, width = (int(side) for side in self.crop_zoom["crop_size"])
        except (KeyError, TypeError, ValueError) as exc:
            source = (self.model_dir or Path(".")) / MODEL_JSON
            raise ModelDirectoryError(f"{source}: crop_zoom.crop_size missing or invalid") from exc
        return height, width

    @property
    def detector_target(self) -> str:
        """What a crop-zoom model's detector predicts: ``"centre"`` (one keypoint) or
        ``"keypoints"`` (every body part); ``model.json``'s ``crop_zoom.detector_target``, else
        config.yaml's, else ``"centre"``."""
        config_block = self.config.get("crop_zoom") if isinstance(self.config, dict) else None
        default = config_block.get("detector_target", "centre") if isinstance(config_block, dict) else "centre"
        target = self.crop_zoom.get("detector_target", default)
        if target not in DETECTOR_TARGETS:
            raise ModelDirectoryError(
                f"{(self.model_dir or Path('.')) / MODEL_JSON}: crop_zoom.detector_target must be one of "
                f"{list(DETECTOR_TARGETS)}, got {target!r}"
            )
        return str(target)

    def stage_bodyparts(self) -> dict[str, list[str]]:
        """What each stage of a crop-zoom model predicts (the pose stage the model's body parts,
        the detector per :attr:`detector_target`); else {}."""
        if self.kind != CROP_ZOOM:
            return {}
        detector = [DETECTOR_CENTRE] if self.detector_target == "centre" else list(self.bodyparts)
        return {"detector": detector, "pose": list(self.bodyparts)}

    def to_dict(self) -> dict[str, Any]:
        """The content of ``model.json``: the stored fields, then the unknown keys kept."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _CONTEXT_FIELDS}
        return {**data, **self.extra}


def check_replaceable(model_dir: PathLike) -> None:
    """Refuse to replace a folder that holds something other than a model (a wrong --model-dir).

    Training writes a model directory whole, replacing what was there: an absent or empty
    folder, or one with a model directory's files (:data:`MODEL_DIR_MARKERS`), may be replaced;
    a file, or a folder of other things, raises ``FileExistsError`` naming it.
    """
    model_dir = Path(model_dir)
    if not model_dir.exists():
        return
    if not model_dir.is_dir():
        raise FileExistsError(f"{model_dir}: exists and is not a folder; choose another model directory")
    names = {p.name for p in model_dir.iterdir() if not p.name.startswith(".")}
    if names and not names & set(MODEL_DIR_MARKERS):
        raise FileExistsError(
            f"{model_dir}: not empty and not a model directory (no config.yaml, model.json or "
            "checkpoints/); training replaces the whole folder, so choose another one"
        )


def write_model_info(model_dir: PathLike, info: ModelInfo | dict[str, Any]) -> Path:
    """Write ``model_dir/model.json`` atomically (mode 0666 less the umask: the lab can read it)."""
    if not isinstance(info, ModelInfo):
        info = ModelInfo.from_dict(info, source=str(Path(model_dir) / MODEL_JSON))
    return write_text_atomic(Path(model_dir) / MODEL_JSON, json.dumps(info.to_dict(), indent=2))


def read_model_info(model_dir: PathLike, checkpoint: str | None = None) -> ModelInfo:
    """The description of ``model_dir``, checked against the contract.

    ``model.json`` and ``config.yaml`` must parse and the checkpoint (``checkpoint`` relative
    to the directory; default: the one ``model.json`` names) must exist; anything else raises
    :class:`ModelDirectoryError` naming the file.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirectoryError(f"model directory {model_dir} does not exist")
    info_path, config_path = model_dir / MODEL_JSON, model_dir / CONFIG_YAML
    for required in (info_path, config_path):
        if not required.is_file():
            raise ModelDirectoryError(f"{required}: missing from model directory {model_dir}")
    try:
        data = json.loads(info_path.read_text())
        config = yaml.safe_load(config_path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelDirectoryError(f"{model_dir}: unreadable model description ({exc})") from exc
    info = ModelInfo.from_dict(data, source=str(info_path))
    if info.kind not in KINDS:
        raise ModelDirectoryError(f"{info_path}: unknown model kind {info.kind!r} (known: {', '.join(KINDS)})")
    if info.kind == CROP_ZOOM and not isinstance(info.extra.get("crop_zoom"), dict):
        raise ModelDirectoryError(f"{info_path}: a crop_zoom model lacks its 'crop_zoom' block (crop size, stages)")
    views = info.extra.get("views")
    if info.kind == PER_VIEW and isinstance(views, dict) and checkpoint is None:
        # one network per view: each camera's model is a directory of its own
        raise ModelDirectoryError(
            f"{model_dir}: one network per view ({', '.join(views)}); load the view's own model directory, "
            f"e.g. {model_dir / next(iter(views), 'VIEW')}"
        )
    ckpt = model_dir / (checkpoint or info.best_checkpoint)
    if not ckpt.is_file():
        raise ModelDirectoryError(f"{ckpt}: no checkpoint in model directory {model_dir}")
    info = dataclasses.replace(info, model_dir=model_dir, config=config, checkpoint=ckpt)
    expected = info.stage_bodyparts()
    for name, stage in info.stage_dirs().items():  # each stage is a whole model directory of its own
        predicts = read_model_info(stage).bodyparts
        if predicts != expected[name]:
            raise ModelDirectoryError(
                f"{stage / MODEL_JSON}: the crop-zoom {name} stage predicts {predicts}, but {info_path} "
                f"needs {expected[name]} (crop_zoom.detector_target {info.detector_target!r}); "
                "was the stage replaced by another model?"
            )
    return info


def read_precision_checks(model_dir: PathLike) -> dict[str, Any]:
    """``model_dir/precision.json`` (what the accuracy gate found), or {} where there is none.

    A file that does not parse as a JSON object raises :class:`ModelDirectoryError` naming it.
    """
    path = Path(model_dir) / PRECISION_JSON
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirectoryError(f"{path}: unreadable precision checks ({exc}); delete it to check again") from exc
    if not isinstance(data, dict):
        raise ModelDirectoryError(f"{path}: expected a JSON object, got {type(data).__name__}; delete it")
    return data


def write_precision_checks(model_dir: PathLike, checks: dict[str, Any]) -> Path:
    """Write ``model_dir/precision.json`` atomically (0666 less the umask)."""
    return write_text_atomic(Path(model_dir) / PRECISION_JSON, json.dumps(checks, indent=2))


def quantised_weights_path(model_dir: PathLike, name: str) -> Path:
    """Where the file ``name`` (one path part) of ``model_dir/precision/`` lives: quantised
    weights, or a backbone OpenVINO converted."""
    check_path_part(name, f"quantised weights name {name!r}")
    return Path(model_dir) / QUANTISED_DIR / name


def write_quantised_weights(model_dir: PathLike, name: str, data: bytes) -> Path:
    """Write quantised weights (serialised by the caller) atomically into ``model_dir/precision/``."""
    path = quantised_weights_path(model_dir, name)
    path.parent.mkdir(exist_ok=True)
    return write_bytes_atomic(path, data)
