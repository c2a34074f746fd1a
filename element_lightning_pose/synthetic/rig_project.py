"""A synthetic labeled multi-view project from a calibrated rig, in Lightning Pose's layout.

:func:`make_rig_project` writes into one folder, deterministically from a seed::

    CollectedData_<camera>.csv             hand labels of each view (the same frames in every view)
    labeled-data/<session>_<camera>/imgNNNNN.png   the labeled frames, decoded from the videos
    videos/<session>_<camera>.mp4          each camera's video of the body (view name in the file name)
    calibration/<camera>.avi               each camera's ChArUco board video (lossless)
    board.toml                             the board in those videos (``boards.read_board``)
    calibration.toml                       the true calibration (``cameras.write_calibration``)
    ground_truth.npz                       points3d (T, K, 3) mm, pixels (C, T, K, 2),
                                           visible (C, T, K) and occluded (C, T, K) per
                                           camera, labeled_frames, camera_names, bodyparts

The rig, the body and the rendering are :mod:`.rig`'s; this module only lays them out as a
lab's project would be. The labels are the true projections (NaN where a point leaves the
image), so the error of a model trained on them is measured against the truth.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from element_lightning_pose.engine.atomic import atomic_output, write_text_atomic
from element_lightning_pose.engine.data.keypoints import write_keypoint_csv
from element_lightning_pose.engine.multicam.boards import Board
from element_lightning_pose.engine.multicam.cameras import write_calibration
from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.synthetic.rig import make_body, make_rig, render_board_videos, render_body_videos

# The board of the calibration videos: 7 x 5 ChArUco squares of 50 mm (markers 37 mm, 4x4 bits).
BOARD = Board("charuco", 7, 5, 50.0, 37.0, 4, 50)


@dataclass
class RigProject:
    """What :func:`make_rig_project` wrote (paths absolute)."""

    root: Path
    camera_names: list[str]
    bodyparts: list[str]
    csv_files: list[str]  # relative to root, one per camera, in camera order
    videos: dict[str, Path]
    board_videos: dict[str, Path]
    calibration: Path
    ground_truth: Path
    labeled_frames: np.ndarray


def make_rig_project(
    root: PathLike,
    *,
    n_cameras: int = 3,
    image_size: tuple[int, int] = (640, 480),
    n_frames: int = 300,
    n_labeled: int = 40,
    n_board_frames: int = 20,
    seed: int = 0,
    session: str = "session0",
    fps: float = 30.0,
    occlusion_rate: float = 0.0,
    occlusion_length: float = 15.0,
    decoys: bool = False,
    dot_radius: int | None = None,
) -> RigProject:
    """Write a labeled multi-view project of a body walking in a calibrated rig into ``root``.

    ``image_size`` is (width, height); ``n_labeled`` frames, spread over the video, are labeled
    in every view. Tiny sizes (e.g. 96x64, 30 frames, 6 labeled) keep tests fast; the dots are
    drawn with a radius scaled to the image width.

    ``occlusion_rate`` > 0 hides each camera's points in runs (about that share of the frames
    per camera and keypoint, mean ``occlusion_length`` frames; each camera on its own, so the
    views are occluded in turn): a hidden point is not drawn and not labeled (a labeler cannot
    see it), and ``ground_truth.npz`` marks it in ``occluded`` (C, T, K). ``decoys`` draws a
    hidden point's dot at a fixed offset (8-20% of the image width, one direction per camera and
    keypoint) instead: a look-alike in the wrong place, the case where a network jumps.
    ``dot_radius`` overrides the radius scaled to the width.
    """
    if not 1 <= n_labeled <= n_frames:
        raise ValueError(f"n_labeled={n_labeled} must be between 1 and n_frames={n_frames}")
    if n_cameras < 2:
        raise ValueError(f"n_cameras={n_cameras}: a multi-view project needs at least 2 cameras")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    group = make_rig(n_cameras, seed=seed, image_size=image_size)
    body = make_body(n_frames, seed=seed)
    rng = np.random.default_rng(seed + 5000)
    labeled = np.sort(rng.choice(n_frames, size=n_labeled, replace=False))
    names = [cam.name for cam in group.cameras]
    radius = dot_radius or max(1, int(round(4 * image_size[0] / 640)))
    occluded = np.zeros((n_cameras, n_frames, len(body.bodyparts)), dtype=bool)
    if occlusion_rate > 0:
        from element_lightning_pose.synthetic.rig import occlusion_runs

        occluded_rng = np.random.default_rng(seed + 6000)
        occluded = np.stack(
            [occlusion_runs(occluded_rng, occluded.shape[1:], occlusion_rate, occlusion_length) for _ in names]
        )
    offsets = None
    if decoys:
        decoy_rng = np.random.default_rng(seed + 7000)
        shape = (n_cameras, len(body.bodyparts))
        angle, length = decoy_rng.uniform(0, 2 * np.pi, shape), decoy_rng.uniform(0.08, 0.2, shape) * image_size[0]
        offsets = np.stack([length * np.cos(angle), length * np.sin(angle)], axis=-1)

    videos: dict[str, Path] = {}
    pixels, visible = [], []
    with tempfile.TemporaryDirectory(dir=root, prefix=".render-") as scratch:
        rendered = render_body_videos(
            group, body.points, body.bodyparts, scratch, fps=fps, radius=radius, hidden=occluded, decoy_offsets=offsets
        )
        (root / "videos").mkdir(exist_ok=True)
        for name in names:
            video, _ = rendered[name]
            videos[name] = root / "videos" / f"{session}_{name}.mp4"
            os.replace(video, videos[name])
    csv_files = []
    for c, cam in enumerate(group.cameras):
        points = cam.project(body.points)  # (T, K, 2)
        inside = np.all((points >= 0) & (points < np.array(cam.size)), axis=-1)
        pixels.append(points)
        visible.append(inside)
        seen = inside & ~occluded[c]
        csv_files.append(_write_view_labels(root, session, cam.name, videos[cam.name], labeled, points, seen, body))

    board_dir = root / "calibration"
    if board_dir.exists():
        shutil.rmtree(board_dir)
    board_videos = render_board_videos(group, BOARD, board_dir, n_frames=n_board_frames, seed=seed)
    write_text_atomic(
        root / "board.toml",
        f'board_type = "{BOARD.board_type}"\nboard_x = {BOARD.board_x}\nboard_y = {BOARD.board_y}\n'
        f"square_length = {BOARD.square_length}\nmarker_length = {BOARD.marker_length}\n"
        f"marker_bits = {BOARD.marker_bits}\ndict_size = {BOARD.dict_size}\n",
    )
    calibration = write_calibration(group, root / "calibration.toml")
    truth = root / "ground_truth.npz"
    with atomic_output(truth) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            points3d=body.points,
            pixels=np.stack(pixels),
            visible=np.stack(visible),
            occluded=occluded,
            labeled_frames=labeled,
            camera_names=np.array(names),
            bodyparts=np.array(body.bodyparts),
        )
    return RigProject(root, names, list(body.bodyparts), csv_files, videos, board_videos, calibration, truth, labeled)


def _write_view_labels(
    root: Path,
    session: str,
    camera: str,
    video: Path,
    labeled: np.ndarray,
    points: np.ndarray,
    inside: np.ndarray,
    body,
) -> str:
    """The labeled frames of one view as PNGs (decoded from its video, as a lab extracts them)
    and ``CollectedData_<camera>.csv``; returns the CSV's name."""
    import cv2

    from element_lightning_pose.engine.data.video import read_frames

    folder = root / "labeled-data" / f"{session}_{camera}"
    folder.mkdir(parents=True, exist_ok=True)
    frames = read_frames(video, labeled.tolist())
    images = []
    for index, frame in zip(labeled, frames):
        image = f"labeled-data/{session}_{camera}/img{int(index):05d}.png"
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"could not encode {image}")
        with atomic_output(root / image) as tmp:
            tmp.write_bytes(encoded.tobytes())
        images.append(image)
    values = np.where(inside[labeled][..., None], points[labeled], np.nan)
    name = f"CollectedData_{camera}.csv"
    write_keypoint_csv(root / name, values, body.bodyparts, ("x", "y"), scorer="synthetic", index=images)
    return name
