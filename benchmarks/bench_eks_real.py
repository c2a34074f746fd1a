"""Real network ensembles: our Ensemble Kalman Smoother vs eks 4.6.2 on the eks repository's examples.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_eks_real.py \
        [--data ../shared/data/eks-examples] [--out benchmarks/results/eks_real.md] [--figure docs/img/eks_real.png]

For every camera of every folder (mirror-mouse: one file per seed with top and bottom views;
IBL paw: left and right cameras; fly: cameras A, B, C) both smoothers run on the same member
CSVs, s fitted, defaults on both sides (ours: robust rejection). There is no ground truth, so:

* agreement: median distance between the two smoothed traces (px), and the share of
  (frame, keypoint) where they are more than 5 px apart;
* temporal norm: mean distance between consecutive frames of a trace (px/frame; lower is
  smoother, but a trace that ignores real motion is smooth too);
* PCA residual (where several views see the same point in the same frames: mirror-mouse
  top/bottom, the fly's three cameras): each point's 2V coordinates are projected on the
  3 principal components fitted on the frames where the members agree best; the residual
  (px) measures how far the trace is from any single 3-D point, i.e. multi-view consistency,
  which neither smoother uses in single-view mode;
* flagged: share of (frame, keypoint) whose posterior sd exceeds 5 px;
* wall time end to end (read CSVs, smooth, write CSV);
* ours with ``view_groups`` (the multi-view smoother on the same members, mirror-mouse top and
  bottom, the fly's three cameras): PCA residual, temporal norm, time. eks 4.6.2's
  multi-camera smoother is not run (IBL's cameras have different frame rates and need its
  timestamp resampling script; not done).

Where the two disagree by more than 5 px, the PCA residual of each decides which is
consistent with the other views (the figure shows the largest disagreement).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _common import REPO, RESULTS, command_line, header, write_results  # noqa: E402
from bench_eks import ensure_reference, run_ours, run_reference  # noqa: E402

from element_lightning_pose.engine import eks  # noqa: E402

FAR = 5.0  # px


def camera_sets(data: Path) -> list[tuple[str, str, list[Path]]]:
    """(folder, camera, member CSVs) for every camera of every example folder."""
    sets = [("mirror-mouse", "top+bottom", sorted((data / "mirror-mouse").glob("*.csv")))]
    for side in ("left", "right"):
        sets.append(("ibl-paw", side, sorted((data / "ibl-paw").glob(f"*.{side}.rng=*.csv"))))
    for cam in ("A", "B", "C"):
        sets.append(("fly", cam, sorted((data / "fly").glob(f"*Cam-{cam}_*.csv"))))
    return [s for s in sets if s[2]]


def traces(values: np.ndarray) -> np.ndarray:
    """(T, K, 2) x, y of an eks-layout (T, K, 9) array."""
    return values[..., :2]


def temporal_norm(xy: np.ndarray) -> float:
    return float(np.nanmean(np.linalg.norm(np.diff(xy, axis=0), axis=-1)))


def flagged(values: np.ndarray) -> float:
    sd = np.sqrt(np.nanmean(values[..., 7:9], axis=-1))
    return float(np.mean(sd > FAR))


def pca_residual(views: list[np.ndarray], fit_views: list[np.ndarray], spread: np.ndarray) -> np.ndarray:
    """(T, P) distance (px) of each point's stacked view coordinates from a 3-D PCA subspace.

    ``views``: per view (T, P, 2) traces to evaluate; ``fit_views``: the same from the ensemble
    median, fitted on frames where ``spread`` (T, P) is at most its median."""
    stacked = np.concatenate(views, axis=-1)  # (T, P, 2V)
    fit = np.concatenate(fit_views, axis=-1)
    out = np.full(stacked.shape[:2], np.nan)
    for p in range(stacked.shape[1]):
        good = np.isfinite(fit[:, p]).all(axis=-1) & (spread[:, p] <= np.nanmedian(spread[:, p]))
        mean = fit[good, p].mean(axis=0)
        _, _, vt = np.linalg.svd(fit[good, p] - mean, full_matrices=False)
        basis = vt[:3].T
        centred = stacked[:, p] - mean
        residual = centred - centred @ basis @ basis.T
        out[:, p] = np.linalg.norm(residual, axis=-1) / np.sqrt(len(views))  # per view
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "eks-examples")
    parser.add_argument("--ref-venv", type=Path, default=Path(os.environ.get("EKS_REF_VENV", "/tmp/eks-ref-venv")))
    parser.add_argument("--out", type=Path, default=RESULTS / "eks_real.md")
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        args.data = Path("/work/shared/data/eks-examples")
    command = command_line(argv)
    python, error = ensure_reference(args.ref_venv)
    if python is None:
        raise SystemExit(error)
    work = Path(tempfile.mkdtemp(prefix="eks-real-"))
    rows, outputs = [], {}
    for folder, camera, csvs in camera_sets(args.data):
        ours = run_ours(csvs, work / f"{folder}-{camera}-ours.csv", None, 3)
        ref = run_reference(python, csvs, work / f"{folder}-{camera}-ref.csv", None, 2)
        mine, theirs = ours["values"], ref["values"]
        _MEMBERS[(folder, camera)] = eks.load_members(csvs)[0]
        distance = np.linalg.norm(traces(mine) - traces(theirs), axis=-1)
        outputs[(folder, camera)] = (mine, theirs, ours["result"], distance)
        rows.append(
            {
                "set": f"{folder} {camera}",
                "frames": mine.shape[0],
                "keypoints": mine.shape[1],
                "members": len(csvs),
                "agree": float(np.nanmedian(distance)),
                "far": float(np.nanmean(distance > FAR)),
                "tn": (temporal_norm(traces(mine)), temporal_norm(traces(theirs))),
                "flag": (flagged(mine), flagged(theirs)),
                "time": (
                    float(np.median([r["total"] for r in ours["runs"]])),
                    min(r["total"] for r in ref["runs"][1:]) if len(ref["runs"]) > 1 else ref["runs"][0]["total"],
                ),
                "pca": None,
            }
        )
    multiview = _pca_rows(outputs, rows)
    figure_note = _figure(outputs, args.figure) if args.figure else ""
    print(write_results(args.out, _markdown(command, rows, multiview, figure_note)))
    return 0


def _pca_rows(outputs: dict, rows: list[dict]) -> list[str]:
    """PCA residual of ours and eks (median, and at the frames where they disagree)."""
    lines = []
    groups = []
    if ("mirror-mouse", "top+bottom") in outputs:
        mine, theirs, result, distance = outputs[("mirror-mouse", "top+bottom")]
        names = result.bodyparts
        tops = [k for k, n in enumerate(names) if n.endswith("_top")]
        bots = [names.index(names[k].replace("_top", "_bot")) for k in tops]
        groups.append(
            ("mirror-mouse", [(mine, theirs, result, distance, tops), (mine, theirs, result, distance, bots)])
        )
    if all(("fly", c) in outputs for c in "ABC"):
        groups.append(("fly", [(*outputs[("fly", c)], list(range(outputs[("fly", c)][0].shape[1]))) for c in "ABC"]))
    for name, views in groups:
        mine = [traces(v[0])[:, k] for v in views for k in [v[4]]]
        theirs = [traces(v[1])[:, k] for v in views for k in [v[4]]]
        centre = [v[2].centre[:, v[4]] for v in views]
        spread = np.sum([np.nanmean(v[2].ensemble_var[:, v[4]], axis=-1) for v in views], axis=0)
        ours_res = pca_residual(mine, centre, spread)
        ref_res = pca_residual(theirs, centre, spread)
        joint, joint_time, joint_tn = _multiview(name, views)
        joint_res = pca_residual(joint, centre, spread)
        far = np.any([v[3][:, v[4]] > FAR for v in views], axis=0)
        better = float(np.mean(ours_res[far] < ref_res[far])) if far.any() else float("nan")
        lines.append(
            f"| {name} | {np.nanmedian(ours_res):.2f} | {np.nanmedian(ref_res):.2f} | "
            f"{int(far.sum())} | {np.nanmedian(ours_res[far]) if far.any() else float('nan'):.2f} | "
            f"{np.nanmedian(ref_res[far]) if far.any() else float('nan'):.2f} | {better:.2f} | "
            f"{np.nanmedian(joint_res):.2f} / {joint_tn:.2f} / {joint_time:.2f} |"
        )
    return lines


def _multiview(name: str, views: list) -> tuple[list[np.ndarray], float, float]:
    """Ours with view groups on the same members: per view (T, P, 2) traces, time, temporal norm."""
    import time

    keys = [("mirror-mouse", "top+bottom")] * 2 if name == "mirror-mouse" else [("fly", c) for c in "ABC"]
    if name == "mirror-mouse":
        members = _MEMBERS[keys[0]]
        names = views[0][2].bodyparts
        groups = [[names[a], names[b]] for a, b in zip(views[0][4], views[1][4])]
        columns = [views[0][4], views[1][4]]
    else:
        members = np.concatenate([_MEMBERS[k] for k in keys], axis=2)
        n = _MEMBERS[keys[0]].shape[2]
        names = [f"{p}_{c}" for c in "ABC" for p in views[0][2].bodyparts]
        groups = [[names[v * n + p] for v in range(3)] for p in range(n)]
        columns = [list(range(v * n, (v + 1) * n)) for v in range(3)]
    start = time.perf_counter()
    result = eks.smooth_multiview(members, groups, names)
    elapsed = time.perf_counter() - start
    xy = np.stack([result.x, result.y], axis=-1)
    return [xy[:, c] for c in columns], elapsed, temporal_norm(xy)


def _figure(outputs: dict, path: Path) -> str:
    """The (keypoint, frames) of the largest disagreement: members, ours, eks (x and y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, (mine, theirs, result, distance) = max(outputs.items(), key=lambda kv: np.nanmax(kv[1][3]))
    t, k = np.unravel_index(np.nanargmax(distance), distance.shape)
    span = slice(max(t - 40, 0), min(t + 40, mine.shape[0]))
    frames = np.arange(mine.shape[0])[span]
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    members = _members_of(key)
    for axis, c, label in ((axes[0], 0, "x"), (axes[1], 1, "y")):
        for m, member in enumerate(members):
            axis.plot(frames, member[span, k, c], color="0.7", lw=0.8, label="members" if m == 0 else None)
        axis.plot(frames, theirs[span, k, c], color="tab:red", lw=1.5, label="eks 4.6.2")
        axis.plot(frames, mine[span, k, c], color="tab:blue", lw=1.5, label="ours")
        sd = np.sqrt(mine[span, k, 7 + c])
        axis.fill_between(frames, mine[span, k, c] - 2 * sd, mine[span, k, c] + 2 * sd, color="tab:blue", alpha=0.15)
        axis.set_ylabel(f"{label} (px)")
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"{key[0]} {key[1]}, {result.bodyparts[k]}: largest disagreement at frame {t}")
    axes[1].set_xlabel("frame")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return f"{key[0]} {key[1]} {result.bodyparts[k]} frame {t} ({np.nanmax(distance):.1f} px apart)"


_MEMBERS: dict = {}


def _members_of(key: tuple[str, str]) -> np.ndarray:
    return _MEMBERS.get(key, np.zeros((0, 0, 0, 3)))


def _markdown(command: str, rows: list[dict], multiview: list[str], figure_note: str) -> list[str]:
    lines = [
        *header("Real ensembles: ours vs eks 4.6.2 (single-camera smoothers)", command),
        "Data: the eks repository's examples (`eks-examples/`, see its README). The machine is shared "
        "with other jobs. s fitted on "
        "both sides, defaults otherwise (ours: robust rejection, calibrated noise). Time: end to end "
        "(read CSVs, smooth, write CSV), ours median of 3, eks warm (second call).",
        "",
        "| set | T x K x M | median distance ours-eks (px) | share > 5 px apart | temporal norm ours / eks "
        "(px/frame) | flagged (posterior sd > 5 px) ours / eks | time ours / eks (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['frames']} x {r['keypoints']} x {r['members']} | {r['agree']:.2f} | {r['far']:.3f} | "
            f"{r['tn'][0]:.2f} / {r['tn'][1]:.2f} | {r['flag'][0]:.3f} / {r['flag'][1]:.3f} | "
            f"{r['time'][0]:.2f} / {r['time'][1]:.2f} |"
        )
    if multiview:
        lines += [
            "",
            "PCA residual (px per view; the views of one point in the same frames, 3 components "
            "fitted on the ensemble medians where the members agree best):",
            "",
            "| set | ours median | eks median | (frame, point) > 5 px apart | ours there | eks there "
            "| share of those where ours is more consistent | ours multi-view (view_groups): PCA residual "
            "/ temporal norm / time (s) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += multiview
    if figure_note:
        lines += ["", f"Figure `docs/img/eks_real.png`: {figure_note}."]
    return lines


if __name__ == "__main__":
    sys.exit(main())
