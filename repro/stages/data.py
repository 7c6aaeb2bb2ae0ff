"""Stage ``data``: generate a synthetic dataset (or check that a real one is in place).

    python -m repro.stages.data dataset=synth_default

Synthetic datasets are written to the dataset's ``root`` by the BOP or NOCS generator with the
configured preset and seed (same preset, seed and renderer backend: byte-identical files).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from repro.fingerprint import dataset_fingerprint
from repro.stages.app import StageContext, run_stage
from repro.stages.config import DatasetSpec, stage_node, to_plain

log = logging.getLogger(__name__)


def data(ctx: StageContext) -> dict[str, Any]:
    """Run the stage; returns the dataset summary."""
    name, node = stage_node(ctx.cfg, "dataset", ctx.overrides)
    spec = DatasetSpec.from_cfg(name, node)
    root = ctx.path(spec.root)
    params = {"dataset": to_plain(node)}
    if spec.synth is None:
        from repro.data import open_dataset

        summary = open_dataset(root, split=spec.split, fmt=spec.format).info()
        log.info("%s: real dataset in place at %s (%s images)", name, root, summary.get("n_images"))
        with ctx.tracked(f"data {name}", params, tags={"dataset": name}, dataset_hash=dataset_fingerprint(root)) as run:
            run.log_metrics({k: v for k, v in summary.items() if k.startswith("n_")})
        return summary
    from repro.data.synth import generate_bop_dataset, generate_nocs_dataset
    from repro.render import get_renderer

    generate = generate_bop_dataset if spec.synth.kind == "bop" else generate_nocs_dataset
    start = time.perf_counter()
    with ctx.tracked(f"data {name}", params, tags={"dataset": name}) as run:
        with get_renderer("auto") as renderer:
            summary = generate(root, preset=spec.synth.preset, seed=spec.synth.seed, renderer=renderer)
        summary.pop("config", None)
        run.set_tags({"dataset.hash": dataset_fingerprint(root), "renderer": summary.get("renderer", "")})
        run.log_metrics({**{k: v for k, v in summary.items() if k.startswith("n_")},
                         "seconds": time.perf_counter() - start})
        run.log_artifact(root / "README.md", "dataset")
    log.info("%s: generated at %s", name, root)
    return summary


def main() -> None:
    run_stage("data", data)


if __name__ == "__main__":
    main()
