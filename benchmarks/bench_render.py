"""Renderer throughput: frames/s at 640x480 with 1, 8 and 32 objects (~10k faces each).

Run: ``pytest benchmarks/bench_render.py --benchmark-only`` (``-k egl`` / ``-k numba`` to choose).
Each frame renders depth + ids (what masks, visibility and VSD need); ``..._all_outputs`` adds
normals, rgb and full (unoccluded) masks. ``extra_info['fps']`` holds frames per second.
"""

from __future__ import annotations

import numpy as np
import pytest

from repro.render import RenderInstance, RenderScene, get_renderer
from repro.types import CameraIntrinsics, ObjectModel

CAM = CameraIntrinsics(np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]]), 640, 480)


def _model(obj_id: int) -> ObjectModel:
    """A bumpy UV sphere of ~10k faces and ~80 mm diameter, with normals and colours."""
    import trimesh

    m = trimesh.creation.uv_sphere(radius=40.0, count=[72, 72])
    d = m.vertices / 40.0
    r = 40.0 * (1.0 + 0.15 * np.sin(5 * d[:, 0] + obj_id) * np.cos(4 * d[:, 1]))
    v = d * r[:, None]
    colors = np.tile(np.array([0.3 + 0.1 * (obj_id % 5), 0.5, 0.7]), (len(v), 1))
    return ObjectModel(obj_id, v, m.faces, 100.0, normals=d, colors=colors)


def _scene(n_objects: int) -> RenderScene:
    rng = np.random.default_rng(n_objects)
    models = [_model(k % 6 + 1) for k in range(min(n_objects, 6))]
    cols = int(np.ceil(np.sqrt(n_objects * 4 / 3)))
    rows = int(np.ceil(n_objects / cols))
    insts = []
    for k in range(n_objects):
        r, c = divmod(k, cols)
        z = 700.0 + 150.0 * rng.random()
        x = (c - (cols - 1) / 2) * 560.0 / cols * z / 700.0
        y = (r - (rows - 1) / 2) * 420.0 / rows * z / 700.0
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, a, b, cq = q
        R = np.array([[1 - 2 * (b * b + cq * cq), 2 * (a * b - cq * w), 2 * (a * cq + b * w)],
                      [2 * (a * b + cq * w), 1 - 2 * (a * a + cq * cq), 2 * (b * cq - a * w)],
                      [2 * (a * cq - b * w), 2 * (b * cq + a * w), 1 - 2 * (a * a + b * b)]])
        insts.append(RenderInstance(models[k % len(models)], R, [x, y, z]))
    return RenderScene(CAM, tuple(insts))


def _available(backend: str) -> bool:
    try:
        r = get_renderer(backend)
        if backend == "egl":
            _ = r.context
        r.close()
        return True
    except Exception:
        return False


BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(not _available(b), reason=f"{b} unavailable"))
            for b in ("egl", "numba")]


@pytest.fixture(scope="module", params=BACKENDS)
def renderer(request):
    r = get_renderer(request.param)
    yield r
    r.close()


def _run(benchmark, renderer, n_objects: int, outputs: set[str]) -> None:
    scene = _scene(n_objects)
    renderer.render(scene, outputs)  # warm-up: context, JIT, mesh upload
    result = benchmark.pedantic(renderer.render, args=(scene, outputs), rounds=10, iterations=1, warmup_rounds=1)
    assert result.depth is not None and (result.depth > 0).any()
    benchmark.extra_info["fps"] = 1.0 / benchmark.stats.stats.mean
    benchmark.extra_info["faces"] = int(sum(len(i.model.faces) for i in scene.instances))


@pytest.mark.parametrize("n_objects", [1, 8, 32])
def test_render_depth_ids(benchmark, renderer, n_objects):
    _run(benchmark, renderer, n_objects, {"depth", "ids"})


@pytest.mark.parametrize("n_objects", [1, 8, 32])
def test_render_all_outputs(benchmark, renderer, n_objects):
    _run(benchmark, renderer, n_objects, {"depth", "ids", "normals", "rgb", "full_masks"})
