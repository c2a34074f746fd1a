"""``elp triangulate`` (and ``elp calibrate``) end to end on a tiny synthetic rig, and their errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from element_lightning_pose.engine.data.keypoints import write_predictions
from element_lightning_pose.engine.multicam.cameras import write_calibration
from element_lightning_pose.synthetic import rig
from tests.conftest import REPO_ROOT

REPO = REPO_ROOT  # the repository root


def elp(*args: str | Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "element_lightning_pose.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("rig")
    group = rig.make_rig(3, seed=4)
    body = rig.make_body(60, seed=4)
    write_calibration(group, root / "calibration.toml")
    obs = rig.observe(group, body.points, seed=4, noise_px=1.0, jump_rate=0.03, occlusion_rate=0.02)
    files = {}
    for c, cam in enumerate(group.cameras):
        values = np.concatenate([obs.pixels[c], obs.likelihood[c][..., None]], axis=-1)
        files[cam.name] = [write_predictions(root / f"{cam.name}.csv", values, body.bodyparts)]
    # a second member for cam0: an ensemble
    rng = np.random.default_rng(0)
    member = np.concatenate([obs.pixels[0] + rng.normal(0, 1, obs.pixels[0].shape), obs.likelihood[0][..., None]], -1)
    files["cam0"].append(write_predictions(root / "cam0_m2.csv", member, body.bodyparts))
    (root / "edges.txt").write_text("".join(f"{body.bodyparts[a]} {body.bodyparts[b]}\n" for a, b in body.edges))
    return root, group, body, files


def _views(files):
    return [arg for name, paths in files.items() for p in paths for arg in ("--view", f"{name}={p}")]


@pytest.mark.parametrize("method", ["dlt", "robust", "smooth"])
def test_triangulate_end_to_end(project, method, tmp_path):
    root, group, body, files = project
    extra = ["--skeleton", root / "edges.txt"] if method == "smooth" else []
    done = elp(
        "triangulate",
        root / "calibration.toml",
        *_views(files),
        "--method",
        method,
        *extra,
        "--reproject",
        tmp_path / "reprojected",
        "-o",
        tmp_path / "points3d.csv",
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "points3d.csv", header=[0, 1, 2], index_col=0)
    coords = list(dict.fromkeys(table.columns.get_level_values(2)))
    assert coords == ["x", "y", "z", "x_var", "y_var", "z_var", "reprojection_error", "n_views"]
    assert list(dict.fromkeys(table.columns.get_level_values(1))) == body.bodyparts
    assert len(table) == 60
    xyz = np.stack([table.xs(c, axis=1, level=2).to_numpy() for c in ("x", "y", "z")], -1)
    error = np.linalg.norm(xyz - body.points, axis=-1)
    assert np.nanmedian(error) < 3.0
    if method == "smooth":
        assert np.isfinite(xyz).all()
    for name in group.names:
        reprojected = pd.read_csv(tmp_path / "reprojected" / f"{name}.csv", header=[0, 1, 2], index_col=0)
        assert reprojected.shape == (60, 3 * len(body.bodyparts))


def test_view_names_must_match_the_calibration(project, tmp_path):
    root, _, _, files = project
    views = ["--view", f"cam0={files['cam0'][0]}", "--view", f"camX={files['cam1'][0]}"]
    done = elp("triangulate", root / "calibration.toml", *views, "-o", tmp_path / "out.csv")
    assert done.returncode == 2
    assert "camX" in done.stderr and "cam2" in done.stderr and "['cam0', 'cam1', 'cam2']" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.csv").exists()


def test_body_parts_and_frame_counts_must_match(project, tmp_path):
    root, _, body, files = project
    frame = pd.read_csv(files["cam1"][0], header=[0, 1, 2], index_col=0)
    frame.iloc[:50].to_csv(tmp_path / "short.csv")
    renamed = frame.rename(columns={body.bodyparts[0]: "nose"}, level=1)
    renamed.to_csv(tmp_path / "renamed.csv")
    base = ["--view", f"cam0={files['cam0'][0]}", "--view", f"cam2={files['cam2'][0]}"]
    done = elp(
        "triangulate",
        root / "calibration.toml",
        *base,
        "--view",
        f"cam1={tmp_path / 'short.csv'}",
        "-o",
        tmp_path / "out.csv",
    )
    assert done.returncode == 2 and "short.csv has 50 frames" in done.stderr and "60" in done.stderr
    done = elp(
        "triangulate",
        root / "calibration.toml",
        *base,
        "--view",
        f"cam1={tmp_path / 'renamed.csv'}",
        "-o",
        tmp_path / "out.csv",
    )
    assert done.returncode == 2 and "renamed.csv has body parts" in done.stderr and "'nose'" in done.stderr
    (tmp_path / "bad_edges.txt").write_text("snout tail\n")
    done = elp(
        "triangulate",
        root / "calibration.toml",
        *_views(files),
        "--skeleton",
        tmp_path / "bad_edges.txt",
        "-o",
        tmp_path / "out.csv",
    )
    assert done.returncode == 2 and "bad_edges.txt:1: body part 'tail'" in done.stderr
    assert not (tmp_path / "out.csv").exists()
