"""Streaming inference: ``load_model(model_dir)`` then ``predict_video(model, video)``.

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
(:class:`video.ShortVideoError`) and nothing is written; ``allow_short=True`` predicts what
decodes, warns, and fills the missing frames with NaN (likelihood 0). Evaluation on labeled
frames is ``engine.evaluate``. Nothing here imports Lightning.

A two-stage crop-zoom model directory (``engine.cropzoom``) loads as a :class:`CropZoomModel`:
the detector finds the animal's centre on a downscaled frame, the centre is smoothed over
time (a running median), the pose model runs on the crop around it, and its keypoints are
mapped back to original-frame pixels; a frame whose detection is below the confidence
threshold is NaN with likelihood 0 for every keypoint.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from element_lightning_pose.engine.config import TrainConfig
from element_lightning_pose.engine.io import (
    LabeledFrames,
    ProjectError,
    read_image,
    write_csv_atomic,
    write_predictions,
)
from element_lightning_pose.engine.model_dir import (
    CROP_ZOOM,
    MODEL_JSON,
    ModelDirectoryError,
    ModelInfo,
    read_model_info,
)
from element_lightning_pose.engine.networks import (
    CONTEXT_RADIUS,
    ContextHeatmapNet,
    HeatmapNet,
    build_net,
    pad_edges,
    sliding_windows,
)
from element_lightning_pose.engine.networks.backbones import InputNormalizedBackbone
from element_lightning_pose.engine.pca import KeypointPCA

PathLike = str | os.PathLike

# The former name of the one model-directory error (tests and docs import it from here).
ModelDirError = ModelDirectoryError


class ShortVideoWarning(UserWarning):
    """``allow_short=True``: a video decoded fewer frames than it lists; the rest are NaN."""


@dataclass
class PoseModel:
    """A trained network ready for inference, with what it needs to map coordinates back."""

    net: HeatmapNet | ContextHeatmapNet
    bodyparts: list[str]
    image_resize: tuple[int, int]
    config: TrainConfig
    device: torch.device
    model_dir: Path | None = None
    info: ModelInfo | None = None  # model.json, when the directory has one
    channels_last: bool = True
    pcas: dict[str, KeypointPCA] = field(default_factory=dict)

    @property
    def is_context(self) -> bool:
        return bool(getattr(self.net, "is_context", False))

    def _context_net(self) -> ContextHeatmapNet:
        """The network of a context model (callers have checked :attr:`is_context`)."""
        if not isinstance(self.net, ContextHeatmapNet):
            raise TypeError(f"{type(self.net).__name__} is not a context network")
        return self.net

    def _to_device(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, h, w, 3) uint8 -> (B, 3, h, w) on the device."""
        batch = torch.as_tensor(frames).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        # an NHWC array permuted to NCHW *is* channels_last in memory: no copy needed
        return batch.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    @torch.inference_mode()
    def predict_resized(self, frames: np.ndarray | torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
        """Keypoints (B, K, 3) of frames already resized to ``image_resize`` (B, h, w, 3) uint8.

        x, y are mapped to a frame of ``original_size`` (height, width); likelihood in [0, 1].
        A context model sees the batch as consecutive frames (edges repeated); use
        :meth:`predict_windows` to give each frame its own neighbours.
        """
        if self.is_context:
            net = self._context_net()
            feats = net.features(self._to_device(frames))
            return self._to_original(net.keypoints_from_features(sliding_windows(pad_edges(feats))), original_size)
        return self._to_original(self.net.keypoints(self._to_device(frames)), original_size)

    @torch.inference_mode()
    def predict_windows(self, windows: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Context model: keypoints (B, K, 3) of the centre frames of resized windows (B, 5, h, w, 3)."""
        windows = np.asarray(windows)
        b, t = windows.shape[:2]
        net = self._context_net()
        feats = net.features(self._to_device(windows.reshape(b * t, *windows.shape[2:])))
        return self._to_original(net.keypoints_from_features(feats.reshape(b, t, *feats.shape[1:])), original_size)

    def _to_original(self, points: torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
        h, w = self.image_resize
        scale = torch.tensor([original_size[1] / w, original_size[0] / h], device=points.device)
        xy = (points[..., :2] + 0.5) * scale - 0.5
        return torch.cat([xy, points[..., 2:]], dim=-1).float().cpu().numpy()

    def predict_frames(self, frames: np.ndarray) -> np.ndarray:
        """Keypoints (B, K, 3) in original pixels of full-size frames (B, H, W, 3) uint8 RGB."""
        from element_lightning_pose.engine.video import resize_frame

        frames = np.asarray(frames)
        resized = np.stack([resize_frame(f, self.image_resize) for f in frames])
        return self.predict_resized(resized, frames.shape[1:3])


@dataclass
class CropZoomModel(PoseModel):
    """A two-stage model: ``detector`` (one keypoint, the centre) then the pose network on crops.

    ``net`` / ``image_resize`` / ``bodyparts`` are the pose stage's; ``crop_size`` is in
    original pixels. Frames go in whole (:meth:`predict_frames`); coordinates come out in
    original-frame pixels.
    """

    detector: PoseModel | None = None
    crop_size: tuple[int, int] = (0, 0)
    detection_smoothing: int = 1
    min_detection_confidence: float = 0.0

    def _detector(self) -> PoseModel:
        if self.detector is None:
            raise TypeError("a CropZoomModel needs its detector stage")
        return self.detector

    def predict_resized(self, frames: np.ndarray | torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
        raise TypeError("a crop-zoom model predicts from whole frames: use predict_frames or predict_video")

    def detect(self, frames: np.ndarray) -> np.ndarray:
        """The detector's centre (B, 2) in original pixels of whole frames (B, H, W, 3); NaN = a miss."""
        from element_lightning_pose.engine.cropzoom import centres_from_detections
        from element_lightning_pose.engine.video import resize_frame

        detector = self._detector()
        frames = np.asarray(frames)
        small = np.stack([resize_frame(f, detector.image_resize) for f in frames])
        found = detector.predict_resized(small, frames.shape[1:3])
        return centres_from_detections(found, self.min_detection_confidence)

    def predict_crops(self, frames: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Keypoints (B, K, 3) in original pixels from crops of ``frames`` around ``centres`` (B, 2).

        A frame whose centre is NaN (a miss) gets NaN coordinates and likelihood 0.
        """
        from element_lightning_pose.engine.cropzoom import apply_affine, crop_frames, invert_affine

        frames = np.asarray(frames)
        out = np.full((len(frames), len(self.bodyparts), 3), np.nan)
        out[..., 2] = 0.0
        found = np.flatnonzero(np.isfinite(centres).all(axis=1))
        if len(found):
            crops, matrices = crop_frames(frames[found], centres[found], self.crop_size, self.image_resize)
            # original_size = the input size: keypoints stay in crop-input pixels, then the matrix maps them back
            points = PoseModel.predict_resized(self, crops, self.image_resize).astype(np.float64)
            out[found, :, :2] = apply_affine(invert_affine(matrices), points[..., :2])
            out[found, :, 2] = points[..., 2]
        return out

    def predict_frames(self, frames: np.ndarray) -> np.ndarray:
        """Keypoints (B, K, 3) in original pixels of independent whole frames (no temporal smoothing)."""
        frames = np.asarray(frames)
        return self.predict_crops(frames, self.detect(frames))


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_Net = TypeVar("_Net", bound=InputNormalizedBackbone)


def fuse_batchnorm(net: _Net) -> _Net:
    """Fold the eval-mode BatchNorms of the backbone into the preceding convolutions.

    Inference only (the statistics are frozen into the weights); outputs agree to float
    rounding and the forward pass gets ~20% faster on CPU.
    """
    from torch.fx.experimental.optimization import fuse

    net.backbone = fuse(net.backbone.eval())
    return net


def load_model(
    model_dir: PathLike,
    *,
    device: str | torch.device | None = None,
    checkpoint: str = "best.ckpt",
    fuse: bool = True,
) -> PoseModel:
    """Load ``model_dir/checkpoints/<checkpoint>`` (no project needed) on ``device`` (default: GPU if any).

    ``fuse`` folds BatchNorm into the convolutions (inference only; see :func:`fuse_batchnorm`).
    """
    model_dir = Path(model_dir)
    if (model_dir / MODEL_JSON).is_file():
        top = read_model_info(model_dir)
        if top.kind == CROP_ZOOM:
            return _load_crop_zoom(top, device=device, checkpoint=checkpoint, fuse=fuse)
    ckpt_path = model_dir / "checkpoints" / checkpoint
    if not ckpt_path.is_file():
        raise ModelDirectoryError(
            f"{ckpt_path}: no checkpoint in model directory {model_dir} (was training completed?)"
        )
    # mmap: the optimizer state in a training checkpoint (2x the weights) is never read
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    try:
        hparams = state["hyper_parameters"]
        config = TrainConfig.from_dict(hparams["config"], source=str(ckpt_path))
        bodyparts = list(hparams["bodyparts"])
    except KeyError as exc:
        raise ModelDirectoryError(f"{ckpt_path}: not a checkpoint of this engine (missing {exc})") from exc
    pcas = {kind: KeypointPCA.from_dict(data) for kind, data in (hparams.get("pca") or {}).items()}
    weights = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
    net = _net_from_weights(config, len(bodyparts), weights)
    device = _pick_device(device)
    net = net.eval()
    if fuse:
        net = fuse_batchnorm(net)
    net = net.to(device)
    # channels_last pays off on GPUs (tensor cores) and oneDNN CPU convolutions alike
    net = net.to(memory_format=torch.channels_last)
    # the checkpoint alone is enough to predict; a model.json beside it must be valid
    info = read_model_info(model_dir, f"checkpoints/{checkpoint}") if (model_dir / MODEL_JSON).is_file() else None
    return PoseModel(net, bodyparts, config.data.image_resize, config, device, model_dir, info, pcas=pcas)


def _load_crop_zoom(info: ModelInfo, *, device, checkpoint: str, fuse: bool) -> CropZoomModel:
    """Both stages of a crop-zoom model directory (``checkpoint`` names each stage's file)."""
    model_dir = info.model_dir
    if model_dir is None:
        raise ModelDirectoryError("a crop-zoom model description without its directory")
    stages = info.stage_dirs()
    detector = load_model(stages["detector"], device=device, checkpoint=checkpoint, fuse=fuse)
    pose = load_model(stages["pose"], device=device, checkpoint=checkpoint, fuse=fuse)
    config = TrainConfig.from_yaml(model_dir / "config.yaml")
    block = info.crop_zoom
    try:
        crop_size = (int(block["crop_size"][0]), int(block["crop_size"][1]))
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ModelDirectoryError(f"{model_dir / MODEL_JSON}: crop_zoom.crop_size missing or invalid") from exc
    return CropZoomModel(
        pose.net,
        pose.bodyparts,
        pose.image_resize,
        config,
        pose.device,
        model_dir,
        info,
        pose.channels_last,
        pose.pcas,
        detector=detector,
        crop_size=crop_size,
        detection_smoothing=int(block.get("detection_smoothing", config.crop_zoom.detection_smoothing)),
        min_detection_confidence=float(
            block.get("min_detection_confidence", config.crop_zoom.min_detection_confidence)
        ),
    )


def _net_from_weights(
    config: TrainConfig, n_keypoints: int, weights: dict[str, torch.Tensor]
) -> HeatmapNet | ContextHeatmapNet:
    """The network with ``weights`` loaded, skipping the random initialisation they replace.

    The modules are built on the meta device (no memory, no init: a ResNet-50's init costs
    ~0.5 s of a CPU start-up), then the checkpoint tensors are assigned; only the input
    normalisation buffers, which are not in the state dict, are rebuilt.
    """
    with torch.device("meta"):
        net = build_net(
            config.model.model_type,
            config.model.backbone,
            n_keypoints,
            pretrained=False,
            heatmap_sigma=config.model.heatmap_sigma,
        )
    net.load_state_dict(weights, strict=True, assign=True)
    net.reset_input_normalization()
    left = [name for name, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:
        raise ModelDirectoryError(f"checkpoint does not set {left[:3]} ({len(left)} tensors)")
    return net


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
    from element_lightning_pose.engine.video import iter_batches, video_info

    info = video_info(video, allow_short=allow_short)
    original = (info.height, info.width)
    chunks: list[np.ndarray] = []
    total = max((min(stop, info.n_frames) if stop is not None else info.n_frames) - start, 0)
    bar = _progress_bar(total, Path(video).name) if progress else None
    started = time.perf_counter()
    # a crop-zoom model crops the whole frames itself
    size = None if isinstance(model, CropZoomModel) else model.image_resize
    batches = iter_batches(
        video, batch_size, size=size, start=start, stop=stop, prefetch=prefetch, allow_short=allow_short
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
        if bar is not None:
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
        from element_lightning_pose.engine.metrics import diagnostics_table

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
    the whole video's detections at once.
    """
    from element_lightning_pose.engine.cropzoom import smooth_centres

    half = model.detection_smoothing // 2
    tail = np.empty((0, 2))  # detections of frames tail_start.. (the held frames and their left context)
    tail_start = n_done = 0
    held: list[np.ndarray] = []  # whole frames n_done..

    def finish(upto: int) -> np.ndarray:
        nonlocal tail, tail_start, held, n_done
        smoothed = smooth_centres(tail, model.detection_smoothing)[n_done - tail_start : upto - tail_start]
        frames, held = np.stack(held[: upto - n_done]), held[upto - n_done :]
        points = model.predict_crops(frames, smoothed)
        keep = max(upto - half - tail_start, 0)
        tail, tail_start, n_done = tail[keep:], tail_start + keep, upto
        return points

    for indices, frames in batches:
        tail = np.concatenate([tail, model.detect(frames)])
        held.extend(frames)
        ready = tail_start + len(tail) - half
        if ready > n_done:
            yield finish(ready)
        if bar is not None:
            bar.update(len(indices))
    if held:
        yield finish(tail_start + len(tail))


def _progress_bar(total: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="frame", unit_scale=False, dynamic_ncols=True, file=sys.stderr)


def predict_labeled(model: PoseModel, labels: LabeledFrames, *, batch_size: int = 16) -> np.ndarray:
    """Predict the labeled frames of a project: (N, K, 3) in original-frame pixels."""
    from element_lightning_pose.engine.labeled import image_file

    if list(labels.bodyparts) != list(model.bodyparts):
        raise ProjectError(
            f"{labels.csv_path}: body parts {labels.bodyparts} differ from the model's {model.bodyparts}"
        )
    out = np.empty((len(labels), len(model.bodyparts), 3))
    if model.is_context:
        from element_lightning_pose.engine.labeled import load_context_resized

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
