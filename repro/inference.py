"""Run a method over a dataset and write its results files.

Frames go scene by scene; the method is onboarded once with the dataset's objects and reset at
every sequence start. Methods that are not declared ground-truth baselines receive frames with
the annotations removed. Outputs (in ``out_dir``): ``estimates.csv`` (BOP19 CSV) for instance
methods, ``segmentation.json`` (BOP22 COCO) when the method returns masks, ``category.json`` for
category methods, ``timings.csv`` (seconds per frame and stage) and ``run.json`` (what ran).
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from repro.data.base import PoseDataset
from repro.fileio import atomic_write_json
from repro.interface import PoseMethod
from repro.results import (
    BopResultRow,
    CategoryImageResult,
    CocoResult,
    TimingRow,
    bop_rows_from_estimates,
    category_image_from_estimates,
    coco_results_from_estimates,
    timing_rows,
    write_bop_csv,
    write_category_results,
    write_coco_results,
    write_timings_csv,
)

log = logging.getLogger(__name__)


@dataclass
class InferenceResult:
    """Where the results went and how much was done."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    n_frames: int = 0
    n_estimates: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "files": {k: str(v) for k, v in self.files.items()},
                "n_frames": self.n_frames, "n_estimates": self.n_estimates, "seconds": round(self.seconds, 3)}


def run_inference(method: PoseMethod, dataset: PoseDataset, out_dir: str | Path, *,
                  scene_ids: list[int] | None = None, max_frames: int | None = None,
                  run_info: dict[str, Any] | None = None, progress: bool = True) -> InferenceResult:
    """Predict every frame with targets and write the results files atomically."""
    out = InferenceResult(out_dir=Path(out_dir))
    caps = method.capabilities
    uses_gt = caps.uses_ground_truth
    start = time.perf_counter()
    method.onboard(dataset.objects())
    bop_rows: list[BopResultRow] = []
    coco: list[CocoResult] = []
    category: list[CategoryImageResult] = []
    timings: list[TimingRow] = []
    sequence = None
    frames = dataset.iter_frames(scene_ids, with_gt=uses_gt, load_masks=uses_gt)
    for frame, targets in tqdm(frames, desc=f"{method.name} on {dataset.name}", unit="frame",
                               disable=not progress, leave=False):
        if not (targets.instances or targets.categories or targets.any_object or frame.category_gt):
            continue
        if max_frames is not None and out.n_frames >= max_frames:
            break
        if frame.sequence_id != sequence:
            sequence = frame.sequence_id
            method.reset(sequence)
        t0 = time.perf_counter()
        pred = method.predict(frame if uses_gt else frame.without_annotations(), targets)
        wall = time.perf_counter() - t0
        stage_times = {**pred.timings, "total": pred.timings.get("total", wall)}
        image_time = stage_times["total"]
        bop_rows += bop_rows_from_estimates(frame.scene_id, frame.im_id, pred.estimates, image_time)
        if any(e.mask is not None for e in pred.estimates):
            coco += coco_results_from_estimates(frame.scene_id, frame.im_id,
                                                [e for e in pred.estimates if e.mask is not None], image_time)
        if pred.category_estimates or ("category" in caps.tasks and frame.category_gt is not None):
            category.append(category_image_from_estimates(frame.scene_id, frame.im_id, pred.category_estimates,
                                                          image_time))
        timings += timing_rows(frame.scene_id, frame.im_id, stage_times)
        out.n_frames += 1
        out.n_estimates += len(pred.estimates) + len(pred.category_estimates)
    d = out.out_dir
    if bop_rows or ("instance" in caps.tasks and not category):
        out.files["estimates"] = write_bop_csv(d / "estimates.csv", bop_rows)
    if coco:
        out.files["segmentation"] = write_coco_results(d / "segmentation.json", coco)
    if category:
        out.files["category"] = write_category_results(d / "category.json", category)
    out.files["timings"] = write_timings_csv(d / "timings.csv", timings)
    out.seconds = time.perf_counter() - start
    prov = method.provenance()
    out.files["run"] = atomic_write_json(d / "run.json", {
        "method": method.name, "capabilities": caps.to_dict(),
        "provenance": {"preset": prov.preset, "weights": prov.weights, "backbone": prov.backbone,
                       "notes": prov.notes, "label": prov.label()},
        "dataset": dataset.info(), "n_frames": out.n_frames, "n_estimates": out.n_estimates,
        "seconds": out.seconds, "machine": platform.node(), "python": platform.python_version(),
        **(run_info or {}),
    })
    log.info("%s on %s: %d frames, %d estimates in %.1f s", method.name, dataset.name, out.n_frames,
             out.n_estimates, out.seconds)
    return out
