"""Calibrated cameras: pinhole + OpenCV distortion, projection, undistortion, ``calibration.toml``.

Model (OpenCV's, the one anipose, aniposelib, eks and Lightning Pose use). A world point ``X``
is moved into the camera frame by ``Xc = R X + t`` (``R`` a rotation matrix, stored in the
file as a Rodrigues vector), divided by depth (``x = Xc / Zc``), distorted, and mapped to
pixels by the intrinsic matrix ``K``:

* ``fisheye = false``: 5 coefficients ``(k1, k2, p1, p2, k3)``; with ``r2 = x^2 + y^2``,
  ``x' = x (1 + k1 r2 + k2 r2^2 + k3 r2^3) + 2 p1 x y + p2 (r2 + 2 x^2)`` and the same with
  ``p1``/``p2`` swapped for ``y'`` (``cv2.projectPoints``);
* ``fisheye = true``: 4 coefficients ``(k1..k4)`` on the angle ``theta = atan(r)``:
  ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)``,
  ``x' = x theta_d / r`` (``cv2.fisheye.projectPoints``).

Undistortion inverts the distortion by Newton's method (5-coefficient model, analytic 2x2
Jacobian) or by Newton on ``theta`` (fisheye), to machine precision, vectorised over points.

``calibration.toml`` (anipose)::

    [cam_0]
    name = "A"
    size = [width, height]
    matrix = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    distortions = [k1, k2, p1, p2, k3]
    rotation = [rx, ry, rz]            # Rodrigues vector, world -> camera
    translation = [tx, ty, tz]
    fisheye = false                    # optional
    [metadata]
    error = 0.4                        # optional, anything

Every camera, read from a file, built in code or read back from a table, passes one
validator, :func:`check_camera`: real numbers only (no booleans, no strings), finite,
positive focal lengths, ``K``'s last row ``[0, 0, 1]``, ``fisheye`` a boolean. A point that
triangulates behind a camera which saw it is flagged by :meth:`CameraGroup.in_front` and
:func:`flag_views_behind`.

The Rodrigues <-> matrix conversions here are exact in floating point (no ``arccos`` of a
trace), including rotations of angle near 0 and near pi.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import tomllib
from numpy.typing import ArrayLike, NDArray

from element_lightning_pose.engine.atomic import write_text_atomic
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.safe_paths import UnsafePathError, check_name
from element_lightning_pose.engine.types import PathLike

Array = NDArray[np.float64]

_SMALL_ANGLE = 1e-4  # below this angle, Taylor series replace sin/cos ratios


class CalibrationError(ElpError):
    """A calibration (file or object) is malformed; the message names the camera and field."""


class CameraBehindWarning(UserWarning):
    """Triangulated points lie behind a camera that saw them: its pose (or its 2D) is wrong."""


# ------------------------------------------------------------------------------ rotations


def _skew(v: Array) -> Array:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    zero = np.zeros(v.shape[:-1])
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)


def rodrigues_to_matrix(rvec: ArrayLike) -> Array:
    """Rotation vectors (..., 3) -> rotation matrices (..., 3, 3) (exact near angle 0)."""
    r = np.asarray(rvec, dtype=float)
    theta = np.linalg.norm(r, axis=-1)[..., None, None]
    small = theta < _SMALL_ANGLE
    safe = np.where(small, 1.0, theta)
    t2 = theta**2
    a = np.where(small, 1.0 - t2 / 6.0 + t2**2 / 120.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - t2 / 24.0 + t2**2 / 720.0, (1.0 - np.cos(safe)) / safe**2)
    k = _skew(r)
    return np.eye(3) + a * k + b * (k @ k)


def matrix_to_rodrigues(matrix: ArrayLike) -> Array:
    """Rotation matrices (..., 3, 3) -> rotation vectors (..., 3), angle in [0, pi].

    The angle comes from ``atan2(|v|, (trace - 1) / 2)`` (``v`` the skew part), which is
    accurate at every angle; near pi, where ``v`` vanishes, the axis comes from the
    symmetric part ``(R + I) / 2 = a a^T`` instead.
    """
    m = np.asarray(matrix, dtype=float)
    v = 0.5 * np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    s = np.linalg.norm(v, axis=-1)
    c = 0.5 * (np.trace(m, axis1=-2, axis2=-1) - 1.0)
    theta = np.arctan2(s, c)
    small = s < 1e-7
    ratio = np.where(small, 1.0 + theta**2 / 6.0, theta / np.where(small, 1.0, s))
    out = v * ratio[..., None]
    near_pi = small & (c < 0)
    if np.any(near_pi):
        sym = 0.5 * (m[near_pi] + np.eye(3))
        column = np.argmax(np.diagonal(sym, axis1=-2, axis2=-1), axis=-1)
        axis = np.take_along_axis(sym, column[:, None, None], axis=-1)[..., 0]
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        # the sign is free at exactly pi; follow the (tiny) skew part where it has one
        sign = np.where(np.sum(axis * v[near_pi], axis=-1) < 0, -1.0, 1.0)
        out[near_pi] = axis * (sign * theta[near_pi])[:, None]
    return out


# ------------------------------------------------------------------------------ distortion


def _distort(xy: Array, dist: Array) -> Array:
    """Apply the 5-coefficient OpenCV distortion to normalised points (..., 2)."""
    k1, k2, p1, p2, k3 = dist
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return np.stack([xd, yd], -1)


def _distort_jacobian(xy: Array, dist: Array) -> Array:
    """d distorted / d normalised, (..., 2, 2), of the 5-coefficient model."""
    k1, k2, p1, p2, k3 = dist
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_radial = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)  # d radial / d r2
    dxx = radial + 2.0 * x * x * d_radial + 2.0 * p1 * y + 6.0 * p2 * x
    dxy = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
    dyx = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
    dyy = radial + 2.0 * y * y * d_radial + 6.0 * p1 * y + 2.0 * p2 * x
    return np.stack([np.stack([dxx, dxy], -1), np.stack([dyx, dyy], -1)], -2)


def _fisheye_scale(r: Array, dist: Array) -> Array:
    """theta_d / r of the fisheye model (1 at r = 0)."""
    k1, k2, k3, k4 = dist
    theta = np.arctan(r)
    t2 = theta * theta
    theta_d = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
    return np.where(r > 1e-12, theta_d / np.where(r > 1e-12, r, 1.0), 1.0)


def _undistort_fisheye(xy_d: Array, dist: Array, iterations: int = 30) -> Array:
    k1, k2, k3, k4 = dist
    theta_d = np.linalg.norm(xy_d, axis=-1)
    theta = theta_d.copy()
    for _ in range(iterations):  # Newton on theta (1-D per point)
        t2 = theta * theta
        f = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - theta_d
        df = 1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)))
        theta = theta - f / df
    r = np.tan(theta)
    scale = np.where(theta_d > 1e-12, r / np.where(theta_d > 1e-12, theta_d, 1.0), 1.0)
    return xy_d * scale[..., None]


def _undistort_pinhole(xy_d: Array, dist: Array, iterations: int = 20) -> Array:
    xy = xy_d.copy()
    for _ in range(iterations):  # Newton: solve distort(xy) = xy_d, batched 2x2
        residual = _distort(xy, dist) - xy_d
        jac = _distort_jacobian(xy, dist)
        det = jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]
        step_x = (jac[..., 1, 1] * residual[..., 0] - jac[..., 0, 1] * residual[..., 1]) / det
        step_y = (-jac[..., 1, 0] * residual[..., 0] + jac[..., 0, 0] * residual[..., 1]) / det
        xy = xy - np.stack([step_x, step_y], -1)
        if np.nanmax(np.abs(residual), initial=0.0) < 1e-15:
            break
    return xy


# ------------------------------------------------------------------------------ cameras


# Focal lengths above this (px) are not a lens: a 1 px image would span 1e-7 rad.
MAX_FOCAL_PX = 1e7


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _numbers(value: Any, label: str, name: str, shape: tuple[int, ...]) -> Array:
    """``value`` as a float array of ``shape``: real numbers only (a boolean or a string is
    refused, not converted), all finite. Errors name ``label`` (the camera) and field ``name``."""
    if value is None:
        raise CalibrationError(f"{label}: field {name!r} is missing")
    raw = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
    if raw.dtype.kind == "O":
        bad = [v for v in raw.ravel() if not _is_real(v)]
    else:
        bad = [] if raw.dtype.kind in "iuf" or raw.size == 0 else [raw.ravel()[0].item()]
    if bad:
        raise CalibrationError(f"{label}: field {name!r} holds a non-number: {bad[0]!r} ({type(bad[0]).__name__})")
    array = np.asarray(raw, dtype=float)
    if array.shape != shape:
        raise CalibrationError(
            f"{label}: field {name!r} has shape {array.shape} (length {array.size}), expected {shape}"
        )
    if not np.all(np.isfinite(array)):
        raise CalibrationError(f"{label}: field {name!r} has non-finite values {array.tolist()}")
    return array


def check_camera(
    name: Any,
    size: Any,
    matrix: Any,
    distortion: Any,
    rotation: Any,
    translation: Any,
    fisheye: Any = False,
    *,
    where: str = "",
    aliases: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The one check of a camera (the file reader, :class:`Camera` and the pipeline's tables use it).

    Returns the fields as :class:`Camera` stores them. Refused, with one line naming the
    camera (``where``: e.g. its file section) and the field (``aliases``: the caller's name
    of a field, e.g. ``distortions`` in ``calibration.toml``): a missing field, a boolean or a
    string where a number belongs, a wrong shape, a non-finite value, a focal length that is
    not positive (or above ``MAX_FOCAL_PX``), a matrix that is not
    ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``, a size that is not two positive integers, a
    rotation that is not one, a ``fisheye`` that is not true or false.
    """
    if not isinstance(name, str) or not name:
        raise CalibrationError(f"{where or 'a camera'}: field 'name' is missing or not a string")
    label = f"camera {name!r}" + (f" ({where})" if where else "")
    alias = dict(aliases or {})

    def called(attribute: str) -> str:
        return alias.get(attribute, attribute)

    if not isinstance(fisheye, (bool, np.bool_)):
        raise CalibrationError(f"{label}: field {called('fisheye')!r} must be true or false, got {fisheye!r}")
    fisheye = bool(fisheye)
    pixels = _numbers(size, label, called("size"), (2,))
    if np.any(pixels <= 0) or np.any(pixels != np.round(pixels)):
        raise CalibrationError(
            f"{label}: field {called('size')!r} must be two positive integers, got {pixels.tolist()}"
        )
    k = _numbers(matrix, label, called("matrix"), (3, 3))
    for axis, focal in (("fx", float(k[0, 0])), ("fy", float(k[1, 1]))):
        if not 0 < focal <= MAX_FOCAL_PX:
            bound = "must be positive" if focal <= 0 else f"is above {MAX_FOCAL_PX:g} px"
            raise CalibrationError(f"{label}: field {called('matrix')!r}: focal length {axis} = {focal!r} {bound}")
    if k[1, 0] != 0:
        raise CalibrationError(f"{label}: field {called('matrix')!r}: element [1][0] is {float(k[1, 0])!r}, expected 0")
    if k[2].tolist() != [0.0, 0.0, 1.0]:
        raise CalibrationError(
            f"{label}: field {called('matrix')!r}: the last row is {k[2].tolist()}, expected [0, 0, 1]"
        )
    n_coefficients = 4 if fisheye else 5
    dist = _numbers(distortion, label, called("distortion"), (n_coefficients,))
    r = _numbers(rotation, label, called("rotation"), (3, 3))
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
        raise CalibrationError(f"{label}: field {called('rotation')!r} is not a rotation")
    t = _numbers(translation, label, called("translation"), (3,))
    return {
        "name": name,
        "size": (int(pixels[0]), int(pixels[1])),
        "matrix": k,
        "distortion": dist,
        "rotation": r,
        "translation": t,
        "fisheye": fisheye,
    }


@dataclass(frozen=True)
class Camera:
    """One calibrated camera.

    Attributes:
        name: the camera's name (matches the view names of the predictions).
        size: image (width, height) in pixels.
        matrix: (3, 3) intrinsic matrix ``K``.
        distortion: (5,) OpenCV coefficients ``k1 k2 p1 p2 k3``, or (4,) fisheye ``k1..k4``.
        rotation: (3, 3) rotation matrix, world -> camera.
        translation: (3,) translation, world -> camera, in calibration units.
        fisheye: the fisheye distortion model.
    """

    name: str
    size: tuple[int, int]
    matrix: Array
    distortion: Array
    rotation: Array
    translation: Array
    fisheye: bool = False

    def __post_init__(self) -> None:
        for name, value in check_camera(**{f.name: getattr(self, f.name) for f in fields(self)}).items():
            object.__setattr__(self, name, value)

    def check(self, where: str = "") -> None:
        """Check the camera again (its arrays are writable); ``where`` goes into the message."""
        check_camera(**{f.name: getattr(self, f.name) for f in fields(self)}, where=where)

    @property
    def rvec(self) -> Array:
        """The Rodrigues vector of :attr:`rotation`."""
        return matrix_to_rodrigues(self.rotation)

    @property
    def centre(self) -> Array:
        """The optical centre in world coordinates, ``-R^T t``."""
        return -self.rotation.T @ self.translation

    @property
    def extrinsic(self) -> Array:
        """(3, 4) ``[R | t]``: world -> camera (normalised image coordinates after division)."""
        return np.concatenate([self.rotation, self.translation[:, None]], axis=1)

    def to_camera(self, points: ArrayLike) -> Array:
        """World points (..., 3) -> camera-frame points (..., 3)."""
        return np.asarray(points, dtype=float) @ self.rotation.T + self.translation

    def distort(self, xy: ArrayLike) -> Array:
        """Normalised (..., 2) -> distorted normalised (..., 2)."""
        xy = np.asarray(xy, dtype=float)
        if self.fisheye:
            return xy * _fisheye_scale(np.linalg.norm(xy, axis=-1), self.distortion)[..., None]
        return _distort(xy, self.distortion)

    def to_pixels(self, xy_distorted: Array) -> Array:
        k = self.matrix
        u = k[0, 0] * xy_distorted[..., 0] + k[0, 1] * xy_distorted[..., 1] + k[0, 2]
        v = k[1, 1] * xy_distorted[..., 1] + k[1, 2]
        return np.stack([u, v], -1)

    def project(self, points: ArrayLike) -> Array:
        """World points (..., 3) -> pixels (..., 2) (``cv2.projectPoints``'s model)."""
        xc = self.to_camera(points)
        return self.to_pixels(self.distort(xc[..., :2] / xc[..., 2:3]))

    def project_jacobian(self, points: ArrayLike) -> tuple[Array, Array]:
        """Pixels (..., 2) and d pixels / d world point (..., 2, 3) at ``points`` (..., 3)."""
        points = np.asarray(points, dtype=float)
        xc = self.to_camera(points)
        inv_z = 1.0 / xc[..., 2:3]
        xy = xc[..., :2] * inv_z
        rot = self.rotation
        # d normalised / d world = ([R_0; R_1] - xy R_2) / z, (..., 2, 3)
        d_norm = (rot[:2] - xy[..., :, None] * rot[2]) * inv_z[..., None]
        if self.fisheye:
            d_dist = _numeric_jacobian(self.distort, xy)
        else:
            d_dist = _distort_jacobian(xy, self.distortion)
        k = self.matrix
        k2 = np.array([[k[0, 0], k[0, 1]], [0.0, k[1, 1]]])
        m = np.einsum("ij,...jk->...ik", k2, d_dist)
        jac = m[..., :, 0, None] * d_norm[..., None, 0, :] + m[..., :, 1, None] * d_norm[..., None, 1, :]
        return self.to_pixels(self.distort(xy)), jac

    def undistort(self, pixels: ArrayLike) -> Array:
        """Pixels (..., 2) -> undistorted normalised coordinates (..., 2) (``cv2.undistortPoints``)."""
        uv = np.asarray(pixels, dtype=float)
        k = self.matrix
        y_d = (uv[..., 1] - k[1, 2]) / k[1, 1]
        x_d = (uv[..., 0] - k[0, 2] - k[0, 1] * y_d) / k[0, 0]
        xy_d = np.stack([x_d, y_d], -1)
        if self.fisheye:
            return _undistort_fisheye(xy_d, self.distortion)
        return _undistort_pinhole(xy_d, self.distortion)

    def with_pose(self, rotation: ArrayLike, translation: ArrayLike) -> Camera:
        """A copy with another pose."""
        return replace(self, rotation=np.asarray(rotation, float), translation=np.asarray(translation, float))


def _numeric_jacobian(function: Any, xy: Array, step: float = 1e-7) -> Array:
    """Central-difference d function / d xy, (..., 2, 2)."""
    columns = []
    for i in range(2):
        delta = np.zeros(2)
        delta[i] = step
        columns.append((function(xy + delta) - function(xy - delta)) / (2 * step))
    return np.stack(columns, -1)


@dataclass(frozen=True)
class CameraGroup:
    """The calibrated cameras of one rig (names unique), plus the file's ``[metadata]``."""

    cameras: tuple[Camera, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if not isinstance(self.metadata, Mapping):
            raise CalibrationError(f"[metadata] must be a table, got {self.metadata!r}")
        object.__setattr__(self, "metadata", dict(self.metadata))
        if not self.cameras:
            raise CalibrationError("a camera group needs at least one camera")
        names = [c.name for c in self.cameras]
        for name in names:  # names become file names (elp triangulate --reproject DIR/<camera>.csv)
            try:
                check_name(name, "camera name")
            except UnsafePathError as exc:
                raise CalibrationError(str(exc)) from None
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise CalibrationError(f"duplicate camera name(s) {duplicates} in {names}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def __len__(self) -> int:
        return len(self.cameras)

    def __getitem__(self, name: str) -> Camera:
        for camera in self.cameras:
            if camera.name == name:
                return camera
        raise CalibrationError(f"no camera named {name!r} (cameras: {self.names})")

    def subset(self, names: Sequence[str]) -> CameraGroup:
        """The cameras ``names``, in that order."""
        return CameraGroup(tuple(self[n] for n in names), dict(self.metadata))

    def project(self, points: ArrayLike) -> Array:
        """World points (..., 3) -> pixels (C, ..., 2), one slice per camera."""
        return np.stack([c.project(points) for c in self.cameras])

    def in_front(self, points: ArrayLike) -> NDArray[np.bool_]:
        """(C, ...): whether each point (..., 3) lies in front of each camera (positive depth);
        False for a NaN point. A camera's rays are half-lines: a point behind it is not one it saw."""
        points = np.asarray(points, dtype=float)
        with np.errstate(invalid="ignore"):
            return np.stack([camera.to_camera(points)[..., 2] > 0 for camera in self.cameras])

    def undistort(self, pixels: ArrayLike) -> Array:
        """Pixels (C, ..., 2) -> undistorted normalised coordinates (C, ..., 2)."""
        pixels = np.asarray(pixels, dtype=float)
        return np.stack([c.undistort(p) for c, p in zip(self.cameras, pixels)])

    def reprojection_error(self, points: ArrayLike, pixels: ArrayLike) -> Array:
        """Distance in px between projected ``points`` (..., 3) and ``pixels`` (C, ..., 2): (C, ...)."""
        return np.linalg.norm(self.project(points) - np.asarray(pixels, dtype=float), axis=-1)


# A camera with at least this share of its triangulated points behind it gets a warning.
BEHIND_WARNING_SHARE = 0.1


def flag_views_behind(group: CameraGroup, points: ArrayLike, used: ArrayLike) -> NDArray[np.bool_]:
    """``used`` (C, ...) without the views whose point (..., 3) lies behind the camera.

    Warns (:class:`CameraBehindWarning`) naming each camera with at least
    ``BEHIND_WARNING_SHARE`` of its used points behind it: the signature of a wrong rotation
    or translation, or of 2D predictions that belong to another camera. Linear triangulation
    cannot see this itself (it fits the camera's whole line, both sides of the centre).
    """
    used = np.asarray(used, dtype=bool)
    front = group.in_front(points)
    behind = used & ~front
    for camera, seen, wrong in zip(group.cameras, used, behind):
        n_seen, n_wrong = int(seen.sum()), int(wrong.sum())
        if n_wrong and n_wrong >= BEHIND_WARNING_SHARE * n_seen:
            warnings.warn(
                f"camera {camera.name!r}: {n_wrong} of {n_seen} triangulated points lie behind it; its rotation "
                "or translation is likely wrong (or its 2D predictions belong to another camera); those views "
                "are not counted as used",
                CameraBehindWarning,
                stacklevel=3,
            )
    return np.asarray(used & front)


# ------------------------------------------------------------------------------ calibration.toml


def camera_from_table(table: Mapping[str, Any], section: str = "cam") -> Camera:
    """One ``[cam_N]`` table -> :class:`Camera` (:func:`check_camera`; errors name the camera and field)."""
    if not isinstance(table, Mapping):
        raise CalibrationError(f"[{section}] must be a table of camera fields, got {table!r}")
    where = f"[{section}]"
    name = table.get("name")
    rotation = None  # the file's Rodrigues vector: checked as numbers here, as a rotation by check_camera
    if isinstance(name, str) and name and "rotation" in table:
        rotation = rodrigues_to_matrix(_numbers(table["rotation"], f"camera {name!r} ({where})", "rotation", (3,)))
    values = check_camera(
        name,
        table.get("size"),
        table.get("matrix"),
        table.get("distortions"),
        rotation,
        table.get("translation"),
        table.get("fisheye", False),
        where=where,
        aliases={"distortion": "distortions"},
    )
    return Camera(**values)


def read_calibration(path: PathLike) -> CameraGroup:
    """Read anipose's ``calibration.toml`` (``[cam_N]`` tables in N order, ``[metadata]``)."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file not found")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path}: not a TOML file ({exc})") from exc
    sections = sorted((k for k in data if k.startswith("cam_")), key=lambda k: (len(k), k))
    if not sections:
        raise CalibrationError(f"{path}: no [cam_N] tables")
    try:
        cameras = tuple(camera_from_table(data[s], s) for s in sections)
        return CameraGroup(cameras, data.get("metadata", {}))
    except CalibrationError as exc:
        raise CalibrationError(f"{path}: {exc}") from exc


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest text that reads back to the same float
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, np.ndarray):
        return _toml_value(value.tolist())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise CalibrationError(f"metadata value {value!r} cannot be written to TOML")


def calibration_text(group: CameraGroup) -> str:
    """The ``calibration.toml`` text of ``group`` (round-trips exactly through :func:`read_calibration`)."""
    lines: list[str] = []
    for i, cam in enumerate(group.cameras):
        lines += [
            f"[cam_{i}]",
            f"name = {_toml_value(cam.name)}",
            f"size = {_toml_value(list(cam.size))}",
            f"matrix = {_toml_value(cam.matrix)}",
            f"distortions = {_toml_value(cam.distortion)}",
            f"rotation = {_toml_value(cam.rvec)}",
            f"translation = {_toml_value(cam.translation)}",
        ]
        if cam.fisheye:
            lines.append("fisheye = true")
        lines.append("")
    lines.append("[metadata]")
    for key, value in group.metadata.items():
        if isinstance(value, dict):
            continue  # nested tables are not part of the anipose format
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_calibration(group: CameraGroup, path: PathLike) -> Path:
    """Write ``group`` as ``calibration.toml`` (atomic, 0644)."""
    return write_text_atomic(path, calibration_text(group))
