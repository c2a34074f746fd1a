"""Supervised heatmap loss and the unsupervised losses (temporal, PCA) on unlabeled clips.

The loss compares the spatial-softmax heatmaps with normalised Gaussian targets: squared error
summed over the pixels of each map, then averaged over the labeled keypoints of the batch. An
unlabeled (NaN) keypoint contributes nothing (``nan_keypoints="mask"``), or is pushed towards a
flat map (``"uniform"``), which teaches the network low confidence when a part is out of view.
"""

from __future__ import annotations

import torch

from element_lightning_pose.engine.networks.heads import gaussian_targets, input_to_heatmap, spatial_softmax


def heatmap_mse(
    logits: torch.Tensor,
    keypoints: torch.Tensor,
    *,
    sigma: float = 1.25,
    nan_keypoints: str = "mask",
) -> torch.Tensor:
    """Loss of heatmap ``logits`` (B, K, h, w) against ``keypoints`` (B, K, 2) in input pixels."""
    probs = spatial_softmax(logits)
    h, w = probs.shape[-2:]
    targets, labeled = gaussian_targets(input_to_heatmap(keypoints), (h, w), sigma)
    if nan_keypoints == "uniform":
        targets = torch.where(labeled[..., None, None], targets, torch.full_like(targets, 1.0 / (h * w)))
        labeled = torch.ones_like(labeled)
    elif nan_keypoints != "mask":
        raise ValueError(f"nan_keypoints must be 'mask' or 'uniform', got {nan_keypoints!r}")
    per_map = ((probs - targets) ** 2).sum(dim=(-2, -1))  # (B, K)
    n_labeled = labeled.sum()
    if n_labeled == 0:
        return per_map.sum() * 0.0  # keeps the graph (and DDP) happy on an all-unlabeled batch
    return (per_map * labeled).sum() / n_labeled


# --------------------------------------------------------------------------- unsupervised losses


def temporal_loss(
    points: torch.Tensor,
    confidence: torch.Tensor,
    epsilon: float | torch.Tensor,
    min_confidence: float = 0.5,
) -> torch.Tensor:
    """Mean of ``relu(|p_t - p_{t-1}| - epsilon)`` over consecutive frames of a clip.

    ``points`` (T, K, 2) in original pixels, ``confidence`` (T, K); ``epsilon`` in pixels, a
    number or one per keypoint (K,). Pairs where either confidence is below
    ``min_confidence`` are ignored (a keypoint out of view may jump freely).
    """
    displacement = torch.linalg.norm(points[1:] - points[:-1], dim=-1)  # (T-1, K)
    confident = confidence.detach() >= min_confidence
    valid = confident[1:] & confident[:-1]
    excess = torch.relu(displacement - torch.as_tensor(epsilon, dtype=points.dtype, device=points.device))
    if not valid.any():
        return excess.sum() * 0.0
    return excess[valid].mean()


def pca_loss(residual: torch.Tensor, epsilon: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``relu(residual - epsilon)`` over frames and keypoints (residuals in pixels).

    ``mask`` (same shape, bool) keeps only some entries, e.g. confidently predicted keypoints.
    """
    excess = torch.relu(residual - epsilon)
    if mask is None:
        return excess.mean()
    if not mask.any():
        return excess.sum() * 0.0
    return excess[mask].mean()
