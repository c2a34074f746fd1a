"""Heatmap head, Gaussian targets and the heatmap -> keypoint step.

Coordinate convention (used everywhere in the engine): pixel centres sit at integer
coordinates, so pixel ``i`` spans ``[i - 0.5, i + 0.5)``. A heatmap with output stride ``s``
has its pixel ``u`` centred on input coordinate ``(u + 0.5) * s - 0.5``; resizing by a factor
``f`` maps ``x`` to ``(x + 0.5) * f - 0.5`` (the convention of OpenCV's resize and warps).
"""

from __future__ import annotations

import math

import torch
from torch import nn

HEATMAP_STRIDE = 4  # heatmaps are 1/4 of the network input


class HeatmapHead(nn.Module):
    """Backbone features (stride 32) -> one heatmap logit map per keypoint (stride 4).

    PixelShuffle(2) turns channels into resolution for free, then two stride-2 transposed
    convolutions reach 1/4 of the input (the Lightning Pose design).
    """

    def __init__(self, in_channels: int, n_keypoints: int) -> None:
        super().__init__()
        if in_channels % 4:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by 4 for PixelShuffle(2)")
        self.layers = nn.Sequential(
            nn.PixelShuffle(2),
            nn.ConvTranspose2d(in_channels // 4, n_keypoints, 3, stride=2, padding=1, output_padding=1),
            nn.ConvTranspose2d(n_keypoints, n_keypoints, 3, stride=2, padding=1, output_padding=1),
        )
        for layer in self.layers:
            if isinstance(layer, nn.ConvTranspose2d):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def spatial_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the pixels of each (B, K, H, W) map: each map sums to one."""
    b, k, h, w = logits.shape
    return torch.softmax(logits.reshape(b, k, h * w).float(), dim=-1).reshape(b, k, h, w)


def gaussian_targets(
    keypoints: torch.Tensor, size: tuple[int, int], sigma: float = 1.25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised 2-D Gaussians at heatmap-pixel ``keypoints`` (B, K, 2) (x, y).

    Returns ``(targets (B, K, H, W), labeled (B, K) bool)``; an unlabeled (NaN) keypoint gets
    an all-zero map and ``labeled=False``.
    """
    h, w = size
    labeled = torch.isfinite(keypoints).all(dim=-1)
    centres = torch.where(labeled[..., None], keypoints, torch.zeros_like(keypoints)).float()
    xs = torch.arange(w, device=keypoints.device, dtype=torch.float32)
    ys = torch.arange(h, device=keypoints.device, dtype=torch.float32)
    gx = torch.exp(-((xs - centres[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, K, W)
    gy = torch.exp(-((ys - centres[..., 1:2]) ** 2) / (2 * sigma**2))  # (B, K, H)
    maps = gy[..., :, None] * gx[..., None, :]
    total = maps.sum(dim=(-2, -1), keepdim=True)
    labeled = labeled & (total[..., 0, 0] > 1e-12)  # a centre far outside the map has no target
    maps = torch.where(labeled[..., None, None], maps / total.clamp_min(1e-12), torch.zeros_like(maps))
    return maps, labeled


def _ideal_peak_mass(sigma: float, radius: int) -> float:
    """Mass of a centred Gaussian target within the (2 radius + 1)^2 window around its peak."""
    axis = math.erf((radius + 0.5) / (sigma * math.sqrt(2)))
    return axis * axis


def soft_argmax(
    probs: torch.Tensor, *, radius: int = 4, confidence_radius: int = 2, sigma: float = 1.25
) -> torch.Tensor:
    """Subpixel keypoints from probability maps (B, K, H, W) -> (B, K, 3) = (x, y, confidence).

    Location: the probability-weighted mean of the pixels within ``radius`` of the arg-max
    (a local soft-argmax: a far-away second mode cannot drag the estimate). With ``radius=4``
    the truncation bias on a sigma-1.25 Gaussian stays under 0.01 heatmap pixel (within ~3
    pixels of the map's border the target itself is truncated and the estimate leans inward).
    Confidence: the mass within ``confidence_radius`` of the peak divided by what the ideal
    training target holds there, clipped to [0, 1]: ~1 for a target-sharp peak, ~0 for a flat
    map (e.g. a keypoint out of view), lower for broad or split peaks.
    x and y are in heatmap pixels.
    """
    b, k, h, w = probs.shape
    n = b * k
    flat = probs.reshape(n, h * w)
    peak = flat.argmax(dim=1)
    py, px = peak // w, peak % w
    offsets = torch.arange(-radius, radius + 1, device=probs.device)
    ys, xs = py[:, None] + offsets, px[:, None] + offsets  # (N, 2r+1)
    inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
    index = ys.clamp(0, h - 1)[:, :, None] * w + xs.clamp(0, w - 1)[:, None, :]
    window = flat.gather(1, index.reshape(n, -1)).reshape(index.shape) * inside
    total = window.sum(dim=(1, 2)).clamp_min(1e-12)
    x = (window.sum(dim=1) * xs).sum(dim=1) / total
    y = (window.sum(dim=2) * ys).sum(dim=1) / total
    inner = slice(radius - confidence_radius, radius + confidence_radius + 1)
    mass = window[:, inner, inner].sum(dim=(1, 2))
    confidence = (mass / _ideal_peak_mass(sigma, confidence_radius)).clamp(0.0, 1.0)
    return torch.stack([x, y, confidence], dim=-1).reshape(b, k, 3)


def heatmap_to_input(coords: torch.Tensor, stride: int = HEATMAP_STRIDE) -> torch.Tensor:
    """Heatmap-pixel coordinates -> network-input-pixel coordinates."""
    return (coords + 0.5) * stride - 0.5


def input_to_heatmap(coords: torch.Tensor, stride: int = HEATMAP_STRIDE) -> torch.Tensor:
    """Network-input-pixel coordinates -> heatmap-pixel coordinates."""
    return (coords + 0.5) / stride - 0.5
