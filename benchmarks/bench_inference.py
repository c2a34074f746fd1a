#!/usr/bin/env python
"""Video inference benchmark: end-to-end streaming prediction vs the bare network forward.

For each backbone (random weights: speed does not depend on their values), side by side in
one run, on the same frames:

* ``end_to_end``: ``predict_video`` = decode + resize (background thread) + network +
  heatmap->keypoint step + CSV write, on the mirror-mouse video (994 frames, 406x396);
* ``bare forward``: the network's forward alone on pre-decoded, pre-resized uint8 tensors of
  the same frames, same batch size -- the compute ceiling;
* the keypoint step alone (soft-argmax on the heatmaps of one batch), per frame;
* channels_last vs the default memory format for the bare forward.

* ``elp predict`` vs Lightning Pose 2.4.3's ``litpose predict`` (``--lp-models``, models
  trained by the peer recipe ../shared/peers/lightning_pose/run_baseline.sh; ours: a model
  dir with the same backbone and resize): whole command-line runs on the full video, process
  start to CSV written, wall time and peak RSS from ``/usr/bin/time``.

Peak memory (ru_maxrss) is measured in fresh subprocesses: resnet50 end-to-end on the video,
and a tiny model on synthetic videos of 2,000 and 20,000 frames (memory must not grow with
the video's length).

Usage: python benchmarks/bench_inference.py [--video PATH] [--frames N] [--out results/inference.md]
       [--lp-venv /tmp/peers/venv --lp-models resnet18=/tmp/peers/runs/r18_e10 resnet50=/tmp/peers/runs/r50_e2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import REPO, RESULTS, THREADS, header, markdown_table, thread_env, write_results

from element_lightning_pose.engine.config import TrainConfig
from element_lightning_pose.engine.data.video import iter_batches, video_info, write_video
from element_lightning_pose.engine.inference.models import PoseModel, fuse_batchnorm
from element_lightning_pose.engine.inference.predict import predict_video
from element_lightning_pose.engine.networks import HeatmapNet, soft_argmax, spatial_softmax

DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "mirror-mouse-example" / "videos" / "test_vid.mp4"
SIZE = (256, 256)
N_KEYPOINTS = 17


def make_model(backbone: str, size=SIZE, n_keypoints: int = N_KEYPOINTS, channels_last: bool = True) -> PoseModel:
    torch.manual_seed(0)
    net = fuse_batchnorm(HeatmapNet(backbone, n_keypoints, pretrained=False).eval())  # as load_model does
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    config = TrainConfig.from_dict(
        {"data": {"image_resize": list(size)}, "model": {"backbone": backbone, "pretrained": False}}
    )
    return PoseModel(
        net,
        [f"kp{i}" for i in range(n_keypoints)],
        tuple(size),
        config,
        torch.device("cpu"),
        channels_last=channels_last,
    )


def at_precision(model: PoseModel, precision: str, frames: torch.Tensor) -> PoseModel:
    """``model`` with its backbone in ``precision`` (int8 calibrated on the first 64 of ``frames``)."""
    from element_lightning_pose.engine.inference.precision import (
        OPENVINO_PATHS,
        quantise_backbone,
        with_bf16,
        with_int8,
        with_openvino,
    )

    if precision == "bf16":
        return with_bf16(model)
    if precision in OPENVINO_PATHS:
        return with_openvino(model, precision)
    if precision == "int8":
        return with_int8(
            model, {"net": quantise_backbone(model.net, frames[:64].contiguous(memory_format=torch.channels_last))}
        )
    return model


def decoded_frames(video: Path, n_frames: int | None, size=SIZE) -> torch.Tensor:
    chunks = [frames for _, frames in iter_batches(video, 64, size=size, stop=n_frames)]
    return torch.from_numpy(np.concatenate(chunks)).permute(0, 3, 1, 2)  # NHWC memory = channels_last


@torch.inference_mode()
def bare_forward_fps(net: torch.nn.Module, frames: torch.Tensor, batch_size: int, channels_last: bool) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batches = [frames[i : i + batch_size].contiguous(memory_format=fmt) for i in range(0, len(frames), batch_size)]
    net(batches[0])  # warm-up
    started = time.perf_counter()
    for batch in batches:
        net(batch)
    return len(frames) / (time.perf_counter() - started)


@torch.inference_mode()
def keypoint_ms_per_frame(net: HeatmapNet, frames: torch.Tensor, batch_size: int, repeats: int = 20) -> float:
    logits = net(frames[:batch_size])
    soft_argmax(spatial_softmax(logits))
    started = time.perf_counter()
    for _ in range(repeats):
        soft_argmax(spatial_softmax(logits))
    return (time.perf_counter() - started) / (repeats * batch_size) * 1000


def end_to_end_fps(model: PoseModel, video: Path, batch_size: int, n_frames: int | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        predict_video(model, video, batch_size=batch_size, stop=min(16, n_frames or 16), progress=False)  # warm-up
        started = time.perf_counter()
        predictions = predict_video(
            model, video, batch_size=batch_size, stop=n_frames, out_csv=Path(tmp) / "p.csv", progress=False
        ).predictions
        return len(predictions) / (time.perf_counter() - started)


# --------------------------------------------------------------------------- peak RSS (subprocess)


def child_rss(backbone: str, size: tuple[int, int], video: Path, batch_size: int, stop: int | None) -> None:
    """Run in a fresh process: predict the video (frames :stop), print peak RSS (MiB) and frames."""
    torch.set_num_threads(THREADS)
    model = make_model(backbone, size)
    with tempfile.TemporaryDirectory() as tmp:
        predictions = predict_video(
            model, video, batch_size=batch_size, stop=stop, out_csv=Path(tmp) / "p.csv", progress=False
        ).predictions
    print(json.dumps({"peak_rss_mib": peak_rss_mib(), "frames": len(predictions)}))


def peak_rss_mib() -> float:
    """This process's peak resident memory.

    Linux's ``ru_maxrss`` survives ``exec`` (a child started by a big parent reports at least
    the parent's peak), so read the per-address-space high-water mark ``VmHWM`` instead.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        check=True,
        capture_output=True,
        text=True,
        env=thread_env(),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def synthetic_video(path: Path, n_frames: int, size=(64, 64)) -> Path:
    """A moving bright square on noise, written frame by frame (never held whole)."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 80, (*size, 3), dtype=np.uint8)

    def frames():
        for t in range(n_frames):
            frame = background.copy()
            x = int(20 + 40 * (1 + np.sin(t / 15)))
            frame[25:32, x // 2 : x // 2 + 7] = 255
            yield frame

    return write_video(path, frames(), fps=30.0)


# --------------------------------------------------------------------------- command lines, side by side


def timed_command(command: list[str], cwd: Path, threads: int = THREADS) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command run under ``/usr/bin/time`` at ``threads`` threads."""
    stats = cwd / "time.txt"
    env = {**thread_env(), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(stats), *command],
        check=True,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    return wall, int(stats.read_text().split()[-1]) / 1024


def our_model_dir(backbone: str, out: Path) -> Path:
    """A real model directory (one training step, random init) to run ``elp predict`` on."""
    from element_lightning_pose.engine.training import train

    project = DEFAULT_VIDEO.parents[1]
    config = {
        "data": {"image_resize": list(SIZE)},
        "model": {"backbone": backbone, "pretrained": False},
        "training": {"max_steps": 1, "num_workers": 0, "unfreeze_epoch": 0},
    }
    return train(config, project, out / f"ours_{backbone}", progress=False).model_dir


def elp_predict(
    model_dir: Path, videos: list[Path], out: Path, batch_size: int, precision: str, cwd: Path, threads: int = THREADS
):
    """Wall seconds and peak RSS of one ``elp predict`` process."""
    elp = Path(sys.executable).parent / "elp"
    command = [str(elp), "predict", str(model_dir), *map(str, videos), "-o", str(out)]
    command += ["--batch-size", str(batch_size), "--no-progress", "--precision", precision]
    return timed_command(command, cwd, threads)


def gate_numbers(model_dir: Path, precisions: list[str], project: Path) -> dict:
    """Run the accuracy gate once (kept in the model directory, as ``elp predict`` would) and return it."""
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.precision import select_precision

    gates = {}
    for precision in precisions:
        _, choice = select_precision(load_model(model_dir, device="cpu"), precision, project=project)
        gates.update(choice.gates)
        print(f"gate {model_dir.name} {precision}: {choice.message}", flush=True)
    return gates


def main() -> None:
    from element_lightning_pose.engine.inference.precision import PRECISIONS, unavailable_reason

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=None, help="limit the frames timed (default: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--backbones", nargs="*", default=["resnet18", "resnet50"], help="of the in-process table (none: skip it)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "inference.md")
    parser.add_argument("--rss-frames", type=int, default=None, help="frames of the resnet50 RSS run (default: all)")
    parser.add_argument("--skip-rss", action="store_true", help="leave out the peak-memory runs")
    parser.add_argument(
        "--repeats", type=int, default=2, help="alternations of end-to-end and bare forward (best kept)"
    )
    parser.add_argument("--lp-venv", type=Path, default=Path("/tmp/peers/venv"))
    parser.add_argument(
        "--lp-models",
        nargs="*",
        default=[],
        metavar="BACKBONE=MODEL_DIR",
        help="Lightning Pose model dirs to time `litpose predict` with, side by side",
    )
    parser.add_argument(
        "--model-dirs",
        nargs="*",
        default=[],
        metavar="BACKBONE=MODEL_DIR",
        help="our trained models (the accuracy gate's numbers need trained weights; default: one training step)",
    )
    parser.add_argument(
        "--cli-precisions", nargs="+", help="precisions of the `elp predict` runs (default: each available and auto)"
    )
    parser.add_argument(
        "--cli-repeats",
        type=lambda text: max(1, int(text)),
        default=1,
        help="rounds of the command-line runs, taken in turn (median kept; at least 1)",
    )
    parser.add_argument("--cli-backbones", nargs="*", help="backbones of the command-line runs (default: --backbones)")
    parser.add_argument("--multi-videos", type=int, default=8, help="videos of the one-call vs N-calls run (0: skip)")
    parser.add_argument("--multi-frames", type=int, default=2000, help="frames of each of those videos")
    parser.add_argument("--multi-backbone", default="resnet18")
    parser.add_argument(
        "--multi-threads", type=int, default=THREADS, help="threads of each `elp predict` of that run (both sides)"
    )
    parser.add_argument(
        "--child", nargs=5, metavar=("BACKBONE", "SIZE", "VIDEO", "BATCH", "STOP"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        backbone, size, video, batch, stop = args.child
        child_rss(backbone, (int(size), int(size)), Path(video), int(batch), int(stop) or None)
        return

    t0 = time.perf_counter()
    torch.set_num_threads(THREADS)
    cpu = torch.device("cpu")
    precisions = ["fp32"] + [p for p in PRECISIONS if p != "fp32" and unavailable_reason(p, cpu) is None]
    info = video_info(args.video)
    n = min(args.frames or info.n_frames, info.n_frames)
    frames = decoded_frames(args.video, n)
    rows = []
    for backbone in args.backbones:
        fp32 = make_model(backbone)
        for precision in precisions:
            model = at_precision(fp32, precision, frames)
            # alternate the two measurements and keep the best of each: the load from other jobs
            # on this shared machine changes within minutes
            bare = e2e = 0.0
            for _ in range(args.repeats):
                bare = max(bare, bare_forward_fps(model.net, frames, args.batch_size, channels_last=True))
                e2e = max(e2e, end_to_end_fps(model, args.video, args.batch_size, n))
            rows.append((backbone, precision, e2e, bare))
            print(f"{backbone} {precision}: end-to-end {e2e:.1f} fps, bare forward {bare:.1f} fps", flush=True)
        kp_ms = keypoint_ms_per_frame(fp32.net, frames, args.batch_size)
        print(f"{backbone}: keypoint step {kp_ms:.3f} ms/frame", flush=True)

    project = DEFAULT_VIDEO.parents[1]
    model_dirs = {k: Path(v) for k, v in (item.split("=", 1) for item in args.model_dirs)}
    lp_models = {k: Path(v) for k, v in (item.split("=", 1) for item in args.lp_models)}
    gates: dict[str, dict] = {}
    cli_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for backbone in args.cli_backbones or args.backbones:
            model_dir = model_dirs.get(backbone) or our_model_dir(backbone, tmp)
            # the gate runs once per model and is kept in its directory: the command lines below reuse it
            gates[backbone] = gate_numbers(model_dir, [p for p in precisions if p != "fp32"], project)
            # rounds of every command in turn: the load from other jobs on this shared machine
            # changes within minutes, so each round compares commands run minutes apart at most
            names = [*(args.cli_precisions or [*precisions, "auto"])] + (["litpose"] if backbone in lp_models else [])
            timings: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
            for round_ in range(args.cli_repeats):
                # each round starts one command later: no command always runs first, or after litpose
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    if name == "litpose":
                        run = timed_command(
                            [
                                str(args.lp_venv / "bin" / "litpose"),
                                "predict",
                                str(lp_models[backbone]),
                                str(args.video),
                                "--skip_viz",
                                "--overwrite",
                            ],
                            tmp,
                        )
                    else:
                        run = elp_predict(model_dir, [args.video], tmp / f"preds_{name}", args.batch_size, name, tmp)
                    timings[name].append(run)
                    print(f"{backbone} {name} (round {round_ + 1}): {run[0]:.1f} s", flush=True)
            cli_rows.append((backbone, model_dir in model_dirs.values(), timings))

        multi = None
        if args.multi_videos:
            multi = multi_video_run(
                args, tmp, model_dirs.get(args.multi_backbone) or our_model_dir(args.multi_backbone, tmp / "multi")
            )

    rss50 = rss_short = rss_long = None
    if not args.skip_rss:
        rss50 = run_child("resnet50", "256", str(args.video), str(args.batch_size), str(args.rss_frames or 0))
        print("resnet50 RSS", rss50, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            # the smallest network input keeps this part quick: it measures memory, not speed
            short = synthetic_video(Path(tmp) / "short.mp4", 2_000)
            rss_short = run_child("resnet18", "32", str(short), "64", "0")
            short.unlink()
            long = synthetic_video(Path(tmp) / "long.mp4", 20_000)
            rss_long = run_child("resnet18", "32", str(long), "64", "0")
        print("synthetic RSS", rss_short, rss_long, flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
    write_report(args, info, n, precisions, rows, gates, cli_rows, multi, (rss50, rss_short, rss_long))


def multi_video_run(args, tmp: Path, model_dir: Path) -> dict:
    """One ``elp predict`` over N videos vs N sequential calls, same model, ``--precision auto``."""
    from element_lightning_pose.engine.data.video import iter_frames

    source = list(iter_frames(args.video))
    frames = (source[i % len(source)] for i in range(args.multi_frames))
    first = write_video(tmp / "day" / "video0.mp4", frames, fps=30.0)
    videos = [first]
    for i in range(1, args.multi_videos):
        copy = first.with_name(f"video{i}.mp4")
        copy.write_bytes(first.read_bytes())
        videos.append(copy)
    elp_predict(
        model_dir, videos[:1], tmp / "warm", args.batch_size, "auto", tmp, args.multi_threads
    )  # the gate, once, before timing
    one_s, one_mib = elp_predict(model_dir, videos, tmp / "together", args.batch_size, "auto", tmp, args.multi_threads)
    print(f"multi: one call {one_s:.1f} s, {one_mib:.0f} MiB", flush=True)
    each = [
        elp_predict(model_dir, [video], tmp / "alone", args.batch_size, "auto", tmp, args.multi_threads)
        for video in videos
    ]
    many_s, many_mib = sum(s for s, _ in each), max(m for _, m in each)
    print(f"multi: {len(videos)} calls {many_s:.1f} s", flush=True)
    identical = all(
        (tmp / "together" / f"{v.stem}.csv").read_bytes() == (tmp / "alone" / f"{v.stem}.csv").read_bytes()
        for v in videos
    )
    return {
        "n": len(videos),
        "frames": args.multi_frames,
        "one": (one_s, one_mib),
        "many": (many_s, many_mib),
        "identical": identical,
        "backbone": args.multi_backbone,
        "threads": args.multi_threads,
    }


def write_report(args, info, n, precisions, rows, gates, cli_rows, multi, rss) -> None:
    from element_lightning_pose.engine.inference.precision import GATE_ERROR_RISE, GATE_MEDIAN_PX, GATE_P99_PX

    fp32_bare = {b: bare for b, p, _, bare in rows if p == "fp32"}
    lines = [*header("Video inference benchmark")]
    if rows:
        lines += [
            f"Video: `{args.video.name}`, {n} frames of {info.height}x{info.width}, network input {SIZE[0]}x{SIZE[1]}, "
            f"{N_KEYPOINTS} keypoints, batch {args.batch_size}, random weights (speed does not depend on them), "
            "BatchNorm folded into the convolutions as `load_model` does, channels-last. bf16: the backbone under "
            "autocast; int8: the backbone quantised (PyTorch FX, oneDNN kernels where the CPU has 8-bit dot products), "
            "calibrated on 64 frames; ov-fp32 / ov-bf16: the backbone compiled by OpenVINO at that inference "
            "precision; heads and the keypoint step PyTorch's fp32 in all. End-to-end and bare forward alternate "
            f"{args.repeats} time(s); best of each.",
            "",
            *markdown_table(
                (
                    "backbone",
                    "precision",
                    "end-to-end fps (decode+resize+net+keypoints+CSV)",
                    "bare forward fps",
                    "bare / fp32 bare",
                    "end-to-end / bare",
                ),
                [
                    (b, p, f"{e2e:.1f}", f"{bare:.1f}", f"{bare / fp32_bare[b]:.2f}x", f"{100 * e2e / bare:.0f}%")
                    for b, p, e2e, bare in rows
                ],
            ),
        ]
    if cli_rows:
        lines += [
            f"Accuracy gate (`elp predict --precision`): on the model's labeled frames, keypoints within {GATE_MEDIAN_PX} px "
            f"median and {GATE_P99_PX} px p99 of fp32, labeled-frame error up by at most {GATE_ERROR_RISE:.0%}. "
            "Distances and errors in original-frame pixels; frames/s of the network on 16 resized labeled frames.",
            "",
        ]
        gate_rows = []
        for backbone, trained, _ in cli_rows:
            for precision, g in gates[backbone].items():
                gate_rows.append(
                    (
                        backbone + ("" if trained else " (1 training step: untrained)"),
                        precision,
                        g.frames,
                        f"{g.median_px:.3f}",
                        f"{g.p99_px:.3f}",
                        f"{g.fp32_error_px:.3f}",
                        f"{g.error_px:.3f} ({100 * (g.error_px / g.fp32_error_px - 1):+.2f}%)",
                        f"{g.speedup:.2f}x",
                        "**pass**" if g.passed else "fail: " + "; ".join(g.failures()),
                    )
                )
        lines += markdown_table(
            (
                "model",
                "precision",
                "labeled frames",
                "median px to fp32",
                "p99 px to fp32",
                "fp32 error px",
                "error px",
                "frames/s vs fp32",
                "gate",
            ),
            gate_rows,
        )
        lines += [
            "",
            f"Command lines side by side on the whole video ({info.n_frames} frames; process start to CSV written, model "
            "loading and imports included; `/usr/bin/time`): `elp predict MODEL_DIR VIDEO -o DIR --precision P` (the "
            "gate already run and kept in the model directory, as on every run after the first) vs Lightning Pose "
            "2.4.3 `litpose predict MODEL_DIR VIDEO --skip_viz`, same backbone and 256x256 resize. "
            f"{args.cli_repeats} round(s), each command once per round, in turn (each round starting one command "
            "later); the median of each command's rounds, "
            "and the ratio of the medians (with each round's own ratio).",
            "",
        ]
        table = []
        for backbone, _, timings in cli_rows:
            lp = timings.get("litpose")
            for name, runs in timings.items():
                seconds = float(np.median([s for s, _ in runs]))
                mib = max(m for _, m in runs)
                ratio = ""
                if lp and name != "litpose":
                    ratio = f"**{np.median([s for s, _ in lp]) / seconds:.2f}x**"
                    if len(runs) > 1:  # each round's own ratio: how far the noise moves it
                        each = [lp_s / s for (lp_s, _), (s, _) in zip(lp, runs)]
                        ratio += f" (rounds {min(each):.2f}-{max(each):.2f}x)"
                label = "litpose predict" if name == "litpose" else f"elp predict --precision {name}"
                checked = gates[backbone].get(name)
                if checked is not None and not checked.passed:
                    label += " (gate failed: ran fp32)"
                if name == "auto":
                    passing = [g for g in gates[backbone].values() if g.passed and g.speedup > 1]
                    label += f" (ran {max(passing, key=lambda g: g.speedup).precision if passing else 'fp32'})"
                every = ", ".join(f"{s:.1f}" for s, _ in runs)
                table.append(
                    (backbone, label, f"{seconds:.1f}", every, f"{info.n_frames / seconds:.1f}", ratio, f"{mib:.0f}")
                )
        lines += markdown_table(
            ("backbone", "command", "median s", "each round s", "frames/s", "speed-up vs litpose", "peak RSS MiB"),
            table,
        )
        if not any("litpose" in t for _, _, t in cli_rows):
            lines += ["", "`litpose predict`: not run (no --lp-models given)."]
        lines += [
            "",
            "Targets: resnet50 and resnet18 >= 4x `litpose predict` on a CPU with AMX (>= 3x on AVX2-only), keypoints within the gate.",
        ]
    if multi:
        one_s, one_mib = multi["one"]
        many_s, many_mib = multi["many"]
        lines += [
            "",
            f"A day of videos: {multi['n']} videos of {multi['frames']} frames ({multi['backbone']}, `--precision auto`), "
            f"one `elp predict` call vs {multi['n']} sequential calls (process start to last CSV), {multi['threads']} thread(s) each:",
            "",
            *markdown_table(
                ("run", "s", "frames/s", "peak RSS MiB"),
                [
                    (
                        f"one call, {multi['n']} videos",
                        f"{one_s:.1f}",
                        f"{multi['n'] * multi['frames'] / one_s:.1f}",
                        f"{one_mib:.0f}",
                    ),
                    (
                        f"{multi['n']} calls, one video each",
                        f"{many_s:.1f}",
                        f"{multi['n'] * multi['frames'] / many_s:.1f}",
                        f"{many_mib:.0f} (largest)",
                    ),
                ],
            ),
            "",
            f"**One call / sequential calls: {many_s / one_s:.2f}x** (target >= 1.6x on 2 cores, RSS <= 2 GB); CSVs "
            f"identical to the single-video calls: {'yes' if multi['identical'] else 'NO'}.",
        ]
    rss50, rss_short, rss_long = rss
    if rss50 is not None:
        lines += [
            "",
            "Peak resident memory (VmHWM of a fresh process running `predict_video`, fp32, import of torch included):",
            "",
            "| run | frames | peak RSS (MiB) |",
            "|---|---|---|",
            f"| resnet50, 256x256, mirror-mouse video | {rss50['frames']} | {rss50['peak_rss_mib']:.0f} |",
            f"| resnet18, 32x32, batch 64, synthetic 64x64 video | {rss_short['frames']} | {rss_short['peak_rss_mib']:.0f} |",
            f"| resnet18, 32x32, batch 64, synthetic 64x64 video | {rss_long['frames']} | {rss_long['peak_rss_mib']:.0f} |",
            "",
            f"RSS ratio 20,000 / 2,000 frames: {rss_long['peak_rss_mib'] / rss_short['peak_rss_mib']:.3f}.",
        ]
    lines += ["", "Noise: the machine is shared (see the load average above); repeated runs vary by ~10-20%."]
    write_results(args.out, lines)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
