"""Inference precision chosen at run time: fp32, bf16, int8 or OpenVINO's, each checked against fp32 first.

bf16 (autocast of the backbone) pays on processors that compute it natively
(:func:`engine.hardware.native_bf16`: AMX or AVX512-BF16, Ampere-or-later GPUs); int8 (post-
training quantisation of the backbone, calibrated on the project's own training frames,
PyTorch's oneDNN / x86 kernels) pays on CPUs with 8-bit dot products. ``ov-fp32`` and
``ov-bf16`` run the backbone compiled by OpenVINO where it is installed (:mod:`.openvino`):
on CPUs, faster than PyTorch at the same precision. The heatmap head and the heatmap ->
keypoint step stay PyTorch's fp32 in all of them: sub-pixel positions are decided there, and
they cost little beside the backbone.

**The gate.** On the model's labeled frames a fast path passes when its keypoints stay within
:data:`GATE_MEDIAN_PX` (median) and :data:`GATE_P99_PX` (99th percentile) of fp32's, in
original-frame pixels, and the labeled-frame error (mean over labeled keypoints) rises by no
more than :data:`GATE_ERROR_RISE`. A path that fails, or that this device lacks, is said so and
fp32 is used. ``auto`` uses the fastest path that passes and is faster than fp32 on this device
(each is timed on the same resized frames), and says which.

What was checked is kept in the model directory (``precision.json``; int8 weights and the
backbones OpenVINO converted in ``precision/``, through :mod:`engine.model_dir`), per kind of device
(:func:`engine.hardware.device_signature`) and tied to the checkpoint's SHA-256, so it is done
once per model and device kind. A model directory that cannot be written (a read-only share)
is checked again on each run, with a warning.

int8 uses PyTorch's FX graph-mode quantisation (``torch.ao.quantization.quantize_fx``), which
PyTorch 2.10+ marks deprecated in favour of torchao; where it is gone, int8 is unavailable
(said so, fp32 or bf16 used) rather than a new dependency.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from element_lightning_pose.engine.data.labels import LabeledFrames, image_file, read_image
from element_lightning_pose.engine.data.projects import read_project_labels
from element_lightning_pose.engine.data.splits import read_splits
from element_lightning_pose.engine.data.video import resize_frame
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.hardware import cpu_model, device_signature, fast_int8, native_bf16
from element_lightning_pose.engine.inference.metrics import pixel_errors
from element_lightning_pose.engine.inference.models import CropZoomModel, PoseModel
from element_lightning_pose.engine.inference.openvino import (
    NOT_INSTALLED,
    OpenVINOBackbone,
    openvino_runtime,
    openvino_version,
)
from element_lightning_pose.engine.inference.predict import predict_labeled
from element_lightning_pose.engine.model_dir import (
    quantised_weights_path,
    read_precision_checks,
    write_precision_checks,
    write_quantised_weights,
)
from element_lightning_pose.engine.networks import ContextHeatmapNet, HeatmapNet
from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.version import __version__

FP32, BF16, INT8, AUTO = "fp32", "bf16", "int8", "auto"
OPENVINO_FP32, OPENVINO_BF16 = "ov-fp32", "ov-bf16"  # short: the pipeline keeps the name in a varchar(8)
OPENVINO_PATHS = {OPENVINO_FP32: FP32, OPENVINO_BF16: BF16}  # path -> OpenVINO's inference precision
PRECISIONS = (FP32, BF16, INT8, OPENVINO_FP32, OPENVINO_BF16)
CHOICES = (AUTO, *PRECISIONS)
FAST_PATHS = (INT8, OPENVINO_BF16, BF16, OPENVINO_FP32)  # tried by auto, the usually faster first

GATE_MEDIAN_PX = 0.5
GATE_P99_PX = 2.0
GATE_ERROR_RISE = 0.02
MAX_GATE_FRAMES = 256  # labeled frames the gate predicts (spread over the project when it has more)
CALIBRATION_FRAMES = 64  # training frames that set int8's activation ranges


class PrecisionError(ElpError, ValueError):
    """An unknown precision name."""


@dataclass
class GateResult:
    """One fast path checked against fp32 on the labeled frames (distances in original pixels)."""

    precision: str
    passed: bool
    frames: int
    median_px: float
    p99_px: float
    error_px: float  # mean labeled-frame error of this path
    fp32_error_px: float
    frames_per_s: float  # network on resized frames, this device
    fp32_frames_per_s: float

    @property
    def speedup(self) -> float:
        return self.frames_per_s / max(self.fp32_frames_per_s, 1e-9)

    def failures(self) -> list[str]:
        """What broke the gate, in words (empty when it passed)."""
        found = []
        if not self.median_px <= GATE_MEDIAN_PX:
            found.append(f"median distance to fp32 {self.median_px:.3f} px > {GATE_MEDIAN_PX} px")
        if not self.p99_px <= GATE_P99_PX:
            found.append(f"p99 distance to fp32 {self.p99_px:.3f} px > {GATE_P99_PX} px")
        if not self.error_px <= self.fp32_error_px * (1 + GATE_ERROR_RISE):
            found.append(
                f"labeled-frame error {self.error_px:.3f} px vs fp32 {self.fp32_error_px:.3f} px "
                f"(> +{GATE_ERROR_RISE:.0%})"
            )
        return found

    def summary(self) -> str:
        return (
            f"{self.precision}: median {self.median_px:.3f} px, p99 {self.p99_px:.3f} px from fp32 on "
            f"{self.frames} labeled frames, error {self.error_px:.3f} vs {self.fp32_error_px:.3f} px, "
            f"{self.speedup:.2f}x fp32's frames/s"
        )


@dataclass
class PrecisionChoice:
    """What ``select_precision`` did: the precision asked for, the one used, and why."""

    requested: str
    used: str
    message: str
    gates: dict[str, GateResult] = dataclasses.field(default_factory=dict)


def check_name(precision: str, what: str = "precision") -> str:
    """``precision`` if it is one of :data:`CHOICES`, else :class:`PrecisionError` naming ``what``."""
    if precision not in CHOICES:
        raise PrecisionError(f"{what} {precision!r}: choose one of {', '.join(CHOICES)}")
    return precision


def unavailable_reason(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` cannot run on ``device`` (None: it can)."""
    if precision in OPENVINO_PATHS:
        if device.type != "cpu":
            return "OpenVINO runs here on the CPU only"
        if openvino_runtime() is None:
            return NOT_INSTALLED
    if precision in (BF16, OPENVINO_BF16) and not native_bf16(device):
        where = "this GPU" if device.type == "cuda" else f"this CPU ({cpu_model()})"
        return f"{where} has no native bf16 (AMX or AVX512-BF16; Ampere or later on a GPU): bf16 would be slower"
    if precision == INT8:
        if device.type != "cpu":
            return "int8 kernels are CPU-only in PyTorch"
        if _quantize_fx() is None:
            return f"torch {torch.__version__} has no torch.ao.quantization.quantize_fx (FX int8 quantisation)"
    return None


# --------------------------------------------------------------------------- applying a precision


def _networks(model: PoseModel) -> dict[str, HeatmapNet | ContextHeatmapNet]:
    """The networks of a model by stage name ("net" alone, or a crop-zoom model's "pose" and "detector")."""
    if isinstance(model, CropZoomModel):
        return {"pose": model.net, "detector": model._detector().net}
    return {"net": model.net}


def _copy_model(model: PoseModel) -> PoseModel:
    """A model whose networks are copies (the fp32 one stays as it was, for the gate)."""
    if isinstance(model, CropZoomModel):
        detector = model._detector()
        return dataclasses.replace(
            model, net=copy.deepcopy(model.net), detector=dataclasses.replace(detector, net=copy.deepcopy(detector.net))
        )
    return dataclasses.replace(model, net=copy.deepcopy(model.net))


def with_bf16(model: PoseModel) -> PoseModel:
    """A copy of ``model`` whose backbones run under bf16 autocast (heads and keypoints stay fp32)."""
    fast = _copy_model(model)
    for net in _networks(fast).values():
        net.backbone_autocast = torch.bfloat16
    return fast


def with_openvino(model: PoseModel, precision: str, digest: str = "") -> PoseModel:
    """A copy of ``model`` whose backbones are compiled by OpenVINO at ``precision``'s inference
    precision, on as many threads as PyTorch has.

    With the checkpoint's ``digest`` (:func:`_checkpoint_digest`), each converted backbone is kept
    in the model directory's ``precision/`` and read from there on the next run.
    """
    fast = _copy_model(model)
    for name, net in _networks(fast).items():
        size = _input_size(model, name)
        kept = None
        if model.model_dir is not None and digest:
            kept = quantised_weights_path(model.model_dir, _openvino_file(digest, name, size))
        net.backbone = OpenVINOBackbone(net.backbone, size, OPENVINO_PATHS[precision], torch.get_num_threads(), kept)
    return fast


def _openvino_file(digest: str, network: str, size: tuple[int, int]) -> str:
    """The name a converted backbone is kept under: its checkpoint, input size, OpenVINO, and the
    engine and torch that built the module converted."""
    key = f"{digest}|{network}|{size[0]}x{size[1]}|{openvino_version()}|{__version__}|{torch.__version__}"
    return f"openvino-{hashlib.sha256(key.encode()).hexdigest()[:12]}-{network}"


def _quantize_fx():
    """``torch.ao.quantization.quantize_fx`` (None where this torch no longer has it)."""
    try:
        from torch.ao.quantization import quantize_fx
    except ImportError:
        return None
    return quantize_fx


def int8_engine() -> str:
    """The quantised-kernel library for this CPU: oneDNN where it has 8-bit dot products (AMX, VNNI),
    else PyTorch's x86 default (FBGEMM)."""
    engines = torch.backends.quantized.supported_engines
    if "onednn" in engines and fast_int8("cpu"):
        return "onednn"
    return "x86" if "x86" in engines else engines[-1]


@contextmanager
def _quiet_quantisation() -> Iterator[None]:
    # PyTorch 2.10+ warns on every FX quantisation call that the API moves to torchao
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantiz.*")
        warnings.filterwarnings("ignore", message=".*TypedStorage.*")
        warnings.filterwarnings("ignore", message=".*must run observer.*")
        yield


def _prepared_backbone(
    net: HeatmapNet | ContextHeatmapNet, example: torch.Tensor, engine: str, keep_fp32: Sequence[str] = ()
) -> nn.Module:
    quantize_fx = _quantize_fx()
    if quantize_fx is None:
        raise PrecisionError(unavailable_reason(INT8, torch.device("cpu")))
    from torch.ao.quantization import get_default_qconfig_mapping

    torch.backends.quantized.engine = engine
    mapping = get_default_qconfig_mapping(engine)
    for name in keep_fp32:
        mapping = mapping.set_module_name(name, None)
    return quantize_fx.prepare_fx(copy.deepcopy(net.backbone).eval(), mapping, (example,))


def quantise_backbone(
    net: HeatmapNet | ContextHeatmapNet,
    calibration: torch.Tensor,
    engine: str | None = None,
    keep_fp32: Sequence[str] = (),
) -> nn.Module:
    """The backbone of ``net`` quantised to int8, activation ranges from ``calibration`` (N, 3, h, w) uint8.

    Takes and returns fp32 tensors (quantised at its entry, dequantised at its exit), so it
    replaces ``net.backbone`` as it is. ``keep_fp32`` names backbone submodules left in fp32
    (``benchmarks/bench_int8_stages.py`` tries them; ``elp predict`` quantises everything).
    """
    engine = engine or int8_engine()
    with _quiet_quantisation(), torch.no_grad():
        example = net.normalise(calibration[:1])
        prepared = _prepared_backbone(net, example, engine, keep_fp32)
        for start in range(0, len(calibration), 16):
            prepared(net.normalise(calibration[start : start + 16]))
        return _quantize_fx().convert_fx(prepared)


def load_quantised_backbone(
    net: HeatmapNet | ContextHeatmapNet, state: dict[str, torch.Tensor], image_size: tuple[int, int], engine: str
) -> nn.Module:
    """A quantised backbone rebuilt from ``net`` (fp32) and the saved ``state`` of :func:`quantise_backbone`."""
    with _quiet_quantisation(), torch.no_grad():
        example = net.normalise(torch.zeros(1, 3, *image_size, dtype=torch.uint8))
        # converted without calibration (its observers warn and give placeholder ranges, which
        # the saved state replaces): a histogram observer's calibration costs seconds
        converted = _quantize_fx().convert_fx(_prepared_backbone(net, example, engine))
        converted.load_state_dict(state)
        return converted


def with_int8(model: PoseModel, backbones: dict[str, nn.Module]) -> PoseModel:
    """A copy of ``model`` whose backbones are the quantised ``backbones`` (by network name)."""
    fast = _copy_model(model)
    for name, net in _networks(fast).items():
        net.backbone = backbones[name]
    return fast


# --------------------------------------------------------------------------- the gate


def _spread(n: int, limit: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(int)) if n else np.zeros(0, int)


def labeled_frames_of(model: PoseModel, project: PathLike | None = None) -> LabeledFrames | None:
    """The labeled frames of the project the model was trained on (``project``, else model.json's
    ``project_root``); None where neither is there."""
    root = Path(project) if project is not None else None
    if root is None and model.info is not None and model.info.project_root:
        root = Path(model.info.project_root)
    if root is None or not root.is_dir():
        return None
    data = model.config.data
    return read_project_labels(root, data.csv_file, data.view_names or None, check_images=True)


def _calibration_frames(model: PoseModel, labels: LabeledFrames, image_size: tuple[int, int]) -> torch.Tensor:
    """Up to :data:`CALIBRATION_FRAMES` training frames (all labeled frames without a split), resized."""
    rows = list(range(len(labels)))
    splits_csv = model.model_dir / "splits.csv" if model.model_dir is not None else None
    if splits_csv is not None and splits_csv.is_file():
        splits = read_splits(splits_csv)
        train = [r for r in rows if splits.get(labels.image_paths[r]) == "train"]
        rows = train or rows
    picked = [rows[i] for i in _spread(len(rows), CALIBRATION_FRAMES)]
    frames = np.stack([resize_frame(read_image(image_file(labels, r)), image_size) for r in picked])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def _frames_per_s(model: PoseModel, frames: np.ndarray, original: tuple[int, int], seconds: float = 1.0) -> float:
    """Network throughput on resized frames (best of repeated passes, at least 2, about ``seconds``)."""

    def run(batch: np.ndarray) -> np.ndarray:
        if isinstance(model, CropZoomModel):  # whole frames: detection and crops are part of its cost
            return model.predict_frames(batch)
        return model.predict_resized(batch, original)

    run(frames[:2])  # warm-up (oneDNN picks its kernels on the first call)
    best, spent, passes = 0.0, 0.0, 0
    while passes < 2 or spent < seconds:
        started = time.perf_counter()
        run(frames)
        elapsed = time.perf_counter() - started
        best, spent, passes = max(best, len(frames) / elapsed), spent + elapsed, passes + 1
    return best


def gate(
    fp32: PoseModel,
    fast: PoseModel,
    precision: str,
    labels: LabeledFrames,
    *,
    fp32_points: np.ndarray | None = None,
    timing: tuple[np.ndarray, tuple[int, int], float] | None = None,
    batch_size: int = 16,
) -> GateResult:
    """Check ``fast`` against ``fp32`` on ``labels`` (see the module's docstring for the rule).

    ``fp32_points``: fp32's predictions of ``labels`` when already made; ``timing``: frames,
    their original size and fp32's frames/s on them, to time ``fast`` on the same frames.
    """
    reference = predict_labeled(fp32, labels, batch_size=batch_size) if fp32_points is None else fp32_points
    points = predict_labeled(fast, labels, batch_size=batch_size)
    both = np.isfinite(reference[..., :2]).all(-1) & np.isfinite(points[..., :2]).all(-1)
    distance = np.linalg.norm(points[..., :2] - reference[..., :2], axis=-1)[both]
    missing = np.isfinite(reference[..., :2]).all(-1) != np.isfinite(points[..., :2]).all(-1)
    if missing.any():  # a keypoint one path finds and the other does not counts as infinitely far
        distance = np.concatenate([distance, np.full(int(missing.sum()), np.inf)])
    errors_fp32 = pixel_errors(reference, labels.keypoints)
    errors_fast = pixel_errors(points, labels.keypoints)
    fast_fps = fp32_fps = float("nan")
    if timing is not None:
        frames, original, fp32_fps = timing
        fast_fps = _frames_per_s(fast, frames, original)
    result = GateResult(
        precision=precision,
        passed=False,
        frames=len(labels),
        median_px=float(np.median(distance)) if distance.size else 0.0,
        p99_px=float(np.percentile(distance, 99)) if distance.size else 0.0,
        error_px=float(np.nanmean(errors_fast)) if np.isfinite(errors_fast).any() else 0.0,
        fp32_error_px=float(np.nanmean(errors_fp32)) if np.isfinite(errors_fp32).any() else 0.0,
        frames_per_s=fast_fps,
        fp32_frames_per_s=fp32_fps,
    )
    result.passed = not result.failures()
    return result


# --------------------------------------------------------------------------- choosing, once per model


def _checkpoint_digest(model: PoseModel) -> str:
    """SHA-256 of the checkpoint(s) the model was loaded from ("" for a model built in memory)."""
    files = []
    for stage in [model, model.detector] if isinstance(model, CropZoomModel) else [model]:
        if stage is None:
            continue
        if stage.info is not None and stage.info.checkpoint is not None:
            files.append(Path(stage.info.checkpoint))
        elif stage.model_dir is not None:
            files.append(stage.model_dir / "checkpoints" / "best.ckpt")
    digest = hashlib.sha256()
    for path in files:
        if not path.is_file():
            return ""
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest() if files else ""


def _int8_file(signature: str, network: str) -> str:
    return f"int8-{hashlib.sha256(signature.encode()).hexdigest()[:12]}-{network}.pt"


def select_precision(
    model: PoseModel,
    requested: str,
    *,
    project: PathLike | None = None,
    batch_size: int = 16,
    report: Callable[[str], None] | None = None,
) -> tuple[PoseModel, PrecisionChoice]:
    """The model to predict with at ``requested`` precision (``auto`` or one of :data:`PRECISIONS`).

    A fast path is used only where this device has it and it passed the gate on the model's
    labeled frames (``project``, else the project model.json names); otherwise fp32, with the
    reason in :attr:`PrecisionChoice.message` (also given to ``report``). The gate runs once
    per model and device kind; its results and int8 weights are kept in the model directory.
    """
    check_name(requested)
    say = report or (lambda message: None)
    if requested == FP32:
        return model, PrecisionChoice(FP32, FP32, "precision fp32 (as asked)")
    device = model.device
    candidates = [requested] if requested != AUTO else list(FAST_PATHS)
    reasons = {p: unavailable_reason(p, device) for p in candidates}
    usable = [p for p in candidates if reasons[p] is None]
    if not usable:
        message = f"precision {requested}: " + "; ".join(f"{p}: {reasons[p]}" for p in candidates) + "; using fp32"
        say(message)
        return model, PrecisionChoice(requested, FP32, message)

    signature = device_signature(device)
    digest = _checkpoint_digest(model)
    records = _read_records(model, digest)
    device_record = records.get("devices", {}).get(signature, {})
    # OpenVINO's results hold for the OpenVINO that was checked: with another version installed,
    # all of them are forgotten (and those asked for checked again)
    if device_record.get("openvino_version") != openvino_version():
        kept = {p: r for p, r in device_record.get("results", {}).items() if p not in OPENVINO_PATHS}
        device_record = {**device_record, "results": kept}
    todo = [p for p in usable if p not in device_record.get("results", {})]
    backbones: dict[str, dict[str, nn.Module]] = {}
    if todo:
        labels = labeled_frames_of(model, project)
        if labels is None:
            where = project or (model.info.project_root if model.info is not None else None)
            message = (
                f"precision {requested}: {', '.join(todo)} not yet checked against fp32 for this model on this "
                f"device, and its labeled frames are not at hand ({where or 'no project recorded in model.json'}); "
                "give the labeled project (elp predict --project DIR) once; using "
            )
            checked = [p for p in usable if p not in todo]
            if not checked:
                say(message + "fp32")
                return model, PrecisionChoice(requested, FP32, message + "fp32")
            usable = checked
        else:
            say(
                f"precision {requested}: checking {', '.join(todo)} against fp32 on {len(labels)} labeled frames (once)"
            )
            results, backbones = _run_gates(model, todo, labels, batch_size, digest)
            device_record = _remember(model, records, digest, signature, device_record, results, backbones)

    gates = {p: GateResult(**device_record["results"][p]) for p in usable if p in device_record.get("results", {})}
    passing = [g for g in gates.values() if g.passed and (requested != AUTO or g.speedup > 1.0)]
    if not passing:
        failed = "; ".join(
            f"{g.precision} " + (", ".join(g.failures()) or "no faster than fp32") for g in gates.values()
        )
        unavailable = "; ".join(f"{p}: {reasons[p]}" for p in candidates if reasons[p])
        message = f"precision {requested}: {'; '.join(filter(None, [failed, unavailable]))}; using fp32"
        say(message)
        return model, PrecisionChoice(requested, FP32, message, gates)
    best = max(passing, key=lambda g: g.speedup) if requested == AUTO else passing[0]
    if best.precision == BF16:
        fast = with_bf16(model)
    elif best.precision in OPENVINO_PATHS:
        fast = with_openvino(model, best.precision, digest)
    else:
        fast = with_int8(model, backbones.get(INT8) or _load_int8(model, device_record))
    how = "fastest that passes the gate on this device" if requested == AUTO else "passes the gate"
    message = f"precision {best.precision} ({how}): {best.summary()}"
    say(message)
    return fast, PrecisionChoice(requested, best.precision, message, gates)


def _read_records(model: PoseModel, digest: str) -> dict[str, Any]:
    """This model's precision.json, or a fresh one where it belongs to another checkpoint."""
    if model.model_dir is None or not digest:
        return {}
    records = read_precision_checks(model.model_dir)
    return records if records.get("checkpoint_sha256") == digest else {}


def _run_gates(
    model: PoseModel, precisions: list[str], labels: LabeledFrames, batch_size: int, digest: str
) -> tuple[dict[str, GateResult], dict[str, dict[str, nn.Module]]]:
    labels = labels.subset(_spread(len(labels), MAX_GATE_FRAMES))
    reference = predict_labeled(model, labels, batch_size=batch_size)
    sample = [read_image(image_file(labels, r)) for r in range(min(batch_size, len(labels)))]
    original = sample[0].shape[:2]
    sample = [f for f in sample if f.shape[:2] == original]
    if isinstance(model, CropZoomModel):
        timed = np.stack(sample)
    else:
        timed = np.stack([resize_frame(f, model.image_resize) for f in sample])
    fp32_fps = _frames_per_s(model, timed, original)
    results, backbones = {}, {}
    for precision in precisions:
        if precision == BF16:
            fast = with_bf16(model)
        elif precision in OPENVINO_PATHS:
            fast = with_openvino(model, precision, digest)  # the network checked is the one kept
        else:
            backbones[INT8] = {
                name: quantise_backbone(net, _calibration_frames(model, labels, _input_size(model, name)))
                for name, net in _networks(model).items()
            }
            fast = with_int8(model, backbones[INT8])
        results[precision] = gate(
            model,
            fast,
            precision,
            labels,
            fp32_points=reference,
            timing=(timed, original, fp32_fps),
            batch_size=batch_size,
        )
    return results, backbones


def _input_size(model: PoseModel, network: str) -> tuple[int, int]:
    stage = model._detector() if network == "detector" and isinstance(model, CropZoomModel) else model
    height, width = stage.image_resize
    return int(height), int(width)


def _remember(
    model: PoseModel,
    records: dict[str, Any],
    digest: str,
    signature: str,
    device_record: dict[str, Any],
    results: dict[str, GateResult],
    backbones: dict[str, dict[str, nn.Module]],
) -> dict[str, Any]:
    """Add ``results`` (and int8 weights) to the model directory's records; returns the device's record."""
    device_record = {
        **device_record,
        "cpu_model": cpu_model() if model.device.type == "cpu" else None,
        "torch_version": torch.__version__,
        "engine_version": __version__,
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": {**device_record.get("results", {}), **{p: dataclasses.asdict(g) for p, g in results.items()}},
    }
    if any(p in OPENVINO_PATHS for p in results):
        device_record["openvino_version"] = openvino_version()
    if INT8 in backbones:
        device_record["int8_engine"] = int8_engine()
        device_record["int8_weights"] = {name: _int8_file(signature, name) for name in backbones[INT8]}
    if model.model_dir is None or not digest:
        return device_record
    records = {
        **records,
        "checkpoint_sha256": digest,
        "devices": {**records.get("devices", {}), signature: device_record},
    }
    try:
        for name, module in backbones.get(INT8, {}).items():
            buffer = io.BytesIO()
            torch.save(module.state_dict(), buffer)
            write_quantised_weights(model.model_dir, device_record["int8_weights"][name], buffer.getvalue())
        write_precision_checks(model.model_dir, records)
    except OSError as exc:
        warnings.warn(
            f"{model.model_dir}: could not keep the precision checks ({exc}); they run again next time",
            RuntimeWarning,
            stacklevel=3,
        )
    return device_record


def _load_int8(model: PoseModel, device_record: dict[str, Any]) -> dict[str, nn.Module]:
    """The int8 backbones kept in the model directory (checked when they were written)."""
    assert model.model_dir is not None  # only a model directory keeps int8 weights between runs
    backbones = {}
    for name, net in _networks(model).items():
        path = quantised_weights_path(model.model_dir, device_record["int8_weights"][name])
        with _quiet_quantisation():  # quantised tensors load through TypedStorage, which torch warns about
            state = torch.load(path, map_location="cpu", weights_only=True)
        backbones[name] = load_quantised_backbone(net, state, _input_size(model, name), device_record["int8_engine"])
    return backbones
