"""Training that does not collapse: frozen BatchNorm statistics, the backbone learning-rate ramp
at unfreeze, and the guard that restores the best weights when the heatmaps go flat."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from element_lightning_pose.engine.config import TrainConfig
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.data.splits import split_frames
from element_lightning_pose.engine.training import train
from element_lightning_pose.engine.training.callbacks import CollapseGuard, flat_heatmap_loss
from element_lightning_pose.engine.training.datasets import PoseDataModule
from element_lightning_pose.engine.training.heatmap_module import HeatmapModule
from element_lightning_pose.engine.training.losses import heatmap_mse
from tests.engine.conftest import TINY_CONFIG


def _config(**training) -> dict:
    return {**TINY_CONFIG, "training": {**TINY_CONFIG["training"], **training}}


def _batchnorms(module: HeatmapModule) -> list[torch.nn.Module]:
    return [m for m in module.net.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@pytest.fixture(scope="module")
def classifier_weights(tmp_path_factory):
    """A resnet18 classifier state dict on disk: 'pretrained' weights without a download."""
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return str(path)


def test_flat_heatmap_loss_is_the_loss_of_a_flat_map():
    size, sigma = (64, 96), 1.25
    logits = torch.zeros(1, 1, size[0] // 4, size[1] // 4)
    centre = torch.tensor([[[(size[1] - 1) / 2, (size[0] - 1) / 2]]])
    measured = float(heatmap_mse(logits, centre, sigma=sigma))
    assert measured == pytest.approx(flat_heatmap_loss(size, sigma), rel=1e-5)
    assert 0.045 < measured < 0.052  # ~1 / (4 pi sigma^2)


def test_a_context_model_is_guarded_against_its_own_flat_value(monkeypatch):
    """The context model's supervised loss sums two heads: its flat value is twice one head's
    (with one head's, a healthy context model looked collapsed and was restored again and again)."""
    from element_lightning_pose.engine.training.single import _guards

    values = {**TINY_CONFIG, "model": {**TINY_CONFIG["model"], "model_type": "context"}}
    config = TrainConfig.from_dict(values)
    module = HeatmapModule(config.to_dict(), ["a", "b"])
    size = config.data.image_resize
    flat = torch.zeros(2, 2, size[0] // 4, size[1] // 4)
    monkeypatch.setattr(module.net, "forward", lambda images: (flat, flat))
    centre = torch.tensor([[(size[1] - 1) / 2, (size[0] - 1) / 2]] * 2).expand(2, 2, 2)
    loss, _ = module._loss({"image": torch.zeros(2, 5, 3, *size), "keypoints": centre})
    (guard,) = _guards(config)
    assert guard.flat_loss == pytest.approx(float(loss), rel=1e-5)
    assert guard.flat_loss == pytest.approx(2 * flat_heatmap_loss(tuple(size), config.model.heatmap_sigma))


def _uses_batch_statistics(config: dict, epoch: int, monkeypatch) -> bool:
    module = HeatmapModule(TrainConfig.from_dict(config).to_dict(), ["a", "b"])
    monkeypatch.setattr(HeatmapModule, "current_epoch", property(lambda self: epoch))  # the trainer's epoch
    module.train()
    modes = {bn.training for bn in _batchnorms(module)}
    assert len(modes) == 1 and module.net.head.training
    return modes.pop()


@pytest.mark.parametrize(
    "policy, while_frozen, after_unfreeze",
    [("train", True, True), ("frozen", False, False), ("after_unfreeze", False, True)],
)
def test_batchnorm_policy_while_frozen_and_after_unfreeze(
    classifier_weights, policy, while_frozen, after_unfreeze, monkeypatch
):
    config = {
        **_config(unfreeze_epoch=3, backbone_batchnorm=policy),
        "model": {"backbone": "resnet18", "pretrained": classifier_weights},
    }
    assert _uses_batch_statistics(config, 0, monkeypatch) is while_frozen
    assert _uses_batch_statistics(config, 3, monkeypatch) is after_unfreeze


def test_frozen_batchnorm_keeps_the_running_statistics(classifier_weights):
    config = {
        **_config(unfreeze_epoch=0, backbone_batchnorm="frozen"),
        "model": {"backbone": "resnet18", "pretrained": classifier_weights},
    }
    module = HeatmapModule(TrainConfig.from_dict(config).to_dict(), ["a"])
    module.train()
    running = [bn.running_mean.clone() for bn in _batchnorms(module)]
    module.net(torch.rand(2, 3, 64, 64))
    assert all(torch.equal(before, bn.running_mean) for before, bn in zip(running, _batchnorms(module)))


def test_the_default_is_lightning_poses_batch_statistics_from_the_start():
    assert TrainConfig().training.backbone_batchnorm == "train"


def test_backbone_learning_rate_ramps_from_the_ratio_after_unfreeze(classifier_weights):
    config = TrainConfig.from_dict(
        {
            **_config(unfreeze_epoch=2, backbone_lr_ratio=0.2, backbone_lr_warmup_epochs=4),
            "model": {"backbone": "resnet18", "pretrained": classifier_weights},
        }
    )
    module = HeatmapModule(config.to_dict(), ["a"])
    factors = [module.backbone_lr_factor(epoch) for epoch in range(8)]
    assert factors == pytest.approx([0, 0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    random_init = HeatmapModule(TrainConfig.from_dict(_config(unfreeze_epoch=0)).to_dict(), ["a"])
    assert random_init.backbone_lr_factor(0) == 1.0  # nothing pretrained to protect


def test_training_records_the_backbone_learning_rate(tiny_project, classifier_weights, tmp_path):
    config = {
        **_config(max_epochs=3, unfreeze_epoch=1, backbone_lr_ratio=0.1, backbone_lr_warmup_epochs=2, lr_milestones=[]),
        "model": {"backbone": "resnet18", "pretrained": classifier_weights},
    }
    result = train(config, tiny_project.root, tmp_path / "model", progress=False)
    metrics = pd.read_csv(result.model_dir / "metrics.csv")
    # the rate recorded at an epoch's end is the one the next epoch uses
    assert metrics["backbone_lr"].tolist() == pytest.approx([1e-4, 5.5e-4, 1e-3])
    assert metrics["lr"].tolist() == pytest.approx([1e-3] * 3)
    assert (metrics["collapse_restored"] == 0).all()


class _Flatten(pl.Callback):
    """Zero the head's last layer before every step of one epoch: the maps are flat (a forced collapse)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch:
            last = module.net.head.layers[-1]
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()


def test_collapse_guard_restores_the_best_weights_and_halves_the_learning_rate(tiny_project):
    config = TrainConfig.from_dict(_config(max_epochs=3, learning_rate=1e-3, lr_milestones=[]))
    labels, _ = load_project(tiny_project.root, config.data.csv_file, config.data.video_dir)
    splits = split_frames(len(labels), 1.0, 0.0, 0)
    datamodule = PoseDataModule(labels, splits, config)
    pl.seed_everything(0, verbose=False)
    module = HeatmapModule(config.to_dict(), list(labels.bodyparts))
    flat = flat_heatmap_loss(config.data.image_resize, config.model.heatmap_sigma)
    # armed from the first epoch (a tiny model need not learn much to be "armed" here)
    guard = CollapseGuard(flat, armed_below=10.0, give_back=0.5)

    snapshots = {}

    losses = {}

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshots[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.state_dict().items()}
            losses[trainer.current_epoch] = CollapseGuard.epoch_loss(trainer)

    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[_Flatten(epoch=1), guard, Record()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=datamodule)

    assert losses[0] < flat, losses  # the precondition: the first epoch left the plateau
    assert losses[1] == pytest.approx(flat, rel=0.02)  # the forced collapse: flat maps all epoch
    assert guard.restores == [1] and guard.restored_from == [0]
    restored, best = snapshots[1], 0  # after the guard ran at the end of epoch 1
    for name, value in restored.items():
        assert torch.equal(value, snapshots[best][name]), name
    assert restored["net.head.layers.2.weight"].abs().sum() > 0  # not the zeroed layer
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(5e-4)


def test_collapse_guard_is_quiet_on_a_loss_that_only_improves():
    guard = CollapseGuard(0.05)
    assert not guard.collapsed(0.049)  # not armed yet: the maps were never clearly peaked
    guard.best_loss = 0.01
    assert not guard.collapsed(0.02)
    assert guard.collapsed(0.045)
    assert np.isclose(0.01 + 0.8 * (0.05 - 0.01), 0.042)


def _as_single_group(checkpoint_path, module: HeatmapModule) -> None:
    """Rewrite a checkpoint as engine 0.2.0 wrote it: one Adam group over ``parameters()``, a MultiStepLR."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    state = checkpoint["optimizer_states"][0]
    head, backbone = module._parameter_groups()
    by_new = head + backbone
    old_index = {id(p): i for i, p in enumerate(module.parameters())}
    hyper = {k: v for k, v in state["param_groups"][0].items() if k not in ("params", "name")}
    checkpoint["optimizer_states"] = [
        {
            "state": {old_index[id(by_new[i])]: value for i, value in state["state"].items()},
            "param_groups": [{**hyper, "params": list(range(len(by_new)))}],
        }
    ]
    schedule = checkpoint["lr_schedulers"][0]
    checkpoint["lr_schedulers"] = [
        {
            "milestones": Counter({150: 1}),  # as MultiStepLR.state_dict() holds them
            "gamma": 0.5,
            "base_lrs": schedule["base_lrs"][:1],
            "last_epoch": schedule["last_epoch"],
            "_step_count": schedule["_step_count"],
            "_get_lr_called_within_step": False,
            "_last_lr": schedule["_last_lr"][:1],
        }
    ]
    torch.save(checkpoint, checkpoint_path)


def test_a_checkpoint_of_the_single_group_optimizer_resumes(tiny_project, tmp_path):
    config = _config(max_epochs=1, lr_milestones=[])
    first = train(config, tiny_project.root, tmp_path / "model", progress=False)
    last = first.model_dir / "checkpoints" / "last.ckpt"
    labels, _ = load_project(tiny_project.root)
    _as_single_group(last, HeatmapModule(TrainConfig.from_dict(config).to_dict(), list(labels.bodyparts)))
    assert len(torch.load(last, map_location="cpu", weights_only=False)["optimizer_states"][0]["param_groups"]) == 1

    resumed = train(_config(max_epochs=2, lr_milestones=[]), tiny_project.root, tmp_path / "model", resume_from=last)
    assert resumed.epochs == 2
    state = torch.load(resumed.model_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert [g["name"] for g in state["optimizer_states"][0]["param_groups"]] == ["head", "backbone"]
    assert len(state["optimizer_states"][0]["state"]) > 0  # Adam's moments came through
