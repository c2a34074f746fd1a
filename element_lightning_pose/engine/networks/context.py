"""Temporal context network: frame t seen together with frames t-2..t+2.

One backbone runs on every frame (shared weights, so a video's frames each go through it
once); a temporal head stacks the five feature maps of a window and mixes them with a small
convolution before its own heatmap head, beside the ordinary single-frame head on frame t.
Both heads are trained on the labels. At inference each keypoint takes the head whose
confidence is higher, so the context head helps where frame t alone is ambiguous (e.g. a
keypoint briefly occluded) without harming the frames where one frame is enough.
"""

from __future__ import annotations

import torch
from torch import nn

from element_lightning_pose.engine.networks.backbones import InputNormalisedBackbone
from element_lightning_pose.engine.networks.heads import HeatmapHead, heatmap_to_input, soft_argmax, spatial_softmax

CONTEXT_RADIUS = 2
WINDOW = 2 * CONTEXT_RADIUS + 1


class TemporalMixer(nn.Module):
    """(B, 5, C, h, w) feature maps -> (B, C, h, w): a 1x1 conv over the stacked window, residual to frame t."""

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(64, channels // 4)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.mix = nn.Sequential(
            nn.Conv2d(WINDOW * hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        last = self.mix[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.zeros_(last.weight)  # starts as the single-frame features
        nn.init.zeros_(last.bias)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = window.shape
        reduced = self.reduce(window.reshape(b * t, c, h, w)).reshape(b, -1, h, w)
        return window[:, CONTEXT_RADIUS] + self.mix(reduced)


class ContextHeatmapNet(InputNormalisedBackbone):
    """Shared backbone, single-frame head and temporal-context head.

    ``forward(windows)`` takes (B, 5, 3, H, W) windows (uint8 or [0, 1] floats) centred on
    the frame to predict and returns ``(single_logits, context_logits)``, each (B, K, H/4, W/4).
    """

    is_context = True

    def __init__(self, backbone: str, n_keypoints: int, pretrained=False, heatmap_sigma: float = 1.25) -> None:
        super().__init__(backbone, pretrained)
        self.n_keypoints = n_keypoints
        self.heatmap_sigma = heatmap_sigma
        self.head = HeatmapHead(self.channels, n_keypoints)
        self.mixer = TemporalMixer(self.channels)
        self.context_head = HeatmapHead(self.channels, n_keypoints)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """Backbone features (N, C, h, w) of single frames (N, 3, H, W)."""
        return self.encode(frames)

    def heads(self, window_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of both heads from (B, 5, C, h, w) window features."""
        single = self.head(window_features[:, CONTEXT_RADIUS])
        context = self.context_head(self.mixer(window_features))
        return single, context

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = windows.shape[:2]
        if t != WINDOW:
            raise ValueError(f"context windows must hold {WINDOW} frames, got {t}")
        feats = self.features(windows.reshape(b * t, *windows.shape[2:]))
        return self.heads(feats.reshape(b, t, *feats.shape[1:]))

    def clip_logits(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of both heads for the interior frames 2..L-3 of a clip (L, 3, H, W)."""
        feats = self.features(clip)
        return self.heads(sliding_windows(feats))

    def combine(self, single: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(B, K, 3) keypoints in network-input pixels: per keypoint, the more confident head."""
        a = self._points(single)
        b = self._points(context)
        return torch.where((b[..., 2:] > a[..., 2:]), b, a)

    def _points(self, logits: torch.Tensor) -> torch.Tensor:
        points = soft_argmax(spatial_softmax(logits), sigma=self.heatmap_sigma)
        return torch.cat([heatmap_to_input(points[..., :2]), points[..., 2:]], dim=-1)

    def keypoints(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, K, 3): x, y in network-input pixels and confidence, of windows (B, 5, 3, H, W)."""
        return self.combine(*self(windows))

    def keypoints_from_features(self, window_features: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.heads(window_features))


def sliding_windows(features: torch.Tensor) -> torch.Tensor:
    """(L, ...) per-frame tensors -> (L - 4, 5, ...) windows centred on frames 2..L-3 (views, no copy)."""
    return features.unfold(0, WINDOW, 1).movedim(-1, 1)


def pad_edges(frames: torch.Tensor, before: int = CONTEXT_RADIUS, after: int = CONTEXT_RADIUS) -> torch.Tensor:
    """Repeat the first / last entry along dim 0 (video edges)."""
    parts = [frames[:1].expand(before, *frames.shape[1:]), frames, frames[-1:].expand(after, *frames.shape[1:])]
    return torch.cat(parts)
