"""Running a pipeline stage as a Hydra application.

``run_stage`` composes ``conf/config.yaml`` with the command line's Hydra overrides and calls the
stage function with a :class:`StageContext`. Hydra writes nothing into the project: no outputs
folder, no ``.hydra`` copies, no log files; logging goes to stderr.

With ``--params FILE`` (how dvc.yaml runs the stages) the config is instead the already composed
``params.yaml`` that DVC tracks, with ``key=value`` overrides (values parsed as YAML); ``method=``
and ``dataset=`` then name one of its ``methods`` / ``datasets``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from repro.stages.config import project_root, register_resolvers, to_plain
from repro.tracking import StageRun, TrackingConfig, quiet_telemetry, stage_run

log = logging.getLogger(__name__)

HYDRA_ARGS = ("hydra.output_subdir=null", "hydra.run.dir=.", "hydra.sweep.dir=artifacts/multirun",
              "hydra.sweep.subdir=${hydra.job.num}", "hydra.job.chdir=false", "hydra/job_logging=none",
              "hydra/hydra_logging=none")
"""Added to every stage's command line (unless the user sets the same key)."""


@dataclass(frozen=True)
class StageContext:
    """What a stage function gets: its name, the composed config, the project folder, the overrides."""

    stage: str
    cfg: DictConfig
    root: Path
    overrides: tuple[str, ...] = ()

    def path(self, p: str | Path) -> Path:
        """A config path (project-relative unless absolute) as an absolute path."""
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    @property
    def tracking(self) -> TrackingConfig:
        return TrackingConfig.from_mapping(to_plain(self.cfg.get("tracking")))

    @contextlib.contextmanager
    def tracked(self, run_name: str, params: Mapping[str, Any], *, tags: Mapping[str, Any] | None = None,
                dataset_hash: str | None = None) -> Iterator[StageRun]:
        """An MLflow run for this stage (see :func:`repro.tracking.stage_run`)."""
        all_tags = {"experiment": to_plain(self.cfg.get("experiment", {})).get("name", ""),
                    "overrides": " ".join(self.overrides), **(tags or {})}
        with stage_run(self.root, self.tracking, stage=self.stage, run_name=run_name, params=params, tags=all_tags,
                       dataset_hash=dataset_hash) as run:
            yield run


def _with_defaults(args: Sequence[str]) -> list[str]:
    given = {a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a}
    return list(args) + [a for a in HYDRA_ARGS if a.split("=", 1)[0] not in given]


def load_params(path: Path, overrides: Sequence[str]) -> DictConfig:
    """A composed params file with ``key=value`` overrides applied."""
    import yaml
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    for ov in overrides:
        key, sep, value = ov.partition("=")
        if not sep or not key.strip("+"):
            raise ValueError(f"override {ov!r} must look like key=value")
        OmegaConf.update(cfg, key.lstrip("+"), yaml.safe_load(value), merge=False)
    return cfg


def run_stage(stage: str, fn: Callable[[StageContext], Any], argv: Sequence[str] | None = None) -> None:
    """Run ``fn`` as the Hydra app of ``stage`` over the project's ``conf/`` (exits like Hydra), or
    over a composed params file with ``--params FILE``."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    quiet_telemetry()
    os.environ.setdefault("EGL_PLATFORM", "surfaceless")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    register_resolvers()
    root = project_root()
    args = list(sys.argv[1:] if argv is None else argv)
    if "--params" in args:
        i = args.index("--params")
        if i + 1 >= len(args):
            raise SystemExit("--params needs a file")
        params, rest = Path(args[i + 1]), args[:i] + args[i + 2:]
        try:
            fn(StageContext(stage=stage, cfg=load_params(root / params, rest), root=root, overrides=tuple(rest)))
        except Exception as exc:
            log.exception("stage %s failed: %s: %s", stage, type(exc).__name__, exc)
            raise SystemExit(1) from exc
        return

    @hydra.main(config_path=str(root / "conf"), config_name="config", version_base="1.3")
    def _app(cfg: DictConfig) -> None:
        overrides = tuple(HydraConfig.get().overrides.task)
        fn(StageContext(stage=stage, cfg=cfg, root=root, overrides=overrides))

    sys.argv = [f"repro.stages.{stage}", *_with_defaults(args)]
    _app()
