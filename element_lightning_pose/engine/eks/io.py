"""Reading ensemble members and writing the smoothed CSV in eks's layout."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from element_lightning_pose.engine.data.keypoints import read_predictions, write_keypoint_csv
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.types import PathLike

# Columns of each keypoint in the smoothed CSV, in eks's order.
EKS_COORDS = (
    "x",
    "y",
    "likelihood",
    "x_ens_median",
    "y_ens_median",
    "x_ens_var",
    "y_ens_var",
    "x_posterior_var",
    "y_posterior_var",
)


CSV_SIGNIFICANT = 10  # digits of the smoothed CSV: 1e-7 px at 1,000 px, far below any posterior sd


@dataclass
class SmoothingResult:
    """Smoothed keypoints of T frames x K keypoints, plus everything eks writes beside them."""

    x: np.ndarray  # (T, K) posterior mean
    y: np.ndarray  # (T, K)
    likelihood: np.ndarray  # (T, K) mean likelihood of the members (0 where none is valid)
    centre: np.ndarray  # (T, K, 2) ensemble median/mean (NaN where no member is valid)
    ensemble_var: np.ndarray  # (T, K, 2) observation noise variance R_t (NaN where missing)
    posterior_var: np.ndarray  # (T, K, 2) posterior variance of x and y
    s: np.ndarray  # (K,) smoothing parameter (random-walk variance, px^2/frame, before c)
    bodyparts: list[str]
    log_likelihood: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,) at s
    noise_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K, 2) c per series

    def to_array(self) -> np.ndarray:
        """(T, K, 9) in eks's column order (see ``EKS_COORDS``)."""
        return np.concatenate(
            [
                self.x[..., None],
                self.y[..., None],
                self.likelihood[..., None],
                self.centre,
                self.ensemble_var,
                self.posterior_var,
            ],
            axis=-1,
        )

    def to_csv(self, path: PathLike, index: Sequence | None = None, significant: int | None = CSV_SIGNIFICANT) -> Path:
        """Write the eks-layout CSV (3-row header, 9 coords per keypoint), atomically.

        Values are printed with ``significant`` digits by the vectorised writer (the layout is
        eks's, byte for byte); ``None`` prints Python's full ``repr`` as pandas does (slower).
        """
        return write_keypoint_csv(
            path,
            self.to_array(),
            self.bodyparts,
            EKS_COORDS,
            scorer="ensemble-kalman_tracker",
            index=index,
            significant=significant,
        )


def load_members(
    members: np.ndarray | Sequence[np.ndarray | PathLike], bodyparts: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Stack members into (M, T, K, 3) and check that they agree; name the member at fault."""
    if isinstance(members, np.ndarray):
        if members.ndim != 4:
            raise ValueError(f"members array must be (M, T, K, 3), got shape {members.shape}")
        arrays, names = list(members), None
        sources = [f"member {i}" for i in range(len(arrays))]
    else:
        arrays, sources, names = [], [], None
        files = [m for m in members if not isinstance(m, np.ndarray)]
        read = dict(zip(map(id, files), _read_all(files)))
        for i, member in enumerate(members):
            if isinstance(member, np.ndarray):
                arrays.append(member)
                sources.append(f"member {i}")
                continue
            values, file_bodyparts = read[id(member)]
            if names is not None and file_bodyparts != names:
                raise ProjectError(f"{member}: body parts {file_bodyparts} differ from {sources[0]}'s {names}")
            names = file_bodyparts
            arrays.append(values)
            sources.append(str(member))
    if not arrays:
        raise ValueError("no ensemble members given")
    reference = np.shape(arrays[0])
    for source, array in zip(sources, arrays):
        if np.ndim(array) != 3 or np.shape(array)[-1] != 3:
            raise ValueError(f"{source}: expected (T, K, 3) x/y/likelihood, got {np.shape(array)}")
        if np.shape(array) != reference:
            raise ValueError(f"{source}: shape {np.shape(array)} differs from {sources[0]}'s {reference}")
        require_predictions(array, source)
    stacked = np.stack([np.asarray(a, dtype=float) for a in arrays])
    return stacked, _resolve_bodyparts(bodyparts, names, stacked.shape[2])


def _read_all(files: list) -> list[tuple[np.ndarray, list[str]]]:
    """``read_predictions`` of every file, two at a time (pandas' parser releases the GIL)."""
    if len(files) < 2:
        return [read_predictions(f) for f in files]

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(read_predictions, files))


def require_predictions(values: np.ndarray, source: str) -> None:
    """Refuse a member that predicts nothing: every x, y or likelihood NaN or infinite.

    Such a member is a broken file (or a crashed run), not missing data; smoothing it would
    give all-NaN output with a smoothing parameter fitted to nothing.
    """
    values = np.asarray(values, dtype=float)
    if values.shape[0] == 0:
        raise ProjectError(f"{source}: no frames")
    if not np.isfinite(values).all(axis=-1).any():
        raise ProjectError(
            f"{source}: no finite prediction in any of its {values.shape[0]} frames "
            "(every x, y or likelihood is NaN or infinite); nothing to smooth"
        )


def _resolve_bodyparts(given: Sequence[str] | None, from_files: list[str] | None, n: int) -> list[str]:
    names = list(given) if given is not None else from_files or [f"keypoint{k}" for k in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} body part names given for {n} keypoints")
    return names
