"""Ensemble Kalman Smoother: closed forms, missing data, inputs, CSV layout and the CLI."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from element_lightning_pose.cli import main as elp_main
from element_lightning_pose.engine import eks
from element_lightning_pose.engine.data.keypoints import read_keypoint_csv, write_predictions
from element_lightning_pose.engine.errors import ProjectError


def pair_members(observed: np.ndarray, half_spread: float) -> np.ndarray:
    """Two members at observed +/- half_spread (likelihood 1): centre = observed, R = spread^2.

    ``observed`` is (T, K, 2); the result is (2, T, K, 3).
    """
    likelihood = np.ones(observed.shape[:2] + (1,))
    return np.stack(
        [
            np.concatenate([observed - half_spread, likelihood], axis=-1),
            np.concatenate([observed + half_spread, likelihood], axis=-1),
        ]
    )


def random_walk(rng: np.random.Generator, n_frames: int, n_keypoints: int, step_var: float) -> np.ndarray:
    steps = rng.normal(0.0, np.sqrt(step_var), (n_frames, n_keypoints, 2))
    return 200.0 + np.cumsum(steps, axis=0)


def test_constant_observations_give_the_constant_back():
    n_frames = 300
    offsets = np.array([-2.0, 0.0, 1.0, 3.0, -1.0])  # median 0
    members = np.zeros((5, n_frames, 2, 3))
    members[..., 0] = 50.0 + offsets[:, None, None]
    members[..., 1] = 80.0 + offsets[:, None, None]
    members[..., 2] = 0.9
    for s in (None, 0.5):
        result = eks.smooth(members, s=s)
        assert np.allclose(result.x, 50.0, atol=1e-6) and np.allclose(result.y, 80.0, atol=1e-6)
        assert np.all(result.posterior_var < result.ensemble_var)
    assert np.allclose(result.ensemble_var, offsets.var() / 0.9)
    assert np.allclose(result.likelihood, 0.9)


def test_steady_state_posterior_variance_matches_closed_form():
    """Far from the ends, the RTS variance of a random walk (s) seen with constant noise R is
    R s / sqrt(s^2 + 4 s R) (integral of the two-sided Wiener filter's error spectrum)."""
    rng = np.random.default_rng(0)
    observed = random_walk(rng, 1000, 1, 1.0)
    for s, noise_var in ((0.5, 4.0), (3.0, 1.0), (0.01, 9.0)):
        result = eks.smooth(pair_members(observed, np.sqrt(noise_var)), s=s)
        expected = noise_var * s / np.sqrt(s**2 + 4 * s * noise_var)
        assert result.posterior_var[500, 0] == pytest.approx([expected, expected], rel=1e-9)
        assert np.allclose(result.s, s)


def test_mean_variance_and_likelihood_equal_the_dense_gaussian_posterior():
    """Against the joint Gaussian of the model written out densely (T small), gaps included."""
    rng = np.random.default_rng(1)
    n_frames, s, noise_var = 40, 2.0, 3.0
    observed = random_walk(rng, n_frames, 1, 1.5) + rng.normal(0, 1.0, (n_frames, 1, 2))
    members = pair_members(observed, np.sqrt(noise_var))
    members[:, 10:14] = np.nan
    result = eks.smooth(members, s=s)
    seen = np.isfinite(observed[:, 0, 0]) & ~np.isin(np.arange(n_frames), range(10, 14))
    y = observed[seen, 0, 0]
    m0, s0 = y.mean(), y.var()
    t = np.arange(n_frames)
    prior = s0 + s * np.minimum.outer(t, t)  # z_t = z_0 + sum of t steps
    obs_cov = prior[np.ix_(seen, seen)] + noise_var * np.eye(seen.sum())
    gain = prior[:, seen] @ np.linalg.inv(obs_cov)
    mean = m0 + gain @ (y - m0)
    var = np.diag(prior - gain @ prior[seen, :])
    assert np.allclose(result.x[:, 0], mean, atol=1e-9)
    assert np.allclose(result.posterior_var[:, 0, 0], var, rtol=1e-9)
    log_lik_x = multivariate_normal(np.full(seen.sum(), m0), obs_cov).logpdf(y)
    single = eks.smooth(members[..., [0, 0, 2]], s=s)  # x twice: the keypoint's total is 2 x log p(x)
    assert single.log_likelihood[0] == pytest.approx(2 * log_lik_x, rel=1e-9)


def test_fitted_s_recovers_the_true_random_walk_variance():
    rng = np.random.default_rng(2)
    true_s, noise_var = 2.5, 4.0
    truth = random_walk(rng, 3000, 2, true_s)
    observed = truth + rng.normal(0.0, np.sqrt(noise_var), truth.shape)
    result = eks.smooth(pair_members(observed, np.sqrt(noise_var)))
    assert result.s == pytest.approx([true_s, true_s], rel=0.2)
    error = np.stack([result.x, result.y], axis=-1) - truth
    assert np.sqrt((error**2).mean()) < 0.8 * np.sqrt(((observed - truth) ** 2).mean())


def test_calibrated_noise_learns_that_the_ensemble_overstates_the_error():
    """Members spread by 2 sd around an observation whose error has 1 sd: R_ens = 4x too big."""
    rng = np.random.default_rng(10)
    true_s, noise_var = 1.0, 4.0
    truth = random_walk(rng, 4000, 2, true_s)
    observed = truth + rng.normal(0.0, np.sqrt(noise_var), truth.shape)
    members = pair_members(observed, 2 * np.sqrt(noise_var))
    calibrated = eks.smooth(members)
    assert calibrated.noise_scale == pytest.approx(np.full((2, 2), 0.25), rel=0.15)
    assert calibrated.s * 0.25 == pytest.approx([true_s, true_s], rel=0.25)
    error = np.abs(np.stack([calibrated.x, calibrated.y], -1) - truth)
    assert 0.93 <= (error <= 1.96 * np.sqrt(calibrated.posterior_var)).mean() <= 0.97
    # eks's model takes the ensemble variance at face value: overcautious intervals
    eks_model = eks.smooth(members, s=calibrated.s[0] * 0.25)
    assert np.all(eks_model.noise_scale == 1.0)
    assert (error <= 1.96 * np.sqrt(eks_model.posterior_var)).mean() > 0.99
    # the reported s reproduces the trajectory
    again = eks.smooth(members, s=calibrated.s, noise="calibrated")
    assert np.allclose(again.x, calibrated.x) and np.allclose(again.posterior_var, calibrated.posterior_var)


def test_all_nan_frames_are_bridged_and_variance_grows_in_the_gap():
    rng = np.random.default_rng(3)
    members = pair_members(random_walk(rng, 200, 3, 1.0), 1.0)
    members[:, 80:90] = np.nan  # every member, every keypoint
    members[:, :3, 1] = np.nan  # leading gap for one keypoint
    result = eks.smooth(members)
    for values in (result.x, result.y, result.posterior_var, result.likelihood):
        assert np.isfinite(values).all()
    gap_var = result.posterior_var[79:91, 0, 0]
    assert np.all(np.diff(gap_var[:6]) > 0) and np.all(np.diff(gap_var[6:]) < 0)
    assert gap_var[5] > 3 * result.posterior_var[70, 0, 0]
    assert np.all(result.likelihood[80:90] == 0) and np.isnan(result.centre[80:90]).all()


def test_single_member_uses_inverse_likelihood_as_noise():
    rng = np.random.default_rng(4)
    member = np.concatenate([random_walk(rng, 100, 2, 1.0), np.full((100, 2, 1), 0.5)], axis=-1)
    result = eks.smooth(member[None])
    assert np.allclose(result.ensemble_var, 2.0)  # 1 / likelihood
    assert np.isfinite(result.to_array()).all()


def test_a_frame_with_one_surviving_member_is_not_trusted_blindly():
    """eks would give the lone member zero variance and follow it exactly."""
    rng = np.random.default_rng(5)
    members = pair_members(random_walk(rng, 100, 1, 1.0), 1.0)
    members = np.concatenate([members, members[:1]])  # three members
    members[1:, 50] = np.nan
    members[0, 50, 0, :2] += 40.0  # the survivor is far off
    result = eks.smooth(members, s=1.0)
    others = np.delete(result.ensemble_var, 50, axis=0)
    assert result.ensemble_var[50, 0, 0] == pytest.approx(others[:, 0, 0].max())
    assert abs(result.x[50, 0] - members[0, 50, 0, 0]) > 5.0


def test_mismatched_members_are_named():
    a = np.zeros((10, 2, 3))
    with pytest.raises(ValueError, match="member 1"):
        eks.smooth([a, np.zeros((11, 2, 3))])
    with pytest.raises(ValueError, match="member 0"):
        eks.smooth([np.zeros((10, 2, 2)), a])


def test_csv_members_with_other_bodyparts_name_the_file(tmp_path):
    values = np.ones((5, 2, 3))
    first = write_predictions(tmp_path / "a.csv", values, ["nose", "tail"])
    other = write_predictions(tmp_path / "b.csv", values, ["nose", "ear"])
    with pytest.raises(ProjectError, match="b.csv"):
        eks.smooth([first, other])


def test_bad_parameters_are_rejected():
    members = pair_members(np.zeros((20, 2, 2)), 1.0)
    with pytest.raises(ValueError, match="s must be positive"):
        eks.smooth(members, s=-1.0)
    with pytest.raises(ValueError, match="fit_range"):
        eks.smooth(members, fit_range=(15, 40))
    with pytest.raises(ValueError, match="more than one group"):
        eks.smooth(members, keypoint_groups=[[0, 1], [1]])
    with pytest.raises(ValueError, match="unknown keypoint"):
        eks.smooth(members, keypoint_groups=[["nose"]])
    with pytest.raises(ValueError, match="noise must be"):
        eks.smooth(members, noise="gaussian")


def test_groups_share_s_and_fit_range_selects_the_frames():
    rng = np.random.default_rng(6)
    slow, fast = random_walk(rng, 1000, 1, 0.2), random_walk(rng, 1000, 1, 8.0)
    observed = np.concatenate([slow, fast], axis=1) + rng.normal(0, 1.0, (1000, 2, 2))
    members = pair_members(observed, 1.0)
    separate = eks.smooth(members)
    assert separate.s[1] > 10 * separate.s[0]
    shared = eks.smooth(members, keypoint_groups=[[0, 1]])
    assert shared.s[0] == shared.s[1] and separate.s[0] < shared.s[0] < separate.s[1]
    # the second keypoint is slow in its first half only
    observed[:500, 1] = observed[:500, 0] + 10
    half = eks.smooth(pair_members(observed, 1.0), fit_range=(0, 500))
    assert half.s[1] == pytest.approx(half.s[0], rel=0.05)


def test_csv_round_trip_in_eks_layout(tmp_path):
    rng = np.random.default_rng(7)
    result = eks.smooth(pair_members(random_walk(rng, 30, 2, 1.0), 1.0), ["nose", "tail"])
    path = result.to_csv(tmp_path / "smoothed.csv")
    values, bodyparts, coords, index = read_keypoint_csv(path)
    assert bodyparts == ["nose", "tail"] and tuple(coords) == eks.EKS_COORDS
    assert np.allclose(values, result.to_array()) and len(index) == 30
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_multiview_beats_single_view_on_a_shared_latent_point():
    """Two views of one 3-D point: top sees (X, Y), bottom sees (X, Z)."""
    rng = np.random.default_rng(8)
    n_frames = 1500
    point = 200 + np.cumsum(rng.normal(0, 1.5, (n_frames, 3)), axis=0)
    truth = np.stack([point[:, [0, 1]], point[:, [0, 2]]], axis=1)  # (T, 2 views, 2)
    members = np.stack(
        [np.concatenate([truth + rng.normal(0, 3.0, truth.shape), np.ones((n_frames, 2, 1))], -1) for _ in range(4)]
    )
    members[:, 700:705, 1] = np.nan  # the bottom view is lost for a while
    single = eks.smooth(members, ["paw_top", "paw_bot"])
    joint = eks.smooth_multiview(members, [["paw_top", "paw_bot"]], ["paw_top", "paw_bot"])

    def rmse(result):
        return np.sqrt(((np.stack([result.x, result.y], -1) - truth) ** 2).mean())

    assert rmse(joint) < 0.95 * rmse(single)
    assert np.isfinite(joint.to_array()[..., [0, 1, 7, 8]]).all()
    assert joint.s[0] == joint.s[1]
    # the bottom view's x in the gap is carried by the top view's x
    assert np.abs(joint.x[700:705, 1] - truth[700:705, 1, 0]).max() < 4.0


def test_cli_smooths_two_csvs(tmp_path, capsys):
    rng = np.random.default_rng(9)
    truth = random_walk(rng, 60, 2, 1.0)
    paths = []
    for i in range(2):
        values = np.concatenate([truth + rng.normal(0, 1, truth.shape), np.ones((60, 2, 1))], -1)
        paths.append(str(write_predictions(tmp_path / f"m{i}.csv", values, ["nose", "tail"])))
    out = tmp_path / "out" / "eks.csv"
    code = elp_main(["smooth", *paths, "-o", str(out), "--fit-range", "0:40", "--keypoint-groups", "nose,tail"])
    assert code == 0
    values, bodyparts, coords, _ = read_keypoint_csv(out)
    assert values.shape == (60, 2, 9) and bodyparts == ["nose", "tail"]
    printed = capsys.readouterr().out
    assert "nose\ts=" in printed and str(out) in printed
    assert elp_main(["smooth", *paths, "-o", str(out), "--s", "2.5", "--centre", "mean", "--noise", "calibrated"]) == 0
    assert elp_main(["smooth", *paths, "-o", str(out), "--view-groups", "nose,tail"]) == 0
    assert read_keypoint_csv(out)[0].shape == (60, 2, 9)
    assert elp_main(["smooth", paths[0], str(tmp_path / "missing.csv"), "-o", str(out)]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert elp_main(["smooth", *paths, "-o", str(out), "--fit-range", "10"]) == 2


def test_members_that_predict_nothing_are_refused_naming_the_file(tmp_path, capsys):
    rng = np.random.default_rng(10)
    good = np.concatenate([random_walk(rng, 20, 2, 1.0), np.ones((20, 2, 1))], -1)
    first = write_predictions(tmp_path / "good.csv", good, ["nose", "tail"])
    nan = write_predictions(tmp_path / "all_nan.csv", np.full_like(good, np.nan), ["nose", "tail"])
    inf = good.copy()
    inf[..., 0] = np.inf  # x never finite: no frame where the member is usable
    inf_path = write_predictions(tmp_path / "all_inf.csv", inf, ["nose", "tail"])
    for bad in (nan, inf_path):
        with pytest.raises(ProjectError, match="no finite prediction") as caught:
            eks.smooth([first, bad])
        assert str(bad) in str(caught.value)
    with pytest.raises(ValueError, match="member 1: no finite prediction"):
        eks.smooth([good, np.full_like(good, np.nan)])
    with pytest.raises(ValueError, match="member 0: no finite prediction"):
        eks.smooth_multiview([np.full_like(good, np.nan), good], [["nose", "tail"]], ["nose", "tail"])
    out = tmp_path / "eks.csv"
    assert elp_main(["smooth", str(first), str(nan), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    assert str(nan) in captured.err and "no finite prediction" in captured.err
    assert captured.err.count("\n") == 1 and captured.out == "" and not out.exists()


def test_cli_keeps_an_empty_first_frame_in_place(tmp_path):
    """`elp smooth` once lost an all-NaN first frame and shifted every frame by one."""
    rng = np.random.default_rng(11)
    truth = random_walk(rng, 60, 2, 1.0)
    members = np.stack(
        [np.concatenate([truth + rng.normal(0, 1, truth.shape), np.ones((60, 2, 1))], -1) for _ in range(2)]
    )
    members[:, 0] = np.nan
    paths = [str(write_predictions(tmp_path / f"m{i}.csv", m, ["nose", "tail"])) for i, m in enumerate(members)]
    out = tmp_path / "eks.csv"
    assert elp_main(["smooth", *paths, "-o", str(out), "--s", "2"]) == 0
    values, _, _, index = read_keypoint_csv(out)
    assert list(index) == list(range(60))
    np.testing.assert_allclose(values, eks.smooth(members, s=2.0).to_array())
    assert np.isnan(values[0, :, 3]).all() and np.isfinite(values[0, :, 0]).all()  # no centre, bridged


def test_smoothing_params_name_the_key_and_keep_the_defaults():
    from element_lightning_pose.engine.eks.params import (
        SmoothingParamError,
        SmoothingParams,
        validate_smoothing_params,
    )

    # the canonical defaults are those SmoothingParamSet always stored (same hash)
    assert validate_smoothing_params({}) == {
        "s": None,
        "centre": "median",
        "var_mode": "confidence_weighted",
        "keypoint_groups": None,
        "fit_range": None,
        "noise": "auto",
    }
    for params, key in [
        ({"fit_range": "zzz"}, "fit_range"),
        ({"fit_range": (5, 2)}, "fit_range"),
        ({"fit_range": [0, 1.5]}, "fit_range"),
        ({"keypoint_groups": 5}, "keypoint_groups"),
        ({"keypoint_groups": "nose"}, None),
        ({"keypoint_groups": [[0, True]]}, "keypoint_groups"),
        ({"s": "4"}, "s"),
        ({"s": True}, "s"),
        ({"s": [1.0, -1.0]}, "s"),
        ({"centre": "mode"}, "centre"),
        ({"var_mode": None}, "var_mode"),
        ({"noise": 3}, "noise"),
        ({"sigma": 1.0}, "'sigma'"),
    ]:
        if key is None:  # text form: one group
            assert SmoothingParams.from_dict(params).keypoint_groups == [["nose"]]
            continue
        with pytest.raises(SmoothingParamError) as caught:
            SmoothingParams.from_dict(params, source="test")
        message = str(caught.value)
        assert message.startswith(f"test: {key}") or message.startswith(f"test: unknown key {key}"), message
    with pytest.raises(SmoothingParamError) as caught:
        SmoothingParams.from_dict({"fit_range": "zzz", "keypoint_groups": 5})
    assert "fit_range: 'zzz'" in str(caught.value) and "keypoint_groups must" in str(caught.value)  # both named
    # text forms are stored parsed; numpy values become plain numbers
    parsed = validate_smoothing_params({"fit_range": "0:500", "keypoint_groups": "nose,0;tail", "s": np.float64(4)})
    assert parsed["fit_range"] == [0, 500] and parsed["keypoint_groups"] == [["nose", 0], ["tail"]]
    assert parsed["s"] == 4.0 and type(parsed["s"]) is float
    assert validate_smoothing_params({"fit_range": [(0, 5), (7, None)]})["fit_range"] == [[0, 5], [7, None]]
    assert validate_smoothing_params({"fit_range": "0:5,7:"})["fit_range"] == [[0, 5], [7, None]]
    # the engine API validates the same way
    members = pair_members(np.zeros((20, 2, 2)), 1.0)
    with pytest.raises(SmoothingParamError, match="fit_range"):
        eks.smooth(members, fit_range="zzz")
    with pytest.raises(SmoothingParamError, match="keypoint_groups"):
        eks.smooth(members, keypoint_groups=5)
    assert eks.smooth(members, fit_range="0:10", keypoint_groups="0,1").s.shape == (2,)


def test_cli_errors_name_the_option_on_one_stderr_line(tmp_path):
    import subprocess
    import sys

    values = np.concatenate([np.zeros((10, 1, 2)), np.ones((10, 1, 1))], -1)
    member = str(write_predictions(tmp_path / "m.csv", values, ["nose"]))
    out = tmp_path / "eks.csv"
    for options, expected in [
        (["--fit-range", "5:2"], "--fit-range"),
        (["--fit-range", "zzz"], "--fit-range"),
        (["--keypoint-groups", "nose;nose"], "--keypoint-groups"),
        (["--s", "-1"], "--s must be positive"),
        (["-o", f"{member}/eks.csv"], "m.csv/eks.csv"),
    ]:  # output under a file
        done = subprocess.run(
            [sys.executable, "-m", "element_lightning_pose.cli", "smooth", member, member, "-o", str(out), *options],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("elp smooth: error: ") and expected in done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and done.stdout == ""
        assert not out.exists()


def test_console_script_freezes_import_objects_and_main_leaves_the_collector_alone(tmp_path):
    """``elp`` (the console script) collects nothing while the command's imports run and moves
    their objects out of the collector's sight before it runs; ``main`` called from Python (a
    notebook, these tests) does neither."""
    import gc
    import subprocess
    import sys

    rng = np.random.default_rng(5)
    values = np.concatenate([random_walk(rng, 50, 1, 1.0), np.ones((50, 1, 1))], -1)
    member = str(write_predictions(tmp_path / "m.csv", values, ["nose"]))
    before = gc.get_freeze_count()
    assert elp_main(["smooth", member, member, "-o", str(tmp_path / "in_process.csv")]) == 0
    assert gc.get_freeze_count() == before
    assert gc.isenabled()
    script = (
        "import gc, sys\n"
        "from element_lightning_pose import cli\n"
        "during_imports = []\n"
        "def count(phase, info):\n"
        "    module = sys.modules.get('element_lightning_pose.cli.smooth')\n"
        "    if phase == 'start' and not hasattr(module, 'run'):  # before the command module is done\n"
        "        during_imports.append(info['generation'])\n"
        "gc.callbacks.append(count)\n"
        "sys.argv = ['elp', 'smooth', sys.argv[1], sys.argv[1], '-o', sys.argv[2]]\n"
        "try:\n    cli.console()\n"
        "except SystemExit as done:\n"
        "    print('collections', len(during_imports), 'enabled', gc.isenabled())\n"
        "    print('frozen', gc.get_freeze_count(), 'status', done.code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, member, str(tmp_path / "console.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    frozen, status = done.stdout.split()[-3], done.stdout.split()[-1]
    assert status == "0" and int(frozen) > 10_000, done.stdout + done.stderr  # numpy, pandas, scipy: many
    assert "collections 0 enabled True" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "console.csv").read_bytes() == (tmp_path / "in_process.csv").read_bytes()


def noisy_members(rng: np.random.Generator, truth: np.ndarray, n_members: int = 5, noise_sd: float = 2.0) -> np.ndarray:
    """(M, T, K, 3) members: truth + Gaussian noise, likelihood 0.8-1."""
    xy = truth[None] + rng.normal(0.0, noise_sd, (n_members, *truth.shape))
    likelihood = rng.uniform(0.8, 1.0, (n_members, *truth.shape[:2], 1))
    return np.concatenate([xy, likelihood], axis=-1)


def test_a_confident_outlier_in_one_member_moves_the_robust_trace_less_than_a_pixel():
    """One member is 20-100 px off, likelihood 0.9, on 5% of the frames: the robust trace (the
    default) moves less than 1 px anywhere from where it was without those outliers and keeps
    its accuracy; the plain median-based one moves more (its s is pulled up by the outliers)."""
    rng = np.random.default_rng(6)
    truth = random_walk(rng, 2000, 2, 1.0)
    clean = noisy_members(rng, truth)
    planted = clean.copy()
    frames = rng.choice(2000, 100, replace=False)
    angle, radius = rng.uniform(0, 2 * np.pi, 100), rng.uniform(20, 100, 100)
    planted[2, frames, 0, :2] += np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    planted[2, frames, 0, 2] = 0.9
    moved, rmse = {}, {}
    for outliers in ("reject", "none"):
        before, after = (eks.smooth(m, outliers=outliers) for m in (clean, planted))
        moved[outliers] = np.hypot(after.x - before.x, after.y - before.y)[:, 0].max()
        rmse[outliers] = [np.sqrt(np.mean((np.stack([r.x, r.y], -1) - truth)[:, 0] ** 2)) for r in (before, after)]
    assert moved["reject"] < 1.0 < moved["none"]
    assert rmse["reject"][1] < rmse["reject"][0] + 0.01 < rmse["none"][1]
    default = eks.smooth(planted)
    assert np.array_equal(default.x, eks.smooth(planted, outliers="reject").x)  # the robust one


def test_robust_smoother_keeps_coverage_and_catches_members_failing_together():
    """Clean ensemble: 95% intervals cover 93-97% of the truth. Three of five members at the
    same wrong place for 4 frames (a swap, high likelihood): the median is wrong, the robust
    trace is not."""
    rng = np.random.default_rng(6)
    truth = random_walk(rng, 4000, 3, 2.0)
    members = noisy_members(rng, truth)
    result = eks.smooth(members)
    error = np.stack([result.x, result.y], axis=-1) - truth
    covered = np.abs(error) <= 1.959964 * np.sqrt(result.posterior_var)
    assert 0.93 <= covered.mean() <= 0.97
    swapped = members.copy()
    swapped[:3, 2000:2004, 1, :2] = truth[2000:2004, 1] + [45.0, 30.0]
    swapped[:3, 2000:2004, 1, 2] = 0.95
    robust, plain = eks.smooth(swapped), eks.smooth(swapped, outliers="none")

    def worst(r):
        return np.hypot(r.x[2000:2004, 1] - truth[2000:2004, 1, 0], r.y[2000:2004, 1] - truth[2000:2004, 1, 1]).max()

    assert worst(robust) < 5.0 < worst(plain)


def test_outlier_options_are_validated_and_the_old_model_stays_reachable():
    rng = np.random.default_rng(7)
    members = noisy_members(rng, random_walk(rng, 300, 2, 1.0))
    with pytest.raises(eks.SmoothingParamError, match="outliers"):
        eks.smooth(members, outliers="sometimes")
    with pytest.raises(eks.SmoothingParamError, match="outlier_threshold"):
        eks.smooth(members, outlier_threshold=1.0)
    # with s given, "auto" is eks's model (no rejection), as the noise model is
    fixed = eks.smooth(members, s=1.0)
    assert np.array_equal(fixed.x, eks.smooth(members, s=1.0, outliers="none").x)
    assert eks.SmoothingParams.from_dict({"outliers": "none"}).to_dict()["outliers"] == "none"


def test_cli_robust_and_view_group_options_name_the_option(tmp_path, capsys):
    rng = np.random.default_rng(8)
    members = noisy_members(rng, random_walk(rng, 200, 4, 1.0), n_members=3)
    names = ["a_top", "b_top", "a_bot", "b_bot"]
    csvs = [str(write_predictions(tmp_path / f"m{i}.csv", m, names)) for i, m in enumerate(members)]
    out = tmp_path / "out.csv"
    assert (
        elp_main(
            [
                "smooth",
                *csvs,
                "-o",
                str(out),
                "--view-groups",
                "a_top,a_bot;b_top,b_bot",
                "--keypoint-groups",
                "a_top,b_top",
            ]
        )
        == 2
    )
    assert "--keypoint-groups and --view-groups cannot be combined" in capsys.readouterr().err
    assert elp_main(["smooth", *csvs, "-o", str(out), "--outlier-threshold", "1"]) == 2
    assert "--outlier-threshold must be" in capsys.readouterr().err and not out.exists()
    assert (
        elp_main(["smooth", *csvs, "-o", str(out), "--view-groups", "a_top,a_bot;b_top,b_bot", "--outliers", "reject"])
        == 0
    )
    expected = eks.smooth_multiview(members, [["a_top", "a_bot"], ["b_top", "b_bot"]], names, outliers="reject")
    values = read_keypoint_csv(out)[0]
    assert np.allclose(values[..., 0], expected.x, rtol=1e-9, atol=1e-6)


def test_sorting_network_sorts_every_zero_one_input():
    """By the 0-1 principle a comparator network that sorts every 0/1 input sorts everything."""
    import itertools

    from element_lightning_pose.engine.eks.ensemble import sorting_network

    for n in range(1, 13):
        pairs = sorting_network(n)
        assert all(0 <= i < j < n for i, j in pairs)
        for bits in itertools.product((0, 1), repeat=n):
            items = list(bits)
            for i, j in pairs:
                if items[i] > items[j]:
                    items[i], items[j] = items[j], items[i]
            assert items == sorted(items), (n, bits)


@pytest.mark.parametrize("n_members", [1, 2, 3, 5, 8, 17])
def test_ensemble_centre_and_variance_equal_numpys_nan_statistics(n_members):
    """The sorting-network median (and the np.sort one above 16 members) and the masked mean and
    variance equal numpy's nan-aware statistics, with members missing anywhere."""
    rng = np.random.default_rng(n_members)
    members = np.concatenate(
        [rng.normal(100, 5, (n_members, 40, 3, 2)), rng.uniform(0.2, 1, (n_members, 40, 3, 1))], -1
    )
    clean = eks.ensemble_stats(members, var_mode="plain")
    np.testing.assert_allclose(clean.centre, np.median(members[..., :2], axis=0), rtol=1e-14)
    if n_members > 1:  # one member: the variance comes from its likelihood
        np.testing.assert_allclose(clean.variance, members[..., :2].var(axis=0), rtol=1e-12)
    members[rng.random(members.shape[:3]) < 0.3] = np.nan
    members[:, 0, 0] = np.nan  # a frame no member saw
    stats = eks.ensemble_stats(members, var_mode="plain")
    coords = members[..., :2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(stats.centre, np.nanmedian(coords, axis=0), rtol=1e-14)
        expected_var = np.nanvar(coords, axis=0)
        expected_likelihood = np.nanmean(members[..., 2], axis=0)
    n_valid = np.isfinite(members[..., 0]).sum(axis=0)
    several = n_valid >= 2
    np.testing.assert_allclose(stats.variance[several], expected_var[several], rtol=1e-12)
    assert np.isnan(stats.centre[0, 0]).all() and np.isnan(stats.variance[0, 0]).all()
    np.testing.assert_allclose(stats.likelihood[n_valid > 0], expected_likelihood[n_valid > 0])


def test_maximiser_finds_each_groups_peak_within_the_tolerance():
    """Brent's search, from the grid or around a previous estimate, lands within the tolerance
    of every group's maximum, also at the edge of the bounds and for a flat-topped peak."""
    peaks = np.array([-7.3, -0.4, 2.2, 5.9, 11.95])
    calls = []

    def log_lik(s):
        calls.append(1)
        offset = np.log(s) - peaks
        return -(offset**2) - 0.3 * offset**4

    for tolerance in (0.005, 0.1):
        calls.clear()
        s, best = eks.maximise_over_log_s(log_lik, peaks.size, grid_step=1.0, tolerance=tolerance)
        assert np.abs(np.log(s) - peaks).max() <= tolerance
        np.testing.assert_allclose(best, log_lik(s))
        assert len(calls) <= 23 + 12  # the grid of 23 points, then a handful of steps
    calls.clear()
    shifted = np.exp(np.clip(peaks + np.array([2.5, -2.5, 0.3, -0.1, 0.0]), -10, 12))
    s, _ = eks.maximise_over_log_s(log_lik, peaks.size, grid_step=3.0, tolerance=0.01, around=shifted)
    assert np.abs(np.log(s) - peaks).max() <= 0.01
    assert len(calls) <= 16


def test_maximiser_takes_a_failed_evaluation_as_the_worst_without_warnings():
    """A group whose likelihood is NaN or infinite somewhere still gets the best finite s, and
    the search raises no floating-point warning (the parabola through an infinite value is
    refused, a golden step taken)."""
    peaks = np.array([1.0, -2.0, 3.0])

    def log_lik(s):
        value = -((np.log(s) - peaks) ** 2)
        value[1] = np.nan if np.log(s[1]) > 0 else value[1]  # group 1 fails above log s = 0
        value[2] = -np.inf if np.log(s[2]) < 2.5 else value[2]  # group 2 fails below 2.5
        return value

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, best = eks.maximise_over_log_s(log_lik, 3, grid_step=1.0, tolerance=0.005)
    assert np.abs(np.log(s) - peaks).max() <= 0.01 and np.isfinite(best).all()
