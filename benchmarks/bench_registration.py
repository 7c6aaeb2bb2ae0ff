"""Registration and tracking time per call on a 640x480 frame (``RenderCompareRegistrar``).

Run: ``pytest benchmarks/bench_registration.py --benchmark-only``. The object is the synthetic
library's drill (textured, ~8k faces, 256 mm) in front of a wall; ``register`` starts from its
visible mask, ``track`` from the pose of the previous frame (6 deg and 16 mm away).
``extra_info`` holds the per-stage breakdown of the last call, the number of hypotheses, and the
pose error (deg, mm).
"""

from __future__ import annotations

import numpy as np
import pytest

from methods.common.registration import RenderCompareConfig, RenderCompareRegistrar
from repro.data.synth import build_object
from repro.geometry import axis_angle_to_matrix, geodesic_distance
from repro.render import Light, RenderInstance, RenderScene, get_renderer
from repro.types import CameraIntrinsics, ObjectModel

CAM = CameraIntrinsics(np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]]), 640, 480)
R0 = axis_angle_to_matrix(np.array([1.0, 0.4, -0.2]) / np.linalg.norm([1.0, 0.4, -0.2]) * np.deg2rad(130.0))
T0 = np.array([35.0, -20.0, 640.0])
R1 = axis_angle_to_matrix(np.array([0.0, 1.0, 0.0]) * np.deg2rad(6.0)) @ R0
T1 = T0 + np.array([9.0, -6.0, 12.0])


def _frame(renderer, model: ObjectModel, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    wall = ObjectModel(obj_id=999, vertices=np.array([[-1e3, -1e3, 1e3], [1e3, -1e3, 1e3], [1e3, 1e3, 1e3],
                                                      [-1e3, 1e3, 1e3]]),
                       faces=np.array([[0, 1, 2], [0, 2, 3]]), diameter=2900.0, colors=np.full((4, 3), 0.35))
    scene = RenderScene(CAM, (RenderInstance(model, R, t), RenderInstance(wall, np.eye(3), np.zeros(3))),
                        light=Light(direction=(0.3, 0.5, 1.0)))
    res = renderer.render(scene, {"depth", "ids", "rgb"})
    return res.rgb, res.depth.astype(np.float32), res.instance_ids == 0


@pytest.fixture(scope="module")
def setup():
    renderer = get_renderer("auto")
    model, _ = build_object("drill", 1)
    registrar = RenderCompareRegistrar(RenderCompareConfig(), renderer=renderer)
    registrar.prepare(model)
    yield registrar, model, renderer
    renderer.close()


def _report(benchmark, out, R, t) -> None:
    benchmark.extra_info.update({f"stage_{k}": round(v, 4) for k, v in out.timings.items()})
    benchmark.extra_info["rot_err_deg"] = float(np.rad2deg(geodesic_distance(out.R, R)))
    benchmark.extra_info["trans_err_mm"] = float(np.linalg.norm(out.t - t))


def test_register(benchmark, setup):
    registrar, model, renderer = setup
    rgb, depth, mask = _frame(renderer, model, R0, T0)
    out = benchmark.pedantic(registrar.register, args=(rgb, depth, mask, CAM.K, model), rounds=5, iterations=1,
                             warmup_rounds=1)
    _report(benchmark, out, R0, T0)
    benchmark.extra_info["n_hypotheses"] = registrar.n_hypotheses
    assert np.rad2deg(geodesic_distance(out.R, R0)) < 5.0


def test_track(benchmark, setup):
    registrar, model, renderer = setup
    rgb, depth, _ = _frame(renderer, model, R1, T1)
    out = benchmark.pedantic(registrar.track, args=(rgb, depth, CAM.K, model, (R0, T0)), rounds=10, iterations=1,
                             warmup_rounds=1)
    _report(benchmark, out, R1, T1)
    assert np.rad2deg(geodesic_distance(out.R, R1)) < 2.0
