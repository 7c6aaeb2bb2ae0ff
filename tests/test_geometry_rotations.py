"""Rotation conversions (numpy and torch): round trips, orthonormality, batching, stability at 0 and pi."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from repro.geometry import rotations as rot
from repro.geometry import torch_ops as tops

FINITE = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)


@st.composite
def quaternions(draw) -> np.ndarray:
    q = np.array([draw(FINITE) for _ in range(4)])
    if np.linalg.norm(q) < 1e-3:
        q = np.array([1.0, 0.0, 0.0, 0.0])
    return q / np.linalg.norm(q)


@st.composite
def rotvecs(draw) -> np.ndarray:
    """Axis-angle vectors with angles spread over [0, pi], including the ends."""
    axis = np.array([draw(FINITE) for _ in range(3)])
    if np.linalg.norm(axis) < 1e-3:
        axis = np.array([0.0, 0.0, 1.0])
    kind = draw(st.sampled_from(["tiny", "near_pi", "any"]))
    if kind == "tiny":
        angle = draw(st.floats(0.0, 1e-5))
    elif kind == "near_pi":
        angle = np.pi - draw(st.floats(0.0, 1e-5))
    else:
        angle = draw(st.floats(0.0, np.pi))
    return axis / np.linalg.norm(axis) * angle


def _rotvec_equal(a: np.ndarray, b: np.ndarray, atol: float = 1e-9) -> bool:
    """Equal as rotations (at angle pi, v and -v are the same rotation)."""
    return bool(np.allclose(rot.axis_angle_to_matrix(a), rot.axis_angle_to_matrix(b), atol=atol))


# ------------------------------------------------------------------------------------------ numpy


@settings(max_examples=100, deadline=None)
@given(quaternions())
def test_quaternion_round_trip(q: np.ndarray) -> None:
    R = rot.quaternion_to_matrix(q)
    assert rot.is_rotation(R, atol=1e-12)
    q2 = rot.matrix_to_quaternion(R)
    assert q2[0] >= 0
    assert np.allclose(q2, q if q[0] >= 0 else -q, atol=1e-12) or np.isclose(q[0], 0, atol=1e-12)
    assert np.allclose(rot.quaternion_to_matrix(q2), R, atol=1e-12)
    scipy_q = Rotation.from_matrix(R).as_quat()  # xyzw
    assert np.allclose(np.abs(np.r_[scipy_q[3], scipy_q[:3]] @ q2), 1.0, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(rotvecs())
def test_axis_angle_round_trip(v: np.ndarray) -> None:
    R = rot.axis_angle_to_matrix(v)
    assert rot.is_rotation(R, atol=1e-12)
    assert np.allclose(R, Rotation.from_rotvec(v).as_matrix(), atol=1e-12)
    v2 = rot.matrix_to_axis_angle(R)
    assert np.linalg.norm(v2) <= np.pi + 1e-12
    if np.linalg.norm(v) < np.pi - 1e-3:
        assert np.allclose(v2, v, atol=1e-11, rtol=1e-9)
    else:
        assert _rotvec_equal(v2, v, atol=1e-12)
        assert np.isclose(np.linalg.norm(v2), np.linalg.norm(v), atol=1e-11)


def test_axis_angle_tiny_angles_keep_relative_precision() -> None:
    for angle in (1e-14, 1e-10, 1e-7, 1e-6, 1.1e-6, 1e-4):
        v = np.array([0.3, -0.5, 0.81]) / np.linalg.norm([0.3, -0.5, 0.81]) * angle
        v2 = rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(v))
        assert np.allclose(v2, v, rtol=1e-8, atol=0), angle


@settings(max_examples=100, deadline=None)
@given(quaternions(), st.floats(0.2, 5.0), st.floats(-3.0, 3.0))
def test_rotation_6d_round_trip(q: np.ndarray, scale: float, shear: float) -> None:
    R = rot.quaternion_to_matrix(q)
    d6 = rot.matrix_to_rotation_6d(R)
    assert np.allclose(d6, np.r_[R[:, 0], R[:, 1]])
    assert np.allclose(rot.rotation_6d_to_matrix(d6), R, atol=1e-12)
    # Gram-Schmidt: scaling a1 and adding multiples of a1 to a2 change nothing.
    noisy = np.r_[scale * R[:, 0], R[:, 1] + shear * R[:, 0]]
    assert np.allclose(rot.rotation_6d_to_matrix(noisy), R, atol=1e-10)
    assert rot.is_rotation(rot.rotation_6d_to_matrix(np.r_[R[:, 0] + 0.1, R[:, 1] - 0.2]))


def test_rotation_6d_degenerate_raises() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        rot.rotation_6d_to_matrix(np.array([1.0, 0, 0, 2.0, 0, 0]))


@settings(max_examples=100, deadline=None)
@given(quaternions(), rotvecs())
def test_geodesic_distance_matches_angle(q: np.ndarray, v: np.ndarray) -> None:
    R1 = rot.quaternion_to_matrix(q)
    R2 = R1 @ rot.axis_angle_to_matrix(v)
    angle = rot.geodesic_distance(R1, R2)
    assert np.isclose(angle, np.linalg.norm(v), atol=1e-12, rtol=1e-7)
    assert np.isclose(rot.geodesic_distance(R2, R1), angle, atol=1e-12)


def test_geodesic_distance_precise_at_0_and_pi() -> None:
    R = rot.random_rotation(np.random.default_rng(0))
    for angle in (1e-12, 1e-9, 1e-6):
        d = rot.geodesic_distance(R, R @ rot.axis_angle_to_matrix(np.array([0.0, angle, 0.0])))
        assert np.isclose(d, angle, rtol=1e-4), (angle, d)
    for eps in (0.0, 1e-9, 1e-6):
        d = rot.geodesic_distance(R, R @ rot.axis_angle_to_matrix(np.array([0.0, 0.0, np.pi - eps])))
        assert abs(d - (np.pi - eps)) < 1e-12
    assert rot.geodesic_distance(R, R) == 0.0
    # Slightly non-orthonormal input: no NaN (no arccos domain error).
    assert np.isfinite(rot.geodesic_distance(np.eye(3) * (1 + 1e-9), np.eye(3)))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_batch_equals_single(seed: int) -> None:
    rng = np.random.default_rng(seed)
    Rs = rot.random_rotations(7, rng).reshape(7, 3, 3)
    batch = {
        "q": rot.matrix_to_quaternion(Rs), "v": rot.matrix_to_axis_angle(Rs), "d6": rot.matrix_to_rotation_6d(Rs),
        "geo": rot.geodesic_distance(Rs, Rs[::-1]), "proj": rot.project_to_so3(Rs + 0.01),
    }
    for i in range(7):
        assert np.allclose(batch["q"][i], rot.matrix_to_quaternion(Rs[i]), atol=1e-15)
        assert np.allclose(batch["v"][i], rot.matrix_to_axis_angle(Rs[i]), atol=1e-15)
        assert np.allclose(batch["d6"][i], rot.matrix_to_rotation_6d(Rs[i]))
        assert np.isclose(batch["geo"][i], rot.geodesic_distance(Rs[i], Rs[6 - i]))
        assert np.allclose(batch["proj"][i], rot.project_to_so3(Rs[i] + 0.01), atol=1e-14)
    # Leading axes broadcast: (2, 7, 3, 3).
    stacked = np.stack([Rs, Rs])
    assert rot.matrix_to_axis_angle(stacked).shape == (2, 7, 3)
    assert np.allclose(rot.axis_angle_to_matrix(rot.matrix_to_axis_angle(stacked)), stacked, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(1e-4, 0.5))
def test_project_to_so3(seed: int, noise: float) -> None:
    rng = np.random.default_rng(seed)
    R = rot.random_rotation(rng)
    assert np.allclose(rot.project_to_so3(R), R, atol=1e-12)
    M = R + noise * rng.standard_normal((3, 3))
    P = rot.project_to_so3(M)
    assert rot.is_rotation(P, atol=1e-12)
    # Nearest rotation: no random rotation near R is closer to M in Frobenius norm.
    for _ in range(20):
        Q = P @ rot.axis_angle_to_matrix(rng.normal(scale=0.05, size=3))
        assert np.linalg.norm(M - P) <= np.linalg.norm(M - Q) + 1e-12
    reflection = np.diag([1.0, 1.0, -1.0]) @ R
    assert rot.is_rotation(rot.project_to_so3(reflection), atol=1e-12)


def test_random_rotations_seeded_and_uniform() -> None:
    a = rot.random_rotations(20000, np.random.default_rng(3))
    b = rot.random_rotations(20000, np.random.default_rng(3))
    assert np.array_equal(a, b)
    assert np.all(rot.is_rotation(a, atol=1e-12))
    # Haar measure: E[R] = 0 and the angle has density (1 - cos a) / pi, mean pi/2 + 2/pi.
    assert np.abs(a.mean(axis=0)).max() < 0.02
    angles = rot.geodesic_distance(np.eye(3), a)
    assert abs(angles.mean() - (np.pi / 2 + 2 / np.pi)) < 0.02
    assert np.isclose(rot.geodesic_distance(np.eye(3), rot.rotation_with_angle(0.3, np.random.default_rng(1))), 0.3)


def test_skew_is_cross_product() -> None:
    rng = np.random.default_rng(0)
    v, u = rng.normal(size=(2, 5, 3))
    assert np.allclose(np.einsum("nij,nj->ni", rot.skew(v), u), np.cross(v, u))


def test_import_does_not_load_torch() -> None:
    code = "import sys, repro.geometry as g; g.icp; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------ torch


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float64)


def _special_rotvecs() -> np.ndarray:
    rng = np.random.default_rng(7)
    axes = rng.normal(size=(8, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.array([0.0, 1e-9, 1e-6, 0.3, 1.5, 3.0, np.pi - 1e-7, np.pi])
    return axes * angles[:, None]


def test_torch_matches_numpy() -> None:
    v = np.concatenate([_special_rotvecs(), np.random.default_rng(1).normal(size=(20, 3))])
    R = rot.axis_angle_to_matrix(v)
    assert np.allclose(tops.axis_angle_to_matrix(_t(v)).numpy(), R, atol=1e-14)
    assert np.allclose(tops.matrix_to_quaternion(_t(R)).numpy(), rot.matrix_to_quaternion(R), atol=1e-14)
    assert np.allclose(tops.quaternion_to_matrix(_t(rot.matrix_to_quaternion(R))).numpy(), R, atol=1e-14)
    assert np.allclose(tops.matrix_to_axis_angle(_t(R)).numpy(), rot.matrix_to_axis_angle(R), atol=1e-12)
    assert np.allclose(tops.matrix_to_rotation_6d(_t(R)).numpy(), rot.matrix_to_rotation_6d(R))
    d6 = np.random.default_rng(2).normal(size=(20, 6))
    assert np.allclose(tops.rotation_6d_to_matrix(_t(d6)).numpy(), rot.rotation_6d_to_matrix(d6), atol=1e-14)
    assert np.allclose(tops.geodesic_distance(_t(R), _t(R[::-1].copy())).numpy(),
                       rot.geodesic_distance(R, R[::-1]), atol=1e-12)
    M = R + 0.1 * np.random.default_rng(3).normal(size=R.shape)
    assert np.allclose(tops.project_to_so3(_t(M)).numpy(), rot.project_to_so3(M), atol=1e-12)
    batched = tops.axis_angle_to_matrix(_t(v).reshape(4, 7, 3))
    assert batched.shape == (4, 7, 3, 3)


def test_torch_random_rotations_seeded() -> None:
    a = tops.random_rotations(100, torch.Generator().manual_seed(5))
    b = tops.random_rotations(100, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(a.transpose(-1, -2) @ a, eye.expand(100, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(a), torch.ones(100, dtype=torch.float64))


def test_torch_gradcheck_conversions() -> None:
    v = _t(np.array([[0.3, -0.2, 0.5], [1e-8, 2e-8, -1e-8], [0.0, 0.0, 0.0], [2.0, 1.0, -0.5]])).requires_grad_()
    assert torch.autograd.gradcheck(tops.axis_angle_to_matrix, (v,))
    R = tops.axis_angle_to_matrix(_t(np.array([[0.3, -0.2, 0.5], [1e-3, 0.0, 0.0], [2.0, 1.0, -0.5]])))
    R.requires_grad_()
    assert torch.autograd.gradcheck(tops.matrix_to_quaternion, (R,))
    assert torch.autograd.gradcheck(tops.matrix_to_axis_angle, (R,))
    d6 = _t(np.random.default_rng(0).normal(size=(3, 6))).requires_grad_()
    assert torch.autograd.gradcheck(tops.rotation_6d_to_matrix, (d6,))
    R2 = tops.axis_angle_to_matrix(_t(np.array([[0.1, 0.2, -0.3]] * 3)))
    assert torch.autograd.gradcheck(lambda a: tops.geodesic_distance(a, R2), (R,))


def test_torch_gradients_finite_at_special_angles() -> None:
    v = _t(_special_rotvecs()).requires_grad_()
    R = tops.axis_angle_to_matrix(v)
    R.retain_grad()
    out = tops.matrix_to_axis_angle(R).sum() + tops.matrix_to_quaternion(R).sum()
    out = out + tops.geodesic_distance(R, tops.axis_angle_to_matrix(torch.zeros(3, dtype=torch.float64))).sum()
    out.backward()
    assert torch.isfinite(v.grad).all()
    assert torch.isfinite(R.grad).all()
    eye = torch.eye(3, dtype=torch.float64, requires_grad=True)
    tops.geodesic_distance(eye, torch.eye(3, dtype=torch.float64)).backward()
    assert torch.isfinite(eye.grad).all()
