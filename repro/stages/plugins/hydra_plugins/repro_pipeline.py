"""Registers the pipeline's OmegaConf resolvers when Hydra scans its plug-ins.

DVC composes ``params.yaml`` for ``dvc exp run -S ...`` in its own process; ``.dvc/config`` points
its ``hydra.plugins_path`` at the folder holding this ``hydra_plugins`` namespace package, so the
``repro.pipeline`` resolver used by ``conf/config.yaml`` exists there too.
"""

from repro.stages.config import register_resolvers

register_resolvers()
