"""``elp triangulate``: 3D keypoints from the 2D predictions of calibrated cameras."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from element_lightning_pose.engine.atomic import check_output
from element_lightning_pose.engine.errors import ElpError

METHODS = ("dlt", "robust", "smooth")


class ArgumentError(ElpError):
    """A command-line value is malformed; the message names the option."""


def configure_parser(parser: argparse.ArgumentParser, command: str = "triangulate") -> None:
    """Arguments of ``elp triangulate``."""
    parser.add_argument("calibration", type=Path, help="anipose calibration.toml of the cameras")
    parser.add_argument(
        "--view",
        action="append",
        required=True,
        metavar="NAME=PREDICTIONS.csv",
        help="predictions of camera NAME (repeat per camera; several CSVs for one camera form an ensemble)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="smooth",
        help="dlt: weighted linear; robust: camera pairs + Student-t; smooth: the Bayesian 3D smoother (default)",
    )
    parser.add_argument(
        "--skeleton",
        type=Path,
        default=None,
        metavar="EDGES.txt",
        help="limb-length prior for --method smooth: one 'A B' (or A-B, A,B) body-part pair per line",
    )
    parser.add_argument(
        "--min-likelihood", type=float, default=0.5, help="predictions below this likelihood are ignored (default 0.5)"
    )
    parser.add_argument(
        "--reproject",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write DIR/<camera>.csv: the 3D estimate projected into each camera",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="3D points CSV to write")


def parse_views(items: list[str]) -> dict[str, list[Path]]:
    """``NAME=PATH`` items -> {name: [paths]} in order of appearance."""
    views: dict[str, list[Path]] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ArgumentError(f"--view {item!r} is not NAME=PREDICTIONS.csv")
        views.setdefault(name, []).append(Path(path))
    return views


def read_skeleton(path: Path, bodyparts: list[str]) -> list[tuple[int, int]]:
    """Edges file -> index pairs; errors name the file, line and unknown body part."""
    if not path.is_file():
        raise ArgumentError(f"--skeleton {path}: file not found")
    edges = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        names = text.replace(",", " ").replace("-", " ").split()
        if len(names) != 2:
            raise ArgumentError(f"{path}:{number}: {line!r} is not a pair of body parts")
        for name in names:
            if name not in bodyparts:
                raise ArgumentError(f"{path}:{number}: body part {name!r} is not in the predictions {bodyparts}")
        edges.append((bodyparts.index(names[0]), bodyparts.index(names[1])))
    return edges


def run(args: argparse.Namespace) -> int:
    """Triangulate and write the 3D CSV (and the reprojections)."""
    from tqdm import tqdm

    from element_lightning_pose.engine.multicam.cameras import read_calibration
    from element_lightning_pose.engine.multicam.io import Points3D, read_views, write_points3d, write_reprojections
    from element_lightning_pose.engine.multicam.smoother import SmootherOptions, ensemble_observations, smooth_3d
    from element_lightning_pose.engine.multicam.triangulate import triangulate_dlt, triangulate_robust

    group = read_calibration(args.calibration)
    check_outputs(args, group.names)
    views = read_views(parse_views(args.view), group.names)
    edges = read_skeleton(args.skeleton, views.bodyparts) if args.skeleton else None
    if edges and args.method != "smooth":
        raise ArgumentError(f"--skeleton needs --method smooth (got --method {args.method})")
    pixels, likelihood, variance = ensemble_observations(views.members, args.min_likelihood)
    n_frames, n_kp = pixels.shape[1:3]
    if args.method == "smooth":
        options = SmootherOptions(min_likelihood=args.min_likelihood)
        with tqdm(total=1, desc="smoothing", unit="iter", disable=n_frames * n_kp < 20000) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = smooth_3d(group, pixels, likelihood, variance, skeleton=edges, options=options, progress=progress)
        points, var, error, n_views = result.points, result.variance, result.reprojection_error, result.n_views
    else:
        weights = np.where(likelihood >= args.min_likelihood, likelihood, 0.0)
        method = triangulate_dlt if args.method == "dlt" else triangulate_robust
        tri = method(group, pixels, weights)
        points, var, error, n_views = tri.points, tri.variance, tri.reprojection_error, tri.n_views
    table = Points3D(points, var, error, n_views.astype(float), views.bodyparts, views.index)
    write_points3d(args.output, table)
    print(
        f"wrote {args.output}: {n_frames} frames x {n_kp} body parts ({args.method}), "
        f"median reprojection error {np.nanmedian(error):.2f} px, NaN share {np.isnan(points[..., 0]).mean():.3f}"
    )
    if args.reproject:
        projected = group.project(points)
        paths = write_reprojections(args.reproject, group.names, projected, views.bodyparts, index=views.index)
        print(f"wrote {len(paths)} reprojected predictions CSVs in {args.reproject}")
    return 0


def check_outputs(args: argparse.Namespace, cameras: list[str]) -> None:
    """Before any work: ``-o`` and each ``--reproject DIR/<camera>.csv`` can be written, and none
    is an input (the calibration, a view's CSV, the skeleton) or another of these outputs."""
    inputs = [args.calibration, *(p for paths in parse_views(args.view).values() for p in paths)]
    inputs += [args.skeleton] if args.skeleton else []
    check_output(args.output, inputs=inputs, what="-o")
    if args.reproject:
        check_output(args.reproject, folder=True, what="--reproject")
        for name in cameras:
            check_output(args.reproject / f"{name}.csv", inputs=[*inputs, args.output], what="--reproject")
