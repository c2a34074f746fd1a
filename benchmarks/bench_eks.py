"""Benchmark: our Ensemble Kalman Smoother against the reference eks 4.6.2, side by side.

    .venv/bin/python benchmarks/bench_eks.py [--out benchmarks/results/eks.md]

The reference (``ensemble-kalman-smoother==4.6.2``, needs JAX) is installed by this script
into its own venv (``$EKS_REF_VENV``, default /tmp/eks-ref-venv), never into the project, and
runs in a subprocess on the same member CSVs that we read. Both sides are timed from CSV
files in to smoothed CSV out, in the same run. Both use 2 threads.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _common import RESULTS, command_line, header, write_results  # noqa: E402
from _eks_synthetic import SyntheticEnsemble, make_ensemble, make_two_view_ensemble  # noqa: E402

from element_lightning_pose.engine import eks  # noqa: E402
from element_lightning_pose.engine.data.keypoints import read_keypoint_csv, write_predictions  # noqa: E402

REFERENCE = "ensemble-kalman-smoother==4.6.2"
HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------ reference ---


def ensure_reference(venv: Path) -> tuple[Path | None, str]:
    """(python of a venv with eks 4.6.2, "") or (None, the error)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('ensemble-kalman-smoother'))"]
    if python.exists() and subprocess.run(check, capture_output=True, text=True).stdout.strip() == "4.6.2":
        return python, ""
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", REFERENCE], check=True, capture_output=True, text=True
        )
    except subprocess.CalledProcessError as exc:
        return None, f"installing {REFERENCE} failed: {(exc.stderr or '')[-300:]}"
    return python, ""


def run_reference(python: Path, csvs: list[Path], out: Path, smooth_param: float | None, repeats: int) -> dict:
    """{"runs": [{"load", "smooth", "write", "total"} per repeat, cold first], "s": [...],
    "values": output (T, K, 9)}."""
    job = out.with_suffix(".json")
    job.write_text(
        json.dumps(
            {"csvs": [str(c) for c in csvs], "save_file": str(out), "smooth_param": smooth_param, "repeats": repeats}
        )
    )
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        OMP_NUM_THREADS="2",
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=2",
    )
    done = subprocess.run(
        [str(python), str(HERE / "_eks_reference.py"), str(job)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"reference failed: {done.stderr[-500:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["values"] = read_keypoint_csv(out)[0]
    return report


# ------------------------------------------------------------------------------------ ours ---


def run_ours(
    csvs: list[Path], out: Path, smooth_param: float | None, repeats: int, noise: str = "auto", outliers: str = "auto"
) -> dict:
    """Same work as the reference, same phases: read member CSVs, smooth, write the eks CSV."""
    runs, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        members, names = eks.load_members(csvs)
        loaded = time.perf_counter()
        result = eks.smooth(members, names, s=smooth_param, noise=noise, outliers=outliers)
        smoothed = time.perf_counter()
        result.to_csv(out)
        runs.append(
            {
                "load": loaded - start,
                "smooth": smoothed - loaded,
                "write": time.perf_counter() - smoothed,
                "total": time.perf_counter() - start,
            }
        )
    return {"runs": runs, "s": result.s.tolist(), "values": result.to_array(), "result": result}


def median_phase(report: dict, phase: str) -> float:
    return float(np.median([run[phase] for run in report["runs"]]))


# --------------------------------------------------------------------------------- metrics ---


def rmse(values: np.ndarray, truth: np.ndarray) -> float:
    """RMSE of the smoothed x, y (values (T, K, 9)) over finite entries."""
    error = values[..., :2] - truth
    finite = np.isfinite(error)
    return float(np.sqrt(np.mean(error[finite] ** 2))) if finite.any() else float("nan")


def coverage(values: np.ndarray, truth: np.ndarray) -> float:
    """Share of true errors inside the 95% posterior interval (x and y separately)."""
    error = np.abs(values[..., :2] - truth)
    half_width = 1.959964 * np.sqrt(values[..., 7:9])
    finite = np.isfinite(error) & np.isfinite(half_width)
    return float((error[finite] <= half_width[finite]).mean())


def nan_count(values: np.ndarray) -> int:
    return int(np.isnan(values[..., [0, 1, 7, 8]]).sum())


def write_members(data: SyntheticEnsemble, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"kp{k}" for k in range(data.members.shape[2])]
    return [write_predictions(folder / f"member{m}.csv", data.members[m], names) for m in range(data.members.shape[0])]


# ------------------------------------------------------------------------------- benchmark ---


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--keypoints", type=int, default=10)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--fixed-s", type=float, default=4.0)
    parser.add_argument("--scaling", default="1000,10000,100000")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours (median)")
    parser.add_argument("--ref-venv", type=Path, default=Path(os.environ.get("EKS_REF_VENV", "/tmp/eks-ref-venv")))
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "eks.md")
    args = parser.parse_args(argv)
    command = command_line(argv)

    python, ref_error = (None, "skipped (--no-reference)") if args.no_reference else ensure_reference(args.ref_venv)
    work = Path(tempfile.mkdtemp(prefix="eks-bench-"))
    shape = dict(n_frames=args.frames, n_keypoints=args.keypoints, n_members=args.members)
    base = make_ensemble(**shape, seed=0)
    gappy = make_ensemble(**shape, seed=1, all_nan_rate=0.01)
    base_csvs, gappy_csvs = write_members(base, work / "base"), write_members(gappy, work / "gappy")
    lines: list[str] = []
    rows: list[tuple[str, str, str, str]] = []

    # 1. fixed s: same model, outputs must agree
    ours_fixed = run_ours(base_csvs, work / "ours_fixed.csv", args.fixed_s, args.repeats)
    ref_fixed = run_reference(python, base_csvs, work / "ref_fixed.csv", args.fixed_s, 2) if python else None
    # 2. automatic s
    ours_auto = run_ours(base_csvs, work / "ours_auto.csv", None, args.repeats)
    ref_auto = run_reference(python, base_csvs, work / "ref_auto.csv", None, 2) if python else None
    # 3. 1% all-NaN frames
    ours_gap = run_ours(gappy_csvs, work / "ours_gap.csv", None, args.repeats)
    ref_gap = run_reference(python, gappy_csvs, work / "ref_gap.csv", None, 1) if python else None

    for label, ours, ref in (("fixed s", ours_fixed, ref_fixed), ("auto s", ours_auto, ref_auto)):
        for phase, what in (
            ("smooth", "smoothing (ensemble stats, s fit, smoother)"),
            ("total", "end to end: read 5 CSVs, smooth, write CSV"),
        ):
            mine = median_phase(ours, phase)
            rows.append(
                (
                    f"{label}: runtime (s), {what}",
                    f"{mine:.3f}",
                    _ref_times(ref, phase, ref_error),
                    _ratio(ref, phase, mine),
                )
            )
    rows.append(
        (
            "I/O (s): read CSVs / write CSV (ours: vectorised numpy writer, 10 digits; eks: pandas)",
            f"{median_phase(ours_auto, 'load'):.2f} / {median_phase(ours_auto, 'write'):.2f}",
            _fmt(ref_auto, lambda r: f"{r['runs'][-1]['load']:.2f} / {r['runs'][-1]['write']:.2f}", "s"),
            "same layout",
        )
    )
    if ref_fixed:
        diff = np.abs(ours_fixed["values"] - ref_fixed["values"])
        rows.append(
            (
                f"fixed s={args.fixed_s:g}: max abs diff x/y vs reference (px)",
                f"{np.nanmax(diff[..., :2]):.2e}",
                "-",
                "target <= 0.01",
            )
        )
        rows.append(
            (
                "fixed s: max abs diff median / ens. var / posterior var",
                f"{np.nanmax(diff[..., 3:5]):.1e} / {np.nanmax(diff[..., 5:7]):.1e} / {np.nanmax(diff[..., 7:9]):.1e}",
                "-",
                "reference is float32",
            )
        )
    centre_rmse = float(np.sqrt(np.nanmean((ours_auto["result"].centre - base.truth) ** 2)))
    rows.append(("RMSE of the ensemble median to truth (px)", f"{centre_rmse:.3f}", "-", "-"))
    rows.append(
        (
            "fixed s: RMSE to truth (px)",
            f"{rmse(ours_fixed['values'], base.truth):.3f}",
            _fmt(ref_fixed, lambda r: rmse(r["values"], base.truth)),
            "-",
        )
    )
    rows.append(
        (
            "auto s: RMSE to truth (px)",
            f"{rmse(ours_auto['values'], base.truth):.3f}",
            _fmt(ref_auto, lambda r: rmse(r["values"], base.truth)),
            "target: ours <= reference",
        )
    )
    true_s = base.step_sd**2
    ours_plain = run_ours(base_csvs, work / "ours_auto_plain.csv", None, 1, outliers="none")
    rows.append(
        (
            "auto s with outliers='none' (previous default): RMSE / coverage",
            f"{rmse(ours_plain['values'], base.truth):.3f} / {coverage(ours_plain['values'], base.truth):.3f}",
            "-",
            "-",
        )
    )
    ours_eks_noise = run_ours(base_csvs, work / "ours_auto_eks.csv", None, 1, noise="eks")
    rows.append(
        (
            "auto s with noise='eks' (ablation): RMSE / coverage",
            f"{rmse(ours_eks_noise['values'], base.truth):.3f} / {coverage(ours_eks_noise['values'], base.truth):.3f}",
            "-",
            "-",
        )
    )
    scale = ours_auto["result"].noise_scale
    rows.append(
        (
            "auto s: mean (s x noise scale) / true step variance",
            f"{np.mean(np.array(ours_auto['s']) * scale.mean(axis=1) / true_s):.2f}",
            "-",
            "-",
        )
    )
    rows.append(
        (
            "auto s: mean s / true step variance",
            f"{np.mean(np.array(ours_auto['s']) / true_s):.2f}",
            _fmt(ref_auto, lambda r: np.mean(np.array(r["s"]) / true_s), ".2f"),
            "-",
        )
    )
    rows.append(
        (
            "auto s: 95% interval coverage of the truth",
            f"{coverage(ours_auto['values'], base.truth):.3f}",
            _fmt(ref_auto, lambda r: coverage(r["values"], base.truth)),
            "target 0.93-0.97",
        )
    )
    rows.append(
        (
            "1% all-NaN frames: NaN in x, y, posterior var",
            str(nan_count(ours_gap["values"])),
            _fmt(ref_gap, lambda r: nan_count(r["values"]), "d"),
            f"of {ours_gap['values'][..., [0, 1, 7, 8]].size}",
        )
    )
    rows.append(
        (
            "1% all-NaN frames: RMSE to truth (px, finite values)",
            f"{rmse(ours_gap['values'], gappy.truth):.3f}",
            _fmt(ref_gap, lambda r: rmse(r["values"], gappy.truth)),
            "-",
        )
    )
    gap_frames = np.isnan(gappy.members[0, :, 0, 0])
    rows.append(
        (
            "1% all-NaN frames: RMSE on the NaN frames only (px)",
            f"{rmse(ours_gap['values'][gap_frames], gappy.truth[gap_frames]):.3f}",
            "-",
            "-",
        )
    )
    rows.append(
        (
            "1% all-NaN frames: 95% interval coverage",
            f"{coverage(ours_gap['values'], gappy.truth):.3f}",
            "-",
            "target 0.93-0.97",
        )
    )

    rows += _multiview_rows(args)
    scaling = _scaling(args, python, work)
    shutil.rmtree(work, ignore_errors=True)
    lines += _markdown(command, rows, scaling, ref_error, args)
    print(write_results(args.out, lines))
    return 0


def _scaling(args: argparse.Namespace, python: Path | None, work: Path) -> list[tuple]:
    """(T, our smoothing s, our end-to-end s, reference smoothing s (cold)) for automatic s."""
    results = []
    for n_frames in [int(v) for v in args.scaling.split(",")]:
        data = make_ensemble(n_frames=n_frames, n_keypoints=args.keypoints, n_members=args.members, seed=2)
        csvs = write_members(data, work / f"scale{n_frames}")
        ours = run_ours(csvs, work / f"ours_scale{n_frames}.csv", None, args.repeats if n_frames <= 10_000 else 2)
        ref = "not run (minutes)"
        if python and n_frames <= 10_000:
            report = run_reference(python, csvs, work / f"ref_scale{n_frames}.csv", None, 1)
            ref = f"{report['runs'][0]['smooth']:.2f}"
        results.append((n_frames, median_phase(ours, "smooth"), median_phase(ours, "total"), ref))
    return results


def _multiview_rows(args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    """Two views of 5 points moving in 3-D: joint (latent) vs per-view smoothing (ours only)."""
    data = make_two_view_ensemble(n_frames=args.frames, n_members=args.members, seed=3)
    n_points = data.truth.shape[1] // 2
    groups = [[p, p + n_points] for p in range(n_points)]
    start = time.perf_counter()
    joint = eks.smooth_multiview(data.members, groups)
    joint_s = time.perf_counter() - start
    single = eks.smooth(data.members)
    values = {name: r.to_array() for name, r in (("joint", joint), ("single", single))}
    return [
        (
            f"multi-view (2 views x {n_points} points): RMSE joint / per-view (px)",
            f"{rmse(values['joint'], data.truth):.3f} / {rmse(values['single'], data.truth):.3f}",
            "-",
            "eks 4.6.2 multicam not compared",
        ),
        (
            "multi-view: 95% coverage / runtime (s)",
            f"{coverage(values['joint'], data.truth):.3f} / {joint_s:.2f}",
            "-",
            "-",
        ),
    ]


def _ref_times(report: dict | None, phase: str, error: str) -> str:
    if report is None:
        return f"not run: {error}"
    times = [run[phase] for run in report["runs"]]
    return f"{times[0]:.2f} (cold)" + (f", {min(times[1:]):.2f} (warm)" if len(times) > 1 else "")


def _ratio(report: dict | None, phase: str, ours: float) -> str:
    if report is None:
        return "-"
    times = [run[phase] for run in report["runs"]]
    warm = min(times[1:]) if len(times) > 1 else times[0]
    return f"ours {warm / ours:.0f}x faster than warm ref ({times[0] / ours:.0f}x cold)"


def _fmt(report: dict | None, metric, spec: str = ".3f") -> str:
    return "not run" if report is None else format(metric(report), spec)


def _markdown(command: str, rows, scaling, ref_error: str, args) -> list[str]:
    lines = [
        *header("Ensemble Kalman Smoother: ours vs eks 4.6.2", command),
        f"Synthetic ensemble: T={args.frames}, K={args.keypoints}, M={args.members}; random-walk truth "
        "(step sd 1-3 px); member noise sd 1-4 px; 2% single-member outliers of 30-120 px "
        "(likelihood 0.01-0.2); 0.3% of (frame, keypoint) where 3 of 5 members jump together by "
        "30-120 px; variant with 1% of frames all-NaN (runs of 1-5 frames). The machine is shared "
        "with other jobs. Threads: ours as in the command's variables (2 unless set), the reference "
        "OMP_NUM_THREADS=2 and 2 XLA threads. The reference runs in a "
        "subprocess from its own venv on the same CSV files, doing what its fit_eks_singlecam "
        "does in three timed phases (read CSVs, ensemble_kalman_smoother_singlecam, to_csv); "
        "'cold' is its first call in the process (includes JAX compilation), 'warm' a repeat "
        f"call. Ours: the same three phases, median of {args.repeats} runs, with the defaults (s "
        "fitted: robust rejection of outlying members, calibrated noise; s fixed: eks's model); "
        "our smoothed CSV is written by a vectorised numpy formatter with 10 significant digits "
        "(same layout as eks's pandas to_csv).",
        "",
    ]
    if ref_error:
        lines += [f"**Reference not run:** {ref_error}", ""]
    lines += ["| metric | ours | eks 4.6.2 | note |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [
        "",
        "Scaling (automatic s; smoothing = ensemble stats + s fit + smoother, from arrays):",
        "",
        "| T | ours smoothing (s) | ours smoothing per 1,000 frames (s) | ours end to end (s) "
        "| eks 4.6.2 smoothing (s, cold) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {t} | {o:.3f} | {1000 * o / t:.4f} | {e:.2f} | {r} |" for t, o, e, r in scaling]
    lines += [
        "",
        "Notes: with a fixed s both sides smooth the same model (ours: noise='eks'; same "
        "initial state and variance, same population ensemble variance divided by the mean "
        "likelihood), so the differences are the reference's float32 arithmetic. With "
        "automatic s the reference fits s by Adam on a likelihood with a *constant* noise "
        "(median of the ensemble variance); ours (noise='calibrated', the default when s is "
        "fitted) shrinks each frame's ensemble variance halfway to the series' median, scales "
        "it by a noise factor c per series and maximises the marginal likelihood over s with "
        "c profiled out in closed form (grid over log s, then Brent's method), using the same "
        "time-varying noise as the smoother. 'noise=eks' is our s search with eks's noise "
        "model, for comparison. Our s is relative to the shrunk ensemble variance; s x c is "
        "the random walk's variance in px^2/frame.",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
