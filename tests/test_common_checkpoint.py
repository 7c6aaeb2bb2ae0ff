"""Safe state-dict IO in methods.common.checkpoint."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from methods.common.checkpoint import (
    CheckpointError,
    CheckpointKeyError,
    WeightsNotFoundError,
    check_state_dict,
    load_state_dict_file,
    read_safetensors,
    resolve_weights_file,
    save_state_dict_file,
    write_safetensors,
)
from methods.common.rng import make_generator, seeded


class NotATensor:
    """A custom class: pickling it into a checkpoint must not be loadable with weights_only=True."""


def test_safetensors_reader_follows_the_format(tmp_path):
    """A file written by hand from the format description (header length, JSON header, LE bytes)."""
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    b = torch.tensor([1, -2], dtype=torch.int64)
    blob_a, blob_b = a.numpy().tobytes(), b.numpy().tobytes()
    header = {
        "__metadata__": {"format": "pt"},
        "b": {"dtype": "I64", "shape": [2], "data_offsets": [len(blob_a), len(blob_a) + len(blob_b)]},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, len(blob_a)]},
    }
    head = json.dumps(header).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + blob_a + blob_b)
    out = read_safetensors(path)
    assert set(out) == {"a", "b"}
    assert torch.equal(out["a"], a) and torch.equal(out["b"], b)


def test_safetensors_roundtrip_dtypes(tmp_path):
    tensors = {
        "f32": torch.randn(3, 4, generator=make_generator(0)),
        "f16": torch.randn(5, generator=make_generator(1)).half(),
        "bf16": torch.randn(2, 2, generator=make_generator(2)).bfloat16(),
        "i64": torch.arange(7),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "w.safetensors"
    write_safetensors(tensors, path)
    back = read_safetensors(path)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v), k


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(CheckpointError, match="header length"):
        read_safetensors(path)


def test_load_unwraps_nested_and_module_prefix(tmp_path):
    sd = {"module.a.weight": torch.ones(2), "module.b": torch.zeros(1)}
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    out = load_state_dict_file(path)
    assert set(out) == {"a.weight", "b"}


def test_load_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(1), "obj": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_state_dict_file(path)


def test_save_state_dict_file_both_formats(tmp_path):
    sd = {"w": torch.ones(2, 2)}
    for name in ("a.safetensors", "b.pt"):
        save_state_dict_file(sd, tmp_path / "sub" / name)
        assert torch.equal(load_state_dict_file(tmp_path / "sub" / name)["w"], sd["w"])


def test_missing_file_errors_name_the_expected_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="weights file not found"):
        load_state_dict_file(tmp_path / "nope.pth")
    with pytest.raises(WeightsNotFoundError, match=r"'model\.safetensors' or 'weights\.pth'"):
        resolve_weights_file(tmp_path, ["model.safetensors", "weights.pth"], "thing")
    with pytest.raises(WeightsNotFoundError, match="no such file or folder"):
        resolve_weights_file(tmp_path / "missing", ["model.safetensors"], "thing")
    (tmp_path / "weights.pth").write_bytes(b"")
    assert resolve_weights_file(tmp_path, ["model.safetensors", "weights.pth"], "thing").name == "weights.pth"


def test_check_state_dict_lists_all_problems():
    model = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    ckpt = {"a": torch.zeros(2), "b": torch.zeros(4), "extra": torch.zeros(1)}
    with pytest.raises(CheckpointKeyError) as info:
        check_state_dict(model, ckpt, "toy")
    msg = str(info.value)
    assert "missing keys (1): c" in msg and "unexpected keys (1): extra" in msg and "b checkpoint (4,)" in msg
    check_state_dict(model, {"a": torch.zeros(2), "b": torch.zeros(3)}, "toy", optional=["c"])


def test_seeded_is_deterministic_and_restores_global_state():
    before = torch.random.get_rng_state()
    with seeded(7):
        a = torch.randn(3)
    with seeded(7):
        b = torch.randn(3)
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), before)
