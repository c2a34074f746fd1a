"""Keypoint tables and labeled projects on disk (the CSV layout of DeepLabCut and Lightning Pose).

A keypoint table has a header of three rows (``scorer`` / ``bodyparts`` / ``coords``) and an
index column (an image path for labels, a frame number for video predictions). Every writer
here is atomic: it writes a temporary file beside the target and renames it, so a crash never
leaves a truncated CSV behind.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from .atomic import atomic_output
from .errors import ElpError

PathLike = str | os.PathLike


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
    if not csv_path.is_file():
        raise ProjectError(f"{csv_path}: label file not found")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        rows = [(line, row) for line, row in _numbered_rows(handle) if any(c.strip() for c in row)]
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
    root: PathLike, csv_file: str = "CollectedData.csv", video_dir: str = "videos"
) -> tuple[LabeledFrames, list[Path]]:
    """Labels of the project at ``root`` and the videos in its ``video_dir`` (none if absent)."""
    root = Path(root)
    if not root.is_dir():
        raise ProjectError(f"{root}: project folder not found")
    labels = read_labels(root / csv_file, root)
    videos = find_videos(root / video_dir) if (root / video_dir).is_dir() else []
    return labels, videos


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
