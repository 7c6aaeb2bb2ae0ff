"""Scale-out: run the shards of a stage through a Hydra launcher.

Shards are (method, dataset, scene). With the ``local`` launcher a stage computes them itself, one
after the other. Otherwise the stage writes a job config (its resolved config plus a ``shard``
section) and runs ``python -m repro.stages.shard --multirun shard.scene=...`` with Hydra's launcher
plugin chosen in ``conf/launcher/`` (joblib: a local process pool; submitit_local / submitit_slurm:
submitit jobs, SLURM on a cluster). Hydra schedules, the plugin runs the jobs; every job writes its
shard atomically and the stage merges the shards in scene order afterwards, so the merged output
does not depend on the launcher.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro.tracking import quiet_telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LauncherConfig:
    """``conf/launcher/<name>.yaml``: the Hydra launcher plugin (None: in-process) and its settings
    (``hydra.launcher.*``)."""

    name: str = "local"
    hydra_launcher: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return not self.hydra_launcher

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any] | None) -> LauncherConfig:
        d = dict(d or {})
        return cls(name=str(d.get("name", "local")), hydra_launcher=d.get("hydra_launcher") or None,
                   params=dict(d.get("params") or {}))


def job_config(stage_cfg: Mapping[str, Any], shard: Mapping[str, Any], launcher: LauncherConfig,
               workdir: Path) -> dict[str, Any]:
    """The primary config of the shard jobs: the stage's resolved config, ``shard`` (what to run;
    the swept ``shard.scene`` is filled by Hydra) and the launcher selection."""
    return {
        "defaults": [{"override hydra/launcher": launcher.hydra_launcher}, {"override hydra/job_logging": "stdout"},
                     "_self_"],
        "hydra": {"launcher": dict(launcher.params), "job": {"chdir": False},
                  "sweep": {"dir": str(workdir / "jobs"), "subdir": "${hydra.job.num}"}},
        **{k: v for k, v in stage_cfg.items() if k not in ("pipeline", "hydra", "defaults")},
        "shard": {**shard, "scene": None},
    }


def launch_shards(root: Path, stage_cfg: Mapping[str, Any], shard: Mapping[str, Any], scene_ids: Sequence[int],
                  launcher: LauncherConfig, workdir: Path) -> None:
    """Run the shards of ``scene_ids`` as Hydra multirun jobs with ``launcher``; raises when a job fails."""
    if launcher.local:
        raise ValueError("the local launcher runs shards in the stage's process, not through Hydra")
    if not scene_ids:
        return
    shutil.rmtree(workdir / "jobs", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(job_config(stage_cfg, shard, launcher, workdir)), workdir / "job.yaml")
    sweep = ",".join(str(int(s)) for s in scene_ids)
    cmd = [sys.executable, "-m", "repro.stages.shard", "--config-dir", str(workdir), "--config-name", "job",
           "--multirun", f"shard.scene={sweep}"]
    env = dict(os.environ)
    quiet_telemetry(env)
    log.info("launching %d %s shard(s) with %s: %s", len(scene_ids), shard.get("stage"), launcher.name, " ".join(cmd))
    res = subprocess.run(cmd, cwd=root, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{launcher.name} launcher: shard jobs failed (exit {res.returncode}); logs under "
                           f"{workdir}; finished shards are kept, rerun to resume")


def shard_task(cfg: DictConfig) -> None:
    """The task every launched job runs: one shard of the stage named in ``cfg.shard.stage``."""
    stage = cfg.shard.stage
    if stage == "infer":
        from repro.stages.infer import infer_shard

        infer_shard(cfg)
    elif stage == "evaluate":
        from repro.stages.evaluate import evaluate_shard

        evaluate_shard(cfg)
    else:
        raise ValueError(f"unknown shard stage {stage!r}")
