"""Training checkpoints: one folder per step, written atomically, read without pickle.

Layout of ``<root>/step_00001234/``:
- ``tensors.safetensors`` — model parameters/buffers (``model/<name>``) and every tensor of the
  optimizer, scheduler, grad-scaler and RNG states;
- ``state.json`` — format version, step / epoch / batch position, the ``TrainConfig``, the non-tensor
  parts of those states (see ``state.encode_state``) and the SHA-256 of the tensors file.

The folder is assembled under a temporary name and renamed into place, so a killed run leaves either
a complete checkpoint or none; a truncated or edited file is detected by the checksum on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from methods.common.checkpoint import CheckpointError, read_safetensors, write_safetensors
from methods.common.training.state import decode_state, encode_state
from repro.fileio import atomic_write_json

log = logging.getLogger(__name__)

FORMAT = "pose-repro-training-checkpoint"
FORMAT_VERSION = 1
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No training checkpoint where one was asked for."""


@dataclass
class TrainingCheckpoint:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    epoch: int
    batch_in_epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    config: dict[str, Any]
    scaler: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders under ``root``, oldest step first (temporary folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest checkpoint folder under ``root``, or ``None``."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def save_training_checkpoint(ckpt: TrainingCheckpoint, root: str | Path, keep: int | None = None) -> Path:
    """Write ``ckpt`` to ``root/step_XXXXXXXX`` atomically; keep only the newest ``keep`` checkpoints."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_dir_name(ckpt.step)
    tree: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {f"model/{k}": v.detach().cpu() for k, v in ckpt.model.items()}
    for name in ("optimizer", "scheduler", "scaler", "rng", "extra"):
        tree[name], part = encode_state(getattr(ckpt, name), name)
        tensors.update(part)
    tensors = _unshare(tensors)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        write_safetensors(tensors, tmp / TENSORS_FILE)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "step": ckpt.step,
            "epoch": ckpt.epoch,
            "batch_in_epoch": ckpt.batch_in_epoch,
            "config": encode_state(ckpt.config, "config")[0],
            "model_keys": list(ckpt.model),
            "tensors_sha256": _sha256(tmp / TENSORS_FILE),
            **tree,
        }
        atomic_write_json(tmp / STATE_FILE, meta)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved training checkpoint %s", final)
    if keep is not None:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Clone tensors that share storage with an earlier one (tied weights): safetensors stores each once."""
    seen: set[int] = set()
    out = {}
    for k, t in tensors.items():
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        out[k] = t.clone() if ptr in seen else t
        if ptr is not None:
            seen.add(ptr)
    return out


def _replace_dir(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.replace(src, dst)
        return
    trash = dst.with_name(f".{dst.name}.old.{os.getpid()}")
    os.replace(dst, trash)
    os.replace(src, dst)
    shutil.rmtree(trash, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from itself or from a root holding ``step_*`` folders (the newest)."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
        raise CheckpointNotFoundError(f"no training checkpoint in {path} (expected step_*/{STATE_FILE})")
    raise CheckpointNotFoundError(f"training checkpoint not found: {path}")


def load_training_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """Read and verify a checkpoint folder (or the newest one under a root); never unpickles anything."""
    folder = resolve_checkpoint(path)
    state_file, tensor_file = folder / STATE_FILE, folder / TENSORS_FILE
    try:
        meta = json.loads(state_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{state_file}: corrupted training checkpoint (invalid JSON: {exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{state_file}: not a pose-repro training checkpoint")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{state_file}: unsupported checkpoint version {meta.get('version')!r}")
    if not tensor_file.is_file():
        raise CheckpointNotFoundError(f"{folder}: incomplete training checkpoint ({TENSORS_FILE} is missing)")
    digest = _sha256(tensor_file)
    if digest != meta.get("tensors_sha256"):
        raise CheckpointError(f"{tensor_file}: corrupted training checkpoint (SHA-256 does not match {STATE_FILE})")
    try:
        tensors = read_safetensors(tensor_file)
    except Exception as exc:
        raise CheckpointError(f"{tensor_file}: unreadable training checkpoint: {exc}") from exc
    try:
        model = {k: tensors[f"model/{k}"] for k in meta["model_keys"]}
        parts = {
            name: decode_state(meta[name], tensors) for name in ("optimizer", "scheduler", "scaler", "rng", "extra")
        }
        return TrainingCheckpoint(
            step=int(meta["step"]),
            epoch=int(meta["epoch"]),
            batch_in_epoch=int(meta["batch_in_epoch"]),
            model=model,
            config=decode_state(meta["config"], {}),
            **parts,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder}: inconsistent training checkpoint: {exc}") from exc


def checkpoint_model_state(path: str | Path) -> Mapping[str, torch.Tensor]:
    """Only the model weights of a training checkpoint (e.g. to export or evaluate it)."""
    return load_training_checkpoint(path).model
