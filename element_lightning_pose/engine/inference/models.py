"""A trained model loaded for inference: ``load_model(model_dir)`` gives a :class:`PoseModel`.

The model directory's description (``model.json``, :mod:`element_lightning_pose.engine.model_dir`)
says which kind it holds; the weights are loaded without Lightning, BatchNorm folded into the
convolutions, in eval mode. A :class:`PoseModel` turns a batch of frames (original pixels in,
original pixels out) into keypoints and likelihoods. A two-stage crop-zoom model loads as a
:class:`CropZoomModel`: the detector finds the animal's centre on a downscaled frame, the pose
model runs on the crop around it (:mod:`element_lightning_pose.engine.data.crops`), and its
keypoints are mapped back to original-frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.fx.experimental.optimization import fuse

from element_lightning_pose.engine.config import TrainConfig
from element_lightning_pose.engine.data.crops import (
    apply_affine,
    crop_centres,
    crop_frames,
    invert_affine,
)
from element_lightning_pose.engine.data.video import resize_frame
from element_lightning_pose.engine.model_dir import (
    CROP_ZOOM,
    MODEL_JSON,
    ModelDirectoryError,
    ModelInfo,
    read_model_info,
)
from element_lightning_pose.engine.networks import (
    ContextHeatmapNet,
    HeatmapNet,
    pad_edges,
    sliding_windows,
)
from element_lightning_pose.engine.networks.backbones import InputNormalisedBackbone
from element_lightning_pose.engine.networks.checkpoint import network_from_weights, read_checkpoint
from element_lightning_pose.engine.training.pca import KeypointPCA, crop_pcas_in_frame_pixels
from element_lightning_pose.engine.types import PathLike


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
    on_miss: str = "best_guess"

    def _detector(self) -> PoseModel:
        if self.detector is None:
            raise TypeError("a CropZoomModel needs its detector stage")
        return self.detector

    def predict_resized(self, frames: np.ndarray | torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
        raise TypeError("a crop-zoom model predicts from whole frames: use predict_frames or predict_video")

    def detect(self, frames: np.ndarray) -> np.ndarray:
        """The detector's outputs (B, K, 3) in original pixels of whole frames (B, H, W, 3)."""
        detector = self._detector()
        frames = np.asarray(frames)
        small = np.stack([resize_frame(f, detector.image_resize) for f in frames])
        return detector.predict_resized(small, frames.shape[1:3]).astype(np.float64)

    def crop_centres(self, detections: np.ndarray, window: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Crop centres (T, 2) and weak frames (T,) of consecutive frames' detections (T, K, 3)
        (:func:`crops.crop_centres`; ``window``: the model's ``detection_smoothing``)."""
        window = self.detection_smoothing if window is None else window
        return crop_centres(detections, self.min_detection_confidence, window)

    def predict_crops(self, frames: np.ndarray, centres: np.ndarray, weak: np.ndarray | None = None) -> np.ndarray:
        """Keypoints (B, K, 3) in original pixels from crops of ``frames`` around ``centres`` (B, 2).

        A frame whose centre is NaN, or a ``weak`` one when ``on_miss`` is ``"nan"``, gets NaN
        coordinates and likelihood 0.
        """

        frames = np.asarray(frames)
        crops, matrices = crop_frames(frames, np.nan_to_num(centres), self.crop_size, self.image_resize)
        # original_size = the input size: keypoints stay in crop-input pixels, then the matrix maps them back
        return self.to_frame(
            PoseModel.predict_resized(self, crops, self.image_resize), matrices, self.missed(centres, weak)
        )

    def missed(self, centres: np.ndarray, weak: np.ndarray | None) -> np.ndarray:
        """The frames (B,) that get no pose: no centre, or weak with ``on_miss: nan``."""
        missed = ~np.isfinite(centres).all(axis=1)
        if weak is not None and self.on_miss == "nan":
            missed |= weak
        return missed

    @staticmethod
    def to_frame(points: np.ndarray, matrices: np.ndarray, missed: np.ndarray) -> np.ndarray:
        """Crop-input keypoints (B, K, 3) mapped to original pixels through their crops' matrices (B, 2, 3)."""
        out = np.asarray(points, dtype=np.float64).copy()
        out[..., :2] = apply_affine(invert_affine(matrices), out[..., :2])
        out[missed, :, :2] = np.nan
        out[missed, :, 2] = 0.0
        return out

    def predict_frames(self, frames: np.ndarray) -> np.ndarray:
        """Keypoints (B, K, 3) in original pixels of independent whole frames (no temporal smoothing)."""
        frames = np.asarray(frames)
        centres, weak = self.crop_centres(self.detect(frames), window=1)
        return self.predict_crops(frames, centres, weak)

    def predict_window(self, window: np.ndarray) -> np.ndarray:
        """Keypoints (K, 3) in original pixels of the middle frame of whole frames t-2..t+2 (5, H, W, 3)
        (a context model): all five are cropped around the middle frame's detection, as in training."""
        window = np.asarray(window)
        middle = len(window) // 2
        centres, weak = self.crop_centres(self.detect(window[middle : middle + 1]), window=1)
        crops, matrices = crop_frames(
            window, np.repeat(centres, len(window), axis=0), self.crop_size, self.image_resize
        )
        points = PoseModel.predict_windows(self, crops[None], self.image_resize)
        return self.to_frame(points, matrices[middle : middle + 1], self.missed(centres, weak))[0]


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_Net = TypeVar("_Net", bound=InputNormalisedBackbone)


def fuse_batchnorm(net: _Net) -> _Net:
    """Fold the eval-mode BatchNorms of the backbone into the preceding convolutions.

    Inference only (the statistics are frozen into the weights); outputs agree to float
    rounding and the forward pass gets ~20% faster on CPU.
    """
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
    saved = read_checkpoint(ckpt_path)
    config, bodyparts = saved.config, saved.bodyparts
    # the checkpoint alone is enough to predict; a model.json beside it must be valid
    info = read_model_info(model_dir, f"checkpoints/{checkpoint}") if (model_dir / MODEL_JSON).is_file() else None
    if info is not None and info.bodyparts != bodyparts:
        raise ModelDirectoryError(
            f"{ckpt_path}: the checkpoint predicts {bodyparts}, but {model_dir / MODEL_JSON} describes "
            f"{info.bodyparts}; was one of them replaced?"
        )
    pcas = {kind: KeypointPCA.from_dict(data) for kind, data in (saved.hyper_parameters.get("pca") or {}).items()}
    net = network_from_weights(config, len(bodyparts), saved.network_weights)
    device = _pick_device(device)
    net = net.eval()
    if fuse:
        net = fuse_batchnorm(net)
    net = net.to(device)
    # channels_last pays off on GPUs (tensor cores) and oneDNN CPU convolutions alike
    net = net.to(memory_format=torch.channels_last)
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
    block, crop_size = info.crop_zoom, info.crop_size
    return CropZoomModel(
        pose.net,
        pose.bodyparts,
        pose.image_resize,
        config,
        pose.device,
        model_dir,
        info,
        pose.channels_last,
        crop_pcas_in_frame_pixels(pose.pcas, crop_size, pose.image_resize),
        detector=detector,
        crop_size=crop_size,
        detection_smoothing=int(block.get("detection_smoothing", config.crop_zoom.detection_smoothing)),
        min_detection_confidence=float(
            block.get("min_detection_confidence", config.crop_zoom.min_detection_confidence)
        ),
        on_miss=str(block.get("on_miss", config.crop_zoom.on_miss)),
    )
