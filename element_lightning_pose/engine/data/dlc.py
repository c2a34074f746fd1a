"""DeepLabCut projects as they are on disk: ``config.yaml`` and ``labeled-data/<video>/CollectedData_<scorer>.csv`` (or ``.h5``).

The labels of every labeled folder are read through the label-table parser of :mod:`.labels` (with
its checks), put in ``config.yaml``'s body-part order, and merged into one :class:`LabeledFrames`
whose image paths are relative to the project root.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import replace
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from element_lightning_pose.engine.config import yaml_problem
from element_lightning_pose.engine.data.labels import (
    LabeledFrames,
    check_image,
    concat_labels,
    parse_label_rows,
    read_labels,
)
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.types import PathLike

logger = logging.getLogger(__name__)


DLC_CONFIG = "config.yaml"  # a DeepLabCut project's settings (body parts, scorer, videos)


DLC_LABELED_DIR = "labeled-data"


def is_dlc_project(root: PathLike) -> bool:
    """Whether ``root`` looks like a DeepLabCut project: ``config.yaml`` with ``bodyparts``
    beside a ``labeled-data/`` folder."""
    root = Path(root)
    if not (root / DLC_CONFIG).is_file() or not (root / DLC_LABELED_DIR).is_dir():
        return False
    try:
        config = yaml.safe_load((root / DLC_CONFIG).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return False
    return isinstance(config, dict) and "bodyparts" in config


def _load_dlc_yaml(path: Path) -> dict:
    """``config.yaml`` as a mapping; ProjectError saying what is wrong with the file otherwise."""
    if not path.is_file():
        raise ProjectError(f"{path}: DeepLabCut config not found")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ProjectError(
            f"{path}: not a text file (byte {exc.object[exc.start]:#04x} at {exc.start} is not UTF-8)"
        ) from None
    except yaml.YAMLError as exc:
        raise ProjectError(f"{path}: not valid YAML ({yaml_problem(exc)})") from None
    except OSError as exc:
        raise ProjectError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if config is None:
        raise ProjectError(f"{path}: empty; a DeepLabCut config.yaml holds the project's scorer and bodyparts")
    if not isinstance(config, dict):
        raise ProjectError(
            f"{path}: a YAML {type(config).__name__}, not a mapping of DeepLabCut settings (scorer, bodyparts, ...)"
        )
    return config


def read_dlc_config(root: PathLike) -> dict:
    """The parts of a DeepLabCut ``config.yaml`` that labels need: ``scorer``, ``bodyparts``,
    ``video_sets``; a multi-animal project is refused (its labels have another header)."""
    path = Path(root) / DLC_CONFIG
    config = _load_dlc_yaml(path)
    if config.get("multianimalproject"):
        raise ProjectError(f"{path}: a multi-animal DeepLabCut project (multianimalproject: true) is not supported")
    bodyparts = config.get("bodyparts")
    if not isinstance(bodyparts, list) or not bodyparts or not all(isinstance(b, str) and b for b in bodyparts):
        raise ProjectError(f"{path}: bodyparts must be a non-empty list of names, got {bodyparts!r}")
    if len(set(bodyparts)) != len(bodyparts):
        raise ProjectError(f"{path}: bodyparts repeats a name: {bodyparts}")
    scorer = config.get("scorer")
    if not isinstance(scorer, str) or not scorer:
        raise ProjectError(
            f"{path}: scorer must be a name (labels are labeled-data/<video>/CollectedData_<scorer>.csv)"
        )
    video_sets = config.get("video_sets") or {}
    return {"scorer": scorer, "bodyparts": list(bodyparts), "video_sets": video_sets}


def explain_dlc_project(root: PathLike) -> None:
    """Raise ProjectError saying what is wrong with the DeepLabCut project ``root`` seems to be.

    For a folder that :func:`is_dlc_project` turned down although it has a ``config.yaml``: the
    file is not YAML, not text, empty or not a mapping, its settings are wrong, or
    ``labeled-data/`` is missing. A mapping without ``bodyparts`` is another tool's
    ``config.yaml`` (Lightning Pose's, say): nothing is raised for it.
    """
    root = Path(root)
    if not (root / DLC_CONFIG).is_file() or "bodyparts" not in _load_dlc_yaml(root / DLC_CONFIG):
        return
    read_dlc_config(root)
    labeled = root / DLC_LABELED_DIR
    if not labeled.is_dir():
        raise ProjectError(
            f"{labeled}: folder not found; {root / DLC_CONFIG} is a DeepLabCut config, whose labels are "
            f"{DLC_LABELED_DIR}/<video>/CollectedData_<scorer>.csv"
        )


def dlc_label_files(root: PathLike) -> list[Path]:
    """The label file of each labeled folder of a DeepLabCut project (CSV, else .h5).

    Folders without labels (frames extracted, not labeled yet, and DeepLabCut's ``*_labeled``
    plots) are skipped, as DeepLabCut does; a folder labeled by another scorer than
    ``config.yaml``'s, or a project with no labels at all, is a ProjectError naming the file.
    """
    root = Path(root)
    scorer = read_dlc_config(root)["scorer"]
    labeled = root / DLC_LABELED_DIR
    if not labeled.is_dir():
        raise ProjectError(f"{labeled}: folder not found (DeepLabCut keeps labels in labeled-data/<video>/)")
    files = []
    for folder in sorted(p for p in labeled.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name.endswith("_labeled"):
            continue
        csv_path, h5_path = folder / f"CollectedData_{scorer}.csv", folder / f"CollectedData_{scorer}.h5"
        if csv_path.is_file() or h5_path.is_file():
            files.append(csv_path if csv_path.is_file() else h5_path)
            continue
        others = sorted(p.name for p in folder.glob("CollectedData_*"))
        if others:
            raise ProjectError(
                f"{csv_path}: not found, but {others} are: the scorer in {root / DLC_CONFIG} is {scorer!r}"
            )
        logger.warning("%s: no CollectedData_%s.csv or .h5 (not labeled yet); skipped", folder, scorer)
    if not files:
        raise ProjectError(
            f"{labeled / '<video>' / f'CollectedData_{scorer}.csv'}: no labeled folder has it (or the .h5); "
            f"scorer {scorer!r} from {root / DLC_CONFIG}"
        )
    return files


def read_dlc_project(root: PathLike, *, check_images: bool = True) -> LabeledFrames:
    """Every labeled folder of a DeepLabCut project merged into one LabeledFrames.

    Image paths are relative to the project root (``labeled-data/<video>/img042.png``), body
    parts in ``config.yaml``'s order; the labels of each folder must name exactly the body parts
    of ``config.yaml``. Errors name the file at fault (the CSV or .h5, the config, an image).
    A folder whose frames are queued but not labeled yet (a table without any labeled keypoint,
    as the labeling loop leaves it) is skipped, as DeepLabCut skips a folder without labels.
    """
    root = Path(root)
    config = read_dlc_config(root)
    parts = []
    for path in dlc_label_files(root):
        part = read_dlc_label_file(path, root, config["bodyparts"], require_keypoints=False)
        if not np.isfinite(part.keypoints).any():
            logger.warning("%s: frames queued, none labeled yet; skipped", path)
            continue
        h5 = path.with_suffix(".h5")
        if path.suffix == ".csv" and h5.is_file():
            _check_h5_agrees(part, h5, root, config["bodyparts"])
        if check_images:
            for image in part.image_paths:
                check_image(root / image, f"{path} ({image})")
        parts.append(part)
    if not parts:
        raise ProjectError(f"{root / DLC_LABELED_DIR}: no labeled keypoints in any labeled folder yet")
    labels = concat_labels(parts, root, root / DLC_CONFIG)
    return replace(labels, scorer=config["scorer"])


def read_dlc_label_file(
    path: Path, root: Path, bodyparts: list[str], *, require_keypoints: bool = True
) -> LabeledFrames:
    """One labeled folder's CSV or .h5: image paths under ``root``, body parts in ``bodyparts``' order.

    ``require_keypoints=False`` accepts a folder whose frames are queued but not labeled yet."""
    if path.suffix == ".h5":
        part = _read_dlc_h5(path, root, require_keypoints=require_keypoints)
    else:
        part = read_labels(path, root, check_images=False, require_keypoints=require_keypoints)
    part = _dlc_images_under_root(part, path.parent, root)
    return _in_config_order(part, bodyparts, root / DLC_CONFIG)


# labels that differ by less than this (px) are the same label written twice (CSV text and HDF5 floats)
_SAME_LABEL_PX = 1e-3


def _check_h5_agrees(labels: LabeledFrames, h5: Path, root: Path, bodyparts: list[str]) -> None:
    """Refuse a CSV whose .h5 beside it holds other labels: DeepLabCut trains from the .h5, this
    engine reads the CSV, and the two would silently train different models."""
    csv_path = labels.csv_path
    try:
        import tables  # noqa: F401  (pandas' HDF5 backend)
    except ImportError:
        logger.warning(
            "%s: read; %s beside it is not compared (reading .h5 needs PyTables: pip install tables)", csv_path, h5.name
        )
        return
    other = read_dlc_label_file(h5, root, bodyparts)
    where = f"{csv_path}: disagrees with {h5.name} beside it (DeepLabCut trains from the .h5, this reads the CSV)"
    only_csv = sorted(set(labels.image_paths) - set(other.image_paths))
    only_h5 = sorted(set(other.image_paths) - set(labels.image_paths))
    if only_csv or only_h5:
        raise ProjectError(
            f"{where}: images only in the CSV {only_csv[:3]}, only in the .h5 {only_h5[:3]} "
            f"({len(only_csv)} and {len(only_h5)}); save the labels again in DeepLabCut, or remove the stale file"
        )
    rows = [other.image_paths.index(image) for image in labels.image_paths]
    mine, theirs = labels.keypoints, other.keypoints[rows]
    with np.errstate(invalid="ignore"):
        differ = (np.isnan(mine) != np.isnan(theirs)) | (np.abs(mine - theirs) > _SAME_LABEL_PX)
    differ = differ.any(axis=-1)
    if differ.any():
        row, k = np.argwhere(differ)[0]
        raise ProjectError(
            f"{where}: {labels.image_paths[row]} keypoint {bodyparts[k]!r} is {mine[row, k].tolist()} in the CSV, "
            f"{theirs[row, k].tolist()} in the .h5 ({int(differ.sum())} label(s) differ); save the labels again in "
            "DeepLabCut, or remove the stale file"
        )
    logger.info("%s: read (the labels of %s beside it are the same)", csv_path, h5.name)


def _read_dlc_h5(path: Path, root: Path, *, require_keypoints: bool = True) -> LabeledFrames:
    """DeepLabCut's HDF5 labels (a pandas table), through the CSV parser and its checks."""
    try:
        import tables  # noqa: F401  (pandas' HDF5 backend)
    except ImportError:
        raise ProjectError(
            f"{path}: reading DeepLabCut's .h5 labels needs PyTables (pip install tables); or save "
            f"the labels as {path.with_suffix('.csv').name} beside it (DeepLabCut writes both)"
        ) from None
    try:
        frame = pd.read_hdf(path)
    except Exception as exc:  # pandas and PyTables raise many types for a damaged file
        raise ProjectError(f"{path}: unreadable HDF5 label file ({exc})") from exc
    if not isinstance(frame, pd.DataFrame) or frame.columns.nlevels != 3:
        levels = getattr(getattr(frame, "columns", None), "nlevels", 0)
        raise ProjectError(
            f"{path}: expected columns (scorer, bodyparts, coords), found {levels} level(s)"
            + (" (a multi-animal project?)" if levels == 4 else "")
        )
    text = frame.to_csv()
    rows = [
        (line, [cell.strip() for cell in row])
        for line, row in enumerate(csv.reader(StringIO(text)), start=1)
        if any(cell.strip() for cell in row)
    ]
    return parse_label_rows(path, rows, root, check_images=False, require_keypoints=require_keypoints)


def _dlc_images_under_root(labels: LabeledFrames, folder: Path, root: Path) -> LabeledFrames:
    """Image paths relative to the project root; a bare ``img042.png`` (older DeepLabCut) is in ``folder``."""
    prefix = folder.relative_to(root).as_posix()
    fixed = [
        path if "/" in path or (root / path).is_file() or not (folder / path).is_file() else f"{prefix}/{path}"
        for path in labels.image_paths
    ]
    return replace(labels, image_paths=fixed)


def _in_config_order(labels: LabeledFrames, bodyparts: list[str], config_path: Path) -> LabeledFrames:
    """``labels`` with its keypoints in ``bodyparts``' order; other body parts are an error."""
    if set(labels.bodyparts) != set(bodyparts) or len(labels.bodyparts) != len(bodyparts):
        missing = [b for b in bodyparts if b not in labels.bodyparts]
        extra = [b for b in labels.bodyparts if b not in bodyparts]
        raise ProjectError(
            f"{labels.csv_path}: body parts {labels.bodyparts} differ from {config_path}'s {bodyparts} "
            f"(missing {missing}, not in config.yaml {extra})"
        )
    order = [labels.bodyparts.index(b) for b in bodyparts]
    return replace(
        labels,
        bodyparts=list(bodyparts),
        keypoints=labels.keypoints[:, order],
        visible=None if labels.visible is None else labels.visible[:, order],
    )
