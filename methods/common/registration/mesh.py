"""Surface samples with normals of a mesh, for point-to-plane ICP against the model."""

from __future__ import annotations

import numpy as np

from repro.types import ObjectModel


def surface_samples(model: ObjectModel, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-weighted surface points (n, 3) mm and their unit face normals, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    tri = model.vertices[model.faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    if area.sum() <= 0:
        raise ValueError(f"obj {model.obj_id}: mesh has zero surface area")
    idx = rng.choice(len(tri), size=n, p=area / area.sum())
    u, w = rng.random(n), rng.random(n)
    flip = u + w > 1
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    t = tri[idx]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + w[:, None] * (t[:, 2] - t[:, 0])
    normals = cross[idx] / np.maximum(np.linalg.norm(cross[idx], axis=1, keepdims=True), 1e-12)
    return points, normals
