"""Stage ``train``: fit a trainable method and save its checkpoint.

    python -m repro.stages.train method=NAME dataset=synth_default

Fits on the dataset's ``train_split`` and writes ``artifacts/checkpoints/<method key>/<dataset>/``
(to a temporary folder first, renamed into place when complete). Entries with ``checkpoint_from``
and datasets with ``train_from`` train nothing (their runs load another entry's / dataset's
checkpoint). The MLflow run is the active one for the fit: ``MLFLOW_TRACKING_URI`` and
``MLFLOW_RUN_ID`` point at it while the method trains, so its training curves land in the same run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from repro.fingerprint import dataset_fingerprint
from repro.stages.app import StageContext, run_stage
from repro.stages.common import build_method, open_run_dataset, resolve_run
from repro.tracking import tracking_uri

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _env(values: Mapping[str, str | None]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def train(ctx: StageContext) -> dict[str, Any]:
    """Run the stage; returns the checkpoint folder and the training time."""
    run = resolve_run(ctx.cfg, ctx.root, ctx.overrides)
    if run.method.checkpoint_from is not None:
        raise ValueError(f"method entry {run.method.name!r} trains nothing: it uses the checkpoints of "
                         f"{run.method.checkpoint_from!r} (train that: method={run.method.checkpoint_from})")
    if run.dataset.train_from is not None:
        raise ValueError(f"dataset {run.dataset.name!r} trains nothing: methods use the checkpoints trained on "
                         f"{run.dataset.train_from!r} (train on that: dataset={run.dataset.train_from})")
    with build_method(run, load_checkpoint=False) as method:
        if not method.capabilities.trainable:
            raise ValueError(f"method {run.method.name!r} is not trainable (nothing to train)")
        data = open_run_dataset(run, split=run.dataset.train_split)
        ckpt = run.checkpoint_dir
        with ctx.tracked(f"train {run.key}", {**run.params(), "train_split": run.dataset.train_split},
                         tags=run.tags(),
                         dataset_hash=dataset_fingerprint(run.dataset_root)) as tracked:
            start = time.perf_counter()
            uri = tracking_uri(ctx.root, ctx.tracking) if tracked.active else None
            with _env({"MLFLOW_TRACKING_URI": uri, "MLFLOW_RUN_ID": tracked.run_id}):
                method.fit(data, dict(run.method.params))
            seconds = time.perf_counter() - start
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{ckpt.name}.", dir=ckpt.parent))
            try:
                method.save(tmp)
                shutil.rmtree(ckpt, ignore_errors=True)
                tmp.rename(ckpt)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            tracked.log_metrics({"train_seconds": seconds})
            for f in sorted(ckpt.rglob("*")):
                if f.is_file() and f.suffix in (".json", ".yaml", ".yml", ".txt", ".md"):
                    tracked.log_artifact(f, "checkpoint")
    log.info("%s: trained in %.1f s -> %s", run.key, seconds, ckpt)
    return {"checkpoint": str(ckpt), "seconds": seconds}


def main() -> None:
    run_stage("train", train)


if __name__ == "__main__":
    main()
