"""Training utilities shared by the methods: config, schedules, loop, checkpoints, seeded data, tracking.

- ``TrainConfig`` (frozen) with presets ``STORM_SOM_PAPER`` / ``STORM_TOM_PAPER``; ``lr_at`` (warm-up
  then cosine / linear / constant), ``build_optimizer``, ``build_scheduler``.
- ``Trainer`` (+ ``Callback``, ``ValidationCallback``, ``TrainResult``, ``clip_gradients``): the loop,
  resumable bit-exactly on CPU.
- ``save_training_checkpoint`` / ``load_training_checkpoint``: safetensors + JSON, no pickle, atomic.
- ``make_dataloader``, ``SeededSampler``, ``seed_worker``: deterministic loading for any worker count.
- ``MetricsLogger`` protocol, ``NullLogger``, ``MlflowLogger`` (explicit tracking URI and run).
- ``derive_seed``, ``isolated_rng``, ``capture_rng_state`` / ``restore_rng_state``.
"""

from methods.common.training.checkpoint import (
    CheckpointNotFoundError,
    TrainingCheckpoint,
    checkpoint_model_state,
    latest_checkpoint,
    list_checkpoints,
    load_training_checkpoint,
    save_training_checkpoint,
)
from methods.common.training.config import (
    STORM_SOM_PAPER,
    STORM_TOM_PAPER,
    LRSchedule,
    TrainConfig,
    build_optimizer,
    build_scheduler,
    lr_at,
)
from methods.common.training.data import SeededSampler, make_dataloader, prepare_epoch, seed_worker
from methods.common.training.state import (
    capture_rng_state,
    decode_state,
    derive_seed,
    encode_state,
    isolated_rng,
    restore_rng_state,
)
from methods.common.training.tracking import MetricsLogger, MlflowLogger, NullLogger
from methods.common.training.trainer import (
    Callback,
    Trainer,
    TrainResult,
    ValidationCallback,
    clip_gradients,
    move_to_device,
    split_loss,
)

__all__ = [
    "STORM_SOM_PAPER",
    "STORM_TOM_PAPER",
    "Callback",
    "CheckpointNotFoundError",
    "LRSchedule",
    "MetricsLogger",
    "MlflowLogger",
    "NullLogger",
    "SeededSampler",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingCheckpoint",
    "ValidationCallback",
    "build_optimizer",
    "build_scheduler",
    "capture_rng_state",
    "checkpoint_model_state",
    "clip_gradients",
    "decode_state",
    "derive_seed",
    "encode_state",
    "isolated_rng",
    "latest_checkpoint",
    "list_checkpoints",
    "load_training_checkpoint",
    "lr_at",
    "make_dataloader",
    "move_to_device",
    "prepare_epoch",
    "restore_rng_state",
    "save_training_checkpoint",
    "seed_worker",
    "split_loss",
]
