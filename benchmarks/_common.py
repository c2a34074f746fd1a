"""What every benchmark repeats: the machine it ran on, its command, and how its results are written.

A results file starts with :func:`header`: the title, the exact command (with the thread
variables it ran under) and :func:`machine_line` (the CPU's model name and the instruction sets
that decide CPU speed here, cores, torch and its threads, load). Timings from different CPUs
are not comparable, so a table that does not name its CPU model cannot be quoted.

Scripts run as ``python benchmarks/bench_x.py`` from the repository root: Python puts this
folder on ``sys.path``, so ``from _common import header`` needs no path edits.

``python benchmarks/_common.py`` prints the header this machine would get.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from element_lightning_pose.engine.atomic import write_text_atomic
from element_lightning_pose.engine.hardware import cpu_flags as hardware_flags
from element_lightning_pose.engine.hardware import cpu_model

__all__ = [
    "THREADS",
    "thread_env",
    "cpu_model",
    "cpu_flags",
    "machine_line",
    "command_line",
    "header",
    "markdown_table",
    "write_results",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

# the variables that set how many threads numpy, torch and OpenMP use: part of the command
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Caps on the instruction sets the kernel libraries use (oneDNN's convolutions, PyTorch's own
# kernels, MKL's BLAS): set together, they make this CPU run what an AVX2-only CPU would.
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
# threads of every process a benchmark compares (ours and the peers'): OMP_NUM_THREADS where set, so that
# a run shares a busy machine on fair terms; 2 (this machine's cores) otherwise
THREADS = int(os.environ.get("OMP_NUM_THREADS") or 2)


def thread_env() -> dict[str, str]:
    """The environment of a child process that runs at :data:`THREADS` threads."""
    return {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}


# what decides CPU inference and training speed here: AVX2 / AVX-512 kernels, bf16 and AMX tiles
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def cpu_flags() -> str:
    """Which of :data:`CPU_FLAGS` the CPU has, e.g. "avx2, no avx512f, ..."."""
    present = hardware_flags()
    if not present:
        return "instruction sets unknown"
    return ", ".join(flag if flag in present else f"no {flag}" for flag in CPU_FLAGS)


def machine_line() -> str:
    """One line naming the machine: CPU model and flags, cores, torch and its threads, load, time."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = f"{os.cpu_count()} cores" + (f" ({usable} usable)" if usable != os.cpu_count() else "")
    torch = sys.modules.get("torch")  # reported only where the benchmark uses it: never imported here
    torch_part = f"torch {torch.__version__}, {torch.get_num_threads()} threads" if torch else "torch not imported"
    threads = ", ".join(_settings(THREAD_VARIABLES))
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    capped = ", ".join(_settings(ISA_VARIABLES))
    return (
        f"Machine: {cpu_model()} ({cpu_flags()}), {cores}; {torch_part}; numpy {np.__version__}; "
        f"Python {platform.python_version()}; {threads or 'no thread variables set'}; "
        + (f"**instruction sets capped: {capped}**; " if capped else "")
        + f"load average {load}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
    )


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran this script, as it can be typed again from the repository root.

    ``argv`` (without the program name) is for a ``main(argv)`` called from Python; by default
    the process's own arguments. The thread and instruction-set variables set in the
    environment lead the line.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    script = f"benchmarks/{Path(sys.argv[0]).name}"
    return " ".join([*_settings((*THREAD_VARIABLES, *ISA_VARIABLES)), "python", script, *map(shlex.quote, arguments)])


def _settings(names: Sequence[str]) -> list[str]:
    """``NAME=value`` of each of ``names`` set in the environment."""
    return [f"{name}={os.environ[name]}" for name in names if name in os.environ]


def header(title: str, command: str | None = None) -> list[str]:
    """The opening lines of a results file: title, command (default: :func:`command_line`), machine."""
    return [f"# {title}", "", f"Command: `{command or command_line()}`", "", machine_line(), ""]


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A markdown table: the header, the separator, one line per row (cells already formatted)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def write_results(path: Path, lines: Sequence[str] | str) -> str:
    """Write a results file atomically (its folder created) and return its text."""
    text = lines if isinstance(lines, str) else "\n".join(lines) + "\n"
    write_text_atomic(path, text)
    return text


if __name__ == "__main__":
    print("\n".join(header("Benchmark header on this machine")))
