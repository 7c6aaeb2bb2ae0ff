"""Seeded, resumable data loading.

``SeededSampler`` draws each epoch's order from a ``torch.Generator`` seeded by ``derive_seed(seed,
epoch)``, so the order of epoch ``e`` does not depend on anything that ran before it, and it can start
part-way through an epoch (resume). ``seed_worker`` seeds numpy and ``random`` in every DataLoader
worker from the worker's torch seed (itself drawn from the loader's generator), and ``make_dataloader``
wires both together. Datasets with a ``set_epoch(epoch)`` method are told the epoch before each pass
(per-sample augmentation seeds can then be ``derive_seed(seed, epoch, index)``, independent of workers).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from methods.common.training.state import derive_seed


class SeededSampler(Sampler[int]):
    """Indices ``0..n-1`` per epoch, shuffled by a generator seeded from ``(seed, epoch)``.

    ``set_epoch`` selects the epoch and ``set_start`` skips the first samples of it (resuming); the
    start is reset to 0 by ``set_epoch``.
    """

    def __init__(self, data: Sized | int, seed: int, shuffle: bool = True):
        self.num_samples = data if isinstance(data, int) else len(data)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} outside [0, {self.num_samples}]")
        self.start = int(start)

    def order(self, epoch: int) -> list[int]:
        """The full index order of ``epoch``."""
        if not self.shuffle:
            return list(range(self.num_samples))
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, "shuffle"))
        return torch.randperm(self.num_samples, generator=gen).tolist()

    def __iter__(self) -> Iterator[int]:
        yield from self.order(self.epoch)[self.start :]

    def __len__(self) -> int:
        return self.num_samples - self.start


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy's and Python's global RNGs from this worker's torch seed.

    PyTorch seeds each worker's torch RNG with ``base_seed + worker_id`` (``base_seed`` drawn from the
    loader's generator) but leaves numpy/``random`` alone, so without this every worker would share
    one numpy stream (identical "random" augmentations across workers, and forked state after resume).
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - the legacy global RNG is what user datasets draw from
    random.seed(seed)


def make_dataloader(
    dataset: Dataset[Any],
    batch_size: int,
    seed: int,
    *,
    shuffle: bool = True,
    num_workers: int = 0,
    drop_last: bool = True,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """A DataLoader with a ``SeededSampler``, a seeded generator and ``seed_worker``.

    Deterministic for any ``num_workers``: workers are re-seeded each epoch (persistent workers are
    not used because they would carry RNG state across epochs); with ``num_workers=0`` the dataset runs
    in the calling process and draws from its global RNGs, which ``Trainer`` seeds from ``cfg.seed``
    (elsewhere, wrap the loop in ``isolated_rng(seed=...)``). ``drop_last`` defaults to True so
    every training batch has the same size.
    """
    if not hasattr(dataset, "__len__"):
        raise TypeError("make_dataloader needs a map-style dataset with __len__")
    generator = torch.Generator().manual_seed(derive_seed(seed, "loader"))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=SeededSampler(len(dataset), seed, shuffle=shuffle),  # type: ignore[arg-type]
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=False,
    )


def loader_sampler(loader: DataLoader[Any]) -> Sampler[Any] | None:
    """The index sampler of ``loader`` (inside its batch sampler when there is one)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    return inner if inner is not None else getattr(loader, "sampler", None)


def prepare_epoch(loader: DataLoader[Any], seed: int, epoch: int) -> None:
    """Make epoch ``epoch`` of ``loader`` a function of ``(seed, epoch)`` only.

    Re-seeds the loader's generator (worker seeds, and the shuffle of a plain ``RandomSampler``) and
    calls ``set_epoch`` on the sampler and the dataset when they have one.
    """
    if loader.generator is not None:
        loader.generator.manual_seed(derive_seed(seed, epoch, "epoch"))
    for obj in (loader_sampler(loader), getattr(loader, "batch_sampler", None), loader.dataset):
        set_epoch = getattr(obj, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
