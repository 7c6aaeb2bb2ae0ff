"""Synthetic datasets, the embedded default data of the harness.

* ``generate_bop_dataset(out_dir, preset, seed, renderer)``: instance level, BOP layout (mm),
  with test / train_pbr / video splits and onboarding data (``bop_synth``).
* Category level (NOCS layout, metres): ``nocs_synth`` (re-exported below when present).
* ``shapes``: the mesh primitives and procedural texturing both generators build on.
* ``presets``: ``smoke`` / ``default`` / ``large`` configurations.
"""

from __future__ import annotations

import importlib.util

from repro.data.synth.bop_synth import (
    GENERATOR_VERSION,
    OBJECT_LIBRARY,
    build_object,
    build_objects,
    generate_bop_dataset,
    verify_symmetries,
)
from repro.data.synth.presets import PRESETS, SynthConfig, get_preset

__all__ = [
    "GENERATOR_VERSION",
    "OBJECT_LIBRARY",
    "PRESETS",
    "SynthConfig",
    "build_object",
    "build_objects",
    "generate_bop_dataset",
    "get_preset",
    "verify_symmetries",
]

# Category-level generator (repro/data/synth/nocs_synth.py, written separately): re-exported here
# once the module exists; an error inside it still surfaces.
if importlib.util.find_spec("repro.data.synth.nocs_synth") is not None:
    from repro.data.synth.nocs_synth import generate_nocs_dataset

    __all__ += ["generate_nocs_dataset"]
