"""What the per-(method, dataset) stages share: resolving the pair, building the method, opening
the dataset, the dataset name recorded in results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.data.base import PoseDataset
from repro.interface import PoseMethod
from repro.stages.config import DatasetSpec, MethodSpec, stage_pair, to_plain


@dataclass(frozen=True)
class RunSpec:
    """One (method, dataset) pair with absolute paths: dataset root, results folder, checkpoint."""

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
        return {"method": {"name": self.method.name, "preset": self.method.preset, "params": dict(self.method.params)},
                "dataset": {"name": self.dataset.name, "format": self.dataset.format, "root": self.dataset.root,
                            "split": self.dataset.split},
                "seed": self.seed}


def job_config(ctx_cfg: Mapping[str, Any], run: RunSpec) -> dict[str, Any]:
    """The stage's resolved config for launched shard jobs, with the pair pinned: ``method`` and
    ``dataset`` are names whose ``methods`` / ``datasets`` entries hold the effective settings
    (command-line overrides included), so every job rebuilds exactly the stage's method."""
    cfg = {k: to_plain(ctx_cfg.get(k)) for k in ctx_cfg if k != "pipeline"}
    m, d = run.method, run.dataset
    cfg["methods"] = {**(cfg.get("methods") or {}), m.name: {
        "name": m.name, "preset": m.preset, "params": dict(m.params), "presets": {m.preset: {}} if m.preset else {}}}
    cfg["datasets"] = {**(cfg.get("datasets") or {}), d.name: {
        "name": d.name, "format": d.format, "root": d.root, "split": d.split, "train_split": d.train_split,
        "synth": vars(d.synth) if d.synth else None}}
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
                   checkpoint_dir=absolute(paths["checkpoints"]) / m / d)


def build_method(run: RunSpec, *, load_checkpoint: bool = True) -> PoseMethod:
    """The method with its resolved params and seed; trainable methods load their checkpoint."""
    from repro.registry import create_method

    method = create_method(run.method.name, run.method.params, seed=run.seed)
    if load_checkpoint and method.capabilities.trainable:
        if not run.checkpoint_dir.is_dir():
            raise FileNotFoundError(f"no checkpoint for {run.method.name} at {run.checkpoint_dir}: run the train stage "
                                f"(python -m repro.stages.train method={run.method.name} "
                                f"dataset={run.dataset.name})")
        method.load(run.checkpoint_dir)
    return method


def open_run_dataset(run: RunSpec, split: str | None = None) -> PoseDataset:
    from repro.data import open_dataset

    return open_dataset(run.dataset_root, split=split or run.dataset.split, fmt=run.dataset.format)


def dataset_record(run: RunSpec, dataset: PoseDataset) -> dict[str, Any]:
    """``dataset.info()`` named by the experiment's dataset name (the results folder's), keeping the
    reader's own name as ``reader_name``; ``root`` as configured (project-relative)."""
    info = dataset.info()
    return {**info, "name": run.dataset.name, "reader_name": info.get("name"), "root": run.dataset.root}
