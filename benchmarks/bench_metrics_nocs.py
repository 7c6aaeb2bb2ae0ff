"""NOCS category-level evaluation speed on the golden set (40 images, 140 GT, 189 predictions).

Run: ``pytest benchmarks/bench_metrics_nocs.py --benchmark-only``. The original
``compute_degree_cm_mAP`` takes seconds per mode on this set (``generation_stats.json`` records
23.6 s and 18.7 s, printing and plotting included); the target is under 0.3 s of computation for
both modes together. ``extra_info['golden_seconds']`` holds the original's recorded total.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from repro.metrics.nocs import compute_nocs_aps, evaluate_nocs
from repro.results.category import read_category_results

GOLDEN = Path(os.environ.get("REPRO_GOLDEN_DIR", Path(__file__).resolve().parent.parent.parent / "shared" / "golden"))
NOCS = GOLDEN / "nocs"

pytestmark = pytest.mark.skipif(not (NOCS / "inputs.json").is_file(), reason=f"golden data not found at {NOCS}")


def _golden_seconds() -> float:
    timings = json.loads((NOCS / "generation_stats.json").read_text())["timings_s"]
    return sum(v for k, v in timings.items() if k.startswith("compute_degree_cm_mAP"))


def test_nocs_golden_both_modes(benchmark):
    """Computation only: the records are read once, both ``use_matches_for_pose`` modes are evaluated."""
    records = read_category_results(NOCS / "inputs.json")

    def both() -> list[dict]:
        return [compute_nocs_aps(records, use_matches_for_pose=m) for m in (True, False)]

    out = benchmark.pedantic(both, rounds=20, iterations=1, warmup_rounds=2)
    assert out[0]["iou_aps"].shape == (8, 101) and out[0]["pose_aps"].shape == (8, 62, 32)
    benchmark.extra_info["golden_seconds"] = _golden_seconds()
    benchmark.extra_info["target_seconds"] = 0.3


def test_nocs_golden_end_to_end(benchmark):
    """``evaluate_nocs`` from the file (reading and validating it included), both modes."""
    def both() -> list[dict]:
        return [evaluate_nocs(NOCS / "inputs.json", use_matches_for_pose=m) for m in (True, False)]

    out = benchmark.pedantic(both, rounds=10, iterations=1, warmup_rounds=1)
    assert out[0]["protocol"] == "nocs"


def test_nocs_golden_exact_iou(benchmark):
    """The non-standard exact oriented-box IoU (convex hulls; 20 rotations for symmetric classes)."""
    records = read_category_results(NOCS / "inputs.json")
    out = benchmark.pedantic(compute_nocs_aps, args=(records,), kwargs={"exact": True}, rounds=3, iterations=1,
                             warmup_rounds=1)
    assert out["iou_aps"].shape == (8, 101)
