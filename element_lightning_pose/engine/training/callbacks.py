"""Training callbacks beyond Lightning's own: the guard against a collapse to flat heatmaps, and
the stops that DDP processes agree on (:class:`StopsAgreedByProcesses`).

The supervised loss (``losses.heatmap_mse``) compares spatial-softmax maps with normalised
Gaussians. A map that is flat everywhere (``p = 1/N`` on ``N`` heatmap pixels) scores

    L_flat = sum_i t_i^2 - 1/N  ~=  1 / (4 pi sigma^2) - 1/N     (0.0506 at sigma 1.25, 64x64)

whatever the target, and its gradient is small and points nowhere in particular (every
pixel's softmax derivative carries the factor ``p_i = 1/N``). A network knocked onto this
plateau by a bad step can sit there for tens of epochs: the issue's open-field project
returned to 0.050-0.054 again and again. :class:`CollapseGuard` watches for it: when an
epoch's training loss comes back to the plateau after the model had clearly left it, the best
weights and optimizer state are put back, the learning rate is halved, and the event is logged
(``collapse_restored`` in ``metrics.csv``, and a warning).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from element_lightning_pose.engine.networks.heads import HEATMAP_STRIDE, gaussian_targets
from element_lightning_pose.engine.training.stopping import (
    agree_on_stops,
    stop_agreed,
    stop_waiting,
    take_back_the_signals,
)

log = logging.getLogger("element_lightning_pose.train")


def flat_heatmap_loss(image_resize: tuple[int, int], sigma: float) -> float:
    """The supervised loss of a flat heatmap against a Gaussian target at the map's centre."""
    h, w = image_resize[0] // HEATMAP_STRIDE, image_resize[1] // HEATMAP_STRIDE
    centre = torch.tensor([[[(w - 1) / 2, (h - 1) / 2]]], dtype=torch.float32)
    targets, _ = gaussian_targets(centre, (h, w), sigma)
    return float((targets**2).sum()) - 1.0 / (h * w)


class CollapseGuard(pl.Callback):
    """Restore the best weights when the training loss returns to the flat-heatmap value.

    Armed once the epoch loss has fallen below ``armed_below * L_flat`` (the maps are clearly
    peaked); it then fires when an epoch gives back more than ``give_back`` of the gain, i.e.
    ``loss > best + give_back * (L_flat - best)``. Each firing restores the weights and the
    optimizer state of the best epoch and multiplies every learning rate (and the scheduler's
    base rates, so the decay schedule keeps its shape) by ``lr_factor``.
    """

    def __init__(
        self,
        flat_loss: float,
        *,
        armed_below: float = 0.9,
        give_back: float = 0.8,
        lr_factor: float = 0.5,
        max_restores: int = 5,
    ) -> None:
        self.flat_loss = float(flat_loss)
        self.armed_below = armed_below
        self.give_back = give_back
        self.lr_factor = lr_factor
        self.max_restores = max_restores
        self.best_loss = float("inf")
        self.best_epoch = -1
        self.restores: list[int] = []  # epochs at which the guard fired
        self.restored_from: list[int] = []  # the best epoch whose weights came back each time
        self._snapshot: dict[str, Any] | None = None

    @staticmethod
    def epoch_loss(trainer: pl.Trainer) -> float | None:
        """The epoch's supervised training loss (semi-supervised runs log it apart)."""
        metrics = trainer.callback_metrics
        for name in ("train_supervised_loss_epoch", "train_supervised_loss", "train_loss"):
            if name in metrics:
                return float(metrics[name])
        return None

    def collapsed(self, loss: float) -> bool:
        armed = self.best_loss < self.armed_below * self.flat_loss
        return armed and loss > self.best_loss + self.give_back * (self.flat_loss - self.best_loss)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss = self.epoch_loss(trainer)
        restored = False
        if loss is not None and torch.isfinite(torch.tensor(loss)):
            if self.collapsed(loss) and self._snapshot is not None and len(self.restores) < self.max_restores:
                self._restore(trainer, pl_module, loss)
                restored = True
            elif loss < self.best_loss:
                self.best_loss, self.best_epoch = loss, trainer.current_epoch
                self._snapshot = {
                    "module": copy.deepcopy(pl_module.state_dict()),
                    "optimizers": [copy.deepcopy(o.state_dict()) for o in trainer.optimizers],
                }
        pl_module.log("collapse_restored", float(restored), on_step=False, on_epoch=True, sync_dist=True)

    def _restore(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: float) -> None:
        assert self._snapshot is not None
        pl_module.load_state_dict(self._snapshot["module"])
        for optimizer, state in zip(trainer.optimizers, self._snapshot["optimizers"]):
            optimizer.load_state_dict(copy.deepcopy(state))
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_factor
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            scheduler.base_lrs = [rate * self.lr_factor for rate in scheduler.base_lrs]
        self.restores.append(trainer.current_epoch)
        self.restored_from.append(self.best_epoch)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        log.warning(
            "epoch %d: training loss %.4f returned towards the flat-heatmap value %.4f (best %.4f at epoch %d); "
            "restored the weights of epoch %d and halved the learning rate to %.3g",
            trainer.current_epoch,
            loss,
            self.flat_loss,
            self.best_loss,
            self.best_epoch,
            self.best_epoch,
            lr,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "restores": list(self.restores),
            "restored_from": list(self.restored_from),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss = float(state.get("best_loss", float("inf")))
        self.best_epoch = int(state.get("best_epoch", -1))
        self.restores = list(state.get("restores", []))
        self.restored_from = list(state.get("restored_from", []))


class StopsAgreedByProcesses(pl.Callback):
    """Under DDP, a stop signal ends every process at the same training step.

    Each process gets its own signal at its own moment (a scheduler's SIGTERM to every task, the
    app's cancel to the process group), or only one gets it (``kill PID``). Stopped where the
    signal found it, one process left the others in their next collective: waiting there (on
    NCCL, until its timeout) or failing on a closed connection, which deleted the run with its
    epochs. So while a fit runs in several processes a stop waits (:mod:`.stopping`): at the start
    of every training step and at the end of training, the processes exchange the stops they hold
    (an all-reduce of one number, beside the step's gradients) and, if any holds one, all stop
    there. The fit runs in :func:`.stopping.stops_agreed_by_processes`, which raises a stop that
    came after the last exchange.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        agree_on_stops(trainer.world_size)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        take_back_the_signals()  # Lightning sets its handlers after every earlier hook

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        take_back_the_signals()  # trainer.validate() sets Lightning's again

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._agree(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._agree(trainer)

    @staticmethod
    def _agree(trainer: pl.Trainer) -> None:
        if trainer.world_size < 2:
            return
        held = torch.tensor([stop_waiting()], device=trainer.strategy.root_device)  # NCCL's are on the GPU
        dist.all_reduce(held, op=dist.ReduceOp.MAX)
        if signum := int(held.item()):
            stop_agreed(signum)
