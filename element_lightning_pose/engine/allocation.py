"""Keep a batch's memory for the next batch instead of handing it back to the system each time.

A network's activations for one batch are tens of megabytes. glibc's allocator maps blocks over
32 MiB afresh from the kernel every time and unmaps them when freed; smaller ones too until its
threshold adapts, and it hands freed heap back above a trim threshold. PyTorch's CPU allocator
takes all of them with 4 KiB pages, so every batch touches much of its activations page by page
for the first time: on mirror-mouse's video (resnet18, bf16, one thread, Intel Xeon)
``elp predict`` took 1.8 million page faults, 3.0 s of system time in a 15.2 s process. Two
settings remove most of them (0.22 million faults, 13.6 s; the thresholds alone: 1.2 million):

- :func:`reuse_freed_memory`: glibc keeps freed blocks up to 32 MiB in its heap from the first
  one on, and keeps up to 256 MiB of freed heap before returning it (``mallopt``; the process's
  resident memory may stay that much higher). It works at any time, on glibc systems only.
- :func:`prefer_huge_pages`: PyTorch aligns its allocations of 2 MiB and more to huge pages and
  asks the kernel for them (``THP_MEM_ALLOC_ENABLE``), where transparent huge pages are on
  (``always`` or ``madvise``): one fault per 2 MiB. PyTorch reads the setting once, when it is
  imported, so this works only before ``import torch``: the package calls it when it is
  imported (the ``elp`` command imports it first).

Neither changes a result: the same arithmetic runs on the same values. A setting the user made
(the environment variables ``THP_MEM_ALLOC_ENABLE``, ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_``) is left as it is, and ``ELP_SYSTEM_ALLOCATOR=1`` leaves both alone
(``benchmarks/bench_allocation.py`` compares the two).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit systems
TRIM_THRESHOLD = 256 * 1024 * 1024


def _left_alone() -> bool:
    return os.environ.get("ELP_SYSTEM_ALLOCATOR", "") not in ("", "0")


def prefer_huge_pages() -> bool:
    """Ask PyTorch for huge-page-aligned large allocations; True if set here (torch not yet imported)."""
    if _left_alone() or "torch" in sys.modules or "THP_MEM_ALLOC_ENABLE" in os.environ:
        return False
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
    return True


@functools.cache
def reuse_freed_memory() -> bool:
    """Keep freed blocks up to 32 MiB in the heap, and up to 256 MiB of it; True where glibc took it."""
    if _left_alone() or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: glibc's, already loaded
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the trim threshold first: setting either turns off glibc's own adjustment of both
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
