"""The LightningModule of supervised heatmap training.

Its hyper-parameters hold everything needed to rebuild the network (config, body parts, image
sizes), so a checkpoint loads without the project (see ``predict.load_model``).
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch

from .config import TrainConfig
from .losses import heatmap_mse
from .networks import HeatmapNet, heatmap_to_input, soft_argmax, spatial_softmax


class HeatmapModule(pl.LightningModule):
    """Heatmap network + Adam + step decay + a frozen-then-unfrozen backbone."""

    def __init__(self, config: dict[str, Any], bodyparts: list[str], build_pretrained: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = TrainConfig.from_dict(config)
        model = self.config.model
        # a checkpoint reload never needs the ImageNet weights: the state dict replaces them
        pretrained = model.pretrained if build_pretrained else False
        self.net = HeatmapNet(model.backbone, len(bodyparts), pretrained, model.heatmap_sigma)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(batch["image"])
        model = self.config.model
        loss = heatmap_mse(logits, batch["keypoints"], sigma=model.heatmap_sigma, nan_keypoints=model.nan_keypoints)
        return loss, logits

    def _backbone_frozen(self) -> bool:
        return self.current_epoch < self.config.training.unfreeze_epoch

    def on_train_epoch_start(self) -> None:
        frozen = self._backbone_frozen()
        self.net.backbone.requires_grad_(not frozen)
        if frozen:
            # frozen backbone: keep its BatchNorm statistics too
            self.net.backbone.eval()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self._loss(batch)
        points = heatmap_to_input(soft_argmax(spatial_softmax(logits), sigma=self.config.model.heatmap_sigma)[..., :2])
        error = torch.linalg.norm(points - batch["keypoints"], dim=-1)
        size = len(batch["image"])
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=size)
        labeled = torch.isfinite(error)
        if labeled.any():
            # pixel error in network-input pixels, over labeled keypoints
            self.log("val_pixel_error", error[labeled].mean(), on_epoch=True, batch_size=int(labeled.sum()))

    def configure_optimizers(self):
        training = self.config.training
        optimizer = torch.optim.Adam(self.parameters(), lr=training.learning_rate)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(training.lr_milestones), gamma=training.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class HistoryCallback(pl.Callback):
    """Per-epoch losses and cumulative training time, kept in checkpoints so resume continues them."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.elapsed_before = 0.0
        self._started = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._started if self._started else 0.0)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, "elapsed_s": self.elapsed()}
        row.update({k.removesuffix("_epoch"): v for k, v in metrics.items()})
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "elapsed": self.elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
        self.elapsed_before = float(state.get("elapsed", 0.0))
