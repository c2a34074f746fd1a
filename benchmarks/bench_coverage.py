"""Do the posterior intervals cover the truth on network outputs? The 3D smoother on the rig
demo's network, and the 2D EKS on real ensembles (issue #27 item 5).

1. **Rig demo** (``elp demo --rig``'s sizes: 3 cameras, 320x240 frames, 30 labeled instants,
   one network shared by the views, efficientnet_lite0 at 128x96, 30 epochs): the project
   from ``synthetic.rig_project.make_rig_project``, the held-out session of the demo (another
   walk, ``make_body(seed=1)``), its 2D predictions, then the 3D smoother with the true
   calibration, without and with the network's own error scale per body part
   (``smoother.error_px``, from ``engine.inference.evaluate`` on its labeled frames). Reported:
   3D error, posterior sd, median |error|/sd and the 95% coverage of (frame, body part, axis).
   The network, its evaluation and its predictions are cached under ``--work``.
2. **2D EKS on real ensembles** (``/work/shared/data/eks-examples``; no ground truth there):
   leave one member out. EKS on the other members; the held-out member's prediction is a new
   draw of "truth + a member's error", so its z-score against the posterior mean with the
   variance posterior + the ensemble's per-member variance should be N(0, 1) if the
   ensemble spread is an honest error scale. This checks the spread part only: an error every
   member shares (the 3D case above) cannot be seen without ground truth.

    OMP_NUM_THREADS=1 python benchmarks/bench_coverage.py --out benchmarks/results/coverage.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import header, markdown_table, write_results
from scipy.stats import t as student_t

Z95 = 1.959963984540054
EKS_EXAMPLES = Path("/work/shared/data/eks-examples")


# ------------------------------------------------------------------------------ 1. the rig demo


def rig_outputs(work: Path, args: argparse.Namespace) -> dict:
    """Train the demo's network once (cached) and predict the held-out session; returns the
    true group, truth (T, K, 3), pixels / likelihood (C, T, K, ...), the per-body-part error
    table of the labeled frames and the bodyparts."""
    cache = work / "rig_outputs.npz"
    if cache.is_file():
        data = dict(np.load(cache, allow_pickle=False))
        data["evaluation"] = json.loads((work / "evaluation.json").read_text())
        return data
    from element_lightning_pose.demo.common import demo_params
    from element_lightning_pose.demo.rig import rig_sizes
    from element_lightning_pose.engine.data.projects import read_project_labels
    from element_lightning_pose.engine.inference.evaluate import evaluate
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video
    from element_lightning_pose.engine.multicam.cameras import read_calibration
    from element_lightning_pose.engine.training import train
    from element_lightning_pose.synthetic.rig import make_body, render_body_videos
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    width, height = args.image_size, int(round(args.image_size * 0.75))
    project = make_rig_project(
        work / "project",
        n_cameras=3,
        image_size=(width, height),
        n_frames=args.frames,
        n_labeled=args.labeled,
        n_board_frames=2,
        seed=0,
    )
    group = read_calibration(project.calibration)
    params = demo_params(args.epochs, args.resize, "efficientnet_lite0")
    params["data"]["image_resize"] = list(rig_sizes(args.resize))[::-1]
    params["data"]["multiview"] = "shared"
    params["data"]["csv_file"] = list(project.csv_files)
    params["data"]["view_names"] = list(project.camera_names)
    start = time.perf_counter()
    train(params, project.root, work / "model", progress=False)
    train_s = time.perf_counter() - start
    labels = read_project_labels(project.root, list(project.csv_files), list(project.camera_names))
    table = evaluate(work / "model", labels)
    evaluation = table.assign(view=table["image"].str.split("/").str[1]).to_dict(orient="list")
    body = make_body(args.frames, seed=1)  # the demo's held-out session
    radius = max(1, int(round(4 * width / 640)))
    rendered = render_body_videos(group, body.points, body.bodyparts, work / "session", radius=radius)
    model = load_model(work / "model")
    preds = [predict_video(model, rendered[name][0], progress=False).predictions for name in group.names]
    data = {
        "truth": body.points,
        "predictions": np.stack(preds),
        "bodyparts": np.array(body.bodyparts),
        "train_s": np.array(train_s),
    }
    np.savez(cache, **data)
    (work / "evaluation.json").write_text(json.dumps(evaluation))
    data["evaluation"] = evaluation
    return data


def coverage_row(points: np.ndarray, variance: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """3D error, posterior sd, median |error|/sd and 95% coverage over (frame, body part, axis)."""
    error = points - truth
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(error) / np.sqrt(variance)
    ok = np.isfinite(z)
    return {
        "error_median": float(np.nanmedian(np.linalg.norm(error, axis=-1))),
        "sd_median": float(np.nanmedian(np.sqrt(variance))),
        "ratio": float(np.median(z[ok])),
        "coverage": float(np.mean(z[ok] <= Z95)),
    }


def rig_section(data: dict) -> list[str]:
    from element_lightning_pose.engine.inference.metrics import error_scale_px
    from element_lightning_pose.engine.multicam.cameras import read_calibration
    from element_lightning_pose.engine.multicam.params import TriangulationParams, triangulate_views

    group = read_calibration(Path(data["calibration"]))
    bodyparts = [str(b) for b in data["bodyparts"]]
    evaluation = data["evaluation"]
    import pandas as pd

    table = pd.DataFrame(evaluation)
    summary = table.groupby(["bodypart", "split"])["error_px"].agg(n_frames="count", mean_px="mean").reset_index()
    scales = error_scale_px(summary)
    pred = data["predictions"]
    true_px = np.stack([cam.project(data["truth"]) for cam in group.cameras])
    pixel_error = np.nanmean(np.linalg.norm(pred[..., :2] - true_px, axis=-1), axis=(1, 2))
    arms = {
        "before: residuals alone (error_px None)": {},
        "after: error_px from the evaluation": {"error_px": "evaluation"},
    }
    rows = []
    for arm, smoother in arms.items():
        params = TriangulationParams.from_dict({"method": "smoother", "min_likelihood": 0.1, "smoother": smoother})
        start = time.perf_counter()
        result = triangulate_views(
            group,
            pred[..., :2],
            pred[..., 2],
            None,
            bodyparts,
            params,
            evaluation_error_px=np.array([[scales[b] for b in bodyparts]] * len(group)),
        )
        seconds = time.perf_counter() - start
        r = coverage_row(result.points, result.variance, data["truth"])
        rows.append(
            [
                arm,
                f"{r['error_median']:.1f}",
                f"{r['sd_median']:.2f}",
                f"{r['ratio']:.2f}",
                f"{r['coverage']:.3f}",
                f"{seconds:.1f}",
            ]
        )
        print(arm, r, flush=True)
    held = summary[summary["split"] != "train"]
    return [
        "## 1. The rig demo's network: the 3D smoother's 95% intervals against the truth",
        "",
        f"Network: efficientnet_lite0, {data['epochs']} epochs trained in {float(data['train_s']):.0f} s; "
        f"2D error on the held-out session per camera (px, mean distance): "
        + ", ".join(f"{name} {e:.1f}" for name, e in zip(group.names, pixel_error))
        + f"; on its labeled val+test frames {np.average(held['mean_px'], weights=held['n_frames']):.1f} px "
        f"({int(held['n_frames'].sum())} points). Error scale per body part (px sd per axis, "
        "`metrics.error_scale_px`): "
        + ", ".join(f"{b} {scales[b]:.1f}" for b in bodyparts)
        + ". Triangulation with the true calibration, `min_likelihood` 0.1 (the demo's); coverage over "
        f"{pred.shape[1]} frames x {len(bodyparts)} body parts x 3 axes (0.95 and a median |error|/sd of "
        "0.67 when honest).",
        "",
        *markdown_table(
            [
                "smoother",
                "3D error median (mm)",
                "posterior sd median (mm)",
                "median abs error / sd",
                "95% coverage",
                "wall time (s)",
            ],
            rows,
        ),
        "",
    ]


# ------------------------------------------------------------------------------ 2. 2D EKS, real ensembles


def eks_sets(root: Path) -> dict[str, list[Path]]:
    """Each single-view ensemble of the eks examples: {name: member CSVs}."""
    sets: dict[str, list[Path]] = {"mirror-mouse": sorted((root / "mirror-mouse").glob("*.csv"))}
    for view in ("left", "right"):
        sets[f"ibl-paw {view}"] = sorted((root / "ibl-paw").glob(f"*.{view}.rng=*.csv"))
    for camera in ("A", "B", "C"):
        sets[f"fly Cam-{camera}"] = sorted((root / "fly").glob(f"*_Cam-{camera}_*.csv"))
    return {name: files for name, files in sets.items() if len(files) >= 3}


def eks_leave_one_out(files: list[Path]) -> dict[str, float]:
    """EKS on all members but one, for each member in turn; the held-out member's z-scores
    against the posterior mean, with the posterior variance alone and with the posterior
    variance plus the others' spread (the predictive variance of a new member)."""
    from element_lightning_pose.engine.eks import load_members, smooth

    members, names = load_members(files)
    z_post, z_pred, z_model = [], [], []
    for held in range(len(members)):
        others = np.delete(members, held, axis=0)
        result = smooth(others, names)
        mean = np.stack([result.x, result.y], axis=-1)  # (T, K, 2)
        xy = others[..., :2]
        spread = np.nanvar(xy, axis=0, ddof=1)  # a member's error variance, as the others spread
        truth_like = members[held, ..., :2]
        ok = np.isfinite(truth_like).all(-1) & (members[held, ..., 2] >= 0.5)
        diff = (truth_like - mean)[ok]
        z_post.append(np.abs(diff) / np.sqrt(result.posterior_var[ok]))
        z_pred.append(np.abs(diff) / np.sqrt(result.posterior_var[ok] + spread[ok]))
        z_model.append(np.abs(diff) / np.sqrt(result.posterior_var[ok] + result.ensemble_var[ok]))
    post, pred = np.concatenate(z_post).ravel(), np.concatenate(z_pred).ravel()
    post, pred = post[np.isfinite(post)], pred[np.isfinite(pred)]
    noise = np.concatenate(z_model).ravel()
    noise = noise[np.isfinite(noise)]
    return {
        "members": float(len(members)),
        "frames": float(members.shape[1]),
        "n": float(post.size),
        "post_cover": float(np.mean(post <= Z95)),
        "post_ratio": float(np.median(post)),
        "pred_cover": float(np.mean(pred <= Z95)),
        "pred_ratio": float(np.median(pred)),
        # a variance estimated from M-1 members: a t with M-2 degrees of freedom when honest
        "pred_expected": float(2 * student_t.cdf(Z95, len(members) - 2) - 1),
        "model_cover": float(np.mean(noise <= Z95)),
        "model_ratio": float(np.median(noise)),
    }


def eks_section(root: Path) -> list[str]:
    rows = []
    for name, files in eks_sets(root).items():
        r = eks_leave_one_out(files)
        rows.append(
            [
                name,
                f"{r['members']:.0f}",
                f"{r['frames']:.0f}",
                f"{r['post_cover']:.3f}",
                f"{r['post_ratio']:.2f}",
                f"{r['pred_cover']:.3f}",
                f"{r['pred_ratio']:.2f}",
                f"{r['pred_expected']:.3f}",
                f"{r['model_cover']:.3f}",
                f"{r['model_ratio']:.2f}",
            ]
        )
        print(name, r, flush=True)
    columns = [
        "ensemble",
        "members",
        "frames",
        "95% posterior interval covers held-out member",
        "median abs z (posterior)",
        "95% predictive interval covers held-out member",
        "median abs z (predictive)",
        "predictive coverage expected if honest (t, M-2 dof)",
        "covered with EKS's noise R_t instead of the spread",
        "median abs z (R_t)",
    ]
    return [
        "## 2. 2D EKS on real ensembles: leave one member out",
        "",
        f"{root}: no ground truth. EKS (`engine.eks.smooth`, defaults: fitted s, calibrated noise, "
        "outlier rejection) on all members but one, each member held out in turn; points where the "
        "held-out member's likelihood is >= 0.5. Posterior: |held-out - posterior mean| / posterior sd. "
        "Predictive: the same over sqrt(posterior var + the other members' variance), the variance a new "
        "member should have if the spread is its error scale; a spread of M-1 members is itself a noisy "
        "variance, so an honest spread gives the t coverage of the next column. R_t: EKS's own observation "
        "noise (calibrated: the spread shrunk to its median, times a fitted scale).",
        "",
        *markdown_table(columns, rows),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_coverage"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--resize", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--labeled", type=int, default=30)
    parser.add_argument("--stage", choices=("outputs", "all"), default="all")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    lines = header("Posterior interval coverage on network outputs")
    data = rig_outputs(args.work, args)
    if args.stage == "outputs":
        print("outputs cached under", args.work)
        return 0
    data["calibration"] = str(args.work / "project" / "calibration.toml")
    data["epochs"] = args.epochs
    lines += rig_section(data)
    lines += eks_section(EKS_EXAMPLES)
    print("\n".join(lines))
    if args.out:
        write_results(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
