"""Flags in the human labels of a project: what a person should look at again, and why.

:func:`check_labels` runs four checks over a project's :class:`LabeledFrames` and returns a
:class:`LabelReport`: the :class:`LabelFlag` of each suspicious label (its row's image, view,
body parts, kind, score and a one-line message), most suspicious first, and a note for each
check that could not run (too few frames, no calibration, no predictions). A flag's ``score`` is
its evidence divided by the threshold of its kind, so every flag scores at least 1 and scores of
different kinds sort together. The thresholds are :class:`LabelCheckParams`.

Rows are checked per view: the rows of one camera of a multi-view project
(``LabeledFrames.views``), or all rows of a single-view project (whose body parts may name two
views of one frame, as the mirror-mouse rig's ``_top`` / ``_bot``).

1. **Left/right swaps** (``"left_right_swap"``). Symmetric pairs come from the body-part names
   (:func:`symmetric_pairs`) or are given. For a pair, each view's frames are aligned on their
   other keypoints (generalised Procrustes: rotation, scale, translation, no reflection), and a
   frame's pair is predicted by the median of its ``8`` nearest frames in that aligned space
   (nearest by their other keypoints), so a project whose poses are many (an animal seen from
   the side and from the front) is judged by the frames like it. The pair is flagged when
   exchanging its labels lowers the squared distance to the prediction, in units of the
   prediction's variance (the neighbours' spread, at least their distance in pose to the frame
   and 5% of the animal's radius), by ``swap_margin``. A few wrong frames among the neighbours
   do not move the median. Needs ``min_frames`` frames labeling the pair and three other
   keypoints; with fewer, a note says so. In a view where the two sides overlap (a side view)
   the exchange changes little and nothing is flagged.
2. **Bone lengths** (``"bone_length"``). Bones are the ``skeleton`` (pairs of body-part names),
   or without one the spanning tree of the keypoint pairs whose distance varies least relative
   to its length (:func:`~element_lightning_pose.engine.training.rig_losses.bone_tree`, robust
   form), fitted per view; with a calibration, on the triangulated labels in 3D instead (no
   foreshortening). Lengths are divided by their video's scale (the folder of the image), so a
   video filmed closer does not count. A bone is flagged when its length is ``bone_z`` robust
   standard deviations from the bone's median: the largest of 1.4826 MAD, the 10th-90th
   percentile range / 2.563 (heavy tails and two modes, as foreshortening gives, widen it),
   ``bone_min_spread`` of the median and ``label_noise_px`` (2D). A keypoint shared by two or
   more flagged bones of a frame is named alone (it is the label to move). A label moved
   across a bone, not along it, barely changes its length: the other checks see that better.
3. **Views that disagree in 3D** (``"view_disagreement"``), for a multi-view project and its
   calibration. A keypoint labeled in three or more views is tested view by view: the others
   are triangulated (:func:`~element_lightning_pose.engine.multicam.triangulate.triangulate_dlt`)
   and the view is reprojected. It is flagged when its error exceeds the threshold while the
   others agree without it; when two views each explain the disagreement (a shift along one
   camera pair's epipolar line), both are flagged and each message names the other. A keypoint
   labeled in two views gets the sum of their errors, on the worse view (either may be wrong;
   a shift along the epipolar line cannot be seen). The threshold is ``max(reprojection_px,
   reprojection_factor x the median of these errors over the project)``.
4. **Model disagreement** (``"model_disagreement"``), given a cross-validated model's
   predictions on the labeled frames ((N, K, 3): x, y, likelihood per row, e.g.
   :func:`~element_lightning_pose.engine.inference.predict.predict_labeled` of a model that did
   not train on those rows; a model that did has learned the labels, mistakes included). A
   label is flagged when the prediction is at least ``model_distance`` animal sizes away (the
   size: root mean square distance of the row's labeled keypoints from their centroid) and the
   model's likelihood is at least ``model_min_likelihood`` (an unsure model is not evidence).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from element_lightning_pose.engine.data.labels import LabeledFrames
from element_lightning_pose.engine.errors import ElpError, describe_validation_error
from element_lightning_pose.engine.multicam.cameras import CameraGroup, read_calibration
from element_lightning_pose.engine.multicam.triangulate import triangulate_dlt
from element_lightning_pose.engine.training.rig_losses import bone_tree
from element_lightning_pose.engine.types import PathLike

SWAP = "left_right_swap"
BONE = "bone_length"
VIEWS = "view_disagreement"
MODEL = "model_disagreement"
KINDS = (SWAP, BONE, VIEWS, MODEL)

MAD_TO_SD = 1.4826  # sd of a normal distribution / its median absolute deviation
DECILES_TO_SD = 2.5631  # (90th - 10th percentile) / sd of a normal distribution
# Aligned poses are in units of the reference's root mean square radius; the spread of a
# predicted keypoint is at least this, so two keypoints closer than a few times it (which no
# one can tell apart in a frame) are never called exchanged.
SWAP_FLOOR = 0.05
SWAP_NEIGHBOURS = 8  # frames whose poses predict a frame's pair
DISTANCE_BLOCK = 512  # frames whose pose distances to all others are computed at once
CHI2_2_MEDIAN = 2 * np.log(2)  # median of chi-square with 2 degrees of freedom
MIN_KEYPOINTS_TO_ALIGN = 3


class LabelCheckError(ElpError, ValueError):
    """The inputs of a label check do not fit the labels; the message names the one at fault."""


class LabelCheckParams(BaseModel):
    """The thresholds of :func:`check_labels`. Defaults are meant to hold on projects nobody
    tuned them on: a clean project raises no flag, a gross mistake does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_frames: int = Field(
        12, ge=3, description="labeled frames a view needs for the swap and bone checks (a distribution to compare to)"
    )
    swap_margin: float = Field(
        16.0,
        gt=0,
        description="how much closer the exchanged pair must lie to where the frame's nearest poses put it, "
        "in squared standard deviations of that prediction",
    )
    bone_z: float = Field(6.0, gt=0, description="robust standard deviations a bone length may stray from its median")
    bone_min_spread: float = Field(
        0.05, ge=0, description="a bone's standard deviation is at least this share of its median length"
    )
    label_noise_px: float = Field(2.0, ge=0, description="a bone's standard deviation is at least this many pixels")
    reprojection_px: float = Field(
        6.0, gt=0, description="a view's disagreement with the others (px) below this is never flagged"
    )
    reprojection_factor: float = Field(
        5.0, gt=0, description="a view is flagged above this many times the project's median disagreement"
    )
    model_distance: float = Field(
        0.3, gt=0, description="label-to-prediction distance, in animal sizes (rms radius), that is flagged"
    )
    model_min_likelihood: float = Field(
        0.5, ge=0, le=1, description="a prediction less likely than this is not evidence against a label"
    )


@dataclass(frozen=True)
class LabelFlag:
    """One suspicious label: where it is, what is wrong, how sure the check is.

    ``row`` indexes the labels (and ``image`` is that row's image path); ``score`` is the
    evidence over the kind's threshold (at least 1; higher is surer).
    """

    kind: str
    row: int
    image: str
    view: str | None
    bodyparts: tuple[str, ...]
    score: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bodyparts"] = list(self.bodyparts)
        return out


@dataclass
class LabelReport:
    """The flags of :func:`check_labels` (most suspicious first) and a note per check not run."""

    flags: list[LabelFlag] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[LabelFlag]:
        return [flag for flag in self.flags if flag.kind == kind]


# ------------------------------------------------------------------------------ symmetric names

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_SIDE_WORDS = {"left": "right", "right": "left"}


def _side_mark(token: str) -> tuple[str, int, int, str] | None:
    """(``"l"`` or ``"r"``, start, end, the other side's spelling) of the side mark in a word,
    else None: the whole word ``left`` / ``right`` (any case), or in a word of one or two letters
    an ``l`` / ``r`` (any case) at one end (``l``, ``R``, ``fl``, ``LH``, ``lf``)."""
    lower = token.lower()
    if lower in _SIDE_WORDS:
        other = _SIDE_WORDS[lower]
        spelled = other.upper() if token.isupper() else other.capitalize() if token[0].isupper() else other
        return lower[0], 0, len(token), spelled
    if not token.isalpha() or len(token) > 2:
        return None
    ends = [i for i in {0, len(token) - 1} if token[i].lower() in "lr"]
    if len(ends) != 1:  # "lr", "rl" or no side letter
        return None
    i = ends[0]
    return token[i].lower(), i, i + 1, {"l": "r", "r": "l", "L": "R", "R": "L"}[token[i]]


def _side_variants(name: str) -> list[tuple[str, str, str]]:
    """(side, the name with the side exchanged, its signature) for each side mark of ``name``;
    the signature replaces the mark by ``<side>`` and every run of digits by ``#``."""
    variants = []
    for match in _WORD.finditer(name):
        mark = _side_mark(match.group())
        if mark is None:
            continue
        side, start, end, other = mark
        start, end = match.start() + start, match.start() + end
        swapped = name[:start] + other + name[end:]
        signature = re.sub(r"\d+", "#", name[:start]) + "<side>" + re.sub(r"\d+", "#", name[end:])
        variants.append((side, swapped, signature))
    return variants


def symmetric_pairs(bodyparts: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of body parts that name the two sides of the animal, found from the names.

    A name is cut into words at separators (anything not a letter or digit), at a change from
    lower to upper case and around digits (``paw1LH_top``: ``paw``, ``1``, ``LH``, ``top``). A
    word marks a side when it is ``left`` / ``right`` or one or two letters with ``l`` / ``r``
    (any case) at one end: ``l``, ``R``, ``fl``, ``hr``, ``LH``, ``RF``. Two names pair when one
    turns into the other by exchanging that letter (or word): ``paw_l`` / ``paw_r``,
    ``left_ear`` / ``right_ear``, ``L_hand`` / ``R_hand``, ``earLeft`` / ``earRight``,
    ``paw_fl`` / ``paw_fr``. A name left without a partner then pairs with the one name that
    differs from it in the side and in numbers only (``paw1LH_top`` / ``paw4RH_top``), when
    exactly one such name exists each way. Returns (left, right) pairs in body-part order.
    """
    names = list(bodyparts)
    known = set(names)
    pairs: list[tuple[str, str]] = []
    paired: set[str] = set()
    for name in names:
        for side, swapped, _ in _side_variants(name):
            if side == "l" and swapped in known and swapped != name and not {name, swapped} & paired:
                pairs.append((name, swapped))
                paired.update((name, swapped))
    by_signature: dict[str, dict[str, list[str]]] = {}
    for name in names:
        if name in paired:
            continue
        for side, _, signature in _side_variants(name):
            by_signature.setdefault(signature, {"l": [], "r": []})[side].append(name)
    for sides in by_signature.values():
        lefts, rights = (sorted(set(sides[s]) - paired) for s in "lr")
        if len(lefts) == 1 and len(rights) == 1:
            pairs.append((lefts[0], rights[0]))
            paired.update((lefts[0], rights[0]))
    order = {name: i for i, name in enumerate(names)}
    return sorted(pairs, key=lambda pair: order[pair[0]])


# ------------------------------------------------------------------------------ the entry point


def check_labels(
    labels: LabeledFrames,
    *,
    skeleton: Sequence[Sequence[str]] | None = None,
    symmetric: Sequence[Sequence[str]] | None = None,
    calibration: CameraGroup | PathLike | None = None,
    camera_names: Mapping[str, str] | None = None,
    predictions: np.ndarray | None = None,
    params: LabelCheckParams | Mapping[str, Any] | None = None,
) -> LabelReport:
    """Flag suspicious human labels (module docstring: the four checks and their rules).

    Args:
        labels: the project's labels (:func:`~element_lightning_pose.engine.data.projects.read_project_labels`).
        skeleton: bones as pairs of body-part names; None: inferred from the labels per view.
        symmetric: left/right pairs of body-part names; None: :func:`symmetric_pairs` of the
            names; an empty list skips the swap check.
        calibration: the rig's cameras (a ``calibration.toml`` or a ``CameraGroup``) for the 3D
            check of a multi-view project; None skips it.
        camera_names: the calibration's camera of each view, where the names differ.
        predictions: (N, K, 3) x, y, likelihood of a cross-validated model on the labeled rows;
            None skips the model check.
        params: the thresholds (:class:`LabelCheckParams`, or a mapping of its fields).

    Raises :class:`LabelCheckError` naming the argument at fault (an unknown body part, a
    calibration without a camera for a view, predictions of another shape, a bad threshold).
    """
    params = _params(params)
    bones = None if skeleton is None else _named_pairs(skeleton, labels.bodyparts, "skeleton")
    if symmetric is None:
        found = symmetric_pairs(labels.bodyparts)
        pairs = [(labels.bodyparts.index(a), labels.bodyparts.index(b)) for a, b in found]
    else:
        pairs = _named_pairs(symmetric, labels.bodyparts, "symmetric")
    if predictions is not None:
        predictions = _check_predictions(predictions, labels)
    cameras = None
    if calibration is not None:
        cameras = calibration if isinstance(calibration, CameraGroup) else read_calibration(calibration)

    report = LabelReport()
    if pairs:
        _check_swaps(labels, pairs, params, report)
    elif symmetric is None:
        report.notes.append(
            "left/right swaps: not checked, no symmetric body-part names found (e.g. paw_l / paw_r, "
            "left_ear / right_ear); name the pairs to check them"
        )
    else:
        report.notes.append("left/right swaps: not checked, no symmetric pairs given")
    rig = None if cameras is None else _rig_labels(labels, cameras, camera_names or {})
    _check_bone_lengths(labels, bones, params, report, rig)
    if rig is not None:
        _check_views_3d(labels, rig, params, report)
    elif labels.views is not None:
        report.notes.append("views in 3D: not checked, no calibration given")
    if predictions is not None:
        _check_model_disagreement(labels, predictions, params, report)
    else:
        report.notes.append("model disagreement: not checked, no predictions of a cross-validated model given")
    report.flags.sort(key=lambda flag: (-flag.score, flag.row, flag.kind, flag.bodyparts))
    return report


def _params(params: LabelCheckParams | Mapping[str, Any] | None) -> LabelCheckParams:
    if params is None:
        return LabelCheckParams()
    if isinstance(params, LabelCheckParams):
        return params
    try:
        return LabelCheckParams.model_validate(dict(params))
    except ValidationError as exc:
        raise LabelCheckError(describe_validation_error(exc, "label check parameters", LabelCheckParams)) from None


def _named_pairs(pairs: Sequence[Sequence[str]], bodyparts: Sequence[str], argument: str) -> list[tuple[int, int]]:
    """Pairs of body-part names -> index pairs; a clear error for a malformed pair or unknown name."""
    names = list(bodyparts)
    if isinstance(pairs, (str, bytes)):
        raise LabelCheckError(f"{argument}: expected a list of [body part, body part] pairs, got {pairs!r}")
    out = []
    for number, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or len(pair) != 2 or pair[0] == pair[1]:
            raise LabelCheckError(f"{argument} entry {number}: expected two different body-part names, got {pair!r}")
        unknown = [name for name in pair if name not in names]
        if unknown:
            raise LabelCheckError(
                f"{argument} entry {number} {list(pair)}: unknown body part(s) {unknown} (the labels have {names})"
            )
        out.append((names.index(pair[0]), names.index(pair[1])))
    return out


def _check_predictions(predictions: Any, labels: LabeledFrames) -> np.ndarray:
    expected = (len(labels), len(labels.bodyparts), 3)
    array = np.asarray(predictions)
    if array.shape != expected or not np.issubdtype(array.dtype, np.number):
        raise LabelCheckError(
            f"predictions: shape {array.shape} (dtype {array.dtype}); expected {expected}: x, y and likelihood "
            f"for each of the {expected[0]} labeled rows and {expected[1]} body parts, in the labels' order"
        )
    return array.astype(float)


def _view_groups(labels: LabeledFrames) -> list[tuple[str | None, np.ndarray]]:
    """(view, its rows) of each view; one group of every row for a single-view project."""
    if labels.views is None:
        return [(None, np.arange(len(labels)))]
    views = np.asarray(labels.views)
    return [(view, np.flatnonzero(views == view)) for view in dict.fromkeys(labels.views)]


def _in_view(view: str | None) -> str:
    return "" if view is None else f" in view {view}"


# ------------------------------------------------------------------------------ 1. left/right swaps


def _align(shapes: np.ndarray, target: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Each shape (F, K, 2) moved onto ``target`` (K, 2) by the least-squares similarity
    (rotation, scale, translation; no reflection) fitted on the keypoints of ``use`` (K,) that
    both hold, and applied to all; a shape with fewer than three such keypoints is all NaN."""
    z = shapes[..., 0] + 1j * shapes[..., 1]
    t = target[:, 0] + 1j * target[:, 1]
    both = np.isfinite(z) & (np.isfinite(t) & use)[None]
    count = both.sum(1)
    safe = np.maximum(count, 1)
    z_mean = np.where(both, z, 0).sum(1) / safe
    t_mean = np.where(both, t[None, :], 0).sum(1) / safe
    zc = np.where(both, z - z_mean[:, None], 0)
    tc = np.where(both, t[None, :] - t_mean[:, None], 0)
    spread = (np.abs(zc) ** 2).sum(1)
    ok = (count >= MIN_KEYPOINTS_TO_ALIGN) & (spread > 0)
    a = (np.conj(zc) * tc).sum(1) / np.where(ok, spread, 1)
    moved = np.where(ok[:, None], a[:, None] * (z - z_mean[:, None]) + t_mean[:, None], np.nan)
    return np.stack([moved.real, moved.imag], -1)


def _normalised(shape: np.ndarray, use: np.ndarray) -> np.ndarray:
    """``shape`` (K, 2) centred on, and scaled to a root mean square radius of 1 over, ``use``."""
    centred = shape - np.nanmean(shape[use], 0)
    radius = np.sqrt(np.nanmean(np.sum(centred[use] ** 2, -1)))
    return centred / radius if radius > 0 else centred


def _reference(shapes: np.ndarray, use: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Generalised Procrustes reference (K, 2) over the keypoints of ``use``: the per-keypoint
    median of the shapes aligned onto it."""
    start = int(np.argmax(np.isfinite(shapes[:, use, 0]).sum(1)))
    reference = _normalised(shapes[start], use)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a keypoint never labeled stays NaN
        for _ in range(iterations):
            reference = _normalised(np.nanmedian(_align(shapes, reference, use), 0), use)
    return reference


def _swap_gains(shapes: np.ndarray, a: int, b: int) -> np.ndarray:
    """(F,) how much better exchanging keypoints ``a`` and ``b`` fits each frame of ``shapes``
    (F, K, 2) than as labeled; NaN where it cannot be judged.

    The frames are aligned on their other keypoints; a frame's neighbours are the
    ``SWAP_NEIGHBOURS`` frames whose other keypoints lie closest once aligned, and their
    median places of ``a`` and ``b`` are the prediction ``p_a``, ``p_b``. With the labels
    ``x_a``, ``x_b`` (aligned alike) and a variance ``s2`` per axis (the neighbours' spread
    around the prediction, at least their pose distance to the frame and ``SWAP_FLOOR``), the
    gain is the drop of ``(|x_a - p_a|^2 + |x_b - p_b|^2) / s2`` on exchange:
    ``2 (x_b - x_a) . (p_a - p_b) / s2``.
    """
    n_frames, n_keypoints = shapes.shape[:2]
    use = np.ones(n_keypoints, dtype=bool)
    use[[a, b]] = False
    gains = np.full(n_frames, np.nan)
    others_labeled = np.isfinite(shapes[:, use, 0]).sum(1) >= MIN_KEYPOINTS_TO_ALIGN
    if others_labeled.sum() < 2 or use.sum() < MIN_KEYPOINTS_TO_ALIGN:
        return gains
    reference = _reference(shapes[others_labeled], use)
    aligned = _align(shapes, reference, use)
    pair_labeled = np.isfinite(aligned[:, [a, b], 0]).all(1)
    others = aligned[:, use]
    candidates = np.flatnonzero(pair_labeled)
    neighbours = min(SWAP_NEIGHBOURS, len(candidates) - 1)
    if neighbours < 1:
        return gains
    pair = aligned[candidates][:, [a, b]]  # (n, 2, 2)
    for start in range(0, len(candidates), DISTANCE_BLOCK):
        block = np.arange(start, min(start + DISTANCE_BLOCK, len(candidates)))
        distance2 = _pose_distances(others[candidates[block]], others[candidates])  # (b, n)
        distance2[np.arange(len(block)), block] = np.inf  # a frame is not its own neighbour
        nearest = np.argpartition(distance2, neighbours - 1, axis=1)[:, :neighbours]
        nearest_distance2 = np.take_along_axis(distance2, nearest, 1)
        places = pair[nearest]  # (b, m, 2, 2)
        predicted = np.median(places, 1)  # (b, 2, 2)
        residual2 = np.sum((places - predicted[:, None]) ** 2, -1).reshape(len(block), -1)
        with np.errstate(invalid="ignore"):  # a frame with too few neighbours: NaN, not judged
            variance = np.maximum.reduce(
                [
                    np.median(residual2, 1) / CHI2_2_MEDIAN,
                    nearest_distance2.mean(1) / 2,
                    np.full(len(block), SWAP_FLOOR**2),
                ]
            )
            labeled_ab = pair[block, 1] - pair[block, 0]  # x_b - x_a
            gain = 2 * np.sum(labeled_ab * (predicted[:, 0] - predicted[:, 1]), -1) / variance
        gains[candidates[block]] = np.where(np.isfinite(nearest_distance2).all(1), gain, np.nan)
    return gains


def _pose_distances(rows: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(R, F) mean squared distance between the keypoints (.., K, 2) that each of ``rows`` and
    each of ``frames`` both hold; inf where they share fewer than three."""
    held_r, held_f = np.isfinite(rows[..., 0]).astype(float), np.isfinite(frames[..., 0]).astype(float)
    p_r, p_f = np.nan_to_num(rows), np.nan_to_num(frames)
    common = held_r @ held_f.T
    total = (
        np.sum(p_r**2, -1) @ held_f.T
        + held_r @ np.sum(p_f**2, -1).T
        - 2 * (p_r[..., 0] @ p_f[..., 0].T + p_r[..., 1] @ p_f[..., 1].T)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(common >= MIN_KEYPOINTS_TO_ALIGN, np.maximum(total, 0) / common, np.inf)


def _check_swaps(
    labels: LabeledFrames, pairs: Sequence[tuple[int, int]], params: LabelCheckParams, report: LabelReport
) -> None:
    """Check 1 of the module docstring: flag the pairs whose exchange fits the view's poses better."""
    names = labels.bodyparts
    for view, rows in _view_groups(labels):
        shapes = labels.keypoints[rows]
        for a, b in pairs:
            others = np.ones(len(names), dtype=bool)
            others[[a, b]] = False
            usable = np.isfinite(shapes[:, [a, b], 0]).all(1) & (
                np.isfinite(shapes[:, others, 0]).sum(1) >= MIN_KEYPOINTS_TO_ALIGN
            )
            if usable.sum() < params.min_frames:
                report.notes.append(
                    f"left/right swaps of {names[a]} / {names[b]}{_in_view(view)}: not checked, {int(usable.sum())} "
                    f"frame(s) label both and {MIN_KEYPOINTS_TO_ALIGN}+ other keypoints, {params.min_frames} needed "
                    "(min_frames)"
                )
                continue
            gains = _swap_gains(shapes, a, b)
            for position in np.flatnonzero(np.nan_to_num(gains) >= params.swap_margin):
                row = int(rows[position])
                report.flags.append(
                    LabelFlag(
                        SWAP,
                        row,
                        labels.image_paths[row],
                        view,
                        (names[a], names[b]),
                        float(gains[position] / params.swap_margin),
                        f"{names[a]} and {names[b]} look exchanged{_in_view(view)}: the frames whose other keypoints "
                        f"match this one put {names[a]} where {names[b]} is labeled and the reverse",
                    )
                )


# ------------------------------------------------------------------------------ 2. bone lengths


def _video_of(image_path: str) -> str:
    """The folder of a labeled image: its video (``labeled-data/<video>/img00042.png``)."""
    return image_path.rpartition("/")[0]


def _check_bone_lengths(
    labels: LabeledFrames,
    skeleton: Sequence[tuple[int, int]] | None,
    params: LabelCheckParams,
    report: LabelReport,
    rig: _RigLabels | None = None,
) -> None:
    """Check 2 of the module docstring: flag bones far from their project's length distribution.

    With a calibrated ``rig``, lengths are those of the triangulated labels (calibration units),
    which foreshortening does not change, and a flag names the instant's first view's image."""
    if rig is not None:
        points, _ = _triangulated(rig, rig.labeled.astype(float))
        rows = rig.row_of[0]
        _check_bones_of(labels, points, rows, None, " in 3D", skeleton, params, report)
        return
    for view, rows in _view_groups(labels):
        _check_bones_of(labels, labels.keypoints[rows], rows, view, _in_view(view), skeleton, params, report)


def _check_bones_of(
    labels: LabeledFrames,
    points: np.ndarray,
    rows: np.ndarray,
    view: str | None,
    where: str,
    skeleton: Sequence[tuple[int, int]] | None,
    params: LabelCheckParams,
    report: LabelReport,
) -> None:
    """The bone check of ``points`` (F, K, D): the labels of ``rows`` (2D) or their triangulation (3D)."""
    names = labels.bodyparts
    unit = "px" if points.shape[-1] == 2 else "units"
    n_frames = int((np.isfinite(points[..., 0]).sum(1) >= 2).sum())
    if n_frames < params.min_frames:
        report.notes.append(
            f"bone lengths{where}: not checked, {n_frames} frame(s) with two or more labeled keypoints, "
            f"{params.min_frames} needed (min_frames)"
        )
        return
    distances = np.linalg.norm(points[:, :, None] - points[:, None, :], axis=-1)  # (F, K, K)
    bones = list(skeleton) if skeleton is not None else bone_tree(distances, robust=True)
    if not bones:
        report.notes.append(f"bone lengths{where}: not checked, no bone found")
        return
    first, second = np.array([b[0] for b in bones]), np.array([b[1] for b in bones])
    lengths = distances[:, first, second]  # (F, B)
    seen = np.isfinite(lengths).sum(0)
    short = [f"{names[i]}-{names[j]}" for (i, j), n in zip(bones, seen) if n < params.min_frames]
    if short:
        report.notes.append(
            f"bone lengths{where}: bone(s) {short} labeled in under {params.min_frames} frames, not checked"
        )
    videos = [_video_of(labels.image_paths[r]) for r in rows]
    noise = params.label_noise_px if unit == "px" else 0.0
    expected, z = _bone_z_scores(lengths, videos, noise, params)
    z[:, seen < params.min_frames] = np.nan
    flagged = np.abs(np.nan_to_num(z)) >= params.bone_z
    for position in np.flatnonzero(flagged.any(1)):
        row = int(rows[position])
        _bone_flags(
            labels, view, where, unit, row, bones, z[position], lengths[position], expected[position], params, report
        )


def _bone_z_scores(
    lengths: np.ndarray, videos: Sequence[str], noise: float, params: LabelCheckParams
) -> tuple[np.ndarray, np.ndarray]:
    """(expected lengths (F, B), robust z-scores (F, B)) of bone ``lengths`` (F, B).

    Lengths are divided by their video's scale (the median over its frames and bones of length /
    the bone's median), so videos filmed closer or further do not count; the spread of a bone
    is the largest of 1.4826 MAD, the 10th-90th percentile range / 2.563 (a distribution with
    heavy tails or two modes, as foreshortening gives, is not narrowed by the MAD), the relative
    floor ``bone_min_spread`` and ``noise`` (``label_noise_px`` in 2D)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a bone, a frame or a video with no length
        median = np.nanmedian(lengths, 0)
        frame_ratio = np.nanmedian(lengths / np.where(median > 0, median, np.nan), 1)  # (F,)
        scale = np.ones(len(lengths))
        names = np.asarray(videos)
        for video in dict.fromkeys(videos):
            here = names == video
            ratio = np.nanmedian(frame_ratio[here])
            scale[here] = ratio if np.isfinite(ratio) and ratio > 0 else 1.0
        scaled = lengths / scale[:, None]
        centre = np.nanmedian(scaled, 0)
        mad = MAD_TO_SD * np.nanmedian(np.abs(scaled - centre), 0)
        low, high = np.nanpercentile(scaled, [10, 90], axis=0)
    spread = np.maximum.reduce(
        [
            np.nan_to_num(mad),
            np.nan_to_num(high - low) / DECILES_TO_SD,
            params.bone_min_spread * np.nan_to_num(centre),
            np.full(lengths.shape[1], noise),
        ]
    )
    spread = np.where(spread > 0, spread, np.nan)
    return centre[None, :] * scale[:, None], (scaled - centre) / spread


def _bone_flags(
    labels: LabeledFrames,
    view: str | None,
    where: str,
    unit: str,
    row: int,
    bones: Sequence[tuple[int, int]],
    z: np.ndarray,
    lengths: np.ndarray,
    expected: np.ndarray,
    params: LabelCheckParams,
    report: LabelReport,
) -> None:
    """The flags of one frame: a keypoint in two or more flagged bones alone, else the bone."""
    names = labels.bodyparts
    flagged = [b for b in range(len(bones)) if abs(np.nan_to_num(z[b])) >= params.bone_z]

    def describe(b: int) -> str:
        i, j = bones[b]
        return f"{names[i]}-{names[j]} {lengths[b]:.1f} {unit} (usually {expected[b]:.1f})"

    count: dict[int, list[int]] = {}
    for b in flagged:
        for keypoint in bones[b]:
            count.setdefault(keypoint, []).append(b)
    covered: set[int] = set()
    for keypoint, its_bones in sorted(count.items(), key=lambda item: -len(item[1])):
        if len(its_bones) < 2 or set(its_bones) <= covered:
            continue
        covered.update(its_bones)
        report.flags.append(
            LabelFlag(
                BONE,
                row,
                labels.image_paths[row],
                view,
                (names[keypoint],),
                float(max(abs(z[b]) for b in its_bones) / params.bone_z),
                f"{names[keypoint]} looks misplaced{where}: its bones are off their usual lengths: "
                + ", ".join(describe(b) for b in its_bones),
            )
        )
    for b in flagged:
        if b in covered:
            continue
        i, j = bones[b]
        report.flags.append(
            LabelFlag(
                BONE,
                row,
                labels.image_paths[row],
                view,
                (names[i], names[j]),
                float(abs(z[b]) / params.bone_z),
                f"bone {describe(b)} is too {'long' if z[b] > 0 else 'short'}{where} "
                f"({abs(z[b]):.0f} robust sd): one of its ends is misplaced",
            )
        )


# ------------------------------------------------------------------------------ 3. views in 3D


@dataclass
class _RigLabels:
    """The labels of a calibrated multi-view project, instant by instant."""

    cameras: CameraGroup  # in view order
    view_names: list[str]
    row_of: np.ndarray  # (C, T) the row of each view's label of each instant
    pixels: np.ndarray  # (C, T, K, 2), NaN where unlabeled

    @property
    def labeled(self) -> np.ndarray:
        return np.isfinite(self.pixels[..., 0])


def _rig_labels(labels: LabeledFrames, cameras: CameraGroup, camera_names: Mapping[str, str]) -> _RigLabels:
    if labels.views is None:
        raise LabelCheckError(
            "calibration: given for labels of one view; the 3D check needs a multi-view project "
            "(one label file per view, e.g. CollectedData_<view>.csv)"
        )
    groups = _view_groups(labels)
    view_names = [str(view) for view, _ in groups]
    wanted = [camera_names.get(view, view) for view in view_names]
    missing = [f"view {v!r} (camera {c!r})" for v, c in zip(view_names, wanted) if c not in cameras.names]
    if missing:
        raise LabelCheckError(
            f"calibration: cameras {cameras.names}, none for {', '.join(missing)}; name each view's camera in "
            "camera_names"
        )
    if len({len(rows) for _, rows in groups}) != 1:
        raise LabelCheckError(
            f"labels: views {view_names} have {[len(r) for _, r in groups]} rows; row i of every view must be "
            "the same instant"
        )
    row_of = np.stack([rows for _, rows in groups])
    return _RigLabels(cameras.subset(wanted), view_names, row_of, labels.keypoints[row_of])


def _triangulated(rig: _RigLabels, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(points (T, K, 3), reprojection errors (C, T, K) in px) of the labels with ``weights``
    (C, T, K); NaN where fewer than two weighted views."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a point behind a camera is NaN; the errors say it
        result = triangulate_dlt(rig.cameras, np.nan_to_num(rig.pixels), weights)
    points = np.where((weights > 0).sum(0)[..., None] >= 2, result.points, np.nan)
    return points, rig.cameras.reprojection_error(points, rig.pixels)


def _check_views_3d(labels: LabeledFrames, rig: _RigLabels, params: LabelCheckParams, report: LabelReport) -> None:
    """Check 3 of the module docstring: flag views whose label reprojects far from the others'.

    Each labeled view of a keypoint labeled in three or more views is tested by leaving it out:
    the others are triangulated and it is reprojected. A view is the culprit when its own error is
    above the threshold and the others agree without it (their errors below it); two culprits of
    one keypoint are both flagged, each message naming the other. A keypoint labeled in two views
    gets the sum of their errors (the disagreement across the epipolar line) on the worse view."""
    labeled = rig.labeled
    n_views = labeled.sum(0)  # (T, K)
    if not (n_views >= 2).any():
        report.notes.append("views in 3D: not checked, no keypoint is labeled in two views of an instant")
        return
    _, together = _triangulated(rig, labeled.astype(float))
    own = np.full(labeled.shape, np.nan)  # (C, T, K) error of a view left out of its triangulation
    rest = np.full(labeled.shape, np.nan)  # (C, T, K) worst error of the others without it
    for c in range(len(rig.view_names)):
        weights = labeled.astype(float)
        weights[c] = 0
        _, errors = _triangulated(rig, weights)
        own[c] = np.where(labeled[c] & (n_views >= 3), errors[c], np.nan)
        others = np.where(weights > 0, errors, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rest[c] = np.where(labeled[c] & (n_views >= 3), np.nanmax(others, 0), np.nan)
    pair_error = np.where(n_views == 2, np.nansum(np.where(labeled, together, 0), 0), np.nan)  # (T, K)
    evidence = np.concatenate([own[np.isfinite(own)], pair_error[np.isfinite(pair_error)]])
    if evidence.size == 0:
        report.notes.append("views in 3D: not checked, no labeled keypoint could be triangulated")
        return
    threshold = max(params.reprojection_px, params.reprojection_factor * float(np.median(evidence)))
    names = labels.bodyparts

    def flag(c: int, t: int, k: int, error: float, why: str) -> None:
        row = int(rig.row_of[c, t])
        report.flags.append(
            LabelFlag(
                VIEWS,
                row,
                labels.image_paths[row],
                rig.view_names[c],
                (names[k],),
                error / threshold,
                f"{names[k]} in view {rig.view_names[c]} is {error:.1f} px from where the other views place it "
                f"(threshold {threshold:.1f} px); {why}",
            )
        )

    for t, k in zip(*np.nonzero(n_views >= 3)):
        views = np.flatnonzero(labeled[:, t, k])
        culprits = [int(v) for v in views if own[v, t, k] >= threshold > rest[v, t, k]]
        for culprit in culprits:
            also = [rig.view_names[o] for o in culprits if o != culprit]
            why = f"or view {', '.join(also)} is the wrong one" if also else "the other views agree without it"
            flag(culprit, int(t), int(k), float(own[culprit, t, k]), why)
        disagree = np.nan_to_num(together[views, t, k]) >= threshold
        if not culprits and disagree.any() and np.isfinite(own[views, t, k]).any():
            worst = int(views[np.nanargmax(own[views, t, k])])
            flag(worst, int(t), int(k), float(own[worst, t, k]), "the views disagree and no single view explains it")
    for t, k in zip(*np.nonzero(pair_error >= threshold)):
        worse, other = sorted((int(v) for v in np.flatnonzero(labeled[:, t, k])), key=lambda v: -together[v, t, k])
        flag(
            worse,
            int(t),
            int(k),
            float(pair_error[t, k]),
            f"only view {rig.view_names[other]} also labels it: either may be wrong",
        )


# ------------------------------------------------------------------------------ 4. model disagreement


def animal_sizes(keypoints: np.ndarray) -> np.ndarray:
    """(N,) root mean square distance of each row's labeled keypoints (N, K, 2) from their
    centroid; NaN for a row with fewer than two."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        centred = keypoints - np.nanmean(keypoints, 1, keepdims=True)
        size = np.sqrt(np.nanmean(np.sum(centred**2, -1), 1))
    return np.where(np.isfinite(keypoints[..., 0]).sum(1) >= 2, size, np.nan)


def _check_model_disagreement(
    labels: LabeledFrames, predictions: np.ndarray, params: LabelCheckParams, report: LabelReport
) -> None:
    """Check 4 of the module docstring: flag labels far from a confident cross-validated model."""
    names = labels.bodyparts
    sizes = animal_sizes(labels.keypoints)
    fallback = {
        view: float(np.nanmedian(sizes[rows])) for view, rows in _view_groups(labels) if np.isfinite(sizes[rows]).any()
    }
    distance = np.linalg.norm(predictions[..., :2] - labels.keypoints, axis=-1)  # (N, K)
    for row in range(len(labels)):
        view = None if labels.views is None else labels.views[row]
        size = sizes[row] if np.isfinite(sizes[row]) else fallback.get(view, np.nan)
        if not np.isfinite(size) or size <= 0:
            continue
        relative = distance[row] / size
        likelihood = predictions[row, :, 2]
        confident = np.nan_to_num(likelihood) >= params.model_min_likelihood
        for k in np.flatnonzero((np.nan_to_num(relative) >= params.model_distance) & confident):
            report.flags.append(
                LabelFlag(
                    MODEL,
                    row,
                    labels.image_paths[row],
                    view,
                    (names[k],),
                    float(relative[k] / params.model_distance),
                    f"{names[k]}{_in_view(view)}: the model puts it {distance[row, k]:.1f} px away "
                    f"({relative[k]:.2f} animal sizes) with likelihood {likelihood[k]:.2f}",
                )
            )


__all__ = [
    "KINDS",
    "LabelCheckError",
    "LabelCheckParams",
    "LabelFlag",
    "LabelReport",
    "animal_sizes",
    "check_labels",
    "symmetric_pairs",
]
