"""Explicit seeding for module initialisation.

``torch.nn`` initialisers draw from the global generator; ``seeded`` runs a block under a given seed
and restores the previous global CPU RNG state afterwards, so building a model with ``seed=...`` is
deterministic without leaking state into the caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with the CPU RNG seeded by ``seed`` (no-op for ``None``); restore state on exit."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def make_generator(seed: int | torch.Generator | None, device: str | torch.device = "cpu") -> torch.Generator | None:
    """A ``torch.Generator`` from a seed (``None`` stays ``None``; a generator is returned as is)."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen
