"""Dataset readers and writers (BOP and NOCS layouts) behind one ``open_dataset`` call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.data.base import PoseDataset
from repro.errors import DatasetNotFoundError

__all__ = ["PoseDataset", "detect_format", "open_dataset"]


def detect_format(root: str | Path) -> str:
    """``bop`` or ``nocs`` from the folder layout; a clear error when it is neither."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset directory not found: {root}")
    if any((root / d / "models_info.json").is_file() for d in ("models", "models_eval", "models_cad")) or any(
            root.glob("test_targets_bop*.json")) or any(root.glob("*/*/scene_gt*.json")):
        return "bop"
    if (root / "real").is_dir() or (root / "camera").is_dir():
        return "nocs"
    raise DatasetNotFoundError(
        f"{root} is neither a BOP dataset (models/models_info.json, SPLIT/SCENE/scene_gt.json) nor a NOCS "
        f"root (real/ or camera/ folders)")


def open_dataset(root: str | Path, *, split: str | None = None, fmt: str = "auto", **kwargs: Any) -> PoseDataset:
    """Open a dataset folder with the reader for its layout.

    BOP: ``split`` is the split folder (default ``test``). NOCS: ``split`` is ``SUBSET/SPLIT`` or
    ``SUBSET_SPLIT`` (e.g. ``real/test``, ``camera_val``; default ``real/test``).
    """
    fmt = detect_format(root) if fmt == "auto" else fmt
    if fmt == "bop":
        from repro.data.bop import BopDataset

        return BopDataset(Path(root), split=split or "test", **kwargs)
    if fmt == "nocs":
        from repro.data.nocs import NocsDataset

        subset, _, sp = (split or "real/test").replace("_", "/", 1).partition("/")
        return NocsDataset(Path(root), subset=subset, split=sp or "test", **kwargs)
    raise ValueError(f"unknown dataset format {fmt!r} (bop or nocs)")
