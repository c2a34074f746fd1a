#!/usr/bin/env python
"""Where one training step's time goes on this CPU, and how much a faster step could still take.

``bench_training.py`` found our fp32 epoch equal to the bare forward + backward + Adam step, so
what is left is the step itself. This script takes that step apart, in one process, on the
network and batch of ``bench_training.py`` (resnet18 heatmap network, 256x256, batch 8,
channels-last, fp32, ``OMP_NUM_THREADS`` threads):

1. **the step by operator** (PyTorch's profiler over ``--steps`` steps): convolutions forward and
   backward, batch norm, ReLU, the optimizer, the rest; ms per step and share;
2. **each 3x3 convolution of the four stages, alone**: the forward, the gradient of its input and
   the gradient of its weights, each in GFLOP/s (each does the same arithmetic), and the weights'
   gradient as nine matrix products over shifted views (the other way to compute it, on the
   BLAS that PyTorch ships), so the backward's rate is read against the forward's on this CPU;
3. **the ceiling**: the step if every convolution's backward ran at its forward's rate
   (backward = 2 x forward, the arithmetic's own ratio), the rest unchanged; with ``--lp-ratio R``
   (our epoch / Lightning Pose's, from ``bench_training.py`` on the same CPU) it prints what that
   ceiling would make of R;
4. **eager against ``torch.compile``** (Inductor; needs a C++ compiler), steps alternated in one
   process so that the machine's drift lands on both; compilation time reported apart.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_training_step.py [--steps 6] [--lp-ratio 1.34]
       [--no-compile] [--out benchmarks/results/training_step.md]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import RESULTS, THREADS, header, markdown_table, write_results
from bench_training import bare_network, bare_step
from torch.profiler import ProfilerActivity, profile

BATCH, SIZE, KEYPOINTS = 8, (256, 256), 17
# resnet18's 3x3 convolutions that keep their channels, one per stage (channels, side at 256x256)
STAGES = ((64, 64), (128, 32), (256, 16), (512, 8))
# profiler operator names, grouped
GROUPS = {
    "aten::mkldnn_convolution": "convolution forward",
    "aten::convolution_backward": "convolution backward",
    "aten::native_batch_norm": "batch norm forward",
    "aten::native_batch_norm_backward": "batch norm backward",
    "aten::clamp_min_": "ReLU forward",
    "aten::threshold_backward": "ReLU backward",
    **{
        name: "Adam's update"
        for name in (
            "Optimizer.step#Adam.step",
            "Optimizer.zero_grad#Adam.zero_grad",
            "aten::lerp_",
            "aten::addcdiv_",
            "aten::addcmul_",
            "aten::sqrt",
            "aten::mul_",
            "aten::div",
        )
    },
}


def median_ms(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[repeats // 2] * 1000


def step_by_operator(steps: int) -> tuple[dict[str, float], float]:
    """ms per step of each group of operators, and the whole step's ms, under the profiler."""
    step = bare_step(bare_network("resnet18", KEYPOINTS), BATCH, SIZE, KEYPOINTS)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    groups: dict[str, float] = {}
    total = 0.0
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1000 / steps
        total += ms
        name = GROUPS.get(event.key, "rest")
        groups[name] = groups.get(name, 0.0) + ms
    return groups, total


def weight_gradient_by_shifts(grad_out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """A 3x3, stride-1, padding-1 convolution's weight gradient as nine matrix products.

    Both tensors are laid out in a zero-padded (H+2) x (W+2) grid, flattened to rows of channels;
    the gradient sits at the grid's top left, so tap (kh, kw) pairs row p of the gradient with row
    p + kh (W+2) + kw of the input. Rows that wrap into the padding meet a zero gradient.
    """
    n, c_in, h, w = inputs.shape
    c_out = grad_out.shape[1]
    padded_in = inputs.new_zeros(n, h + 2, w + 2, c_in)
    padded_in[:, 1 : h + 1, 1 : w + 1] = inputs.permute(0, 2, 3, 1)
    padded_grad = grad_out.new_zeros(n, h + 2, w + 2, c_out)
    padded_grad[:, :h, :w] = grad_out.permute(0, 2, 3, 1)
    rows = n * (h + 2) * (w + 2)
    flat_in, flat_grad = padded_in.view(rows, c_in), padded_grad.view(rows, c_out)
    taps = inputs.new_empty(3, 3, c_out, c_in)
    for kh in range(3):
        for kw in range(3):
            shift = kh * (w + 2) + kw
            torch.mm(flat_grad[: rows - shift].t(), flat_in[shift:], out=taps[kh, kw])
    return taps.permute(2, 3, 0, 1)


def stage_rates(channels: int, side: int, generator: torch.Generator) -> dict[str, float]:
    """ms of one 3x3 convolution's forward and gradients at ``channels`` x ``side`` x ``side``."""

    def tensor(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(memory_format=torch.channels_last)

    x, weight = tensor(BATCH, channels, side, side), tensor(channels, channels, 3, 3)
    grad = tensor(BATCH, channels, side, side)

    def backward(mask: list[bool]) -> Callable[[], object]:
        return lambda: torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
        )

    reference = backward([False, True, False])()[1]
    error = (weight_gradient_by_shifts(grad, x) - reference).abs().max() / reference.abs().max()
    assert error < 1e-4, f"weight gradient by shifts differs from PyTorch's by {error:.1e}"
    return {
        "channels": channels,
        "side": side,
        "gflop": 2 * BATCH * channels * channels * 9 * side * side / 1e9,
        "forward": median_ms(lambda: F.conv2d(x, weight, padding=1)),
        "grad_input": median_ms(backward([True, False, False])),
        "grad_weight": median_ms(backward([False, True, False])),
        "both": median_ms(backward([True, True, False])),
        "shifts": median_ms(lambda: weight_gradient_by_shifts(grad, x)),
    }


def eager_against_compiled(steps: int) -> dict[str, object]:
    base = bare_network("resnet18", KEYPOINTS)
    eager_net, compiled_net = copy.deepcopy(base), copy.deepcopy(base)
    eager = bare_step(eager_net, BATCH, SIZE, KEYPOINTS)
    compiled = bare_step(compiled_net, BATCH, SIZE, KEYPOINTS, forward=torch.compile(compiled_net))
    # a cache of its own, so that the compilation time is a first run's
    with tempfile.TemporaryDirectory(prefix="elp-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        started = time.perf_counter()
        compiled()
        compile_s = time.perf_counter() - started
        eager()
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for round_ in range(steps):
            # alternate which goes first, so that neither always follows the other
            order = [("eager", eager), ("compiled", compiled)]
            for name, step in order if round_ % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - started)
    return {"compile_s": compile_s, **{name: sorted(t)[len(t) // 2] for name, t in times.items()}, "times": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="steps profiled, and alternated rounds of eager/compiled")
    parser.add_argument("--lp-ratio", type=float, help="Lightning Pose's epoch / ours, from bench_training.py here")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--out", type=Path, default=RESULTS / "training_step.md")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)

    groups, step_ms = step_by_operator(args.steps)
    print(f"step {step_ms:.0f} ms under the profiler: {groups}", flush=True)
    generator = torch.Generator().manual_seed(0)
    rates = [stage_rates(channels, side, generator) for channels, side in STAGES]
    for row in rates:
        print(row, flush=True)
    conv_forward = groups.get("convolution forward", 0.0)
    conv_backward = groups.get("convolution backward", 0.0)
    ceiling_ms = step_ms - conv_backward + 2 * conv_forward
    lines = [
        *header("Where a training step's time goes (resnet18, fp32)"),
        f"Network and batch of `bench_training.py`: resnet18 heatmap network, {SIZE[0]}x{SIZE[1]}, batch {BATCH}, "
        f"channels-last, fp32, Adam, {THREADS} thread(s).",
        "",
        f"## The step by operator (profiler, {args.steps} steps)",
        "",
        *markdown_table(
            ("operators", "ms / step", "share"),
            [
                (name, f"{ms:.0f}", f"{ms / step_ms:.0%}")
                for name, ms in sorted(groups.items(), key=lambda item: -item[1])
            ]
            + [("**step**", f"**{step_ms:.0f}**", "100%")],
        ),
        "",
        "## Each stage's 3x3 convolution alone (same arithmetic in each column)",
        "",
        *markdown_table(
            (
                "channels x side",
                "GFLOP",
                "forward ms (GFLOP/s)",
                "input gradient ms (GFLOP/s)",
                "weight gradient ms (GFLOP/s)",
                "both gradients ms, / forward",
                "weight gradient as 9 matrix products ms (GFLOP/s)",
            ),
            [
                (
                    f"{r['channels']} x {r['side']}",
                    f"{r['gflop']:.2f}",
                    f"{r['forward']:.1f} ({r['gflop'] / r['forward'] * 1000:.0f})",
                    f"{r['grad_input']:.1f} ({r['gflop'] / r['grad_input'] * 1000:.0f})",
                    f"{r['grad_weight']:.1f} ({r['gflop'] / r['grad_weight'] * 1000:.0f})",
                    f"{r['both']:.1f}, {r['both'] / r['forward']:.2f}x",
                    f"{r['shifts']:.1f} ({r['gflop'] / r['shifts'] * 1000:.0f})",
                )
                for r in rates
            ],
        ),
        "",
        "## The ceiling",
        "",
        f"Convolutions' backward at their forward's rate (2 x {conv_forward:.0f} ms instead of {conv_backward:.0f} ms), "
        f"the rest unchanged: **{ceiling_ms:.0f} ms** per step against {step_ms:.0f} ms, "
        f"**{step_ms / ceiling_ms:.2f}x** faster.",
    ]
    if args.lp_ratio:
        lines.append(
            f"With our epoch {args.lp_ratio:.2f}x Lightning Pose's (`bench_training.py`, this CPU) and our epoch "
            f"equal to the bare step, that ceiling would reach **{args.lp_ratio * step_ms / ceiling_ms:.2f}x**."
        )
    if args.no_compile:
        lines += ["", "`torch.compile`: not run (--no-compile)."]
    elif shutil.which("c++") is None and shutil.which("g++") is None:
        lines += ["", "`torch.compile`: not run (no C++ compiler on this machine; Inductor needs one)."]
    else:
        result = eager_against_compiled(args.steps)
        print({k: v for k, v in result.items() if k != "times"}, flush=True)
        times = result["times"]
        assert isinstance(times, dict)
        lines += [
            "",
            f"## Eager against `torch.compile` (Inductor), {args.steps} rounds alternated in one process",
            "",
            *markdown_table(
                ("step", "median s", "each step s"),
                [
                    (name, f"{result[name]:.3f}", ", ".join(f"{t:.2f}" for t in times[name]))
                    for name in ("eager", "compiled")
                ],
            ),
            "",
            f"Compiled / eager: **{result['eager'] / result['compiled']:.2f}x** faster "  # type: ignore[operator]
            f"(first compiled step, compilation included: {result['compile_s']:.0f} s).",
        ]
    print(write_results(args.out, lines))


if __name__ == "__main__":
    main()
