"""Unlabeled video frames for the unsupervised losses: a decoded-once frame cache and clips.

Decoding video on the CPU every step would dominate a training step, so each unlabeled video
is decoded ONCE into a cache of frames already at the network's input size (uint8, one
``.npy`` memory map; ``h * w * 3`` bytes a frame). Long videos are not cached whole: at most
``max_frames`` frames are kept, as a seeded random subset of contiguous segments, so disk use
is bounded. A training step draws one contiguous clip from a segment (clips never cross
segment boundaries, so consecutive cached frames are consecutive video frames).

A clip is augmented as a whole (one geometric warp and one contrast change for all its
frames) and comes with the 2x3 affine matrix that maps network-input pixels of the augmented
clip back to ORIGINAL-frame pixels, where the losses' epsilons are defined.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from element_lightning_pose.engine.atomic import atomic_output, write_text_atomic
from element_lightning_pose.engine.data.video import iter_frames, resize_frame, video_info
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.safe_paths import check_name
from element_lightning_pose.engine.training.augmentation import Augmenter
from element_lightning_pose.engine.types import PathLike

CACHE_VERSION = 1


@dataclass(frozen=True)
class Segment:
    """Frames ``start .. start + length`` of video ``video`` stored at cache rows ``offset ..``."""

    video: int
    start: int
    length: int
    offset: int


@dataclass
class FrameCache:
    """Decoded, resized unlabeled frames on disk and where each contiguous segment came from."""

    path: Path
    videos: list[str]
    original_sizes: list[tuple[int, int]]
    size: tuple[int, int]
    segments: list[Segment]
    _frames: np.ndarray | None = None

    @property
    def frames(self) -> np.ndarray:
        """(N, h, w, 3) uint8 memory map, opened lazily (once per DataLoader worker)."""
        if self._frames is None:
            self._frames = np.load(self.path, mmap_mode="r")
        return self._frames

    @property
    def n_frames(self) -> int:
        return sum(s.length for s in self.segments)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_frames"] = None  # workers reopen the memory map
        return state


def plan_segments(lengths: Sequence[int], max_frames: int, clip_length: int, seed: int) -> list[tuple[int, int, int]]:
    """(video, start, length) segments covering at most ``max_frames`` frames of videos of ``lengths``.

    Everything when it fits; otherwise a seeded random subset of equal contiguous blocks, spread
    over all videos, each at least ``clip_length`` long.
    """
    usable = [(v, n) for v, n in enumerate(lengths) if n >= clip_length]
    if not usable:
        raise ProjectError(
            f"no unlabeled video has at least clip_length={clip_length} frames (lengths: {list(lengths)})"
        )
    if sum(n for _, n in usable) <= max_frames:
        return [(v, 0, n) for v, n in usable]
    if max_frames < clip_length:
        raise ProjectError(f"losses.max_cached_frames={max_frames} is below losses.clip_length={clip_length}")
    block = max(clip_length, min(512, max_frames // 16))
    blocks = [(v, start, block) for v, n in usable for start in range(0, n - block + 1, block)]
    if not blocks:
        block = clip_length
        blocks = [(v, start, block) for v, n in usable for start in range(0, n - block + 1, block)]
    order = np.random.default_rng(seed).permutation(len(blocks))[: max(1, max_frames // block)]
    return sorted(blocks[i] for i in order)


def _cache_key(videos: Sequence[PathLike], size: tuple[int, int], max_frames: int, clip_length: int, seed: int) -> dict:
    return {
        "version": CACHE_VERSION,
        "videos": [[str(Path(v).resolve()), Path(v).stat().st_size, Path(v).stat().st_mtime_ns] for v in videos],
        "size": list(size),
        "max_frames": max_frames,
        "clip_length": clip_length,
        "seed": seed,
    }


def build_frame_cache(
    videos: Sequence[PathLike],
    size: tuple[int, int],
    cache_dir: PathLike,
    *,
    max_frames: int = 5000,
    clip_length: int = 16,
    seed: int = 0,
) -> FrameCache:
    """Decode ``videos`` once into ``cache_dir/frames.npy`` at ``size`` (h, w); reuse a matching cache.

    The cache is rebuilt when the videos (path, size, mtime) or parameters change; it is written
    through ``atomic.py`` (temporary file, rename), so an interrupted build leaves no half-written
    cache, and the files are readable by the lab (0644 under umask 022).
    """
    videos = [Path(v) for v in videos]
    if not videos:
        raise ProjectError("unsupervised losses need unlabeled videos, but the project's video folder has none")
    cache_dir = Path(cache_dir)
    frames_path, meta_path = cache_dir / "frames.npy", cache_dir / "frames.json"
    key = _cache_key(videos, size, max_frames, clip_length, seed)
    if frames_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            return _from_meta(frames_path, meta)

    infos = [video_info(v) for v in videos]
    plan = plan_segments([i.n_frames for i in infos], max_frames, clip_length, seed)
    h, w = size
    with atomic_output(frames_path) as tmp:
        store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(sum(p[2] for p in plan), h, w, 3))
        segments, offset = [], 0
        for video, start, length in plan:
            got = 0
            for frame in iter_frames(videos[video], start, start + length):
                store[offset + got] = resize_frame(frame, size)
                got += 1
            if got >= clip_length:  # a video shorter than its header said: keep what decoded
                segments.append(Segment(video, start, got, offset))
                offset += got
        store.flush()
        del store
        if not segments:
            raise ProjectError(f"no frames could be decoded from the unlabeled videos {[str(v) for v in videos]}")
        if offset < sum(p[2] for p in plan):  # shrink to the frames actually decoded
            kept = np.load(tmp, mmap_mode="r")[:offset].copy()
            np.save(tmp, kept)
        meta = {
            "key": key,
            "videos": [str(v) for v in videos],
            "original_sizes": [[i.height, i.width] for i in infos],
            "size": [h, w],
            "segments": [[s.video, s.start, s.length, s.offset] for s in segments],
        }
        # the old description goes first: new frames never sit beside a key that matches the old ones
        meta_path.unlink(missing_ok=True)
    write_text_atomic(meta_path, json.dumps(meta))
    return _from_meta(frames_path, meta)


def _from_meta(frames_path: Path, meta: dict) -> FrameCache:
    return FrameCache(
        frames_path,
        list(meta["videos"]),
        [tuple(s) for s in meta["original_sizes"]],
        tuple(meta["size"]),
        [Segment(*s) for s in meta["segments"]],
    )


def to_original_matrix(matrix: np.ndarray, size: tuple[int, int], original: tuple[int, int]) -> np.ndarray:
    """2x3 map from pixels of an image warped by ``matrix`` (in ``size`` space) to ``original`` pixels."""
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))
    fy, fx = original[0] / size[0], original[1] / size[1]
    # resize convention: x_orig = (x + 0.5) * f - 0.5
    scale = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
    return (scale @ inverse)[:2]


class ClipDataset(Dataset):
    """Random contiguous clips of ``clip_length`` cached frames, ``n_clips`` per epoch.

    Items: ``frames`` (L, 3, h, w) uint8, ``to_original`` (2, 3) float32 (augmented network
    pixels -> original pixels), ``video`` and ``start`` (where the clip came from).
    """

    def __init__(self, cache: FrameCache, clip_length: int, n_clips: int, augmenter: Augmenter | None = None) -> None:
        self.cache = cache
        self.clip_length = clip_length
        self.n_clips = max(1, n_clips)
        self.augmenter = augmenter
        starts = np.array([max(0, s.length - clip_length + 1) for s in cache.segments], dtype=float)
        self.weights = starts / starts.sum()

    def __len__(self) -> int:
        return self.n_clips

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        segment = self.cache.segments[rng.choice(len(self.cache.segments), p=self.weights)]
        first = int(rng.integers(0, segment.length - self.clip_length + 1))
        rows = slice(segment.offset + first, segment.offset + first + self.clip_length)
        frames = np.array(self.cache.frames[rows])
        size = self.cache.size
        matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        if self.augmenter is not None:
            frames, matrix = augment_clip(self.augmenter, frames, rng)
        to_original = to_original_matrix(matrix, size, self.cache.original_sizes[segment.video])
        return {
            "frames": torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2),
            "to_original": torch.from_numpy(to_original.astype(np.float32)),
            "video": torch.tensor(segment.video),
            "start": torch.tensor(segment.start + first),
        }


def augment_clip(augmenter: Augmenter, frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same geometric warp (no flip: it would permute keypoints) and contrast for every frame."""
    h, w = frames.shape[1:3]
    c = augmenter.config
    matrix, _ = augmenter.geometric_matrix((h, w), rng)
    if c.hflip and matrix[0, 0] * matrix[1, 1] - matrix[0, 1] * matrix[1, 0] < 0:
        matrix = np.array([[-1.0, 0, w - 1], [0, 1, 0]]) @ np.vstack([matrix, [0, 0, 1]])  # undo the flip
    alpha = rng.uniform(*c.contrast_range) if rng.random() < c.contrast_prob else None
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        warped = cv2.warpAffine(frame, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        if alpha is not None:
            warped = cv2.addWeighted(warped, alpha, warped, 0.0, float((1 - alpha) * warped.mean()))
        out[i] = warped
    return out, matrix


# ------------------------------------------------------------------------------ synchronised cameras


def session_videos(videos: Sequence[PathLike], view_names: Sequence[str]) -> list[dict[str, Path]]:
    """The videos of each recording session, one per view: ``[{view: path}, ...]``.

    A multi-view project names each camera's video after its view (``<session>_<view>.mp4``,
    Lightning Pose's layout); videos whose names differ only by the view are one session. The
    longest view name a file name contains wins (``cam1`` vs ``cam10``). A session missing a
    view is an error naming it: the geometric losses need every camera of an instant.
    """
    sessions: dict[str, dict[str, Path]] = {}
    for video in map(Path, videos):
        matches = [v for v in view_names if v in video.name]
        if not matches:
            continue
        view = max(matches, key=len)
        key = video.name.replace(view, "{view}")
        sessions.setdefault(key, {})[view] = video
    incomplete = {k: sorted(set(view_names) - set(v)) for k, v in sessions.items() if len(v) != len(view_names)}
    if incomplete:
        key, missing = next(iter(incomplete.items()))
        raise ProjectError(
            f"unlabeled videos {key!r}: no video of view(s) {missing}; the reprojection and limb-length losses "
            f"need every view of a session (views {list(view_names)})"
        )
    if not sessions:
        raise ProjectError(f"no unlabeled video names one of the views {list(view_names)}")
    return [sessions[k] for k in sorted(sessions)]


def build_camera_caches(
    videos: Sequence[PathLike],
    view_names: Sequence[str],
    size: tuple[int, int],
    cache_dir: PathLike,
    *,
    max_frames: int = 5000,
    clip_length: int = 16,
    seed: int = 0,
) -> list[FrameCache]:
    """One frame cache per view (in view order) holding the SAME instants of every session.

    The views of a session must have the same number of frames (synchronised cameras started
    together); the segments are planned once on those lengths, so cache row ``i`` is one
    instant in every view. ``max_frames`` bounds each view's cache.
    """
    for view in view_names:  # each names a cache folder below
        check_name(view, "view name")
    sessions = session_videos(videos, view_names)
    for session in sessions:
        counts = {view: video_info(path).n_frames for view, path in session.items()}
        if len(set(counts.values())) != 1:
            raise ProjectError(
                f"unlabeled videos {sorted(str(p) for p in session.values())}: frame counts differ between views "
                f"{counts}; the geometric losses need synchronised videos of equal length"
            )
    caches = [
        build_frame_cache(
            [session[view] for session in sessions],
            size,
            Path(cache_dir) / view,
            max_frames=max_frames,
            clip_length=clip_length,
            seed=seed,
        )
        for view in view_names
    ]
    first = caches[0].segments
    for view, cache in zip(view_names, caches):
        if cache.segments != first:  # a video decoded fewer frames than its header says
            raise ProjectError(f"unlabeled videos of view {view!r} decoded to other frames than view {view_names[0]!r}")
    return caches


class MultiCameraClipDataset(Dataset):
    """Synchronised clips: the same ``clip_length`` instants in every camera, ``n_clips`` per epoch.

    Items: ``frames`` (C, L, 3, h, w) uint8, ``to_original`` (C, 2, 3) float32 (each camera is
    augmented on its own and mapped back to its ORIGINAL pixels, where its calibration holds),
    ``video`` and ``start``.
    """

    def __init__(
        self, caches: Sequence[FrameCache], clip_length: int, n_clips: int, augmenter: Augmenter | None = None
    ) -> None:
        self.caches = list(caches)
        self.cache = self.caches[0]  # what the trainer reports (frames per view)
        self.clip_length = clip_length
        self.n_clips = max(1, n_clips)
        self.augmenter = augmenter
        starts = np.array([max(0, s.length - clip_length + 1) for s in self.cache.segments], dtype=float)
        self.weights = starts / starts.sum()

    def __len__(self) -> int:
        return self.n_clips

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        index = int(rng.choice(len(self.cache.segments), p=self.weights))
        segment = self.cache.segments[index]
        first = int(rng.integers(0, segment.length - self.clip_length + 1))
        rows = slice(segment.offset + first, segment.offset + first + self.clip_length)
        frames, maps = [], []
        for cache in self.caches:
            clip = np.array(cache.frames[rows])
            matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            if self.augmenter is not None:
                clip, matrix = augment_clip(self.augmenter, clip, rng)
            frames.append(torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2))
            maps.append(to_original_matrix(matrix, cache.size, cache.original_sizes[segment.video]).astype(np.float32))
        return {
            "frames": torch.stack(frames),
            "to_original": torch.from_numpy(np.stack(maps)),
            "video": torch.tensor(segment.video),
            "start": torch.tensor(segment.start + first),
        }
