"""The Hydra application launched jobs run: ``python -m repro.stages.shard --config-dir DIR
--config-name job --multirun shard.scene=1,2,...`` (written and started by :mod:`repro.launch`)."""

from __future__ import annotations

import logging
import os
import sys

from repro.launch import shard_task
from repro.tracking import quiet_telemetry


def main() -> None:
    import hydra

    quiet_telemetry()
    os.environ.setdefault("EGL_PLATFORM", "surfaceless")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:]
    if "--config-dir" not in args:
        raise SystemExit("usage: python -m repro.stages.shard --config-dir DIR --config-name job --multirun ...")
    config_dir = os.path.abspath(args[args.index("--config-dir") + 1])
    hydra.main(config_path=config_dir, config_name="job", version_base="1.3")(shard_task)()


if __name__ == "__main__":
    main()
