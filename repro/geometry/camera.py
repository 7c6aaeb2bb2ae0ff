"""Pinhole camera helpers in numpy: back-projection, projection, normals, crop/resize of ``K``.

OpenCV convention throughout: pixel ``(u, v)`` = (column, row) and integer coordinates are pixel
*centres*, so pixel ``(u, v)`` with depth ``z`` (mm) is the camera-frame point
``z * K^-1 [u, v, 1]``, and the image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` continuously.
Boxes are ``(x, y, w, h)`` like BOP's ``bbox_obj``: the box covers pixels ``x .. x + w - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repro.types import CameraIntrinsics


def transform_points(points: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``R @ x + t`` for points (N, 3) (BOP model-to-camera pose, mm)."""
    return np.asarray(points, dtype=np.float64) @ np.asarray(R, dtype=np.float64).T + np.asarray(t, dtype=np.float64)


def project_points(points: np.ndarray, K: np.ndarray, R: np.ndarray | None = None,
                   t: np.ndarray | None = None) -> np.ndarray:
    """Pixel coordinates (N, 2) of points (N, 3); camera frame, or model frame when ``R``, ``t`` given.

    Points with ``z <= 0`` give ``nan``.
    """
    X = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if R is not None:
        X = transform_points(X, R, np.zeros(3) if t is None else t)
    p = X @ np.asarray(K, dtype=np.float64).T
    z = p[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = p[:, :2] / z
    uv[(z[:, 0] <= 0)] = np.nan
    return uv


def depth_to_xyz(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame point per pixel (H, W, 3) float64 from a depth map (H, W) in mm; zeros where depth is 0."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be HxW, got {depth.shape}")
    H, W = depth.shape
    Kinv = np.linalg.inv(np.asarray(K, dtype=np.float64))
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ Kinv.T
    rays /= rays[..., 2:3]
    return rays * depth[..., None]


def depth_to_points(depth: np.ndarray, K: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Back-project the valid pixels (depth > 0, and ``mask`` if given) in row-major order.

    Returns ``(points (N, 3) mm, pixels (N, 2) int64 as (u, v))``.
    """
    depth = np.asarray(depth)
    valid = depth > 0
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    v, u = np.nonzero(valid)
    Kinv = np.linalg.inv(np.asarray(K, dtype=np.float64))
    pix = np.column_stack([u, v, np.ones_like(u)]).astype(np.float64)
    rays = pix @ Kinv.T
    rays /= rays[:, 2:3]
    points = rays * depth[v, u].astype(np.float64)[:, None]
    return points, np.column_stack([u, v]).astype(np.int64)


def normals_from_xyz(xyz: np.ndarray, max_depth_jump: float = 20.0) -> np.ndarray:
    """Unit surface normals (H, W, 3) from an xyz map by central differences, facing the camera.

    ``n = (X[v, u+1] - X[v, u-1]) x (X[v+1, u] - X[v-1, u])`` oriented so that ``n . X < 0``. Pixels
    whose four neighbours are not all valid (z > 0) or differ from the centre in z by more than
    ``max_depth_jump`` mm (depth discontinuities) get the zero vector; so do the image borders.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f"xyz must be HxWx3, got {xyz.shape}")
    H, W = xyz.shape[:2]
    normals = np.zeros_like(xyz)
    if H < 3 or W < 3:
        return normals
    c = xyz[1:-1, 1:-1]
    left, right = xyz[1:-1, :-2], xyz[1:-1, 2:]
    up, down = xyz[:-2, 1:-1], xyz[2:, 1:-1]
    z = c[..., 2]
    valid = z > 0
    for nb in (left, right, up, down):
        valid &= (nb[..., 2] > 0) & (np.abs(nb[..., 2] - z) <= max_depth_jump)
    n = np.cross(right - left, down - up)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    valid &= norm[..., 0] > 0
    n = n / np.where(norm > 0, norm, 1.0)
    n = np.where((np.sum(n * c, axis=-1, keepdims=True) > 0), -n, n)
    normals[1:-1, 1:-1] = np.where(valid[..., None], n, 0.0)
    return normals


def normals_from_depth(depth: np.ndarray, K: np.ndarray, max_depth_jump: float = 20.0) -> np.ndarray:
    """Camera-frame unit normals (H, W, 3) of a depth map (mm); see ``normals_from_xyz``."""
    return normals_from_xyz(depth_to_xyz(depth, K), max_depth_jump)


def crop_K(K: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Intrinsics of the crop ``box = (x, y, w, h)``: the principal point shifts by ``(-x, -y)``."""
    K2 = np.array(K, dtype=np.float64)
    K2[0, 2] -= box[0]
    K2[1, 2] -= box[1]
    return K2


def resize_K(K: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """Intrinsics after resizing the image by ``(scale_x, scale_y)`` (new size / old size).

    With pixel centres at integers the image edge ``-0.5`` stays at ``-0.5``, so
    ``u' = s (u + 0.5) - 0.5``: ``fx, skew`` scale by ``s`` and ``cx' = s (cx + 0.5) - 0.5``. This is
    the mapping ``cv2.resize`` uses; the naive ``cx' = s cx`` is off by ``(s - 1) / 2`` pixels.
    """
    A = np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0.0, 0.0, 1.0]])
    return A @ np.asarray(K, dtype=np.float64)


def crop_resize_affine(box: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """The 2x3 map from image pixels to pixels of ``box`` resized to ``size = (width, height)``.

    ``cv2.warpAffine(img, M, size)`` with this ``M`` produces the crop (OpenCV samples destination
    pixel centres, the same convention), and ``crop_resize_K`` gives its intrinsics.
    """
    x, y, w, h = (float(b) for b in box)
    if w <= 0 or h <= 0:
        raise ValueError(f"box must have positive size, got {tuple(box)}")
    sx, sy = size[0] / w, size[1] / h
    return np.array([[sx, 0.0, sx * (0.5 - x) - 0.5], [0.0, sy, sy * (0.5 - y) - 0.5]])


def crop_resize_K(K: np.ndarray, box: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """Intrinsics of ``box = (x, y, w, h)`` cropped and resized to ``size = (width, height)``."""
    A = np.vstack([crop_resize_affine(box, size), [0.0, 0.0, 1.0]])
    return A @ np.asarray(K, dtype=np.float64)


def crop_camera(camera: CameraIntrinsics, box: Sequence[int]) -> CameraIntrinsics:
    """``CameraIntrinsics`` of an integer crop ``box = (x, y, w, h)``."""
    return CameraIntrinsics(crop_K(camera.K, box), int(box[2]), int(box[3]))


def resize_camera(camera: CameraIntrinsics, width: int, height: int) -> CameraIntrinsics:
    """``CameraIntrinsics`` of the image resized to ``width x height``."""
    return CameraIntrinsics(resize_K(camera.K, width / camera.width, height / camera.height), width, height)


def crop_resize_camera(camera: CameraIntrinsics, box: Sequence[float], size: tuple[int, int]) -> CameraIntrinsics:
    """``CameraIntrinsics`` of ``box`` cropped and resized to ``size = (width, height)``."""
    return CameraIntrinsics(crop_resize_K(camera.K, box, size), int(size[0]), int(size[1]))
