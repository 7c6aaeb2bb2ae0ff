"""Core records: validation on construction, content hashes, sampling, atomic IO, configs."""

from __future__ import annotations

import os

import numpy as np
import pytest

from repro.config import method_config
from repro.errors import DataFormatError
from repro.fileio import atomic_write, atomic_write_json, read_json
from repro.types import (
    CameraIntrinsics,
    CategoryEstimate,
    ContinuousSymmetry,
    Frame,
    ObjectModel,
    PoseEstimate,
    Prediction,
)

K = np.array([[500.0, 0, 32], [0, 500.0, 24], [0, 0, 1]])


def _quad(scale_x: float = 1.0) -> ObjectModel:
    v = [[0, 0, 0], [scale_x, 0, 0], [scale_x, 1, 0], [0, 1, 0]]
    return ObjectModel(obj_id=5, vertices=v, faces=[[0, 1, 2], [0, 2, 3]], diameter=np.hypot(scale_x, 1))


def test_object_model_validation_and_hash():
    m = _quad()
    assert m.vertices.flags.writeable is False and m.faces.dtype == np.int64
    assert m.content_hash == _quad().content_hash != _quad(2.0).content_hash
    with pytest.raises(ValueError, match="face index out of range"):
        ObjectModel(obj_id=1, vertices=np.zeros((3, 3)), faces=[[0, 1, 3]], diameter=1)
    with pytest.raises(ValueError, match="diameter must be positive"):
        ObjectModel(obj_id=1, vertices=np.zeros((3, 3)), faces=[[0, 1, 2]], diameter=0)
    with pytest.raises(ValueError, match="vertices: expected shape Nx3"):
        ObjectModel(obj_id=1, vertices=np.zeros((3, 2)), faces=[[0, 1, 2]], diameter=1)
    with pytest.raises(ValueError, match="unit vector"):
        ContinuousSymmetry(axis=[0, 0, 2], offset=[0, 0, 0])


def test_sample_points_are_on_surface_area_weighted_and_seeded():
    v = [[0, 0, 0], [3, 0, 0], [0, 1, 0], [0, 0, 0], [0, -1, 0], [1, 0, 0]]
    m = ObjectModel(obj_id=1, vertices=v, faces=[[0, 1, 2], [3, 4, 5]], diameter=3.2)
    pts = m.sample_points(20000, seed=1)
    np.testing.assert_array_equal(pts, m.sample_points(20000, seed=1))
    assert np.all(pts[:, 2] == 0)
    upper = pts[:, 1] >= 0
    assert abs(upper.mean() - 0.75) < 0.01  # areas 1.5 and 0.5
    inside = pts[upper][:, 0] / 3 + pts[upper][:, 1] <= 1 + 1e-12
    assert inside.all()


def test_frame_validation():
    cam = CameraIntrinsics(K, 64, 48)
    f = Frame(rgb=np.zeros((48, 64), np.uint8), camera=cam, scene_id=2, im_id=7)
    assert f.rgb.shape == (48, 64, 3) and f.sequence_id == 2 and f.sequence_index == 7
    with pytest.raises(ValueError, match="differs from camera"):
        Frame(rgb=np.zeros((40, 64, 3), np.uint8), camera=cam, scene_id=0, im_id=0)
    with pytest.raises(ValueError, match="uint8"):
        Frame(rgb=np.zeros((48, 64, 3), np.float32), camera=cam, scene_id=0, im_id=0)
    with pytest.raises(ValueError, match="depth shape"):
        Frame(rgb=np.zeros((48, 64, 3), np.uint8), camera=cam, scene_id=0, im_id=0, depth=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="image size must be positive"):
        CameraIntrinsics(K, 0, 48)


def test_frame_video_flag_defaults_false_and_survives_stripping():
    cam = CameraIntrinsics(K, 64, 48)
    still = Frame(rgb=np.zeros((48, 64, 3), np.uint8), camera=cam, scene_id=1, im_id=0)
    assert still.video is False and still.without_annotations().video is False
    clip = Frame(rgb=np.zeros((48, 64, 3), np.uint8), camera=cam, scene_id=1, im_id=3, video=True)
    assert clip.video is True and clip.without_annotations().video is True


def test_estimates_and_prediction():
    with pytest.raises(ValueError, match="R: expected shape 3x3"):
        PoseEstimate(obj_id=1, R=np.eye(4), t=[0, 0, 1])
    e = PoseEstimate(obj_id=np.int64(3), R=np.eye(3), t=[1, 2, 3], score=np.float32(0.5), box=[1, 2, 3, 4])
    assert type(e.obj_id) is int and e.box == (1.0, 2.0, 3.0, 4.0)
    RT = np.eye(4)
    RT[:3, :3] = 0.3 * np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    RT[:3, 3] = [0.1, 0.2, 0.9]
    c = CategoryEstimate(class_id=2, RT=RT, scales=[0.5, 0.4, 0.5])
    assert c.scale == pytest.approx(0.3)
    np.testing.assert_allclose(c.R @ c.R.T, np.eye(3), atol=1e-12)
    assert Prediction(timings={"a": 0.5, "b": 0.25}).total_time == 0.75
    assert Prediction(timings={"a": 0.5, "total": 0.6}).total_time == 0.6


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert os.listdir(tmp_path) == []
    atomic_write_json(target, {"a": np.float32(1.5), "b": np.arange(3), "nan": float("nan")})
    assert read_json(target)["b"] == [0, 1, 2]


def test_read_json_reports_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{\n  "a": 1,\n  "b": ,\n}')
    with pytest.raises(DataFormatError, match=r"bad\.json:3: invalid JSON"):
        read_json(p)
    p.write_bytes(b"\xff\xfe{")
    with pytest.raises(DataFormatError, match="not UTF-8"):
        read_json(p)


def test_method_config_presets_and_overrides(tmp_path):
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "m.yaml").write_text(
        "name: m\npreset: cpu\nparams:\n  lr: 0.1\n  layers: 3\npresets:\n  paper:\n    layers: 7\n")
    assert method_config("m", conf_dir=tmp_path) == ({"lr": 0.1, "layers": 3}, "cpu")
    params, preset = method_config("m", "paper", ["lr=0.5", "params.extra=x"], conf_dir=tmp_path)
    assert params == {"lr": 0.5, "layers": 7, "extra": "x"} and preset == "paper"
    with pytest.raises(ValueError, match="no preset 'big'"):
        method_config("m", "big", conf_dir=tmp_path)
    with pytest.raises(ValueError, match="key=value"):
        method_config("m", None, ["lr"], conf_dir=tmp_path)
    (tmp_path / "method" / "bad.yaml").write_text("params: [unclosed\n")
    with pytest.raises(DataFormatError, match=r"bad\.yaml"):
        method_config("bad", conf_dir=tmp_path)
