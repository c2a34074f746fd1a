"""Validated parameters of the Ensemble Kalman Smoother (pydantic v2), one model for every caller.

``engine.eks.smooth`` / ``smooth_multiview``, ``elp smooth`` and ``ensemble.SmoothingParamSet``
all validate through :class:`SmoothingParams`, so a bad choice (``fit_range="zzz"``,
``keypoint_groups=5``, a misspelt key) is refused where it is given, with the key named,
instead of failing later in a populate whose message names no key. Checks that need the data
(a keypoint name, a range beyond the last frame, one ``s`` per keypoint) stay in the smoother.

``fit_range`` and ``keypoint_groups`` also accept the command line's text forms
(``"0:500,1000:"``, ``"nose,ear;tail"``) and are stored parsed (``"0:500"`` as ``[0, 500]``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator

from element_lightning_pose.engine.errors import ElpError, describe_validation_error

CentreMode = Literal["median", "mean"]
VarMode = Literal["confidence_weighted", "plain"]
NoiseModel = Literal["auto", "eks", "calibrated"]
OutlierMode = Literal["auto", "reject", "none"]
CENTRES: tuple[str, ...] = get_args(CentreMode)
VAR_MODES: tuple[str, ...] = get_args(VarMode)
NOISE_MODELS: tuple[str, ...] = get_args(NoiseModel)
OUTLIER_MODES: tuple[str, ...] = get_args(OutlierMode)
# The fields that take one of a few words, and the words (validated by SmoothingParams._one_of).
_CHOICES = {"centre": CENTRES, "var_mode": VAR_MODES, "noise": NOISE_MODELS, "outliers": OUTLIER_MODES}

KeypointRef = int | str
FrameRange = list[int | None]  # [start, stop], 0-based, stop excluded, None = open end
# what the smoothers accept: one (start, stop) or a list of them, tuples or lists
FitRangeArg = Sequence[int | None] | Sequence[Sequence[int | None]] | None


class SmoothingParamError(ElpError, ValueError):
    """Smoothing parameters are invalid; the message names each offending key."""


def _choice(key: str, value: Any, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ValueError(f"{key} must be {options}, got {value!r}")
    return value


def check_choice(key: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else :class:`SmoothingParamError` naming ``key``."""
    try:
        return _choice(key, value, allowed)
    except ValueError as exc:
        raise SmoothingParamError(str(exc)) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


class SmoothingParams(BaseModel):
    """Ensemble Kalman Smoother parameters (see :func:`engine.eks.smooth`); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    s: float | list[float] | None = None
    centre: Literal["median", "mean"] = "median"
    var_mode: Literal["confidence_weighted", "plain"] = "confidence_weighted"
    keypoint_groups: list[list[KeypointRef]] | None = None
    fit_range: FrameRange | list[FrameRange] | None = None
    noise: Literal["auto", "eks", "calibrated"] = "auto"
    # robust observations (engine.eks.robust): "reject" members far from the smoothed trace,
    # "none" (eks's model), "auto": reject when s is fitted, none when s is given (as noise)
    outliers: Literal["auto", "reject", "none"] = "auto"
    outlier_threshold: float = 5.0  # rejection at r > threshold (robust sd units, see robust.py)
    # multi-view smoother (engine.eks.multiview): the same keypoint in each view, per group
    view_groups: list[list[KeypointRef]] | None = None

    # Every validator runs before pydantic's own so that the message is ours (it names the key
    # and says what is accepted) and nothing is silently coerced ("4" is not 4, True is not 1).

    @field_validator("s", mode="before")
    @classmethod
    def _positive_s(cls, value: Any) -> float | list[float] | None:
        if value is None:
            return None
        if isinstance(value, np.ndarray):
            value = value.tolist()
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or not all(_is_number(v) and math.isfinite(v) and v > 0 for v in values):
            raise ValueError(
                "s must be positive and finite (px^2/frame; one value or one per keypoint) or None "
                f"(fitted), got {value!r}"
            )
        return [float(v) for v in values] if isinstance(value, (list, tuple)) else float(value)

    @field_validator(*_CHOICES, mode="before")
    @classmethod
    def _one_of(cls, value: Any, info: ValidationInfo) -> str:
        key = str(info.field_name)  # always set for a field validator
        return _choice(key, value, _CHOICES[key])

    @field_validator("outlier_threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> float:
        if not (_is_number(value) and math.isfinite(value) and value >= 2):
            raise ValueError(f"outlier_threshold must be a number >= 2 (robust sd units), got {value!r}")
        return float(value)

    @field_validator("keypoint_groups", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> list[list[KeypointRef]] | None:
        return check_groups("keypoint_groups", value)

    @field_validator("view_groups", mode="before")
    @classmethod
    def _view_groups(cls, value: Any) -> list[list[KeypointRef]] | None:
        groups = check_groups("view_groups", value)
        if groups and (len({len(g) for g in groups}) != 1 or len(groups[0]) < 2):
            raise ValueError(
                "view_groups must list the same number (>= 2) of keypoints in every group "
                f"(one per view), got {value!r}"
            )
        return groups

    @model_validator(mode="after")
    def _one_kind_of_groups(self) -> SmoothingParams:
        if self.view_groups and self.keypoint_groups:
            raise ValueError(
                "keypoint_groups and view_groups cannot be combined (a view group "
                "already shares one smoothing parameter)"
            )
        return self

    @field_validator("fit_range", mode="before")
    @classmethod
    def _fit_range(cls, value: Any) -> FrameRange | list[FrameRange] | None:
        if value is None:
            return None
        if isinstance(value, str):
            ranges = [_frame_range(r) for r in parse_fit_range(value, "fit_range") or []]
            return (ranges[0] if len(ranges) == 1 else ranges) or None  # "0:500" is (0, 500)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(
                f"fit_range must be (start, stop), a list of them, 'START:STOP[,START:STOP]' or None, got {value!r}"
            )
        if all(isinstance(r, (list, tuple)) for r in value):
            return [_frame_range(r) for r in value]
        return _frame_range(value)  # one (start, stop) pair, kept as one (as it was given)

    @classmethod
    def from_dict(
        cls,
        values: Mapping[str, Any] | None,
        source: str = "smoothing parameters",
        key_names: Mapping[str, str] | None = None,
    ) -> SmoothingParams:
        """Validate a (partial) mapping; missing keys take their defaults.

        Raises :class:`SmoothingParamError` naming ``source`` and every offending key
        (``key_names`` renames keys in the message, e.g. to command-line options).
        """
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise SmoothingParamError(f"{source}: expected a mapping of parameters, got {type(values).__name__}")
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise SmoothingParamError(describe_validation_error(exc, source, cls, key_names=key_names)) from None

    def to_dict(self) -> dict[str, Any]:
        """Every parameter, defaults filled in, as plain Python (what a parameter set stores).

        Keys added after parameter sets were first stored (``LATER_KEYS``) are left out at
        their defaults, so a set stored before them keeps its canonical form and its hash.
        """
        values = self.model_dump()
        for key, default in LATER_KEYS.items():
            if values[key] == default:
                del values[key]
        return values


# keys added later, with their defaults: omitted from the canonical dict at the default
LATER_KEYS: dict[str, Any] = {"outliers": "auto", "outlier_threshold": 5.0, "view_groups": None}


def validate_smoothing_params(params: Mapping[str, Any] | None, source: str = "smoothing parameters") -> dict:
    """Check smoothing parameters; returns them with defaults filled in (the canonical dict)."""
    return SmoothingParams.from_dict(params, source).to_dict()


def _frame_range(pair: Any) -> FrameRange:
    """One ``(start, stop)``: integers >= 0 or None (open end), start < stop."""
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(v is None or _is_int(v) for v in pair):
        raise ValueError(f"fit_range must hold (start, stop) pairs of integers or None, got {pair!r}")
    start, stop = (None if v is None else int(v) for v in pair)
    if (start is not None and start < 0) or (stop is not None and stop <= (start or 0)):
        raise ValueError(f"fit_range ({start}, {stop}) is empty or negative (0-based, stop excluded)")
    return [start, stop]


def check_groups(key: str, value: Any) -> list[list[KeypointRef]] | None:
    """Groups of keypoints (names, or indices >= 0), each listed once; text ``"a,b;c"`` accepted."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_groups(value)  # then checked as if given as lists
        if not value:
            return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(group, (list, tuple)) and group for group in value):
        raise ValueError(f"{key} must be a list of non-empty lists of keypoint names or indices, got {value!r}")
    groups = []
    seen: set = set()
    for group in value:
        for item in group:
            if not ((_is_int(item) and item >= 0) or (isinstance(item, str) and item)):
                raise ValueError(f"{key} must list keypoint names or indices >= 0, got {item!r}")
            if item in seen:
                raise ValueError(f"{key} lists {item!r} in more than one group")
            seen.add(item)
        groups.append([int(item) if _is_int(item) else item for item in group])
    return groups


def parse_fit_range(text: str | None, key: str | None = None) -> list[tuple[int | None, int | None]] | None:
    """``"0:500,1000:"`` -> ``[(0, 500), (1000, None)]``."""
    if not text:
        return None
    where = f"{key}: " if key else ""
    ranges = []
    for part in text.split(","):
        start, sep, stop = part.partition(":")
        if not sep:
            raise ValueError(f"{where}{part!r} is not START:STOP")
        try:
            ranges.append((int(start) if start.strip() else None, int(stop) if stop.strip() else None))
        except ValueError as exc:
            raise ValueError(f"{where}{part!r} is not START:STOP with integers") from exc
    return ranges


def parse_groups(text: str | None) -> list[list[int | str]] | None:
    """``"nose,ear;0,3"`` -> ``[["nose", "ear"], [0, 3]]`` (digits become indices)."""
    if not text:
        return None
    groups = []
    for chunk in text.split(";"):
        items = [item.strip() for item in chunk.split(",") if item.strip()]
        if items:
            groups.append([int(item) if item.isdigit() else item for item in items])
    return groups
