"""BOP22 COCO AP (repro.metrics.coco) on the golden set, against bop_toolkit's timings.

Run: ``pytest benchmarks/bench_metrics_coco.py --benchmark-only``. bop_toolkit's
``eval_bop22_coco.py`` took 0.652 s (segm), 0.673 s (bbox) and 0.626 s (bbox modal) per command on
the golden set, start-up included (2 vCPU VM, ../shared/golden/bop/logs/timings.txt); the in-process
benchmarks time the evaluation alone, ``test_cli_like_cold_start`` a fresh interpreter that imports
the module and evaluates once (the comparable number). ``test_scale_segm`` shows how stock
pycocotools scales: 300 images x 8 GT x 2 detections, 480x640 masks, no disk IO.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from repro.metrics.coco import coco_stats, evaluate_coco
from repro.results.coco import mask_to_rle

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(os.environ.get("REPRO_GOLDEN_DIR", ROOT.parent / "shared" / "golden")) / "bop"
DATASET = GOLDEN / "dataset" / "goldtoy"
RESULTS = GOLDEN / "results" / "goldsegm_goldtoy-test.json"
TOOLKIT_S = {"segm": 0.651990172, "bbox": 0.672885626, "bbox_modal": 0.626388301}
CASES = {"segm": {"ann_type": "segm"}, "bbox": {"ann_type": "bbox"},
         "bbox_modal": {"ann_type": "bbox", "bbox_type": "modal"}}

pytestmark = pytest.mark.skipif(not RESULTS.is_file(), reason=f"golden data not found at {GOLDEN}")


@pytest.mark.parametrize("name", list(CASES))
def test_golden(benchmark, name: str) -> None:
    scores = benchmark.pedantic(evaluate_coco, args=(DATASET, RESULTS), kwargs=CASES[name], rounds=20,
                                iterations=1, warmup_rounds=1)
    assert 0.0 < scores["AP"] < 1.0
    benchmark.extra_info["bop_toolkit_s"] = TOOLKIT_S[name]
    benchmark.extra_info["speedup_vs_toolkit_command"] = TOOLKIT_S[name] / benchmark.stats.stats.mean


def _cold_start() -> float:
    code = ("from repro.metrics.coco import evaluate_coco; "
            f"evaluate_coco({str(DATASET)!r}, {str(RESULTS)!r}, ann_type='segm')")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    return time.perf_counter() - t


def test_cli_like_cold_start(benchmark) -> None:
    benchmark.pedantic(_cold_start, rounds=3, iterations=1)
    benchmark.extra_info["bop_toolkit_s"] = TOOLKIT_S["segm"]
    benchmark.extra_info["speedup_vs_toolkit_command"] = TOOLKIT_S["segm"] / benchmark.stats.stats.mean


def _scale_case(n_images: int = 300, h: int = 480, w: int = 640) -> tuple[dict, list]:
    rng = np.random.default_rng(0)
    images, anns, dets = [], [], []
    for i in range(n_images):
        images.append({"id": i, "height": h, "width": w})
        for _ in range(8):
            x, y = (int(v) for v in rng.integers(0, (w - 140, h - 140)))
            bw, bh = (int(v) for v in rng.integers(10, 130, 2))
            cat = int(rng.integers(1, 11))
            mask = np.zeros((h, w), bool)
            mask[y:y + bh, x:x + bw] = True
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "iscrowd": 0,
                         "ignore": bool(rng.random() < 0.1), "area": bw * bh, "bbox": [x, y, bw, bh],
                         "segmentation": mask_to_rle(mask)})
            for _ in range(2):
                dx, dy = (int(v) for v in rng.integers(-8, 9, 2))
                m = np.roll(mask, (dy, dx), axis=(0, 1))
                dets.append({"id": len(dets) + 1, "image_id": i, "category_id": cat, "score": float(rng.random()),
                             "bbox": [x + dx, y + dy, bw, bh], "area": float(bw * bh), "iscrowd": 0,
                             "segmentation": mask_to_rle(m)})
    return {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(1, 11)]}, dets


def test_scale_segm(benchmark) -> None:
    import copy

    gt, dets = _scale_case()
    scores = benchmark.pedantic(lambda: coco_stats(copy.deepcopy(gt), copy.deepcopy(dets), "segm"), rounds=3,
                                iterations=1)
    assert 0.0 < scores["AP"] < 1.0
    benchmark.extra_info["images"] = len(gt["images"])
