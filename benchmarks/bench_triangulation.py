"""Multi-camera 3D benchmark: ours (DLT, robust, smoother) vs aniposelib 0.8.0, side by side.

    OMP_NUM_THREADS=1 python benchmarks/bench_triangulation.py \
        [--frames 3000] [--cameras 4] [--seed 0] [--scaling 1000,10000,100000] \
        [--peers /tmp/peers] [--out benchmarks/results/triangulation.md]

Sections:

1. Synthetic rig (:mod:`element_lightning_pose.synthetic.rig`): 4 cameras, 12 keypoints,
   1.5 px noise, 7% confident jumps of 30-150 px with likelihood 0.5-1.0, occlusion runs in
   single views. 3D error against the truth (mean / median / p95 over the points a method
   returns), NaN share, wall time, 95% interval coverage (ours). aniposelib 0.8.0 runs in a
   venv of its own (``<peers>/aniposelib-venv``, created here with ``python3.11 -m venv`` and
   pip if absent) through ``benchmarks/_aniposelib_runner.py``, on the same points (likelihood
   >= 0.5, as anipose's ``score_threshold``) and the same calibration file. Its results are cached
   in ``<peers>`` by the hash of the problem (RANSAC takes many minutes); the table says when
   a cached result was used.
2. Calibration from rendered ChArUco videos: camera centres against the truth (in camera 0's
   frame, % of the arena diameter), reprojection error, wall time; aniposelib's
   ``calibrate_videos`` on the same videos when ``--anipose-calibration`` is given.
3. Real data (``eks-examples/fly``): ours on the 3-seed ensembles per camera vs eks 4.6.2's
   nonlinear ``fit_eks_multicam`` (in ``<peers>/eks-venv``, through
   ``benchmarks/_eks_multicam_runner.py``, cached in ``<peers>/eks-fly``): median reprojection
   error per camera, agreement of the 3D trajectories, wall time.
4. Scaling: wall time of each of our methods at the ``--scaling`` frame counts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import time
from pathlib import Path

import numpy as np
from _common import HERE, REPO, command_line, header, write_results

from element_lightning_pose.engine.multicam.boards import Board, detect_video
from element_lightning_pose.engine.multicam.calibrate import calibrate
from element_lightning_pose.engine.multicam.cameras import CameraGroup, read_calibration, write_calibration
from element_lightning_pose.engine.multicam.smoother import smooth_3d
from element_lightning_pose.engine.multicam.triangulate import triangulate_dlt, triangulate_robust
from element_lightning_pose.synthetic import rig

RUNNER = HERE / "_aniposelib_runner.py"
MIN_LIKELIHOOD = 0.5


def ensure_aniposelib(peers: Path) -> Path:
    """The aniposelib 0.8.0 venv's python (created on first use)."""
    venv = peers / "aniposelib-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "aniposelib==0.8.0"], check=True)
    return python


def errors_of(points: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    error = np.linalg.norm(points - truth, axis=-1)
    finite = error[np.isfinite(error)]
    return {
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        "p95": float(np.percentile(finite, 95)),
        "nan": float(np.mean(~np.isfinite(error))),
    }


def coverage(points: np.ndarray, variance: np.ndarray, truth: np.ndarray) -> float:
    z = np.abs(points - truth) / np.sqrt(variance)
    return float(np.nanmean(z < 1.959963984540054))


def run_ours(group: CameraGroup, obs: rig.Observations, edges: list[tuple[int, int]]) -> dict[str, dict]:
    weights = np.where(obs.likelihood >= MIN_LIKELIHOOD, obs.likelihood, 0.0)
    out: dict[str, dict] = {}
    for name, call in (
        ("ours dlt", lambda: triangulate_dlt(group, obs.pixels, weights)),
        ("ours robust", lambda: triangulate_robust(group, obs.pixels, weights)),
        ("ours smooth", lambda: smooth_3d(group, obs.pixels, obs.likelihood)),
        ("ours smooth + limbs", lambda: smooth_3d(group, obs.pixels, obs.likelihood, skeleton=edges)),
    ):
        start = time.perf_counter()
        result = call()
        out[name] = {"points": result.points, "variance": result.variance, "seconds": time.perf_counter() - start}
    return out


def run_aniposelib(peers: Path, group: CameraGroup, obs: rig.Observations, edges: list) -> tuple[dict, bool]:
    """aniposelib's methods on the same problem; (results, whether a cached run was reused)."""
    ok = obs.likelihood >= MIN_LIKELIHOOD
    pixels = np.where(ok[..., None], obs.pixels, np.nan)
    scores = np.where(ok, obs.likelihood, 0.0)
    key = hashlib.sha256(
        np.ascontiguousarray(np.nan_to_num(pixels, nan=-1)).tobytes() + np.asarray(edges).tobytes()
    ).hexdigest()[:16]
    cal, problem, out = peers / f"cal-{key}.toml", peers / f"problem-{key}.npz", peers / f"aniposelib-{key}.npz"
    cached = out.exists()
    if not cached:
        python = ensure_aniposelib(peers)
        write_calibration(group, cal)
        np.savez(problem, pixels=pixels, scores=scores, edges=np.asarray(edges))
        subprocess.run([str(python), str(RUNNER), str(cal), str(problem), str(out), "ransac", "optim"], check=True)
    data = np.load(out)
    methods = sorted({k.rsplit("_", 1)[0] for k in data.files})
    return {
        f"aniposelib {m}": {"points": data[f"{m}_points"], "seconds": float(data[f"{m}_seconds"])} for m in methods
    }, cached


def run_eks_synthetic(
    args: argparse.Namespace, group: CameraGroup, obs: rig.Observations, bodyparts: list[str]
) -> dict | None:
    """eks 4.6.2 ``fit_eks_multicam`` on the raw per-camera predictions (one member each), cached."""
    import pandas as pd

    from element_lightning_pose.engine.data.keypoints import write_predictions

    key = hashlib.sha256(np.ascontiguousarray(obs.pixels).tobytes() + obs.likelihood.tobytes()).hexdigest()[:16]
    out = args.peers / f"eks-synthetic-{key}"
    if not (out / "multicam_3d_results.csv").exists():
        python = args.peers / "eks-venv" / "bin" / "python"
        if not python.exists():
            return None
        write_calibration(group, out / "calibration.toml")
        items = []
        for c, cam in enumerate(group.cameras):
            values = np.concatenate([obs.pixels[c], obs.likelihood[c][..., None]], axis=-1)
            items.append(f"{cam.name}={write_predictions(out / f'{cam.name}.csv', values, bodyparts)}")
        subprocess.run(
            [
                str(python),
                str(HERE / "_eks_multicam_runner.py"),
                str(out / "calibration.toml"),
                str(out),
                *items,
            ],
            check=True,
        )
    frame = pd.read_csv(out / "multicam_3d_results.csv", header=[0, 1, 2], index_col=0)
    points = np.stack(
        [
            np.stack([frame.xs((bp, c), axis=1, level=(1, 2)).iloc[:, 0].to_numpy() for c in "xyz"], -1)
            for bp in bodyparts
        ],
        axis=1,
    )
    variance = np.stack(
        [
            np.stack(
                [frame.xs((bp, f"{c}_posterior_var"), axis=1, level=(1, 2)).iloc[:, 0].to_numpy() for c in "xyz"], -1
            )
            for bp in bodyparts
        ],
        axis=1,
    )
    return {"points": points, "variance": variance, "seconds": float((out / "seconds.txt").read_text())}


def accuracy_section(args: argparse.Namespace) -> list[str]:
    group = rig.make_rig(args.cameras, seed=args.seed)
    body = rig.make_body(args.frames, seed=args.seed)
    obs = rig.observe(group, body.points, seed=args.seed)
    results = run_ours(group, obs, body.edges)
    cached = False
    if not args.skip_aniposelib:
        peer, cached = run_aniposelib(args.peers, group, obs, body.edges)
        results.update(peer)
    if not args.skip_eks:
        eks_result = run_eks_synthetic(args, group, obs, body.bodyparts)
        if eks_result is not None:
            results["eks 4.6.2 multicam"] = eks_result
    lines = [
        f"## 1. Synthetic rig: {args.frames} frames x {len(body.bodyparts)} keypoints x {args.cameras} cameras",
        "",
        f"Corruptions: 1.5 px noise; {obs.jump.mean():.1%} confident jumps (30-150 px, likelihood 0.5-1.0); "
        f"{obs.occluded.mean():.1%} occluded or off-image points (likelihood 0-0.3). Errors in mm "
        "(the arena is 400 mm across) over the points each method returns.",
        "",
        "| method | mean | median | p95 | NaN share | wall time (s) | 95% coverage |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        e = errors_of(r["points"], body.points)
        cov = f"{coverage(r['points'], r['variance'], body.points):.3f}" if "variance" in r else "-"
        lines.append(
            f"| {name} | {e['mean']:.3f} | {e['median']:.3f} | {e['p95']:.3f} | {e['nan']:.4f} | "
            f"{r['seconds']:.1f} | {cov} |"
        )
    if cached:
        lines += [
            "",
            "aniposelib results: reused from an earlier run of benchmarks/_aniposelib_runner.py on the identical "
            "problem (same hash of points and edges), with its wall time as measured then.",
        ]
    if "eks 4.6.2 multicam" in results:
        lines += [
            "",
            "eks 4.6.2: `fit_eks_multicam` with the calibration, one member per camera (the raw predictions); "
            "a result cached in the peers folder is reused with its wall time as measured then.",
        ]
    peers = {k: v for k, v in results.items() if k.startswith("aniposelib")}
    if peers:
        best_mean = min(errors_of(v["points"], body.points)["mean"] for v in peers.values())
        best_p95 = min(errors_of(v["points"], body.points)["p95"] for v in peers.values())
        ransac = peers.get("aniposelib ransac", {}).get("seconds", np.nan)
        lines += ["", "Against the targets (best aniposelib method per metric):", ""]
        for name in ("ours robust", "ours smooth", "ours smooth + limbs"):
            e = errors_of(results[name]["points"], body.points)
            lines.append(
                f"- {name}: mean {e['mean'] / best_mean:.2f}x, p95 {e['p95'] / best_p95:.2f}x aniposelib's "
                f"best (target <= 0.7x); wall time {results[name]['seconds'] / ransac:.3f}x RANSAC's "
                "(target <= 0.1x)"
            )
    return lines


def _centres_in_camera0(group: CameraGroup) -> np.ndarray:
    r0, t0 = group.cameras[0].rotation, group.cameras[0].translation
    return np.array([-(c.rotation @ r0.T).T @ (c.translation - c.rotation @ r0.T @ t0) for c in group.cameras])


def corner_error(group: CameraGroup, detections: dict, names: list[str]) -> tuple[float, float]:
    """aniposelib's calibration error measure on the same detections, for any calibration:
    every (frame, corner) seen by >= 2 cameras is triangulated (DLT), its reprojection error
    averaged over those views; returns the (median, mean) over corners, px."""
    keys = sorted({(d.frame, int(i)) for name in names for d in detections[name] for i in d.ids})
    index = {k: n for n, k in enumerate(keys)}
    pixels = np.full((len(names), len(keys), 2), np.nan)
    for c, name in enumerate(names):
        for d in detections[name]:
            rows = [index[(d.frame, int(i))] for i in d.ids]
            pixels[c, rows] = d.corners
    result = triangulate_dlt(group.subset(names), pixels)
    per_corner = result.reprojection_error[result.n_views >= 2]
    return float(np.median(per_corner)), float(np.mean(per_corner))


def calibration_section(args: argparse.Namespace) -> list[str]:
    group = rig.make_rig(args.cameras, seed=args.seed)
    board = Board("charuco", 7, 5, 50.0, 37.0, 4, 50)
    directory = args.peers / f"boards-{args.cameras}-{args.seed}-{args.board_frames}"
    videos = rig.render_board_videos(group, board, directory, n_frames=args.board_frames, seed=args.seed)
    start = time.perf_counter()
    detections, sizes = {}, {}
    for name, path in videos.items():
        detections[name], sizes[name], _ = detect_video(board, path)
    result = calibrate(board, detections, sizes)
    seconds = time.perf_counter() - start
    offsets = np.linalg.norm(_centres_in_camera0(result.group) - _centres_in_camera0(group), axis=-1)
    lines = [
        f"## 2. Calibration from rendered ChArUco videos ({args.cameras} cameras, {args.board_frames} frames, "
        "640x480, board 7x5 squares of 50 mm)",
        "",
        "| camera | board views | reprojection error (px) | centre error (% of 400 mm arena) |",
        "|---|---|---|---|",
    ]
    for name, views, err, off in zip(result.group.names, result.n_frames, result.errors, offsets):
        lines.append(f"| {name} | {views} | {err:.3f} | {100 * off / 400:.2f} |")
    median, mean = corner_error(result.group, detections, result.group.names)
    lines += [
        "",
        f"Ours: wall time (detection + calibration + bundle adjustment) {seconds:.1f} s; "
        f"multi-view corner error (aniposelib's measure: corners triangulated from all cameras "
        f"that see them, mean reprojection error per corner) median {median:.3f} px, mean {mean:.3f} px.",
    ]
    if args.anipose_calibration:
        lines += [""] + anipose_calibration(args, group, videos, directory, detections)
    return lines


def anipose_calibration(
    args: argparse.Namespace, truth: CameraGroup, videos: dict, directory: Path, detections: dict
) -> list[str]:
    """aniposelib's ``calibrate_videos`` on the same videos (cached beside them)."""
    out = directory / "aniposelib-calibration.toml"
    cached = out.exists()
    if not cached:
        python = ensure_aniposelib(args.peers)
        subprocess.run(
            [str(python), str(RUNNER), "calibrate", str(out)] + [f"{name}={path}" for name, path in videos.items()],
            check=True,
        )
    found = read_calibration(out)
    offsets = np.linalg.norm(_centres_in_camera0(found) - _centres_in_camera0(truth), axis=-1)
    note = " (cached from an earlier run on the same rendered videos)" if cached else ""
    median, mean = corner_error(found, detections, found.names)
    return [
        f"aniposelib 0.8.0 `calibrate_videos` on the same videos{note}: its reported error "
        f"{found.metadata['error']:.3f} px; the same multi-view corner error on our detections median "
        f"{median:.3f} px, mean {mean:.3f} px; wall time {found.metadata['seconds']:.1f} s; centre errors "
        + ", ".join(f"{n} {100 * o / 400:.2f}%" for n, o in zip(found.names, offsets))
        + " of the arena."
    ]


def fly_section(args: argparse.Namespace) -> list[str]:
    from element_lightning_pose.engine.multicam.io import ViewSource, read_views

    fly = args.fly
    if not (fly / "calibration.toml").is_file():
        return ["## 3. Real data (fly)", "", f"skipped: {fly} not found"]
    group = read_calibration(fly / "calibration.toml")
    files = {name: sorted(fly.glob(f"*{name}*.csv")) for name in group.names}
    views = read_views([ViewSource(name, tuple(files[name])) for name in group.names], min_likelihood=MIN_LIKELIHOOD)
    pixels, likelihood, variance = views.pixels, views.likelihood, views.variance
    lines = [
        f"## 3. Real data: eks-examples/fly ({pixels.shape[1]} frames x {pixels.shape[2]} keypoints, "
        f"{max(len(f) for f in files.values())} seeds per camera)",
        "",
        "Median reprojection error per camera (px) of the 3D estimate against the ensemble median.",
        "",
        "| method | " + " | ".join(group.names) + " | wall time (s) |",
        "|---|" + "---|" * len(group.names) + "---|",
    ]
    weights = np.where(likelihood >= MIN_LIKELIHOOD, likelihood, 0.0)
    estimates: dict[str, tuple[np.ndarray, float]] = {}
    for name, call in (
        ("ours dlt", lambda: triangulate_dlt(group, pixels, weights)),
        ("ours robust", lambda: triangulate_robust(group, pixels, weights)),
        ("ours smooth", lambda: smooth_3d(group, pixels, likelihood, variance)),
    ):
        start = time.perf_counter()
        result = call()
        estimates[name] = (result.points, time.perf_counter() - start)
    if not args.skip_eks:
        estimates["eks 4.6.2 multicam"] = run_eks_fly(args, files)
    for name, (points, seconds) in estimates.items():
        error = np.linalg.norm(group.project(points) - pixels, axis=-1)
        cells = " | ".join(f"{np.nanmedian(np.where(weights[c] > 0, error[c], np.nan)):.2f}" for c in range(len(group)))
        lines.append(f"| {name} | {cells} | {seconds:.2f} |")
    if "eks 4.6.2 multicam" in estimates:
        ours, theirs = estimates["ours smooth"][0], estimates["eks 4.6.2 multicam"][0]
        distance = np.linalg.norm(ours - theirs, axis=-1)
        extent = np.linalg.norm(
            np.nanpercentile(ours.reshape(-1, 3), 95, axis=0) - np.nanpercentile(ours.reshape(-1, 3), 5, axis=0)
        )
        lines += [
            "",
            f"Agreement of ours smooth and eks's 3D trajectories: median distance {np.nanmedian(distance):.4f}, "
            f"p95 {np.nanpercentile(distance, 95):.4f} calibration units (the body's 5-95% extent is "
            f"{extent:.3f}).",
        ]
    return lines


def run_eks_fly(args: argparse.Namespace, files: dict[str, list[Path]]) -> tuple[np.ndarray, float]:
    """eks 4.6.2 ``fit_eks_multicam`` (nonlinear, with the calibration) in ``<peers>/eks-venv``."""
    import pandas as pd

    out = args.peers / "eks-fly"
    if not (out / "multicam_3d_results.csv").exists():
        python = args.peers / "eks-venv" / "bin" / "python"
        if not python.exists():
            subprocess.run(["python3.11", "-m", "venv", str(args.peers / "eks-venv")], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "ensemble-kalman-smoother==4.6.2"], check=True)
        items = [f"{name}={path}" for name, paths in files.items() for path in paths]
        subprocess.run(
            [
                str(python),
                str(HERE / "_eks_multicam_runner.py"),
                str(args.fly / "calibration.toml"),
                str(out),
                *items,
            ],
            check=True,
        )
    frame = pd.read_csv(out / "multicam_3d_results.csv", header=[0, 1, 2], index_col=0)
    parts = list(dict.fromkeys(frame.columns.get_level_values(1)))
    points = np.stack(
        [np.stack([frame.xs((bp, c), axis=1, level=(1, 2)).iloc[:, 0].to_numpy() for c in "xyz"], -1) for bp in parts],
        axis=1,
    )
    return points, float((out / "seconds.txt").read_text())


def scaling_section(args: argparse.Namespace) -> list[str]:
    lines = [
        "## 4. Scaling (12 keypoints, 4 cameras, same corruptions)",
        "",
        "| frames | ours dlt (s) | ours robust (s) | ours smooth (s) | load average (1 min) after |",
        "|---|---|---|---|---|",
    ]
    group = rig.make_rig(4, seed=args.seed)
    for n in args.scaling:
        body = rig.make_body(n, seed=args.seed)
        obs = rig.observe(group, body.points, seed=args.seed)
        weights = np.where(obs.likelihood >= MIN_LIKELIHOOD, obs.likelihood, 0.0)
        times = []
        for method, a, b in (
            (triangulate_dlt, obs.pixels, weights),
            (triangulate_robust, obs.pixels, weights),
            (smooth_3d, obs.pixels, obs.likelihood),
        ):
            start = time.perf_counter()
            method(group, a, b)
            times.append(time.perf_counter() - start)
        lines.append(f"| {n} | " + " | ".join(f"{t:.2f}" for t in times) + f" | {os.getloadavg()[0]:.1f} |")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--board-frames", type=int, default=60)
    parser.add_argument("--scaling", type=lambda s: [int(x) for x in s.split(",") if x], default=[1000, 10000, 100000])
    parser.add_argument("--peers", type=Path, default=Path("/tmp/peers"))
    parser.add_argument("--fly", type=Path, default=REPO.parent / "shared" / "data" / "eks-examples" / "fly")
    parser.add_argument("--skip-aniposelib", action="store_true")
    parser.add_argument("--skip-eks", action="store_true", help="no eks 4.6.2 multi-camera comparison")
    parser.add_argument("--anipose-calibration", action="store_true", help="also run aniposelib's calibrate_videos")
    parser.add_argument("--sections", default="1,2,3,4")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.peers.mkdir(parents=True, exist_ok=True)
    lines = header("Multi-camera 3D benchmark", command_line(argv))
    sections = {"1": accuracy_section, "2": calibration_section, "3": fly_section, "4": scaling_section}
    for key in args.sections.split(","):
        lines += sections[key](args) + [""]
        print("\n".join(lines), flush=True)
        if args.out:  # after every section: a later section that fails keeps the earlier ones
            write_results(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
