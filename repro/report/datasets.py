"""Dataset names the papers use, and whether one of our runs was made on synthetic or real data."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: canonical id -> (display name, aliases as they appear in folder names, BOP file names and papers)
REAL_DATASETS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "lm": ("LINEMOD", ("lm", "linemod")),
    "lmo": ("LM-O", ("lmo", "lm-o", "linemod-occluded", "linemod_occluded", "occlusion")),
    "tless": ("T-LESS", ("tless", "t-less")),
    "tudl": ("TUD-L", ("tudl", "tud-l", "tud-light")),
    "icbin": ("IC-BIN", ("icbin", "ic-bin")),
    "itodd": ("ITODD", ("itodd",)),
    "hb": ("HB", ("hb", "homebrewed", "homebreweddb")),
    "ycbv": ("YCB-V", ("ycbv", "ycb-v", "ycb-video", "ycbvideo")),
    "tyol": ("TYO-L", ("tyol", "tyo-l")),
    "hope": ("HOPE", ("hope",)),
    "onepose_lowtexture": ("OnePose-LowTexture", ("onepose_lowtexture", "onepose-lowtexture", "lowtexture",
                                                  "onepose_lowtex")),
    "real275": ("REAL275", ("real275", "nocs_real", "nocs-real275")),
    "camera25": ("CAMERA25", ("camera25", "nocs_camera", "nocs-camera25")),
    "wild6d": ("Wild6D", ("wild6d",)),
}

SYNTHETIC_MARKERS = ("synth_config.json", "synth_nocs.json")
_ALIASES = {re.sub(r"[^a-z0-9]", "", a): k for k, (_, aliases) in REAL_DATASETS.items() for a in (k, *aliases)}


def canonical_dataset(name: str) -> str | None:
    """The canonical id of a real dataset name or alias (``"LM-O"`` -> ``"lmo"``), else ``None``."""
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", name.lower()))


def display_name(dataset_id: str) -> str:
    return REAL_DATASETS[dataset_id][0] if dataset_id in REAL_DATASETS else dataset_id


def _is_synthetic_root(root: Path) -> bool:
    if any((root / m).is_file() for m in SYNTHETIC_MARKERS):
        return True
    card = root / "README.md"
    try:
        return card.is_file() and "this dataset is synthetic" in card.read_text(encoding="utf-8")[:4000].lower()
    except OSError:
        return False


def dataset_kind(info: Mapping[str, Any], bases: tuple[Path, ...] = ()) -> tuple[str, str]:
    """``(kind, how)`` for a run's ``run.json`` dataset entry: kind is synthetic, real or unknown.

    An explicit ``synthetic`` flag wins; else the dataset folder (``root``, absolute or relative to
    one of ``bases``) is inspected for the synthetic generators' markers; else the name decides
    (``synth*`` is synthetic, a known benchmark name is real, anything else unknown).
    """
    flag = info.get("synthetic")
    if isinstance(flag, bool):
        return ("synthetic" if flag else "real"), "run.json"
    name = str(info.get("name") or "")
    root = info.get("root")
    if root:
        p = Path(str(root))
        for cand in ([p] if p.is_absolute() else [b / p for b in bases] + [p]):
            if cand.is_dir():
                if _is_synthetic_root(cand):
                    return "synthetic", f"marker in {cand}"
                return ("real" if canonical_dataset(name) or canonical_dataset(cand.name) else "unknown"), str(cand)
    if name.lower().startswith("synth"):
        return "synthetic", "name"
    if canonical_dataset(name):
        return "real", "name (dataset folder not found)"
    return "unknown", "name"
