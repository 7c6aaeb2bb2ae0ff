"""Which of our scores fill which report cell: metric names ``source:key`` and their units.

Sources are the files of a results directory: ``bop`` (``scores_bop.json``), ``segm`` / ``bbox``
(``scores_coco_segm.json`` / ``scores_coco_bbox.json``), ``nocs`` (``scores_nocs.json``), ``tom``
(``scores_tom.json``: STORM's tracking-loss classifier, keys ``accuracy`` and ``seconds_per_frame``,
per variant under ``variants.<name>``), ``train`` (``scores_train.json``: training-time numbers such
as the final ``loss``, unit ``none``) and ``timing`` (``timings.csv``: ``frame`` = mean ± std of the
per-frame total after warm-up, ``frame_median``). BOP and COCO recalls/APs are fractions, NOCS mAPs
percent, times seconds. A key may be a dotted path into nested objects: ``tom:variants.cosine.accuracy`` reads
``scores_tom.json["variants"]["cosine"]["accuracy"]`` (a flat key of that name wins).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from repro.report.collect import Run

SOURCES: Mapping[str, tuple[str, str]] = {
    "bop": ("scores_bop.json", "fraction"),
    "segm": ("scores_coco_segm.json", "fraction"),
    "bbox": ("scores_coco_bbox.json", "fraction"),
    "nocs": ("scores_nocs.json", "percent"),
    "tom": ("scores_tom.json", "fraction"),
    "train": ("scores_train.json", "none"),
    "timing": ("timings.csv", "s"),
}
TIMING_KEYS = ("frame", "frame_median")
BOP19_ERRORS = ("vsd", "mssd", "mspd")

#: display names of the metrics the leaderboard and the "other data" tables show
LABELS: Mapping[str, str] = {
    "bop:bop19_average_recall": "AR",
    "bop:bop19_average_recall_vsd": "AR_VSD",
    "bop:bop19_average_recall_mssd": "AR_MSSD",
    "bop:bop19_average_recall_mspd": "AR_MSPD",
    "bop:recall_ad": "ADD(S)@0.1d",
    "bop:recall_add": "ADD@0.1d",
    "bop:recall_adi": "ADD-S@0.1d",
    "bop:recall_proj": "Proj@5px",
    "bop:auc_adi": "ADD-S AUC",
    "bop:auc_add": "ADD AUC",
    "bop:auc_ad": "ADD(S) AUC",
    "bop:bop19_average_time_per_image": "time / image",
    "segm:AP": "mAP (segm)",
    "segm:AP50": "AP50 (segm)",
    "segm:AP75": "AP75 (segm)",
    "segm:average_time_per_image": "time / image",
    "bbox:AP": "mAP (bbox)",
    "nocs:IoU25": "IoU25",
    "nocs:IoU50": "IoU50",
    "nocs:IoU75": "IoU75",
    "nocs:5deg2cm": "5°2cm",
    "nocs:5deg5cm": "5°5cm",
    "nocs:10deg2cm": "10°2cm",
    "nocs:10deg5cm": "10°5cm",
    "nocs:10deg10cm": "10°10cm",
    "nocs:10deg": "10°",
    "nocs:10cm": "10cm",
    "timing:frame": "time / frame",
    "tom:accuracy": "TOM accuracy",
    "tom:seconds_per_frame": "TOM time",
    "train:loss": "training loss",
}


@dataclass(frozen=True)
class Measured:
    """A measured value in the metric's native unit (and its spread, where it has one)."""

    value: float
    spread: float | None = None


def check_metric(name: str) -> str | None:
    """Why ``name`` is not a valid metric name, or ``None``."""
    source, sep, key = name.partition(":")
    if not sep or not key:
        return f"metric {name!r} must look like source:key"
    if source not in SOURCES:
        return f"metric {name!r}: unknown source {source!r} (one of {', '.join(SOURCES)})"
    if source == "timing" and key not in TIMING_KEYS:
        return f"metric {name!r}: timing keys are {', '.join(TIMING_KEYS)}"
    if any(not part.strip() for part in key.split(".")):
        return f"metric {name!r}: a nested key needs a name between its dots"
    return None


def lookup(scores: Mapping[str, Any], key: str) -> Any:
    """``scores[key]``, else the dotted path ``a.b.c`` through nested objects (``None`` when absent)."""
    if key in scores:
        return scores[key]
    node: Any = scores
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def native_unit(metric: str) -> str:
    source, _, key = metric.partition(":")
    leaf = key.rsplit(".", 1)[-1]
    if "time" in leaf or "seconds" in leaf or source == "timing":
        return "s"
    return SOURCES[source][1]


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert between fraction/percent and s/ms; other combinations are returned unchanged."""
    if from_unit == to_unit or "none" in (from_unit, to_unit):
        return value
    factors = {("fraction", "percent"): 100.0, ("percent", "fraction"): 0.01, ("s", "ms"): 1000.0,
               ("ms", "s"): 0.001}
    return value * factors.get((from_unit, to_unit), 1.0)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _per_object(scores: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """The per-object table behind ``key``: ``per_object_<key>`` (BOP recalls and AUCs, COCO APs)."""
    table = scores.get("per_object_" + key)
    return table if isinstance(table, dict) else None


def _objects_mean(scores: Mapping[str, Any], source: str, key: str,
                  objs: Sequence[int] | str | None, obj: int | None) -> float | None:
    if source == "bop" and key == "bop19_average_recall":
        parts = [_objects_mean(scores, source, f"bop19_average_recall_{e}", objs, obj) for e in BOP19_ERRORS]
        return None if any(p is None for p in parts) else float(sum(parts)) / 3.0  # type: ignore[arg-type]
    if source == "bop" and key.startswith("bop19_average_recall_"):
        key = "recall_" + key.removeprefix("bop19_average_recall_")
    if obj is not None:
        table = _per_object(scores, key)
        return _num(table.get(str(obj))) if table else None
    if objs == "all":
        if source == "bop" and key.startswith("recall_"):
            return _num(scores.get("mean_obj_" + key))
        table = _per_object(scores, key)
        if table:
            vals = [_num(v) for v in table.values()]
            return None if not vals or any(v is None for v in vals) else statistics.fmean(vals)  # type: ignore
        return _num(scores.get(key)) if source in ("segm", "bbox") else None
    table = _per_object(scores, key)
    if not table or objs is None:
        return None
    vals = [_num(table.get(str(o))) for o in objs]
    return None if any(v is None for v in vals) else statistics.fmean(vals)  # type: ignore[arg-type]


def measure(run: Run, metric: str, *, obj: int | None = None,
            objs: Sequence[int] | str | None = None) -> Measured | None:
    """The value of ``metric`` for ``run`` (per object / averaged over objects when asked), or ``None``."""
    source, _, key = metric.partition(":")
    if source == "timing":
        totals = run.frame_totals()
        if not totals:
            return None
        if key == "frame_median":
            return Measured(statistics.median(totals))
        return Measured(statistics.fmean(totals), statistics.pstdev(totals) if len(totals) > 1 else 0.0)
    scores = run.scores.get(source)
    if not scores:
        return None
    if obj is not None or objs is not None:
        value = _objects_mean(scores, source, key, objs, obj)
    else:
        value = _num(lookup(scores, key))
    if value is None or (source in ("segm", "bbox") and value < 0):
        return None
    return Measured(value)
