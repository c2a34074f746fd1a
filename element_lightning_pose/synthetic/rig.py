"""Synthetic calibrated rigs with ground truth, deterministic by seed.

* :func:`make_rig` - 3-6 cameras on a ring around a circular arena, looking at its centre,
  with realistic intrinsics (focal length about the image width, principal point near the
  centre) and radial distortion;
* :func:`make_body` - an articulated body (a spine, a head, four legs) with fixed bone lengths
  walking smoothly in the arena: :class:`Body`, the true 3D trajectory;
* :func:`observe` - what networks would give per camera: the projections with pixel noise,
  confident jumps (tens to over a hundred px, likelihood still 0.5-1.0), runs of occlusion in
  single views (low likelihood, the point somewhere else), points outside the image;
* :func:`render_board_videos` - a ChArUco board moving through the arena, rendered into each
  camera through its true pose and distortion (for :mod:`element_lightning_pose.engine.multicam.calibrate`);
* :func:`render_body_videos` - each view of the body drawn as dots on a grey background.

Units: millimetres. The world frame has ``z`` up, the arena floor at ``z = 0``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from element_lightning_pose.engine.multicam.boards import Board
from element_lightning_pose.engine.multicam.cameras import Camera, CameraGroup
from element_lightning_pose.engine.types import PathLike

Array = NDArray[np.float64]


def look_at(centre: Array, target: Array, up: Array = np.array([0.0, 0.0, 1.0])) -> Array:
    """Rotation (world -> camera, OpenCV axes: x right, y down, z forward) of a camera at
    ``centre`` looking at ``target``."""
    forward = target - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def make_rig(
    n_cameras: int = 4,
    seed: int = 0,
    image_size: tuple[int, int] = (640, 480),
    arena_radius: float = 200.0,
    distance: float = 700.0,
    height: float = 350.0,
    distortion: float = -0.2,
) -> CameraGroup:
    """``n_cameras`` cameras evenly on a ring of radius ``distance`` at ``height`` (jittered).

    Focal lengths are set so the arena fills about 70% of the image width; ``k1`` is around
    ``distortion`` (barrel for negative), ``k2`` a tenth of its size, tangential terms tiny.
    """
    rng = np.random.default_rng(seed)
    width, height_px = image_size
    cameras = []
    for i in range(n_cameras):
        angle = 2 * np.pi * i / n_cameras + rng.uniform(-0.15, 0.15)
        r = distance * rng.uniform(0.9, 1.1)
        centre = np.array([r * np.cos(angle), r * np.sin(angle), height * rng.uniform(0.8, 1.2)])
        target = rng.normal(0, 0.05 * arena_radius, 3) * np.array([1, 1, 0]) + np.array([0, 0, 40.0])
        rotation = look_at(centre, target)
        range_to_target = np.linalg.norm(centre - target)
        focal = 0.7 * width * range_to_target / (2 * arena_radius) * rng.uniform(0.95, 1.05)
        matrix = np.array(
            [
                [focal, 0, width / 2 + rng.uniform(-8, 8)],
                [0, focal * rng.uniform(0.995, 1.005), height_px / 2 + rng.uniform(-8, 8)],
                [0, 0, 1],
            ]
        )
        k1 = distortion * rng.uniform(0.7, 1.3)
        dist = np.array([k1, -0.1 * k1 * rng.uniform(0.5, 1.5), *rng.normal(0, 1e-4, 2), 0.0])
        cameras.append(Camera(f"cam{i}", image_size, matrix, dist, rotation, -rotation @ centre))
    return CameraGroup(tuple(cameras), {"synthetic_seed": seed})


# ------------------------------------------------------------------------------ the body

BODYPARTS = (
    "snout",
    "head",
    "ear_l",
    "ear_r",
    "neck",
    "spine",
    "hip",
    "tail_base",
    "paw_fl",
    "paw_fr",
    "paw_hl",
    "paw_hr",
)
# (child, parent, length in mm)
BONES = (
    ("head", "neck", 25.0),
    ("snout", "head", 20.0),
    ("ear_l", "head", 12.0),
    ("ear_r", "head", 12.0),
    ("spine", "neck", 30.0),
    ("hip", "spine", 30.0),
    ("tail_base", "hip", 20.0),
    ("paw_fl", "neck", 35.0),
    ("paw_fr", "neck", 35.0),
    ("paw_hl", "hip", 35.0),
    ("paw_hr", "hip", 35.0),
)
# resting direction of each bone in the body frame (x forward, y left, z up)
_REST = {
    "head": (1, 0, 0.3),
    "snout": (1, 0, -0.2),
    "ear_l": (0, 1, 0.8),
    "ear_r": (0, -1, 0.8),
    "spine": (-1, 0, 0),
    "hip": (-1, 0, 0),
    "tail_base": (-1, 0, -0.3),
    "paw_fl": (0.3, 0.5, -1),
    "paw_fr": (0.3, -0.5, -1),
    "paw_hl": (-0.3, 0.5, -1),
    "paw_hr": (-0.3, -0.5, -1),
}


@dataclass
class Body:
    """A synthetic animal: ``points`` (T, K, 3) in mm, ``bodyparts``, ``edges`` (index pairs),
    ``lengths`` (E,) bone lengths in mm (fixed over time)."""

    points: Array
    bodyparts: list[str]
    edges: list[tuple[int, int]]
    lengths: Array


def _smooth_noise(rng: np.random.Generator, n: int, dims: int, correlation: float) -> Array:
    """Unit-variance noise smoothed over ``correlation`` frames (sum of random sinusoids)."""
    t = np.arange(n)[:, None, None]
    freqs = rng.uniform(0.2, 1.0, (1, dims, 6)) / correlation
    phases = rng.uniform(0, 2 * np.pi, (1, dims, 6))
    return np.sqrt(2 / 6) * np.sum(np.sin(2 * np.pi * freqs * t + phases), axis=-1)


def make_body(n_frames: int, seed: int = 0, arena_radius: float = 200.0) -> Body:
    """A body walking in the arena for ``n_frames`` frames (smooth, bone lengths fixed)."""
    rng = np.random.default_rng(seed + 1000)
    path = np.tanh(0.6 * _smooth_noise(rng, n_frames, 2, 150.0)) * 0.75 * arena_radius
    heading = (
        np.unwrap(np.arctan2(*np.gradient(path, axis=0).T[::-1])) + 0.3 * _smooth_noise(rng, n_frames, 1, 40)[:, 0]
    )
    root = np.concatenate([path, 50 + 5 * _smooth_noise(rng, n_frames, 1, 30)], axis=1)
    cos, sin = np.cos(heading), np.sin(heading)
    index = {name: i for i, name in enumerate(BODYPARTS)}
    points = np.zeros((n_frames, len(BODYPARTS), 3))
    points[:, index["neck"]] = root
    wiggle = 0.35 * _smooth_noise(rng, n_frames, 3 * len(BONES), 20).reshape(n_frames, len(BONES), 3)
    for b, (child, parent, length) in enumerate(BONES):  # parents come before children
        rest = np.asarray(_REST[child], dtype=float)
        local = rest / np.linalg.norm(rest) + wiggle[:, b]
        local /= np.linalg.norm(local, axis=-1, keepdims=True)
        world = np.stack(
            [cos * local[:, 0] - sin * local[:, 1], sin * local[:, 0] + cos * local[:, 1], local[:, 2]], -1
        )
        points[:, index[child]] = points[:, index[parent]] + length * world
    edges = [(index[p], index[c]) for c, p, _ in BONES]
    return Body(points, list(BODYPARTS), edges, np.array([length for *_, length in BONES]))


# ------------------------------------------------------------------------------ observations


@dataclass
class Observations:
    """Per-camera 2D observations as networks would give them.

    Attributes:
        pixels: (C, T, K, 2) x, y in pixels.
        likelihood: (C, T, K).
        jump: (C, T, K) True where a confident jump was planted.
        occluded: (C, T, K) True inside an occlusion episode or outside the image.
    """

    pixels: Array
    likelihood: Array
    jump: NDArray[np.bool_]
    occluded: NDArray[np.bool_]


def occlusion_runs(
    rng: np.random.Generator, shape: tuple[int, int], rate: float, mean_length: float
) -> NDArray[np.bool_]:
    """(T, K) runs of True covering about ``rate`` of the frames (lengths ~ exponential)."""
    n_frames, n_kp = shape
    starts = rng.random(shape) < rate / mean_length
    lengths = rng.exponential(mean_length, shape).astype(int) + 1
    ends = np.zeros((n_frames + 1, n_kp))
    t, k = np.nonzero(starts)
    np.add.at(ends, (t, k), 1)
    np.add.at(ends, (np.minimum(t + lengths[t, k], n_frames), k), -1)
    return np.cumsum(ends, axis=0)[:n_frames] > 0


def observe(
    group: CameraGroup,
    points: Array,
    seed: int = 0,
    noise_px: float = 1.5,
    jump_rate: float = 0.07,
    jump_px: tuple[float, float] = (30.0, 150.0),
    occlusion_rate: float = 0.05,
    occlusion_length: float = 20.0,
) -> Observations:
    """Corrupted 2D keypoints of ``points`` (T, K, 3) in every camera of ``group``.

    Inliers: projection + N(0, noise_px^2) per axis, likelihood 0.8-1.0. Jumps (``jump_rate``
    of the points): displaced by 30-150 px in a random direction, likelihood 0.5-1.0.
    Occlusion runs (``occlusion_rate`` of the frames per view and keypoint, mean length
    ``occlusion_length`` frames) and points outside the image: the network guesses somewhere
    in the image with likelihood 0-0.3.
    """
    rng = np.random.default_rng(seed + 2000)
    true = group.project(points)  # (C, T, K, 2)
    shape = true.shape[:-1]
    pixels = true + rng.normal(0, noise_px, true.shape)
    likelihood = rng.uniform(0.8, 1.0, shape)
    jump = rng.random(shape) < jump_rate
    radius = rng.uniform(*jump_px, shape)
    angle = rng.uniform(0, 2 * np.pi, shape)
    pixels = np.where(
        jump[..., None], pixels + radius[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1), pixels
    )
    likelihood = np.where(jump, rng.uniform(0.5, 1.0, shape), likelihood)
    occluded = np.stack([occlusion_runs(rng, shape[1:], occlusion_rate, occlusion_length) for _ in group.cameras])
    sizes = np.array([cam.size for cam in group.cameras], dtype=float)[:, None, None, :]
    outside = np.any((true < 0) | (true >= sizes), axis=-1)
    occluded |= outside
    guess = rng.uniform(0, 1, true.shape) * sizes
    pixels = np.where(occluded[..., None], guess, pixels)
    likelihood = np.where(occluded, rng.uniform(0.0, 0.3, shape), likelihood)
    jump &= ~occluded
    return Observations(pixels, likelihood, jump, occluded)


# ------------------------------------------------------------------------------ board videos


def board_poses(
    n_frames: int, board_size: tuple[float, float], seed: int = 0, arena_radius: float = 200.0
) -> tuple[Array, Array]:
    """Random poses of a board held over the arena: rotations (F, 3, 3), translations (F, 3)
    (board -> world; the board's normal points up, tilted by 10-50 degrees)."""
    rng = np.random.default_rng(seed + 3000)
    from element_lightning_pose.engine.multicam.cameras import rodrigues_to_matrix

    spin = rodrigues_to_matrix(
        np.stack([np.zeros(n_frames), np.zeros(n_frames), rng.uniform(0, 2 * np.pi, n_frames)], -1)
    )
    tilt_axis = rng.normal(size=(n_frames, 3)) * np.array([1, 1, 0])
    tilt_axis /= np.linalg.norm(tilt_axis, axis=-1, keepdims=True)
    tilt = rodrigues_to_matrix(tilt_axis * rng.uniform(np.radians(10), np.radians(50), (n_frames, 1)))
    flip = np.diag([1.0, -1.0, -1.0])  # board z (into the board, OpenCV) points down: face up
    rotation = tilt @ spin @ flip
    centre = np.concatenate(
        [rng.uniform(-0.5, 0.5, (n_frames, 2)) * arena_radius, rng.uniform(20, 120, (n_frames, 1))], axis=1
    )
    half = np.array([board_size[0] / 2, board_size[1] / 2, 0.0])
    translation = centre - np.einsum("fij,j->fi", rotation, half)
    return rotation, translation


def render_board_views(
    group: CameraGroup, board: Board, rotations: Array, translations: Array, supersample: int = 1, seed: int = 0
) -> list[NDArray[np.uint8]]:
    """Grey frames (F, H, W) per camera of the board at the given poses (true pose + distortion).

    Each camera pixel's ray (undistorted once per camera) is intersected with the board plane
    and the board image is sampled there (``supersample``^2 rays per pixel, averaged), plus a
    little sensor noise.
    """
    import cv2

    rng = np.random.default_rng(seed + 4000)
    ppu = 6.0  # board image pixels per world unit
    image = board.image(ppu).astype(np.float32)
    videos = []
    for cam in group.cameras:
        width, height = cam.size
        u, v = np.meshgrid(
            (np.arange(width * supersample) + 0.5) / supersample - 0.5,
            (np.arange(height * supersample) + 0.5) / supersample - 0.5,
        )
        rays = cam.undistort(np.stack([u, v], -1))
        direction = np.concatenate([rays, np.ones(rays.shape[:-1] + (1,))], -1) @ cam.rotation  # world
        centre = cam.centre
        frames = np.empty((len(rotations), height, width), dtype=np.uint8)
        for f, (rot, trans) in enumerate(zip(rotations, translations)):  # one remap per frame
            normal = rot[:, 2]
            depth = (normal @ (trans - centre)) / (direction @ normal)
            hit = centre + depth[..., None] * direction
            board_xy = (hit - trans) @ rot  # board coordinates
            map_x = (board_xy[..., 0] * ppu - 0.5).astype(np.float32)
            map_y = (board_xy[..., 1] * ppu - 0.5).astype(np.float32)
            map_x[depth <= 0] = -1e4
            sampled = cv2.remap(
                image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=170.0
            )
            small = cv2.resize(sampled, (width, height), interpolation=cv2.INTER_AREA)
            noisy = small * 0.8 + 25 + rng.normal(0, 2.0, small.shape)
            frames[f] = np.clip(noisy, 0, 255).astype(np.uint8)
        videos.append(frames)
    return videos


def render_board_videos(
    group: CameraGroup,
    board: Board,
    directory: PathLike,
    n_frames: int = 20,
    seed: int = 0,
    fps: float = 10.0,
    supersample: int = 1,
) -> dict[str, Path]:
    """Write one board video per camera (``<camera>.avi``, lossless FFV1) in ``directory``.

    Returns {camera name: path}. The true poses are :func:`board_poses` with the same seed.
    """
    from element_lightning_pose.engine.data.video import write_video

    size = (board.board_x * board.square_length, board.board_y * board.square_length)
    rotations, translations = board_poses(n_frames, size, seed)
    paths = {}
    for cam, frames in zip(group.cameras, render_board_views(group, board, rotations, translations, supersample, seed)):
        rgb = (np.repeat(f[..., None], 3, axis=-1) for f in frames)
        paths[cam.name] = write_video(Path(directory) / f"{cam.name}.avi", rgb, fps, codec="FFV1")
    return paths


def render_body_videos(
    group: CameraGroup,
    points: Array,
    bodyparts: list[str],
    directory: PathLike,
    fps: float = 30.0,
    radius: int = 4,
    hidden: NDArray[np.bool_] | None = None,
    decoy_offsets: Array | None = None,
) -> dict[str, tuple[Path, Path]]:
    """Each view of a body as a video (coloured dots on grey, nearer points drawn last) and its
    true labels (``<camera>.csv``, x / y / likelihood 1, NaN off-image): {camera: (video, labels)}.

    ``hidden`` (C, T, K) marks occluded points: not drawn (their true labels are kept). With
    ``decoy_offsets`` (C, K, 2) pixels, a hidden point's dot is drawn at that offset from
    where it is instead (a look-alike in the wrong place: what makes networks jump)."""

    from element_lightning_pose.engine.data.keypoints import write_predictions
    from element_lightning_pose.engine.data.video import write_video

    colours = [
        tuple(int(255 * c) for c in ((k * 0.618) % 1, 0.4 + 0.5 * ((k * 0.37) % 1), 1 - (k * 0.29) % 1))
        for k in range(len(bodyparts))
    ]
    out = {}
    for c, cam in enumerate(group.cameras):
        pixels = cam.project(points)  # (T, K, 2)
        depth = cam.to_camera(points)[..., 2]
        inside = np.all((pixels >= 0) & (pixels < np.array(cam.size)), axis=-1)
        drawn, where = inside, pixels
        if hidden is not None:
            drawn = inside & ~hidden[c]
            if decoy_offsets is not None:
                decoy = np.clip(pixels + decoy_offsets[c][None], 0, np.array(cam.size) - 1)
                where = np.where(hidden[c][..., None], decoy, pixels)
                drawn = inside
        video = write_video(
            Path(directory) / f"{cam.name}.mp4", _dot_frames(cam.size, where, depth, drawn, colours, radius), fps
        )
        labels = np.concatenate([np.where(inside[..., None], pixels, np.nan), inside[..., None].astype(float)], -1)
        out[cam.name] = (video, write_predictions(Path(directory) / f"{cam.name}.csv", labels, bodyparts))
    return out


def _dot_frames(
    size: tuple[int, int],
    pixels: Array,
    depth: Array,
    inside: NDArray[np.bool_],
    colours: list[tuple[int, ...]],
    radius: int,
) -> Iterator[NDArray[np.uint8]]:
    """Frames of coloured dots (far points first), one per row of ``pixels`` (T, K, 2)."""
    import cv2

    for t in range(len(pixels)):  # drawing is per point by nature (OpenCV)
        image = np.full((size[1], size[0], 3), 110, dtype=np.uint8)
        for k in np.argsort(-depth[t]):
            if inside[t, k]:
                centre = (int(round(pixels[t, k, 0])), int(round(pixels[t, k, 1])))
                cv2.circle(image, centre, radius, colours[k], -1, lineType=cv2.LINE_AA)
        yield image
