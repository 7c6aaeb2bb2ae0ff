"""Batched differentiable LM pose refinement: noise floor, agreement with OpenCV, robust losses, gradients."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from repro.geometry import geodesic_distance, pnp_refine_lm, project_points, random_rotation, rotation_with_angle
from repro.geometry.lm import LMConfig, refine_pose_lm

log = logging.getLogger(__name__)

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def lm_problem(B: int, N: int, seed: int, noise: float = 0.5, rot_deg: float = 10.0, trans_mm: float = 20.0):
    """B random poses with N noisy projections each, and starts perturbed by exactly rot_deg / trans_mm."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-60.0, 60.0, size=(B, N, 3))
    R = np.stack([random_rotation(rng) for _ in range(B)])
    t = np.column_stack([rng.uniform(-80, 80, B), rng.uniform(-60, 60, B), rng.uniform(500, 900, B)])
    x = np.stack([project_points(X[b], K, R[b], t[b]) for b in range(B)]) + rng.normal(scale=noise, size=(B, N, 2))
    R0 = np.stack([rotation_with_angle(np.radians(rot_deg), rng) @ R[b] for b in range(B)])
    d = rng.normal(size=(B, 3))
    t0 = t + trans_mm * d / np.linalg.norm(d, axis=1, keepdims=True)
    return X, x, R, t, R0, t0


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def test_lm_reaches_noise_floor_and_matches_opencv() -> None:
    B, N = 16, 100
    X, x, R, t, R0, t0 = lm_problem(B, N, seed=0)
    res = refine_pose_lm(_t(R0), _t(t0), _t(X), _t(x), _t(K), config=LMConfig(iterations=30))
    gt_cost = refine_pose_lm(_t(R), _t(t), _t(X), _t(x), _t(K), config=LMConfig(iterations=0)).cost
    assert res.R.shape == (B, 3, 3) and res.t.shape == (B, 3) and res.cost.shape == (B,)
    assert torch.all(res.initial_cost > 100 * res.cost)
    # At the least-squares optimum the cost is at or below the cost of the true pose (the noise floor).
    assert torch.all(res.cost <= gt_cost * (1 + 1e-9))
    rms = res.rms.numpy()
    start_rms = float(np.sqrt(2 * res.initial_cost.mean().item() / N))
    log.info("LM: start rms %.1f px -> %.3f..%.3f px (noise floor %.3f px); %d iterations",
             start_rms, rms.min(), rms.max(), 0.5 * np.sqrt(2), res.iterations)
    assert np.all((rms > 0.55) & (rms < 0.85))
    R_lm, t_lm = res.R.numpy(), res.t.numpy()
    rot_cv, trans_cv = [], []
    for b in range(B):
        R_cv, t_cv = pnp_refine_lm(X[b], x[b], K, R0[b], t0[b], max_iterations=100)
        rot_cv.append(geodesic_distance(R_lm[b], R_cv))
        trans_cv.append(np.linalg.norm(t_lm[b] - t_cv))
    log.info("LM vs cv2.solvePnPRefineLM: max %.2e rad, %.2e mm", max(rot_cv), max(trans_cv))
    assert max(rot_cv) < 1e-7 and max(trans_cv) < 1e-4
    assert np.degrees(geodesic_distance(R_lm, R)).max() < 1.0


def test_lm_batch_equals_single_and_unbatched() -> None:
    X, x, _, _, R0, t0 = lm_problem(3, 40, seed=1)
    cfg = LMConfig(iterations=8)
    batch = refine_pose_lm(_t(R0), _t(t0), _t(X), _t(x), _t(K), config=cfg)
    for b in range(3):
        one = refine_pose_lm(_t(R0[b]), _t(t0[b]), _t(X[b]), _t(x[b]), _t(K), config=cfg)
        assert one.R.shape == (3, 3) and one.cost.ndim == 0
        assert torch.allclose(one.R, batch.R[b], atol=1e-12) and torch.allclose(one.t, batch.t[b], atol=1e-9)
    shared = refine_pose_lm(_t(R0), _t(t0), _t(X[0]), _t(x[0]), _t(K), config=cfg)
    assert shared.R.shape == (3, 3, 3)


@pytest.mark.parametrize("loss", ["huber", "cauchy"])
def test_robust_loss_resists_outliers(loss: str) -> None:
    X, x, R, t, R0, t0 = lm_problem(4, 200, seed=2, rot_deg=3.0, trans_mm=5.0)
    rng = np.random.default_rng(0)
    x = x.copy()
    x[:, :40] += rng.uniform(-60, 60, size=(4, 40, 2))
    plain = refine_pose_lm(_t(R0), _t(t0), _t(X), _t(x), _t(K), config=LMConfig(iterations=30))
    robust = refine_pose_lm(_t(R0), _t(t0), _t(X), _t(x), _t(K),
                            config=LMConfig(iterations=30, loss=loss, loss_scale=2.0))
    err_plain = np.degrees(geodesic_distance(plain.R.numpy(), R))
    err_robust = np.degrees(geodesic_distance(robust.R.numpy(), R))
    log.info("%s: rotation error %.3f deg (l2 %.3f deg)", loss, err_robust.max(), err_plain.max())
    assert err_robust.max() < 0.3 < err_plain.max()
    assert np.linalg.norm(robust.t.numpy() - t, axis=1).max() < 3.0
    # Zero weights on the outliers recover the clean solution with the L2 loss.
    w = torch.ones(4, 200, dtype=torch.float64)
    w[:, :40] = 0
    masked = refine_pose_lm(_t(R0), _t(t0), _t(X), _t(x), _t(K), w, LMConfig(iterations=30))
    clean = refine_pose_lm(_t(R0), _t(t0), _t(X[:, 40:]), _t(x[:, 40:]), _t(K), config=LMConfig(iterations=30))
    assert torch.allclose(masked.R, clean.R, atol=1e-9) and torch.allclose(masked.t, clean.t, atol=1e-6)


def test_lm_gradcheck_through_unrolled_iterations() -> None:
    X, x, _, _, R0, t0 = lm_problem(1, 6, seed=3, rot_deg=2.0, trans_mm=3.0)
    Xt, R0t, t0t, Kt = _t(X), _t(R0), _t(t0), _t(K)
    cfg = LMConfig(iterations=4, loss="cauchy", loss_scale=5.0)

    def f(w: torch.Tensor, pts2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        res = refine_pose_lm(R0t, t0t, Xt, pts2d, Kt, w, cfg)
        return res.R, res.t

    w = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)[None].requires_grad_()
    pts = _t(x).requires_grad_()
    assert torch.autograd.gradcheck(f, (w, pts), eps=1e-6, atol=1e-5, rtol=1e-4)
    R, t = f(w, pts)
    (t.sum() + R.sum()).backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0 and pts.grad.abs().sum() > 0


def test_lm_config_validation() -> None:
    with pytest.raises(ValueError):
        LMConfig(loss="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LMConfig(damping_up=0.5)
