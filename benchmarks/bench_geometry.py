"""Geometry solver throughput: PnP-RANSAC, batched LM refinement, ICP.

Run: ``pytest benchmarks/bench_geometry.py --benchmark-only``. Problems are synthetic with known
poses (seeded), so each benchmark also asserts the answer is right. ``extra_info`` holds the
problem size and accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest

from repro.geometry import (
    ICPConfig,
    depth_to_points,
    estimate_normals,
    geodesic_distance,
    icp,
    icp_projective,
    normals_from_depth,
    pnp_ransac,
    project_points,
    random_rotation,
    rotation_with_angle,
    transform_points,
)
from repro.types import ObjectModel

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def _perturbed(R, t, rng, deg: float, mm: float):
    d = rng.normal(size=3)
    return rotation_with_angle(np.radians(deg), rng) @ R, t + mm * d / np.linalg.norm(d)


def _box_model() -> ObjectModel:
    """A 100 x 70 x 50 mm box centred at the origin."""
    h = np.array([50.0, 35.0, 25.0])
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64) * h
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = np.array([tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))])
    return ObjectModel(1, v, faces, float(np.linalg.norm(2 * h)))


def _box_points(n: int, seed: int) -> np.ndarray:
    return _box_model().sample_points(n, seed=seed)


def test_pnp_ransac_1000(benchmark) -> None:
    """1000 correspondences, 0.5 px noise, 30 % outliers."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-60, 60, size=(1000, 3))
    R, t = random_rotation(rng), np.array([20.0, -10.0, 700.0])
    x = project_points(X, K, R, t) + rng.normal(scale=0.5, size=(1000, 2))
    bad = rng.permutation(1000)[:300]
    x[bad] = rng.uniform([0, 0], [640, 480], size=(300, 2))
    res = benchmark(pnp_ransac, X, x, K, rng=0)
    assert res.success and np.degrees(geodesic_distance(res.R, R)) < 1.0
    benchmark.extra_info.update(rot_err_deg=float(np.degrees(geodesic_distance(res.R, R))),
                                iterations=res.n_iterations, inliers=res.n_inliers)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lm_batched_64x500(benchmark, dtype: str) -> None:
    """64 poses x 500 correspondences, 10 LM iterations, from 10 deg / 20 mm starts."""
    import torch

    from repro.geometry.lm import LMConfig, refine_pose_lm

    rng = np.random.default_rng(1)
    B, N = 64, 500
    X = rng.uniform(-60, 60, size=(B, N, 3))
    Rs = np.stack([random_rotation(rng) for _ in range(B)])
    ts = np.column_stack([rng.uniform(-50, 50, B), rng.uniform(-50, 50, B), rng.uniform(500, 900, B)])
    x = np.stack([project_points(X[b], K, Rs[b], ts[b]) for b in range(B)]) + rng.normal(scale=0.5, size=(B, N, 2))
    starts = [_perturbed(Rs[b], ts[b], rng, 10.0, 20.0) for b in range(B)]
    dt = getattr(torch, dtype)

    def tensor(a):
        return torch.as_tensor(np.asarray(a), dtype=dt)

    R0, t0 = tensor([s[0] for s in starts]), tensor([s[1] for s in starts])
    args = (R0, t0, tensor(X), tensor(x), tensor(K))
    cfg = LMConfig(iterations=10, step_tolerance=0.0)
    res = benchmark(refine_pose_lm, *args, config=cfg)
    err = np.degrees(geodesic_distance(res.R.double().numpy(), Rs))
    assert err.max() < 1.0
    benchmark.extra_info.update(max_rot_err_deg=float(err.max()), mean_rms_px=float(res.rms.mean()))


def test_icp_point_to_plane_10k(benchmark) -> None:
    """KD-tree point-to-plane ICP, 10k source / 10k target points, 5 deg / 10 mm start (normals precomputed)."""
    rng = np.random.default_rng(2)
    src = _box_points(10_000, seed=0)
    R, t = random_rotation(rng), np.array([10.0, 20.0, 700.0])
    tgt = transform_points(_box_points(10_000, seed=1), R, t)
    normals = estimate_normals(tgt)
    R0, t0 = _perturbed(R, t, rng, 5.0, 10.0)
    res = benchmark(icp, src, tgt, R0, t0, target_normals=normals)
    assert np.degrees(geodesic_distance(res.R, R)) < 0.5
    benchmark.extra_info.update(iterations=res.n_iterations, rot_err_deg=float(np.degrees(geodesic_distance(res.R, R))))


def test_estimate_normals_10k(benchmark) -> None:
    pts = _box_points(10_000, seed=1)
    benchmark(estimate_normals, pts)


def test_icp_projective_640x480(benchmark) -> None:
    """Projective point-to-plane ICP of ~16k model points (rendered xyz at the start pose) against the
    640x480 depth of the box rendered at the true pose; normals of the observation precomputed."""
    from repro.render import get_renderer, render_poses
    from repro.render.viewpoints import look_at
    from repro.types import CameraIntrinsics

    rng = np.random.default_rng(3)
    model = _box_model()
    R, t = look_at(np.array([250.0, -200.0, 280.0]))
    R0, t0 = _perturbed(R, t, rng, 5.0, 10.0)
    with get_renderer("auto") as renderer:
        obs, start = render_poses(renderer, model, CameraIntrinsics(K, 640, 480), np.stack([R, R0]), np.stack([t, t0]),
                                  outputs={"depth", "xyz"})
    src = start.xyz[start.depth > 0]
    normals = normals_from_depth(obs.depth, K)
    cfg = ICPConfig()
    res = benchmark(icp_projective, src, obs.depth, K, R0, t0, normals=normals, config=cfg)
    assert np.degrees(geodesic_distance(res.R, R)) < 0.5
    benchmark.extra_info.update(points=len(src), observed=len(depth_to_points(obs.depth, K)[0]),
                                iterations=res.n_iterations)
