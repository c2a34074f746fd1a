"""Keypoint tables on disk: the CSV layout of DeepLabCut and Lightning Pose, for labels and predictions.

A keypoint table has a header of three rows (``scorer`` / ``bodyparts`` / ``coords``) and an
index column (an image path for labels, a frame number for video predictions). Every writer
here is atomic: it writes a temporary file beside the target and renames it, so a crash never
leaves a truncated CSV behind.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from element_lightning_pose.engine.atomic import atomic_output
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.types import PathLike

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
HEADER_LABELS = ("scorer", "bodyparts", "coords")


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
