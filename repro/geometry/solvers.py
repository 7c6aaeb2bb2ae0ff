"""Pose from correspondences: PnP-RANSAC (EPnP + LM), weighted Kabsch / Umeyama, and their RANSAC.

All RANSAC loops here are our own, seeded by an explicit ``np.random.Generator`` (or an int seed),
so results are reproducible and never touch OpenCV's global RNG. They score hypotheses with the
MSAC cost ``sum(w_i min(e_i^2, threshold^2))`` (more accurate than counting inliers), stop early
once ``confidence`` says an all-inlier sample has been drawn, and refit on the inliers of the best
hypothesis (iterated until the inlier set stops changing).

The batched differentiable Levenberg-Marquardt refinement in torch is ``repro.geometry.lm``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

PNP_SAMPLE_SIZE = 5
"""Minimal sample of the EPnP kernel (as in ``cv2.solvePnPRansac``)."""
RIGID_SAMPLE_SIZE = 3
_CHUNK = 32
_REFITS = 3


@dataclass(frozen=True)
class RansacConfig:
    """RANSAC settings: ``threshold`` in the residual's unit (pixels for PnP, mm for 3D-3D).

    ``min_inliers`` below the minimal sample size means the sample size (6 for PnP).
    """

    threshold: float
    max_iterations: int = 1000
    confidence: float = 0.999
    min_inliers: int = 0

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be positive, got {self.threshold}")
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")


DEFAULT_PNP_RANSAC = RansacConfig(threshold=8.0)
"""8 px inlier threshold (``cv2.solvePnPRansac``'s default reprojection error)."""
DEFAULT_RIGID_RANSAC = RansacConfig(threshold=10.0)
"""10 mm inlier threshold for 3D-3D registration."""


@dataclass(frozen=True, eq=False)
class PnPResult:
    """Outcome of ``pnp_ransac``: model-to-camera ``R`` (3x3), ``t`` (mm), the inlier mask (N,),
    RMS reprojection error over the inliers (px), RANSAC iterations run, and whether it succeeded
    (enough inliers, finite pose in front of the camera). On failure ``R = I``, ``t = 0``."""

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray
    reprojection_error: float
    n_iterations: int
    success: bool

    @property
    def n_inliers(self) -> int:
        return int(self.inliers.sum())


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """Outcome of ``kabsch_ransac`` / ``umeyama_ransac``: ``dst ~ scale * R @ src + t``.

    ``rmse`` is the RMS 3D residual over the inliers (mm); ``scale`` is 1 for rigid fits.
    """

    R: np.ndarray
    t: np.ndarray
    scale: float
    inliers: np.ndarray
    rmse: float
    n_iterations: int
    success: bool

    @property
    def n_inliers(self) -> int:
        return int(self.inliers.sum())


def _rng(rng: np.random.Generator | int) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def required_iterations(inlier_ratio: float, sample_size: int, confidence: float) -> float:
    """RANSAC iterations needed to draw one all-inlier sample with probability ``confidence``."""
    p_good = inlier_ratio**sample_size
    if p_good >= 1.0:
        return 1.0
    if p_good <= 0.0:
        return math.inf
    return math.log(1.0 - confidence) / math.log1p(-p_good)


# --------------------------------------------------------------------------------------- PnP


def reprojection_errors(points_3d: np.ndarray, points_2d: np.ndarray, K: np.ndarray, R: np.ndarray,
                        t: np.ndarray) -> np.ndarray:
    """Euclidean reprojection error (N,) in pixels; ``inf`` for points at or behind the camera."""
    Xc = points_3d @ R.T + t
    p = Xc @ K.T
    z = p[:, 2]
    ok = z > 0
    err = np.full(len(points_3d), np.inf)
    err[ok] = np.linalg.norm(p[ok, :2] / z[ok, None] - points_2d[ok], axis=1)
    return err


def pnp_refine_lm(points_3d: np.ndarray, points_2d: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                  max_iterations: int = 20, eps: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt refinement of a pose on all given correspondences (``cv2.solvePnPRefineLM``)."""
    X, x, K = _pnp_inputs(points_3d, points_2d, K)
    rvec, _ = cv2.Rodrigues(np.asarray(R, dtype=np.float64))
    tvec = np.asarray(t, dtype=np.float64).reshape(3, 1).copy()
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, max_iterations, eps)
    rvec, tvec = cv2.solvePnPRefineLM(X, x, K, None, rvec, tvec, criteria=criteria)
    return cv2.Rodrigues(rvec)[0], tvec.reshape(3)


def _pnp_inputs(points_3d, points_2d, K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.ascontiguousarray(points_3d, dtype=np.float64).reshape(-1, 3)
    x = np.ascontiguousarray(points_2d, dtype=np.float64).reshape(-1, 2)
    if len(X) != len(x):
        raise ValueError(f"got {len(X)} 3D points but {len(x)} 2D points")
    return X, x, np.ascontiguousarray(K, dtype=np.float64).reshape(3, 3)


def _epnp(X: np.ndarray, x: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        ok, rvec, tvec = cv2.solvePnP(X, x, K, None, flags=cv2.SOLVEPNP_EPNP)
    except cv2.error:
        return None
    if not ok or not (np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec))):
        return None
    return cv2.Rodrigues(rvec)[0], tvec.reshape(3)


def pnp_ransac(points_3d: np.ndarray, points_2d: np.ndarray, K: np.ndarray, *,
               config: RansacConfig = DEFAULT_PNP_RANSAC, rng: np.random.Generator | int = 0,
               refine: bool = True) -> PnPResult:
    """Pose from 2D-3D correspondences: EPnP on 5-point samples in a seeded MSAC loop, EPnP refit on
    the inliers, then LM refinement (``cv2.solvePnPRefineLM``) on the inliers when ``refine``.

    ``points_3d`` (N, 3) model frame (mm), ``points_2d`` (N, 2) pixels (undistorted), ``K`` 3x3.
    """
    X, x, K = _pnp_inputs(points_3d, points_2d, K)
    n = len(X)
    min_inliers = max(config.min_inliers, PNP_SAMPLE_SIZE + 1)
    fail = PnPResult(np.eye(3), np.zeros(3), np.zeros(n, dtype=bool), math.inf, 0, False)
    if n < min_inliers:
        return fail
    gen = _rng(rng)
    thr2 = config.threshold**2
    best: tuple[np.ndarray, np.ndarray] | None = None
    best_score = math.inf
    needed = float(config.max_iterations)
    it = 0
    while it < min(needed, config.max_iterations):
        it += 1
        sample = gen.choice(n, PNP_SAMPLE_SIZE, replace=False)
        pose = _epnp(X[sample], x[sample], K)
        if pose is None:
            continue
        err2 = reprojection_errors(X, x, K, *pose) ** 2
        score = float(np.minimum(err2, thr2).sum())
        if score < best_score:
            best, best_score = pose, score
            ratio = float(np.count_nonzero(err2 < thr2)) / n
            needed = required_iterations(ratio, PNP_SAMPLE_SIZE, config.confidence)
    if best is None:
        return PnPResult(fail.R, fail.t, fail.inliers, fail.reprojection_error, it, False)
    R, t = best
    inliers = reprojection_errors(X, x, K, R, t) ** 2 < thr2
    for _ in range(_REFITS):
        if inliers.sum() < min_inliers:
            break
        refit = _epnp(X[inliers], x[inliers], K)
        if refit is not None and _msac(X, x, K, *refit, thr2) < _msac(X, x, K, R, t, thr2):
            R, t = refit
        if refine:
            R, t = pnp_refine_lm(X[inliers], x[inliers], K, R, t)
        new = reprojection_errors(X, x, K, R, t) ** 2 < thr2
        if np.array_equal(new, inliers):
            break
        inliers = new
    err = reprojection_errors(X, x, K, R, t)
    success = bool(inliers.sum() >= min_inliers and np.all(np.isfinite(R)) and np.all(np.isfinite(t)) and t[2] > 0)
    rms = float(np.sqrt(np.mean(err[inliers] ** 2))) if inliers.any() else math.inf
    log.debug("pnp_ransac: %d/%d inliers after %d iterations, rms %.3f px", inliers.sum(), n, it, rms)
    return PnPResult(R, t, inliers, rms, it, success)


def _msac(X, x, K, R, t, thr2) -> float:
    return float(np.minimum(reprojection_errors(X, x, K, R, t) ** 2, thr2).sum())


# ------------------------------------------------------------------------------ Kabsch / Umeyama


def _similarity_batch(src: np.ndarray, dst: np.ndarray, w: np.ndarray,
                      with_scale: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted Umeyama on (B, M, 3) point sets with weights (B, M): scale (B,), R (B, 3, 3), t (B, 3)."""
    wsum = w.sum(axis=1, keepdims=True)
    wn = w / np.where(wsum > 0, wsum, 1.0)
    mu_s = np.einsum("bm,bmk->bk", wn, src)
    mu_d = np.einsum("bm,bmk->bk", wn, dst)
    cs = src - mu_s[:, None]
    cd = dst - mu_d[:, None]
    cov = np.einsum("bm,bmi,bmj->bij", wn, cd, cs)
    U, D, Vt = np.linalg.svd(cov)
    sign = np.where(np.linalg.det(U) * np.linalg.det(Vt) < 0, -1.0, 1.0)
    S = np.ones((len(src), 3))
    S[:, 2] = sign
    R = (U * S[:, None, :]) @ Vt
    if with_scale:
        var_s = np.einsum("bm,bmk->b", wn, cs * cs)
        scale = (D * S).sum(axis=1) / np.where(var_s > 0, var_s, 1.0)
    else:
        scale = np.ones(len(src))
    t = mu_d - scale[:, None] * np.einsum("bij,bj->bi", R, mu_s)
    return scale, R, t


def _check_pairs(src, dst, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 3)
    if src.shape != dst.shape:
        raise ValueError(f"src {src.shape} and dst {dst.shape} differ")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(src),) or np.any(w < 0):
        raise ValueError("weights must be (N,) and non-negative")
    return src, dst, w


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
            with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991), optionally weighted.

    Returns ``(s, R, t)``; ``s = 1`` when ``with_scale`` is false (then it is Kabsch). Needs at least
    3 non-collinear points with positive weight for a unique answer.
    """
    src, dst, w = _check_pairs(src, dst, weights)
    s, R, t = _similarity_batch(src[None], dst[None], w[None], with_scale)
    return float(s[0]), R[0], t[0]


def kabsch(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rigid transform ``dst ~ R src + t`` (Kabsch), optionally weighted; returns ``(R, t)``."""
    _, R, t = umeyama(src, dst, weights, with_scale=False)
    return R, t


def _nondegenerate(P: np.ndarray) -> np.ndarray:
    """Whether each sample of 3 points (C, 3, 3) spans a triangle of non-negligible area."""
    e1, e2 = P[:, 1] - P[:, 0], P[:, 2] - P[:, 0]
    area2 = np.linalg.norm(np.cross(e1, e2), axis=1)
    return area2 > 1e-6 * np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1) + 1e-12


def _register_ransac(src, dst, weights, config: RansacConfig, rng, with_scale: bool) -> RegistrationResult:
    src, dst, w = _check_pairs(src, dst, weights)
    n = len(src)
    min_inliers = max(config.min_inliers, RIGID_SAMPLE_SIZE)
    fail = RegistrationResult(np.eye(3), np.zeros(3), 1.0, np.zeros(n, dtype=bool), math.inf, 0, False)
    if n < min_inliers:
        return fail
    gen = _rng(rng)
    thr2 = config.threshold**2
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    best_score = math.inf
    needed = float(config.max_iterations)
    it = 0
    while it < min(needed, config.max_iterations):
        c = int(min(_CHUNK, config.max_iterations - it))
        it += c
        idx = np.stack([gen.choice(n, RIGID_SAMPLE_SIZE, replace=False) for _ in range(c)])
        ok = _nondegenerate(src[idx]) & _nondegenerate(dst[idx])
        if not ok.any():
            continue
        idx = idx[ok]
        s, R, t = _similarity_batch(src[idx], dst[idx], np.ones(idx.shape), with_scale)
        pred = s[:, None, None] * np.einsum("bij,nj->bni", R, src) + t[:, None]
        err2 = ((pred - dst[None]) ** 2).sum(axis=2)
        scores = (np.minimum(err2, thr2) * w[None]).sum(axis=1)
        k = int(np.argmin(scores))
        if scores[k] < best_score:
            best, best_score = (float(s[k]), R[k], t[k]), float(scores[k])
            ratio = float(np.count_nonzero(err2[k] < thr2)) / n
            needed = required_iterations(ratio, RIGID_SAMPLE_SIZE, config.confidence)
    if best is None:
        return RegistrationResult(fail.R, fail.t, 1.0, fail.inliers, math.inf, it, False)
    s, R, t = best
    inliers = _residual2(src, dst, s, R, t) < thr2
    for _ in range(_REFITS):
        if np.count_nonzero(inliers & (w > 0)) < RIGID_SAMPLE_SIZE:
            break
        s, R, t = umeyama(src[inliers], dst[inliers], w[inliers], with_scale)
        new = _residual2(src, dst, s, R, t) < thr2
        if np.array_equal(new, inliers):
            break
        inliers = new
    res2 = _residual2(src, dst, s, R, t)
    rmse = float(np.sqrt(res2[inliers].mean())) if inliers.any() else math.inf
    success = bool(inliers.sum() >= min_inliers and np.isfinite(rmse) and s > 0)
    return RegistrationResult(R, t, s, inliers, rmse, it, success)


def _residual2(src, dst, s, R, t) -> np.ndarray:
    return ((s * src @ R.T + t - dst) ** 2).sum(axis=1)


def kabsch_ransac(src: np.ndarray, dst: np.ndarray, *, config: RansacConfig = DEFAULT_RIGID_RANSAC,
                  rng: np.random.Generator | int = 0, weights: np.ndarray | None = None) -> RegistrationResult:
    """Robust rigid ``dst ~ R src + t`` from 3D-3D correspondences (mm): Kabsch in a seeded MSAC loop
    (3-point samples, batched), then weighted refit on the inliers."""
    return _register_ransac(src, dst, weights, config, rng, with_scale=False)


def umeyama_ransac(src: np.ndarray, dst: np.ndarray, *, config: RansacConfig = DEFAULT_RIGID_RANSAC,
                   rng: np.random.Generator | int = 0, weights: np.ndarray | None = None,
                   with_scale: bool = True) -> RegistrationResult:
    """Robust similarity ``dst ~ s R src + t`` (e.g. NOCS coordinates to camera points): Umeyama in a
    seeded MSAC loop, then weighted refit on the inliers. ``threshold`` is in ``dst`` units."""
    return _register_ransac(src, dst, weights, config, rng, with_scale=with_scale)
