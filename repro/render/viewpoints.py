"""Viewpoint sampling for templates and reference views, with BOP-convention camera poses.

* ``icosphere(level)``: vertices of a subdivided icosahedron (12, 42, 162, ... = 10 * 4^level + 2),
  e.g. Co-op's 42 templates at level 1.
* ``fibonacci_sphere(n, min_z, max_z)``: n near-uniform directions on a golden-angle spiral
  (STORM's 16 views), optionally restricted to a zone ``min_z <= z <= max_z``.
* ``inplane_rotations(n)``: rotations about the optical axis.
* ``look_at`` / ``viewpoint_poses``: model-to-camera ``R``, ``t`` (mm) for a camera placed at a
  point and looking at a target (the object origin by default), optionally rolled.

Up-vector rule: the camera's ``-y`` axis (image up; OpenCV y points down) is the projection of
``up`` onto the image plane, so ``up`` appears vertical and pointing up in the image. When the
viewing direction is (anti)parallel to ``up`` the projection vanishes; then the world axis least
aligned with the viewing direction (first of x, y, z on ties) is used instead, which makes the
pose well defined and deterministic at the poles.

Roll rule: a roll by ``roll`` radians about the optical axis left-multiplies the unrolled pose,
``R' = Rz(roll) @ R`` (``rotation_about_z``), with ``t' = -R' @ eye``: with a positive roll the
image content turns by ``roll`` from image +x towards image +y (clockwise on screen, as y points
down); the camera itself turns the other way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))


def icosphere(level: int) -> np.ndarray:
    """Unit vectors of an icosahedron subdivided ``level`` times, (10 * 4^level + 2, 3).

    Deterministic order: the 12 icosahedron vertices first, then the midpoints added by each
    subdivision in order of creation.
    """
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    p = (1.0 + np.sqrt(5.0)) / 2.0
    verts = [(-1, p, 0), (1, p, 0), (-1, -p, 0), (1, -p, 0), (0, -1, p), (0, 1, p), (0, -1, -p),
             (0, 1, -p), (p, 0, -1), (p, 0, 1), (-p, 0, -1), (-p, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
             (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
             (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    points = [np.array(v, dtype=np.float64) / np.linalg.norm(v) for v in verts]
    for _ in range(level):
        midpoint: dict[tuple[int, int], int] = {}
        new_faces = []
        for a, b, c in faces:
            ab, bc, ca = (_midpoint(points, midpoint, i, j) for i, j in ((a, b), (b, c), (c, a)))
            new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new_faces
    return np.array(points)


def _midpoint(points: list[np.ndarray], cache: dict[tuple[int, int], int], a: int, b: int) -> int:
    """Index of the normalised midpoint of edge (a, b), appended to ``points`` on first use."""
    key = (min(a, b), max(a, b))
    if key not in cache:
        m = points[a] + points[b]
        points.append(m / np.linalg.norm(m))
        cache[key] = len(points) - 1
    return cache[key]


def fibonacci_sphere(n: int, min_z: float = -1.0, max_z: float = 1.0) -> np.ndarray:
    """``n`` unit vectors on a golden-angle (Fibonacci) spiral from ``max_z`` down to ``min_z``, (n, 3).

    The points cover the sphere zone ``min_z <= z <= max_z`` evenly (the whole sphere by default).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not -1.0 <= min_z <= max_z <= 1.0:
        raise ValueError(f"need -1 <= min_z <= max_z <= 1, got min_z={min_z}, max_z={max_z}")
    i = np.arange(n, dtype=np.float64)
    z = max_z - (i + 0.5) / n * (max_z - min_z)
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = i * _GOLDEN_ANGLE
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


def inplane_angles(n: int) -> np.ndarray:
    """``n`` equally spaced angles in [0, 2 pi) (radians)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return 2.0 * np.pi * np.arange(n) / n


def rotation_about_z(angles: np.ndarray | float) -> np.ndarray:
    """Rotation matrices about the camera's optical axis, (..., 3, 3)."""
    a = np.asarray(angles, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    R = np.zeros((*a.shape, 3, 3))
    R[..., 0, 0], R[..., 0, 1] = c, -s
    R[..., 1, 0], R[..., 1, 1] = s, c
    R[..., 2, 2] = 1.0
    return R


def inplane_rotations(n: int) -> np.ndarray:
    """``n`` rotations about the optical axis by ``inplane_angles(n)``, (n, 3, 3).

    Left-multiply a model-to-camera pose by one (``R' = Rz R``, ``t' = Rz t``) to roll the camera.
    """
    return rotation_about_z(inplane_angles(n))


def look_at(eye: Sequence[float] | np.ndarray, target: Sequence[float] | np.ndarray = (0.0, 0.0, 0.0),
            up: Sequence[float] | np.ndarray = (0.0, 0.0, 1.0), roll: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Model-to-camera pose (BOP: ``x_cam = R x + t``) of a camera at ``eye`` looking at ``target``.

    The camera's z axis points from ``eye`` to ``target``; image up follows the module's up-vector
    rule, then the camera is rolled by ``roll`` radians about its optical axis (the module's roll
    rule: ``R' = Rz(roll) @ R``). Raises ``ValueError`` when ``eye == target``.
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    forward = target - eye
    dist = np.linalg.norm(forward)
    if dist == 0:
        raise ValueError("look_at: eye and target coincide")
    z = forward / dist
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9 * max(np.linalg.norm(up), 1.0):
        fallback = np.eye(3)[int(np.argmin(np.abs(z)))]
        x = np.cross(z, fallback)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    if roll:
        R = rotation_about_z(roll) @ R
    t = -R @ eye
    return R, t


def viewpoint_poses(directions: np.ndarray, distance: float, inplane: int | np.ndarray = 1,
                    up: Sequence[float] = (0.0, 0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Poses of cameras at ``distance * direction`` looking at the object origin.

    ``directions`` (N, 3) (normalised here), ``inplane`` a count or an array of M angles (radians).
    Returns ``R`` (N*M, 3, 3), ``t`` (N*M, 3) in direction-major order; ``t = (0, 0, distance)``.
    """
    dirs = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    angles = inplane_angles(inplane) if np.isscalar(inplane) else np.asarray(inplane, dtype=np.float64)
    rolls = rotation_about_z(angles)
    Rs, ts = [], []
    for d in dirs:
        R, t = look_at(distance * d, up=up)
        for Rz in rolls:
            Rs.append(Rz @ R)
            ts.append(Rz @ t)
    return np.array(Rs), np.array(ts)
