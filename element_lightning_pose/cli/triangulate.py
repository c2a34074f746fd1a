"""``elp triangulate``: 3D keypoints from the 2D predictions of calibrated cameras.

The same route as the ``multicam.Triangulation`` table: the options are validated by
``TriangulationParams`` (the table's parameter model), the views are read by
``engine.multicam.io.read_views`` (the table's reader) and ``triangulate_views`` runs the method.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from element_lightning_pose.cli import ArgumentError
from element_lightning_pose.engine import config
from element_lightning_pose.engine.atomic import check_output
from element_lightning_pose.engine.multicam.cameras import read_calibration
from element_lightning_pose.engine.multicam.io import (
    Points3D,
    ViewSource,
    read_views,
    select_cameras,
    write_points3d,
    write_reprojections,
)
from element_lightning_pose.engine.multicam.params import METHODS, TriangulationParams, triangulate_views

# The method names of TriangulationParams, plus this command's former name of the smoother.
METHOD_ALIASES = {"smooth": "smoother"}

# How this command spells the parameters it sets itself, so that an error names the option typed.
CLI_NAMES = {"method": "--method", "min_likelihood": "--min-likelihood", "skeleton": "--skeleton"}


def configure_parser(parser: argparse.ArgumentParser, command: str = "triangulate") -> None:
    """Arguments of ``elp triangulate``."""
    defaults = TriangulationParams()
    parser.add_argument("calibration", type=Path, help="anipose calibration.toml of the cameras")
    parser.add_argument(
        "--view",
        action="append",
        required=True,
        metavar="NAME=PREDICTIONS.csv",
        help="predictions of camera NAME (repeat per camera; several CSVs for one camera form an ensemble); "
        "cameras of the calibration without a view are left out (at least two views)",
    )
    parser.add_argument(
        "--frame-offset",
        action="append",
        default=[],
        metavar="NAME=N",
        help="camera NAME's files start N frames before the others: 3D frame t is their row t + N "
        "(repeatable; default 0); the 3D CSV is then indexed by 3D frame 0, 1, ...",
    )
    parser.add_argument(
        "--method",
        choices=(*METHODS, *METHOD_ALIASES),
        default=None,
        help="smoother: the Bayesian 3D smoother (default; 'smooth' is an alias); robust: camera pairs + "
        "Student-t; dlt: weighted linear (the methods of TriangulationParamSet)",
    )
    parser.add_argument(
        "--skeleton",
        type=Path,
        default=None,
        metavar="EDGES.txt",
        help="limb-length prior of the smoother: one 'A B' (or A-B, A,B) body-part pair per line",
    )
    parser.add_argument(
        "--min-likelihood",
        type=float,
        default=None,
        help=f"predictions below this likelihood are ignored, in [0, 1] (default {defaults.min_likelihood:g})",
    )
    parser.add_argument(
        "--set",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other triangulation parameter, as TriangulationParamSet stores it (value in YAML), "
        "e.g. --set smoother.iterations=20 --set bone_lengths=[30,42] (repeatable; unset keys keep "
        "their defaults)",
    )
    parser.add_argument(
        "--reproject",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write DIR/<camera>.csv: the 3D estimate projected into each camera used",
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


def parse_offsets(items: list[str], views: dict[str, list[Path]]) -> dict[str, int]:
    """``NAME=N`` items -> {name: N}; each names a view once, N an integer >= 0."""
    offsets: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or name in offsets:
            raise ArgumentError(f"--frame-offset {item!r} is not NAME=N (once per camera)")
        if name not in views:
            raise ArgumentError(f"--frame-offset {item!r}: no --view names camera {name!r} (views: {sorted(views)})")
        try:
            offsets[name] = int(value)
        except ValueError:
            raise ArgumentError(f"--frame-offset {item!r}: {value!r} is not a whole number of frames") from None
        if offsets[name] < 0:
            raise ArgumentError(f"--frame-offset {item!r}: the offset must be >= 0 (leading frames to skip)")
    return offsets


def read_skeleton(path: Path, bodyparts: list[str] | None = None) -> list[list[str]]:
    """Edges file -> body-part name pairs; errors name the file, line and (given ``bodyparts``)
    a body part that is not one of them."""
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
            if bodyparts is not None and name not in bodyparts:
                raise ArgumentError(f"{path}:{number}: body part {name!r} is not in the predictions {bodyparts}")
        edges.append(names)
    return edges


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items -> a nested dict (dotted keys), values read as YAML."""
    values: dict[str, Any] = {}
    for item, parts, value in config.parse_assignments(items, "--set", "smoother.iterations=20"):
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ArgumentError(f"--set {item!r}: {part!r} is set to a value and used as a section")
        node[parts[-1]] = value
    return values


def parameters(args: argparse.Namespace) -> TriangulationParams:
    """The options as one ``TriangulationParams`` (the table's model validates them)."""
    values = parse_assignments(args.params)
    given = {
        "method": METHOD_ALIASES.get(args.method, args.method),
        "min_likelihood": args.min_likelihood,
        "skeleton": read_skeleton(args.skeleton) if args.skeleton else None,
    }
    for key, value in given.items():
        if value is not None:
            if key in values:
                raise ArgumentError(f"{CLI_NAMES[key]} and --set {key}=... both set {key}; give one")
            values[key] = value
    return TriangulationParams.from_dict(values, source="options", key_names=CLI_NAMES)


def run(args: argparse.Namespace) -> int:
    """Triangulate and write the 3D CSV (and the reprojections)."""
    files = parse_views(args.view)
    offsets = parse_offsets(args.frame_offset, files)
    params = parameters(args)  # checked before any predictions file is read
    group = read_calibration(args.calibration)
    group, unused = select_cameras(group, list(files))
    check_outputs(args, group.names)
    sources = [ViewSource(name, tuple(files[name]), offsets.get(name, 0)) for name in group.names]
    views = read_views(
        sources,
        min_likelihood=params.min_likelihood,
        image_sizes={camera.name: camera.size for camera in group.cameras},
    )
    if args.skeleton:  # the file's line that names a body part the predictions lack
        read_skeleton(args.skeleton, views.bodyparts)
    if unused:
        print(f"cameras of the calibration without a view, not used: {unused}")
    index = list(range(len(views.index))) if offsets else views.index
    n_frames, n_kp = views.pixels.shape[1:3]
    with tqdm(total=1, desc=params.method, unit="iter", disable=n_frames * n_kp < 20000) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = triangulate_views(
            group, views.pixels, views.likelihood, views.variance, views.bodyparts, params, progress
        )
    table = Points3D(
        result.points,
        result.variance,
        result.mean_reprojection_error,
        result.n_views.astype(float),
        views.bodyparts,
        index,
    )
    write_points3d(args.output, table)
    error = result.mean_reprojection_error
    print(
        f"wrote {args.output}: {n_frames} frames x {n_kp} body parts from cameras {group.names} ({params.method}), "
        f"median reprojection error {np.nanmedian(error) if np.isfinite(error).any() else float('nan'):.2f} px, "
        f"NaN share {np.isnan(result.points[..., 0]).mean():.3f}"
    )
    if args.reproject:
        projected = group.project(result.points)
        paths = write_reprojections(args.reproject, group.names, projected, views.bodyparts, index=index)
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
