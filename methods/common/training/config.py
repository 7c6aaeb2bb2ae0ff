"""Training configuration, learning-rate schedules and optimizer construction.

``TrainConfig`` is a frozen dataclass holding every hyperparameter of a run; ``lr_at`` is the schedule
as a pure function of the optimizer-step index (linear warm-up, then cosine, linear or constant), so
its values can be checked against a paper's formula without running anything. STORM's SOM schedule
(appendix D): SGD, lr 0.01, no weight decay, warm-up 5,000 steps, cosine to step 80,000, grad-norm
clip 0.1 — ``STORM_SOM_PAPER``; its tracking classifier TOM: Adam, lr 1e-4, batch 64, 10 epochs —
``STORM_TOM_PAPER``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

OptimizerName = Literal["sgd", "adam", "adamw"]
ScheduleName = Literal["cosine", "constant", "linear"]
AmpMode = Literal["none", "bf16", "fp16"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (validated on construction).

    Exactly one of ``max_steps`` / ``epochs`` sets the length; the schedule spans that many optimizer
    steps. ``warmup_steps`` ramps the lr linearly from 0 (``lr * t / warmup_steps``, the STORM formula).
    ``amp`` only takes effect on CUDA (bf16 autocast, or fp16 autocast with a GradScaler).
    ``log_every`` / ``checkpoint_every`` count optimizer steps (0 disables periodic checkpoints; the
    final state is always saved when the trainer has a checkpoint folder). ``keep_checkpoints`` old
    checkpoints are kept (``None`` keeps all).
    """

    optimizer: OptimizerName = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: int = 8
    max_steps: int | None = None
    epochs: int | None = None
    warmup_steps: int = 0
    schedule: ScheduleName = "cosine"
    min_lr: float = 0.0
    grad_clip_norm: float | None = None
    amp: AmpMode = "none"
    log_every: int = 10
    checkpoint_every: int = 0
    keep_checkpoints: int | None = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant", "linear"):
            raise ValueError(f"schedule must be 'cosine', 'constant' or 'linear', got {self.schedule!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be 'none', 'bf16' or 'fp16', got {self.amp!r}")
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of max_steps and epochs")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.weight_decay < 0 or self.momentum < 0:
            raise ValueError("weight_decay and momentum must be >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.max_steps is not None and self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps})")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(f"grad_clip_norm must be > 0 or None, got {self.grad_clip_norm}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1 or None, got {self.keep_checkpoints}")
        object.__setattr__(self, "betas", (float(self.betas[0]), float(self.betas[1])))

    def total_steps(self, steps_per_epoch: int | None = None) -> int:
        """Optimizer steps in the run (``epochs * steps_per_epoch`` when the length is given in epochs)."""
        if self.max_steps is not None:
            return self.max_steps
        if steps_per_epoch is None or steps_per_epoch < 1:
            raise ValueError("an epoch-based config needs the number of steps per epoch (a loader with a length)")
        assert self.epochs is not None
        return self.epochs * steps_per_epoch

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (e.g. a Hydra/OmegaConf node converted to a dict); unknown keys are errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {unknown}; known: {sorted(names)}")
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)


STORM_SOM_PAPER = TrainConfig(
    optimizer="sgd",
    lr=0.01,
    weight_decay=0.0,
    momentum=0.0,
    max_steps=80_000,
    warmup_steps=5_000,
    schedule="cosine",
    min_lr=0.0,
    grad_clip_norm=0.1,
    log_every=100,
    checkpoint_every=5_000,
)
"""STORM SOM (appendix D): SGD lr 0.01, no weight decay, warm-up 5k then cosine to 80k, clip 0.1.

The paper states neither momentum nor batch size for SOM: plain SGD (momentum 0) and the default batch
size are assumptions."""

STORM_TOM_PAPER = TrainConfig(
    optimizer="adam",
    lr=1e-4,
    batch_size=64,
    epochs=10,
    schedule="constant",
    log_every=50,
)
"""STORM TOM (appendix D): Adam lr 1e-4, batch 64, 10 epochs, BCE-with-logits (no schedule stated)."""


def lr_at(step: int, cfg: TrainConfig, total_steps: int | None = None) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then the decay schedule.

    Warm-up: ``lr * step / warmup_steps`` for ``step < warmup_steps``. Cosine:
    ``min_lr + (lr - min_lr) / 2 * (1 + cos(pi * (step - warmup) / (total - warmup)))``, reaching
    ``min_lr`` at ``step == total`` and staying there. Linear decays to ``min_lr`` the same way.
    """
    total = cfg.total_steps() if total_steps is None else total_steps
    return LRSchedule.from_config(cfg, total)(step) * cfg.lr


@dataclass(frozen=True)
class LRSchedule:
    """The schedule as a multiplier of the base lr (what ``LambdaLR`` applies to each param group).

    A dataclass of plain numbers rather than a closure, so the scheduler's state dict serialises
    without pickle.
    """

    warmup_steps: int
    total_steps: int
    schedule: ScheduleName
    min_factor: float

    @classmethod
    def from_config(cls, cfg: TrainConfig, total_steps: int) -> LRSchedule:
        return cls(cfg.warmup_steps, int(total_steps), cfg.schedule, cfg.min_lr / cfg.lr)

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        warm = self.warmup_steps
        if step < warm:
            return step / warm
        if self.schedule == "constant":
            return 1.0
        span = self.total_steps - warm
        progress = 1.0 if span <= 0 else min(1.0, (step - warm) / span)
        if self.schedule == "cosine":
            return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 + (self.min_factor - 1.0) * progress


def build_optimizer(
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], cfg: TrainConfig
) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW from ``cfg`` (``params`` may be parameters or param-group dicts)."""
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following ``lr_at``; call ``.step()`` once after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule.from_config(cfg, total_steps))
