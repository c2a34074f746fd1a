"""Pose PCA and multi-view PCA fitted on training labels, in ORIGINAL-frame pixels.

Both are linear subspaces of keypoint coordinates; a prediction far from the subspace is an
implausible pose (single view) or views that disagree about one 3D point (multi-view).

* single view: one sample per labeled frame with every chosen keypoint labeled, the vector
  (x1, y1, x2, y2, ...), or the same relative to the keypoints' mean (``centred``); components
  kept up to the explained-variance target (or a count);
* multi view: one sample per (frame, keypoint) labeled in all V views, the vector
  (x_view1, y_view1, ..., x_viewV, y_viewV); 3 components by default (a 3D point).

The residual of a keypoint is the pixel distance between it and its reconstruction from the
subspace. Epsilon defaults to the 99th percentile (not the 0.99th, Lightning Pose's old bug)
of HELD-OUT residuals: each training label's residual from a PCA fitted without its frame
(10-fold). In-sample residuals (Lightning Pose's rule, ``pca_epsilon_residuals="training"``)
are much smaller when few frames are labeled -- the subspace bends towards its own samples --
so most TRUE poses of unlabeled frames would exceed that epsilon and the loss would pull
correct predictions off them. Fitting and evaluation use the same coordinates (original
pixels; Lightning Pose fitted in resized coordinates and evaluated in original ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from element_lightning_pose.engine.config import ConfigError, LossesConfig
from element_lightning_pose.engine.data.crops import crop_scale


class PCAFitError(ConfigError):
    """A PCA loss cannot be fitted on the training labels (the message says why and what is needed)."""


@dataclass
class KeypointPCA:
    """A fitted subspace. ``views`` (V, P) are keypoint indices: row v = the keypoints of view v.

    Single view: V = 1 and a sample is one frame. Multi-view: a sample is one column p of
    ``views`` in one frame. ``mean`` (D,), ``components`` (D, c) with D = 2 V (multi-view)
    or 2 P (single view).
    """

    kind: str  # "pca_singleview" | "pca_multiview"
    views: list[list[int]]
    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: float
    epsilon: float
    n_samples: int
    # single view: each frame's keypoints taken relative to their mean, so the subspace holds the
    # pose and not where the animal is (crop zoom's crops are centred on a detection, not on it)
    centred: bool = False
    # how the fitted PCA is read, not part of the fit (never saved): the PCA's pixels per pixel of
    # the points given to it, (x, y). A crop-zoom pose stage's PCA is in crop-input pixels and its
    # predictions in frame pixels; residuals come out in the points' pixels (:meth:`read_at_scale`)
    input_scale: tuple[float, float] = (1.0, 1.0)

    # ------------------------------------------------------------------ layout

    def samples(self, points: np.ndarray | torch.Tensor):
        """(..., K, 2) keypoints -> (..., S, D) samples (S = 1 single view, P multi-view)."""
        index = np.asarray(self.views)  # (V, P)
        gathered = points[..., index.reshape(-1), :]  # (..., V*P, 2)
        if self.input_scale != (1.0, 1.0):
            gathered = gathered * self._scale_like(gathered)
        shape = gathered.shape[:-2]
        v, p = index.shape
        if self.kind == "pca_singleview":
            if self.centred:
                middle = (
                    gathered.mean(-2, keepdims=True) if isinstance(gathered, np.ndarray) else gathered.mean(-2, True)
                )
                gathered = gathered - middle
            return gathered.reshape(*shape, 1, p * 2)
        # (..., V, P, 2) -> (..., P, V, 2) -> (..., P, 2V)
        per_view = gathered.reshape(*shape, v, p, 2)
        per_view = per_view.swapaxes(-3, -2) if isinstance(per_view, np.ndarray) else per_view.transpose(-3, -2)
        return per_view.reshape(*shape, p, v * 2)

    def residual_keypoints(self, points: np.ndarray | torch.Tensor):
        """Residual (..., V*P) in pixels of each keypoint in ``views`` (row-major over views)."""
        samples = self.samples(points)
        is_torch = isinstance(samples, torch.Tensor)
        mean: Any
        comps: Any
        if is_torch:
            mean = torch.as_tensor(self.mean, dtype=samples.dtype, device=samples.device)
            comps = torch.as_tensor(self.components, dtype=samples.dtype, device=samples.device)
        else:
            mean, comps = self.mean, self.components
        centred = samples - mean
        error = centred - (centred @ comps) @ comps.T  # (..., S, D)
        v, p = np.asarray(self.views).shape
        shape = error.shape[:-2]
        if self.kind == "pca_singleview":
            per_point = error.reshape(*shape, p, 2)
        else:
            per_point = error.reshape(*shape, p, v, 2)
            per_point = per_point.transpose(-3, -2) if is_torch else per_point.swapaxes(-3, -2)
            per_point = per_point.reshape(*shape, v * p, 2)
        if self.input_scale != (1.0, 1.0):
            per_point = per_point / self._scale_like(per_point)  # back in the points' pixels
        if is_torch:
            return torch.linalg.norm(per_point, dim=-1)
        return np.linalg.norm(per_point, axis=-1)

    def _scale_like(self, points: np.ndarray | torch.Tensor):
        if isinstance(points, torch.Tensor):
            return torch.as_tensor(self.input_scale, dtype=points.dtype, device=points.device)
        return np.asarray(self.input_scale)

    def read_at_scale(self, scale: tuple[float, float]) -> KeypointPCA:
        """This PCA for points in other pixels, ``scale`` of its pixels per pixel of theirs
        (x, y); residuals come out in their pixels."""
        return replace(self, input_scale=(float(scale[0]), float(scale[1])))

    def keypoint_indices(self) -> list[int]:
        """Keypoint index of each residual column of :meth:`residual_keypoints`."""
        return [k for view in self.views for k in view]

    def residual_table(self, points: np.ndarray, n_keypoints: int) -> np.ndarray:
        """(T, K) residual of each keypoint of ``points`` (T, K, >=2); NaN for keypoints outside the PCA."""
        out = np.full(points.shape[:1] + (n_keypoints,), np.nan)
        residual = self.residual_keypoints(np.asarray(points, dtype=float)[..., :2])
        out[:, self.keypoint_indices()] = residual
        return out

    # ------------------------------------------------------------------ (de)serialisation

    def summary(self) -> dict[str, Any]:
        """What ``model.json`` records of the fit (not the subspace itself, which the checkpoint keeps)."""
        return {
            "keypoints": self.views,
            "components": int(self.components.shape[1]),
            "explained_variance_ratio": round(self.explained_variance_ratio, 6),
            "epsilon_px": round(self.epsilon, 4),
            "n_samples": self.n_samples,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["input_scale"]  # how it is read, not what was fitted
        data["mean"] = self.mean.tolist()
        data["components"] = self.components.tolist()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeypointPCA:
        values = dict(data)
        values["mean"] = np.asarray(values["mean"], dtype=float)
        values["components"] = np.asarray(values["components"], dtype=float).reshape(len(values["mean"]), -1)
        return cls(**values)


def crop_pcas_in_frame_pixels(
    pcas: dict[str, KeypointPCA], crop_size: tuple[int, int], input_size: tuple[int, int]
) -> dict[str, KeypointPCA]:
    """A crop-zoom pose stage's PCAs (fitted in crop-input pixels: crops of ``crop_size`` frame
    pixels resized to ``input_size``, each (h, w)), read on its predictions in frame pixels. Only a
    PCA of the keypoints relative to their mean (``centred``, what crop zoom trains) is blind to
    where each crop was cut; another (a model trained before it was) would read every crop's
    offset as an implausible pose, and is left out."""
    scale = crop_scale(crop_size, input_size)
    return {kind: pca.read_at_scale(scale) for kind, pca in pcas.items() if pca.centred}


def resolve_keypoints(refs: Sequence[int | str], bodyparts: Sequence[str], key: str) -> list[int]:
    """Keypoint names or indices -> indices; a clear error for an unknown one."""
    names = list(bodyparts)
    out = []
    for ref in refs:
        if isinstance(ref, str) and not ref.lstrip("-").isdigit():
            if ref not in names:
                raise ConfigError(f"losses.{key}: unknown keypoint {ref!r} (known: {names})")
            out.append(names.index(ref))
        else:
            index = int(ref)
            if not 0 <= index < len(names):
                raise ConfigError(f"losses.{key}: keypoint index {index} out of range 0..{len(names) - 1}")
            out.append(index)
    if len(set(out)) != len(out):
        raise ConfigError(f"losses.{key}: a keypoint is listed twice ({list(refs)})")
    return out


HELD_OUT_FOLDS = 10


def _complete_samples(pca: KeypointPCA, keypoints: np.ndarray) -> np.ndarray:
    samples = pca.samples(keypoints)
    samples = samples.reshape(-1, samples.shape[-1])
    return samples[np.isfinite(samples).all(axis=1)]


def held_out_residuals(pca: KeypointPCA, keypoints: np.ndarray, folds: int = HELD_OUT_FOLDS) -> np.ndarray:
    """Residuals of each frame's labels from a PCA (same component count) fitted on the other folds.

    Folds are whole frames, so a multi-view sample never sees its own frame's other keypoints.
    Folds whose complement has too few complete samples to fit are skipped; NaN for unlabeled.
    """
    n_components = pca.components.shape[1]
    order = np.random.default_rng(0).permutation(len(keypoints))
    out = []
    for fold in np.array_split(order, min(folds, len(keypoints))):
        rest = np.setdiff1d(order, fold)
        samples = _complete_samples(pca, keypoints[rest])
        if len(samples) <= n_components:
            continue
        mean, components, _ = _fit_subspace(samples, n_components, 1.0)
        fold_pca = replace(
            pca, mean=mean, components=components, explained_variance_ratio=0.0, epsilon=0.0, n_samples=len(samples)
        )
        out.append(fold_pca.residual_keypoints(keypoints[fold]).ravel())
    return np.concatenate(out) if out else np.zeros(0)


def _fit_subspace(data: np.ndarray, components: int | None, variance: float) -> tuple[np.ndarray, np.ndarray, float]:
    mean = data.mean(axis=0)
    _, singular, vt = np.linalg.svd(data - mean, full_matrices=False)
    ratio = singular**2 / max(float((singular**2).sum()), 1e-12)
    if components is None:
        components = int(np.searchsorted(np.cumsum(ratio), variance - 1e-12) + 1)
    components = min(components, vt.shape[0])
    return mean, vt[:components].T.copy(), float(ratio[:components].sum())


def fit_pca(
    kind: str,
    keypoints: np.ndarray,
    bodyparts: Sequence[str],
    losses: LossesConfig,
) -> KeypointPCA:
    """Fit the ``kind`` PCA on training labels ``keypoints`` (N, K, 2) in original pixels (NaN = unlabeled)."""
    keypoints = np.asarray(keypoints, dtype=float)
    if kind == "pca_singleview":
        refs = losses.pca_singleview_keypoints
        views = [
            resolve_keypoints(refs, bodyparts, "pca_singleview_keypoints")
            if refs is not None
            else list(range(len(bodyparts)))
        ]
        if not views[0]:
            raise PCAFitError("pose PCA: no keypoint group (losses.pca_singleview_keypoints is empty)")
        components = losses.pca_singleview_components
    elif kind == "pca_multiview":
        if not losses.view_groups:
            raise PCAFitError(
                "multi-view PCA: no keypoint group (set losses.view_groups, one list of keypoints per view)"
            )
        views = [resolve_keypoints(group, bodyparts, "view_groups") for group in losses.view_groups]
        flat = [k for view in views for k in view]
        if len(set(flat)) != len(flat):
            raise ConfigError(f"losses.view_groups: a keypoint appears in two views ({losses.view_groups})")
        components = losses.pca_multiview_components
    else:
        raise ConfigError(f"unknown PCA loss {kind!r}")
    centred = kind == "pca_singleview" and losses.pca_singleview_centred
    pca = KeypointPCA(kind, views, np.zeros(0), np.zeros((0, 0)), 0.0, 0.0, 0, centred)
    complete = _complete_samples(pca, keypoints)
    dims = complete.shape[1]
    unit = (
        "frames with all its keypoints labeled"
        if kind == "pca_singleview"
        else "(frame, keypoint) pairs labeled in every view"
    )
    name = "pose PCA" if kind == "pca_singleview" else "multi-view PCA"
    if len(complete) < dims:
        raise PCAFitError(
            f"{name}: the training labels have {len(complete)} complete {unit}; at least {dims} are needed "
            f"({dims} dimensions); label more frames or use fewer keypoints"
        )
    if components is not None and components > dims:
        raise ConfigError(f"{name}: {components} components asked but the data has only {dims} dimensions")
    mean, comps, explained = _fit_subspace(complete, components, losses.pca_explained_variance)
    pca.mean, pca.components, pca.explained_variance_ratio, pca.n_samples = mean, comps, explained, len(complete)
    if losses.pca_epsilon is not None:
        pca.epsilon = float(losses.pca_epsilon)
    else:
        residual = held_out_residuals(pca, keypoints) if losses.pca_epsilon_residuals == "held_out" else None
        if residual is None or not np.isfinite(residual).any():
            residual = pca.residual_keypoints(keypoints)  # in-sample (asked for, or no fold could be fitted)
        pca.epsilon = float(np.nanpercentile(residual, losses.pca_epsilon_percentile))
    return pca


def fit_pcas(keypoints: np.ndarray, bodyparts: Sequence[str], losses: LossesConfig) -> dict[str, KeypointPCA]:
    """Every PCA loss named in ``losses.unsupervised``, fitted on ``keypoints`` (original pixels)."""
    return {
        kind: fit_pca(kind, keypoints, bodyparts, losses)
        for kind in ("pca_singleview", "pca_multiview")
        if kind in losses.unsupervised
    }
