"""Pickle-free serialisation of training state and explicit handling of the global RNGs.

``encode_state`` splits a nested state (optimizer / scheduler state dicts, RNG states) into a JSON
tree and a flat ``name -> tensor`` dict for safetensors; ``decode_state`` reverses it exactly (int
dict keys, tuples and numpy arrays are tagged, floats round-trip through ``repr``). Nothing is ever
unpickled, so a checkpoint cannot execute code when loaded.

The global torch / numpy / Python RNGs are used by dropout, by ``DataLoader`` workers and by user
datasets; ``capture_rng_state`` / ``restore_rng_state`` checkpoint them, and ``isolated_rng`` runs a
block (a whole training run, a validation pass) without leaking RNG changes into the caller.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

_TAGS = ("__tensor__", "__tuple__", "__items__", "__ndarray__")


class StateEncodingError(TypeError):
    """A value in a training state cannot be stored without pickle."""


def encode_state(obj: Any, prefix: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``obj`` into a JSON-compatible tree and tensors named ``{prefix}.{n}`` (tensors are detached, CPU)."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any, where: str) -> Any:
        if x is None or isinstance(x, bool | int | float | str):
            return x
        if isinstance(x, torch.Tensor):
            name = f"{prefix}.{len(tensors)}"
            tensors[name] = x.detach().cpu()
            return {"__tensor__": name}
        if isinstance(x, np.ndarray):
            return {"__ndarray__": x.tolist(), "dtype": x.dtype.str, "shape": list(x.shape)}
        if isinstance(x, np.generic):
            return enc(x.item(), where)
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, Mapping):
            if all(isinstance(k, str) and k not in _TAGS for k in x):
                return {k: enc(v, f"{where}.{k}") for k, v in x.items()}
            return {"__items__": [[enc(k, where), enc(v, f"{where}[{k!r}]")] for k, v in x.items()]}
        raise StateEncodingError(f"{prefix}{where}: cannot store {type(x).__name__} without pickle")

    return enc(obj, ""), tensors


def decode_state(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of ``encode_state``; raises ``KeyError`` naming a tensor missing from ``tensors``."""
    if isinstance(tree, list):
        return [decode_state(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        name = tree["__tensor__"]
        if name not in tensors:
            raise KeyError(f"tensor {name!r} referenced by the state is missing")
        return tensors[name]
    if "__tuple__" in tree:
        return tuple(decode_state(v, tensors) for v in tree["__tuple__"])
    if "__items__" in tree:
        return {_hashable(decode_state(k, tensors)): decode_state(v, tensors) for k, v in tree["__items__"]}
    if "__ndarray__" in tree:
        return np.asarray(tree["__ndarray__"], dtype=np.dtype(tree["dtype"])).reshape(tree["shape"])
    return {k: decode_state(v, tensors) for k, v in tree.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list | tuple) else key


def capture_rng_state() -> dict[str, Any]:
    """The global torch (CPU and every CUDA device), numpy and Python RNG states."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(legacy=False),  # noqa: NPY002
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the global RNGs from ``capture_rng_state`` output (also after an ``encode``/``decode`` round trip)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(dict(state["numpy"]))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def seed_global_rngs(seed: int) -> None:
    """Seed torch (all devices), numpy's legacy global RNG and Python's ``random`` from one seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    random.seed(seed)


@contextlib.contextmanager
def isolated_rng(seed: int | None = None, state: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Run the block with the global RNGs seeded (or set to ``state``); restore the caller's states on exit."""
    saved = capture_rng_state()
    try:
        if state is not None:
            restore_rng_state(state)
        elif seed is not None:
            seed_global_rngs(seed)
        yield
    finally:
        restore_rng_state(saved)


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from a tuple of ints/strings (stable across runs and platforms; no global state).

    Used for per-epoch shuffles (``derive_seed(seed, epoch)``) and per-sample augmentation
    (``derive_seed(seed, epoch, index)``) so that a stream never depends on what ran before it.
    """
    words: list[int] = []
    for k in keys:
        if isinstance(k, str):
            words.extend(np.frombuffer(hashlib.sha256(k.encode("utf-8")).digest()[:8], dtype="<u4").tolist())
        else:
            words.extend([int(k) & 0xFFFFFFFF, (int(k) >> 32) & 0xFFFFFFFF])
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
