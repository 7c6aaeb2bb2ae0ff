"""PnP-RANSAC, Kabsch and Umeyama (plain and RANSAC) on synthetic correspondences with known poses."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from repro.geometry import (
    RansacConfig,
    geodesic_distance,
    kabsch,
    kabsch_ransac,
    pnp_ransac,
    project_points,
    random_rotation,
    reprojection_errors,
    required_iterations,
    umeyama,
    umeyama_ransac,
)

log = logging.getLogger(__name__)

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])
W, H = 640, 480


def pnp_problem(seed: int, n: int = 300, noise: float = 0.5, outliers: float = 0.3):
    """Points on/in a 120 mm object, a random pose 500-900 mm away, noisy projections, uniform outliers."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-60.0, 60.0, size=(n, 3))
    R = random_rotation(rng)
    t = np.array([rng.uniform(-80, 80), rng.uniform(-60, 60), rng.uniform(500, 900)])
    x = project_points(X, K, R, t) + rng.normal(scale=noise, size=(n, 2))
    bad = rng.permutation(n)[: round(outliers * n)]
    x[bad] = rng.uniform([0, 0], [W, H], size=(len(bad), 2))
    is_out = np.zeros(n, dtype=bool)
    is_out[bad] = True
    return X, x, R, t, is_out


@pytest.mark.parametrize("seed", range(8))
def test_pnp_ransac_noise_and_outliers(seed: int) -> None:
    X, x, R, t, is_out = pnp_problem(seed)
    res = pnp_ransac(X, x, K, rng=seed)
    assert res.success
    rot_err = np.degrees(geodesic_distance(res.R, R))
    t_err = np.linalg.norm(res.t - t) / t[2]
    log.info("pnp seed %d: %.3f deg, %.3f %% of depth, %d iterations, rms %.3f px",
             seed, rot_err, 100 * t_err, res.n_iterations, res.reprojection_error)
    assert rot_err < 1.0
    assert t_err < 0.01
    # Inliers found are the true inliers (an outlier may land within 8 px by chance).
    assert np.count_nonzero(res.inliers & ~is_out) >= 0.98 * np.count_nonzero(~is_out)
    assert np.count_nonzero(res.inliers & is_out) <= 3
    assert 0.3 < res.reprojection_error < 1.0
    assert res.n_iterations < 200


def test_pnp_ransac_deterministic() -> None:
    X, x, *_ = pnp_problem(11, outliers=0.5)
    a = pnp_ransac(X, x, K, rng=np.random.default_rng(5))
    b = pnp_ransac(X, x, K, rng=np.random.default_rng(5))
    c = pnp_ransac(X, x, K, rng=5)
    for other in (b, c):
        assert np.array_equal(a.R, other.R) and np.array_equal(a.t, other.t)
        assert np.array_equal(a.inliers, other.inliers) and a.n_iterations == other.n_iterations


def test_pnp_ransac_fails_gracefully() -> None:
    rng = np.random.default_rng(0)
    res = pnp_ransac(rng.normal(size=(4, 3)), rng.normal(size=(4, 2)), K)
    assert not res.success and res.n_inliers == 0
    X = rng.uniform(-50, 50, size=(100, 3))
    junk = rng.uniform([0, 0], [W, H], size=(100, 2))
    res = pnp_ransac(X, junk, K, config=RansacConfig(threshold=1.0, max_iterations=50), rng=1)
    assert res.n_iterations <= 50
    assert not res.success or res.n_inliers < 20


def test_pnp_exact_without_noise() -> None:
    X, x, R, t, _ = pnp_problem(3, noise=0.0, outliers=0.0)
    res = pnp_ransac(X, x, K, rng=0)
    assert res.inliers.all()
    assert geodesic_distance(res.R, R) < 1e-8 and np.allclose(res.t, t, atol=1e-5)
    assert reprojection_errors(X, x, K, res.R, res.t).max() < 1e-6


def test_required_iterations() -> None:
    assert required_iterations(1.0, 5, 0.99) == 1.0
    assert required_iterations(0.0, 5, 0.99) == np.inf
    assert np.isclose(required_iterations(0.5, 3, 0.99), np.log(0.01) / np.log(1 - 0.125))


def similarity_problem(seed: int, n: int = 200, noise: float = 0.0, outliers: float = 0.0):
    rng = np.random.default_rng(seed)
    src = rng.uniform(-1.0, 1.0, size=(n, 3))  # e.g. NOCS coordinates
    s = rng.uniform(50.0, 300.0)
    R = random_rotation(rng)
    t = rng.uniform(-200, 200, size=3) + np.array([0.0, 0.0, 800.0])
    dst = s * src @ R.T + t + rng.normal(scale=noise, size=(n, 3))
    bad = rng.permutation(n)[: round(outliers * n)]
    dst[bad] = rng.uniform(-300, 300, size=(len(bad), 3)) + np.array([0.0, 0.0, 800.0])
    return src, dst, s, R, t, bad


@pytest.mark.parametrize("seed", range(5))
def test_umeyama_and_kabsch_exact(seed: int) -> None:
    src, dst, s, R, t, _ = similarity_problem(seed)
    s2, R2, t2 = umeyama(src, dst)
    assert np.isclose(s2, s, rtol=1e-12) and geodesic_distance(R2, R) < 1e-12 and np.allclose(t2, t, atol=1e-9)
    rigid = (dst - t) / s + t  # dst = R src + t exactly
    Rk, tk = kabsch(src, rigid)
    assert geodesic_distance(Rk, R) < 1e-12 and np.allclose(tk, t, atol=1e-10)
    assert umeyama(src, rigid, with_scale=False)[0] == 1.0


def test_weighted_fits_ignore_zero_weight_points() -> None:
    src, dst, s, R, t, bad = similarity_problem(1, outliers=0.4)
    w = np.ones(len(src))
    w[bad] = 0.0
    s2, R2, t2 = umeyama(src, dst, weights=w)
    assert np.isclose(s2, s, rtol=1e-12) and geodesic_distance(R2, R) < 1e-12 and np.allclose(t2, t, atol=1e-9)
    # Weights act as multiplicities.
    w_int = np.random.default_rng(0).integers(1, 4, size=len(src))
    noisy = dst + np.random.default_rng(1).normal(size=dst.shape)
    s3, R3, t3 = umeyama(src, noisy, weights=w_int)
    s4, R4, t4 = umeyama(np.repeat(src, w_int, axis=0), np.repeat(noisy, w_int, axis=0))
    assert np.isclose(s3, s4) and np.allclose(R3, R4) and np.allclose(t3, t4)


def test_kabsch_never_returns_a_reflection() -> None:
    rng = np.random.default_rng(4)
    src = rng.normal(size=(50, 3))
    dst = src * [1.0, 1.0, -1.0]
    R, _ = kabsch(src, dst)
    assert np.isclose(np.linalg.det(R), 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_umeyama_ransac_40_percent_outliers(seed: int) -> None:
    src, dst, s, R, t, bad = similarity_problem(seed, n=300, noise=0.5, outliers=0.4)
    res = umeyama_ransac(src, dst, config=RansacConfig(threshold=3.0), rng=seed)
    assert res.success
    log.info("umeyama ransac seed %d: scale rel err %.2e, %.4f deg, %.3f mm, %d it",
             seed, abs(res.scale / s - 1), np.degrees(geodesic_distance(res.R, R)),
             np.linalg.norm(res.t - t), res.n_iterations)
    assert abs(res.scale / s - 1) < 2e-3
    assert np.degrees(geodesic_distance(res.R, R)) < 0.2
    assert np.linalg.norm(res.t - t) < 1.0
    truth = np.ones(len(src), dtype=bool)
    truth[bad] = False
    assert np.count_nonzero(res.inliers != truth) <= 3
    assert res.rmse < 1.2


def test_umeyama_ransac_exact_without_noise() -> None:
    src, dst, s, R, t, _ = similarity_problem(9, outliers=0.4)
    res = umeyama_ransac(src, dst, config=RansacConfig(threshold=1.0), rng=0)
    assert np.isclose(res.scale, s, rtol=1e-10) and geodesic_distance(res.R, R) < 1e-10
    assert np.allclose(res.t, t, atol=1e-7) and res.rmse < 1e-7


def test_kabsch_ransac_outliers_and_determinism() -> None:
    rng = np.random.default_rng(2)
    src = rng.uniform(-50, 50, size=(500, 3))
    R, t = random_rotation(rng), np.array([5.0, -30.0, 700.0])
    dst = src @ R.T + t + rng.normal(scale=0.3, size=src.shape)
    bad = rng.permutation(500)[:250]
    dst[bad] += rng.uniform(-100, 100, size=(250, 3))
    cfg = RansacConfig(threshold=2.0, max_iterations=2000)
    res = kabsch_ransac(src, dst, config=cfg, rng=np.random.default_rng(8))
    assert res.success and res.scale == 1.0
    assert np.degrees(geodesic_distance(res.R, R)) < 0.1 and np.linalg.norm(res.t - t) < 0.3
    again = kabsch_ransac(src, dst, config=cfg, rng=np.random.default_rng(8))
    assert np.array_equal(res.R, again.R) and np.array_equal(res.inliers, again.inliers)


def test_ransac_early_stop_and_degenerate_input() -> None:
    src, dst, *_ = similarity_problem(0, noise=0.0)
    res = umeyama_ransac(src, dst, config=RansacConfig(threshold=1.0, max_iterations=10_000), rng=0)
    assert res.n_iterations <= 32
    line = np.outer(np.arange(20.0), [1.0, 2.0, 3.0])
    res = kabsch_ransac(line, line + 1.0, config=RansacConfig(threshold=1.0, max_iterations=64), rng=0)
    assert not res.success and res.n_iterations == 64
    with pytest.raises(ValueError):
        RansacConfig(threshold=0.0)
