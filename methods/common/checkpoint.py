"""Safe state-dict IO for pretrained and trained weights.

Only data formats are read: ``.safetensors`` (with the ``safetensors`` package when installed, else a
small built-in reader of the documented format: 8-byte little-endian header length, JSON header,
raw little-endian tensor bytes) and torch pickles through ``torch.load(..., weights_only=True)``.
TorchScript archives (e.g. OpenAI's original ``ViT-B-32.pt``) are refused with a clear message.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from repro.errors import ReproError

log = logging.getLogger(__name__)

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_NESTED_KEYS = ("state_dict", "model", "module", "model_state_dict")
_MAX_LISTED = 25


class CheckpointError(ReproError, ValueError):
    """A weights file cannot be read or does not fit the model."""


class CheckpointKeyError(CheckpointError):
    """Strict key check failed: lists missing, unexpected and shape-mismatched keys."""

    def __init__(
        self,
        what: str,
        missing: Sequence[str],
        unexpected: Sequence[str],
        mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
    ):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        parts = [f"{what}: state dict does not match the model"]
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {_listing(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {_listing(self.unexpected)}")
        if self.mismatched:
            items = [f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched]
            parts.append(f"shape mismatches ({len(items)}): {_listing(items)}")
        super().__init__("; ".join(parts))


class WeightsNotFoundError(ReproError, FileNotFoundError):
    """A pretrained preset was asked for but its weights file is not on disk."""


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file into CPU tensors (package if installed, else built-in reader)."""
    path = Path(path)
    try:
        from safetensors.torch import load_file
    except ImportError:
        load_file = None
    if load_file is not None:
        return dict(load_file(str(path), device="cpu"))
    if sys.byteorder != "little":
        raise CheckpointError(f"{path}: built-in safetensors reader needs a little-endian host")
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 8:
            raise CheckpointError(f"{path}: not a safetensors file (too short)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse_safetensors(path, data, size)


def _parse_safetensors(path: Path, data: mmap.mmap, size: int) -> dict[str, torch.Tensor]:
    (n_header,) = struct.unpack("<Q", data[:8])
    if 8 + n_header > size:
        raise CheckpointError(f"{path}: not a safetensors file (header length {n_header} beyond file end)")
    try:
        header = json.loads(data[8 : 8 + n_header].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file (bad JSON header: {exc})") from exc
    base = 8 + n_header
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(info.get("dtype", ""))
        if dtype is None:
            raise CheckpointError(f"{path}: tensor '{name}' has unsupported dtype {info.get('dtype')!r}")
        begin, end = info["data_offsets"]
        shape = tuple(int(s) for s in info["shape"])
        raw = bytearray(data[base + begin : base + end])
        expected = _numel(shape) * torch.empty((), dtype=dtype).element_size()
        if len(raw) != expected:
            raise CheckpointError(f"{path}: tensor '{name}' has {len(raw)} bytes, expected {expected}")
        if expected == 0:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        out[name] = torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape)
    return out


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write tensors as ``.safetensors`` (package if installed, else built-in writer); atomic rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    try:
        from safetensors.torch import save_file
    except ImportError:
        save_file = None
    if save_file is not None:
        save_file(tensors, str(tmp))
    else:
        header: dict[str, object] = {}
        blobs: list[bytes] = []
        offset = 0
        for name in sorted(tensors):
            t = tensors[name]
            if t.dtype not in _ST_NAMES:
                raise CheckpointError(f"cannot write tensor '{name}' of dtype {t.dtype} as safetensors")
            blob = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            header[name] = {
                "dtype": _ST_NAMES[t.dtype],
                "shape": list(t.shape),
                "data_offsets": [offset, offset + len(blob)],
            }
            blobs.append(blob)
            offset += len(blob)
        head = json.dumps(header, separators=(",", ":")).encode("utf-8")
        head += b" " * ((8 - len(head) % 8) % 8)
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<Q", len(head)))
            fh.write(head)
            for blob in blobs:
                fh.write(blob)
    tmp.replace(path)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a flat ``name -> tensor`` dict from a weights file, safely.

    Nested training checkpoints (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped and a
    DistributedDataParallel ``module.`` prefix is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        sd: object = read_safetensors(path)
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            hint = ""
            if _is_torchscript(path):
                hint = (
                    " (this is a TorchScript archive, e.g. OpenAI's original CLIP .pt; use the open_clip or "
                    "Hugging Face state-dict release of the same weights instead)"
                )
            raise CheckpointError(f"{path}: cannot be loaded with weights_only=True: {exc}{hint}") from exc
    sd = _unwrap(sd, path)
    return _strip_prefix(sd, "module.")


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, Mapping):
            nested = next((obj[k] for k in _NESTED_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if nested is None:
                break
            obj = nested
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            dropped = sorted(str(k) for k in obj if k not in tensors)
            log.info("%s: ignoring non-tensor entries %s", path, dropped)
            return tensors
    raise CheckpointError(f"{path}: no state dict (name -> tensor mapping) found in the file")


def _strip_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def save_state_dict_file(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Save a state dict: ``.safetensors`` as safetensors, anything else with ``torch.save`` (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        write_safetensors(state_dict, path)
        return
    tmp = path.with_name(path.name + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
    tmp.replace(path)


def check_state_dict(
    model_state: Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor],
    what: str,
    *,
    optional: Iterable[str] = (),
) -> None:
    """Strict key and shape check of ``state_dict`` against ``model_state``; raises ``CheckpointKeyError``.

    Keys in ``optional`` may be absent from ``state_dict`` (the model keeps its initial values).
    """
    optional = set(optional)
    missing = sorted(k for k in model_state if k not in state_dict and k not in optional)
    unexpected = sorted(k for k in state_dict if k not in model_state)
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(model_state[k].shape))
        for k in sorted(model_state)
        if k in state_dict and tuple(state_dict[k].shape) != tuple(model_state[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointKeyError(what, missing, unexpected, mismatched)


def load_checked(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    what: str,
    *,
    optional: Iterable[str] = (),
) -> None:
    """``check_state_dict`` then copy the tensors into ``module`` (dtype cast to the module's)."""
    own = module.state_dict()
    check_state_dict(own, state_dict, what, optional=optional)
    for k in own:
        if k not in state_dict:
            log.info("%s: '%s' not in checkpoint, keeping its initial value", what, k)
    result = module.load_state_dict(dict(state_dict), strict=False)
    leftover = [k for k in result.missing_keys if k not in set(optional)]
    if leftover or result.unexpected_keys:
        raise CheckpointKeyError(what, leftover, result.unexpected_keys)


def resolve_weights_file(weights: str | Path, candidates: Sequence[str], description: str) -> Path:
    """The weights file for ``weights`` (a file, or a folder holding one of ``candidates``).

    Raises ``WeightsNotFoundError`` naming the expected file names and where they were looked for.
    """
    p = Path(weights).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for name in candidates:
            if (p / name).is_file():
                return p / name
        where = f"in folder {p}"
    else:
        where = f"at {p} (no such file or folder)"
    names = " or ".join(repr(c) for c in candidates)
    raise WeightsNotFoundError(
        f"{description}: weights not found {where}; expected a file named {names}. "
        "Pretrained weights cannot be downloaded here: place the file there and pass its path (or folder)."
    )
