"""``elp triangulate`` (and ``elp calibrate``) end to end on a tiny synthetic rig, and their errors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from element_lightning_pose.cli import main
from element_lightning_pose.engine.data.keypoints import write_predictions
from element_lightning_pose.engine.multicam.cameras import calibration_text, write_calibration
from element_lightning_pose.engine.multicam.params import TriangulationParamError, TriangulationParams
from element_lightning_pose.synthetic import rig
from tests.conftest import REPO_ROOT, elp

REPO = REPO_ROOT  # the repository root


def elp_here(capsys, *args: str | Path) -> subprocess.CompletedProcess:
    """``elp`` in this process (faster, for the error cases): rc, stdout, stderr as ``elp``'s."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


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


def _points(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, header=[0, 1, 2], index_col=0)


# --------------------------------------------------------------------------- one route (issue 23, item 3)


def test_method_names_and_options_are_the_tables(project, tmp_path, capsys):
    """The methods of TriangulationParams ('smooth' kept as an alias of 'smoother') and any
    parameter of the table through --set."""
    root, _, _, files = project
    outputs = {}
    for name, extra in {
        "smoother": ["--method", "smoother"],
        "smooth": ["--method", "smooth"],
        "default": [],
        "one_iteration": ["--set", "smoother.iterations=1"],
    }.items():
        done = elp_here(
            capsys, "triangulate", root / "calibration.toml", *_views(files), *extra, "-o", tmp_path / f"{name}.csv"
        )
        assert done.returncode == 0, done.stderr
        outputs[name] = _points(tmp_path / f"{name}.csv")
    pd.testing.assert_frame_equal(outputs["smooth"], outputs["smoother"])
    pd.testing.assert_frame_equal(outputs["default"], outputs["smoother"])
    assert not outputs["one_iteration"].equals(outputs["smoother"])
    text = " ".join(elp("triangulate", "--help").stdout.split())  # argparse wraps the help
    assert "'smooth' is an alias" in text and "--set KEY=VALUE" in text
    done = elp_here(
        capsys,
        "triangulate",
        root / "calibration.toml",
        *_views(files),
        "--set",
        "robust.sigma=1",
        "-o",
        tmp_path / "x.csv",
    )
    assert done.returncode == 2 and "unknown key 'robust.sigma'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.csv").exists()


def test_body_parts_are_matched_by_name_as_the_table_does(project, tmp_path, capsys):
    root, _, body, files = project
    frame = _points(files["cam1"][0])
    scorer = frame.columns[0][0]
    reordered = frame[[(scorer, bp, c) for bp in reversed(body.bodyparts) for c in ("x", "y", "likelihood")]]
    reordered.to_csv(tmp_path / "cam1_reordered.csv")
    plain = elp_here(capsys, "triangulate", root / "calibration.toml", *_views(files), "-o", tmp_path / "plain.csv")
    views = {**files, "cam1": [tmp_path / "cam1_reordered.csv"]}
    done = elp_here(capsys, "triangulate", root / "calibration.toml", *_views(views), "-o", tmp_path / "reordered.csv")
    assert plain.returncode == 0 and done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(_points(tmp_path / "reordered.csv"), _points(tmp_path / "plain.csv"))


def test_frame_offsets_skip_a_views_leading_frames(project, tmp_path, capsys):
    root, _, body, files = project
    frame = _points(files["cam2"][0])
    lead = frame.iloc[:5].copy()
    lead.iloc[:, :] = 10.0  # five frames before the others started
    pd.concat([lead, frame]).reset_index(drop=True).to_csv(tmp_path / "cam2_early.csv")
    plain = elp_here(capsys, "triangulate", root / "calibration.toml", *_views(files), "-o", tmp_path / "plain.csv")
    views = {**files, "cam2": [tmp_path / "cam2_early.csv"]}
    args = ("--frame-offset", "cam2=5", "-o", tmp_path / "offset.csv")
    done = elp_here(capsys, "triangulate", root / "calibration.toml", *_views(views), *args)
    assert plain.returncode == 0 and done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(_points(tmp_path / "offset.csv"), _points(tmp_path / "plain.csv"))
    done = elp_here(capsys, "triangulate", root / "calibration.toml", *_views(views), "-o", tmp_path / "no_offset.csv")
    assert done.returncode == 2 and "65 frames" in done.stderr and "give frame offsets" in done.stderr


# --------------------------------------------------------------------------- bad input (issue 26, items 17, 24)


@pytest.mark.parametrize("value", ["nan", "2", "inf", "-1"])
def test_min_likelihood_is_validated_by_the_tables_model(project, tmp_path, capsys, value):
    root, _, _, files = project
    done = elp_here(
        capsys,
        "triangulate",
        root / "calibration.toml",
        *_views(files),
        f"--min-likelihood={value}",
        "-o",
        tmp_path / "o.csv",
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    with pytest.raises(TriangulationParamError) as table:
        TriangulationParams.from_dict({"min_likelihood": float(value)}, source="TriangulationParamSet")
    expected = str(table.value).split("min_likelihood", 1)[1]  # the same rule, spelt as the option
    assert f"--min-likelihood{expected}" in done.stderr
    assert not (tmp_path / "o.csv").exists()


def _broken_inputs(root: Path, calibration: Path, group, files) -> dict:
    """Each non-physical input, written in ``root``: (calibration, views, words the error must hold)."""
    frame = _points(files["cam2"][0])
    huge = frame.copy()
    huge.loc[:, (slice(None), slice(None), ["x", "y"])] = 1e300
    huge.to_csv(root / "cam2_huge.csv")
    one = frame.copy()
    one.iloc[7, 0] = 1e300
    one.to_csv(root / "cam2_one_huge.csv")
    sections = calibration_text(group).split("[cam_2]")
    focal = re.sub(r"matrix = \[\[[^,]+", "matrix = [[1e200", sections[1], count=1)
    (root / "calibration_focal.toml").write_text(sections[0] + "[cam_2]" + focal)  # a camera cannot hold it
    write_calibration(group.subset(["cam0"]), root / "calibration_one.toml")
    return {
        "huge_view": (calibration, {**files, "cam2": [root / "cam2_huge.csv"]}, ["'cam2'", "cam2_huge.csv", "1e+300"]),
        "one_huge_value": (calibration, {**files, "cam2": [root / "cam2_one_huge.csv"]}, ["row 7", "1e+300"]),
        "focal_1e200": (root / "calibration_focal.toml", files, ["'cam2'", "focal length", "1e+200"]),
        "one_camera": (root / "calibration_one.toml", {"cam0": files["cam0"]}, ["at least two cameras"]),
    }


@pytest.mark.parametrize("case", ["huge_view", "one_huge_value", "focal_1e200", "one_camera"])
def test_non_physical_inputs_are_one_line_errors(project, tmp_path, capsys, case):
    """A 1e300 px view, a 1e200 px focal length or a one-camera calibration: rc 2 naming the
    input, and no file (they gave a misleading error, or rc 0 with an all-NaN file)."""
    root, group, _, files = project
    calibration, views, words = _broken_inputs(tmp_path, root / "calibration.toml", group, files)[case]
    done = elp_here(capsys, "triangulate", calibration, *_views(views), "-o", tmp_path / "out.csv")
    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    for word in words:
        assert word in done.stderr, (word, done.stderr)
    assert not (tmp_path / "out.csv").exists()


def test_calibration_with_more_cameras_than_views(tmp_path, capsys):
    """Four calibrated cameras, predictions of three: the three are used, the fourth is named."""
    group = rig.make_rig(4, seed=5)
    body = rig.make_body(30, seed=5)
    write_calibration(group, tmp_path / "calibration.toml")
    obs = rig.observe(group, body.points, seed=5, noise_px=0.5, jump_rate=0.0, occlusion_rate=0.0)
    files = {}
    for c, cam in enumerate(group.cameras[:3]):
        values = np.concatenate([obs.pixels[c], obs.likelihood[c][..., None]], axis=-1)
        files[cam.name] = [write_predictions(tmp_path / f"{cam.name}.csv", values, body.bodyparts)]
    out = ("--reproject", tmp_path / "reprojected", "-o", tmp_path / "points3d.csv")
    done = elp_here(capsys, "triangulate", tmp_path / "calibration.toml", *_views(files), *out)
    assert done.returncode == 0, done.stderr
    assert "not used: ['cam3']" in done.stdout and "['cam0', 'cam1', 'cam2']" in done.stdout
    table = _points(tmp_path / "points3d.csv")
    xyz = np.stack([table.xs(c, axis=1, level=2).to_numpy() for c in ("x", "y", "z")], -1)
    assert np.nanmedian(np.linalg.norm(xyz - body.points, axis=-1)) < 2.0
    assert sorted(p.name for p in (tmp_path / "reprojected").iterdir()) == ["cam0.csv", "cam1.csv", "cam2.csv"]
    done = elp_here(
        capsys, "triangulate", tmp_path / "calibration.toml", *_views({"cam1": files["cam1"]}), "-o", tmp_path / "x.csv"
    )
    assert done.returncode == 2 and "at least two cameras" in done.stderr and "['cam1']" in done.stderr
    assert not (tmp_path / "x.csv").exists()


def test_set_values_are_read_as_the_training_configuration_reads_them():
    """One --set parser for `elp train` and `elp triangulate`: 1e-3 is a number in both (YAML 1.1 alone
    reads it as a string), dotted keys nest, and a bad item is one line naming it."""
    from element_lightning_pose.cli.triangulate import parse_assignments
    from element_lightning_pose.engine.config import ConfigError

    values = parse_assignments(["robust.sigma_px=1e-3", "method=robust", "smoother.iterations=20"])
    assert values == {"robust": {"sigma_px": 0.001}, "method": "robust", "smoother": {"iterations": 20}}
    with pytest.raises(ConfigError, match=r"--set 'robust': expected KEY=VALUE, e.g. smoother.iterations=20"):
        parse_assignments(["robust"])
