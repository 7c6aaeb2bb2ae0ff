"""Metrics: BOP19 pose evaluation (VSD, MSSD, MSPD, ADD/ADD-S/AD, proj, CUS, mask IoU, AUC, STORM-style
AUC/AR), BOP22 COCO detection/segmentation AP, NOCS category-level scores.

Import-light: names are loaded from their submodule on first access, so importing
``repro.metrics`` loads neither torch nor a renderer.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    # BOP19 pose evaluation (repro.metrics.bop19, pose_errors, symmetry, vsd)
    "BopEvalConfig": "repro.metrics.bop19",
    "BopEvalResult": "repro.metrics.bop19",
    "BopEvaluator": "repro.metrics.bop19",
    "evaluate_bop": "repro.metrics.bop19",
    "storm_average_recall": "repro.metrics.bop19",
    "storm_recall_auc": "repro.metrics.bop19",
    "write_errors_table": "repro.metrics.bop19",
    "add": "repro.metrics.pose_errors",
    "adi": "repro.metrics.pose_errors",
    "mspd": "repro.metrics.pose_errors",
    "mssd": "repro.metrics.pose_errors",
    "proj": "repro.metrics.pose_errors",
    "re": "repro.metrics.pose_errors",
    "te": "repro.metrics.pose_errors",
    "SymmetrySet": "repro.metrics.symmetry",
    "symmetry_transformations": "repro.metrics.symmetry",
    "VsdParams": "repro.metrics.vsd",
    "cus_from_depth": "repro.metrics.vsd",
    "mask_iou_from_depth": "repro.metrics.vsd",
    "vsd_from_depth": "repro.metrics.vsd",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'repro.metrics' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
