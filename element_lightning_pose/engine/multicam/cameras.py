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

The Rodrigues <-> matrix conversions here are exact in floating point (no ``arccos`` of a
trace), including rotations of angle near 0 and near pi.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tomllib
from numpy.typing import ArrayLike, NDArray

from element_lightning_pose.engine.atomic import write_text_atomic
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.safe_paths import UnsafePathError, check_name

PathLike = str | os.PathLike
Array = NDArray[np.float64]

_SMALL_ANGLE = 1e-4  # below this angle, Taylor series replace sin/cos ratios


class CalibrationError(ElpError):
    """A calibration (file or object) is malformed; the message names the camera and field."""


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
        for attr, shape in (
            ("matrix", (3, 3)),
            ("rotation", (3, 3)),
            ("translation", (3,)),
            ("distortion", (4,) if self.fisheye else (5,)),
        ):
            value = np.asarray(getattr(self, attr), dtype=float)
            if value.shape != shape:
                raise CalibrationError(
                    f"camera {self.name!r}: {attr} has shape {value.shape}, expected {shape}"
                    f"{' (fisheye)' if self.fisheye and attr == 'distortion' else ''}"
                )
            if not np.all(np.isfinite(value)):
                raise CalibrationError(f"camera {self.name!r}: {attr} has non-finite values {value.tolist()}")
            object.__setattr__(self, attr, value)
        if not np.allclose(self.rotation @ self.rotation.T, np.eye(3), atol=1e-6) or np.linalg.det(self.rotation) < 0:
            raise CalibrationError(f"camera {self.name!r}: rotation is not a rotation matrix")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

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

    def undistort(self, pixels: ArrayLike) -> Array:
        """Pixels (C, ..., 2) -> undistorted normalised coordinates (C, ..., 2)."""
        pixels = np.asarray(pixels, dtype=float)
        return np.stack([c.undistort(p) for c, p in zip(self.cameras, pixels)])

    def reprojection_error(self, points: ArrayLike, pixels: ArrayLike) -> Array:
        """Distance in px between projected ``points`` (..., 3) and ``pixels`` (C, ..., 2): (C, ...)."""
        return np.linalg.norm(self.project(points) - np.asarray(pixels, dtype=float), axis=-1)


# ------------------------------------------------------------------------------ calibration.toml


def _field(table: Mapping[str, Any], key: str, section: str, name: str, shape: tuple[int, ...]) -> Array:
    if key not in table:
        raise CalibrationError(f"camera {name!r} ([{section}]): field {key!r} is missing")
    try:
        value = np.asarray(table[key], dtype=float)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"camera {name!r} ([{section}]): field {key!r} is not numeric ({exc})") from exc
    if value.shape != shape:
        raise CalibrationError(
            f"camera {name!r} ([{section}]): field {key!r} has shape {value.shape} "
            f"(length {value.size}), expected {shape}"
        )
    if not np.all(np.isfinite(value)):
        raise CalibrationError(f"camera {name!r} ([{section}]): field {key!r} has non-finite values")
    return value


def camera_from_table(table: Mapping[str, Any], section: str = "cam") -> Camera:
    """One ``[cam_N]`` table -> :class:`Camera` (errors name the camera and the field)."""
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise CalibrationError(f"[{section}]: field 'name' is missing or not a string")
    fisheye = bool(table.get("fisheye", False))
    size = _field(table, "size", section, name, (2,))
    if np.any(size <= 0) or np.any(size != np.round(size)):
        raise CalibrationError(f"camera {name!r} ([{section}]): field 'size' must be two positive integers")
    rvec = _field(table, "rotation", section, name, (3,))
    return Camera(
        name=name,
        size=(int(size[0]), int(size[1])),
        matrix=_field(table, "matrix", section, name, (3, 3)),
        distortion=_field(table, "distortions", section, name, (4,) if fisheye else (5,)),
        rotation=rodrigues_to_matrix(rvec),
        translation=_field(table, "translation", section, name, (3,)),
        fisheye=fisheye,
    )


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
        return CameraGroup(cameras, dict(data.get("metadata", {})))
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
