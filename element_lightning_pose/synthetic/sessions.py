"""Synthetic recording sessions of one animal that differ the way real sessions do, and OOD projects.

A lab labels frames of its first one or two sessions, then records more: another day, another
light, a camera moved closer, bedding of another texture, a new object in the arena. Each
:class:`SessionStyle` changes what a network trained on the first sessions has not seen, while
the animal (body, colours, gait) stays the same:

- the background: its texture (``noise``, ``stripes``, ``checker``) and brightness;
- the camera: contrast and colour balance of the whole frame, motion blur along the body axis;
- the animal's size in the frame (``animal_scale``: camera distance);
- a distractor: static blobs of the nose's and a paw's colour on the floor;
- the behaviour: ``pose_range`` widens the spine bends, head pitch and tail lift;
- occluders of new shapes (``disc``, ``bar``) and colour.

Rendering and dynamics are :mod:`element_lightning_pose.synthetic.projects`'s; ground truth
(keypoints, occlusion flags) is known for every frame of every session.

:func:`make_session_project` writes an OOD Lightning Pose project::

    CollectedData.csv                 labels of frames of the TRAINING sessions only
    labeled-data/<session>/img*.png   those frames, plus two neighbours each side
    videos/<session>.mp4              every session (training and new): the unlabeled videos
    ground_truth/<session>.npz        keypoints (T, K, 2), occluded (T, K) of every frame
    synthetic.json                    parameters, sessions and their roles

so a network is trained on the labels and the unlabeled videos of all sessions (as a lab adds
its new recordings) and tested on the new sessions' ground truth. Everything is deterministic
by ``seed``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from element_lightning_pose.engine.atomic import atomic_directory
from element_lightning_pose.engine.data.keypoints import write_keypoint_csv
from element_lightning_pose.engine.data.video import write_video
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.synthetic.projects import (
    BLOB_RADIUS,
    LABEL_SCORER,
    METADATA_FILE,
    PART_COLOURS,
    SyntheticProject,
    _Layout,
    bodyparts_for,
    make_background,
    make_occluder_texture,
    render_frame,
    simulate_occluders,
    simulate_pose,
)

TEXTURES = ("noise", "stripes", "checker")
OCCLUDER_SHAPES = ("box", "disc", "bar")
# body-part colours the distractor blobs copy: the nose and the left front paw
DISTRACTOR_PARTS = (0, 5)


@dataclass(frozen=True)
class SessionStyle:
    """What one session changes against the labeled sessions (the defaults: the labeled rig)."""

    texture: str = "noise"
    brightness: float = 0.0  # added to the background's grey levels (the animal keeps its colours)
    contrast: float = 1.0  # whole frame, about mid-grey 128
    colour_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB gains of the whole frame
    animal_scale: float = 1.0  # animal size in the frame (camera distance)
    distractor: bool = False  # static blobs of the nose's and a paw's colour on the floor
    motion_blur: int = 0  # length (pixels) of a linear blur along the body axis; 0: none
    pose_range: float = 1.0  # spread of bends, head pitch and tail lift (see simulate_pose)
    occluder_shape: str = "box"
    occlusion: bool = True

    def check(self, name: str) -> None:
        """Raise ``ValueError`` naming the session and the parameter at fault."""
        problems = []
        if self.texture not in TEXTURES:
            problems.append(f"texture must be one of {TEXTURES}, got {self.texture!r}")
        if self.occluder_shape not in OCCLUDER_SHAPES:
            problems.append(f"occluder_shape must be one of {OCCLUDER_SHAPES}, got {self.occluder_shape!r}")
        if not 0.3 <= self.animal_scale <= 1.5:
            problems.append(f"animal_scale must be in [0.3, 1.5], got {self.animal_scale}")
        if not self.contrast > 0:
            problems.append(f"contrast must be > 0, got {self.contrast}")
        if len(self.colour_gain) != 3 or min(self.colour_gain) <= 0:
            problems.append(f"colour_gain must be three positive RGB gains, got {self.colour_gain}")
        if self.motion_blur < 0:
            problems.append(f"motion_blur must be >= 0 pixels, got {self.motion_blur}")
        if not 0 < self.pose_range <= 3:
            problems.append(f"pose_range must be in (0, 3], got {self.pose_range}")
        if problems:
            raise ValueError(f"session {name!r}: " + "; ".join(problems))


# Two labeled sessions of one rig (two days: the background redrawn, a little light change) and
# four new ones, each changing two or three things at once as real new sessions do.
TRAIN_SESSIONS: dict[str, SessionStyle] = {
    "train_a": SessionStyle(),
    "train_b": SessionStyle(brightness=8.0),
}
NEW_SESSIONS: dict[str, SessionStyle] = {
    "new_light": SessionStyle(brightness=-45.0, contrast=0.7, colour_gain=(1.15, 1.0, 0.8)),
    "new_closer": SessionStyle(texture="stripes", animal_scale=1.25, pose_range=1.8),
    "new_distractor": SessionStyle(texture="checker", distractor=True, occluder_shape="disc"),
    "new_blur": SessionStyle(motion_blur=7, pose_range=1.6, occluder_shape="bar", brightness=20.0),
}


@dataclass(frozen=True)
class SessionData:
    """One simulated session: ground truth of every frame and what is needed to draw them."""

    name: str
    style: SessionStyle
    layout: _Layout
    keypoints: np.ndarray  # (T, K, 2) pixels
    occluded: np.ndarray  # (T, K) bool
    background: np.ndarray  # (H, W, 3) uint8, distractors drawn in
    distractors: np.ndarray  # (n, 2) pixel centres of the distractor blobs (n = 0 without)
    occluder_masks: np.ndarray  # (T, H, W) bool
    occluder: np.ndarray  # (H, W, 3) uint8 texture shown where the mask is set
    blur_angles: np.ndarray = field(repr=False)  # (T,) body-axis angle (radians) of view 1

    @property
    def n_frames(self) -> int:
        return len(self.keypoints)

    def render(self, t: int) -> np.ndarray:
        """Frame ``t`` as RGB uint8."""
        no_box = np.zeros(4, dtype=np.int64)
        frame = render_frame(self.background, self.keypoints[t], self.layout, no_box, self.occluder)
        mask = self.occluder_masks[t]
        frame[mask] = self.occluder[mask]
        if self.style.motion_blur > 0:
            frame = _motion_blur(frame, self.style.motion_blur, float(self.blur_angles[t]))
        return _camera(frame, self.style)


def _texture(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The floor: the default noise texture, or stripes / a checkerboard over it (RGB uint8)."""
    base = make_background(height, width, rng).astype(np.float32)
    if kind == "noise":
        return base.astype(np.uint8)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    side = float(min(height, width))
    if kind == "stripes":
        angle, period = rng.uniform(0, np.pi), side * rng.uniform(0.08, 0.14)
        pattern = np.sin(2 * np.pi * (np.cos(angle) * x + np.sin(angle) * y) / period)
    else:  # checker
        cell = side * rng.uniform(0.07, 0.11)
        pattern = np.where((np.floor(x / cell) + np.floor(y / cell)) % 2 == 0, 1.0, -1.0).astype(np.float32)
    return np.clip(base + 28 * pattern[..., None], 0, 255).astype(np.uint8)


def _draw_distractors(background: np.ndarray, layout: _Layout, rng: np.random.Generator) -> np.ndarray:
    """Blobs of the nose's and a paw's colour at random places of view 1; returns their centres."""
    radius = max(1.5, BLOB_RADIUS * layout.scale)
    centres = []
    for part in DISTRACTOR_PARTS:
        centre = rng.uniform(
            [0.15 * layout.view_width, 0.15 * layout.height], [0.85 * layout.view_width, 0.85 * layout.height]
        )
        scale = 1 << 4
        cv2.circle(
            background,
            (int(round(centre[0] * scale)), int(round(centre[1] * scale))),
            int(round(radius * scale)),
            PART_COLOURS[part],
            -1,
            cv2.LINE_AA,
            4,
        )
        centres.append(centre)
    return np.array(centres)


def _occluder_masks(boxes: np.ndarray, shape: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W) masks of the occluders: the box itself, a disc around it, or a long bar through it."""
    masks = np.zeros((len(boxes), height, width), dtype=bool)
    angle = rng.uniform(0, np.pi)
    cache: dict[tuple[int, ...], np.ndarray] = {}
    for t, box in enumerate(boxes):
        x0, y0, x1, y1 = (int(v) for v in box)
        if x1 <= x0 or y1 <= y0:
            continue
        key = (x0, y0, x1, y1)
        if key not in cache:
            mask = np.zeros((height, width), dtype=np.uint8)
            centre = ((x0 + x1 - 1) // 2, (y0 + y1 - 1) // 2)
            half = max(x1 - x0, y1 - y0) / 2
            if shape == "box":
                mask[y0:y1, x0:x1] = 1
            elif shape == "disc":
                cv2.circle(mask, centre, max(1, int(round(1.2 * half))), 1, -1)
            else:  # a bar three times the box's size, thin, at the session's angle
                dx, dy = 1.5 * half * np.cos(angle), 1.5 * half * np.sin(angle)
                start = (int(round(centre[0] - dx)), int(round(centre[1] - dy)))
                end = (int(round(centre[0] + dx)), int(round(centre[1] + dy)))
                cv2.line(mask, start, end, 1, max(1, int(round(0.6 * half))))
            cache[key] = mask.astype(bool)
        masks[t] = cache[key]
    return masks


def _motion_blur(frame: np.ndarray, length: int, angle: float) -> np.ndarray:
    """A symmetric linear blur of ``length`` pixels at ``angle`` (the true positions stay centred)."""
    size = 2 * (length // 2) + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    c = size // 2
    dx, dy = c * np.cos(angle), c * np.sin(angle)
    cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
    kernel /= kernel.sum()
    return cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _camera(frame: np.ndarray, style: SessionStyle) -> np.ndarray:
    """Contrast about mid-grey and colour gains of the whole frame."""
    if style.contrast == 1.0 and tuple(style.colour_gain) == (1.0, 1.0, 1.0):
        return frame
    out = (frame.astype(np.float32) - 128.0) * style.contrast + 128.0
    out *= np.asarray(style.colour_gain, dtype=np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def simulate_session(
    name: str,
    style: SessionStyle,
    *,
    seed: int | np.random.SeedSequence,
    image_size: tuple[int, int] = (128, 128),
    views: int = 1,
    n_frames: int = 300,
    fps: float = 30.0,
) -> SessionData:
    """Simulate one session: pose, occluders, background; frames are drawn by :meth:`SessionData.render`."""
    style.check(name)
    height, width = (int(v) for v in image_size)
    if views not in (1, 2):
        raise ValueError(f"views must be 1 or 2, got {views}")
    if height < 32 or width // views < 32:
        raise ValueError(f"image_size {image_size} too small: each view needs at least 32x32 pixels")
    if n_frames < 5:
        raise ValueError(f"n_frames must be >= 5, got {n_frames}")
    scene_seq, pose_seq = np.random.SeedSequence(seed).spawn(2) if isinstance(seed, int) else seed.spawn(2)
    scene_rng, pose_rng = np.random.default_rng(scene_seq), np.random.default_rng(pose_seq)
    layout = _Layout(height, width, views, style.animal_scale)
    background = _texture(style.texture, height, width, scene_rng)
    background = np.clip(background.astype(np.float32) + style.brightness, 0, 255).astype(np.uint8)
    distractors = _draw_distractors(background, layout, scene_rng) if style.distractor else np.zeros((0, 2))
    occluder = make_occluder_texture(max(height, width), scene_rng)[:height, :width]
    if style.occluder_shape != "box":  # a new object: another colour too
        occluder = np.clip(occluder.astype(np.float32) * np.array([1.25, 0.95, 0.6]), 0, 255).astype(np.uint8)
    world = simulate_pose(n_frames, fps, layout, pose_rng, pose_range=style.pose_range)
    keypoints = layout.to_pixels(world)
    boxes, _ = simulate_occluders(keypoints, layout, pose_rng, style.occlusion)
    masks = _occluder_masks(boxes, style.occluder_shape, height, width, scene_rng)
    # a keypoint is occluded when the mask covers the pixel its centre falls in
    cols = np.clip(np.floor(keypoints[..., 0] + 0.5).astype(int), 0, width - 1)
    rows = np.clip(np.floor(keypoints[..., 1] + 0.5).astype(int), 0, height - 1)
    occluded = masks[np.arange(n_frames)[:, None], rows, cols]
    axis = keypoints[:, 0] - keypoints[:, 3]  # tail base -> nose, view 1
    angles = np.arctan2(axis[:, 1], axis[:, 0])
    return SessionData(name, style, layout, keypoints, occluded, background, distractors, masks, occluder, angles)


@dataclass(frozen=True)
class SessionProject(SyntheticProject):
    """An OOD project: labels from ``train_sessions``; videos (and ground truth) of all sessions."""

    train_sessions: tuple[str, ...]
    new_sessions: tuple[str, ...]

    def video(self, session: str) -> Path:
        """The video of ``session``."""
        path = self.root / "videos" / f"{session}.mp4"
        if session not in self.train_sessions + self.new_sessions:
            raise ProjectError(
                f"{self.root}: no session {session!r}; sessions: {self.train_sessions + self.new_sessions}"
            )
        return path


def make_session_project(
    out_dir: PathLike,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (128, 128),
    views: int = 1,
    n_labeled: int = 40,
    n_frames: int = 300,
    fps: float = 30.0,
    train_sessions: Mapping[str, SessionStyle] | None = None,
    new_sessions: Mapping[str, SessionStyle] | None = None,
) -> SessionProject:
    """Write an OOD project to ``out_dir`` (new or empty): labels of the training sessions, videos of all.

    ``n_labeled`` frames (20-75 in the issue's setting) are spread over the training sessions'
    videos, away from their ends. Defaults: :data:`TRAIN_SESSIONS` and :data:`NEW_SESSIONS`.
    """
    train_sessions = dict(TRAIN_SESSIONS if train_sessions is None else train_sessions)
    new_sessions = dict(NEW_SESSIONS if new_sessions is None else new_sessions)
    if not train_sessions:
        raise ValueError("train_sessions: at least one labeled session is needed")
    shared = set(train_sessions) & set(new_sessions)
    if shared:
        raise ValueError(f"sessions {sorted(shared)} are both training and new sessions")
    for name in [*train_sessions, *new_sessions]:
        if not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ValueError(f"session name {name!r}: use letters, digits, '_' or '-' (it names files)")
    if not 1 <= n_labeled <= len(train_sessions) * (n_frames - 4):
        raise ValueError(
            f"n_labeled must be between 1 and {len(train_sessions) * (n_frames - 4)} "
            f"(training-session frames with two neighbours each side), got {n_labeled}"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    styles = {**train_sessions, **new_sessions}
    streams = np.random.SeedSequence(seed).spawn(1 + len(styles))
    sessions = [
        simulate_session(name, style, seed=stream, image_size=image_size, views=views, n_frames=n_frames, fps=fps)
        for (name, style), stream in zip(styles.items(), streams[1:])
    ]
    label_rng = np.random.default_rng(streams[0])
    per_session = np.full(len(train_sessions), n_labeled // len(train_sessions))
    per_session[: n_labeled % len(train_sessions)] += 1
    labeled = {
        name: np.sort(label_rng.choice(np.arange(2, n_frames - 2), size=int(k), replace=False))
        for name, k in zip(train_sessions, per_session)
    }
    bodyparts = bodyparts_for(views)
    digits = max(5, len(str(n_frames - 1)))
    with atomic_directory(out_dir) as staging:
        label_rows, label_index = [], []
        for session in sessions:
            write_video(staging / "videos" / f"{session.name}.mp4", (session.render(t) for t in range(n_frames)), fps)
            (staging / "ground_truth").mkdir(exist_ok=True)
            np.savez_compressed(
                staging / "ground_truth" / f"{session.name}.npz",
                keypoints=session.keypoints,
                occluded=session.occluded,
                distractors=session.distractors,
                bodyparts=np.array(bodyparts),
                fps=fps,
            )
            if session.name not in labeled:
                continue
            image_dir = staging / "labeled-data" / session.name
            image_dir.mkdir(parents=True)
            context = {int(t + d) for t in labeled[session.name] for d in range(-2, 3)}
            for t in sorted(context):
                path = image_dir / f"img{t:0{digits}d}.png"
                cv2.imwrite(str(path), cv2.cvtColor(session.render(t), cv2.COLOR_RGB2BGR))
            for t in labeled[session.name]:
                label_index.append(f"labeled-data/{session.name}/img{t:0{digits}d}.png")
                label_rows.append(session.keypoints[t])
        write_keypoint_csv(
            staging / "CollectedData.csv", np.stack(label_rows), bodyparts, ("x", "y"), LABEL_SCORER, label_index
        )
        metadata = {
            "kind": "sessions",
            "seed": seed,
            "image_size": [int(v) for v in image_size],
            "n_labeled": n_labeled,
            "n_video_frames": n_frames,
            "views": views,
            "fps": fps,
            "bodyparts": bodyparts,
            "videos": [f"videos/{name}.mp4" for name in styles],
            "train_sessions": list(train_sessions),
            "new_sessions": list(new_sessions),
            "styles": {name: asdict(style) for name, style in styles.items()},
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return load_session_project(out_dir)


def load_session_project(root: PathLike) -> SessionProject:
    """A project written by :func:`make_session_project`."""
    root = Path(root)
    meta_path = root / METADATA_FILE
    if not meta_path.is_file():
        raise ProjectError(f"{meta_path}: not found; {root} is not a synthetic sessions project")
    try:
        metadata = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise ProjectError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("kind") != "sessions":
        raise ProjectError(f"{meta_path}: a synthetic project without sessions (use load_synthetic_project)")
    try:
        return SessionProject(
            root,
            root / "CollectedData.csv",
            [root / v for v in metadata["videos"]],
            list(metadata["bodyparts"]),
            int(metadata["views"]),
            tuple(metadata["train_sessions"]),
            tuple(metadata["new_sessions"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ProjectError(f"{meta_path}: malformed synthetic sessions metadata ({exc})") from exc
