"""Backbones, heatmap head, targets, loss masking and the heatmap -> keypoint step."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from element_lightning_pose.engine.networks import (
    BACKBONE_NAMES,
    HeatmapNet,
    WeightsError,
    build_backbone,
    gaussian_targets,
    heatmap_to_input,
    input_to_heatmap,
    soft_argmax,
)
from element_lightning_pose.engine.networks.backbones import EfficientNetLite0, ResNetClassifier, lite0_weights_path
from element_lightning_pose.engine.training.losses import heatmap_mse


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_heatmaps_are_a_quarter_of_the_input(backbone):
    torch.manual_seed(0)
    net = HeatmapNet(backbone, n_keypoints=5, pretrained=False).eval()
    images = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    with torch.inference_mode():
        logits = net(images)
        points = net.keypoints(images)
    assert logits.shape == (2, 5, 16, 24)
    assert points.shape == (2, 5, 3)
    assert torch.isfinite(points).all()
    assert (points[..., 0] >= -0.5).all() and (points[..., 0] <= 95.5).all()
    assert (points[..., 2] >= 0).all() and (points[..., 2] <= 1).all()


def test_efficientnet_lite0_loads_every_key_of_the_packaged_weights():
    path = lite0_weights_path()
    shipped = torch.load(path, map_location="cpu", weights_only=True)
    classifier = EfficientNetLite0()
    result = classifier.load_state_dict(shipped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(classifier.state_dict()) == set(shipped)
    backbone, channels, _, _ = build_backbone("efficientnet_lite0", pretrained=True)
    assert channels == 1280
    # the backbone carries the ImageNet weights, not a random init
    torch.testing.assert_close(backbone.state_dict()["_conv_stem.weight"], shipped["_conv_stem.weight"])
    torch.testing.assert_close(
        backbone.state_dict()["_blocks.15._project_conv.weight"], shipped["_blocks.15._project_conv.weight"]
    )


def test_local_weights_file_loads_and_mismatch_is_named(tmp_path):
    import torchvision

    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)
    good = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), good)
    backbone, channels, _, _ = build_backbone("resnet18", pretrained=good)
    assert channels == 512
    torch.testing.assert_close(backbone[0].weight, source.conv1.weight)
    with pytest.raises(WeightsError, match="resnet18.pth"):
        build_backbone("resnet50", pretrained=good)
    with pytest.raises(WeightsError, match="not found"):
        build_backbone("resnet18", pretrained=tmp_path / "missing.pth")


def test_gaussian_target_peaks_at_the_keypoint_and_sums_to_one():
    keypoints = torch.tensor([[[5.0, 9.0], [12.25, 7.5], [float("nan"), float("nan")]]])
    targets, labeled = gaussian_targets(keypoints, (16, 20), sigma=1.25)
    assert targets.shape == (1, 3, 16, 20)
    assert labeled.tolist() == [[True, True, False]]
    flat = targets[0, 0].argmax().item()
    assert divmod(flat, 20) == (9, 5)  # (row=y, col=x)
    torch.testing.assert_close(targets[0, :2].sum(dim=(-2, -1)), torch.ones(2))
    assert targets[0, 2].abs().sum() == 0
    # the target's centre of mass is the subpixel keypoint
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(20.0), indexing="ij")
    centre = ((targets[0, 1] * xs).sum().item(), (targets[0, 1] * ys).sum().item())
    assert centre == pytest.approx((12.25, 7.5), abs=1e-3)


@pytest.mark.parametrize("x, y", [(10.3, 7.8), (25.55, 4.25), (6.4, 16.9), (17.0, 17.5)])
def test_soft_argmax_recovers_a_subpixel_keypoint(x, y):
    targets, _ = gaussian_targets(torch.tensor([[[x, y]]]), (24, 32), sigma=1.25)
    points = soft_argmax(targets)
    assert points[0, 0, 0].item() == pytest.approx(x, abs=0.1)
    assert points[0, 0, 1].item() == pytest.approx(y, abs=0.1)
    # still within 0.1 px once scaled to input pixels (4x)
    exact = heatmap_to_input(torch.tensor([x, y]))
    assert torch.allclose(heatmap_to_input(points[0, 0, :2]), exact, atol=0.1)


def test_confidence_is_high_for_a_sharp_peak_and_low_for_a_flat_map():
    sharp, _ = gaussian_targets(torch.tensor([[[10.4, 6.6]]]), (32, 32), sigma=1.25)
    flat = torch.full((1, 1, 32, 32), 1.0 / 1024)
    broad, _ = gaussian_targets(torch.tensor([[[10.4, 6.6]]]), (32, 32), sigma=4.0)
    conf_sharp = soft_argmax(sharp)[0, 0, 2].item()
    conf_flat = soft_argmax(flat)[0, 0, 2].item()
    conf_broad = soft_argmax(broad)[0, 0, 2].item()
    assert conf_sharp > 0.95
    assert conf_flat < 0.05
    assert conf_flat < conf_broad < conf_sharp


def test_soft_argmax_ignores_a_far_second_mode():
    maps, _ = gaussian_targets(torch.tensor([[[5.0, 5.0], [25.0, 25.0]]]), (32, 32))
    mixture = 0.6 * maps[:, :1] + 0.4 * maps[:, 1:]
    point = soft_argmax(mixture)[0, 0]
    assert point[:2].tolist() == pytest.approx([5.0, 5.0], abs=0.05)
    assert 0.4 < point[2].item() < 0.8  # split mass lowers the confidence


def test_coordinate_conventions_are_inverse():
    points = torch.tensor([[0.0, 3.25], [-0.5, 63.5]])
    torch.testing.assert_close(input_to_heatmap(heatmap_to_input(points)), points)
    # heatmap pixel 0 covers input pixels 0..3, centred at 1.5
    assert heatmap_to_input(torch.tensor(0.0)).item() == 1.5


def test_nan_keypoints_contribute_nothing_to_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    labeled = torch.tensor([[[10.0, 20.0], [30.0, 40.0], [50.0, 8.0]], [[12.0, 22.0], [33.0, 41.0], [5.0, 5.0]]])
    partial = labeled.clone()
    partial[0, 1] = float("nan")
    partial[1, 2] = float("nan")
    loss = heatmap_mse(logits, partial)
    loss.backward()
    # no gradient reaches the maps of unlabeled keypoints
    assert logits.grad[0, 1].abs().sum() == 0 and logits.grad[1, 2].abs().sum() == 0
    assert logits.grad[0, 0].abs().sum() > 0
    # the loss is the mean over labeled maps only: changing a masked map changes nothing
    other = logits.detach().clone()
    other[0, 1] = torch.randn(16, 16) * 5
    assert heatmap_mse(other, partial).item() == pytest.approx(loss.item(), rel=1e-6)
    # and an all-NaN batch gives a zero loss, not NaN
    assert heatmap_mse(logits, torch.full_like(labeled, float("nan"))).item() == 0.0
    # the "uniform" mode instead pulls unlabeled maps towards a flat map
    uniform = heatmap_mse(logits, partial, nan_keypoints="uniform")
    assert math.isfinite(uniform.item()) and uniform.item() != loss.item()


def test_perfect_prediction_has_zero_loss():
    keypoints = torch.tensor([[[13.0, 21.0], [40.5, 30.25]]])
    targets, _ = gaussian_targets(input_to_heatmap(keypoints), (16, 16))
    logits = torch.log(targets.clamp_min(1e-30))
    assert heatmap_mse(logits, keypoints).item() == pytest.approx(0.0, abs=1e-9)
    assert heatmap_mse(torch.zeros_like(logits), keypoints).item() > 0.01


def test_pretrained_resnet_offline_explains_what_to_do(monkeypatch):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    # simulate a machine without internet access (the torchvision download path)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet34", pretrained=True)
    message = str(info.value)
    assert "resnet34" in message and "model.pretrained" in message and "checkpoints" in message


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_our_resnets_are_torchvisions_for_the_same_seed(name):
    """Same parameter names (torchvision's ImageNet weights and older checkpoints load), same
    random initialisation for the same seed (training runs are as before), same outputs."""
    import torchvision

    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None).eval()
    torch.manual_seed(0)
    ours = ResNetClassifier(name).eval()
    expected, got = theirs.state_dict(), ours.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[key], expected[key]) for key in expected)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(images), theirs(images))


def test_loading_a_model_for_prediction_imports_neither_torchvision_nor_dynamo(tiny_model_dir):
    """Each costs 2.3-2.7 s of every `elp predict` on the AMD EPYC of results/inference_cli_amd.md."""
    code = (
        "import sys\n"
        "from element_lightning_pose.engine.inference.models import load_model\n"
        f"load_model({str(tiny_model_dir)!r}, device='cpu')\n"
        "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
