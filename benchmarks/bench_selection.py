"""Benchmark: k-means frame selection, ours against Lightning Pose's app, side by side.

    python benchmarks/bench_selection.py [--frames 10000] [--n 50] [--repeats 3] [--out benchmarks/results/selection.md]

The video is a synthetic one with ground truth (``synthetic.projects``, 640 x 480 by default,
written once into ``--work``). The peer, ``lightning-pose-app==2.4.2.3`` (the release users
install), is installed by this script into its own venv (``$LP_APP_VENV``, default
/tmp/lp-app-venv), never into the project; its own function ``frame_selection_kmeans_impl`` runs
in a subprocess of that venv (``_lp_app_selection_runner.py``). Ours, ``select_kmeans``, runs in a
subprocess of this interpreter, so that each side's peak memory is its own. The runs alternate
(ours, theirs, ours, ...) so that both see the same load; each side's time is its function call
alone, from the video file to the frame numbers.

Beside the time: how well each choice covers the animal's poses (from the ground truth), the
distance from every frame's pose to the nearest chosen frame's (mean and 95th percentile, px,
averaged over the runs), with 50 evenly spaced frames as the yardstick.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _common import RESULTS, command_line, header, markdown_table, write_results  # noqa: E402

from element_lightning_pose.engine.data.video import video_info  # noqa: E402
from element_lightning_pose.engine.labeling.selection import select_kmeans, select_uniform  # noqa: E402
from element_lightning_pose.synthetic.projects import (  # noqa: E402
    load_synthetic_project,
    make_synthetic_project,
)

PEER = "lightning-pose-app==2.4.2.3"
HERE = Path(__file__).resolve().parent


def ensure_peer(venv: Path) -> tuple[Path | None, str]:
    """(python of a venv with the peer, "") or (None, the error)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('lightning-pose-app'))"]
    if python.exists() and subprocess.run(check, capture_output=True, text=True, cwd="/").stdout.strip() == "2.4.2.3":
        return python, ""
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PEER], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        return None, f"installing {PEER} failed: {(exc.stderr or '')[-300:]}"
    return python, ""


def resident_mib() -> float:
    """This process's resident memory now (MiB); the peer's runner measures the same way."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def time_ours(video: Path, n: int, seed: int) -> dict:
    """Our selection, timed in this process (run as a subprocess by :func:`main`)."""
    before = resident_mib()
    start = time.perf_counter()
    suggestions = select_kmeans(video, n, seed=seed)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "frames": [s.frame for s in suggestions],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "added_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before,
    }


def run_side(command: list[str], peer: bool) -> dict:
    # the peer's venv sees its own packages only, not this checkout (PYTHONPATH)
    env = {k: v for k, v in os.environ.items() if not (peer and k == "PYTHONPATH")}
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pose_coverage(poses: np.ndarray, chosen: list[int]) -> tuple[float, float]:
    """Distance (px, root mean square over keypoints) from each frame's pose to the nearest
    chosen frame's pose: mean and 95th percentile over the frames."""
    flat = poses.reshape(len(poses), -1)
    picked = flat[sorted(set(chosen))]
    squared = ((flat[:, None, :] - picked[None, :, :]) ** 2).reshape(len(flat), len(picked), -1, 2).sum(-1)
    nearest = np.sqrt(squared.mean(-1)).min(axis=1)
    return float(nearest.mean()), float(np.percentile(nearest, 95))


def make_video(work: Path, n_frames: int, size: tuple[int, int]) -> Path:
    root = work / f"synthetic_{n_frames}_{size[0]}x{size[1]}"
    if not (root / "videos" / "video00.mp4").is_file():
        make_synthetic_project(root, image_size=size, n_labeled=4, n_video_frames=n_frames)
    return root / "videos" / "video00.mp4"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000, help="frames of the synthetic video")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--n", type=int, default=50, help="frames to select")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/elp-bench-selection"))
    parser.add_argument("--peer-venv", type=Path, default=Path(os.environ.get("LP_APP_VENV", "/tmp/lp-app-venv")))
    parser.add_argument("--no-peer", action="store_true", help="measure ours only")
    parser.add_argument("--out", type=Path, default=RESULTS / "selection.md")
    parser.add_argument("--time-ours", nargs=3, metavar=("VIDEO", "N", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time_ours:
        print(json.dumps(time_ours(Path(args.time_ours[0]), int(args.time_ours[1]), int(args.time_ours[2]))))
        return 0
    command = command_line(argv)

    video = make_video(args.work, args.frames, tuple(args.size))
    info = video_info(video)
    project = load_synthetic_project(video.parent.parent)
    poses, _ = project.ground_truth(video)
    python, peer_error = (None, "not run (--no-peer)") if args.no_peer else ensure_peer(args.peer_venv)
    ours = [sys.executable, str(Path(__file__).resolve()), "--time-ours", str(video), str(args.n)]
    sides = {"ours (select_kmeans)": ours}
    if python is not None:
        runner = str(HERE / "_lp_app_selection_runner.py")
        sides[f"{PEER.split('==')[0]} {PEER.split('==')[1]}"] = [str(python), runner, str(video), str(args.n)]
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        for name, side_command in sides.items():
            seeded = [*side_command, str(repeat)] if side_command is ours else side_command  # the peer is unseeded
            report = run_side(seeded, peer=side_command is not ours)
            runs[name].append(report)
            print(f"repeat {repeat + 1}: {name}: {report['seconds']:.2f} s", flush=True)

    load_after = os.getloadavg()[0]
    uniform = [s.frame for s in select_uniform(info.n_frames, args.n)]
    coverage = {}
    rows = []
    for name, reports in runs.items():
        seconds = [r["seconds"] for r in reports]
        mean, p95 = np.mean([pose_coverage(poses, r["frames"]) for r in reports], axis=0)
        distinct = min(len(set(r["frames"])) for r in reports)
        coverage[name] = p95
        rows.append(
            (
                name,
                f"{np.median(seconds):.2f}",
                f"{min(seconds):.2f}",
                f"{info.n_frames / np.median(seconds):,.0f}",
                f"{max(r['added_mib'] for r in reports):,.0f} ({max(r['peak_rss_mib'] for r in reports):,.0f})",
                f"{distinct} of {args.n}",
                f"{mean:.1f} / {p95:.1f}",
            )
        )
    mean, p95_uniform = pose_coverage(poses, uniform)
    rows.append(
        (
            f"{args.n} evenly spaced frames (yardstick)",
            "",
            "",
            "",
            "",
            f"{args.n} of {args.n}",
            f"{mean:.1f} / {p95_uniform:.1f}",
        )
    )
    names = list(runs)
    medians = {name: float(np.median([r["seconds"] for r in runs[name]])) for name in names}

    lines = [
        *header(f"k-means frame selection: {args.n} frames from a {info.n_frames:,}-frame video", command),
        f"Video: synthetic (``synthetic.projects``, seed 0), {info.n_frames:,} frames of {info.width} x "
        f"{info.height}, codec {info.codec}, {video.stat().st_size / 2**20:.1f} MiB. Each side's time is its "
        "selection function alone (video file in, frame numbers out), in its own process; the runs "
        f"alternate between the sides, {args.repeats} each. Memory of the call: the process's peak resident "
        "memory above its size after the imports (the peak itself in brackets). Pose coverage: the distance "
        "from every frame's true pose to the nearest chosen frame's (RMS over keypoints, px), mean / 95th "
        f"percentile, averaged over the runs (ours with seeds 0-{args.repeats - 1}, the peer unseeded); "
        "distinct frames: the fewest in a run. The 1-minute load average was "
        f"{load_before:.1f} when the runs began and {load_after:.1f} when they ended "
        f"({os.cpu_count()} cores): other work shared the machine, so the times are long for both sides "
        "and the ratio (alternating runs) is the figure to read.",
        "",
        *markdown_table(
            [
                "method",
                "median time (s)",
                "best time (s)",
                "frames/s",
                "memory of the call (process peak), MiB",
                "distinct frames",
                "pose coverage mean / p95 (px)",
            ],
            rows,
        ),
        "",
    ]
    if len(names) == 2:
        ratio = medians[names[1]] / medians[names[0]]
        version = runs[names[1]][-1]
        lines += [
            f"**Ours is {ratio:.1f}x faster** than lightning-pose-app {version['version']} "
            f"(scikit-learn {version['sklearn']}) on the same video (median over {args.repeats} alternating runs).",
            "",
        ]
    else:
        lines += [f"The peer was not measured: {peer_error}", ""]
    lines += [
        "Pose coverage (95th percentile): "
        + ", ".join(f"{name} {p95:.1f} px" for name, p95 in coverage.items())
        + f", evenly spaced frames {p95_uniform:.1f} px."
        + (
            " Choosing frames by how they look covers this video's poses about as well as spacing them "
            "evenly (within 10%): frames worth labeling are the ones a model gets wrong, which is what "
            "model-guided selection ranks."
            if all(abs(p95 / p95_uniform - 1) <= 0.1 for p95 in coverage.values())
            else ""
        ),
        "",
        "What each side does (facts read from the peer's source, no code shared):",
        "",
        "- lightning-pose-app reads every frame in colour, resizes it to 64 x 64 (OpenCV's default "
        "bilinear, which samples rather than averages), keeps all of them as float16 (12,288 values per "
        "frame), takes the motion energy, runs scikit-learn's PCA (32 components) on the frames above the "
        "median motion and scikit-learn's KMeans, then picks the frame nearest each centre (two centres "
        "can pick the same frame).",
        "- Ours streams the video once through a background decoding thread and keeps only grey "
        "thumbnails of about 64 x 64 (uint8): the decoder's luma plane, no colour conversion, averaged "
        "over whole-number blocks (aspect kept, no aliasing); motion energy on every frame; a seeded "
        "randomised SVD for the PCA and a seeded numpy k-means++ (one frame per cluster, so always "
        "distinct frames). Decoding is most of what is left.",
        "",
    ]
    print(write_results(args.out, lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
