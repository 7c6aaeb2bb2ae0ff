"""BOP22 2D detection / instance segmentation AP, as bop_toolkit's ``scripts/eval_bop22_coco.py``.

Ground truth is each scene's ``scene_gt_coco.json`` (amodal boxes, visible-mask RLE) or
``scene_gt_coco_modal.json`` (``bbox_type="modal"``, used for ``ann_type="bbox"`` only, as the
toolkit does). Only images listed in the targets file are evaluated; scenes are merged in the order
they first appear in the targets file, each scene's image ids shifted by ``max(merged ids) + 1`` and
its annotation ids by ``max(merged annotation ids) + 1`` (``pycoco_utils.merge_coco_annotations``);
results get the same image-id shift. Results in other scenes or images are ignored (counted in the
log). Detections are loaded as ``COCO.loadRes`` loads them: ``area = bbox w * h`` (also for
``segm``, which decides the small/medium/large split), ``id`` = position + 1, ``iscrowd = 0``.

bop_toolkit evaluates with a pycocotools fork (MartinSmeyer/cocoapi) whose ``COCOeval._prepare``
keeps each GT's ``ignore`` flag (set for ``visib_fract < 0.1``); stock pycocotools overwrites it
with ``iscrowd``. :class:`BopCOCOeval` restores the fork's behaviour on top of stock pycocotools,
so a detection matched to an ignored GT is neither a TP nor an FP, and IoUs stay non-crowd IoUs.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repro.data.bop import BopDataset
from repro.errors import DataFormatError, DatasetNotFoundError
from repro.fileio import read_json
from repro.results.coco import CocoResult, read_coco_results

log = logging.getLogger(__name__)

#: The ``COCOeval.stats`` entries, in order, under the names bop_toolkit writes.
COCO_STAT_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                                   "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")
#: Every key of the scores (= the keys of bop_toolkit's ``scores_bop22_coco_*.json``).
COCO_SCORE_KEYS: tuple[str, ...] = (*COCO_STAT_KEYS, "average_time_per_image")
ANN_TYPES = ("segm", "bbox")
BBOX_TYPES = ("amodal", "modal")


@contextlib.contextmanager
def _quiet(what: str) -> Iterator[None]:
    """Capture pycocotools' prints and pass them to the log at DEBUG."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        text = buf.getvalue().strip()
        if text:
            log.debug("pycocotools (%s):\n%s", what, text)


def _bop_cocoeval_class() -> type:
    """``COCOeval`` whose ``_prepare`` keeps the GT ``ignore`` flag like bop_toolkit's fork."""
    from pycocotools.cocoeval import COCOeval

    class BopCOCOeval(COCOeval):
        """Stock ``COCOeval`` with the fork's ``_prepare`` semantics (``COCOAPI_ISCROWD_AS_IGNORE=0``):
        ``ignore`` = the stored flag (0 when absent), ``iscrowd`` = the stored flag (False when absent)."""

        def _prepare(self) -> None:
            stored = {a["id"]: a.get("ignore", 0) for a in self.cocoGt.dataset.get("annotations", [])}
            super()._prepare()
            for gts in self._gts.values():
                for gt in gts:
                    gt["ignore"] = stored[gt["id"]]
                    gt["iscrowd"] = "iscrowd" in gt and gt["iscrowd"]

    return BopCOCOeval


# --------------------------------------------------------------------------------------------
# Ground truth


def _scene_order(dataset: BopDataset) -> list[int]:
    """Target scenes in the order they first appear in the targets file (the toolkit's merge order)."""
    scenes_with_targets = {s for s, _ in dataset.target_map}
    path = dataset.targets_path
    if path is None:
        return sorted(scenes_with_targets)
    order = dict.fromkeys(int(t["scene_id"]) for t in read_json(path))
    return [s for s in order if s in scenes_with_targets]


def build_coco_gt(dataset: BopDataset, *, ann_type: str = "segm",
                  bbox_type: str = "amodal") -> tuple[dict[str, Any], dict[tuple[int, int], int]]:
    """Merged COCO ground truth of the target images, as bop_toolkit merges it.

    Returns ``(gt, image_ids)``: ``gt`` is a COCO dataset dict (``images``, ``annotations``,
    ``categories``) with the toolkit's merged ids; ``image_ids`` maps (scene_id, im_id) of every
    evaluated image to its merged image id (im_id + the scene's offset).
    """
    modal = ann_type == "bbox" and bbox_type == "modal"
    name = "scene_gt_coco_modal.json" if modal else "scene_gt_coco.json"
    target_ims: dict[int, set[int]] = {}
    for s, i in dataset.target_map:
        target_ims.setdefault(s, set()).add(i)
    gt: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    image_ids: dict[tuple[int, int], int] = {}
    for n, scene_id in enumerate(_scene_order(dataset)):
        path = dataset.split_dir / f"{scene_id:06d}" / name
        if not path.is_file():
            raise DatasetNotFoundError(
                f"COCO ground truth not found: {path} (create it with bop_toolkit's scripts/calc_gt_coco.py"
                + (" --bbox_type modal" if modal else "") + ")")
        scene = read_json(path)
        if not isinstance(scene, dict) or not all(isinstance(scene.get(k), list)
                                                  for k in ("images", "annotations", "categories")):
            raise DataFormatError(path, "expected a COCO object with lists 'images', 'annotations', 'categories'")
        ims = target_ims[scene_id]
        try:
            images = [dict(im) for im in scene["images"] if im["id"] in ims]
            anns = [dict(a) for a in scene["annotations"] if a["image_id"] in ims]
        except (KeyError, TypeError) as exc:
            raise DataFormatError(path, f"an image or annotation lacks its id ({exc!r})") from None
        missing = ims - {im["id"] for im in images}
        if missing:
            log.warning("%s lacks %d target image(s) %s; they are not evaluated", path, len(missing),
                        sorted(missing)[:10])
        if ann_type == "bbox":
            for a in anns:
                a.pop("segmentation", None)
        for cat in scene["categories"]:
            if cat not in gt["categories"]:
                gt["categories"].append(cat)
        im_offset = ann_offset = 0
        if n > 0:
            im_offset = max((im["id"] for im in gt["images"]), default=-1) + 1
            ann_offset = max((a["id"] for a in gt["annotations"]), default=-1) + 1
        for im in images:
            image_ids[(scene_id, im["id"])] = im["id"] + im_offset
            im["id"] += im_offset
        for a in anns:
            a["id"] += ann_offset
            a["image_id"] += im_offset
        gt["images"] += images
        gt["annotations"] += anns
    return gt, image_ids


# --------------------------------------------------------------------------------------------
# Results


def coco_detections(results: Sequence[CocoResult], dataset: BopDataset, gt: Mapping[str, Any],
                    image_ids: Mapping[tuple[int, int], int], *, ann_type: str = "segm",
                    source: str = "results") -> list[dict[str, Any]]:
    """Results of the evaluated images as ``loadRes`` makes them (merged image ids, area = w * h,
    ids 1..n in results order); the others are dropped and counted in the log.

    ``gt`` and ``image_ids`` come from :func:`build_coco_gt`; ``source`` names the results in messages.
    """
    images = {im["id"]: im for im in gt["images"]}
    categories = {c["id"] for c in gt["categories"]}
    known_scenes = set(dataset.scene_ids())
    evaluated_scenes = {s for s, _ in image_ids}
    skipped = {"unknown scene": 0, "scene without targets": 0, "non-target image": 0,
               "no segmentation": 0, "unknown category": 0}
    dets: list[dict[str, Any]] = []
    for k, r in enumerate(results):
        if r.scene_id not in known_scenes:
            skipped["unknown scene"] += 1
            continue
        if r.scene_id not in evaluated_scenes:
            skipped["scene without targets"] += 1
            continue
        im_id = image_ids.get((r.scene_id, r.image_id))
        if im_id is None:
            skipped["non-target image"] += 1
            continue
        im = images[im_id]
        if ann_type == "segm" and r.segmentation is None:
            skipped["no segmentation"] += 1
            continue
        if r.category_id not in categories:
            skipped["unknown category"] += 1
        x, y, w, h = r.bbox
        det: dict[str, Any] = {"image_id": im["id"], "category_id": r.category_id, "score": r.score,
                               "bbox": [x, y, w, h], "area": w * h, "id": len(dets) + 1, "iscrowd": 0}
        if ann_type == "segm":
            size = list(r.segmentation["size"])
            if size != [im["height"], im["width"]]:
                raise DataFormatError(source, f"mask size {size} differs from the image size "
                                              f"{[im['height'], im['width']]} (scene {r.scene_id}, "
                                              f"image {r.image_id})", field=f"[{k}].segmentation")
            det["segmentation"] = {"size": size, "counts": r.segmentation["counts"]}
        dets.append(det)
    if ann_type == "segm" and results and skipped["no segmentation"] == len(results):
        raise DataFormatError(source, "no result has a 'segmentation'; evaluate detections with ann_type='bbox'")
    for why, n in skipped.items():
        if n:
            level = logging.INFO if why in ("non-target image", "unknown category") else logging.WARNING
            log.log(level, "%s: %d result(s) ignored (%s)", source, n, why)
    log.info("%s: %d of %d result(s) evaluated", source, len(dets), len(results))
    return dets


def average_time_per_image(results: Sequence[CocoResult]) -> float:
    """Mean image time over every (scene, image) in the results, in order of first appearance;
    -1 when any time is unknown (negative), as bop_toolkit."""
    times: dict[tuple[int, int], float] = {}
    for r in results:
        if r.time < 0:
            return -1.0
        times.setdefault((r.scene_id, r.image_id), r.time)
    return float(np.mean(list(times.values()))) if times else -1.0


# --------------------------------------------------------------------------------------------
# Evaluation


def coco_stats(gt: dict[str, Any], detections: list[dict[str, Any]], ann_type: str) -> dict[str, float]:
    """The twelve COCO summary numbers (``COCO_STAT_KEYS``) of ``detections`` against ``gt``.

    ``gt`` is a COCO dataset dict (with ``ignore`` flags kept, as bop_toolkit's fork keeps them);
    ``detections`` are already in ``loadRes`` form (``id``, ``area``, ``iscrowd`` set).
    """
    from pycocotools.coco import COCO

    with _quiet(ann_type):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {"images": list(gt["images"]), "categories": [dict(c) for c in gt["categories"]],
                           "annotations": detections}
        coco_dt.createIndex()
        ev = _bop_cocoeval_class()(coco_gt, coco_dt, ann_type)
        ev.params.imgIds = sorted(coco_gt.getImgIds())
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_STAT_KEYS, ev.stats, strict=True)}


def evaluate_coco(dataset_dir: str | Path, results_json: str | Path | Sequence[CocoResult], *,
                  ann_type: str = "segm", bbox_type: str = "amodal", split: str = "test",
                  targets_file: str | None = None) -> dict[str, float]:
    """BOP22 COCO scores of a results file, as ``eval_bop22_coco.py`` computes them.

    ``results_json`` is a BOP22 COCO results file (read strictly with ``read_coco_results``) or the
    results themselves; ``targets_file`` names the targets file in the dataset root (default:
    ``test_targets_bop19.json``, else ``test_targets_bop24.json``). Returns ``COCO_SCORE_KEYS``:
    AP, AP50, AP75, AP_small/medium/large, AR1/10/100, AR_small/medium/large (-1 where no GT
    falls in the area range) and ``average_time_per_image`` (over every image in the results).
    """
    if ann_type not in ANN_TYPES:
        raise ValueError(f"ann_type must be one of {ANN_TYPES}, got {ann_type!r}")
    if bbox_type not in BBOX_TYPES:
        raise ValueError(f"bbox_type must be one of {BBOX_TYPES}, got {bbox_type!r}")
    if isinstance(results_json, str | Path):
        source = str(results_json)
        results = read_coco_results(results_json)
    else:
        source, results = "results", list(results_json)
    dataset = BopDataset(Path(dataset_dir), split=split, targets=targets_file or "auto")
    gt, image_ids = build_coco_gt(dataset, ann_type=ann_type, bbox_type=bbox_type)
    if not gt["images"]:
        raise DataFormatError(dataset.split_dir, "no target image has COCO ground truth")
    detections = coco_detections(results, dataset, gt, image_ids, ann_type=ann_type, source=source)
    scores = coco_stats(gt, detections, ann_type)
    scores["average_time_per_image"] = average_time_per_image(results)
    return scores
