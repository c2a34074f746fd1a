"""Validated triangulation parameters (pydantic v2) and the one function that applies them.

``multicam.TriangulationParamSet`` stores a :class:`TriangulationParams` dict (validated and
hashed at insert); ``multicam.Triangulation`` turns it back into the engine's calls through
:func:`triangulate_views`. Keys::

    method          'smoother' (the Bayesian 3D smoother, smooth_3d; default) | 'robust'
                    (camera pairs + Student-t, triangulate_robust) | 'dlt' (weighted linear)
    min_likelihood  2D predictions below this likelihood are ignored (default 0.5)
    skeleton        limb-length prior of the smoother: [[body part, body part], ...] or None
    bone_lengths    one length per skeleton edge (calibration units), or None (fitted)
    smoother        {nu, floor_px, iterations, q, limb_sd, limb_iterations, min_weight, error_px}
                    error_px: the 2D sources' own error (px sd per image axis), added to the
                    3D posterior as an error the views share: a number, {body part: number},
                    'variance' (each view's 2D variance: an ensemble's spread, EKS posterior),
                    'evaluation' (the pipeline: each camera's model's ModelEvaluation) or None
    robust          {sigma_px, nu, iterations, min_weight}
    dlt             {sigma_px}

Iteration counts are at most ``smoother.MAX_ITERATIONS`` (the smoother stops earlier once it
has converged). Errors (:class:`TriangulationParamError`) name every key at fault, dotted for
the nested ones (``smoother.nu``, ``skeleton.1``), or as the caller spells them (``key_names``,
e.g. ``elp triangulate``'s options). Checks that need the data (a skeleton body part the
sources do not have, fewer than two cameras) are made by :func:`triangulate_views`.

``elp triangulate`` and ``multicam.Triangulation`` both validate here, read their views with
``io.read_views`` and run :func:`triangulate_views`: one route from 2D to 3D.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from element_lightning_pose.engine.errors import ElpError, describe_validation_error
from element_lightning_pose.engine.multicam.cameras import CameraGroup
from element_lightning_pose.engine.multicam.smoother import MAX_ITERATIONS, Progress, SmootherOptions, smooth_3d
from element_lightning_pose.engine.multicam.triangulate import (
    TriangulationError,
    check_cameras,
    triangulate_dlt,
    triangulate_robust,
)

Array = NDArray[np.float64]
METHODS = ("smoother", "robust", "dlt")
ERROR_SOURCES = ("variance", "evaluation")  # smoother.error_px's names of where the 2D error scale comes from

# Defaults come from the engine functions themselves: one owner per default.
_SMOOTHER = SmootherOptions()
_ROBUST = inspect.signature(triangulate_robust).parameters
_DLT = inspect.signature(triangulate_dlt).parameters


class TriangulationParamError(ElpError, ValueError):
    """Triangulation parameters are invalid; the message names each offending key."""


def _number(key: str, value: Any, *, low: float, low_open: bool = False, high: float | None = None) -> float:
    """A finite real (not a bool, not a string) in [low, high] (or (low, high] when ``low_open``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{key} must be a number {bound}, got {value!r}")
    return float(value)


def _integer(key: str, value: Any, low: int, high: int) -> int:
    if not (
        isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and low <= int(value) <= high
    ):
        raise ValueError(f"{key} must be an integer in {low} .. {high}, got {value!r}")
    return int(value)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmootherParams(_Options):
    """Options of :func:`~.smoother.smooth_3d` (see :class:`~.smoother.SmootherOptions`)."""

    nu: float = _SMOOTHER.nu
    floor_px: float = _SMOOTHER.floor_px
    iterations: int = _SMOOTHER.iterations
    q: float | None = None
    limb_sd: float = _SMOOTHER.limb_sd
    limb_iterations: int = _SMOOTHER.limb_iterations
    min_weight: float = _SMOOTHER.min_weight
    error_px: float | dict[str, float] | str | None = None

    @field_validator("error_px", mode="before")
    @classmethod
    def _error(cls, value: Any) -> float | dict[str, float] | str | None:
        if value is None or value in ERROR_SOURCES:
            return value
        if isinstance(value, Mapping):
            if not value or not all(isinstance(name, str) and name for name in value):
                raise ValueError(f"error_px must map body-part names to px, got {value!r}")
            return {name: _number(f"error_px.{name}", v, low=0.0) for name, v in value.items()}
        if isinstance(value, str):
            raise ValueError(
                f"error_px must be a number, {{body part: number}}, {' or '.join(map(repr, ERROR_SOURCES))} "
                f"or None, got {value!r}"
            )
        return _number("error_px", value, low=0.0)

    @field_validator("nu", "floor_px", "limb_sd", mode="before")
    @classmethod
    def _positive(cls, value: Any, info: Any) -> float:
        return _number(info.field_name, value, low=0.0, low_open=True)

    @field_validator("q", mode="before")
    @classmethod
    def _q(cls, value: Any) -> float | None:
        return None if value is None else _number("q", value, low=0.0, low_open=True)

    @field_validator("iterations", "limb_iterations", mode="before")
    @classmethod
    def _count(cls, value: Any, info: Any) -> int:
        return _integer(info.field_name, value, 1, MAX_ITERATIONS)

    @field_validator("min_weight", mode="before")
    @classmethod
    def _weight(cls, value: Any) -> float:
        return _number("min_weight", value, low=0.0, high=1.0)


class RobustParams(_Options):
    """Options of :func:`~.triangulate.triangulate_robust`."""

    sigma_px: float = _ROBUST["sigma_px"].default
    nu: float = _ROBUST["nu"].default
    iterations: int = _ROBUST["iterations"].default
    min_weight: float = _ROBUST["min_weight"].default

    @field_validator("sigma_px", "nu", mode="before")
    @classmethod
    def _positive(cls, value: Any, info: Any) -> float:
        return _number(info.field_name, value, low=0.0, low_open=True)

    @field_validator("iterations", mode="before")
    @classmethod
    def _count(cls, value: Any) -> int:
        return _integer("iterations", value, 1, MAX_ITERATIONS)

    @field_validator("min_weight", mode="before")
    @classmethod
    def _weight(cls, value: Any) -> float:
        return _number("min_weight", value, low=0.0, high=1.0)


class DltParams(_Options):
    """Options of :func:`~.triangulate.triangulate_dlt`."""

    sigma_px: float = _DLT["sigma_px"].default

    @field_validator("sigma_px", mode="before")
    @classmethod
    def _positive(cls, value: Any) -> float:
        return _number("sigma_px", value, low=0.0, low_open=True)


class TriangulationParams(_Options):
    """How ``multicam.Triangulation`` turns 2D predictions into 3D; unknown keys are errors."""

    method: Literal["smoother", "robust", "dlt"] = "smoother"
    min_likelihood: float = _SMOOTHER.min_likelihood
    skeleton: list[tuple[str, str]] | None = None
    bone_lengths: list[float] | None = None
    smoother: SmootherParams = SmootherParams()
    robust: RobustParams = RobustParams()
    dlt: DltParams = DltParams()

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: Any) -> str:
        if value not in METHODS:
            raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}, got {value!r}")
        return str(value)

    @field_validator("min_likelihood", mode="before")
    @classmethod
    def _likelihood(cls, value: Any) -> float:
        return _number("min_likelihood", value, low=0.0, high=1.0)

    @field_validator("skeleton", mode="before")
    @classmethod
    def _skeleton(cls, value: Any) -> list[tuple[str, str]] | None:
        if value is None:
            return None
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(
                f"skeleton must be a non-empty list of [body part, body part] pairs or None, got {value!r}"
            )
        edges = []
        for number, edge in enumerate(value):
            if (
                not isinstance(edge, (list, tuple))
                or len(edge) != 2
                or not all(isinstance(n, str) and n for n in edge)
                or edge[0] == edge[1]
            ):
                raise ValueError(f"skeleton edge {number} must be two different body-part names, got {edge!r}")
            edges.append((edge[0], edge[1]))
        return edges

    @field_validator("bone_lengths", mode="before")
    @classmethod
    def _lengths(cls, value: Any) -> list[float] | None:
        if value is None:
            return None
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"bone_lengths must be a list of positive lengths or None, got {value!r}")
        return [_number("bone_lengths", v, low=0.0, low_open=True) for v in value]

    @model_validator(mode="after")
    def _consistent(self) -> TriangulationParams:
        if self.skeleton and self.method != "smoother":
            raise ValueError(f"skeleton needs method 'smoother' (the limb-length prior), got method {self.method!r}")
        if self.bone_lengths is not None and (not self.skeleton or len(self.bone_lengths) != len(self.skeleton)):
            edges = len(self.skeleton) if self.skeleton else 0
            raise ValueError(f"bone_lengths gives {len(self.bone_lengths)} length(s) for {edges} skeleton edge(s)")
        return self

    @classmethod
    def from_dict(
        cls,
        values: Mapping[str, Any] | None,
        source: str = "triangulation parameters",
        key_names: Mapping[str, str] | None = None,
    ) -> TriangulationParams:
        """Validate a (partial) mapping; missing keys take their defaults.

        Raises :class:`TriangulationParamError` naming ``source`` and every offending key
        (``key_names`` renames keys in the message, e.g. to command-line options).
        """
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise TriangulationParamError(
                f"{source}: expected a mapping of parameters, got {type(values).__name__} {values!r}"
            )
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise TriangulationParamError(describe_validation_error(exc, source, cls, key_names=key_names)) from None

    def to_dict(self) -> dict[str, Any]:
        """Every parameter, defaults filled in, as plain Python (what a parameter set stores and hashes)."""
        values = self.model_dump()
        if values["skeleton"] is not None:
            values["skeleton"] = [list(edge) for edge in values["skeleton"]]
        return values


def validate_triangulation_params(params: Mapping[str, Any] | None, source: str = "triangulation parameters") -> dict:
    """Check triangulation parameters; returns the canonical dict (defaults filled in)."""
    return TriangulationParams.from_dict(params, source).to_dict()


# ------------------------------------------------------------------------------ running


@dataclass
class Result3D:
    """3D estimates of T frames x K body parts from C cameras.

    Attributes:
        points: (T, K, 3) positions, NaN where not triangulated.
        variance: (T, K, 3) posterior variance per axis (calibration units squared).
        reprojection_error: (C, T, K) px distance between the projected 3D point and each
            camera's 2D prediction (NaN where either is missing).
        mean_reprojection_error: (T, K) the method's mean over the views it used.
        n_views: (T, K) views used.
    """

    points: Array
    variance: Array
    reprojection_error: Array
    mean_reprojection_error: Array
    n_views: NDArray[np.int64]


def skeleton_edges(skeleton: Sequence[Sequence[str]], bodyparts: Sequence[str]) -> list[tuple[int, int]]:
    """Body-part name pairs -> index pairs; an unknown name is an error naming it."""
    unknown = sorted({name for edge in skeleton for name in edge if name not in bodyparts})
    if unknown:
        raise TriangulationParamError(f"skeleton: body part(s) {unknown} are not in the predictions {list(bodyparts)}")
    return [(list(bodyparts).index(a), list(bodyparts).index(b)) for a, b in skeleton]


def triangulate_views(
    group: CameraGroup,
    pixels: Array,
    likelihood: Array,
    variance: Array | None,
    bodyparts: Sequence[str],
    params: TriangulationParams,
    progress: Progress | None = None,
    evaluation_error_px: Array | None = None,
) -> Result3D:
    """Run the method of ``params`` on ``pixels`` (C, T, K, 2) with ``likelihood`` (C, T, K)
    and 2D ``variance`` (C, T, K) px^2 (None: 0), cameras in ``group`` order.

    ``smoother.error_px='evaluation'`` takes the error scale (C, K) px of each camera's model
    from ``evaluation_error_px`` (the pipeline reads it from ``ModelEvaluation``; see
    :func:`~element_lightning_pose.engine.inference.metrics.error_scale_px`).

    Refused (:class:`~.triangulate.TriangulationError`, naming what is wrong): fewer than two
    cameras (:func:`~.triangulate.check_cameras`), and inputs where no body part is seen by two
    cameras with ``min_likelihood`` in any frame (the result would be all NaN).
    ``progress(done, total)`` follows the smoother's iterations.
    """
    check_cameras(group)
    confident = np.isfinite(pixels).all(-1) & (np.nan_to_num(likelihood) >= params.min_likelihood)
    if not (confident.sum(axis=0) >= 2).any():
        raise TriangulationError(
            f"no body part is seen by two of the cameras {group.names} with likelihood >= "
            f"{params.min_likelihood:g} in any frame: nothing to triangulate"
        )
    if params.method == "smoother":
        settings = params.smoother.model_dump()
        settings["error_px"] = _error_px(params.smoother.error_px, bodyparts, evaluation_error_px)
        options = SmootherOptions(min_likelihood=params.min_likelihood, **settings)
        edges = skeleton_edges(params.skeleton, bodyparts) if params.skeleton else None
        result = smooth_3d(
            group,
            pixels,
            likelihood,
            variance,
            skeleton=edges,
            bone_lengths=params.bone_lengths,
            options=options,
            progress=progress,
            keypoint_names=list(bodyparts),
        )
        points, var, error, n_views = result.points, result.variance, result.reprojection_error, result.n_views
    else:
        weights = np.where(likelihood >= params.min_likelihood, likelihood, 0.0)
        if params.method == "robust":
            tri = triangulate_robust(group, pixels, weights, **params.robust.model_dump())
        else:
            tri = triangulate_dlt(group, pixels, weights, **params.dlt.model_dump())
        points, var, error, n_views = tri.points, tri.variance, tri.reprojection_error, tri.n_views
    with np.errstate(invalid="ignore"):
        per_camera = group.reprojection_error(points, pixels)  # NaN wherever either side is NaN
    return Result3D(points, var, per_camera, error, np.asarray(n_views, dtype=np.int64))


def _error_px(
    error_px: float | dict[str, float] | str | None, bodyparts: Sequence[str], evaluation: Array | None
) -> float | Array | str | None:
    """``smoother.error_px`` as :class:`SmootherOptions` takes it: body-part names to an array
    in ``bodyparts`` order, ``'evaluation'`` to ``evaluation`` (C, K)."""
    if isinstance(error_px, dict):
        missing = [name for name in bodyparts if name not in error_px]
        unknown = sorted(set(error_px) - set(bodyparts))
        if missing or unknown:
            raise TriangulationParamError(
                f"smoother.error_px: no error scale for body part(s) {missing}"
                + (f"; not in the predictions: {unknown}" if unknown else "")
                + f" (the predictions' body parts: {list(bodyparts)})"
            )
        return np.array([error_px[name] for name in bodyparts])
    if error_px == "evaluation":
        if evaluation is None:
            raise TriangulationParamError(
                "smoother.error_px='evaluation' needs the models' evaluation on labeled frames (the pipeline's "
                "ModelEvaluation); outside it give numbers: error_px=12 or {body part: px}"
            )
        return np.asarray(evaluation, dtype=float)
    return error_px
