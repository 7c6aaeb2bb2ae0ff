"""ICP: KD-tree point-to-plane / point-to-point on sampled object clouds, projective ICP on rendered depth."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from repro.geometry import (
    ICPConfig,
    estimate_normals,
    geodesic_distance,
    icp,
    icp_projective,
    random_rotation,
    rotation_with_angle,
    transform_points,
)
from repro.render.viewpoints import look_at
from repro.types import CameraIntrinsics, ObjectModel

log = logging.getLogger(__name__)

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])
CAM = CameraIntrinsics(K, 640, 480)


def box_model(size=(100.0, 70.0, 50.0), obj_id: int = 1) -> ObjectModel:
    """A closed box centred at the origin (mm), 12 outward-facing triangles."""
    h = np.asarray(size) / 2
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64) * h
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))]
    return ObjectModel(obj_id, v, np.array(faces), float(np.linalg.norm(2 * h)))


def perturb(R: np.ndarray, t: np.ndarray, rot_deg: float, trans_mm: float, rng: np.random.Generator):
    d = rng.normal(size=3)
    return rotation_with_angle(np.radians(rot_deg), rng) @ R, t + trans_mm * d / np.linalg.norm(d)


def errors(R, t, R_gt, t_gt) -> tuple[float, float]:
    return float(np.degrees(geodesic_distance(R, R_gt))), float(np.linalg.norm(t - t_gt))


def test_box_faces_point_outwards() -> None:
    m = box_model()
    tri = m.vertices[m.faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert np.all(np.sum(n * tri.mean(axis=1), axis=1) > 0)


@pytest.mark.parametrize("seed", range(4))
def test_icp_point_to_plane_on_object_cloud(seed: int) -> None:
    rng = np.random.default_rng(seed)
    model = box_model()
    source = model.sample_points(4000, seed=2 * seed)
    R_gt, t_gt = random_rotation(rng), np.array([30.0, -20.0, 700.0])
    target = transform_points(model.sample_points(6000, seed=2 * seed + 1), R_gt, t_gt)
    R0, t0 = perturb(R_gt, t_gt, 5.0, 10.0, rng)
    res = icp(source, target, R0, t0)
    r_err, t_err = errors(res.R, res.t, R_gt, t_gt)
    log.info("icp p2plane seed %d: %.3f deg, %.3f mm, %d it, fitness %.3f, rmse %.3f mm",
             seed, r_err, t_err, res.n_iterations, res.fitness, res.inlier_rmse)
    assert res.success and res.converged
    assert r_err < 0.5 and t_err < 1.0
    assert res.fitness > 0.95 and res.inlier_rmse < 2.0


def test_icp_point_to_point_and_given_normals() -> None:
    rng = np.random.default_rng(10)
    model = box_model()
    pts = model.sample_points(5000, seed=0)
    R_gt, t_gt = random_rotation(rng), np.array([0.0, 0.0, 600.0])
    target = transform_points(pts, R_gt, t_gt)
    R0, t0 = perturb(R_gt, t_gt, 5.0, 10.0, rng)
    p2p = icp(pts, target, R0, t0, config=ICPConfig(method="point_to_point", max_iterations=100))
    r_err, t_err = errors(p2p.R, p2p.t, R_gt, t_gt)
    log.info("icp p2point: %.4f deg, %.4f mm, %d it", r_err, t_err, p2p.n_iterations)
    assert r_err < 0.5 and t_err < 1.0
    # Exact correspondences available and exact normals: converges to the exact pose.
    normals = estimate_normals(target)
    res = icp(pts, target, R0, t0, target_normals=normals)
    assert errors(res.R, res.t, R_gt, t_gt)[0] < 1e-3 and res.inlier_rmse < 1e-2


def test_icp_deterministic_and_failure() -> None:
    model = box_model()
    src = model.sample_points(2000, seed=0)
    tgt = transform_points(model.sample_points(2000, seed=1), np.eye(3), [5.0, 0.0, 500.0])
    a = icp(src, tgt, np.eye(3), [0.0, 0.0, 500.0])
    b = icp(src, tgt, np.eye(3), [0.0, 0.0, 500.0])
    assert np.array_equal(a.R, b.R) and np.array_equal(a.t, b.t) and a.n_iterations == b.n_iterations
    far = icp(src, tgt, np.eye(3), [500.0, 0.0, 500.0])
    assert not far.success and far.fitness == 0.0


def test_estimate_normals_orientation() -> None:
    model = box_model()
    pts = model.sample_points(3000, seed=3)
    n = estimate_normals(pts)
    assert np.mean(np.sum(n * pts, axis=1) > 0) > 0.99  # away from the centroid
    cam_pts = pts + np.array([0.0, 0.0, 500.0])
    n_cam = estimate_normals(cam_pts, viewpoint=np.zeros(3))
    assert np.all(np.sum(n_cam * cam_pts, axis=1) < 0)  # towards the camera



@pytest.mark.parametrize(("seed", "method"), [(0, "point_to_plane"), (1, "point_to_plane"), (2, "point_to_plane")])
def test_projective_icp_on_rendered_depth(renderer, seed: int, method: str) -> None:
    """Render the box at the true pose (the observation) and at a 5 deg / 10 mm perturbed start; the
    model points seen at the start (rendered xyz) are aligned to the observed depth."""
    from repro.render import render_poses

    rng = np.random.default_rng(seed)
    model = box_model()
    eye = np.array([1.0, -0.8, 1.1]) + 0.2 * rng.normal(size=3)
    R_gt, t_gt = look_at(650.0 * eye / np.linalg.norm(eye))
    t_gt = t_gt + np.array([25.0, -15.0, 0.0])
    R0, t0 = perturb(R_gt, t_gt, 5.0, 10.0, rng)
    obs, start = render_poses(renderer, model, CAM, np.stack([R_gt, R0]), np.stack([t_gt, t0]),
                              outputs={"depth", "xyz"})
    source = start.xyz[start.depth > 0]
    cfg = ICPConfig(method=method, max_iterations=60 if method == "point_to_point" else 50)
    res = icp_projective(source, obs.depth, K, R0, t0, config=cfg)
    r_err, t_err = errors(res.R, res.t, R_gt, t_gt)
    log.info("projective icp (%s, %s) seed %d: %.3f deg, %.3f mm, %d it, fitness %.3f, rmse %.3f mm, %d points",
             renderer.name, method, seed, r_err, t_err, res.n_iterations, res.fitness, res.inlier_rmse, len(source))
    assert res.success
    assert r_err < 0.5 and t_err < 1.0
    # Masking the observation to the object changes nothing here (only the object is rendered).
    masked = icp_projective(source, obs.depth, K, R0, t0, mask=obs.depth > 0, config=cfg)
    assert np.allclose(masked.R, res.R) and np.allclose(masked.t, res.t)
