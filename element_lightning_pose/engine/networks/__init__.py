"""Networks: backbones truncated before pooling and the heatmap head.

:class:`HeatmapNet` maps images (B, 3, H, W) -- ``uint8`` or floats in [0, 1]; normalisation
happens inside -- to heatmap logits (B, K, H/4, W/4). :meth:`HeatmapNet.keypoints` returns
(x, y, confidence) in network-input pixels. A trained network's checkpoint file is read (and
described: configuration, body parts) by :mod:`.checkpoint`.
"""

from __future__ import annotations

import torch

from element_lightning_pose.engine.networks.backbones import (
    BACKBONE_NAMES,
    InputNormalisedBackbone,
    WeightsError,
    build_backbone,
)
from element_lightning_pose.engine.networks.context import CONTEXT_RADIUS, ContextHeatmapNet, pad_edges, sliding_windows
from element_lightning_pose.engine.networks.heads import (
    HEATMAP_STRIDE,
    HeatmapHead,
    gaussian_targets,
    heatmap_to_input,
    input_to_heatmap,
    soft_argmax,
    spatial_softmax,
)

__all__ = [
    "BACKBONE_NAMES",
    "CONTEXT_RADIUS",
    "ContextHeatmapNet",
    "HEATMAP_STRIDE",
    "HeatmapHead",
    "HeatmapNet",
    "WeightsError",
    "build_backbone",
    "gaussian_targets",
    "heatmap_to_input",
    "input_to_heatmap",
    "soft_argmax",
    "spatial_softmax",
    "build_net",
    "pad_edges",
    "sliding_windows",
]


class HeatmapNet(InputNormalisedBackbone):
    """Backbone + heatmap head with the backbone's input normalisation built in."""

    def __init__(self, backbone: str, n_keypoints: int, pretrained=False, heatmap_sigma: float = 1.25) -> None:
        super().__init__(backbone, pretrained)
        self.n_keypoints = n_keypoints
        self.heatmap_sigma = heatmap_sigma
        self.head = HeatmapHead(self.channels, n_keypoints)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Heatmap logits (B, K, H/4, W/4)."""
        return self.head(self.encode(images))

    def keypoints(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, 3): x, y in network-input pixels and a confidence in [0, 1]."""
        probs = spatial_softmax(self(images))
        points = soft_argmax(probs, sigma=self.heatmap_sigma)
        return torch.cat([heatmap_to_input(points[..., :2]), points[..., 2:]], dim=-1)


def build_net(
    model_type: str, backbone: str, n_keypoints: int, pretrained=False, heatmap_sigma: float = 1.25
) -> HeatmapNet | ContextHeatmapNet:
    """The network of ``model_type`` ("heatmap" or "context")."""
    if model_type == "context":
        return ContextHeatmapNet(backbone, n_keypoints, pretrained, heatmap_sigma)
    if model_type == "heatmap":
        return HeatmapNet(backbone, n_keypoints, pretrained, heatmap_sigma)
    raise ValueError(f"unknown model_type {model_type!r} (expected 'heatmap' or 'context')")
