"""int8 with some backbone stages kept in fp32: does any layout pass the precision gate?

``elp predict --precision int8`` quantises the whole backbone (FX post-training quantisation,
calibrated on the project's training frames) and fails the gate on our models (p99 distance to
fp32 above 2 px). This script quantises the backbone with ``precision.quantise_backbone``,
some of its top-level stages left in fp32 (the stem, the last one or two stages), and runs the
same gate as ``elp predict`` on each layout: median and p99 distance to fp32's keypoints,
labeled-frame error, frames/s vs fp32.

    OMP_NUM_THREADS=1 python benchmarks/bench_int8_stages.py --model-dirs resnet18=DIR resnet50=DIR

The gate's p99 on mirror-mouse (90 labeled frames x 17 keypoints, 1,530 distances) is the 16th
largest distance: a handful of keypoints whose heatmap has two near-equal peaks decide it.

With ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2`` the
same CPU runs what an AVX2-only one would (the quantised engine is then FBGEMM's ``x86``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, THREADS, header, markdown_table, write_results

from element_lightning_pose.engine.inference import precision as gate_module
from element_lightning_pose.engine.inference.models import load_model


def layouts(stages: list[str]) -> list[list[str]]:
    """fp32 stages to try: none, the stem, the last, stem + last, the last two, stem + last two."""
    stem, last, two = stages[:1], stages[-1:], stages[-2:]
    return [[], stem, last, stem + last, two, stem + two]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dirs", nargs="+", required=True, metavar="NAME=DIR")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_stages.md")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    rows = []
    for item in args.model_dirs:
        name, _, directory = item.partition("=")
        model = load_model(directory)
        labels = gate_module.labeled_frames_of(model)
        labels = labels.subset(gate_module._spread(len(labels), gate_module.MAX_GATE_FRAMES))
        net = gate_module._networks(model)["net"]
        stages = [child for child, _ in net.backbone.named_children()]
        reference = gate_module.predict_labeled(model, labels, batch_size=16)
        sample = [gate_module.read_image(gate_module.image_file(labels, r)) for r in range(min(16, len(labels)))]
        original = sample[0].shape[:2]
        timed = np.stack([gate_module.resize_frame(frame, model.image_resize) for frame in sample])
        fp32_fps = gate_module._frames_per_s(model, timed, original)
        calibration = gate_module._calibration_frames(model, labels, gate_module._input_size(model, "net"))
        for keep in layouts(stages):
            fast = gate_module.with_int8(
                model, {"net": gate_module.quantise_backbone(net, calibration, keep_fp32=keep)}
            )
            result = gate_module.gate(
                model, fast, "int8", labels, fp32_points=reference, timing=(timed, original, fp32_fps)
            )
            kept = ", ".join(f"{stages.index(s) + 1}/{len(stages)}" for s in keep) or "none"
            rows.append(
                [
                    name,
                    gate_module.int8_engine(),
                    kept,
                    f"{result.median_px:.3f}",
                    f"{result.p99_px:.3f}",
                    f"{result.error_px:.2f} ({result.fp32_error_px:.2f})",
                    f"{result.speedup:.2f}x",
                    "passes" if result.passed else "fails",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    lines = header("int8 with backbone stages kept in fp32, against the precision gate")
    lines += [
        f"Gate as `elp predict`'s: the labeled frames of each model's project (up to "
        f"{gate_module.MAX_GATE_FRAMES}), median <= {gate_module.GATE_MEDIAN_PX} px and p99 <= "
        f"{gate_module.GATE_P99_PX} px from fp32's keypoints, error up by <= 2%. Stages are the "
        "backbone's top-level children (1: the stem; the last: its last residual stage).",
        "",
    ]
    lines += markdown_table(
        [
            "model",
            "int8 engine",
            "stages kept fp32",
            "median px",
            "p99 px",
            "error px (fp32)",
            "frames/s vs fp32",
            "gate",
        ],
        rows,
    )
    print(write_results(args.out, lines))


if __name__ == "__main__":
    main()
