"""Reading a model directory's description without loading the network.

The training engine writes (see ``engine.train``): ``config.yaml`` (the full TrainConfig),
``model.json`` (body parts, frame size, resize, backbone, versions, split sizes) and
``checkpoints/best.ckpt``. Registering a model in a database needs only the first two and the
checkpoint's existence, so this stays cheap (no torch import).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml


class ModelDirectoryError(FileNotFoundError):
    """A model directory lacks a file of the contract, or holds one that does not parse."""


def read_model_info(model_dir: str | os.PathLike, checkpoint: str | None = None) -> dict[str, Any]:
    """``model.json`` plus ``config`` (config.yaml as a dict) and ``checkpoint`` (absolute path)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirectoryError(f"model directory {model_dir} does not exist")
    info_path, config_path = model_dir / "model.json", model_dir / "config.yaml"
    for required in (info_path, config_path):
        if not required.is_file():
            raise ModelDirectoryError(f"{required}: missing from model directory {model_dir}")
    try:
        info = json.loads(info_path.read_text())
        config = yaml.safe_load(config_path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ModelDirectoryError(f"{model_dir}: unreadable model description ({exc})") from exc
    ckpt = model_dir / (checkpoint or info.get("best_checkpoint", "checkpoints/best.ckpt"))
    if not ckpt.is_file():
        raise ModelDirectoryError(f"{ckpt}: no checkpoint in model directory {model_dir}")
    for key in ("bodyparts",):
        if key not in info:
            raise ModelDirectoryError(f"{info_path}: lacks {key!r}")
    return {**info, "config": config, "checkpoint": ckpt}
