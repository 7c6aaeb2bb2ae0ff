"""Safe state-dict IO for pretrained and trained weights.

Only data formats are read: ``.safetensors`` (with the ``safetensors`` package when installed, else a
small built-in reader of the documented format: 8-byte little-endian header length, JSON header,
raw little-endian tensor bytes) and torch pickles through ``torch.load(..., weights_only=True)``.
TorchScript archives (e.g. OpenAI's original ``ViT-B-32.pt``) are refused with a clear message.

``StateDictMapping`` converts state dicts between two key layouts of the same architecture (e.g.
Hugging Face <-> torch.hub / open_clip), described as data: whole-key renames, per-layer sub-key
renames, a fused qkv projection, per-key tensor transforms.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import string
import struct
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

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


# --------------------------------------------------------------------------- key-layout mappings


def strip_first_prefix(key: str, prefixes: Sequence[str]) -> str:
    """``key`` without the first of ``prefixes`` it starts with (unchanged when none matches)."""
    for p in prefixes:
        if key.startswith(p):
            return key[len(p) :]
    return key


def transpose_2d(t: torch.Tensor) -> torch.Tensor:
    """A matrix transposed into new contiguous memory (e.g. ``x @ W`` <-> ``nn.Linear`` weights)."""
    return t.t().contiguous()


@dataclass(frozen=True)
class KeyTransform:
    """Tensor transforms applied with a whole-key rename: ``forward`` source -> target, ``inverse`` back."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]


TRANSPOSE = KeyTransform(transpose_2d, transpose_2d)


@dataclass(frozen=True)
class FusedQKV:
    """One attention input projection stored fused on one side and as separate q/k/v on the other.

    Sub-key templates, relative to the layer prefix: ``fused`` with ``{kind}`` (``"attn.qkv.{kind}"``),
    ``separate`` with ``{part}`` and ``{kind}`` (``"attention.attention.{part}.{kind}"``); ``parts``
    are the ``{part}`` names of q, k and v, in the order they are concatenated along ``dim``;
    ``kinds`` the ``{kind}`` values (weight and bias). ``fused_on`` says which side of the mapping
    holds the fused tensors.
    """

    fused: str
    separate: str
    parts: tuple[str, str, str]
    fused_on: Literal["source", "target"] = "target"
    kinds: tuple[str, ...] = ("weight", "bias")
    dim: int = 0

    def __post_init__(self) -> None:
        if len(self.parts) != 3 or len(set(self.parts)) != 3:
            raise ValueError(f"FusedQKV needs three distinct part names (q, k, v), got {self.parts!r}")
        if "{kind}" not in self.fused or "{part}" in self.fused:
            raise ValueError(f"fused template must contain {{kind}} and not {{part}}: {self.fused!r}")
        if "{kind}" not in self.separate or "{part}" not in self.separate:
            raise ValueError(f"separate template must contain {{part}} and {{kind}}: {self.separate!r}")
        if self.fused_on not in ("source", "target"):
            raise ValueError(f"fused_on must be 'source' or 'target', got {self.fused_on!r}")


def _template_regex(template: str, groups: Mapping[str, Sequence[str]]) -> re.Pattern[str]:
    """A full-match regex of a ``str.format`` template whose ``{name}`` fields take the listed values."""
    pattern = ""
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        pattern += re.escape(literal)
        if name is not None:
            pattern += f"(?P<{name}>" + "|".join(re.escape(v) for v in groups[name]) + ")"
    return re.compile(pattern + r"\Z")


def _layer_regex(template: str) -> re.Pattern[str]:
    if template.count("{i}") != 1:
        raise ValueError(f"layer prefix template must contain '{{i}}' exactly once: {template!r}")
    head, tail = template.split("{i}")
    return re.compile(rf"^{re.escape(head)}(\d+){re.escape(tail)}(.+)$")


@dataclass(frozen=True)
class _Direction:
    """One direction of a ``StateDictMapping``, precomputed."""

    prefixes: tuple[str, ...]
    renames: Mapping[str, str]
    transforms: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]
    layer_re: re.Pattern[str] | None
    from_layer: str
    to_layer: str
    layer_renames: tuple[tuple[str, str], ...]
    qkv: FusedQKV | None
    merge: bool
    qkv_re: re.Pattern[str] | None


@dataclass(frozen=True)
class StateDictMapping:
    """A bijection between two state-dict key layouts of one architecture, described as data.

    ``forward`` maps source-layout keys to the target layout, ``inverse`` back. Each key is, in order:

    1. stripped of the first matching ``source_prefixes`` (``target_prefixes`` for ``inverse``), for
       matching only;
    2. renamed as a whole through ``renames`` (source -> target), its tensor passed through the
       ``transforms`` entry of its source key when there is one;
    3. otherwise, if it starts with the layer prefix (``source_layer``/``target_layer``, format
       strings with ``{i}``, e.g. ``"encoder.layer.{i}."``), its remaining sub-key is either a q/k/v
       projection of ``qkv`` (separate q/k/v of a layer and kind are concatenated in q, k, v order;
       a fused tensor is split into three equal chunks, copied) or renamed by the first entry of
       ``layer_renames`` equal to it or to one of its dotted prefixes (``"mlp.fc1"`` renames
       ``"mlp.fc1.weight"``); the layer index is re-written as an int;
    4. anything else is passed through with its original key, so a strict load reports it.

    Fused tensors come after all other keys. When only some of q/k/v are present for a layer and
    kind, they are passed through unfused under their (prefix-stripped) separate keys.
    """

    renames: Mapping[str, str] = field(default_factory=dict)
    source_layer: str | None = None
    target_layer: str | None = None
    layer_renames: Mapping[str, str] = field(default_factory=dict)
    qkv: FusedQKV | None = None
    transforms: Mapping[str, KeyTransform] = field(default_factory=dict)
    source_prefixes: tuple[str, ...] = ()
    target_prefixes: tuple[str, ...] = ()
    _forward: _Direction = field(init=False, repr=False, compare=False)
    _inverse: _Direction = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        renames = dict(self.renames)
        layer_renames = dict(self.layer_renames)
        for what, table in (("renames", renames), ("layer_renames", layer_renames)):
            targets = list(table.values())
            dup = sorted({t for t in targets if targets.count(t) > 1})
            if dup:
                raise ValueError(f"{what} is not invertible: several keys map to {dup}")
        stray = sorted(set(self.transforms) - set(renames))
        if stray:
            raise ValueError(f"transforms for keys that are not renamed: {stray}")
        if (self.source_layer is None) != (self.target_layer is None):
            raise ValueError("give both source_layer and target_layer, or neither")
        if self.source_layer is None and (layer_renames or self.qkv is not None):
            raise ValueError("layer_renames and qkv need source_layer and target_layer")
        set_ = object.__setattr__
        set_(self, "renames", MappingProxyType(renames))
        set_(self, "layer_renames", MappingProxyType(layer_renames))
        set_(self, "transforms", MappingProxyType(dict(self.transforms)))
        set_(self, "source_prefixes", tuple(self.source_prefixes))
        set_(self, "target_prefixes", tuple(self.target_prefixes))
        set_(self, "_forward", self._direction(forward=True))
        set_(self, "_inverse", self._direction(forward=False))

    def _direction(self, *, forward: bool) -> _Direction:
        src, dst = (self.source_layer, self.target_layer) if forward else (self.target_layer, self.source_layer)
        renames = dict(self.renames) if forward else {v: k for k, v in self.renames.items()}
        transforms = {
            (k if forward else self.renames[k]): (t.forward if forward else t.inverse)
            for k, t in self.transforms.items()
        }
        layer = tuple(self.layer_renames.items()) if forward else tuple((v, k) for k, v in self.layer_renames.items())
        qkv = self.qkv
        merge = qkv is not None and (qkv.fused_on == "target") == forward
        qkv_re = None
        if qkv is not None:
            groups = {"part": qkv.parts, "kind": qkv.kinds}
            qkv_re = _template_regex(qkv.separate if merge else qkv.fused, groups)
        return _Direction(
            prefixes=self.source_prefixes if forward else self.target_prefixes,
            renames=renames,
            transforms=transforms,
            layer_re=None if src is None else _layer_regex(src),
            from_layer=src or "",
            to_layer=dst or "",
            layer_renames=layer,
            qkv=qkv,
            merge=merge,
            qkv_re=qkv_re,
        )

    def forward(self, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Source-layout state dict -> target layout."""
        return _convert(self._forward, sd)

    def inverse(self, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Target-layout state dict -> source layout."""
        return _convert(self._inverse, sd)


def _convert(d: _Direction, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    pending: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, val in sd.items():
        k = strip_first_prefix(key, d.prefixes)
        if k in d.renames:
            fn = d.transforms.get(k)
            out[d.renames[k]] = val if fn is None else fn(val)
            continue
        m = d.layer_re.match(k) if d.layer_re is not None else None
        if m is None:
            out[key] = val
            continue
        idx, rest = int(m.group(1)), m.group(2)
        q = d.qkv_re.match(rest) if d.qkv_re is not None else None
        if q is not None and d.qkv is not None:
            if d.merge:
                pending.setdefault((idx, q["kind"]), {})[q["part"]] = val
            else:
                out.update(_split_qkv(d.qkv, d.to_layer.format(i=idx), q["kind"], key, val))
            continue
        for old, new in d.layer_renames:
            if rest == old or rest.startswith(old + "."):
                out[f"{d.to_layer.format(i=idx)}{new}{rest[len(old) :]}"] = val
                break
        else:
            out[key] = val
    for (idx, kind), parts in pending.items():
        qkv = d.qkv
        assert qkv is not None  # only a mapping with qkv collects parts
        if set(parts) == set(qkv.parts):
            fused = torch.cat([parts[p] for p in qkv.parts], dim=qkv.dim)
            out[d.to_layer.format(i=idx) + qkv.fused.format(kind=kind)] = fused
        else:
            for p, val in parts.items():
                out[d.from_layer.format(i=idx) + qkv.separate.format(part=p, kind=kind)] = val
    return out


def _split_qkv(qkv: FusedQKV, prefix: str, kind: str, key: str, val: torch.Tensor) -> dict[str, torch.Tensor]:
    if val.ndim <= qkv.dim or val.shape[qkv.dim] % 3:
        raise ValueError(f"cannot split '{key}' of shape {tuple(val.shape)} into q, k, v along dim {qkv.dim}")
    chunks = val.tensor_split(3, dim=qkv.dim)
    return {prefix + qkv.separate.format(part=p, kind=kind): c.clone() for p, c in zip(qkv.parts, chunks, strict=True)}
