"""Streaming inference: ``predict_video(model, video)`` with a model from :func:`.models.load_model`.

A background thread decodes and resizes the next batches (``video.iter_batches``) while the
network runs on the current one; only ``batch_size x prefetch`` frames are ever in memory, so
memory does not grow with the video's length. The heatmap -> keypoint step runs on the
device in a handful of tensor operations (a local soft-argmax, see ``networks.heads``).
Coordinates returned are ORIGINAL-frame pixels (0 = centre of the first pixel).

Context models (``model_type: context``) stream too: the backbone features of the last four
frames are kept between batches, so frame t is predicted from frames t-2..t+2 exactly as if
each frame had been given its true neighbours (the video's first / last frame repeated at the
edges). ``diagnostics_csv`` writes per-frame temporal norms and PCA residuals beside the
predictions, to find frames worth relabeling.

A video that decodes fewer frames than it lists (truncated, damaged) is an error
(:class:`~element_lightning_pose.engine.data.video.ShortVideoError`) and nothing is written;
``allow_short=True`` predicts what decodes, warns, and fills the missing frames with NaN
(likelihood 0). Evaluation on labeled frames is :mod:`.evaluate`. Nothing here imports Lightning.

A two-stage crop-zoom model (:class:`~.models.CropZoomModel`) streams with its detections
smoothed over time (a running median held back by half its window); a frame without a
confident detection around it is cropped at the detector's best guess, or is NaN with
likelihood 0 for every keypoint with ``crop_zoom.on_miss: nan`` (:func:`.crops.crop_centres`).
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from element_lightning_pose.engine.allocation import reuse_freed_memory
from element_lightning_pose.engine.data.crops import crop_frames
from element_lightning_pose.engine.data.keypoints import write_csv_atomic, write_predictions
from element_lightning_pose.engine.data.labels import (
    LabeledFrames,
    image_file,
    load_context_frames,
    load_context_resized,
    read_image,
)
from element_lightning_pose.engine.data.video import iter_batches, video_info
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.inference.metrics import diagnostics_table
from element_lightning_pose.engine.inference.models import CropZoomModel, PoseModel
from element_lightning_pose.engine.model_dir import (
    ModelDirectoryError,
)
from element_lightning_pose.engine.networks import (
    CONTEXT_RADIUS,
    pad_edges,
    sliding_windows,
)
from element_lightning_pose.engine.types import PathLike

# The former name of the one model-directory error (tests and docs import it from here).
ModelDirError = ModelDirectoryError


class ShortVideoWarning(UserWarning):
    """``allow_short=True``: a video decoded fewer frames than it lists; the rest are NaN."""


@dataclass
class PredictionResult:
    """What :func:`predict_video` produced for one video."""

    predictions: np.ndarray  # (T, K, 3) x, y (original pixels), likelihood
    frame_index: np.ndarray  # (T,) frame numbers in the video
    bodyparts: list[str]
    video: Path
    out_csv: Path | None
    diagnostics_csv: Path | None
    n_decoded: int  # frames decoded; fewer than T only with allow_short (the rest are NaN)
    elapsed_s: float  # decode + inference wall time (files not included)

    @property
    def n_frames(self) -> int:
        return int(len(self.predictions))

    @property
    def frames_per_s(self) -> float:
        """Inference speed over the frames decoded."""
        return self.n_decoded / max(self.elapsed_s, 1e-9)


def predict_video(
    model: PoseModel,
    video: PathLike,
    *,
    batch_size: int = 16,
    out_csv: PathLike | None = None,
    progress: bool = True,
    prefetch: int = 4,
    start: int = 0,
    stop: int | None = None,
    diagnostics_csv: PathLike | None = None,
    allow_short: bool = False,
    _batches: Iterator[tuple[np.ndarray, np.ndarray]] | None = None,
    _bar: Any = None,
) -> PredictionResult:
    """Predict frames ``start:stop`` (default: all) of ``video``; ``.predictions`` is (T, K, 3).

    x, y are original-frame pixels. Writes the LP/DLC predictions CSV (index = frame number)
    to ``out_csv`` when given, and per-frame diagnostics (temporal norm, PCA residuals; see
    :func:`metrics.diagnostics_table`) to ``diagnostics_csv``. A context model treats
    ``start`` / ``stop - 1`` as the video's edges (their frames repeated as neighbours).

    A video that decodes fewer frames than it lists raises :class:`video.ShortVideoError`
    before any file is written. ``allow_short=True`` instead warns (:class:`ShortVideoWarning`)
    and gives the missing frames NaN coordinates and likelihood 0, so T is still the full count.
    """
    reuse_freed_memory()  # each batch's activations reuse the last one's pages
    info = video_info(video, allow_short=allow_short)
    original = (info.height, info.width)
    chunks: list[np.ndarray] = []
    total = max((min(stop, info.n_frames) if stop is not None else info.n_frames) - start, 0)
    own_bar = _bar is None and progress
    bar = _progress_bar(total, Path(video).name) if own_bar else _bar
    started = time.perf_counter()
    batches = (
        _batches
        if _batches is not None
        else _video_batches(model, video, batch_size, start, stop, prefetch, allow_short)
    )
    try:
        if isinstance(model, CropZoomModel):
            chunks = list(_stream_crop_zoom(model, batches, bar))
        elif model.is_context:
            chunks = list(_stream_context(model, batches, original, bar))
        else:
            for indices, frames in batches:
                chunks.append(model.predict_resized(frames, original))
                if bar is not None:
                    bar.update(len(indices))
    finally:
        if own_bar and bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    k = len(model.bodyparts)
    predictions = np.concatenate(chunks) if chunks else np.empty((0, k, 3))
    n_decoded = len(predictions)
    if n_decoded < total:  # only with allow_short: a short decode raised otherwise
        warnings.warn(
            f"{video}: decoding stopped at frame {start + n_decoded} of {info.n_frames}; frames "
            f"{start + n_decoded}-{start + total - 1} are NaN with likelihood 0",
            ShortVideoWarning,
            stacklevel=2,
        )
        missing = np.full((total - n_decoded, k, 3), np.nan, dtype=predictions.dtype)
        missing[..., 2] = 0.0
        predictions = np.concatenate([predictions, missing])
    index = np.arange(start, start + len(predictions))
    diagnostics = None
    if diagnostics_csv is not None:  # computed before anything is written: a failure leaves no file
        diagnostics = diagnostics_table(predictions, model.bodyparts, model.pcas, index=index)
    if out_csv is not None:
        write_predictions(out_csv, predictions, model.bodyparts, index=index)
    if diagnostics is not None and diagnostics_csv is not None:
        write_csv_atomic(diagnostics, diagnostics_csv)
    return PredictionResult(
        predictions,
        index,
        list(model.bodyparts),
        Path(video),
        Path(out_csv) if out_csv is not None else None,
        Path(diagnostics_csv) if diagnostics_csv is not None else None,
        n_decoded,
        elapsed,
    )


def _video_batches(
    model: PoseModel, video: PathLike, batch_size: int, start: int, stop: int | None, prefetch: int, allow_short: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The decoded batches the model needs (resized, except for a crop-zoom model, which crops whole frames)."""
    size = None if isinstance(model, CropZoomModel) else model.image_resize
    return iter_batches(
        video, batch_size, size=size, start=start, stop=stop, prefetch=prefetch, allow_short=allow_short
    )


class _DecodingAhead:
    """A video's batches whose decoding starts now, in the background, not at the first ``next``.

    :func:`predict_videos` opens the next video this way while the network still works on the
    current one, so the cores never wait on a video's opening and first frames.
    """

    def __init__(self, batches: Iterator[tuple[np.ndarray, np.ndarray]]) -> None:
        self._batches = batches
        self._first: list[tuple[np.ndarray, np.ndarray]] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, daemon=True, name="elp-decode-ahead")
        self._thread.start()

    def _start(self) -> None:
        try:
            self._first.append(next(self._batches))
        except StopIteration:
            pass
        except BaseException as error:  # re-raised where the batches are consumed
            self._error = error

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        yield from self._first
        self._first.clear()
        yield from self._batches

    def close(self) -> None:
        self._thread.join()
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()


def predict_videos(
    model: PoseModel,
    videos: Sequence[PathLike],
    out_csvs: Sequence[PathLike | None],
    *,
    batch_size: int = 16,
    progress: bool = True,
    prefetch: int = 4,
    diagnostics_csvs: Sequence[PathLike | None] | None = None,
    allow_short: bool = False,
    on_done: Callable[[PredictionResult], None] | None = None,
    at_once: int | None = None,
) -> list[PredictionResult]:
    """Predict several videos in one pass: one CSV each (None: none), as :func:`predict_video` writes it alone.

    Every video is opened first (a missing or unreadable one raises before any work), and one
    progress bar counts the frames of them all. On a CPU with several threads and at least as
    many videos, ``at_once`` videos (default: :func:`videos_at_once`) are predicted side by side,
    each at one thread, sharing the model: one network call per core scales better than one call
    split over the cores. Otherwise the videos go one after another at every thread, the next one
    decoding in the background while the network works on the current one (memory: two videos'
    decoded-ahead batches). ``on_done`` is called, in this thread, with each video's result as
    soon as its CSV is written; the results are returned in the videos' order.
    """
    if len(videos) != len(out_csvs):
        raise ValueError(f"{len(videos)} videos but {len(out_csvs)} output CSVs")
    diagnostics = list(diagnostics_csvs) if diagnostics_csvs is not None else [None] * len(videos)
    infos = [video_info(video, allow_short=allow_short) for video in videos]
    bar = _progress_bar(sum(info.n_frames for info in infos), f"{len(videos)} videos") if progress else None
    n_at_once = videos_at_once(model, len(videos)) if at_once is None else max(1, min(at_once, len(videos)))
    if n_at_once > 1:
        try:
            return _predict_side_by_side(
                model, videos, out_csvs, diagnostics, n_at_once, batch_size, prefetch, allow_short, on_done, bar
            )
        finally:
            if bar is not None:
                bar.close()
    results: list[PredictionResult] = []
    upcoming: _DecodingAhead | None = None
    try:
        for i, video in enumerate(videos):
            current = upcoming or _DecodingAhead(
                _video_batches(model, video, batch_size, 0, None, prefetch, allow_short)
            )
            upcoming = None
            if i + 1 < len(videos):
                upcoming = _DecodingAhead(
                    _video_batches(model, videos[i + 1], batch_size, 0, None, prefetch, allow_short)
                )
            if bar is not None:
                bar.set_description(f"{Path(video).name} ({i + 1}/{len(videos)})")
            try:
                result = predict_video(
                    model,
                    video,
                    batch_size=batch_size,
                    out_csv=out_csvs[i],
                    diagnostics_csv=diagnostics[i],
                    allow_short=allow_short,
                    progress=False,  # the one bar of the batch counts
                    _batches=iter(current),
                    _bar=bar,
                )
            finally:
                current.close()
            results.append(result)
            if on_done is not None:
                on_done(result)
    finally:
        if upcoming is not None:
            upcoming.close()
        if bar is not None:
            bar.close()
    return results


def videos_at_once(model: PoseModel, n_videos: int) -> int:
    """How many videos :func:`predict_videos` predicts side by side: the CPU's threads, given as many videos.

    On mirror-mouse's video (resnet18, bf16, 2-core Xeon) two videos side by side at one thread
    each ran 142 frames/s against 122 for one video at two threads
    (``benchmarks/results/inference_videos.md``); on a 2-core AMD EPYC (AVX2, resnet18 fp32)
    only 1.07x (``inference_videos_amd.md``). Torch's thread count is one setting for the
    whole process, so fewer videos than threads go one at a time at every thread instead of
    leaving cores idle; a GPU runs one video at a time.
    """
    threads = torch.get_num_threads()
    if model.device.type != "cpu" or threads < 2 or n_videos < threads:
        return 1
    return threads


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Stopped(Exception):
    """Raised in a worker's batches when another video failed or the caller was interrupted."""


def _until(stop: threading.Event, batches: Iterator[tuple[np.ndarray, np.ndarray]]):
    try:
        for batch in batches:
            if stop.is_set():
                raise _Stopped
            yield batch
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


class _LockedBar:
    """One progress bar updated from several worker threads."""

    def __init__(self, bar) -> None:
        self._bar, self._lock = bar, threading.Lock()

    def update(self, n: int) -> None:
        with self._lock:
            self._bar.update(n)


def _predict_side_by_side(
    model, videos, out_csvs, diagnostics, n_at_once, batch_size, prefetch, allow_short, on_done, bar
) -> list[PredictionResult]:
    """:func:`predict_videos` with ``n_at_once`` worker threads at one torch thread each."""
    stop = threading.Event()
    shared_bar = _LockedBar(bar) if bar is not None else None

    def one(i: int) -> PredictionResult:
        if stop.is_set():
            raise _Stopped
        try:
            batches = _video_batches(model, videos[i], batch_size, 0, None, prefetch, allow_short)
            return predict_video(
                model,
                videos[i],
                batch_size=batch_size,
                out_csv=out_csvs[i],
                diagnostics_csv=diagnostics[i],
                allow_short=allow_short,
                progress=False,
                _batches=_until(stop, batches),
                _bar=shared_bar,
            )
        except BaseException:
            stop.set()  # before this worker takes the next video: no video starts after a failure
            raise

    with _torch_threads(1), ThreadPoolExecutor(n_at_once, thread_name_prefix="elp-video") as pool:
        futures = [pool.submit(one, i) for i in range(len(videos))]  # started in the videos' order
        try:
            for future in as_completed(futures):
                result = future.result()  # the first failure is raised here, the others stop
                if on_done is not None:
                    on_done(result)
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
    return [future.result() for future in futures]  # all done: in the videos' order


@torch.inference_mode()
def _stream_context(model: PoseModel, batches, original: tuple[int, int], bar):
    """Yield keypoint chunks of a context model, keeping the features of the last 4 frames between batches."""
    net = model._context_net()
    pending = None  # features of frames whose windows are not complete yet (plus the left padding)
    for indices, frames in batches:
        feats = net.features(model._to_device(frames))
        if pending is None:
            pending = pad_edges(feats[:1], CONTEXT_RADIUS, 0)[:CONTEXT_RADIUS]  # frame 0 repeated before the start
        sequence = torch.cat([pending, feats])
        if len(sequence) > 2 * CONTEXT_RADIUS:
            yield model._to_original(net.keypoints_from_features(sliding_windows(sequence)), original)
        pending = sequence[-2 * CONTEXT_RADIUS :]
        if bar is not None:
            bar.update(len(indices))
    if pending is not None:
        # the last frame repeated after the end completes the final two windows
        sequence = pad_edges(pending, 0, CONTEXT_RADIUS)
        yield model._to_original(net.keypoints_from_features(sliding_windows(sequence)), original)


def _stream_crop_zoom(model: CropZoomModel, batches, bar):
    """Yield keypoint chunks of a crop-zoom model, its detections smoothed over time.

    The running median of frame t needs the detections up to t + window // 2, so frames are
    held back that many frames (memory: one batch plus the lag); the result equals smoothing
    the whole video's detections at once. The crops then go through the pose network as a
    stream of their own: a context pose model sees each frame's crop beside its neighbours'
    crops (each cut around its own frame's centre), exactly as for whole frames.
    """
    half = model.detection_smoothing // 2
    tail = np.empty((0, 0, 3))  # detections of frames tail_start.. (the held frames and their left context)
    tail_start = n_done = 0
    held: list[np.ndarray] = []  # whole frames n_done..
    placed: list[tuple[np.ndarray, np.ndarray]] = []  # (matrices, missed) of crops not yet predicted

    def crops_upto(upto: int) -> tuple[np.ndarray, np.ndarray]:
        nonlocal tail, tail_start, held, n_done
        centres, weak = model.crop_centres(tail)
        centres, weak = centres[n_done - tail_start : upto - tail_start], weak[n_done - tail_start : upto - tail_start]
        frames, held = np.stack(held[: upto - n_done]), held[upto - n_done :]
        crops, matrices = crop_frames(frames, centres, model.crop_size, model.image_resize)
        placed.append((matrices, model.missed(centres, weak)))
        keep = max(upto - half - tail_start, 0)
        tail, tail_start, n_done = tail[keep:], tail_start + keep, upto
        return np.arange(len(crops)), crops

    def crop_batches():
        nonlocal tail
        for indices, frames in batches:
            detections = model.detect(frames)
            tail = np.concatenate([tail, detections]) if len(tail) else detections
            held.extend(frames)
            ready = tail_start + len(tail) - half
            if ready > n_done:
                yield crops_upto(ready)
            if bar is not None:
                bar.update(len(indices))
        if held:
            yield crops_upto(tail_start + len(tail))

    if model.is_context:
        chunks = _stream_context(model, crop_batches(), model.image_resize, None)
    else:
        chunks = (PoseModel.predict_resized(model, crops, model.image_resize) for _, crops in crop_batches())
    for points in chunks:  # in order; a context model's chunks lag its crops by two frames
        matrices, missed = (np.concatenate(parts) for parts in zip(*placed))
        n = len(points)
        yield model.to_frame(points, matrices[:n], missed[:n])
        placed[:] = [(matrices[n:], missed[n:])]


def _progress_bar(total: int, name: str):
    return tqdm(total=total, desc=name, unit="frame", unit_scale=False, dynamic_ncols=True, file=sys.stderr)


def predict_labeled(model: PoseModel, labels: LabeledFrames, *, batch_size: int = 16) -> np.ndarray:
    """Predict the labeled frames of a project: (N, K, 3) in original-frame pixels."""
    if list(labels.bodyparts) != list(model.bodyparts):
        raise ProjectError(
            f"{labels.csv_path}: body parts {labels.bodyparts} differ from the model's {model.bodyparts}"
        )
    out = np.empty((len(labels), len(model.bodyparts), 3))
    if isinstance(model, CropZoomModel) and model.is_context:
        for row in range(len(labels)):  # each labeled frame with its neighbours, cropped around its detection
            out[row] = model.predict_window(load_context_frames(labels, row))
        return out
    if model.is_context:
        for row in range(len(labels)):  # each labeled frame with its neighbouring files
            original = read_image(image_file(labels, row)).shape[:2]
            window, _ = load_context_resized(labels, row, model.image_resize)
            out[row] = model.predict_windows(window[None], original)[0]
        return out
    for start in range(0, len(labels), batch_size):
        rows = range(start, min(start + batch_size, len(labels)))
        frames = [read_image(image_file(labels, r)) for r in rows]
        sizes = {f.shape[:2] for f in frames}
        if len(sizes) == 1:
            out[start : start + len(frames)] = model.predict_frames(np.stack(frames))
        else:  # mixed frame sizes: one at a time
            for r, f in zip(rows, frames):
                out[r] = model.predict_frames(f[None])[0]
    return out


def output_names(videos: list[PathLike]) -> list[str]:
    """``<video name>`` of each video's outputs; two videos with the same name are an error.

    Checked before any work: the second video's predictions would overwrite the first's.
    """
    seen: dict[str, PathLike] = {}
    for video in videos:
        stem = Path(video).stem
        if stem in seen:
            raise ProjectError(
                f"{seen[stem]} and {video} would both write {stem}.csv: "
                f"predict them into different --out-dir folders (or rename one)"
            )
        seen[stem] = video
    return list(seen)
