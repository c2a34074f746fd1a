"""Keypoint tables and labeled projects on disk (the CSV layout of DeepLabCut and Lightning Pose).

A keypoint table has a header of three rows (``scorer`` / ``bodyparts`` / ``coords``) and an
index column (an image path for labels, a frame number for video predictions). Every writer
here is atomic: it writes a temporary file beside the target and renames it, so a crash never
leaves a truncated CSV behind.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from io import StringIO
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml
from PIL import Image

from element_lightning_pose.engine.atomic import atomic_output
from element_lightning_pose.engine.errors import ElpError

PathLike = str | os.PathLike
logger = logging.getLogger(__name__)


class ProjectError(ElpError, ValueError):
    """A labeled project or keypoint file is malformed; the message names the file and place."""


def keypoint_frame(
    values: np.ndarray,
    bodyparts: Sequence[str],
    coords: Sequence[str],
    scorer: str,
    index: Sequence | np.ndarray | None = None,
) -> pd.DataFrame:
    """Wrap a (T, K, C) array as a DataFrame with the (scorer, bodyparts, coords) header."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 3 or values.shape[1:] != (len(bodyparts), len(coords)):
        raise ValueError(
            f"values of shape {values.shape} do not match {len(bodyparts)} body parts "
            f"x {len(coords)} coords {list(coords)}"
        )
    columns = pd.MultiIndex.from_product(
        [[scorer], list(bodyparts), list(coords)], names=["scorer", "bodyparts", "coords"]
    )
    frame = pd.DataFrame(values.reshape(values.shape[0], len(columns)), columns=columns)
    if index is not None:
        frame.index = list(index)
    return frame


def write_csv_atomic(frame: pd.DataFrame, path: PathLike) -> Path:
    """Write ``frame`` to ``path`` through a temporary file and a rename."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp)
    return Path(path)


def write_keypoint_csv(
    path: PathLike,
    values: np.ndarray,
    bodyparts: Sequence[str],
    coords: Sequence[str] = ("x", "y", "likelihood"),
    scorer: str = "element-lightning-pose",
    index: Sequence | np.ndarray | None = None,
    significant: int | None = None,
) -> Path:
    """Write a (T, K, C) array as a 3-row-header keypoint CSV (atomic).

    ``significant=None`` prints every value as Python's ``repr`` (pandas' ``to_csv``, exact to
    the last bit). ``significant=N`` prints N significant digits with a vectorised numpy
    formatter (:func:`format_csv_body`), about 20x faster, in the same layout byte for byte
    apart from the digits; reading the file back gives exactly the printed decimals.
    """
    if significant is None or (index is not None and not _is_frame_numbers(index)):
        return write_csv_atomic(keypoint_frame(values, bodyparts, coords, scorer, index), path)
    values = np.asarray(values, dtype=float)
    if values.ndim != 3 or values.shape[1:] != (len(bodyparts), len(coords)):
        raise ValueError(
            f"values of shape {values.shape} do not match {len(bodyparts)} body parts "
            f"x {len(coords)} coords {list(coords)}"
        )
    columns = [(part, coord) for part in bodyparts for coord in coords]
    header = "".join(
        f"{label},{','.join(cells)}\n"
        for label, cells in (
            ("scorer", [scorer] * len(columns)),
            ("bodyparts", [p for p, _ in columns]),
            ("coords", [c for _, c in columns]),
        )
    )
    frames = list(index) if index is not None else range(values.shape[0])
    body = _format_in_chunks(values.reshape(values.shape[0], -1), frames, significant)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(header.encode("utf-8"))
            handle.write(body)
    return Path(path)


def _format_in_chunks(values: np.ndarray, frames: Sequence[int], significant: int) -> bytes:
    """:func:`format_csv_body` on row blocks in two threads (numpy releases the GIL)."""
    n_rows = values.shape[0]
    if n_rows < 4096:
        return format_csv_body(values, frames, significant)
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, n_rows, 5).astype(int)
    with ThreadPoolExecutor(max_workers=2) as pool:
        parts = pool.map(
            lambda ab: format_csv_body(values[ab[0] : ab[1]], frames[ab[0] : ab[1]], significant),
            zip(bounds[:-1], bounds[1:]),
        )
        return b"".join(parts)


def _is_frame_numbers(index: Sequence | np.ndarray) -> bool:
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in index)


_INT_DIGITS = 13  # integer part width of the vectorised formatter (values below 1e12)
_MAX_DECIMALS = 15
_POW10 = 10 ** np.arange(_MAX_DECIMALS + 1, dtype=np.int64)
_POW10_F = _POW10.astype(float)


def _digits(values: np.ndarray, width: int) -> list[np.ndarray]:
    """Decimal digits (most significant first, ``width`` of them) of integer-valued floats."""
    quotients = [np.floor(values / _POW10_F[p]) for p in range(width)] + [np.zeros_like(values)]
    return [(quotients[p] - 10.0 * quotients[p + 1]).astype(np.uint8) for p in range(width - 1, -1, -1)]


def format_csv_body(values: np.ndarray, frames: Sequence[int], significant: int = 10) -> bytes:
    """CSV rows ``frame,v1,...,vC`` of (T, C) ``values`` with ``significant`` digits, vectorised.

    Each cell is ``[-]int.frac`` with trailing zeros of the fraction dropped (``1.0``, not
    ``1.000``), NaN is an empty cell (as pandas writes it). Cells numpy cannot place in a
    fixed-point layout (infinite, >= 1e12, non-zero below 10**-(15-significant+1)) are printed
    by ``repr``, their rows by Python. The digits come from an integer per cell
    (``round(|v| 10^d)``, ``d`` decimals so that ``significant`` digits are printed), written
    into a fixed-width byte grid whose pad bytes are then dropped.
    """
    if not 1 <= significant <= 12:
        raise ValueError(f"significant must be 1-12 digits, got {significant}")
    n_rows, n_cols = values.shape
    magnitude = np.abs(values)
    finite = np.isfinite(values)
    nonzero = finite & (magnitude > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.where(nonzero, np.floor(np.log10(np.where(nonzero, magnitude, 1.0))), 0).astype(np.int64)
    decimals = significant - 1 - exponent
    special = np.isinf(values) | (nonzero & ((decimals > _MAX_DECIMALS) | (exponent >= _INT_DIGITS - 1)))
    decimals = np.clip(decimals, 0, _MAX_DECIMALS)
    plain = finite & ~special
    # integer arithmetic in float64: every value here is an integer below 2**53, so exact
    power = _POW10_F[decimals]
    scaled = np.rint(np.where(plain, magnitude, 0.0) * power)
    integer = np.floor(scaled / power)
    fraction = scaled - integer * power
    n_int = np.ones(values.shape, dtype=np.int64)
    for j in range(1, _INT_DIGITS):
        n_int += integer >= _POW10_F[j]
    int_width = int(n_int.max(initial=1))
    frac_width = int(decimals.max(initial=1)) if plain.any() else 1
    # every fraction as frac_width digits; float division is vectorised, int64 division is not
    fraction = fraction * _POW10_F[np.maximum(frac_width - decimals, 0)]
    frac_digits = _digits(fraction, frac_width)
    # trailing zeros dropped, one decimal always kept
    shown = np.ones(values.shape, dtype=np.int64)
    for j in range(1, frac_width):
        shown[frac_digits[j] != 0] = j + 1
    grid = np.empty((int_width + frac_width + 3, *values.shape), dtype=np.uint8)
    grid[0] = (plain & (values < 0)) * ord("-")
    for j, digit in enumerate(_digits(integer, int_width)):
        grid[1 + j] = (48 + digit) * (plain & (n_int >= int_width - j))
    grid[int_width + 1] = plain * ord(".")
    for j, digit in enumerate(frac_digits):
        grid[int_width + 2 + j] = (48 + digit) * (plain & (shown > j))
    grid[-1] = ord(",")
    grid[-1, :, -1] = ord("\n")
    grid = np.moveaxis(grid, 0, -1)
    keep = grid != 0
    rows = grid[keep].tobytes().split(b"\n")[:-1]
    for r in np.flatnonzero(special.any(axis=1)):
        rows[r] = ",".join("" if np.isnan(v) else repr(float(v)) for v in values[r]).encode()
    return b"".join(b"%d,%s\n" % (int(f), row) for f, row in zip(frames, rows))


def write_predictions(
    path: PathLike,
    predictions: np.ndarray,
    bodyparts: Sequence[str],
    scorer: str = "element-lightning-pose",
    index: Sequence | np.ndarray | None = None,
) -> Path:
    """Write (T, K, 3) predictions (x, y, likelihood) in the LP/DLC layout (atomic)."""
    return write_keypoint_csv(path, predictions, bodyparts, ("x", "y", "likelihood"), scorer, index)


def read_keypoint_csv(
    path: PathLike, coords: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str], list[str], pd.Index]:
    """Read a 3-row-header keypoint CSV as ``(values (T, K, C), bodyparts, coords, index)``.

    ``coords`` selects and orders the coordinate columns (default: all, in file order). Every
    data row is kept, an all-empty one too (a frame where nothing was predicted): the header
    is parsed here rather than by pandas, which takes an all-empty first data row for a row of
    index names and drops it. A pandas index-name row (a name, no values) is skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: keypoint file not found")
    header, skip = _keypoint_header(path)
    columns = list(zip(header[1][1:], header[2][1:]))  # (body part, coord); one scorer per file
    bodyparts = list(dict.fromkeys(part for part, _ in columns))
    file_coords = list(dict.fromkeys(coord for _, coord in columns))
    wanted = list(coords) if coords is not None else file_coords
    missing = [c for c in wanted if c not in file_coords]
    if missing:
        raise ProjectError(f"{path}: coordinate columns {missing} missing (found {file_coords})")
    position = {}
    for number, column in enumerate(columns):
        if column in position:
            raise ProjectError(f"{path}: column {number + 2} repeats body part {column[0]!r} {column[1]!r}")
        position[column] = number
    try:
        picks = [position[(bp, c)] for bp in bodyparts for c in wanted]
    except KeyError as exc:
        raise ProjectError(f"{path}: incomplete keypoint columns (no column {exc.args[0]})") from None
    try:
        body = pd.read_csv(path, header=None, skiprows=skip, index_col=0, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        body = pd.DataFrame()
    except Exception as exc:  # pandas raises many types for malformed rows
        raise ProjectError(f"{path}: malformed data rows ({exc})") from exc
    if len(body) == 0:
        raise ProjectError(f"{path}: no data rows after the 3-row header (scorer, bodyparts, coords)")
    if body.shape[1] != len(columns):
        raise ProjectError(f"{path}: data rows have {body.shape[1] + 1} cells, the header {len(columns) + 1}")
    try:
        values = body.iloc[:, picks].to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise ProjectError(f"{path}: incomplete or non-numeric keypoint columns ({exc})") from exc
    index = body.index.rename(header[3][0] if len(header) > 3 else None)
    return values.reshape(len(body), len(bodyparts), len(wanted)), bodyparts, wanted, index


def _keypoint_header(path: Path) -> tuple[list[list[str]], int]:
    """The three header rows (plus an index name, if pandas wrote one) and the lines they take."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows: list[list[str]] = []
            lines = 0
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # pandas skips blank lines too
                if len(rows) == 3:
                    if _is_index_name_row(row):
                        rows.append([row[0]])
                        lines = reader.line_num
                    break
                rows.append(row)
                lines = reader.line_num
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ProjectError(f"{path}: not a 3-row-header keypoint CSV ({exc})") from exc
    if len(rows) < 3:
        raise ProjectError(f"{path}: not a 3-row-header keypoint CSV (found {len(rows)} non-empty line(s))")
    widths = [len(r) for r in rows[:3]]
    if len(set(widths)) != 1 or widths[0] < 2:
        raise ProjectError(f"{path}: not a 3-row-header keypoint CSV (header rows of {widths} cells)")
    return rows, lines


def _is_index_name_row(row: list[str]) -> bool:
    """A row pandas writes for a named index: a name and no values. A frame number or an image
    path with no values is a data row (nothing predicted or labeled there)."""
    name = row[0].strip()
    if not name or any(cell.strip() for cell in row[1:]) or name.lower().endswith(IMAGE_SUFFIXES):
        return False
    try:
        float(name)
    except ValueError:
        return True
    return False


def read_predictions(path: PathLike) -> tuple[np.ndarray, list[str]]:
    """Read an LP/DLC predictions CSV as ``(values (T, K, 3), bodyparts)``."""
    values, bodyparts, _, _ = read_keypoint_csv(path, ("x", "y", "likelihood"))
    return values, bodyparts


# --------------------------------------------------------------------------------------------
# Labeled projects: CollectedData.csv + labeled-data/ images + videos/
# --------------------------------------------------------------------------------------------

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
HEADER_LABELS = ("scorer", "bodyparts", "coords")
# Coordinates a label file may hold; "likelihood" is tolerated (some tools write it) and ignored.
LABEL_COORDS = ("x", "y", "visible", "likelihood")
DEFAULT_CSV = "CollectedData.csv"
DLC_CONFIG = "config.yaml"  # a DeepLabCut project's settings (body parts, scorer, videos)
DLC_LABELED_DIR = "labeled-data"


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


def read_labels(csv_path: PathLike, root: PathLike | None = None, *, check_images: bool = True) -> LabeledFrames:
    """Read and validate an LP/DeepLabCut ``CollectedData.csv``.

    The header has three rows (scorer / bodyparts / coords, coords being ``x``, ``y`` and
    optionally ``visible``); the index is the image path relative to ``root`` (default: the
    CSV's folder), either one column or DeepLabCut's three (``labeled-data``, video, image).
    Raises :class:`ProjectError` naming the file, line, image and keypoint at fault.
    """
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    if csv_path.name == DLC_CONFIG:  # a DeepLabCut project named by its config.yaml
        return read_dlc_project(csv_path.parent, check_images=check_images)
    if not csv_path.is_file():
        raise ProjectError(f"{csv_path}: label file not found")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        rows = [(line, row) for line, row in _numbered_rows(handle) if any(c.strip() for c in row)]
    return _labels_from_rows(csv_path, rows, root, check_images)


def _labels_from_rows(
    csv_path: Path, rows: list[tuple[int, list[str]]], root: Path, check_images: bool
) -> LabeledFrames:
    """Validate the (line number, cells) rows of a label table read from ``csv_path``."""
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
    if not np.isfinite(keypoints).any():
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


def find_videos(video_dir: PathLike) -> list[Path]:
    """Video files (mp4/avi/mov/mkv, any case) directly in ``video_dir``, sorted; hidden files skipped."""
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise ProjectError(f"{video_dir}: video folder not found")
    return sorted(
        p
        for p in video_dir.iterdir()
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
    )


def load_project(
    root: PathLike,
    csv_file: str | Sequence[str] = DEFAULT_CSV,
    video_dir: str = "videos",
    view_names: Sequence[str] | None = None,
) -> tuple[LabeledFrames, list[Path]]:
    """Labels of the project at ``root`` and the videos in its ``video_dir`` (none if absent).

    ``csv_file`` is one label CSV, a list of them (one per view, :func:`read_multiview_labels`)
    or a DeepLabCut ``config.yaml``; the default, when ``CollectedData.csv`` is absent, takes
    the layout :func:`detect_layout` finds. A multi-view project's videos are those whose
    file name contains one of its view names.
    """
    root = Path(root)
    if not root.is_dir():
        raise ProjectError(f"{root}: project folder not found")
    labels = read_project_labels(root, csv_file, view_names)
    videos = find_videos(root / video_dir) if (root / video_dir).is_dir() else []
    if labels.views is not None:
        names = set(labels.views)
        videos = [v for v in videos if any(name in v.name for name in names)]
    return labels, videos


# --------------------------------------------------------------------------------------------
# Other layouts: DeepLabCut projects, Lightning Pose multi-view projects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectLayout:
    """How a project folder keeps its labels.

    ``kind`` is ``lightning_pose`` (one ``CollectedData.csv``), ``deeplabcut`` (``config.yaml``
    + ``labeled-data/<video>/CollectedData_<scorer>.csv``) or ``multiview`` (one CSV per view).
    ``csv_file`` is what ``data.csv_file`` names: a CSV, ``config.yaml``, or the list of CSVs.
    """

    kind: str
    csv_file: str | list[str]
    view_names: list[str]


def detect_layout(root: PathLike) -> ProjectLayout:
    """The layout of the project at ``root``: ``CollectedData.csv`` first, then a DeepLabCut
    ``config.yaml`` (with ``bodyparts``) beside ``labeled-data/``, then two or more
    ``CollectedData_<view>.csv`` (Lightning Pose's multi-view layout); else ProjectError."""
    root = Path(root)
    if not root.is_dir():
        raise ProjectError(f"{root}: project folder not found")
    if (root / DEFAULT_CSV).is_file():
        return ProjectLayout("lightning_pose", DEFAULT_CSV, [])
    if is_dlc_project(root):
        return ProjectLayout("deeplabcut", DLC_CONFIG, [])
    per_view = sorted(p.name for p in root.glob("CollectedData_*.csv") if p.is_file())
    if len(per_view) >= 2:
        return ProjectLayout("multiview", per_view, derive_view_names(per_view))
    raise ProjectError(
        f"{root}: no labels found: neither {DEFAULT_CSV}, nor a DeepLabCut {DLC_CONFIG} (with bodyparts) "
        f"beside {DLC_LABELED_DIR}/, nor two or more CollectedData_<view>.csv (found {per_view or 'none'})"
    )


def read_project_labels(
    root: PathLike,
    csv_file: str | Sequence[str] = DEFAULT_CSV,
    view_names: Sequence[str] | None = None,
    *,
    check_images: bool = True,
) -> LabeledFrames:
    """The labels of any layout (see :func:`load_project`), image paths relative to ``root``."""
    root = Path(root)
    if not isinstance(csv_file, str):
        return read_multiview_labels(root, list(csv_file), view_names, check_images=check_images)
    if csv_file == DEFAULT_CSV and not (root / csv_file).exists():
        layout = detect_layout(root)
        logger.info("%s: no %s; reading it as a %s project", root, DEFAULT_CSV, layout.kind)
        if layout.kind == "multiview":
            return read_multiview_labels(root, list(layout.csv_file), layout.view_names, check_images=check_images)
        csv_file = str(layout.csv_file)
    return read_labels(root / csv_file, root, check_images=check_images)


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


def derive_view_names(csv_files: Sequence[str]) -> list[str]:
    """View names from per-view label files: ``CollectedData_top.csv`` -> ``top``."""
    stems = [Path(name).stem for name in csv_files]
    return [stem[len("CollectedData_") :] if stem.startswith("CollectedData_") else stem for stem in stems]


def read_multiview_labels(
    root: PathLike,
    csv_files: Sequence[str],
    view_names: Sequence[str] | None = None,
    *,
    check_images: bool = True,
) -> LabeledFrames:
    """Lightning Pose's multi-view layout: one label CSV per view, the same frames in each.

    Returns the views' labels concatenated (view after view, each in its CSV's row order, so
    row ``i`` of every view is the same instant), ``views`` naming each row's view. The views
    must list the same body parts and the same number of frames.
    """
    root = Path(root)
    csv_files = list(csv_files)
    names = list(view_names) if view_names else derive_view_names(csv_files)
    if not csv_files:
        raise ProjectError(f"{root}: data.csv_file is an empty list (one label CSV per view expected)")
    if len(names) != len(csv_files):
        raise ProjectError(
            f"{root}: data.view_names has {len(names)} name(s) {names} for {len(csv_files)} label file(s) {csv_files}"
        )
    if len(set(names)) != len(names):
        raise ProjectError(f"{root}: data.view_names repeats a view: {names}")
    parts = [read_labels(root / name, root, check_images=check_images) for name in csv_files]
    first = parts[0]
    for part in parts[1:]:
        if part.bodyparts != first.bodyparts:
            raise ProjectError(
                f"{part.csv_path}: body parts {part.bodyparts} differ from {first.csv_path.name}'s "
                f"{first.bodyparts}; every view labels the same body parts"
            )
        if len(part) != len(first):
            raise ProjectError(
                f"{part.csv_path}: {len(part)} labeled frames, {first.csv_path.name} has {len(first)}; "
                "the same frames must be labeled in every view"
            )
    return concat_labels(parts, root, first.csv_path, names)


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


def read_dlc_config(root: PathLike) -> dict:
    """The parts of a DeepLabCut ``config.yaml`` that labels need: ``scorer``, ``bodyparts``,
    ``video_sets``; a multi-animal project is refused (its labels have another header)."""
    path = Path(root) / DLC_CONFIG
    if not path.is_file():
        raise ProjectError(f"{path}: DeepLabCut config not found")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise ProjectError(f"{path}: expected a mapping of DeepLabCut settings")
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
    """
    root = Path(root)
    config = read_dlc_config(root)
    parts = []
    for path in dlc_label_files(root):
        part = _read_dlc_h5(path, root) if path.suffix == ".h5" else read_labels(path, root, check_images=False)
        part = _dlc_images_under_root(part, path.parent, root)
        part = _in_config_order(part, config["bodyparts"], root / DLC_CONFIG)
        if check_images:
            for image in part.image_paths:
                check_image(root / image, f"{path} ({image})")
        parts.append(part)
    labels = concat_labels(parts, root, root / DLC_CONFIG)
    return replace(labels, scorer=config["scorer"])


def _read_dlc_h5(path: Path, root: Path) -> LabeledFrames:
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
    return _labels_from_rows(path, rows, root, check_images=False)


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
