"""Synthetic labeled projects with known ground truth, deterministic by seed.

An animal-like body (spine chain nose-head-centre-tail base-tail tip, four paws) walks over a
fixed textured background with smooth random dynamics: forward speed, turning rate, spine
bends, body height and head pitch follow Ornstein-Uhlenbeck processes; a diagonal gait moves
and lifts the paws; the body is steered away from, and if need be shifted back from, the edges
so every keypoint stays inside its view. The pose is 3D (``z`` = height above the floor), so
an optional second view, drawn on the right half of the same frame by a fixed linear
projection of the same 3D pose (like the mirror-mouse rig's top and bottom views), holds the
same keypoints as a rank-3 linear function of each keypoint's 3D position, which a
multi-view PCA can find. Each body part is a blob of its own colour. Occluder patches appear
for a few frames over a chosen keypoint; which keypoints they cover is recorded per frame.

The project written is a Lightning Pose project::

    CollectedData.csv                     labels of the chosen frames (x, y per keypoint)
    labeled-data/<video>/img00042.png     labeled frames, plus two neighbours each side
    videos/<video>.mp4                    the full videos
    ground_truth/<video>.npz              keypoints (T, K, 2), occluded (T, K) for every frame
    synthetic.json                        the parameters, for :func:`load_synthetic_project`

``scene="arena"`` draws instead what a lab's open-field or home-cage camera sees, the case
where a network at 256x256 sees the animal at a few heatmap pixels: a small dark animal
(``animal_scale`` of the default size) on a bright floor under a strong lighting gradient
and vignette, in greyscale, with subtle body-part shades instead of colours, and static
distractors that resemble body parts (a dark blob, a dark elongated shape).

Labeled PNGs are the rendered frames themselves (lossless); the videos are compressed.
Keypoint coordinates are in pixels with 0 at the centre of the first pixel, quantised to
1/16 pixel: the renderer draws at exactly that sub-pixel position.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from element_lightning_pose.engine.atomic import atomic_directory
from element_lightning_pose.engine.data.keypoints import write_keypoint_csv
from element_lightning_pose.engine.data.video import write_video
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.types import PathLike

BODY_PARTS = (
    "nose",
    "head",
    "centre",
    "tail_base",
    "tail_tip",
    "paw_left_front",
    "paw_right_front",
    "paw_left_hind",
    "paw_right_hind",
)
VIEW_SUFFIXES = ("_top", "_bot")
# RGB colour of each body part's blob (the same in both views).
PART_COLOURS = (
    (230, 40, 40),
    (250, 210, 40),
    (40, 200, 60),
    (40, 120, 250),
    (240, 240, 240),
    (250, 120, 20),
    (200, 40, 220),
    (40, 220, 220),
    (140, 90, 250),
)
BODY_COLOUR = (58, 48, 44)
SCENES = ("default", "arena")
# Arena scene: greyscale shades of the body and its parts on a bright floor.
ARENA_BODY_SHADE = 38
ARENA_PART_SHADES = (105, 72, 52, 88, 120, 150, 150, 140, 140)
ARENA_ANIMAL_SCALE = 0.6
# Body geometry in units of the view's shorter side.
NECK, SNOUT, HIP, TAIL = 0.10, 0.08, 0.11, 0.16
GIRDLE, PAW_SPREAD, STRIDE, LIFT = 0.07, 0.085, 0.035, 0.035
BLOB_RADIUS = 0.028
Z_MAX = 0.2
# Second view: u = x, v = SECOND_VIEW_Y * y + SECOND_VIEW_Z * z + offset (a fixed linear map).
SECOND_VIEW_Y, SECOND_VIEW_Z = 0.7, 1.0
SUBPIXEL_BITS = 4
METADATA_FILE = "synthetic.json"
LABEL_SCORER = "synthetic"


@dataclass(frozen=True)
class SyntheticProject:
    """A synthetic Lightning Pose project on disk and the way to its ground truth."""

    root: Path
    csv_path: Path
    videos: list[Path]
    bodyparts: list[str]
    views: int

    @property
    def view_indices(self) -> list[list[int]]:
        """Keypoint indices of each view (same body-part order in every view)."""
        per_view = len(self.bodyparts) // self.views
        return [list(range(v * per_view, (v + 1) * per_view)) for v in range(self.views)]

    def ground_truth(self, video: Path | str) -> tuple[np.ndarray, np.ndarray]:
        """True keypoints (T, K, 2) in pixels and occlusion flags (T, K) of every frame of ``video``."""
        path = self.root / "ground_truth" / f"{Path(video).stem}.npz"
        if not path.is_file():
            raise ProjectError(f"{path}: no ground truth for video {video!r} in {self.root}")
        with np.load(path) as data:
            return data["keypoints"], data["occluded"]


@dataclass(frozen=True)
class _Layout:
    """Where views sit in the frame and how world units map to pixels."""

    height: int
    width: int
    views: int
    animal_scale: float = 1.0

    @property
    def view_width(self) -> int:
        return self.width // self.views

    @property
    def scale(self) -> float:
        """Pixels per world unit (the view's shorter side spans ``1 / animal_scale`` units)."""
        return float(min(self.view_width, self.height) - 1) * self.animal_scale

    @property
    def extent(self) -> tuple[float, float]:
        """World size (X, Y) of one view."""
        return (self.view_width - 1) / self.scale, (self.height - 1) / self.scale

    @property
    def pad(self) -> float:
        """Distance from the edges keypoints keep (blob radius and one pixel), in world units."""
        return BLOB_RADIUS + 1.0 / self.scale

    def second_view_offset(self) -> float:
        _, y_extent = self.extent
        span = SECOND_VIEW_Y * y_extent + SECOND_VIEW_Z * Z_MAX
        return (y_extent - span) / 2

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """(T, P, 3) world points -> (T, views * P, 2) pixel coordinates, quantised to the renderer's grid."""
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        views = [np.stack([x, y], axis=-1)]
        if self.views == 2:
            v = SECOND_VIEW_Y * y + SECOND_VIEW_Z * z + self.second_view_offset()
            views.append(np.stack([x + self.view_width / self.scale, v], axis=-1))
        pixels = np.concatenate(views, axis=1) * self.scale
        step = 1 << SUBPIXEL_BITS
        return np.round(pixels * step) / step


def bodyparts_for(views: int) -> list[str]:
    """Keypoint names: the body parts, suffixed ``_top`` / ``_bot`` when there are two views."""
    if views == 1:
        return list(BODY_PARTS)
    return [part + suffix for suffix in VIEW_SUFFIXES[:views] for part in BODY_PARTS]


# ----------------------------------------------------------------------------------------
# Dynamics
# ----------------------------------------------------------------------------------------


def _ou_step(value: np.ndarray | float, mean: float, tau: float, std: float, dt: float, noise: float):
    """One exact Ornstein-Uhlenbeck step with stationary standard deviation ``std``."""
    decay = np.exp(-dt / tau)
    return mean + (value - mean) * decay + std * np.sqrt(1 - decay**2) * noise


def _smooth_step(
    value, velocity, mean: np.ndarray | float, tau: np.ndarray | float, std: np.ndarray | float, dt: float, noise
):
    """One step of a critically damped oscillator driven by noise (a smooth OU-like process).

    Unlike a plain OU process, whose paths are rough at short time scales, the value here is
    the integral of a velocity, so it moves smoothly from frame to frame; its stationary
    standard deviation is ``std`` and its time scale ``tau``.
    """
    rate = 1.0 / tau
    acceleration = -(rate**2) * (value - mean) - 2 * rate * velocity
    velocity = velocity + acceleration * dt + std * np.sqrt(4 * rate**3 * dt) * noise
    return value + velocity * dt, velocity


def _body_points(centre, heading, bends, height, pitch, tail_lift, phase) -> np.ndarray:
    """The 9 body parts as (9, 3) world points for one frame's state."""
    forward = heading + bends[0] / 2
    head = centre + NECK * np.array([np.cos(forward), np.sin(forward)])
    snout_angle = heading + bends[0]
    nose = head + SNOUT * np.array([np.cos(snout_angle), np.sin(snout_angle)])
    back = heading + np.pi - bends[1] / 2
    tail_base = centre + HIP * np.array([np.cos(back), np.sin(back)])
    tail_angle = heading + np.pi - bends[1] - bends[2]
    tail_tip = tail_base + TAIL * np.array([np.cos(tail_angle), np.sin(tail_angle)])

    axis = np.array([np.cos(heading), np.sin(heading)])
    left = np.array([-axis[1], axis[0]])
    paws, paw_z = [], []
    # diagonal gait: left front with right hind, right front with left hind
    for girdle, side, offset in ((1, 1, 0.0), (1, -1, np.pi), (-1, 1, np.pi), (-1, -1, 0.0)):
        swing = phase + offset
        paws.append(centre + axis * (girdle * GIRDLE + STRIDE * np.sin(swing)) + left * side * PAW_SPREAD)
        paw_z.append(LIFT * max(0.0, np.cos(swing)))
    xy = np.array([nose, head, centre, tail_base, tail_tip, *paws])
    z = np.array([height + 2 * pitch, height + pitch, height, height - 0.02, tail_lift, *paw_z])
    return np.concatenate([xy, np.clip(z, 0, Z_MAX)[:, None]], axis=1)


def simulate_pose(
    n_frames: int, fps: float, layout: _Layout, rng: np.random.Generator, pose_range: float = 1.0
) -> np.ndarray:
    """World points (T, 9, 3) of a smooth random walk kept inside the view.

    ``pose_range`` scales the spread of the spine bends, head pitch and tail lift (1: the
    default animal; above 1: poses a network trained at 1 has rarely seen).
    """
    x_extent, y_extent = layout.extent
    low, high = np.array([layout.pad, layout.pad]), np.array([x_extent, y_extent]) - layout.pad
    dt = 1.0 / fps
    centre = rng.uniform(low + 0.3, high - 0.3) if np.all(high - low > 0.6) else (low + high) / 2
    heading, turn, speed = rng.uniform(-np.pi, np.pi), 0.0, 0.15
    phase = 0.0
    # smooth processes: bends (3), height, pitch, tail lift; values and velocities
    means = np.array([0.0, 0.0, 0.0, 0.1, 0.0, 0.05])
    taus = np.array([0.5, 0.5, 0.4, 0.8, 0.5, 0.6])
    stds = np.array([0.35, 0.35, 0.35, 0.02, 0.02, 0.03]) * np.array([pose_range] * 3 + [1.0] + [pose_range] * 2)
    shape, shape_velocity = means + stds * rng.standard_normal(6), np.zeros(6)
    points = np.empty((n_frames, len(BODY_PARTS), 3))
    for t in range(n_frames):
        bends, (height, pitch, tail_lift) = shape[:3], shape[3:]
        body = _body_points(centre, heading, bends, height, pitch, tail_lift, phase)
        # shift the whole body (and the state) back inside the view: shape is unchanged
        shift = np.clip(body[:, :2].min(axis=0), low, None) - body[:, :2].min(axis=0)
        shift += np.clip(body[:, :2].max(axis=0) + shift, None, high) - (body[:, :2].max(axis=0) + shift)
        centre = centre + shift
        body[:, :2] += shift
        points[t] = body

        noise = rng.standard_normal(8)
        to_middle = (low + high) / 2 - centre
        wall = np.clip(1 - np.min(np.concatenate([centre - low, high - centre])) / 0.25, 0, 1)
        steer = np.angle(np.exp(1j * (np.arctan2(to_middle[1], to_middle[0]) - heading)))
        turn = _ou_step(turn, 4.0 * wall * steer, 0.3, 1.5, dt, noise[0])
        speed = max(0.0, _ou_step(speed, 0.15, 1.0, 0.08, dt, noise[1]))
        heading += turn * dt
        centre = centre + speed * dt * np.array([np.cos(heading), np.sin(heading)])
        shape, shape_velocity = _smooth_step(shape, shape_velocity, means, taus, stds, dt, noise[2:])
        phase += 2 * np.pi * (1.0 + 10.0 * speed) * dt
    return points


# ----------------------------------------------------------------------------------------
# Occlusion and rendering
# ----------------------------------------------------------------------------------------


def simulate_occluders(
    keypoints: np.ndarray, layout: _Layout, rng: np.random.Generator, enabled: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Occluder rectangles per frame and the keypoints they cover.

    Returns ``boxes`` (T, 4) int pixel rectangles ``x0, y0, x1, y1`` (half-open; all zero when
    none) and ``occluded`` (T, K) bool: a keypoint is occluded when the box covers the pixel
    its centre falls in (pixel ``i`` spans ``[i - 0.5, i + 0.5)``).
    """
    n_frames, n_keypoints, _ = keypoints.shape
    boxes = np.zeros((n_frames, 4), dtype=np.int64)
    occluded = np.zeros((n_frames, n_keypoints), dtype=bool)
    if not enabled:
        return boxes, occluded
    per_view = n_keypoints // layout.views
    half = max(2, int(round(0.09 * min(layout.view_width, layout.height))))
    t = int(rng.integers(5, 40))
    while t < n_frames:
        duration = int(rng.integers(4, 13))
        target = int(rng.integers(n_keypoints))
        view = target // per_view
        cx, cy = np.round(keypoints[t, target]).astype(int)
        x_low, x_high = view * layout.view_width, (view + 1) * layout.view_width
        box = (max(cx - half, x_low), max(cy - half, 0), min(cx + half + 1, x_high), min(cy + half + 1, layout.height))
        for frame in range(t, min(t + duration, n_frames)):
            boxes[frame] = box
            x, y = keypoints[frame, :, 0] + 0.5, keypoints[frame, :, 1] + 0.5
            occluded[frame] = (x >= box[0]) & (x < box[2]) & (y >= box[1]) & (y < box[3])
        t += duration + int(rng.integers(20, 60))
    return boxes, occluded


def make_background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A fixed texture (coarse and medium noise upsampled, a gradient) as RGB uint8.

    Mostly brightness with a little colour, and no pixel-level grain: it would only make the
    PNGs and videos large without making the task more realistic.
    """

    def noise(cells: int, channels: int) -> np.ndarray:
        coarse = rng.normal(0, 1, size=(cells, cells, channels)).astype(np.float32)
        return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).reshape(height, width, channels)

    brightness = 16 * noise(6, 1) + 6 * noise(24, 1)
    colour = 5 * noise(5, 3)
    gradient = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None] * rng.uniform(-12, 12, 3)
    tint = np.array([150, 135, 115], dtype=np.float32)
    image = tint + brightness + colour + gradient
    return np.clip(image, 0, 255).astype(np.uint8)


def make_occluder_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A fixed blotchy grey patch drawn as the occluder (cropped to each box)."""
    coarse = rng.normal(0, 1, size=(4, 4, 1)).astype(np.float32)
    texture = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)[..., None]
    return np.clip(95 + 20 * texture + np.zeros(3, np.float32), 0, 255).astype(np.uint8)


def _fixed(point: np.ndarray) -> tuple[int, int]:
    """A pixel position as OpenCV's fixed-point integers (``shift=SUBPIXEL_BITS``)."""
    x, y = np.round(np.asarray(point) * (1 << SUBPIXEL_BITS))
    return int(x), int(y)


@dataclass(frozen=True)
class _Style:
    """Colours of the animal: its body and each body part's blob (RGB)."""

    body: tuple[int, int, int] = BODY_COLOUR
    parts: tuple[tuple[int, int, int], ...] = PART_COLOURS


ARENA_STYLE = _Style(body=(ARENA_BODY_SHADE,) * 3, parts=tuple((shade, shade, shade) for shade in ARENA_PART_SHADES))


def make_arena_background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A bright greyscale floor: lighting gradient, vignette, faint texture, and distractors.

    The distractors are fixed: a dark blob the size of a body-part blob drawn with the nose's
    shade, and a dark elongated shape the size of the body, so a network cannot take "dark"
    or "round" for "animal".
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1) - 0.5, y / max(height - 1, 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 30 * (np.cos(angle) * u + np.sin(angle) * v)
    vignette = -55 * (u**2 + v**2)
    coarse = rng.normal(0, 1, size=(8, 8)).astype(np.float32)
    texture = 5 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    floor = np.clip(222 + gradient + vignette + texture, 0, 255).astype(np.uint8)
    side = min(height, width)
    blob = (int(rng.uniform(0.15, 0.85) * width), int(rng.uniform(0.15, 0.85) * height))
    cv2.circle(
        floor, blob, max(1, int(round(BLOB_RADIUS * ARENA_ANIMAL_SCALE * side))), ARENA_PART_SHADES[0], -1, cv2.LINE_AA
    )
    centre = (int(rng.uniform(0.15, 0.85) * width), int(rng.uniform(0.15, 0.85) * height))
    axes = (max(2, int(0.14 * ARENA_ANIMAL_SCALE * side)), max(1, int(0.045 * ARENA_ANIMAL_SCALE * side)))
    cv2.ellipse(floor, centre, axes, float(rng.uniform(0, 180)), 0, 360, ARENA_BODY_SHADE + 12, -1, cv2.LINE_AA)
    return np.repeat(floor[..., None], 3, axis=-1)


def render_frame(
    background: np.ndarray,
    keypoints: np.ndarray,
    layout: _Layout,
    box: np.ndarray,
    occluder: np.ndarray,
    style: _Style = _Style(),
) -> np.ndarray:
    """Draw the animal's keypoints ``(K, 2)`` (all views) and the occluder over the background."""
    frame = background.copy()
    per_view = len(BODY_PARTS)
    scale = layout.scale
    for view in range(layout.views):
        points = keypoints[view * per_view : (view + 1) * per_view]
        nose, head, centre, tail_base, tail_tip = points[:5]
        segments = [
            (tail_base, tail_tip, 0.02),
            (centre, tail_base, 0.10),
            (centre, head, 0.09),
            (head, nose, 0.05),
            *[(centre + 0.6 * (paw - centre), paw, 0.025) for paw in points[5:]],
        ]
        for start, end, thickness in segments:
            cv2.line(
                frame,
                _fixed(start),
                _fixed(end),
                style.body,
                max(1, int(round(thickness * scale))),
                cv2.LINE_AA,
                SUBPIXEL_BITS,
            )
        radius = max(1.5, BLOB_RADIUS * scale) * (1 << SUBPIXEL_BITS)
        # paws first: the spine's blobs stay whole when a paw passes under the body
        order = [5, 6, 7, 8, 4, 3, 2, 1, 0]
        for point, colour in zip(points[order], np.asarray(style.parts)[order].tolist()):
            cv2.circle(frame, _fixed(point), int(round(radius)), colour, -1, cv2.LINE_AA, SUBPIXEL_BITS)
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = occluder[: y1 - y0, : x1 - x0]
    return frame


# ----------------------------------------------------------------------------------------
# Projects
# ----------------------------------------------------------------------------------------


def _check_parameters(image_size, n_labeled, n_video_frames, n_videos, views, fps, scene) -> tuple[int, int]:
    height, width = (int(v) for v in image_size)
    if views not in (1, 2):
        raise ValueError(f"views must be 1 or 2, got {views}")
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    if scene == "arena" and views != 1:
        raise ValueError("the arena scene has one view (views=1)")
    if height < 32 or width // views < 32:
        raise ValueError(f"image_size {image_size} too small: each view needs at least 32x32 pixels")
    if n_video_frames < 5:
        raise ValueError(f"n_video_frames must be >= 5 (labeled frames need 2 neighbours), got {n_video_frames}")
    if n_videos < 1:
        raise ValueError(f"n_videos must be >= 1, got {n_videos}")
    if not 1 <= n_labeled <= n_videos * (n_video_frames - 4):
        raise ValueError(
            f"n_labeled must be between 1 and {n_videos * (n_video_frames - 4)} "
            f"(frames with two neighbours each side), got {n_labeled}"
        )
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    return height, width


def _choose_labeled(n_labeled: int, n_videos: int, n_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Labeled frame indices per video (sorted), spread over videos, away from the ends."""
    per_video = np.full(n_videos, n_labeled // n_videos)
    per_video[: n_labeled % n_videos] += 1
    return [np.sort(rng.choice(np.arange(2, n_frames - 2), size=k, replace=False)) for k in per_video]


def make_synthetic_project(
    out_dir: PathLike,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (64, 64),
    n_labeled: int = 20,
    n_video_frames: int = 200,
    n_videos: int = 1,
    views: int = 1,
    occlusion: bool = True,
    fps: float = 30.0,
    scene: str = "default",
) -> SyntheticProject:
    """Write a synthetic LP project to ``out_dir`` (new or empty) and return it.

    ``image_size`` is the whole frame's (height, width); with ``views=2`` each view takes half
    the width. ``scene="arena"``: a small greyscale animal in a large lit arena with
    distractors (module docstring). The project is built in a temporary folder and renamed
    into place.
    """
    height, width = _check_parameters(image_size, n_labeled, n_video_frames, n_videos, views, fps, scene)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    arena = scene == "arena"
    layout = _Layout(height, width, views, ARENA_ANIMAL_SCALE if arena else 1.0)
    style = ARENA_STYLE if arena else _Style()
    streams = np.random.SeedSequence(seed).spawn(3 + n_videos)
    scene_rng, label_rng = np.random.default_rng(streams[0]), np.random.default_rng(streams[1])
    background = (make_arena_background if arena else make_background)(height, width, scene_rng)
    occluder = make_occluder_texture(max(height, width), scene_rng)
    labeled = _choose_labeled(n_labeled, n_videos, n_video_frames, label_rng)
    bodyparts = bodyparts_for(views)
    digits = max(5, len(str(n_video_frames - 1)))

    # built beside out_dir and renamed into place; atomic_directory gives it 0755, not mkdtemp's 0700
    with atomic_directory(out_dir) as staging:
        label_rows, label_index, stems = [], [], []
        for number in range(n_videos):
            stem = f"video{number:02d}"
            stems.append(stem)
            rng = np.random.default_rng(streams[3 + number])
            keypoints = layout.to_pixels(simulate_pose(n_video_frames, fps, layout, rng))
            boxes, occluded = simulate_occluders(keypoints, layout, rng, occlusion)

            def render(t: int, keypoints: np.ndarray = keypoints, boxes: np.ndarray = boxes) -> np.ndarray:
                return render_frame(background, keypoints[t], layout, boxes[t], occluder, style)

            write_video(staging / "videos" / f"{stem}.mp4", (render(t) for t in range(n_video_frames)), fps)
            (staging / "ground_truth").mkdir(exist_ok=True)
            np.savez_compressed(
                staging / "ground_truth" / f"{stem}.npz",
                keypoints=keypoints,
                occluded=occluded,
                bodyparts=np.array(bodyparts),
                fps=fps,
            )
            image_dir = staging / "labeled-data" / stem
            image_dir.mkdir(parents=True)
            context = {int(t + d) for t in labeled[number] for d in range(-2, 3)}
            for t in sorted(context):
                cv2.imwrite(str(image_dir / f"img{t:0{digits}d}.png"), cv2.cvtColor(render(t), cv2.COLOR_RGB2BGR))
            for t in labeled[number]:
                label_index.append(f"labeled-data/{stem}/img{t:0{digits}d}.png")
                label_rows.append(keypoints[t])
        write_keypoint_csv(
            staging / "CollectedData.csv", np.stack(label_rows), bodyparts, ("x", "y"), LABEL_SCORER, label_index
        )
        metadata = {
            "seed": seed,
            "image_size": [height, width],
            "n_labeled": n_labeled,
            "n_video_frames": n_video_frames,
            "n_videos": n_videos,
            "views": views,
            "occlusion": occlusion,
            "fps": fps,
            "scene": scene,
            "bodyparts": bodyparts,
            "videos": [f"videos/{stem}.mp4" for stem in stems],
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return load_synthetic_project(out_dir)


def load_synthetic_project(root: PathLike) -> SyntheticProject:
    """A project written by :func:`make_synthetic_project`."""
    root = Path(root)
    meta_path = root / METADATA_FILE
    if not meta_path.is_file():
        raise ProjectError(f"{meta_path}: not found; {root} is not a synthetic project")
    try:
        metadata = json.loads(meta_path.read_text())
        videos = [root / v for v in metadata["videos"]]
        bodyparts, views = list(metadata["bodyparts"]), int(metadata["views"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ProjectError(f"{meta_path}: malformed synthetic project metadata ({exc})") from exc
    return SyntheticProject(root, root / "CollectedData.csv", videos, bodyparts, views)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m element_lightning_pose.synthetic.projects",
        description="Write a synthetic Lightning Pose project with ground truth.",
    )
    parser.add_argument("out_dir", type=Path, help="new (or empty) project folder")
    parser.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=[64],
        metavar="N",
        help="frame size: N (square) or HEIGHT WIDTH (default 64)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labeled", type=int, default=20, help="labeled frames (default 20)")
    parser.add_argument("--frames", type=int, default=200, help="frames per video (default 200)")
    parser.add_argument("--videos", type=int, default=1, help="number of videos (default 1)")
    parser.add_argument("--views", type=int, choices=(1, 2), default=1)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--no-occlusion", action="store_true", help="no occluder episodes")
    parser.add_argument("--scene", choices=SCENES, default="default", help="default, or a small animal in an arena")
    args = parser.parse_args(argv)
    if len(args.size) not in (1, 2):
        parser.error("--size takes N or HEIGHT WIDTH")
    size = (args.size[0], args.size[-1])
    try:
        project = make_synthetic_project(
            args.out_dir,
            seed=args.seed,
            image_size=size,
            n_labeled=args.labeled,
            n_video_frames=args.frames,
            n_videos=args.videos,
            views=args.views,
            occlusion=not args.no_occlusion,
            fps=args.fps,
            scene=args.scene,
        )
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {project.root}: {len(project.videos)} video(s), {len(project.bodyparts)} keypoints, "
        f"labels in {project.csv_path.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
