"""A backbone run by OpenVINO on the CPU: the ``ov-fp32`` and ``ov-bf16`` precisions.

OpenVINO (``pip install element-lightning-pose[openvino]``, optional) compiles the backbone for
the CPU it runs on, fusing each convolution with its residual addition and activation and
keeping weights in the kernels' own layout. In PyTorch's eager fp32 resnet50, the residual
additions and ReLUs alone took 15% of the forward. On the 2-core Xeon with AMX where the speed
targets were measured (``benchmarks/results/inference_cli.md``, the gate's labeled frames, one
thread), resnet50 ran at 1.34x PyTorch fp32's frames/s in fp32 and 7.14x in bf16 (PyTorch's
bf16 autocast: 2.38x); under a cap at AVX2 (``ONEDNN_MAX_CPU_ISA``, which OpenVINO honours
too; ``inference_cli_avx2.md``) 1.21x in fp32.

The backbone is converted from the loaded (BatchNorm-folded) PyTorch module, which takes
1-2.6 s (a trace through torch.jit; 2.6 s for resnet18 on the AMD EPYC of
``inference_cli_amd.md``, a tenth of a 300-frame video's prediction there). So the converted
network is kept, in OpenVINO's own format and in fp32, where the caller says (the model
directory's ``precision/``, named after the checkpoint's digest, the input size and OpenVINO's
version); reading it back and compiling takes about 0.15 s. The heatmap head and the keypoint
step stay PyTorch's, in fp32, as for the other precisions. Whether it may be used is decided by
the same accuracy gate as bf16 and int8 (:mod:`.precision`).
"""

from __future__ import annotations

import logging
import threading
import warnings
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from element_lightning_pose.engine.atomic import atomic_directory

logger = logging.getLogger(__name__)

NOT_INSTALLED = "openvino is not installed (pip install element-lightning-pose[openvino])"
INFERENCE_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # ours -> OpenVINO's INFERENCE_PRECISION_HINT


@cache
def openvino_runtime() -> ModuleType | None:
    """The ``openvino`` package, or None where it is not installed (an optional dependency)."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino


@cache
def openvino_core() -> Any:
    """The process's one ``openvino.Core``, kept for its lifetime.

    With a Core made per network and dropped after compiling, a process that had compiled some
    crashed (a segmentation fault in PyTorch's backward pass) when a later training in it was
    stopped by SIGTERM: reproduced every time by test_precision's ov-fp32 test followed by
    test_stopped's in-process test, gone with one Core kept (and with every network kept
    alive). Our reading, not checked inside OpenVINO: the last Core's end unloads the CPU plugin
    while the process goes on.
    """
    return _installed_runtime().Core()


def _installed_runtime() -> ModuleType:
    """The ``openvino`` package; ImportError naming the extra where it is not installed."""
    runtime = openvino_runtime()
    if runtime is None:
        raise ImportError(NOT_INSTALLED)
    return runtime


def openvino_version() -> str | None:
    runtime = openvino_runtime()
    return None if runtime is None else str(runtime.get_version())


class OpenVINOBackbone(nn.Module):
    """``backbone`` compiled by OpenVINO for this CPU at ``precision`` (fp32 or bf16), on ``threads``
    threads of its own; it takes and returns fp32 (N, C, H, W) tensors, as the module it replaces.

    Any batch size runs (the batch dimension is left dynamic). One inference request per calling
    thread: videos predicted side by side share the compiled network.

    ``kept``: the folder where the converted network is kept: read from there when it is, else
    converted and written there for the next run (a folder that cannot be written only means
    converting again).
    """

    def __init__(
        self,
        backbone: nn.Module,
        image_size: tuple[int, int],
        precision: str,
        threads: int,
        kept: Path | None = None,
    ) -> None:
        super().__init__()
        converted = _read_converted(kept) if kept is not None else None
        if converted is None:
            converted = _convert(backbone, image_size)
            if kept is not None:
                _keep_converted(converted, kept)
        self.precision = precision
        self._compiled = openvino_core().compile_model(
            converted,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[precision],
                "INFERENCE_NUM_THREADS": max(1, int(threads)),
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                # the decode-ahead thread and PyTorch's head share the cores: no pinning
                "ENABLE_CPU_PINNING": False,
            },
        )
        self._requests = threading.local()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        # a channels-last tensor is a strided NCHW array: OpenVINO wants it contiguous
        frames = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        features = request.infer({0: frames})[0]
        return torch.from_numpy(np.array(features, copy=True))  # the request reuses its output buffer

    def __deepcopy__(self, memo: dict) -> OpenVINOBackbone:
        return self  # compiled, read-only: a model copied for another precision shares it


def _convert(backbone: nn.Module, image_size: tuple[int, int]) -> Any:
    """The backbone as an OpenVINO model with a dynamic batch dimension."""
    runtime = _installed_runtime()
    height, width = image_size
    example = torch.zeros(1, 3, height, width)
    with torch.no_grad(), warnings.catch_warnings():
        # OpenVINO traces the module with torch.jit, which PyTorch 2.10+ warns is deprecated
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        return runtime.convert_model(
            backbone.eval(), example_input=example, input=[runtime.PartialShape([-1, 3, height, width])]
        )


NETWORK_FILE = "backbone.xml"  # in a kept folder, its weights beside it as backbone.bin


def _read_converted(folder: Path) -> Any | None:
    """The network kept in ``folder``, None where there is none or it cannot be read."""
    network = folder / NETWORK_FILE
    if not (network.is_file() and network.with_suffix(".bin").is_file()):
        return None
    try:
        return openvino_core().read_model(str(network))
    except RuntimeError as exc:  # a damaged file: converted again, and replaced
        logger.warning("%s: not read (%s); converting the backbone again", network, exc)
        return None


def _keep_converted(converted: Any, folder: Path) -> None:
    """Write ``converted`` into ``folder``, which is replaced whole (:func:`atomic_directory`):
    a network is read only once both its files are complete, and from one conversion."""
    try:
        with atomic_directory(folder) as stage:
            # fp32 as converted (OpenVINO would halve the weights to fp16 by default): what the gate checked
            _installed_runtime().save_model(converted, str(stage / NETWORK_FILE), compress_to_fp16=False)
    except (OSError, RuntimeError) as exc:
        logger.info("%s: the converted backbone is not kept (%s)", folder, exc)
