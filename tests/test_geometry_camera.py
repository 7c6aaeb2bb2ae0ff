"""Camera helpers: back-projection / projection round trips, normals, crop and resize of K."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.geometry import camera as cam
from repro.types import CameraIntrinsics

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def test_backproject_project_round_trip() -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(300.0, 1500.0, size=(48, 64)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.2] = 0
    xyz = cam.depth_to_xyz(depth, K)
    assert xyz.shape == (48, 64, 3)
    assert np.allclose(xyz[..., 2], depth)
    assert np.all(xyz[depth == 0] == 0)
    points, pixels = cam.depth_to_points(depth, K)
    assert np.allclose(points, xyz[depth > 0])
    assert np.array_equal(pixels[:, ::-1], np.argwhere(depth > 0))
    assert np.allclose(cam.project_points(points, K), pixels, atol=1e-9)
    # Pixel (cx, cy) is on the optical axis (integer pixel coordinates are pixel centres).
    K0 = np.array([[500.0, 0, 10.0], [0, 500.0, 20.0], [0, 0, 1]])
    xyz0 = cam.depth_to_xyz(np.full((40, 30), 100.0), K0)
    assert np.allclose(xyz0[20, 10], [0.0, 0.0, 100.0])
    mask = np.zeros(depth.shape, dtype=bool)
    mask[10:20, 5:30] = True
    sub, _ = cam.depth_to_points(depth, K, mask)
    assert len(sub) == np.count_nonzero(mask & (depth > 0))


def test_project_points_with_pose_and_behind_camera() -> None:
    R = cv2.Rodrigues(np.array([0.1, -0.2, 0.3]))[0]
    t = np.array([10.0, -20.0, 700.0])
    X = np.array([[0.0, 0.0, 0.0], [30.0, -10.0, 5.0], [0.0, 0.0, -1000.0]])
    uv = cam.project_points(X, K, R, t)
    ref = cv2.projectPoints(X[:2], cv2.Rodrigues(R)[0], t, K, None)[0].reshape(-1, 2)
    assert np.allclose(uv[:2], ref)
    assert np.all(np.isnan(uv[2]))


@settings(max_examples=30, deadline=None)
@given(st.floats(-0.6, 0.6), st.floats(-0.6, 0.6), st.floats(400.0, 1200.0))
def test_normals_of_a_plane(nx: float, ny: float, dist: float) -> None:
    n = np.array([nx, ny, -1.0])
    n /= np.linalg.norm(n)
    camera = CameraIntrinsics(np.array([[300.0, 0, 40.0], [0, 300.0, 30.0], [0, 0, 1]]), 80, 60)
    rays = np.stack([*np.meshgrid(np.arange(80.0), np.arange(60.0)), np.ones((60, 80))], axis=-1)
    rays = rays @ np.linalg.inv(camera.K).T
    # Plane n . X = -dist (facing the camera): z = -dist / (n . ray).
    depth = -dist / (rays @ n)
    normals = cam.normals_from_depth(depth, camera.K, max_depth_jump=1e9)
    inner = normals[1:-1, 1:-1].reshape(-1, 3)
    assert np.allclose(inner, n, atol=1e-6)
    assert np.all(normals[0] == 0) and np.all(normals[:, -1] == 0)


def test_normals_zero_at_depth_discontinuities() -> None:
    depth = np.full((20, 20), 500.0)
    depth[:, 10:] = 800.0
    depth[5, 5] = 0.0
    normals = cam.normals_from_depth(depth, K, max_depth_jump=20.0)
    valid = np.any(normals != 0, axis=-1)
    assert not valid[:, 9:11].any()
    assert not valid[4:7, 4:7][[0, 1, 1, 1, 2], [1, 0, 1, 2, 1]].any()
    assert valid[12, 3] and valid[12, 15]
    assert np.allclose(normals[12, 3], [0.0, 0.0, -1.0], atol=1e-9)


def test_crop_shifts_principal_point() -> None:
    X = np.array([[12.0, -40.0, 650.0], [-80.0, 33.0, 900.0]])
    uv = cam.project_points(X, K)
    box = (100, 50, 200, 150)
    assert np.allclose(cam.project_points(X, cam.crop_K(K, box)), uv - [100, 50])
    c = cam.crop_camera(CameraIntrinsics(K, 640, 480), box)
    assert (c.width, c.height) == (200, 150)


def _blob(w: int, h: int, u0: float, v0: float, sigma: float = 3.0) -> np.ndarray:
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    return np.exp(-((u - u0) ** 2 + (v - v0) ** 2) / (2 * sigma**2)).astype(np.float32)


def _centroid(img: np.ndarray) -> np.ndarray:
    v, u = np.indices(img.shape)
    return np.array([(u * img).sum(), (v * img).sum()]) / img.sum()


@pytest.mark.parametrize(("new_w", "new_h"), [(128, 96), (32, 24), (100, 30)])
def test_resize_matches_cv2_resize(new_w: int, new_h: int) -> None:
    """A blob's centre moves exactly as the resized K predicts (the naive cx * s is off by (s - 1) / 2)."""
    w, h, u0, v0 = 64, 48, 30.3, 22.7
    img = cv2.resize(_blob(w, h, u0, v0, sigma=4.0), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    Kb = np.array([[100.0, 0.0, u0], [0.0, 100.0, v0], [0.0, 0.0, 1.0]])
    K2 = cam.resize_K(Kb, new_w / w, new_h / h)
    assert np.allclose(_centroid(img), K2[:2, 2], atol=0.03)
    c = cam.resize_camera(CameraIntrinsics(Kb, w, h), new_w, new_h)
    assert np.allclose(c.K, K2) and (c.width, c.height) == (new_w, new_h)
    assert np.isclose(K2[0, 0], 100.0 * new_w / w)


def test_crop_resize_affine_agrees_with_warp_and_K() -> None:
    w, h, u0, v0 = 160, 120, 70.4, 52.6
    img = _blob(w, h, u0, v0, sigma=5.0)
    box, size = (40.0, 30.0, 64.0, 48.0), (128, 96)
    M = cam.crop_resize_affine(box, size)
    crop = cv2.warpAffine(img, M, size, flags=cv2.INTER_LINEAR)
    Kb = np.array([[200.0, 0.0, u0], [0.0, 200.0, v0], [0.0, 0.0, 1.0]])
    K2 = cam.crop_resize_K(Kb, box, size)
    assert np.allclose(_centroid(crop), K2[:2, 2], atol=0.03)
    assert np.allclose(M @ [u0, v0, 1.0], K2[:2, 2])
    # Crop then resize == crop_resize; the whole image as box == resize.
    assert np.allclose(K2, cam.resize_K(cam.crop_K(Kb, box), size[0] / box[2], size[1] / box[3]))
    assert np.allclose(cam.crop_resize_K(Kb, (0, 0, w, h), (80, 60)), cam.resize_K(Kb, 0.5, 0.5))
    c = cam.crop_resize_camera(CameraIntrinsics(Kb, w, h), box, size)
    assert (c.width, c.height) == size
    with pytest.raises(ValueError):
        cam.crop_resize_affine((0, 0, 0, 10), size)
