"""The training loop: ``Trainer`` runs optimizer steps over a DataLoader with a loss function.

One step: forward under autocast (CUDA only), backward (GradScaler for fp16), optional gradient-norm
clipping, optimizer step, scheduler step. Every ``log_every`` steps the window means of the loss (and
any extra terms the loss function returns) and the current lr go to Python logging, the progress bar
and the tracker; every ``checkpoint_every`` steps a checkpoint is written.

Determinism and resume: the run uses its own global-RNG stream (seeded from ``cfg.seed``, restored on
resume, isolated from the caller), each epoch's order and worker seeds are a function of ``(seed,
epoch)`` only (``prepare_epoch``), and a mid-epoch resume skips the consumed samples (``SeededSampler``
without workers) or replays the epoch's first batches with the RNG state set aside. On CPU a resumed run
therefore ends with bit-identical parameters to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from methods.common.checkpoint import load_checked
from methods.common.training.checkpoint import (
    CheckpointNotFoundError,
    TrainingCheckpoint,
    latest_checkpoint,
    load_training_checkpoint,
    save_training_checkpoint,
)
from methods.common.training.config import LRSchedule, TrainConfig, build_optimizer, build_scheduler
from methods.common.training.data import SeededSampler, loader_sampler, prepare_epoch
from methods.common.training.state import capture_rng_state, isolated_rng
from methods.common.training.tracking import MetricsLogger, NullLogger

log = logging.getLogger(__name__)

LossOutput = torch.Tensor | Mapping[str, torch.Tensor | float]
LossFn = Callable[[nn.Module, Any], LossOutput]


class Callback:
    """Hooks into the loop; override what you need (all default to no-ops)."""

    def on_train_start(self, trainer: Trainer) -> None:
        return None

    def on_step_end(self, trainer: Trainer, step: int, logs: Mapping[str, float]) -> None:
        """After optimizer step number ``step`` (1-based count of steps done); ``logs`` holds this step's values."""
        return None

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        return None

    def on_train_end(self, trainer: Trainer) -> None:
        return None


class ValidationCallback(Callback):
    """Run ``fn(model) -> {name: value}`` every ``every_n_steps`` steps (and at the end) and log it.

    The model is put in eval mode under ``torch.no_grad`` and the global RNGs are set aside, so
    validation does not change the training trajectory. Results are logged as ``{prefix}{name}``
    and kept in ``history`` as ``(step, metrics)``.
    """

    def __init__(
        self,
        fn: Callable[[nn.Module], Mapping[str, float]],
        every_n_steps: int,
        *,
        prefix: str = "val/",
        at_end: bool = True,
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.fn = fn
        self.every_n_steps = every_n_steps
        self.prefix = prefix
        self.at_end = at_end
        self.history: list[tuple[int, dict[str, float]]] = []

    def on_step_end(self, trainer: Trainer, step: int, logs: Mapping[str, float]) -> None:
        if step % self.every_n_steps == 0:
            self.run(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.at_end and trainer.step > 0 and (not self.history or self.history[-1][0] != trainer.step):
            self.run(trainer)

    def run(self, trainer: Trainer) -> dict[str, float]:
        model = trainer.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), isolated_rng():
                metrics = {f"{self.prefix}{k}": float(v) for k, v in self.fn(model).items()}
        finally:
            model.train(was_training)
        self.history.append((trainer.step, metrics))
        trainer.log_metrics(metrics)
        log.info("step %d: %s", trainer.step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics


@dataclass
class TrainResult:
    """Outcome of ``Trainer.fit``: where it stopped, the logged rows and the last checkpoint."""

    step: int
    epoch: int
    total_steps: int
    final_loss: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None

    @property
    def completed(self) -> bool:
        return self.step >= self.total_steps


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale gradients so their global L2 norm is at most ``max_norm``; returns the norm before clipping."""
    return torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor in a nested batch (dicts, lists, tuples, namedtuples) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    return batch


def split_loss(out: LossOutput) -> tuple[torch.Tensor, dict[str, float]]:
    """The scalar to optimise and the extra terms to log from a loss function's output."""
    if isinstance(out, torch.Tensor):
        loss, extras = out, {}
    elif isinstance(out, Mapping) and "loss" in out:
        loss = out["loss"]
        extras = {
            k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in out.items() if k != "loss"
        }
    else:
        raise TypeError("the loss function must return a scalar tensor or a mapping with a 'loss' tensor")
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(f"the loss must be a scalar tensor, got {type(loss).__name__} {getattr(loss, 'shape', '')}")
    return loss.reshape(()), extras


class Trainer:
    """Trains ``model`` on ``loader`` by minimising ``loss_fn(model, batch)`` with the settings in ``cfg``.

    ``loss_fn`` returns a scalar tensor, or a mapping with ``"loss"`` plus extra scalars to log.
    ``checkpoint_dir`` enables checkpoints (periodic and final); ``tracker`` receives ``train/loss``,
    ``train/lr``, ``train/grad_norm`` (when clipping), ``train/<extra>`` and callback metrics; it is
    flushed but not closed (the caller owns it). ``param_groups`` overrides ``model.parameters()``
    (e.g. a frozen encoder left out, or per-group lrs: the schedule scales every group's initial lr).
    The loader's generator is re-seeded at each epoch start (see ``prepare_epoch``); build loaders with
    ``make_dataloader``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        loader: DataLoader[Any],
        cfg: TrainConfig,
        *,
        checkpoint_dir: str | Path | None = None,
        tracker: MetricsLogger | None = None,
        callbacks: Sequence[Callback] = (),
        device: str | torch.device | None = None,
        param_groups: Iterable[nn.Parameter] | Iterable[dict[str, Any]] | None = None,
        progress: bool | None = None,
    ):
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn
        self.loader = loader
        self.cfg = cfg
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.tracker: MetricsLogger = tracker if tracker is not None else NullLogger()
        self.callbacks = list(callbacks)
        self.progress = progress
        try:
            self.steps_per_epoch: int | None = len(loader)
        except TypeError:
            self.steps_per_epoch = None
        if self.steps_per_epoch == 0:
            raise ValueError("the training loader is empty (fewer samples than one batch with drop_last?)")
        self.total_steps = cfg.total_steps(self.steps_per_epoch)
        if loader.batch_size is not None and loader.batch_size != cfg.batch_size:
            log.warning("the loader's batch size %d differs from cfg.batch_size %d", loader.batch_size, cfg.batch_size)
        params = list(param_groups) if param_groups is not None else [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable parameters")
        self.optimizer = build_optimizer(params, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: list[dict[str, float]] = []
        self.last_checkpoint: Path | None = None
        self._rng_state: dict[str, Any] | None = None
        self._stop = False
        self._in_fit = False
        self._window: dict[str, list[float]] = {}
        self._last_saved_step = -1

    def _amp_dtype(self) -> torch.dtype | None:
        if self.cfg.amp == "none":
            return None
        if self.device.type != "cuda":
            log.warning("amp=%s requested but the device is %s: training in float32", self.cfg.amp, self.device)
            return None
        return torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16

    def _trainable(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    # ------------------------------------------------------------------ public API

    def request_stop(self) -> None:
        """Stop after the current step (a checkpoint is written when there is a checkpoint folder)."""
        self._stop = True

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Send metrics to the tracker and the history (at ``step``, default the current step)."""
        step = self.step if step is None else step
        self.tracker.log_metrics(metrics, step)
        self.history.append({"step": float(step), **{k: float(v) for k, v in metrics.items()}})

    def fit(self, resume: bool | str | Path = False) -> TrainResult:
        """Train until ``total_steps`` (or a stop request).

        ``resume=True`` continues from the newest checkpoint in ``checkpoint_dir`` (a fresh start when
        there is none yet); a path continues from that checkpoint folder (or the newest under it) and
        fails with ``CheckpointNotFoundError`` when it is missing.
        """
        ckpt = self._find_resume(resume)
        if ckpt is not None:
            self.load_state(ckpt)
            log.info("resuming at step %d (epoch %d, batch %d)", self.step, self.epoch, self.batch_in_epoch)
        elif self.step == 0:
            self.tracker.log_params({f"train.{k}": v for k, v in self.cfg.to_dict().items()})
        self._stop = False
        rng_ctx = isolated_rng(seed=self.cfg.seed) if self._rng_state is None else isolated_rng(state=self._rng_state)
        self._in_fit = True
        try:
            with rng_ctx:
                for cb in self.callbacks:
                    cb.on_train_start(self)
                self._loop()
                for cb in self.callbacks:
                    cb.on_train_end(self)
                self._flush_window()
                if self.checkpoint_dir is not None and self._last_saved_step != self.step:
                    self.save_checkpoint()
                self._rng_state = capture_rng_state()
            self.tracker.flush()
        finally:
            self._in_fit = False
            if self.checkpoint_dir is None:  # after a crash, keep what was logged; with checkpoints the
                self.tracker.flush()  # resumed run re-logs everything after the last one
        losses = [row["train/loss"] for row in self.history if "train/loss" in row]
        return TrainResult(
            step=self.step,
            epoch=self.epoch,
            total_steps=self.total_steps,
            final_loss=losses[-1] if losses else None,
            history=list(self.history),
            checkpoint=self.last_checkpoint,
        )

    def state(self) -> TrainingCheckpoint:
        """The full training state, with the run's own RNG stream (live inside ``fit``, e.g. from a callback)."""
        return TrainingCheckpoint(
            step=self.step,
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            model={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=self._run_rng_state(),
            config=self.cfg.to_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            extra={"total_steps": self.total_steps},
        )

    def _run_rng_state(self) -> dict[str, Any]:
        if self._in_fit:
            return capture_rng_state()
        if self._rng_state is not None:
            return dict(self._rng_state)
        with isolated_rng(seed=self.cfg.seed):
            return capture_rng_state()

    def save_checkpoint(self) -> Path:
        """Write the current state to ``checkpoint_dir`` (atomically) and flush the tracker."""
        if self.checkpoint_dir is None:
            raise ValueError("this trainer has no checkpoint_dir")
        path = save_training_checkpoint(self.state(), self.checkpoint_dir, keep=self.cfg.keep_checkpoints)
        self.last_checkpoint = path
        self._last_saved_step = self.step
        self.tracker.flush()
        return path

    def load_state(self, ckpt: TrainingCheckpoint) -> None:
        """Restore model, optimizer, scheduler, scaler, position and RNG state from ``ckpt``.

        Lengths and the lr schedule follow the trainer's current config (a warning lists fields that
        differ from the checkpoint's); with the same config the lr is exactly the saved one.
        """
        saved_cfg = ckpt.config
        current = self.cfg.to_dict()
        diff = sorted(k for k in set(saved_cfg) | set(current) if saved_cfg.get(k) != current.get(k))
        if diff:
            log.warning("resuming with a config that differs from the checkpoint's in: %s", ", ".join(diff))
        load_checked(self.model, ckpt.model, "training checkpoint (model)")
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.scheduler.load_state_dict(ckpt.scheduler)
        schedule = LRSchedule.from_config(self.cfg, self.total_steps)
        self.scheduler.lr_lambdas = [schedule for _ in self.optimizer.param_groups]
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * schedule(ckpt.step)
        if self.scaler is not None and ckpt.scaler:
            self.scaler.load_state_dict(ckpt.scaler)
        self.step, self.epoch, self.batch_in_epoch = ckpt.step, ckpt.epoch, ckpt.batch_in_epoch
        self._rng_state = dict(ckpt.rng)
        self._last_saved_step = ckpt.step
        self.history = [row for row in self.history if row["step"] <= ckpt.step]

    # ------------------------------------------------------------------ internals

    def _find_resume(self, resume: bool | str | Path) -> TrainingCheckpoint | None:
        if resume is False:
            return None
        if resume is True:
            if self.checkpoint_dir is None:
                raise ValueError("resume=True needs a checkpoint_dir")
            path = latest_checkpoint(self.checkpoint_dir)
            if path is None:
                log.info("no checkpoint in %s: starting from scratch", self.checkpoint_dir)
                return None
            return load_training_checkpoint(path)
        path = Path(resume)
        if not path.exists():
            raise CheckpointNotFoundError(f"training checkpoint not found: {path}")
        return load_training_checkpoint(path)

    def _loop(self) -> None:
        cfg = self.cfg
        disable = None if self.progress is None else not self.progress
        with tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", disable=disable) as bar:
            while self.step < self.total_steps and not self._stop:
                prepare_epoch(self.loader, cfg.seed, self.epoch)
                start_batch = self.batch_in_epoch
                batches = self._epoch_iterator()
                for batch in batches:
                    logs = self._train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    bar.update(1)
                    for cb in self.callbacks:
                        cb.on_step_end(self, self.step, logs)
                    epoch_done = self.steps_per_epoch is not None and self.batch_in_epoch >= self.steps_per_epoch
                    if epoch_done:
                        self._end_epoch()
                    if self.step % cfg.log_every == 0:
                        row = self._flush_window()
                        bar.set_postfix(loss=f"{row.get('train/loss', float('nan')):.4g}", lr=f"{logs['lr']:.3g}")
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.checkpoint_dir:
                        self.save_checkpoint()
                    if epoch_done or self.step >= self.total_steps or self._stop:
                        break
                else:
                    if self.batch_in_epoch == start_batch:
                        raise ValueError(f"the training loader yielded no batch in epoch {self.epoch}")
                    self._end_epoch()
                del batches

    def _end_epoch(self) -> None:
        finished = self.epoch
        self.epoch += 1
        self.batch_in_epoch = 0
        for cb in self.callbacks:
            cb.on_epoch_end(self, finished)

    def _epoch_iterator(self) -> Iterator[Any]:
        """An iterator over this epoch's batches from the resume position on.

        A ``SeededSampler`` without workers skips the consumed samples; otherwise the first batches are
        loaded and dropped with the global RNG state set aside, so worker and main-process random
        streams are exactly those of an uninterrupted run.
        """
        skip = self.batch_in_epoch
        sampler = loader_sampler(self.loader)
        batch_size = self.loader.batch_size
        if skip and isinstance(sampler, SeededSampler) and self.loader.num_workers == 0 and batch_size:
            sampler.set_start(min(skip * batch_size, sampler.num_samples))
            skip = 0
        it = iter(self.loader)
        if skip:
            if self.loader.generator is None:
                log.warning("resuming mid-epoch with an unseeded DataLoader: the batch order will differ")
            log.info("replaying %d batches of epoch %d to reach the resume position", skip, self.epoch)
            with isolated_rng():
                for _ in range(skip):
                    next(it)
        return it

    def _train_step(self, batch: Any) -> dict[str, float]:
        self.model.train()
        batch = move_to_device(batch, self.device, non_blocking=self.device.type == "cuda")
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            loss, extras = split_loss(self.loss_fn(self.model, batch))
        loss_value = float(loss.detach())
        if loss_value != loss_value or loss_value in (float("inf"), float("-inf")):
            raise FloatingPointError(f"non-finite training loss {loss_value} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        logs: dict[str, float] = {"loss": loss_value, "lr": float(self.optimizer.param_groups[0]["lr"]), **extras}
        if self.cfg.grad_clip_norm is not None:
            logs["grad_norm"] = float(clip_gradients(self._trainable(), self.cfg.grad_clip_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        for k, v in logs.items():
            self._window.setdefault(k, []).append(v)
        return logs

    def _flush_window(self) -> dict[str, float]:
        """Log the means over the steps since the last log (lr: its latest value)."""
        if not self._window:
            return {}
        row = {f"train/{k}": (v[-1] if k == "lr" else sum(v) / len(v)) for k, v in self._window.items()}
        self._window = {}
        self.log_metrics(row)
        log.info(
            "step %d/%d epoch %d: %s",
            self.step,
            self.total_steps,
            self.epoch,
            ", ".join(f"{k.removeprefix('train/')}={v:.4g}" for k, v in row.items()),
        )
        return row
