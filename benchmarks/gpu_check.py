#!/usr/bin/env python
"""The GPU path, proven: train, predict, and compare with the CPU, in one short run.

On a CUDA machine (``--device cuda``, the default where one is present), on mirror-mouse:

1. trains the supervised, semi-supervised (temporal loss on the project's video) and context
   models for ``--steps`` steps each, and the supervised one again under bf16 autocast
   (``training.precision: bf16``);
2. predicts the video with the supervised model on the GPU, then the first ``--compare-frames``
   frames with the same checkpoint on the CPU: keypoints must agree within 0.5 px median;
3. checks that the bf16 run reaches fp32's validation pixel error within 5%;
4. prints training frames/s (``metrics.csv``) and inference frames/s (fp32, and bf16 through
   the accuracy gate of ``elp predict --precision``), and writes the table (``--out``).

``--device cpu --tiny`` runs the same steps end to end on a small synthetic project in well
under a minute: CI runs it that way (tests/benchmarks/test_gpu_check.py), so the script is
known to work before a GPU is at hand. A check that misses prints MISSED; ``--strict`` makes
the exit status 1 then.

On the device machine (Python 3.12, PyTorch, Lightning, OpenCV, pandas, SciPy there; no
network), carry the wheels ``scripts/gpu_wheels.sh`` downloads and the data, from the
repository root:

    bash scripts/gpu_wheels.sh            # .whl/ (20 MB) and .gpu_data/ (7 MB), both git-ignored
    # device run, carry [".whl", ".gpu_data"]; only what is written under $OUT comes back:
    set -o pipefail; python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
      PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py \\
        --project .gpu_data/mirror-mouse-example --strict --out $OUT/gpu.md 2>&1 | tee $OUT/log

Rehearsed on this kind of CPU machine with the device's versions (Python 3.12, torch 2.11.0,
torchvision 0.26.0, pytorch-lightning 2.6.6, numpy 2.5.2, tensorboard; pydantic and the weights
from the wheels): the command above with ``--device cpu`` ran to the end with every check met,
``--tiny`` in 43 s, mirror-mouse at ``--steps 20`` in 11 minutes on 2 cores.

``litpose`` on the same GPU needs its recipe's PyPI installs, which the device machine cannot
reach: the table says so rather than timing it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import REPO, RESULTS, header, markdown_table, write_results

from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.precision import select_precision
from element_lightning_pose.engine.inference.predict import predict_video
from element_lightning_pose.engine.training import train

MEDIAN_PX = 0.5  # GPU vs CPU keypoints from one checkpoint
BF16_RISE = 0.05  # bf16 training's validation pixel error vs fp32's


def default_project() -> Path:
    for candidate in (
        os.environ.get("LP_EXAMPLE_DATA"),
        REPO / ".gpu_data" / "mirror-mouse-example",
        REPO.parent / "shared" / "data" / "mirror-mouse-example",
    ):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise SystemExit("gpu_check: no mirror-mouse-example found; give --project DIR (or --tiny)")


def tiny_project(folder: Path) -> Path:
    from element_lightning_pose.synthetic.projects import make_synthetic_project

    return make_synthetic_project(folder, image_size=(64, 96), n_labeled=16, n_video_frames=48).root


def configs(args) -> dict[str, dict]:
    """The runs: supervised, semi-supervised (temporal), context, and supervised under bf16."""
    size = [64, 64] if args.tiny else [256, 256]
    base = {
        "data": {"image_resize": size},
        "model": {"backbone": args.backbone, "pretrained": False},
        "training": {
            "max_steps": args.steps,
            "max_epochs": 10_000,
            "unfreeze_epoch": 0,
            "batch_size": 4 if args.tiny else 8,
            "num_workers": 0 if args.tiny else 4,
            "accelerator": "gpu" if args.device == "cuda" else "cpu",
            "devices": 1,
            "check_val_every_n_epoch": 1000,  # validated once, at the end (engine: no epoch validated)
            "seed": 0,
        },
    }

    def variant(**changes) -> dict:
        out = {k: dict(v) for k, v in base.items()}
        for section, values in changes.items():
            out.setdefault(section, {}).update(values)
        return out

    return {
        "supervised": variant(training={"precision": "fp32"}),
        "semi-supervised": variant(losses={"unsupervised": ["temporal"], "max_cached_frames": 256}),
        "context": variant(model={"model_type": "context"}),
        "supervised bf16": variant(training={"precision": "bf16"}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--project", type=Path, help="labeled project (default: mirror-mouse-example)")
    parser.add_argument("--tiny", action="store_true", help="a small synthetic project and 64x64 input (CI)")
    parser.add_argument("--steps", type=int, help="training steps of each run (default 300; --tiny 3)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--compare-frames", type=int, default=128, help="video frames predicted on the CPU too")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.md")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a check misses")
    args = parser.parse_args(argv)
    args.steps = args.steps or (3 if args.tiny else 300)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but torch sees no CUDA device")
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        project = tiny_project(tmp / "project") if args.tiny else (args.project or default_project())
        _, videos = load_project(project)
        video = videos[0]
        runs, train_rows = {}, []
        for name, config in configs(args).items():
            started = time.perf_counter()
            result = train(config, project, tmp / name.replace(" ", "_"), progress=False)
            history = result.history
            validated = history.dropna(subset=["val_pixel_error"]) if "val_pixel_error" in history else history[:0]
            runs[name] = {
                "model_dir": result.model_dir,
                "val_px": float(validated["val_pixel_error"].iloc[-1]) if len(validated) else float("nan"),
            }
            fps = history["train_frames_per_s"].to_numpy()
            steady = fps[1:] if len(fps) > 1 else fps  # epoch 0 holds the start-up
            train_rows.append(
                (
                    name,
                    f"{time.perf_counter() - started:.1f}",
                    f"{np.nanmedian(steady):.1f}",
                    f"{runs[name]['val_px']:.3f}",
                )
            )
            print(f"trained {name}: {train_rows[-1]}", flush=True)

        model_dir = runs["supervised"]["model_dir"]
        device_model = load_model(model_dir, device=args.device)
        on_device = predict_video(device_model, video, batch_size=16, progress=False)
        stop = min(args.compare_frames, on_device.n_frames)
        on_cpu = predict_video(load_model(model_dir, device="cpu"), video, batch_size=16, stop=stop, progress=False)
        distance = np.linalg.norm(on_device.predictions[:stop, :, :2] - on_cpu.predictions[..., :2], axis=-1)
        median_px = float(np.nanmedian(distance))
        infer_rows = [("fp32", f"{on_device.frames_per_s:.1f}", "")]
        fast, choice = select_precision(device_model, "bf16", project=project)
        if choice.used == "bf16":
            bf16 = predict_video(fast, video, batch_size=16, progress=False)
            infer_rows.append(("bf16 (gate passed)", f"{bf16.frames_per_s:.1f}", choice.message))
        else:
            infer_rows.append(("bf16", "not used", choice.message))

    ratio = runs["supervised bf16"]["val_px"] / runs["supervised"]["val_px"]
    checks = [
        (
            f"{args.device} vs CPU keypoints, same checkpoint, {stop} frames",
            f"median {median_px:.4f} px",
            median_px <= MEDIAN_PX,
        ),
        ("bf16 training: validation pixel error vs fp32's", f"{ratio:.3f}x", ratio <= 1 + BF16_RISE),
    ]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU only"
    lines = [
        *header(f"GPU check ({args.device})"),
        f"Device: {device_name}; torch {torch.__version__}, CUDA {torch.version.cuda}. Project: "
        f"{'synthetic (--tiny)' if args.tiny else project.name}; {args.backbone}, {args.steps} training steps per run; "
        f"whole check {time.perf_counter() - started_all:.0f} s.",
        "",
        *markdown_table(("training run", "wall s", "training frames/s (median epoch)", "val pixel error"), train_rows),
        "",
        *markdown_table(("inference", "frames/s (video, end to end)", "note"), infer_rows),
        "",
        *markdown_table(
            ("check", "measured", "result"), [(what, value, "met" if ok else "MISSED") for what, value, ok in checks]
        ),
        "",
        "`litpose` on the same device: not run (its recipe installs from PyPI, which the device machine cannot reach).",
    ]
    text = write_results(args.out, lines)
    print(text)
    return 1 if args.strict and not all(ok for *_, ok in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
