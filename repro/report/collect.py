"""Find every result under a results directory: run folders and bare BOP CSV files, with their scores.

A run folder (``results/<method>/<dataset>/``) holds ``run.json`` and the results files, and after
evaluation ``scores_*.json``. A bare BOP CSV (``<method>_<dataset>-<split>.csv``, e.g. downloaded
from the BOP leaderboard) is tabulated when a scores file sits next to it (see
:func:`bare_scores_candidates`); otherwise the report says what is missing.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from repro.errors import DataFormatError
from repro.fileio import read_json
from repro.report.datasets import canonical_dataset, dataset_kind, display_name
from repro.report.metrics import SOURCES
from repro.report.profile import RuntimeProfile, frames_after_warmup, profile_from_json, profile_from_timings
from repro.results import BOP_CSV_HEADER, TimingRow, read_timings_csv

log = logging.getLogger(__name__)

SCORE_FILES: Mapping[str, str] = {src: f for src, (f, _) in SOURCES.items() if f.endswith(".json")}
RESULT_FILES = ("run.json", "estimates.csv", "segmentation.json", "category.json", "timings.csv", "profile.json",
                *SCORE_FILES.values())
GROUND_TRUTH_METHODS = ("oracle", "registrar_gtmask")
SHARDS_DIR = "shards"  # per-scene partial results of repro.inference, merged into the run folder
_BOP_NAME = re.compile(r"^(?P<method>.+?)_(?P<dataset>[A-Za-z0-9]+)-(?P<split>[A-Za-z0-9_]+)$")


@dataclass(frozen=True, eq=False)
class Run:
    """One method on one dataset, as found in the results directory."""

    method: str
    dataset: str
    dataset_kind: str
    weights: str
    preset: str
    uses_ground_truth: bool
    task: str
    split: str
    path: Path
    scores: Mapping[str, Mapping[str, Any]]
    timings: tuple[TimingRow, ...] = ()
    profile_data: RuntimeProfile | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    bare: bool = False
    warmup: int | None = None

    @property
    def dataset_id(self) -> str | None:
        """The canonical id of the benchmark this run was made on, only for real data."""
        return canonical_dataset(self.dataset) if self.dataset_kind == "real" else None

    @property
    def dataset_label(self) -> str:
        name = display_name(self.dataset_id) if self.dataset_id else self.dataset
        return f"{name} ({self.dataset_kind})" if self.dataset_kind != "real" else name

    @property
    def evaluated(self) -> bool:
        return bool(self.scores)

    def flags(self) -> tuple[str, ...]:
        """Labels every row made from this run carries."""
        out = []
        if self.dataset_kind == "synthetic":
            out.append("synthetic data")
        elif self.dataset_kind == "unknown":
            out.append("dataset origin unknown")
        if self.weights == "from-scratch":
            out.append("from-scratch weights")
        elif self.weights == "unknown":
            out.append("weights unknown")
        if self.uses_ground_truth:
            out.append("ground-truth baseline (upper bound)")
        if self.bare:
            out.append("bare results file")
        return tuple(out)

    def describe(self) -> str:
        """``dataset · weights · preset``, shown beside every row of this run (with its :meth:`flags`)."""
        parts = [self.dataset_label, f"weights: {self.weights}"]
        if self.preset and self.preset != "-":
            parts.append(f"preset: {self.preset}")
        return " · ".join(parts)

    @cached_property
    def _frames(self) -> tuple[list[dict[str, float]], int]:
        return frames_after_warmup(self.timings, self.warmup)

    def frame_totals(self) -> list[float]:
        """Per-frame total seconds after warm-up."""
        return [f["total"] for f in self._frames[0]]

    def frames(self) -> list[dict[str, float]]:
        return self._frames[0]

    @cached_property
    def profile(self) -> RuntimeProfile | None:
        """``profile.json`` when present, else statistics computed from ``timings.csv``."""
        if self.profile_data is not None:
            return self.profile_data
        mem = self.info.get("peak_memory_mb")
        return profile_from_timings(self.timings, self.warmup, device=str(self.info.get("device") or "-"),
                                    threads=self.info.get("threads") if isinstance(self.info.get("threads"), int)
                                    else None, peak_memory_mb=float(mem) if isinstance(mem, int | float) else None)

    def time_per_image(self) -> float | None:
        """Seconds per image: the evaluation's average (BOP, COCO), else the mean per-frame total."""
        for src, key in (("bop", "bop19_average_time_per_image"), ("segm", "average_time_per_image")):
            v = self.scores.get(src, {}).get(key)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
                return float(v)
        totals = self.frame_totals()
        return sum(totals) / len(totals) if totals else None


@dataclass(frozen=True)
class Collection:
    """Every run found, and what is missing (one line each)."""

    runs: tuple[Run, ...]
    problems: tuple[str, ...]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_numbers(path: Path, data: Mapping[str, Any], keys: Sequence[str]) -> None:
    for k in keys:
        if k in data and data[k] is not None:
            v = data[k]
            ok = _is_number(v) or (isinstance(v, list) and all(_is_number(x) for x in v))
            if not ok:
                raise DataFormatError(path, f"must be a number, got {v!r}"[:200], field=k)


def validate_scores(path: Path, source: str, data: Any) -> Mapping[str, Any]:
    """Check a scores file's shape; a malformed one raises :class:`DataFormatError` naming the file."""
    if not isinstance(data, dict):
        raise DataFormatError(path, f"scores must be a JSON object, got {type(data).__name__}")
    if source == "bop":
        keys = [k for k in data if k.startswith(("bop19_average_recall", "recall_", "auc_", "mean_obj_recall_"))
                or k == "bop19_average_time_per_image"]
        if not any(k.startswith(("bop19_average_recall", "recall_", "auc_")) for k in keys):
            raise DataFormatError(path, "no BOP scores in it (expected bop19_average_recall, recall_* or auc_*)")
        _check_numbers(path, data, keys)
        for k, v in data.items():
            if k.startswith(("per_object_", "per_scene_")) and not (
                    isinstance(v, dict) and all(_is_number(x) for x in v.values())):
                raise DataFormatError(path, "must map ids to numbers", field=k)
        for k in ("recalls_vsd", "recalls_mssd", "recalls_mspd"):
            if k in data and not isinstance(data[k], list):
                raise DataFormatError(path, "must be a list of recalls", field=k)
    elif source in ("segm", "bbox"):
        if "AP" not in data:
            raise DataFormatError(path, "no COCO scores in it (expected AP, AP50, AP75, ...)")
        _check_numbers(path, data, [k for k in data if k.startswith(("AP", "AR")) or k == "average_time_per_image"])
    elif source == "nocs":
        metric_keys = [k for k in ("IoU25", "IoU50", "IoU75", "5deg2cm", "5deg5cm", "10deg2cm", "10deg5cm",
                                   "10deg10cm", "10deg", "10cm") if k in data]
        if not metric_keys:
            raise DataFormatError(path, "no NOCS scores in it (expected IoU25, IoU50, 5deg5cm, ...)")
        _check_numbers(path, data, metric_keys)
        if "per_class" in data and not isinstance(data["per_class"], dict):
            raise DataFormatError(path, "must map class names to scores", field="per_class")
        for k in ("iou_aps", "pose_aps"):
            if k in data and not isinstance(data[k], list):
                raise DataFormatError(path, "must be a nested list", field=k)
    return data


def _load_scores(folder: Path) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for source, name in SCORE_FILES.items():
        p = folder / name
        if p.is_file():
            out[source] = validate_scores(p, source, read_json(p))
    return out


def bare_scores_candidates(csv_path: Path) -> list[Path]:
    """Where the scores of a bare BOP CSV may be, in order of preference."""
    d, stem = csv_path.parent, csv_path.stem
    return [d / f"{stem}.scores_bop.json", d / f"{stem}_scores_bop.json", d / f"scores_bop_{stem}.json",
            d / f"{stem}.scores.json", d / stem / "scores_bop19.json", d / stem / "scores_bop.json"]


def _has_bop_header(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            head = f.readline().strip().replace(" ", "")
    except OSError:
        return False
    return head == BOP_CSV_HEADER


def _is_bare_scores_folder(folder: Path) -> bool:
    """A ``<stem>/`` folder of scores next to a bare ``<stem>.csv`` (bop_toolkit's evaluation layout)."""
    csv = folder.parent / f"{folder.name}.csv"
    return csv.is_file() and _has_bop_header(csv) and not (folder / "run.json").is_file()


def _run_from_folder(folder: Path, results_dir: Path, warmup: int | None, problems: list[str]) -> Run:
    rel = str(folder)
    info: dict[str, Any] = {}
    run_json = folder / "run.json"
    if run_json.is_file():
        info = read_json(run_json)
        if not isinstance(info, dict):
            raise DataFormatError(run_json, "run.json must hold a JSON object")
    parts = folder.relative_to(results_dir).parts if folder != results_dir else (folder.name,)
    ds_info = info.get("dataset") if isinstance(info.get("dataset"), dict) else {}
    method = str(info.get("method") or (parts[-2] if len(parts) >= 2 else parts[-1]))
    dataset = str(ds_info.get("name") or (parts[-1] if len(parts) >= 2 else "unknown"))
    bases = (results_dir.parent, results_dir, Path.cwd())
    kind, how = dataset_kind({**ds_info, "name": dataset}, bases) if info else dataset_kind({"name": dataset})
    if not info:
        problems.append(f"{rel}: no run.json; method {method!r} and dataset {dataset!r} taken from the folder names, "
                        "weights unknown")
    elif how.startswith("name (dataset folder not found)"):
        problems.append(f"{rel}: dataset folder {ds_info.get('root')!r} not found; {dataset!r} taken as the real "
                        "benchmark of that name")
    prov = info.get("provenance") if isinstance(info.get("provenance"), dict) else {}
    caps = info.get("capabilities") if isinstance(info.get("capabilities"), dict) else {}
    timings: tuple[TimingRow, ...] = ()
    if (folder / "timings.csv").is_file():
        timings = tuple(read_timings_csv(folder / "timings.csv"))
    profile = None
    if (folder / "profile.json").is_file():
        profile = profile_from_json(folder / "profile.json", read_json(folder / "profile.json"))
    scores = _load_scores(folder)
    if not scores:
        problems.append(f"{rel}: not evaluated yet (no {', '.join(SCORE_FILES.values())}); run `repro eval` on it")
    uses_gt = caps.get("uses_ground_truth")
    return Run(method=method, dataset=dataset, dataset_kind=kind,
               weights=str(prov.get("weights") or ("unknown" if not info else "none")),
               preset=str(prov.get("preset") or info.get("preset") or "-"),
               uses_ground_truth=bool(uses_gt) if isinstance(uses_gt, bool) else method in GROUND_TRUTH_METHODS,
               task=str(caps.get("task") or ""), split=str(ds_info.get("split") or ""), path=folder,
               scores=scores, timings=timings, profile_data=profile, info=info, warmup=warmup)


def _run_from_bare_csv(csv_path: Path, problems: list[str]) -> Run | None:
    rel = str(csv_path)
    m = _BOP_NAME.match(csv_path.stem)
    method, dataset, split = (m["method"], m["dataset"], m["split"]) if m else (csv_path.stem, "unknown", "")
    found = next((p for p in bare_scores_candidates(csv_path) if p.is_file()), None)
    if found is None:
        looked = ", ".join(str(p) for p in bare_scores_candidates(csv_path)[:3])
        hint = f"datasets/{dataset}" if m else "DATASET_DIR"
        problems.append(f"{rel}: BOP results CSV without scores (looked for {looked}, ...); evaluate it with "
                        f"`repro eval bop --dataset-dir {hint} --results {rel} --out "
                        f"{bare_scores_candidates(csv_path)[0]}`")
        return None
    if not m:
        problems.append(f"{rel}: file name is not METHOD_DATASET-SPLIT.csv; dataset unknown")
    scores = {"bop": validate_scores(found, "bop", read_json(found))}
    kind, _ = dataset_kind({"name": dataset})
    return Run(method=method, dataset=dataset, dataset_kind=kind, weights="unknown", preset="-",
               uses_ground_truth=method in GROUND_TRUTH_METHODS, task="instance", split=split, path=csv_path,
               scores=scores, bare=True)


def collect_runs(results_dir: str | Path, warmup: int | None = None) -> Collection:
    """Every run folder and bare BOP CSV under ``results_dir`` (hidden and ``shards`` folders skipped)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory not found: {results_dir}")
    runs: list[Run] = []
    problems: list[str] = []
    for dirpath, dirnames, filenames in os.walk(results_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != SHARDS_DIR)
        folder = Path(dirpath)
        names = set(filenames)
        if names & set(RESULT_FILES) and not _is_bare_scores_folder(folder):
            runs.append(_run_from_folder(folder, results_dir, warmup, problems))
        for name in sorted(names):
            bare = name.endswith(".csv") and name not in ("estimates.csv", "timings.csv")
            if bare and _has_bop_header(folder / name):
                run = _run_from_bare_csv(folder / name, problems)
                if run is not None:
                    runs.append(run)
    runs.sort(key=lambda r: (r.method, r.dataset, r.preset, str(r.path)))
    log.info("found %d runs under %s (%d problems)", len(runs), results_dir, len(problems))
    return Collection(runs=tuple(runs), problems=tuple(problems))
