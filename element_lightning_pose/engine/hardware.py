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
import os
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


# oneDNN's ISA names from the least to the most capable (``ONEDNN_MAX_CPU_ISA``; the AVX10
# names are the newer spellings of the AVX512_CORE_FP16 / AMX ones), and the rank each of our
# fast-path flags needs: under a lower cap oneDNN does not use that instruction set.
_ONEDNN_ISA_RANK = {
    name: rank
    for rank, names in enumerate(
        [
            ("SSE41",),
            ("AVX",),
            ("AVX2",),
            ("AVX2_VNNI",),
            ("AVX2_VNNI_2",),
            ("AVX512_CORE",),
            ("AVX512_CORE_VNNI",),
            ("AVX512_CORE_BF16",),
            ("AVX512_CORE_FP16", "AVX10_1_512"),
            ("AVX512_CORE_AMX", "AVX10_1_512_AMX"),
            ("AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16"),
            ("ALL", "DEFAULT"),
        ]
    )
    for name in names
}
_FLAG_NEEDS_ISA = {
    "avx_vnni": "AVX2_VNNI",
    "avx512_vnni": "AVX512_CORE_VNNI",
    "avx512_bf16": "AVX512_CORE_BF16",
    "amx_bf16": "AVX512_CORE_AMX",
    "amx_int8": "AVX512_CORE_AMX",
}


def usable_cpu_flags() -> frozenset[str]:
    """:func:`cpu_flags` less the fast-path flags above oneDNN's instruction-set cap.

    ``ONEDNN_MAX_CPU_ISA=AVX2`` (or its older name ``DNNL_MAX_CPU_ISA``), set by a user or by a
    benchmark that runs this CPU as an AVX2-only one, keeps oneDNN's convolutions off AVX-512
    and AMX: bf16 is then emulated, 30x slower than fp32 on an AMX Xeon, so it must not count
    as native. An unknown cap is ignored.
    """
    setting = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL"
    cap = _ONEDNN_ISA_RANK.get(setting.strip().upper())  # oneDNN reads either name, in either case
    flags = cpu_flags()
    if cap is None:
        return flags
    return frozenset(flag for flag in flags if _ONEDNN_ISA_RANK[_FLAG_NEEDS_ISA.get(flag, "SSE41")] <= cap)


def _device_type(device: torch.device | str) -> str:
    return str(device).split(":")[0]


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively (faster than fp32), not by emulation."""
    kind = _device_type(device)
    if kind == "cuda":
        import torch  # only for a GPU: see the module's docstring

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if kind == "cpu":
        return bool(usable_cpu_flags() & set(NATIVE_BF16_FLAGS))
    return False


def fast_int8(device: torch.device | str) -> bool:
    """Whether ``device`` is a CPU with 8-bit dot-product instructions (PyTorch's int8 kernels are CPU-only)."""
    return _device_type(device) == "cpu" and bool(usable_cpu_flags() & set(FAST_INT8_FLAGS))


def device_signature(device: torch.device | str) -> str:
    """What the numerics of a fast path depend on: the CUDA device's name, or the CPU's fast-path flags.

    A precision checked on one machine holds on another with the same signature; a model
    directory moved to a machine with another one is checked again.
    """
    kind = _device_type(device)
    if kind == "cuda":
        import torch  # only for a GPU: see the module's docstring

        return f"cuda:{torch.cuda.get_device_name(device)}"
    present = sorted(usable_cpu_flags() & set(NATIVE_BF16_FLAGS + FAST_INT8_FLAGS))
    return f"{kind}:{platform.machine()}:" + ("+".join(present) or "plain")
