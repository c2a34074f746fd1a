"""A trained network's checkpoint file, read in one place: :func:`read_checkpoint`.

A checkpoint (``model_dir/checkpoints/best.ckpt``, ``last.ckpt``) is the training module's
Lightning checkpoint: the weights (``state_dict``, the network's under ``net.``), the optimiser
state (``last.ckpt`` only: ``best.ckpt`` is for inference and holds the weights alone, a third of
the size, since Adam keeps two moments per weight), and the ``hyper_parameters`` the module saved, which rebuild the network without the
project: the full training configuration (``config``), the body parts in heatmap-channel order
(``bodyparts``) and the fitted PCAs (``pca``). Inference loads the weights from it; a resumed
run compares it with the project and the configuration before training.

Model directories are shared between labs and the pipeline opens whatever a ``Model`` row names,
so a checkpoint is never unpickled with Python's full unpickler (a crafted file would run code):
:func:`load_checkpoint_file` is the one reader, torch's weights-only unpickler allowing
:data:`CHECKPOINT_GLOBALS`, and Lightning's resume reads through it too (``engine.training.single``).
"""

from __future__ import annotations

import collections
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from element_lightning_pose.engine.config import TrainConfig
from element_lightning_pose.engine.model_dir import ModelDirectoryError
from element_lightning_pose.engine.networks import ContextHeatmapNet, HeatmapNet, build_net
from element_lightning_pose.engine.types import PathLike

# The globals a checkpoint of this engine holds beyond what torch's weights-only unpickler allows by
# itself (tensors, builtin containers and scalars): the MultiStepLR milestones (a Counter) in a
# last.ckpt of engine 0.2.0 or older. Lightning's own entries (loops, callbacks, hyper-parameters as a
# dict) and ours (the configuration as JSON values, PCAs and rig geometry as lists) need none.
CHECKPOINT_GLOBALS: tuple[type, ...] = (collections.Counter,)


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint holds: the network's description (``config``, ``bodyparts``), every
    hyper-parameter the module saved, and the state dict (memory-mapped: tensors not used
    are never read)."""

    path: Path
    config: TrainConfig
    bodyparts: list[str]
    hyper_parameters: Mapping[str, Any]
    state_dict: Mapping[str, torch.Tensor]
    has_optimizer_state: bool = True

    @property
    def network_weights(self) -> dict[str, torch.Tensor]:
        """The network's tensors, named as in the network (``net.`` prefix removed)."""
        return {k.removeprefix("net."): v for k, v in self.state_dict.items() if k.startswith("net.")}


def load_checkpoint_file(path: PathLike, *, mmap: bool = False) -> Any:
    """The unpickled contents of the checkpoint file at ``path``, on the CPU, read by torch's
    weights-only unpickler allowing :data:`CHECKPOINT_GLOBALS` and nothing else: a file that would
    build any other object (or call anything) is refused with :class:`ModelDirectoryError` naming
    the file and the global, before that object is built. ``mmap`` leaves unused tensors unread."""
    path = Path(path)
    if not path.is_file():
        raise ModelDirectoryError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; torch's own error misleads
        raise ModelDirectoryError(f"{path}: not a checkpoint (not a PyTorch archive)")
    try:
        # scoped to this call: a global registration would widen every other torch.load in the process
        with torch.serialization.safe_globals(list(CHECKPOINT_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for a damaged archive
        refused = isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc)
        if not refused:
            raise ModelDirectoryError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        what = f"the Python global {found.group(1)}" if found else "a Python object"
        raise ModelDirectoryError(
            f"{path}: refused: it asks to build {what}, which no checkpoint of this engine holds "
            "(unpickling it could run code)"
        ) from None


def read_checkpoint(path: PathLike) -> Checkpoint:
    """The checkpoint at ``path``, on the CPU; :class:`ModelDirectoryError` naming the file for a
    file that is not one (a CSV, a truncated copy, a pickle that would build other objects) or a
    checkpoint of another program."""
    path = Path(path)
    # mmap: the optimizer state (twice the weights) is never read unless used
    state = load_checkpoint_file(path, mmap=True)
    hparams = state.get("hyper_parameters") if isinstance(state, Mapping) else None
    if not (
        isinstance(hparams, Mapping)
        and isinstance(hparams.get("config"), Mapping)
        and isinstance(hparams.get("bodyparts"), list)
        and isinstance(state.get("state_dict"), Mapping)
    ):
        raise ModelDirectoryError(
            f"{path}: not a checkpoint of this engine (no hyper-parameters 'config' and 'bodyparts', or no state dict)"
        )
    config = TrainConfig.from_dict(dict(hparams["config"]), source=str(path))
    return Checkpoint(
        path, config, list(hparams["bodyparts"]), hparams, state["state_dict"], bool(state.get("optimizer_states"))
    )


def network_from_weights(
    config: TrainConfig, n_keypoints: int, weights: dict[str, torch.Tensor]
) -> HeatmapNet | ContextHeatmapNet:
    """The network with ``weights`` loaded, skipping the random initialisation they replace.

    The modules are built on the meta device (no memory, no init: a ResNet-50's init costs
    ~0.5 s of a CPU start-up), then the checkpoint tensors are assigned; only the input
    normalisation buffers, which are not in the state dict, are rebuilt.
    """
    with torch.device("meta"):
        net = build_net(
            config.model.model_type,
            config.model.backbone,
            n_keypoints,
            pretrained=False,
            heatmap_sigma=config.model.heatmap_sigma,
        )
    net.load_state_dict(weights, strict=True, assign=True)
    net.reset_input_normalisation()
    left = [name for name, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:
        raise ModelDirectoryError(f"checkpoint does not set {left[:3]} ({len(left)} tensors)")
    return net
