"""Rotation conversions and distances in numpy (float64), batched over leading axes.

Conventions:

* Rotation matrices act on column vectors (``x' = R @ x``), as BOP's model-to-camera ``R``.
* Quaternions are ``(w, x, y, z)`` (scalar first), unit norm; conversions *to* quaternions return
  the representative with ``w >= 0``.
* Axis-angle vectors are ``angle * unit_axis`` (radians), angle in ``[0, pi]`` on output.
* The 6D representation (Zhou et al., CVPR 2019) is the first two *columns* of ``R`` concatenated,
  ``(R[:, 0], R[:, 1])``; it is mapped back by Gram-Schmidt.

Every function accepts ``(..., 3, 3)`` / ``(..., 4)`` / ``(..., 3)`` / ``(..., 6)`` arrays and
broadcasts over the leading axes. The torch twins (batched, differentiable) live in
``repro.geometry.torch_ops``.
"""

from __future__ import annotations

import numpy as np

_SMALL_ANGLE = 1e-6


def _as_float(x: np.ndarray, last: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape[arr.ndim - len(last):] != last:
        raise ValueError(f"{name}: expected shape (..., {', '.join(map(str, last))}), got {arr.shape}")
    return arr


def skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices ``[v]_x`` (..., 3, 3) with ``[v]_x @ u == cross(v, u)``."""
    v = _as_float(v, (3,), "v")
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = np.zeros_like(x)
    return np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*v.shape[:-1], 3, 3)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternions ``(w, x, y, z)`` (..., 4) -> rotation matrices (..., 3, 3); ``q`` is normalised first."""
    q = _as_float(q, (4,), "q")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError("quaternion_to_matrix: zero quaternion")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    R = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return R.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions ``(w, x, y, z)`` with ``w >= 0``.

    Shepperd's method: of the four algebraically equivalent formulas the one dividing by the largest
    quaternion component is used, so the result is accurate for every rotation (also near pi).
    ``R`` should be orthonormal (see ``project_to_so3``).
    """
    R = _as_float(R, (3, 3), "R")
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    sq = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], axis=-1)
    q_abs = np.sqrt(np.maximum(sq, 0.0))
    # Row k is 4 q_k q (w, x, y, z).
    cands = np.stack([
        np.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], axis=-1),
        np.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], axis=-1),
        np.stack([m02 - m20, m10 + m01, sq[..., 2], m12 + m21], axis=-1),
        np.stack([m10 - m01, m20 + m02, m21 + m12, sq[..., 3]], axis=-1),
    ], axis=-2)
    k = np.argmax(q_abs, axis=-1)
    row = np.take_along_axis(cands, k[..., None, None], axis=-2)[..., 0, :]
    denom = 2.0 * np.take_along_axis(q_abs, k[..., None], axis=-1)
    q = row / denom
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula, (..., 3) -> (..., 3, 3); accurate for tiny and large angles.

    Uses ``(1 - cos a) / a^2 = 2 sin^2(a/2) / a^2`` (no cancellation) and a Taylor series at ~0.
    """
    rotvec = _as_float(rotvec, (3,), "rotvec")
    theta2 = np.sum(rotvec * rotvec, axis=-1)[..., None, None]
    theta = np.sqrt(theta2)
    small = theta < _SMALL_ANGLE
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe) / safe)
    half = np.sin(0.5 * safe) / (0.5 * safe)
    b = np.where(small, 0.5 - theta2 / 24.0, 0.5 * half * half)
    K = skew(rotvec)
    return np.eye(3) + a * K + b * (K @ K)


def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> axis-angle vectors (..., 3) with angle in ``[0, pi]``.

    Goes through the (Shepperd) quaternion, ``angle = 2 atan2(|v|, w)``, which is well conditioned
    at 0 and at pi (where ``arccos((tr R - 1) / 2)`` and the antisymmetric part both fail).
    At exactly pi the sign of the axis is arbitrary.
    """
    q = matrix_to_quaternion(R)
    w, v = q[..., :1], q[..., 1:]
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    small = n < _SMALL_ANGLE
    w_safe = np.where(small, w, 1.0)
    n_safe = np.where(small, 1.0, n)
    factor = np.where(small, 2.0 / w_safe * (1.0 - n * n / (3.0 * w_safe * w_safe)), 2.0 * np.arctan2(n, w) / n_safe)
    return v * factor


def rotation_6d_to_matrix(d6: np.ndarray) -> np.ndarray:
    """6D representation (..., 6) -> rotation matrices (..., 3, 3) by Gram-Schmidt (Zhou et al. 2019).

    ``d6 = (a1, a2)`` are the (unnormalised) first two columns; ``b1 = a1/|a1|``,
    ``b2 = normalise(a2 - (b1.a2) b1)``, ``b3 = b1 x b2``. Raises on degenerate (parallel) inputs.
    """
    d6 = _as_float(d6, (6,), "d6")
    a1, a2 = d6[..., :3], d6[..., 3:]
    n1 = np.linalg.norm(a1, axis=-1, keepdims=True)
    b1 = a1 / np.where(n1 == 0, 1.0, n1)
    u2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    n2 = np.linalg.norm(u2, axis=-1, keepdims=True)
    if np.any(n1 == 0) or np.any(n2 == 0):
        raise ValueError("rotation_6d_to_matrix: degenerate 6D vector (zero or parallel columns)")
    b2 = u2 / n2
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)


def matrix_to_rotation_6d(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> 6D representation (..., 6): the first two columns."""
    R = _as_float(R, (3, 3), "R")
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def geodesic_distance(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Angle (radians, in ``[0, pi]``) of ``R1^T R2``, broadcast over leading axes.

    ``atan2(|vee(M - M^T)| / 2, (tr M - 1) / 2)``: both arguments are computed without cancellation,
    so it is accurate near 0 (where ``arccos`` loses half the digits) and near pi, and needs no
    clipping even for slightly non-orthonormal inputs.
    """
    R1 = _as_float(R1, (3, 3), "R1")
    R2 = _as_float(R2, (3, 3), "R2")
    M = np.swapaxes(R1, -1, -2) @ R2
    c = 0.5 * (M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2] - 1.0)
    vee = np.stack([M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]], axis=-1)
    s = 0.5 * np.linalg.norm(vee, axis=-1)
    return np.arctan2(s, c)


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotations (n, 3, 3) uniform on SO(3) (Haar measure), from normalised Gaussian quaternions."""
    q = rng.standard_normal((n, 4))
    return quaternion_to_matrix(q)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """One uniformly random rotation (3, 3)."""
    return random_rotations(1, rng)[0]


def rotation_with_angle(angle: float, rng: np.random.Generator) -> np.ndarray:
    """A rotation by exactly ``angle`` radians about a uniformly random axis (for perturbations)."""
    axis = rng.standard_normal(3)
    return axis_angle_to_matrix(axis / np.linalg.norm(axis) * angle)


def project_to_so3(M: np.ndarray) -> np.ndarray:
    """Nearest rotation (Frobenius norm) to each matrix (..., 3, 3): ``U diag(1, 1, det(U V^T)) V^T``."""
    M = _as_float(M, (3, 3), "M")
    U, _, Vt = np.linalg.svd(M)
    d = np.where(np.linalg.det(U @ Vt) < 0, -1.0, 1.0)
    U = U.copy()
    U[..., :, 2] *= d[..., None]
    return U @ Vt


def is_rotation(R: np.ndarray, atol: float = 1e-6) -> np.ndarray | bool:
    """Whether each (..., 3, 3) matrix is orthonormal with determinant +1 within ``atol``."""
    R = _as_float(R, (3, 3), "R")
    ortho = np.all(np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)) <= atol, axis=(-2, -1))
    result = ortho & (np.abs(np.linalg.det(R) - 1.0) <= atol)
    return bool(result) if result.ndim == 0 else result
