"""Rotation conversions and projection in torch: batched over leading dims and differentiable.

The same conventions as ``repro.geometry.rotations`` (quaternions ``(w, x, y, z)`` with ``w >= 0``
on output, axis-angle in radians, 6D = first two columns). Gradients are finite everywhere,
including the identity and (for the branch actually taken) rotations by pi: singular branches are
masked with the double-``where`` pattern so no NaN leaks through unselected values. This module is
the canonical place for torch rotation code in the project; importing ``repro.geometry`` alone does
not import torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_SMALL_ANGLE = 1e-6


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices (..., 3, 3) of vectors (..., 3)."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*v.shape[:-1], 3, 3)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Quaternions ``(w, x, y, z)`` (..., 4) -> rotation matrices (..., 3, 3); ``q`` is normalised first."""
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1)
    return R.reshape(*q.shape[:-1], 3, 3)


def _sqrt_positive(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` with zero (not infinite) gradient where ``x <= 0``."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4), ``w >= 0`` (Shepperd's method)."""
    m = R.reshape(*R.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    q_abs = _sqrt_positive(sq)
    cands = torch.stack([
        torch.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, sq[..., 2], m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, sq[..., 3]], dim=-1),
    ], dim=-2)
    k = q_abs.argmax(dim=-1, keepdim=True)
    row = torch.gather(cands, -2, k[..., None].expand(*k.shape, 4)).squeeze(-2)
    q = F.normalize(row / (2.0 * torch.gather(q_abs, -1, k)), dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula (..., 3) -> (..., 3, 3), smooth (Taylor series) at zero angle."""
    theta2 = (rotvec * rotvec).sum(-1)[..., None, None]
    small = theta2 < _SMALL_ANGLE**2
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(safe2)
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    half = torch.sin(0.5 * theta) / (0.5 * theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, 0.5 * half * half)
    K = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a * K + b * (K @ K)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3), angle in ``[0, pi]``, via the quaternion."""
    q = matrix_to_quaternion(R)
    w, v = q[..., :1], q[..., 1:]
    n2 = (v * v).sum(-1, keepdim=True)
    small = n2 < _SMALL_ANGLE**2
    n = torch.sqrt(torch.where(small, torch.ones_like(n2), n2))
    w_safe = torch.where(small, w, torch.ones_like(w))
    factor = torch.where(small, 2.0 / w_safe * (1.0 - n2 / (3.0 * w_safe * w_safe)), 2.0 * torch.atan2(n, w) / n)
    return v * factor


def rotation_6d_to_matrix(d6: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """6D representation (..., 6) -> rotation matrices (..., 3, 3) by Gram-Schmidt on the two columns."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1, eps=eps)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1, eps=eps)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> 6D (..., 6): the first two columns concatenated."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def geodesic_distance(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Angle (radians) of ``R1^T R2`` as ``atan2(sin, cos)``: accurate near 0 and pi, finite gradients.

    The gradient at exactly zero angle (a cone point) is defined as zero.
    """
    M = R1.transpose(-1, -2) @ R2
    c = 0.5 * (M.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    vee = torch.stack([M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]], dim=-1)
    s2 = (vee * vee).sum(-1)
    pos = s2 > 0
    s = torch.where(pos, torch.sqrt(torch.where(pos, s2, torch.ones_like(s2))), torch.zeros_like(s2))
    return torch.atan2(0.5 * s, c)


def random_rotations(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` uniform random rotations (n, 3, 3) from normalised Gaussian quaternions.

    Pass a seeded ``torch.Generator`` for reproducibility (``None`` uses torch's global RNG).
    """
    q = torch.randn((n, 4), generator=generator, dtype=dtype, device=device)
    return quaternion_to_matrix(q)


def project_to_so3(M: torch.Tensor) -> torch.Tensor:
    """Nearest rotation to each (..., 3, 3) matrix via SVD with the determinant fix.

    Differentiable where singular values are distinct (SVD gradients are undefined otherwise).
    """
    U, _, Vh = torch.linalg.svd(M)
    d = torch.where(torch.linalg.det(U @ Vh) < 0, -1.0, 1.0).to(M.dtype)
    ones = torch.ones_like(d)
    D = torch.diag_embed(torch.stack([ones, ones, d], dim=-1))
    return U @ D @ Vh


def transform_points(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``R @ x + t`` for points (..., N, 3), rotations (..., 3, 3), translations (..., 3)."""
    return points @ R.transpose(-1, -2) + t[..., None, :]


def project_points(points: torch.Tensor, K: torch.Tensor, min_depth: float = 1e-6) -> torch.Tensor:
    """Pinhole projection of camera-frame points (..., N, 3) with ``K`` (..., 3, 3) to pixels (..., N, 2).

    OpenCV convention (integer coordinates are pixel centres). Depths are clamped to ``min_depth``
    so points behind the camera give large but finite coordinates.
    """
    p = points @ K.transpose(-1, -2)
    z = p[..., 2:3].clamp_min(min_depth)
    return p[..., :2] / z
