"""Write ``params.yaml``: ``conf/config.yaml`` composed with Hydra overrides and resolved.

This is what ``dvc exp run -S override`` does before running the pipeline (DVC's own Hydra
composition, same function, same output), for plain ``dvc repro``:

    python -m repro.stages.compose                       # the default experiment
    python -m repro.stages.compose experiment=smoke      # any Hydra overrides
    python -m repro.stages.compose --check               # exit 1 if params.yaml is out of date
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from repro.fileio import atomic_write_text
from repro.stages.config import project_root, register_resolvers

log = logging.getLogger(__name__)

PLUGINS_PATH = Path(__file__).resolve().parent / "plugins"


def compose_params_text(overrides: Sequence[str] = (), root: Path | None = None) -> str:
    """The ``params.yaml`` text for these overrides, exactly as DVC's Hydra composition writes it."""
    from dvc.utils.hydra import compose_and_dump

    root = root or project_root()
    register_resolvers()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_and_dump(out, str(root / "conf"), None, "config", str(PLUGINS_PATH), list(overrides))
        return out.read_text(encoding="utf-8")


def write_params(overrides: Sequence[str] = (), root: Path | None = None, out: Path | None = None) -> Path:
    root = root or project_root()
    return atomic_write_text(out or root / "params.yaml", compose_params_text(overrides, root))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.stages.compose", description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (experiment=smoke, methods.oracle.preset=exact)")
    parser.add_argument("--out", type=Path, default=None, help="file to write (default: <project>/params.yaml)")
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = project_root()
    out = args.out or root / "params.yaml"
    if args.check:
        current = out.read_text(encoding="utf-8") if out.is_file() else ""
        if current != compose_params_text(args.overrides, root):
            log.error("%s is not the composition of conf/ (run: python -m repro.stages.compose %s)", out,
                      " ".join(args.overrides))
            return 1
        log.info("%s is up to date", out)
        return 0
    log.info("wrote %s", write_params(args.overrides, root, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
