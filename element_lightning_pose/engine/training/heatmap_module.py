"""The LightningModule of heatmap training, supervised or semi-supervised, single-frame or context.

Its hyper-parameters hold everything needed to rebuild the network (config, body parts, image
sizes, fitted PCAs), so a checkpoint loads without the project (see ``predict.load_model``).

Semi-supervised steps get ``{"labeled": batch, "unlabeled": clip}``: the clip's predictions are
mapped to ORIGINAL-frame pixels (``clip["to_original"]``) before the unsupervised losses, whose
weights ramp up linearly over ``losses.warmup_epochs``. Each loss is logged on its own
(``train_supervised_loss``, ``train_temporal_loss``, ``train_pca_singleview_loss``, ...).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch

from element_lightning_pose.engine.config import GEOMETRIC_LOSSES, ConfigError, TrainConfig
from element_lightning_pose.engine.data.keypoints import write_csv_atomic
from element_lightning_pose.engine.hardware import native_bf16
from element_lightning_pose.engine.networks import (
    ContextHeatmapNet,
    build_net,
    heatmap_to_input,
    soft_argmax,
    spatial_softmax,
)
from element_lightning_pose.engine.training.losses import heatmap_mse, pca_loss, temporal_loss
from element_lightning_pose.engine.training.pca import KeypointPCA
from element_lightning_pose.engine.training.rig_losses import (
    RigGeometry,
    limb_length_loss,
    reprojection_loss,
    triangulate_views,
)


class HeatmapModule(pl.LightningModule):
    """Heatmap network + Adam + step decay + a frozen-then-unfrozen backbone."""

    temporal_epsilon: torch.Tensor  # non-persistent buffer (scalar or one value per keypoint)

    def __init__(
        self,
        config: dict[str, Any],
        bodyparts: list[str],
        build_pretrained: bool = True,
        pca: dict[str, dict] | None = None,
        geometry: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = TrainConfig.from_dict(config)
        model = self.config.model
        # a checkpoint reload never needs the ImageNet weights: the state dict replaces them
        pretrained = model.pretrained if build_pretrained else False
        self.net = build_net(model.model_type, model.backbone, len(bodyparts), pretrained, model.heatmap_sigma)
        self.is_context = model.model_type == "context"
        self.pcas = {kind: KeypointPCA.from_dict(data) for kind, data in (pca or {}).items()}
        losses = self.config.losses
        epsilon = losses.temporal_epsilon
        if isinstance(epsilon, list) and len(epsilon) != len(bodyparts):
            raise ConfigError(
                f"losses.temporal_epsilon lists {len(epsilon)} values but there are "
                f"{len(bodyparts)} keypoints {list(bodyparts)}"
            )
        self.register_buffer("temporal_epsilon", torch.as_tensor(epsilon, dtype=torch.float32), persistent=False)
        missing = [k for k in ("pca_singleview", "pca_multiview") if k in losses.unsupervised and k not in self.pcas]
        if missing:
            raise ValueError(f"losses {missing} need a fitted PCA (pca=...): see engine.pca.fit_pcas")
        self.geometry = RigGeometry.from_dict(geometry) if geometry else None
        geometric = [k for k in GEOMETRIC_LOSSES if k in losses.unsupervised]
        if geometric and self.geometry is None:
            raise ValueError(
                f"losses {geometric} need the rig geometry (geometry=...): see engine.geometry.fit_rig_geometry"
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _loss(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        model = self.config.model
        outputs = self.net(batch["image"])
        heads = outputs if self.is_context else (outputs,)
        # context model: both heads learn from the labels
        losses = [
            heatmap_mse(logits, batch["keypoints"], sigma=model.heatmap_sigma, nan_keypoints=model.nan_keypoints)
            for logits in heads
        ]
        return sum(losses[1:], losses[0]), outputs

    def _points(self, outputs) -> torch.Tensor:
        """(B, K, 3) keypoints in network-input pixels from the network outputs."""
        if isinstance(self.net, ContextHeatmapNet):
            return self.net.combine(*outputs)
        points = soft_argmax(spatial_softmax(outputs), sigma=self.config.model.heatmap_sigma)
        return torch.cat([heatmap_to_input(points[..., :2]), points[..., 2:]], dim=-1)

    def _clip_points(self, frames: torch.Tensor, to_original: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, K, 2) original-frame pixels and (T, K) confidences of one camera's clip.

        A context model predicts the interior frames 2..L-3 only (those with true neighbours).
        """
        outputs = self.net.clip_logits(frames) if isinstance(self.net, ContextHeatmapNet) else self.net(frames)
        points = self._points(outputs)
        to_original = to_original.to(points.dtype)
        return points[..., :2] @ to_original[:, :2].T + to_original[:, 2], points[..., 2]

    def unsupervised_losses(self, clip: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each unsupervised loss (unweighted) on a clip; predictions in original-frame pixels.

        A synchronised multi-camera clip (``frames`` (C, L, 3, h, w)) gives every camera's
        predictions of the same instants: the temporal and PCA losses see each camera's, the
        geometric losses triangulate them (:mod:`.geometry`).
        """
        frames, to_original = clip["frames"], clip["to_original"]
        if frames.ndim == 4:
            frames, to_original = frames[None], to_original[None]
        per_camera = [self._clip_points(f, m) for f, m in zip(frames, to_original)]
        xy = torch.stack([p for p, _ in per_camera])  # (C, T, K, 2)
        confidence = torch.stack([c for _, c in per_camera])  # (C, T, K)
        losses = self.config.losses
        values = {}
        if "temporal" in losses.unsupervised:
            values["temporal"] = torch.stack(
                [temporal_loss(p, c, self.temporal_epsilon, losses.temporal_min_confidence) for p, c in per_camera]
            ).mean()
        n_cameras, n_frames, n_keypoints = confidence.shape
        flat_xy, flat_confidence = xy.flatten(0, 1), confidence.flatten(0, 1)
        confident = flat_confidence.detach() >= losses.pca_min_confidence
        for kind, pca in self.pcas.items():
            if max(pca.keypoint_indices()) >= n_keypoints:  # a multi-view PCA across cameras: (T, C * K)
                instant_xy = xy.transpose(0, 1).flatten(1, 2)
                instant_confident = confidence.transpose(0, 1).flatten(1, 2).detach() >= losses.pca_min_confidence
                mask = instant_confident[..., pca.keypoint_indices()]
                values[kind] = pca_loss(pca.residual_keypoints(instant_xy), pca.epsilon, mask)
                continue
            mask = confident[..., pca.keypoint_indices()]
            values[kind] = pca_loss(pca.residual_keypoints(flat_xy), pca.epsilon, mask)
        if self.geometry is not None:
            if n_cameras != len(self.geometry.camera_names):
                raise ValueError(
                    f"a clip of {n_cameras} camera(s) for a rig of {len(self.geometry.camera_names)} "
                    f"{self.geometry.camera_names}: the geometric losses need synchronised clips of every camera"
                )
            points, valid, error = triangulate_views(
                xy.flatten(1, 2), confidence.flatten(1, 2), self.geometry, losses.reprojection_min_confidence
            )
            if "reprojection" in losses.unsupervised:
                values["reprojection"] = reprojection_loss(error, valid, self.geometry.reprojection_epsilon)
            if "limb_length" in losses.unsupervised:
                values["limb_length"] = limb_length_loss(
                    points.reshape(n_frames, n_keypoints, 3), valid.reshape(n_frames, n_keypoints), self.geometry
                )
        return values

    def warmup_factor(self, batch_idx: int) -> float:
        """Linear ramp 0 -> 1 of the unsupervised weights over ``losses.warmup_epochs``."""
        warmup = self.config.losses.warmup_epochs
        if warmup <= 0:
            return 1.0
        per_epoch = max(1, int(getattr(self.trainer, "num_training_batches", 1) or 1)) if self._trainer else 1
        progress = self.current_epoch + batch_idx / per_epoch
        return float(min(1.0, progress / warmup))

    def _backbone_frozen(self) -> bool:
        return self.current_epoch < self.config.training.unfreeze_epoch

    def _batchnorm_uses_running_statistics(self) -> bool:
        policy = self.config.training.backbone_batchnorm
        return policy == "frozen" or (policy == "after_unfreeze" and self._backbone_frozen())

    def train(self, mode: bool = True) -> HeatmapModule:
        """Train mode, with the backbone's BatchNorm rule (``training.backbone_batchnorm``).

        Lightning calls ``train()`` after every validation, so the rule lives here rather than
        in an epoch hook. ``train`` (the default, Lightning Pose's ``train_bn``): batch
        statistics from the first epoch, also while the backbone's weights are frozen, so the
        head never meets a change of normalisation. ``after_unfreeze`` (this engine before
        0.2): running statistics while frozen, batch statistics after; with the weights of
        epoch 23 unchanged, that switch alone put the loss on the reaching example's training
        frames from 0.0484 to 0.0533, above the flat-heatmap value. ``frozen``: the pretrained
        running statistics all along, which avoids the switch but adapts more slowly
        (benchmarks/results/small_animal.md).
        """
        super().train(mode)
        if not mode:
            return self
        if self._backbone_frozen():  # frozen weights: nothing in the backbone trains but its statistics
            self.net.backbone.eval()
        use_batch_statistics = not self._batchnorm_uses_running_statistics()
        for layer in self.net.backbone.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.train(use_batch_statistics)
        return self

    def setup(self, stage: str) -> None:
        # channels-last: oneDNN's CPU convolutions and GPU tensor cores both run faster on it. Set
        # here, before DDP wraps the network: DDP lays out its gradient buckets as the weights are
        # then, and weights changed afterwards cost a strided copy of every gradient, every step
        self.net.to(memory_format=torch.channels_last)

    def on_fit_start(self) -> None:
        self.net.backbone_autocast = torch.bfloat16 if self.uses_bf16() else None  # the device is known here

    def uses_bf16(self) -> bool:
        """Whether the backbone trains under bf16 autocast: ``training.precision`` bf16, or auto on a
        device with native bf16 (:func:`engine.hardware.native_bf16`); explicit bf16 without it warns."""
        wanted = self.config.training.precision
        if wanted == "fp32":
            return False
        native = native_bf16(self.device)
        if wanted == "bf16" and not native:
            warnings.warn(
                f"training.precision bf16: {self.device} has no native bf16 (AMX or AVX512-BF16; Ampere or "
                "later on a GPU), where bf16 is slower than fp32; training in fp32",
                RuntimeWarning,
                stacklevel=2,
            )
        return native

    def on_train_epoch_start(self) -> None:
        frozen = self._backbone_frozen()
        self.net.backbone.requires_grad_(not frozen)
        self.train()  # re-applies the BatchNorm rule for this epoch

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        clip = batch.get("unlabeled") if "labeled" in batch else None
        labeled = batch["labeled"] if "labeled" in batch else batch
        size = len(labeled["image"])
        loss, _ = self._loss(labeled)
        if clip is not None:
            self.log("train_supervised_loss", loss, on_step=True, on_epoch=True, batch_size=size, sync_dist=True)
            weights = self.config.losses
            factor = self.warmup_factor(batch_idx)
            for name, value in self.unsupervised_losses(clip).items():
                self.log(f"train_{name}_loss", value, on_step=True, on_epoch=True, batch_size=1, sync_dist=True)
                loss = loss + factor * getattr(weights, f"{name}_weight") * value
            self.log("unsupervised_weight_factor", factor, on_step=True, on_epoch=False, batch_size=1)
        # averaged over DDP processes (sync_dist): each saw its own share of the batches, and the
        # collapse guard, the checkpoint's choice of the best epoch and metrics.csv must all see
        # the same value in every process
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, outputs = self._loss(batch)
        points = self._points(outputs)[..., :2]
        error = torch.linalg.norm(points - batch["keypoints"], dim=-1)
        size = len(batch["image"])
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        labeled = torch.isfinite(error)
        n_labeled = int(labeled.sum())
        # pixel error in network-input pixels, over labeled keypoints, weighted by their number;
        # logged by every batch (weight 0 without any), as under DDP every process must take part
        # in the epoch's average
        mean_error = error[labeled].mean() if n_labeled else error.new_zeros(())
        self.log("val_pixel_error", mean_error, on_epoch=True, batch_size=n_labeled, sync_dist=True)

    def backbone_lr_factor(self, epoch: int) -> float:
        """The backbone's learning rate relative to the head's at ``epoch`` (before step decay).

        Zero while frozen; from unfreeze it ramps linearly from ``backbone_lr_ratio`` to 1 over
        ``backbone_lr_warmup_epochs``. Pretrained weights only: a random backbone has nothing
        to protect. Adam's first update of a parameter is about ``lr * sign(gradient)``, which
        at 1e-3 on every pretrained weight at once is a shock, not a fine-tuning step.
        """
        training = self.config.training
        if epoch < training.unfreeze_epoch:
            return 0.0
        if self.config.model.pretrained is False or training.backbone_lr_warmup_epochs == 0:
            return 1.0
        progress = min(1.0, (epoch - training.unfreeze_epoch) / training.backbone_lr_warmup_epochs)
        return training.backbone_lr_ratio + (1.0 - training.backbone_lr_ratio) * progress

    def _parameter_groups(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        """(head, backbone) parameters: the two optimizer groups, in this order."""
        backbone = list(self.net.backbone.parameters())
        backbone_ids = {id(p) for p in backbone}
        return [p for p in self.parameters() if id(p) not in backbone_ids], backbone

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume a checkpoint of engine 0.2.0 or older: one optimizer group, a MultiStepLR.

        Its Adam moments are renumbered into the (head, backbone) groups and its schedule
        state becomes the LambdaLR's, so a run interrupted before an upgrade carries on.
        """
        states = checkpoint.get("optimizer_states") or []
        if len(states) != 1 or len(states[0].get("param_groups", [])) != 1:
            return
        old = states[0]
        head, backbone = self._parameter_groups()
        new_index = {id(p): i for i, p in enumerate(head + backbone)}
        old_params = list(self.parameters())
        hyper = {k: v for k, v in old["param_groups"][0].items() if k != "params"}
        checkpoint["optimizer_states"] = [
            {
                "state": {new_index[id(old_params[i])]: value for i, value in old["state"].items()},
                "param_groups": [
                    {**hyper, "params": list(range(len(head))), "name": "head"},
                    {**hyper, "params": list(range(len(head), len(head) + len(backbone))), "name": "backbone"},
                ],
            }
        ]
        schedules = checkpoint.get("lr_schedulers") or []
        if len(schedules) == 1 and "milestones" in schedules[0]:
            old_schedule = schedules[0]
            checkpoint["lr_schedulers"] = [
                {
                    "base_lrs": list(old_schedule["base_lrs"]) * 2,
                    "last_epoch": old_schedule["last_epoch"],
                    "_step_count": old_schedule.get("_step_count", 1),
                    "_get_lr_called_within_step": False,
                    "_last_lr": list(old_schedule.get("_last_lr", old_schedule["base_lrs"])) * 2,
                    "lr_lambdas": [None, None],
                }
            ]

    def configure_optimizers(self):
        training = self.config.training
        head, backbone = self._parameter_groups()
        optimizer = torch.optim.Adam(
            [{"params": head, "name": "head"}, {"params": backbone, "name": "backbone"}], lr=training.learning_rate
        )
        milestones, gamma = sorted(training.lr_milestones), training.lr_gamma

        def decay(epoch: int) -> float:
            return gamma ** sum(epoch >= m for m in milestones)

        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [decay, lambda epoch: decay(epoch) * self.backbone_lr_factor(epoch)]
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class HistoryCallback(pl.Callback):
    """Per-epoch losses and cumulative training time, kept in checkpoints so resume continues them.

    With ``path``, the history is also rewritten there (atomically) after every epoch, so that
    whoever watches a run (the app's training page) sees its epochs while it trains.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.rows: list[dict[str, float]] = []
        self.elapsed_before = 0.0
        self._started = 0.0
        self._epoch_started = self._last_batch_end = 0.0
        self._epoch_cpu = self._last_batch_cpu = 0.0
        self._frames = 0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._epoch_started = self._last_batch_end = time.perf_counter()
        self._epoch_cpu = self._last_batch_cpu = time.process_time()
        self._frames = 0

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        labeled = batch["labeled"] if "labeled" in batch else batch
        self._frames += len(labeled["image"])
        self._last_batch_end = time.perf_counter()
        self._last_batch_cpu = time.process_time()

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._started if self._started else 0.0)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
        now = time.perf_counter()
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, "elapsed_s": self.elapsed()}
        # training throughput: data loading included, validation (which runs before this hook) not
        train_s = self._last_batch_end - self._epoch_started
        # the CPU seconds the process spent on the epoch's batches (all its threads): unlike the
        # wall time, not inflated by other jobs on a shared machine
        row.update(epoch_s=now - self._epoch_started, train_cpu_s=self._last_batch_cpu - self._epoch_cpu)
        row["train_frames"] = self._frames
        row["train_frames_per_s"] = self._frames / train_s if train_s > 0 else float("nan")
        row.update({k.removesuffix("_epoch"): v for k, v in metrics.items()})
        groups = trainer.optimizers[0].param_groups
        row["lr"] = float(groups[0]["lr"])
        if len(groups) > 1:
            row["backbone_lr"] = float(groups[1]["lr"])
        self.rows.append(row)
        if self.path is not None and trainer.is_global_zero:
            write_csv_atomic(pd.DataFrame(self.rows).set_index("epoch"), self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "elapsed": self.elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
        self.elapsed_before = float(state.get("elapsed", 0.0))
