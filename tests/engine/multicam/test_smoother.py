"""The Bayesian 3D smoother: exact linear-Gaussian algebra, robustness, calibrated variance."""

from __future__ import annotations

import numpy as np
import pytest

from element_lightning_pose.engine.multicam import smoother as sm
from element_lightning_pose.engine.multicam.params import TriangulationParamError, TriangulationParams
from element_lightning_pose.engine.multicam.triangulate import TriangulationError
from element_lightning_pose.synthetic import rig


def _dense_precision(info, p, p0):
    n_s, n_t, b, _ = info.shape
    out = []
    for s in range(n_s):
        h = np.zeros((n_t * b, n_t * b))
        for t in range(n_t):
            h[t * b : (t + 1) * b, t * b : (t + 1) * b] += info[s, t]
        diff = np.zeros((n_t - 1, n_t))
        diff[np.arange(n_t - 1), np.arange(n_t - 1)] = -1
        diff[np.arange(n_t - 1), np.arange(1, n_t)] = 1
        h += np.kron(diff.T @ diff, np.diag(p[s]))
        h[:b, :b] += p0 * np.eye(b)
        out.append(h)
    return out


def _random_info(rng, n_s, n_t, b):
    a = rng.normal(size=(n_s, n_t, 2, b))
    return np.einsum("stri,strj->stij", a, a) * rng.uniform(0, 2, (n_s, n_t, 1, 1))  # rank 2, some 0


@pytest.mark.parametrize("block", [3, 6])
def test_banded_solve_and_covariances_match_dense_gaussian_posterior(block):
    rng = np.random.default_rng(0)
    n_s, n_t = 3, 7
    info = _random_info(rng, n_s, n_t, block)
    info[:, 3] = 0.0  # a frame seen by no camera
    rhs = rng.normal(size=(n_s, n_t, block))
    p = rng.uniform(0.5, 3.0, (n_s, block))
    p0 = 1e-3
    mean, logdet = sm._solve(info, rhs, p, p0)
    cov = sm.block_covariances(info, p, p0)
    for s, h in enumerate(_dense_precision(info, p, p0)):
        dense_cov = np.linalg.inv(h)
        np.testing.assert_allclose(mean[s].reshape(-1), dense_cov @ rhs[s].reshape(-1), rtol=1e-9, atol=1e-9)
        assert logdet[s] == pytest.approx(np.linalg.slogdet(h)[1], rel=1e-10)
        for t in range(n_t):
            np.testing.assert_allclose(
                cov[s, t], dense_cov[t * block : (t + 1) * block, t * block : (t + 1) * block], rtol=1e-8, atol=1e-10
            )


def test_evidence_matches_dense_marginal_likelihood_of_a_linear_model():
    """Linear observations y = J X + e: the closed-form evidence differs from the dense
    Gaussian log N(y; J mu, J Q^-1 J^T + R) by a constant that does not depend on q."""
    rng = np.random.default_rng(1)
    n_c, n_t = 2, 6
    j = rng.normal(size=(n_c, n_t, 1, 2, 3))
    r = rng.normal(size=(n_c, n_t, 1, 2))
    precision = rng.uniform(0.5, 2.0, (n_c, n_t, 1))
    x_bar = rng.normal(size=(n_t, 1, 3))
    y = np.einsum("ctkri,tki->ctkr", j, x_bar) - r  # the linearised observations
    p0 = 0.01
    info, vector = sm._observation_terms(x_bar, r, j, precision)
    ours, dense = [], []
    for q in (0.3, 1.0, 4.0):
        p = np.full((1, 3), 1 / q)
        mean, logdet = sm._solve(info, vector + sm._prior_vector(x_bar, p0), p, p0)
        ours.append(sm._evidence(mean.transpose(1, 0, 2), x_bar, r, j, precision, p, logdet, p0)[0])
        prior_cov = np.linalg.inv(_dense_precision(np.zeros((1, n_t, 3, 3)), p, p0)[0])
        a = np.zeros((n_c, n_t, 2, n_t * 3))
        for c in range(n_c):
            for t in range(n_t):
                a[c, t, :, 3 * t : 3 * t + 3] = j[c, t, 0]
        a = a.reshape(-1, n_t * 3)
        mu = np.tile(x_bar[0, 0], n_t)
        noise = np.diag(np.repeat(1 / precision[..., 0], 2, axis=-1).reshape(-1))
        cov = a @ prior_cov @ a.T + noise
        resid = y[:, :, 0].reshape(-1) - a @ mu
        dense.append(-0.5 * np.linalg.slogdet(cov)[1] - 0.5 * resid @ np.linalg.solve(cov, resid))
    np.testing.assert_allclose(np.diff(ours), np.diff(dense), rtol=1e-8, atol=1e-8)


@pytest.fixture(scope="module")
def scene():
    group = rig.make_rig(4, seed=2)
    body = rig.make_body(300, seed=2)
    return group, body


def test_smoother_ignores_a_confident_outlier(scene):
    group, body = scene
    rng = np.random.default_rng(4)
    pixels = group.project(body.points) + rng.normal(0, 1.0, (4,) + body.points.shape[:2] + (2,))
    likelihood = np.full(pixels.shape[:-1], 0.95)
    clean = sm.smooth_3d(group, pixels, likelihood)
    pixels[1, 100:110, 4] += np.array([90.0, 40.0])  # ten frames of a confident jump in one view
    result = sm.smooth_3d(group, pixels, likelihood)
    moved = np.linalg.norm(result.points[100:110, 4] - clean.points[100:110, 4], axis=-1)
    assert moved.max() < 1.0
    assert np.all(result.weights[1, 100:110, 4] < 0.05)
    assert np.all(result.n_views[100:110, 4] == 3)


def test_smoother_fills_unseen_points_with_large_variance(scene):
    group, body = scene
    pixels = group.project(body.points)
    pixels[:, 150:160, 2] = np.nan  # no camera sees keypoint 2 for ten frames
    pixels[1:, 200, 3] = np.nan  # one camera only
    result = sm.smooth_3d(group, pixels, np.ones(pixels.shape[:-1]))
    assert np.isfinite(result.points).all()
    gap = result.variance[150:160, 2].max(axis=-1)
    assert gap.min() > 10 * result.variance[100, 2].max()
    assert np.all(result.n_views[150:160, 2] == 0)
    assert np.linalg.norm(result.points[155, 2] - body.points[155, 2]) < 5 * np.sqrt(gap.max())


def test_smoother_posterior_intervals_cover_the_truth(scene):
    group, body = scene
    obs = rig.observe(group, body.points, seed=5, noise_px=1.5, jump_rate=0.05)
    result = sm.smooth_3d(group, obs.pixels, obs.likelihood)
    z = (result.points - body.points) / np.sqrt(result.variance)
    assert 0.90 < np.mean(np.abs(z) < 1.96) < 0.98
    error = np.linalg.norm(result.points - body.points, axis=-1)
    assert np.mean(error) < 2.0


def test_limb_prior_holds_bone_lengths(scene):
    group, body = scene
    obs = rig.observe(group, body.points, seed=6, noise_px=2.0, jump_rate=0.05)
    free = sm.smooth_3d(group, obs.pixels, obs.likelihood)
    limbs = sm.smooth_3d(group, obs.pixels, obs.likelihood, skeleton=body.edges, bone_lengths=body.lengths)
    edges = np.array(body.edges)

    def length_error(points):
        return np.abs(np.linalg.norm(points[:, edges[:, 0]] - points[:, edges[:, 1]], axis=-1) - body.lengths)

    assert np.mean(length_error(limbs.points)) < 0.7 * np.mean(length_error(free.points))
    np.testing.assert_array_equal(limbs.bone_lengths, body.lengths)


def test_ensemble_observations_take_median_and_spread():
    members = np.zeros((1, 3, 2, 1, 3))
    members[0, :, :, 0, 0] = [[10.0, 10.0], [12.0, 11.0], [200.0, 12.0]]  # one wild member in frame 0
    members[0, :, :, 0, 1] = 5.0
    members[0, :, :, 0, 2] = [[0.9, 0.9], [0.9, 0.9], [0.9, 0.1]]  # member 2 unsure in frame 1
    pixels, likelihood, variance = sm.ensemble_observations(members)
    np.testing.assert_allclose(pixels[0, :, 0], [[12.0, 5.0], [10.5, 5.0]])
    assert variance[0, 0, 0] > 1000 and variance[0, 1, 0] == pytest.approx(0.125)
    np.testing.assert_allclose(likelihood[0, :, 0], [0.9, 0.9])


# ------------------------------------------------------------------------------ long runs (issue 26, item 22)


def _weak_views(seed: int = 0):
    """Three cameras, 80% occlusion, 40% confident jumps, 20 px noise, random likelihoods."""
    group = rig.make_rig(3, seed=seed)
    body = rig.make_body(60, seed=seed)
    obs = rig.observe(group, body.points, seed=seed, noise_px=20.0, jump_rate=0.4, occlusion_rate=0.8)
    likelihood = np.random.default_rng(seed).uniform(0, 1, obs.likelihood.shape)
    return group, body, obs.pixels, likelihood


def test_smoother_stops_at_convergence_on_low_confidence_views():
    """300 EM iterations on weak 2D raised LinAlgError (q shrank by e per iteration until the
    banded Cholesky failed); now q stays in range and EM stops once the trajectory is still."""
    group, body, pixels, likelihood = _weak_views()
    result = sm.smooth_3d(group, pixels, likelihood, options=sm.SmootherOptions(iterations=300))
    assert np.isfinite(result.points).all() and np.isfinite(result.variance).all()
    assert result.iterations < 300
    assert np.median(np.linalg.norm(result.points - body.points, axis=-1)) < 60.0
    again = sm.smooth_3d(group, pixels, likelihood, options=sm.SmootherOptions(iterations=sm.MAX_ITERATIONS))
    assert again.iterations == result.iterations  # the cap is not reached: it converged
    np.testing.assert_allclose(again.points, result.points)


def test_smoother_iterations_are_bounded():
    for key in ("iterations", "limb_iterations"):
        with pytest.raises(TriangulationParamError, match=rf"smoother\.{key} must be an integer in 1 \.\. 1000"):
            TriangulationParams.from_dict({"smoother": {key: 1_000_000_000}})
    with pytest.raises(TriangulationParamError, match=r"robust\.iterations must be an integer in 1 \.\. 1000"):
        TriangulationParams.from_dict({"method": "robust", "robust": {"iterations": 10**9}})
    group, _, pixels, likelihood = _weak_views()
    with pytest.raises(TriangulationError, match="iterations must be in 1 .. 1000, got 1000000000"):
        sm.smooth_3d(group, pixels, likelihood, options=sm.SmootherOptions(iterations=1_000_000_000))


def test_smoother_names_the_keypoint_it_cannot_place():
    """A limb prior far stiffer than the scene's scale makes the system numerically singular:
    the error names the body part and the frame instead of a LinAlgError."""
    group, body = rig.make_rig(3, seed=0), rig.make_body(40, seed=0)
    obs = rig.observe(group, body.points, seed=0, noise_px=1.0, jump_rate=0.05, occlusion_rate=0.1)
    options = sm.SmootherOptions(limb_sd=1e-9)
    with pytest.raises(TriangulationError, match=r"cannot place '(\w+)' \(frame \d+\)") as caught:
        sm.smooth_3d(
            group, obs.pixels, obs.likelihood, skeleton=body.edges, options=options, keypoint_names=body.bodyparts
        )
    assert any(f"'{name}'" in str(caught.value) for name in body.bodyparts)


def _shared_errors(group, points, scale_mm: float, seed: int, frames: float = 10.0):
    """Pixels of a network that errs the same way in every view: each keypoint displaced in 3D
    by a smooth random offset (sd ``scale_mm`` per axis, correlated over ~``frames``) before
    projection, plus 1 px of independent noise per view."""
    rng = np.random.default_rng(seed)
    n_t = points.shape[0]
    kernel = np.exp(-0.5 * (np.arange(-30, 31) / frames) ** 2)
    white = rng.normal(size=(n_t + 60,) + points.shape[1:])
    offset = np.apply_along_axis(lambda s: np.convolve(s, kernel, mode="valid"), 0, white)[:n_t]
    offset *= scale_mm / offset.std(axis=0, keepdims=True)
    pixels = group.project(points + offset)
    return pixels + rng.normal(0, 1.0, pixels.shape)


def test_source_error_variance_grows_with_the_error_scale(scene):
    group, body = scene
    pixels = group.project(body.points) + np.random.default_rng(1).normal(0, 1.0, (4,) + body.points.shape[:2] + (2,))
    variance = {
        error: sm.smooth_3d(group, pixels, options=sm.SmootherOptions(error_px=error)).variance
        for error in (None, 2.0, 4.0)
    }
    added_2, added_4 = variance[2.0] - variance[None], variance[4.0] - variance[None]
    assert np.all(added_2 > 0)
    np.testing.assert_allclose(added_4, 4 * added_2, rtol=1e-6)  # a variance: the scale squared
    # one value per keypoint: only the keypoint given an error grows
    per_keypoint = np.zeros(body.points.shape[1])
    per_keypoint[3] = 2.0
    result = sm.smooth_3d(group, pixels, options=sm.SmootherOptions(error_px=per_keypoint))
    np.testing.assert_allclose(result.variance[:, 3], variance[2.0][:, 3])
    np.testing.assert_allclose(result.variance[:, 0], variance[None][:, 0])


def test_smoother_with_the_sources_error_scale_covers_errors_the_views_share():
    # the rig demo's failure: 2D errors the views share (a network that places the point where
    # it believes it is in 3D), persistent over frames: residuals are small, the truth far
    group = rig.make_rig(3, seed=3)
    body = rig.make_body(300, seed=3)
    pixels = _shared_errors(group, body.points, scale_mm=15.0, seed=3)
    # what an evaluation on labeled frames would measure: the pixel error's sd per image axis
    error_px = np.sqrt(np.mean((pixels - group.project(body.points)) ** 2, axis=(0, 1, 3)))

    def coverage(options):
        result = sm.smooth_3d(group, pixels, options=options)
        return np.mean(np.abs(result.points - body.points) / np.sqrt(result.variance) < 1.96)

    assert coverage(sm.SmootherOptions()) < 0.5
    assert 0.9 <= coverage(sm.SmootherOptions(error_px=error_px)) <= 0.99


def test_smoother_error_px_variance_uses_each_views_2d_variance(scene):
    group, body = scene
    pixels = group.project(body.points)
    variance = np.full(pixels.shape[:-1], 9.0)
    given = sm.smooth_3d(group, pixels, variance=variance, options=sm.SmootherOptions(error_px="variance"))
    scale = sm.smooth_3d(group, pixels, variance=variance, options=sm.SmootherOptions(error_px=3.0))
    np.testing.assert_allclose(given.variance, scale.variance)


@pytest.mark.parametrize(
    ("value", "message"),
    [("posterior", "error_px must be a number"), (-1.0, "error_px must be a number >= 0"), ({"": 2}, "body-part")],
)
def test_error_px_is_validated(value, message):
    with pytest.raises(TriangulationParamError, match=message):
        TriangulationParams.from_dict({"smoother": {"error_px": value}})


def test_error_px_by_body_part_names_the_missing_one(scene):
    from element_lightning_pose.engine.multicam.params import triangulate_views

    group, body = scene
    pixels = group.project(body.points[:20])
    likelihood = np.ones(pixels.shape[:-1])
    names = list(body.bodyparts)
    params = TriangulationParams.from_dict({"smoother": {"error_px": {n: 2.0 for n in names[1:]}}})
    with pytest.raises(TriangulationParamError, match=f"no error scale for body part\\(s\\) \\['{names[0]}'\\]"):
        triangulate_views(group, pixels, likelihood, None, names, params)
    params = TriangulationParams.from_dict({"smoother": {"error_px": "evaluation"}})
    with pytest.raises(TriangulationParamError, match="ModelEvaluation"):
        triangulate_views(group, pixels, likelihood, None, names, params)
    evaluated = triangulate_views(
        group, pixels, likelihood, None, names, params, evaluation_error_px=np.full((4, len(names)), 2.0)
    )
    numbers = triangulate_views(
        group, pixels, likelihood, None, names, TriangulationParams.from_dict({"smoother": {"error_px": 2.0}})
    )
    np.testing.assert_allclose(evaluated.variance, numbers.variance)
