"""BOP19 pose evaluation speed.

Run: ``EGL_PLATFORM=surfaceless pytest benchmarks/bench_metrics_bop.py --benchmark-only``.

* ``golden``: the full BOP19 evaluation (VSD + MSSD + MSPD, one worker) of the golden results CSV,
  in process and as a fresh ``python -c`` (Python start-up and imports included). bop_toolkit's
  ``eval_bop19_pose.py`` takes 86.1 s for it with one worker on a 2-vCPU machine;
  ``extra_info['speedup_vs_bop_toolkit']`` is measured against that.
* ``throughput``: a synthetic set built from the golden dataset by perturbing every GT pose of the
  target images 20 times (1,160 estimates, all evaluated: ``n_top=0``), one error type at a time;
  ``extra_info`` holds estimates/s and (estimate, GT) pairs/s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from repro.metrics.bop19 import BopEvalConfig, BopEvaluator, evaluate_bop

GOLDEN = Path(os.environ.get("REPRO_GOLDEN_DIR", Path(__file__).resolve().parents[2] / "shared" / "golden"))
GOLDTOY = GOLDEN / "bop" / "dataset" / "goldtoy"
GOLD_CSV = GOLDEN / "bop" / "results" / "goldpose_goldtoy-test.csv"
BOP_TOOLKIT_ONE_WORKER_S = 86.1
PERTURBATIONS = 20

pytestmark = pytest.mark.skipif(not GOLD_CSV.is_file(), reason=f"golden data not found at {GOLDEN}")


def test_golden_bop19_in_process(benchmark):
    kwargs = {"errors": ("vsd", "mssd", "mspd"), "workers": 1, "progress": False}
    summary = benchmark.pedantic(evaluate_bop, args=(GOLDTOY, GOLD_CSV), kwargs=kwargs, rounds=5, iterations=1,
                                 warmup_rounds=1)
    assert summary["bop19_average_recall_mssd"] == 0.6035714285714285
    benchmark.extra_info["speedup_vs_bop_toolkit"] = BOP_TOOLKIT_ONE_WORKER_S / benchmark.stats.stats.mean


def test_golden_bop19_fresh_process(benchmark):
    code = ("from repro.metrics.bop19 import evaluate_bop\n"
            f"s = evaluate_bop({str(GOLDTOY)!r}, {str(GOLD_CSV)!r}, progress=False)\n"
            "assert abs(s['bop19_average_recall'] - 0.5728571428571428) < 0.01\n")
    env = {**os.environ, "EGL_PLATFORM": os.environ.get("EGL_PLATFORM", "surfaceless")}

    def run() -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        return time.perf_counter() - t0

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["speedup_vs_bop_toolkit"] = BOP_TOOLKIT_ONE_WORKER_S / benchmark.stats.stats.mean


def _rotvec_matrix(v: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(v, axis=1, keepdims=True)
    k = v / np.maximum(angle, 1e-12)
    Kx = np.zeros((len(v), 3, 3))
    Kx[:, 0, 1], Kx[:, 0, 2], Kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    Kx -= np.swapaxes(Kx, 1, 2)
    a = angle[:, :, None]
    return np.eye(3) + np.sin(a) * Kx + (1 - np.cos(a)) * (Kx @ Kx)


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory) -> Path:
    """Perturbed copies of every GT pose of the golden target images (a BOP19 results CSV)."""
    from repro.data.bop import BopDataset
    from repro.results.bop_csv import BopResultArrays, write_bop_csv

    ds = BopDataset(GOLDTOY)
    rng = np.random.default_rng(7)
    cols: dict[str, list] = {k: [] for k in ("scene_id", "im_id", "obj_id", "score", "R", "t", "time")}
    for (scene_id, im_id) in ds.target_map:
        for g in ds.gt_instances(scene_id, im_id):
            n = PERTURBATIONS
            dR = _rotvec_matrix(rng.normal(0.0, np.deg2rad(5.0), (n, 3)))
            cols["R"].append(g.R @ dR)
            cols["t"].append(g.t + rng.normal(0.0, [4.0, 4.0, 12.0], (n, 3)))
            cols["scene_id"] += [scene_id] * n
            cols["im_id"] += [im_id] * n
            cols["obj_id"] += [g.obj_id] * n
            cols["score"] += rng.random(n).tolist()
            cols["time"] += [0.5] * n
    arrays = BopResultArrays(
        scene_id=np.array(cols["scene_id"]), im_id=np.array(cols["im_id"]), obj_id=np.array(cols["obj_id"]),
        score=np.array(cols["score"]), R=np.concatenate(cols["R"]), t=np.concatenate(cols["t"]),
        time=np.array(cols["time"]))
    return write_bop_csv(tmp_path_factory.mktemp("bench") / "synth_goldtoy-test.csv", arrays)


@pytest.mark.parametrize("error", ["vsd", "mssd", "mspd"])
def test_throughput(benchmark, synthetic_csv, error):
    with BopEvaluator(GOLDTOY, config=BopEvalConfig(errors=(error,), n_top=0)) as ev:
        ev.evaluate(synthetic_csv, progress=False)  # warm-up: models, renderer context
        result = benchmark.pedantic(ev.evaluate, args=(synthetic_csv,), kwargs={"progress": False}, rounds=3,
                                    iterations=1)
    n_est = result.summary["n_evaluated_estimates"]
    assert n_est >= 1000
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update({"estimates": n_est, "pairs": result.summary["n_pairs"],
                                 "estimates_per_s": n_est / mean, "pairs_per_s": result.summary["n_pairs"] / mean})
