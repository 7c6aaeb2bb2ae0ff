"""Batched, differentiable Levenberg-Marquardt pose refinement on weighted reprojection errors (torch).

Minimises, for each of B poses independently,
``cost(R, t) = sum_i w_i rho(|pi(K (R X_i + t)) - x_i|)`` with ``rho`` the L2 (``e^2 / 2``), Huber or
Cauchy loss (IRLS weights in the normal equations). Steps live on SO(3) x R^3: ``R <- exp(w) R``,
``t <- t + v`` with the analytic Jacobian of the projection. The damping follows Marquardt's
schedule: a step is taken only if it lowers the cost (then ``lambda *= damping_down``), otherwise
``lambda *= damping_up`` and the pose is kept. Every operation is a torch op (accept/reject by
``torch.where``, the damped normal equations by ``torch.linalg.solve``), so gradients flow from the
refined pose back to the weights, the 2D points, the 3D points, ``K`` and the initial pose through
the unrolled iterations (as in end-to-end trained PnP layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from repro.geometry.torch_ops import axis_angle_to_matrix

Loss = Literal["l2", "huber", "cauchy"]


@dataclass(frozen=True)
class LMConfig:
    """Settings of ``refine_pose_lm``.

    ``loss_scale`` is the Huber/Cauchy threshold in pixels. Iteration stops after ``iterations``
    or once every pose's step is below ``step_tolerance`` (rotation in rad plus translation relative
    to ``|t|``). ``min_depth`` (mm) clamps z in the projection.
    """

    iterations: int = 20
    damping: float = 1e-3
    damping_up: float = 10.0
    damping_down: float = 0.1
    damping_min: float = 1e-9
    damping_max: float = 1e9
    loss: Loss = "l2"
    loss_scale: float = 2.0
    step_tolerance: float = 1e-12
    min_depth: float = 1e-3

    def __post_init__(self) -> None:
        if self.loss not in ("l2", "huber", "cauchy"):
            raise ValueError(f"unknown loss {self.loss!r}; choose l2, huber or cauchy")
        if self.iterations < 0 or self.damping <= 0 or self.loss_scale <= 0:
            raise ValueError("iterations must be >= 0, damping and loss_scale positive")
        if not (self.damping_up > 1 and 0 < self.damping_down < 1):
            raise ValueError("need damping_up > 1 and 0 < damping_down < 1")


DEFAULT_LM = LMConfig()


@dataclass(frozen=True, eq=False)
class LMResult:
    """Refined poses ``R`` (B, 3, 3), ``t`` (B, 3) mm; ``cost`` / ``initial_cost`` (B,) in the loss's
    units; ``rms`` (B,) weighted RMS reprojection error (px) at the result; ``iterations`` run.

    Unbatched inputs give unbatched outputs (``R`` (3, 3), scalar ``cost``).
    """

    R: torch.Tensor
    t: torch.Tensor
    cost: torch.Tensor
    initial_cost: torch.Tensor
    rms: torch.Tensor
    iterations: int


def _rho_and_weight(e2: torch.Tensor, loss: Loss, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss ``rho`` of squared residual norms and the IRLS weight ``rho'(e) / e``."""
    if loss == "l2":
        return 0.5 * e2, torch.ones_like(e2)
    if loss == "cauchy":
        r = e2 / scale**2
        return 0.5 * scale**2 * torch.log1p(r), 1.0 / (1.0 + r)
    inside = e2 <= scale**2
    e = torch.sqrt(torch.where(inside, torch.ones_like(e2), e2))
    rho = torch.where(inside, 0.5 * e2, scale * (e - 0.5 * scale))
    return rho, torch.where(inside, torch.ones_like(e2), scale / e)


def _residuals(R, t, X, x, K, min_depth):
    Xc = X @ R.transpose(-1, -2) + t[:, None, :]
    p = Xc @ K.transpose(-1, -2)
    z = p[..., 2:3].clamp_min(min_depth)
    uv = p[..., :2] / z
    return uv - x, Xc, uv, z


def _cost(R, t, X, x, K, w, cfg: LMConfig) -> torch.Tensor:
    r = _residuals(R, t, X, x, K, cfg.min_depth)[0]
    rho, _ = _rho_and_weight((r * r).sum(-1), cfg.loss, cfg.loss_scale)
    return (w * rho).sum(-1)


def refine_pose_lm(R: torch.Tensor, t: torch.Tensor, points_3d: torch.Tensor, points_2d: torch.Tensor,
                   K: torch.Tensor, weights: torch.Tensor | None = None, config: LMConfig = DEFAULT_LM) -> LMResult:
    """Refine B poses on their N 2D-3D correspondences each by damped Gauss-Newton (LM).

    Shapes: ``R`` (B, 3, 3), ``t`` (B, 3) mm, ``points_3d`` (B, N, 3) or (N, 3) model frame,
    ``points_2d`` (B, N, 2) or (N, 2) pixels, ``K`` (3, 3) or (B, 3, 3), ``weights`` (B, N) or (N,)
    non-negative (0 masks a correspondence; default all 1). Unbatched ``R`` (3, 3) / ``t`` (3,) work
    too. Use float64 for accuracy at the noise floor.
    """
    single = R.ndim == 2
    if single:
        R, t = R[None], t[None]
    B = R.shape[0]
    dtype = R.dtype
    X = points_3d.to(dtype).expand(B, *points_3d.shape[-2:])
    x = points_2d.to(dtype).expand(B, *points_2d.shape[-2:])
    Kb = K.to(dtype).expand(B, 3, 3)
    N = X.shape[1]
    w = torch.ones(B, N, dtype=dtype, device=R.device) if weights is None else weights.to(dtype).expand(B, N)
    cfg = config
    lam = torch.full((B,), cfg.damping, dtype=dtype, device=R.device)
    cost = _cost(R, t, X, x, Kb, w, cfg)
    initial_cost = cost
    eye6 = torch.eye(6, dtype=dtype, device=R.device)
    iterations = 0
    for _ in range(cfg.iterations):
        iterations += 1
        r, Xc, uv, z = _residuals(R, t, X, x, Kb, cfg.min_depth)
        _, irls = _rho_and_weight((r * r).sum(-1), cfg.loss, cfg.loss_scale)
        W = w * irls
        # d(uv)/d(Xc) rows a_k = (K[k] - uv_k K[2]) / z; d(Xc)/d(w) = -[R X]_x, so a_k^T d(Xc)/d(w) = (R X) x a_k;
        # d(Xc)/d(v) = I. Stacked as (B, 2N, 6) so the normal equations are one batched matmul.
        J_proj = (Kb[:, None, :2, :] - uv[..., :, None] * Kb[:, None, 2:3, :]) / z[..., None]
        RX = (Xc - t[:, None, :])[..., None, :].expand_as(J_proj)
        J = torch.cat([torch.linalg.cross(RX, J_proj, dim=-1), J_proj], dim=-1).reshape(B, 2 * N, 6)
        JW = J * W.repeat_interleave(2, dim=1)[..., None]
        H = JW.transpose(1, 2) @ J
        g = (JW.transpose(1, 2) @ r.reshape(B, 2 * N, 1))[..., 0]
        diag = torch.diagonal(H, dim1=-2, dim2=-1).clamp_min(1e-12)
        A = H + lam[:, None, None] * torch.diag_embed(diag) + 1e-12 * eye6
        delta = torch.linalg.solve(A, -g)
        R_new = axis_angle_to_matrix(delta[:, :3]) @ R
        t_new = t + delta[:, 3:]
        new_cost = _cost(R_new, t_new, X, x, Kb, w, cfg)
        accept = (new_cost < cost) & torch.isfinite(new_cost)
        R = torch.where(accept[:, None, None], R_new, R)
        t = torch.where(accept[:, None], t_new, t)
        cost = torch.where(accept, new_cost, cost)
        lam = torch.where(accept, lam * cfg.damping_down, lam * cfg.damping_up).clamp(cfg.damping_min, cfg.damping_max)
        with torch.no_grad():
            step = delta[:, :3].norm(dim=-1) + delta[:, 3:].norm(dim=-1) / (t.norm(dim=-1) + 1.0)
            if bool((step < cfg.step_tolerance).all()):
                break
    r = _residuals(R, t, X, x, Kb, cfg.min_depth)[0]
    rms = torch.sqrt((w * (r * r).sum(-1)).sum(-1) / w.sum(-1).clamp_min(torch.finfo(dtype).tiny))
    if single:
        return LMResult(R[0], t[0], cost[0], initial_cost[0], rms[0], iterations)
    return LMResult(R, t, cost, initial_cost, rms, iterations)
