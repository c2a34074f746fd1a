"""What the processor can do fast: read once from the operating system, asked by training and inference.

bf16 arithmetic pays only where the processor has it natively: Intel's AMX tiles (``amx_bf16``)
or AVX-512 BF16 (``avx512_bf16``) on x86, and CUDA GPUs from Ampere on. Elsewhere bf16 is
emulated and slower than fp32. int8 convolutions pay where the CPU has dot-product
instructions for 8-bit integers (``amx_int8``, ``avx512_vnni``, ``avx_vnni``); oneDNN, which
PyTorch's quantised CPU kernels use, picks the fastest of them by itself. This module only
reads flags: whether a fast path also keeps the keypoints is checked by the accuracy gate
(``engine.inference.precision``), and whether it is faster there by timing it.

:func:`cpu_model` and :func:`cpu_flags` are also what the benchmarks' results headers name, so
this module imports torch only where a CUDA device is asked about (a header must not import it).
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# instruction sets that make bf16 / int8 convolutions faster than fp32 on a CPU
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
FAST_INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


def cpuinfo_value(key: str) -> str | None:
    """The first value of ``key`` in /proc/cpuinfo (None where there is no such file or key)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key and value.strip():
            return value.strip()
    return None


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (empty where the operating system does not list them)."""
    return frozenset((cpuinfo_value("flags") or "").split())


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (e.g. "AMD EPYC 7B13"), never just the architecture."""
    model = cpuinfo_value("model name")
    if model:
        return model
    try:  # ARM kernels leave "model name" out of /proc/cpuinfo; lscpu reads it elsewhere
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        listing = ""
    for line in listing.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Model name" and value.strip():
            return value.strip()
    return f"unknown {platform.machine()} CPU (no model name in /proc/cpuinfo or lscpu)"


def _device_type(device: torch.device | str) -> str:
    return str(device).split(":")[0]


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively (faster than fp32), not by emulation."""
    kind = _device_type(device)
    if kind == "cuda":
        import torch  # only for a GPU: see the module's docstring

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if kind == "cpu":
        return bool(cpu_flags() & set(NATIVE_BF16_FLAGS))
    return False


def fast_int8(device: torch.device | str) -> bool:
    """Whether ``device`` is a CPU with 8-bit dot-product instructions (PyTorch's int8 kernels are CPU-only)."""
    return _device_type(device) == "cpu" and bool(cpu_flags() & set(FAST_INT8_FLAGS))


def device_signature(device: torch.device | str) -> str:
    """What the numerics of a fast path depend on: the CUDA device's name, or the CPU's fast-path flags.

    A precision checked on one machine holds on another with the same signature; a model
    directory moved to a machine with another one is checked again.
    """
    kind = _device_type(device)
    if kind == "cuda":
        import torch  # only for a GPU: see the module's docstring

        return f"cuda:{torch.cuda.get_device_name(device)}"
    present = sorted(cpu_flags() & set(NATIVE_BF16_FLAGS + FAST_INT8_FLAGS))
    return f"{kind}:{platform.machine()}:" + ("+".join(present) or "plain")
