"""What the per-(method, dataset) stages share: resolving the pair, building the method, opening
the dataset, the dataset name recorded in results, the training-time scores copied into results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.data.base import PoseDataset
from repro.fileio import atomic_write_bytes
from repro.interface import PoseMethod
from repro.stages.config import DatasetSpec, MethodSpec, stage_pair, to_plain

EVALUATION_SCORES = frozenset({"scores_bop.json", "scores_coco_segm.json", "scores_coco_bbox.json",
                               "scores_nocs.json"})
"""Scores files the evaluate stage writes into a run folder (never taken from a checkpoint)."""
TRAIN_SCORES_GLOB = "scores_*.json"


@dataclass(frozen=True)
class RunSpec:
    """One (method entry, dataset) pair with absolute paths: dataset root, results folder and the
    checkpoint folder it loads (``<checkpoint_from or key>/<train_from or dataset>``)."""

    method: MethodSpec
    dataset: DatasetSpec
    seed: int
    dataset_root: Path
    results_dir: Path
    checkpoint_dir: Path

    @property
    def key(self) -> str:
        return f"{self.method.name}-{self.dataset.name}"

    def params(self) -> dict[str, Any]:
        """The pair's configuration as tracked params."""
        return {"method": {"name": self.method.name, "class": self.method.method_class, "preset": self.method.preset,
                           "params": dict(self.method.params), "checkpoint_from": self.method.checkpoint_from},
                "dataset": {"name": self.dataset.name, "format": self.dataset.format, "root": self.dataset.root,
                            "split": self.dataset.split, "train_from": self.dataset.train_from,
                            "targets": self.dataset.targets},
                "seed": self.seed}

    def tags(self) -> dict[str, str]:
        """Tracking tags: the run name as ``method``, the registered method as ``method_class``."""
        return {"method": self.method.name, "method_class": self.method.method_class, "dataset": self.dataset.name}


def job_config(ctx_cfg: Mapping[str, Any], run: RunSpec) -> dict[str, Any]:
    """The stage's resolved config for launched shard jobs, with the pair pinned: ``method`` and
    ``dataset`` are names whose ``methods`` / ``datasets`` entries hold the effective settings
    (command-line overrides included), so every job rebuilds exactly the stage's method."""
    cfg = {k: to_plain(ctx_cfg.get(k)) for k in ctx_cfg if k != "pipeline"}
    m, d = run.method, run.dataset
    cfg["methods"] = {**(cfg.get("methods") or {}), m.name: {
        "name": m.method_class, "preset": m.preset, "params": dict(m.params),
        "presets": {m.preset: {}} if m.preset else {}, "datasets": list(m.datasets) if m.datasets else None,
        "checkpoint_from": m.checkpoint_from}}
    cfg["datasets"] = {**(cfg.get("datasets") or {}), d.name: {
        "name": d.name, "format": d.format, "root": d.root, "split": d.split, "train_split": d.train_split,
        "synth": vars(d.synth) if d.synth else None, "train_from": d.train_from, "targets": d.targets}}
    cfg["method"], cfg["dataset"] = m.name, d.name
    return cfg


def resolve_run(cfg: Any, root: Path, overrides: Sequence[str] = ()) -> RunSpec:
    """The stage's (method, dataset) from the ``method=`` and ``dataset=`` selections."""
    method, ds = stage_pair(cfg, overrides)
    m, d = method.name, ds.name
    paths = to_plain(cfg["paths"])

    def absolute(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() else root / p

    return RunSpec(method=method, dataset=ds, seed=int(cfg.get("seed", 0)),
                   dataset_root=absolute(ds.root), results_dir=absolute(paths["results"]) / m / d,
                   checkpoint_dir=absolute(paths["checkpoints"]) / method.checkpoint_key / ds.train_dataset)


def build_method(run: RunSpec, *, load_checkpoint: bool = True) -> PoseMethod:
    """The entry's registered method with its resolved params and seed; trainable methods load their checkpoint."""
    from repro.registry import create_method

    method = create_method(run.method.method_class, run.method.params, seed=run.seed)
    if load_checkpoint and method.capabilities.trainable:
        if not run.checkpoint_dir.is_dir():
            src, train_ds = run.method.checkpoint_key, run.dataset.train_dataset
            raise FileNotFoundError(f"no checkpoint for {run.method.name} at {run.checkpoint_dir}: run the train stage "
                                    f"(python -m repro.stages.train --params params.yaml method={src} "
                                    f"dataset={train_ds})")
        method.load(run.checkpoint_dir)
    return method


def open_run_dataset(run: RunSpec, split: str | None = None) -> PoseDataset:
    """The run's dataset reader: the evaluated split with the dataset's ``targets`` file, or ``split``
    (training data; no targets file)."""
    from repro.data import open_dataset

    kwargs = {"targets": run.dataset.targets} if run.dataset.targets and split is None else {}
    return open_dataset(run.dataset_root, split=split or run.dataset.split, fmt=run.dataset.format, **kwargs)


def copy_train_scores(run: RunSpec, *, trainable: bool = True) -> list[Path]:
    """Copy the checkpoint's training-time scores (``scores_*.json``; none for a method that is not
    ``trainable``) into the results folder, atomically, after removing ones left there by an earlier
    run (evaluation scores are kept)."""
    out = run.results_dir
    for stale in out.glob(TRAIN_SCORES_GLOB):
        if stale.name not in EVALUATION_SCORES:
            stale.unlink()
    if not trainable or not run.checkpoint_dir.is_dir():
        return []
    return [atomic_write_bytes(out / src.name, src.read_bytes()) for src in sorted(run.checkpoint_dir.glob(
        TRAIN_SCORES_GLOB)) if src.is_file() and src.name not in EVALUATION_SCORES]


def dataset_record(run: RunSpec, dataset: PoseDataset) -> dict[str, Any]:
    """``dataset.info()`` named by the experiment's dataset name (the results folder's), keeping the
    reader's own name as ``reader_name``; ``root`` as configured (project-relative)."""
    info = dataset.info()
    return {**info, "name": run.dataset.name, "reader_name": info.get("name"), "root": run.dataset.root}
