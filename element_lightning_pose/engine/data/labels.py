"""Hand labels of a project: the label table (``CollectedData.csv``), its images, and the
frames as the network sees them.

:class:`LabeledFrames` holds one row per labeled image, keypoints in original-frame pixels.
:func:`read_labels` parses and checks a label table of Lightning Pose's or DeepLabCut's layout
(every error names the file, line, image and keypoint). :func:`load_resized` and
:func:`load_context_resized` give a labeled frame (or its t-2..t+2 window) resized to the
network input with its labels moved alike; they import neither torch nor Lightning, so
training and inference share them.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from element_lightning_pose.engine.data.keypoints import HEADER_LABELS, IMAGE_SUFFIXES
from element_lightning_pose.engine.data.video import resize_frame
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.types import PathLike

# Coordinates a label file may hold; "likelihood" is tolerated (some tools write it) and ignored.
LABEL_COORDS = ("x", "y", "visible", "likelihood")


@dataclass(frozen=True, eq=False)
class LabeledFrames:
    """Hand labels of a project: one row per labeled image, keypoints in original-frame pixels."""

    root: Path
    csv_path: Path
    scorer: str
    bodyparts: list[str]
    image_paths: list[str]
    keypoints: np.ndarray
    visible: np.ndarray | None = None
    # the camera view of each row (multi-view projects, shared network); None: one view
    views: list[str] | None = None

    def __len__(self) -> int:
        return len(self.image_paths)

    def subset(self, rows: Sequence[int] | np.ndarray) -> LabeledFrames:
        """The labels of ``rows`` (positions, in the given order)."""
        positions = np.asarray(rows, dtype=int).reshape(-1)
        if positions.size and (positions.min() < -len(self) or positions.max() >= len(self)):
            raise IndexError(f"rows {positions.tolist()} out of range for {len(self)} labeled frames")
        return replace(
            self,
            bodyparts=list(self.bodyparts),
            image_paths=[self.image_paths[r] for r in positions],
            keypoints=self.keypoints[positions].copy(),
            visible=None if self.visible is None else self.visible[positions].copy(),
            views=None if self.views is None else [self.views[r] for r in positions],
        )


def read_labels(
    csv_path: PathLike, root: PathLike | None = None, *, check_images: bool = True, require_keypoints: bool = True
) -> LabeledFrames:
    """Read and validate an LP/DeepLabCut ``CollectedData.csv``.

    The header has three rows (scorer / bodyparts / coords, coords being ``x``, ``y`` and
    optionally ``visible``); the index is the image path relative to ``root`` (default: the
    CSV's folder), either one column or DeepLabCut's three (``labeled-data``, video, image).
    Raises :class:`ProjectError` naming the file, line, image and keypoint at fault. A table
    without any labeled keypoint is refused (nothing to train on) unless ``require_keypoints``
    is False (the labeling loop's tables, whose frames are chosen before they are labeled).
    """
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    if not csv_path.is_file():
        raise ProjectError(f"{csv_path}: label file not found")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        rows = [(line, row) for line, row in _numbered_rows(handle) if any(c.strip() for c in row)]
    return parse_label_rows(csv_path, rows, root, check_images, require_keypoints=require_keypoints)


def parse_label_rows(
    csv_path: Path, rows: list[tuple[int, list[str]]], root: Path, check_images: bool, *, require_keypoints: bool = True
) -> LabeledFrames:
    """Validate the (line number, cells) rows of a label table read from ``csv_path`` (a CSV, or
    DeepLabCut's .h5 printed as CSV by :mod:`.dlc`)."""
    if len(rows) < 3:
        raise ProjectError(
            f"{csv_path}: expected a 3-row header (scorer, bodyparts, coords), found {len(rows)} non-empty line(s)"
        )
    header, body = [r for _, r in rows[:3]], rows[3:]
    n_index = _index_width(csv_path, header)
    columns = _label_columns(csv_path, header, n_index)
    scorer = columns["scorer"]
    bodyparts: list[str] = columns["bodyparts"]
    body = _drop_index_name_row(body, n_index)

    image_paths: list[str] = []
    keypoints = np.full((len(body), len(bodyparts), 2), np.nan)
    visible = np.zeros((len(body), len(bodyparts)), dtype=bool) if columns["has_visible"] else None
    first_line_of: dict[str, int] = {}
    for i, (line, row) in enumerate(body):
        image = _image_path(row[:n_index])
        where = f"{csv_path}, line {line} ({image or 'no image path'})"
        if not image:
            raise ProjectError(f"{where}: empty image path in the index column(s)")
        if image in first_line_of:
            raise ProjectError(f"{where}: image listed twice (first on line {first_line_of[image]})")
        first_line_of[image] = line
        image_paths.append(image)
        n_cells = n_index + len(columns["slots"])
        if len(row) > n_cells and any(row[n_cells:]):
            raise ProjectError(f"{where}: {len(row)} cells but the header has {n_cells} columns")
        row = row + [""] * (n_cells - len(row))
        for position, (k, coord) in enumerate(columns["slots"]):
            value = _to_float(row[n_index + position], where, bodyparts[k], coord)
            if coord in ("x", "y"):
                keypoints[i, k, "xy".index(coord)] = value
            elif coord == "visible" and visible is not None:
                visible[i, k] = np.isfinite(value) and value != 0
        _check_pairs(keypoints[i], bodyparts, where)
    if require_keypoints and not np.isfinite(keypoints).any():
        # every x and y empty (or no rows): training on it would "converge" to loss 0 on nothing
        raise ProjectError(f"no labeled keypoints in {csv_path} ({len(body)} row(s), every x and y empty)")
    if check_images:
        for (line, _), image in zip(body, image_paths):
            check_image(root / image, f"{csv_path}, line {line} ({image})")
    return LabeledFrames(root, csv_path, scorer, bodyparts, image_paths, keypoints, visible)


def _numbered_rows(handle) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(handle)
    for row in reader:
        yield reader.line_num, [cell.strip() for cell in row]


def _index_width(csv_path: Path, header: list[list[str]]) -> int:
    """How many leading columns form the index: 1 (LP) or 3 (DeepLabCut's multi-level index)."""
    coords_row = header[2]
    width = 1
    while width < len(coords_row) and coords_row[width] == "" and header[0][width] == "":
        width += 1
    if width not in (1, 3):
        raise ProjectError(
            f"{csv_path}: {width} index columns; expected 1 (image path) or 3 (labeled-data, video, image)"
        )
    return width


def _label_columns(csv_path: Path, header: list[list[str]], n_index: int) -> dict:
    """Parse the three header rows into scorer, body parts and (keypoint, coord) slots."""
    for number, (row, label) in enumerate(zip(header, HEADER_LABELS), start=1):
        if row[0] and row[0].lower() != label:
            raise ProjectError(
                f"{csv_path}: header row {number} starts with {row[0]!r}, expected "
                f"{label!r}; the header must be exactly 3 rows (scorer, bodyparts, coords)"
            )
    width = len(header[2])
    if width <= n_index or any(len(r) != width for r in header):
        raise ProjectError(
            f"{csv_path}: header rows have unequal or no data columns ({[len(r) for r in header]} cells)"
        )
    scorers = list(dict.fromkeys(header[0][n_index:]))
    if len(scorers) != 1 or not scorers[0]:
        raise ProjectError(f"{csv_path}: expected one scorer in header row 1, found {scorers}")
    bodyparts: list[str] = []
    slots: list[tuple[int, str]] = []
    seen: set[tuple[str, str]] = set()
    for column, (part, coord) in enumerate(zip(header[1][n_index:], header[2][n_index:]), n_index + 1):
        if coord not in LABEL_COORDS:
            raise ProjectError(
                f"{csv_path}: column {column} has coord {coord!r} (expected one of {LABEL_COORDS}); "
                "is the header 3 rows (scorer, bodyparts, coords)?"
            )
        if not part:
            raise ProjectError(f"{csv_path}: column {column} has no body part name")
        if (part, coord) in seen or (part in bodyparts and part != bodyparts[-1]):
            raise ProjectError(f"{csv_path}: duplicate body part {part!r} (column {column})")
        seen.add((part, coord))
        if part not in bodyparts:
            bodyparts.append(part)
        slots.append((bodyparts.index(part), coord))
    for part in bodyparts:
        if (part, "x") not in seen or (part, "y") not in seen:
            raise ProjectError(f"{csv_path}: body part {part!r} lacks an x or y column")
    has_visible = any(coord == "visible" for _, coord in slots)
    return {"scorer": scorers[0], "bodyparts": bodyparts, "slots": slots, "has_visible": has_visible}


def _drop_index_name_row(body: list, n_index: int) -> list:
    """Skip the row pandas writes for a named index (index cells only, none an image file)."""
    if body:
        _, row = body[0]
        if not any(row[n_index:]) and not row[n_index - 1].lower().endswith(IMAGE_SUFFIXES):
            return body[1:]
    return body


def _image_path(index_cells: list[str]) -> str:
    """Join index cells into a POSIX path relative to the project (Windows separators fixed)."""
    parts = [cell.replace("\\", "/").strip("/") for cell in index_cells if cell]
    return "/".join(parts)


def _to_float(text: str, where: str, bodypart: str, coord: str) -> float:
    if text == "" or text.lower() == "nan":
        return np.nan
    try:
        value = float(text)
    except ValueError:
        raise ProjectError(f"{where}: keypoint {bodypart!r} {coord} is not a number: {text!r}") from None
    if not np.isfinite(value):
        raise ProjectError(f"{where}: keypoint {bodypart!r} {coord} is not finite: {text!r}")
    return value


def _check_pairs(points: np.ndarray, bodyparts: list[str], where: str) -> None:
    """Each keypoint is labeled (x and y) or unlabeled (both empty), never half."""
    half = np.isnan(points[:, 0]) != np.isnan(points[:, 1])
    if half.any():
        names = [bodyparts[k] for k in np.flatnonzero(half)]
        raise ProjectError(f"{where}: keypoint(s) {names} have only one of x, y labeled")


def check_image(path: PathLike, where: str | None = None) -> tuple[int, int]:
    """Check that ``path`` is a readable image without decoding its pixels; return (height, width)."""
    path = Path(path)
    where = where or str(path)
    if not path.is_file():
        raise ProjectError(f"{where}: image file {path} not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
            image.verify()  # checks structure and (PNG) checksums; far cheaper than decoding
    except Exception as exc:  # PIL raises several types for unreadable files
        raise ProjectError(f"{where}: image file {path} is unreadable ({exc})") from exc
    return height, width


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB (greyscale expanded, alpha dropped, 16-bit scaled)."""
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: image file not found")
    # imdecode from bytes rather than imread: works for any path encoding on every platform.
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ProjectError(f"{path}: image file is unreadable")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def concat_labels(
    parts: Sequence[LabeledFrames], root: Path, csv_path: Path, views: Sequence[str] | None = None
) -> LabeledFrames:
    """One LabeledFrames of ``parts`` (same body parts), rows in order; ``views[i]`` names part i's view."""
    bodyparts = list(parts[0].bodyparts)
    seen: dict[str, Path] = {}
    for part in parts:
        for image in part.image_paths:
            if image in seen:
                raise ProjectError(f"{part.csv_path}: image {image} is also labeled in {seen[image]}")
            seen[image] = part.csv_path
    visible = None
    if any(p.visible is not None for p in parts):
        visible = np.concatenate(
            [p.visible if p.visible is not None else np.isfinite(p.keypoints[..., 0]) for p in parts]
        )
    row_views = None if views is None else [v for v, p in zip(views, parts) for _ in range(len(p))]
    return LabeledFrames(
        root=root,
        csv_path=csv_path,
        scorer=parts[0].scorer,
        bodyparts=bodyparts,
        image_paths=[image for p in parts for image in p.image_paths],
        keypoints=np.concatenate([p.keypoints for p in parts]),
        visible=visible,
        views=row_views,
    )


def context_image_paths(root: PathLike, image_path: str, radius: int = 2) -> list[str]:
    """Paths of frames ``t - radius .. t + radius`` around a labeled image, for context models.

    The frame number is the last run of digits in the file name (``img00042.png`` -> 42) and
    neighbours keep its zero padding. A neighbour that is not on disk (video edges, frames not
    extracted) is replaced by the nearest one towards the centre, at worst the image itself,
    as Lightning Pose does.
    """
    root = Path(root)
    folder, _, name = image_path.rpartition("/")
    match = re.search(r"(\d+)(?=\D*$)", name)
    if match is None:
        return [image_path] * (2 * radius + 1)
    number, digits = int(match.group(1)), len(match.group(1))

    def neighbour(offset: int) -> str:
        renamed = f"{name[: match.start()]}{max(number + offset, 0):0{digits}d}{name[match.end() :]}"
        return f"{folder}/{renamed}" if folder else renamed

    paths = []
    for offset in range(-radius, radius + 1):
        step = -1 if offset > 0 else 1
        while offset != 0 and not (root / neighbour(offset)).is_file():
            offset += step
        paths.append(neighbour(offset) if offset else image_path)
    return paths


# --------------------------------------------------------------------------- the network's view


def scale_points(points: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Map (..., 2) pixel coordinates between image sizes given as (height, width)."""
    factor = np.array([to_size[1] / from_size[1], to_size[0] / from_size[0]], dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) + 0.5) * factor - 0.5


def image_file(labels: LabeledFrames, row: int) -> Path:
    """The image file of labeled ``row`` (relative paths are under the project root)."""
    path = Path(labels.image_paths[row])
    return path if path.is_absolute() else Path(labels.root) / path


def frame_size(labels: LabeledFrames) -> list[int]:
    """(height, width) of the labeled frames (the first one; projects share one camera size)."""
    return list(read_image(image_file(labels, 0)).shape[:2])


def load_resized(
    labels: LabeledFrames, row: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Frame ``row`` resized to ``size`` (h, w), its labels in resized pixels, its original (h, w)."""
    image = read_image(image_file(labels, row))
    original = image.shape[:2]
    keypoints = scale_points(labels.keypoints[row], original, size)
    return resize_frame(image, size), keypoints, original


def load_context_frames(labels: LabeledFrames, row: int) -> np.ndarray:
    """Frames t-2..t+2 of labeled ``row`` (5, H, W, 3) at their own size.

    Neighbours come from the files next to the labeled image (``context_image_paths``: a
    missing neighbour is replaced by the nearest one towards the centre); a neighbour of
    another size than the labeled frame is an error naming both.
    """
    image = read_image(image_file(labels, row))
    frames = []
    for path in context_image_paths(labels.root, labels.image_paths[row]):
        if path == labels.image_paths[row]:
            frames.append(image)
            continue
        neighbour = read_image(Path(labels.root) / path)
        if neighbour.shape[:2] != image.shape[:2]:
            raise ProjectError(
                f"{path}: context frame of {labels.image_paths[row]} is {neighbour.shape[:2]}, "
                f"the labeled frame {image.shape[:2]}"
            )
        frames.append(neighbour)
    return np.stack(frames)


def load_context_resized(labels: LabeledFrames, row: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frames t-2..t+2 of labeled ``row`` (5, h, w, 3) resized, and the labels of t in resized pixels."""
    frames = load_context_frames(labels, row)
    keypoints = scale_points(labels.keypoints[row], frames.shape[1:3], size)
    return np.stack([resize_frame(frame, size) for frame in frames]), keypoints
