"""NOCS layout reader/writer, GT JSON and pickle converter, on small data made in tmp_path."""

from __future__ import annotations

import io
import json
import logging
import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from repro.data.base import PoseDataset
from repro.data.nocs import (
    CAMERA25_CAMERA,
    GT_FORMAT,
    MetaEntry,
    NocsDataset,
    category_gt_entry,
    convert_nocs_gt_pickles,
    decode_coord,
    default_gt_path,
    encode_coord,
    load_nocs_gt_json,
    match_gt_to_instances,
    nocs_box_to_xywh,
    nocs_frame_prefix,
    read_meta,
    write_camera_json,
    write_nocs_frame,
    write_nocs_gt_json,
)
from repro.errors import DataFormatError, DatasetNotFoundError
from repro.types import CameraIntrinsics, CategoryGT

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "nocs" / "inputs.json"
H, W = 48, 64
SMALL_CAMERA = CameraIntrinsics(K=[[60.0, 0, 31.5], [0, 61.0, 23.5], [0, 0, 1]], width=W, height=H)

# scene -> image -> (meta lines, rectangles (y1, x1, y2, x2) of the instances in the mask, GT mode)
# GT modes: "ids" = JSON has gt_inst_ids; "order" = official order; "swapped" = GT order differs
# from meta order (matched by box); meta instances without a rectangle are not visible.
LAYOUT = {
    1: {0: ([(1, 1, "bottle_a_norm"), (2, 6, "mug_b_norm")], {1: (2, 3, 10, 12), 2: (20, 30, 40, 50)},
            "ids"),
        2: ([(1, 1, "bottle_a_norm"), (2, 6, "mug_b_norm")], {1: (5, 5, 15, 20), 2: (25, 30, 45, 60)},
            "order")},
    3: {0: ([(1, 2, "bowl_c_norm"), (2, 4, "can_d_norm"), (3, 5, "laptop_e_norm")],
            {1: (0, 0, 10, 10), 2: (30, 40, 48, 64)}, "order"),
        1: ([(1, 4, "can_d_norm"), (2, 3, "camera_f_norm")], {1: (1, 2, 20, 22), 2: (22, 30, 40, 60)},
            "swapped")},
}


def _random_rt(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    rt = np.eye(4)
    rt[:3, :3] = rng.uniform(0.05, 0.3) * q
    rt[:3, 3] = rng.uniform([-0.2, -0.2, 0.4], [0.2, 0.2, 1.2])
    return rt


def _make_image(rng: np.random.Generator, rects: dict[int, tuple[int, ...]], h: int = H, w: int = W):
    mask = np.full((h, w), 255, np.uint8)
    for inst, (y1, x1, y2, x2) in rects.items():
        mask[y1:y2, x1:x2] = inst
    return {
        "color": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "depth_mm": rng.integers(0, 5000, (h, w), dtype=np.uint16),
        "mask": mask,
        "coord": rng.random((h, w, 3)),
    }


def _write_real(root: Path, rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """Write LAYOUT as REAL test data + GT JSON; return the written arrays and GT entries."""
    written, gt_images = {}, []
    for sid, images in LAYOUT.items():
        for im, (meta, rects, mode) in images.items():
            arrays = _make_image(rng, rects)
            write_nocs_frame(root, "real", "test", sid, im, meta=meta, **arrays)
            visible = [m for m in meta if m[0] in rects]
            if mode == "swapped":
                visible = visible[::-1]
            entry = {
                "scene_id": sid, "im_id": im,
                "gt_class_ids": [m[1] for m in visible],
                "gt_RTs": [_random_rt(rng) for _ in visible],
                "gt_scales": rng.uniform(0.2, 1.0, (len(visible), 3)),
                "gt_handle_visibility": [int(i % 2 == 0) for i in range(len(visible))],
                "gt_bboxes": [list(rects[m[0]]) for m in visible],
            }
            if mode == "ids":
                entry["gt_inst_ids"] = [m[0] for m in visible]
            gt_images.append(entry)
            written[(sid, im)] = (arrays, visible)
    return written, gt_images


@pytest.fixture
def real_root(tmp_path: Path):
    root = tmp_path / "data"
    written, gt_images = _write_real(root, np.random.default_rng(0))
    write_camera_json(root, SMALL_CAMERA)
    write_nocs_gt_json(default_gt_path(root, "real", "test"), gt_images, subset="real", split="test")
    return root, written, gt_images


# --------------------------------------------------------------------------- round trip

def test_round_trip_real(real_root):
    root, written, gt_images = real_root
    ds = NocsDataset(root, subset="real", split="test")
    assert isinstance(ds, PoseDataset)
    assert ds.format == "nocs" and ds.name == "real275" and ds.objects() == {}
    assert ds.scene_ids() == [1, 3]
    assert ds.camera.fx == 60.0 and ds.camera.width == W
    gt_by_key = {(e["scene_id"], e["im_id"]): e for e in gt_images}

    keys = []
    for frame, targets in ds.iter_frames(load_masks=True):
        key = (frame.scene_id, frame.im_id)
        keys.append(key)
        arrays, visible = written[key]
        np.testing.assert_array_equal(frame.rgb, arrays["color"])
        assert frame.depth.dtype == np.float32
        np.testing.assert_array_equal(frame.depth, arrays["depth_mm"].astype(np.float32))
        assert frame.dataset == "real275"
        coord = ds.load_coord(*key)
        assert coord.dtype == np.float32 and coord.shape == (H, W, 3)
        assert np.abs(coord - arrays["coord"]).max() <= 0.5 / 255 + 1e-6
        np.testing.assert_array_equal(ds.load_mask(*key), arrays["mask"])

        entry = gt_by_key[key]
        assert targets.categories == tuple(sorted(set(entry["gt_class_ids"])))
        assert len(frame.category_gt) == len(visible)
        for i, (gt, m) in enumerate(zip(frame.category_gt, visible, strict=True)):
            assert (gt.inst_id, gt.class_id, gt.model_id) == (m[0], m[1], m[2])
            np.testing.assert_array_equal(gt.RT, entry["gt_RTs"][i])
            np.testing.assert_array_equal(gt.scales, entry["gt_scales"][i])
            assert gt.handle_visible == bool(entry["gt_handle_visibility"][i])
            y1, x1, y2, x2 = entry["gt_bboxes"][i]
            assert gt.bbox == (x1, y1, x2 - x1, y2 - y1)  # the project's (x, y, w, h)
            np.testing.assert_array_equal(gt.mask, arrays["mask"] == m[0])
    assert keys == [(1, 0), (1, 2), (3, 0), (3, 1)]


def test_iteration_options(real_root):
    root, _, _ = real_root
    ds = NocsDataset(root)
    frames = list(ds.iter_frames([3], with_gt=False))
    assert [(f.scene_id, f.im_id) for f, _ in frames] == [(3, 0), (3, 1)]
    assert all(f.category_gt is None for f, _ in frames)
    assert [t.categories for _, t in frames] == [(2, 4), (3, 4)]
    frame, _ = next(ds.iter_frames([1]))
    assert all(g.mask is None for g in frame.category_gt)
    with pytest.raises(DatasetNotFoundError, match="scene 2 not found"):
        list(ds.iter_frames([2]))


def test_info_counts(real_root):
    root, _, _ = real_root
    info = NocsDataset(root).info()
    json.dumps(info)
    assert info["format"] == "nocs" and info["subset"] == "real" and info["split"] == "test"
    assert (info["n_scenes"], info["n_images"], info["n_gt"], info["n_targets"]) == (2, 4, 8, 8)
    assert info["per_class"] == {"bottle": 2, "bowl": 1, "camera": 1, "can": 2, "laptop": 0, "mug": 2}
    assert info["classes"] == ["bottle", "bowl", "camera", "can", "mug"]
    assert info["camera"]["fx"] == 60.0 and info["camera"]["depth_scale"] == 1.0
    assert info["has_gt"] is True


def test_without_gt_json(real_root, caplog):
    root, _, _ = real_root
    default_gt_path(root, "real", "test").unlink()
    ds = NocsDataset(root)
    with caplog.at_level(logging.WARNING, logger="repro.data.nocs"):
        frames = list(ds.iter_frames())
    assert "no NOCS ground truth" in caplog.text
    assert all(f.category_gt is None for f, _ in frames)
    # targets from meta.txt (class != 0), including the invisible laptop of scene 3 image 0
    assert frames[2][1].categories == (2, 4, 5)
    info = ds.info()
    assert info["n_gt"] == 0 and info["has_gt"] is False and info["classes"] == []


def test_root_may_be_parent_of_data(real_root):
    root, _, _ = real_root
    assert NocsDataset(root.parent).root == root


def test_depth_scale_from_camera_json(real_root):
    root, written, _ = real_root
    write_camera_json(root, SMALL_CAMERA, depth_scale=0.1)
    frame, _ = next(NocsDataset(root).iter_frames(with_gt=False))
    np.testing.assert_allclose(frame.depth, written[(1, 0)][0]["depth_mm"] * np.float32(0.1), rtol=1e-6)


# --------------------------------------------------------------------------- CAMERA subset

def test_camera_subset_default_intrinsics_and_depth(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    rects = {1: (10, 10, 100, 120), 2: (200, 300, 260, 400), 3: (300, 10, 400, 90)}
    arrays = _make_image(rng, rects, 480, 640)
    meta = [(1, 3, "02942699", "abc123"), (2, 0, "03001627", "chair9"), (3, 5, "03642806", "lap7")]
    write_nocs_frame(root, "camera", "val", 7, 0, meta=meta, **arrays)
    gts = [CategoryGT(inst_id=i, class_id=c, RT=_random_rt(rng), scales=[0.5, 0.4, 0.3],
                      bbox=nocs_box_to_xywh(rects[i]))
           for i, c in ((1, 3), (3, 5))]
    write_nocs_gt_json(default_gt_path(root, "camera", "val"), [category_gt_entry(7, 0, gts)],
                       subset="camera", split="val")
    assert (root / "camera" / "val" / "00007" / "0000_meta.txt").read_text().splitlines()[1] == \
        "2 0 03001627 chair9"

    ds = NocsDataset(root, subset="camera")
    assert ds.split == "val" and ds.name == "camera25" and ds.scene_ids() == [7]
    assert ds.camera.fx == CAMERA25_CAMERA.fx == 577.5 and ds.camera.cy == 239.5
    frame, targets = next(ds.iter_frames())
    assert targets.categories == (3, 5)
    assert [(g.inst_id, g.model_id) for g in frame.category_gt] == [(1, "02942699/abc123"),
                                                                      (3, "03642806/lap7")]
    np.testing.assert_array_equal(frame.depth, arrays["depth_mm"])

    # composed depth: 3-channel PNG decoded as G * 256 + R (cv2 BGR order), found automatically
    composed = rng.integers(0, 20000, (480, 640)).astype(np.uint16)
    bgr = np.stack([np.zeros_like(composed), composed >> 8, composed & 255], axis=-1).astype(np.uint8)
    full = root / "camera_full_depths" / "val" / "00007"
    full.mkdir(parents=True)
    cv2.imwrite(str(full / "0000_composed.png"), bgr)
    frame, _ = next(NocsDataset(root, subset="camera").iter_frames())
    np.testing.assert_array_equal(frame.depth, composed)
    other = tmp_path / "depths" / "val" / "00007"
    other.mkdir(parents=True)
    cv2.imwrite(str(other / "0000_depth.png"), composed[::-1].copy())
    frame, _ = next(NocsDataset(root, subset="camera", depth_dir=tmp_path / "depths").iter_frames())
    np.testing.assert_array_equal(frame.depth, composed[::-1])


# --------------------------------------------------------------------------- codecs and matching

def test_coord_codec_is_exact_inverse():
    levels = np.arange(256, dtype=np.uint8)
    a, b = np.meshgrid(levels, levels[::-1], indexing="ij")
    stored = np.stack([a, b, np.full((256, 256), 7, np.uint8)], -1)
    np.testing.assert_array_equal(encode_coord(decode_coord(stored)), stored)
    x = np.random.default_rng(2).random((5, 7, 3))
    assert np.abs(decode_coord(encode_coord(x)) - x).max() <= 0.5 / 255 + 1e-6
    assert decode_coord(encode_coord(np.zeros((1, 1, 3))))[0, 0].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        encode_coord(np.full((2, 2, 3), 1.5))


def test_match_rules():
    meta = [MetaEntry(1, 4, "can"), MetaEntry(2, 3, "cam"), MetaEntry(3, 0, "distractor")]
    mask = np.full((20, 20), 255, np.uint8)
    mask[0:5, 0:5], mask[10:20, 10:20], mask[5:6, 5:6] = 1, 2, 3
    assert match_gt_to_instances([4, 3], meta) == [1, 2]
    assert match_gt_to_instances([3, 4], meta, mask, np.array([[10, 10, 20, 20], [0, 0, 5, 6]])) == [2, 1]
    assert match_gt_to_instances([3, 4], meta, mask, np.array([[0, 0, 5, 5], [0, 0, 5, 5]])) == [-1, 1]
    assert match_gt_to_instances([3, 4], meta) == [-1, -1]
    assert match_gt_to_instances([4], meta, np.where(mask == 2, 255, mask)) == [1]


# --------------------------------------------------------------------------- converter

class _Py2Pickler(pickle._Pickler):
    """Writes str/bytes as Python 2 byte strings and numpy globals under their Python 2 names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if self.proto == 0:
            self.write(pickle.STRING + repr(data)[1:].encode("ascii") + b"\n")
        elif len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def _result_dict(rng: np.random.Generator, n: int, with_pred: bool) -> dict:
    d = {
        "image_id": np.int64(rng.integers(100)), "image_path": "data/real/test/scene_1/0000",
        "gt_class_ids": rng.integers(1, 7, n).astype(np.int32),
        "gt_bboxes": rng.integers(0, 400, (n, 4)).astype(np.int32),
        "gt_RTs": np.stack([_random_rt(rng) for _ in range(n)]) if n else np.zeros((0,)),
        "gt_scales": rng.uniform(0.1, 1, (n, 3)).astype(np.float32),
        "gt_handle_visibility": np.ones(n, np.int64),
    }
    if with_pred:
        d.update(pred_class_ids=np.array([1, 2]), pred_scores=np.array([0.9, 0.4], np.float32),
                 pred_RTs=np.stack([_random_rt(rng), _random_rt(rng)]), pred_scales=rng.random((2, 3)),
                 pred_bboxes=np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), pred_masks=np.zeros((4, 4, 2), bool))
    return d


def _check_same(entry: dict, raw: dict) -> None:
    for key, value in raw.items():
        if key.startswith(("gt_", "pred_")) and key != "pred_masks":
            want = np.asarray(value).reshape(entry[key].shape)
            np.testing.assert_array_equal(entry[key], want, err_msg=key)


def test_convert_py3_protocol2_then_read(real_root, tmp_path, caplog):
    root, _, _ = real_root
    rng = np.random.default_rng(3)
    src = tmp_path / "gts" / "real_test"
    src.mkdir(parents=True)
    raws = {}
    for sid, images in LAYOUT.items():
        for im, (meta, rects, _) in images.items():
            raw = _result_dict(rng, 0, with_pred=False) if (sid, im) == (3, 1) else None
            if raw is None:
                visible = [m for m in meta if m[0] in rects]
                raw = _result_dict(rng, len(visible), with_pred=(sid == 1))
                raw["gt_class_ids"] = np.array([m[1] for m in visible], np.int32)
                raw["gt_bboxes"] = np.array([rects[m[0]] for m in visible], np.int32)
            raws[(sid, im)] = raw
            with open(src / f"results_real_test_scene_{sid}_{im:04d}.pkl", "wb") as f:
                pickle.dump(raw, f, protocol=2)
    out = default_gt_path(root, "real", "test")
    with caplog.at_level(logging.INFO, logger="repro.data.nocs"):
        assert convert_nocs_gt_pickles(src, out, subset="real") == out
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "trusted source" in warnings[0].getMessage()
    assert "pred_masks" in caplog.text

    doc = json.loads(out.read_text())
    assert (doc["format"], doc["subset"], doc["split"]) == (GT_FORMAT, "real", "test")
    gt = load_nocs_gt_json(out)
    assert [(e["scene_id"], e["im_id"]) for e in gt.images] == [(1, 0), (1, 2), (3, 0), (3, 1)]
    for entry in gt.images:
        _check_same(entry, raws[(entry["scene_id"], entry["im_id"])])
        assert entry["gt_class_ids"].dtype == np.int32 and entry["gt_RTs"].dtype == np.float64
        assert entry["image_path"] == "data/real/test/scene_1/0000"
    assert "pred_masks" not in gt.images[0] and gt.images[0]["pred_RTs"].shape == (2, 4, 4)
    assert gt.images[3]["gt_RTs"].shape == (0, 4, 4)

    frames = list(NocsDataset(root).iter_frames())
    assert [len(f.category_gt) for f, _ in frames] == [2, 2, 2, 0]
    assert [g.inst_id for g in frames[2][0].category_gt] == [1, 2]
    assert frames[3][1].categories == ()


@pytest.mark.parametrize("protocol", [0, 2])
def test_convert_python2_pickles(tmp_path, protocol):
    rng = np.random.default_rng(4)
    src = tmp_path / "gts" / "val"
    src.mkdir(parents=True)
    raw = _result_dict(rng, 3, with_pred=True)
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=protocol).dump(raw)
    (src / "results_val_00012_0003.pkl").write_bytes(buf.getvalue())
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(buf.getvalue())  # a real py2 pickle: numpy data needs encoding="latin1"
    out = convert_nocs_gt_pickles(src, tmp_path / "camera_val.json", subset="val")
    gt = load_nocs_gt_json(out)
    assert (gt.subset, gt.split) == ("camera", "val")
    (entry,) = gt.images
    assert (entry["scene_id"], entry["im_id"], entry["image_id"]) == (12, 3, int(raw["image_id"]))
    _check_same(entry, raw)


def test_convert_refuses_foreign_globals(tmp_path):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    src = tmp_path / "gts"
    src.mkdir()
    with open(src / "results_real_test_scene_1_0000.pkl", "wb") as f:
        pickle.dump({"gt_class_ids": Evil()}, f, protocol=2)
    with pytest.raises(DataFormatError, match="not allowed"):
        convert_nocs_gt_pickles(src, tmp_path / "out.json", subset="real")
    assert not marker.exists() and not (tmp_path / "out.json").exists()


def test_convert_needs_image_key(tmp_path):
    src = tmp_path / "gts"
    src.mkdir()
    raw = _result_dict(np.random.default_rng(5), 1, with_pred=False)
    raw["image_path"] = "data/real/test/scene_4/0017"
    with open(src / "results_0.pkl", "wb") as f:
        pickle.dump(raw, f, protocol=4)
    gt = load_nocs_gt_json(convert_nocs_gt_pickles(src, tmp_path / "a.json", subset="real_test"))
    assert (gt.images[0]["scene_id"], gt.images[0]["im_id"]) == (4, 17)
    del raw["image_path"]
    with open(src / "results_0.pkl", "wb") as f:
        pickle.dump(raw, f, protocol=4)
    with pytest.raises(DataFormatError, match="cannot tell scene and image"):
        convert_nocs_gt_pickles(src, tmp_path / "b.json", subset="real")
    with pytest.raises(DatasetNotFoundError, match="no results_"):
        convert_nocs_gt_pickles(tmp_path, tmp_path / "c.json", subset="real")


# --------------------------------------------------------------------------- errors

def test_missing_root_and_split(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="NOCS dataset root not found: expected a directory at"):
        NocsDataset(tmp_path / "nope")
    (tmp_path / "real" / "train").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as exc:
        NocsDataset(tmp_path, subset="real", split="test")
    msg = str(exc.value)
    assert f"NOCS real/test split not found: expected a directory at {tmp_path / 'real' / 'test'}" in msg
    assert "repro data synth --kind nocs" in msg
    with pytest.raises(DatasetNotFoundError, match="NOCS camera subset not found"):
        NocsDataset(tmp_path, subset="camera")
    with pytest.raises(DatasetNotFoundError, match="has no scenes: expected scene_N/"):
        NocsDataset(tmp_path, split="train")
    with pytest.raises(ValueError, match="subset"):
        NocsDataset(tmp_path, subset="REAL275")


def test_missing_explicit_gt_path(real_root):
    root, _, _ = real_root
    with pytest.raises(DatasetNotFoundError, match="NOCS ground truth JSON not found"):
        NocsDataset(root, gt_path=root / "missing.json")


def test_malformed_meta(tmp_path, real_root):
    path = tmp_path / "0000_meta.txt"
    path.write_text("1 1 bottle\n2 x mug\n")
    with pytest.raises(DataFormatError, match=r"0000_meta.txt:2: inst_id and class_id must be integers"):
        read_meta(path)
    path.write_text("1 1 bottle\n\n3 2\n")
    with pytest.raises(DataFormatError, match=r":3: expected 'inst_id class_id model_name'"):
        read_meta(path)
    path.write_text("1 9 bottle\n")
    with pytest.raises(DataFormatError, match=r":1: field 'class_id'"):
        read_meta(path)
    root, _, _ = real_root
    meta = nocs_frame_prefix(root, "real", "test", 3, 1).with_name("0001_meta.txt")
    meta.write_text("1 4 can_d_norm extra words here\n")
    with pytest.raises(DataFormatError, match=r"0001_meta\.txt:1"):
        list(NocsDataset(root).iter_frames([3]))


def _write_doc(path: Path, images: list, **top) -> Path:
    path.write_text(json.dumps({"format": GT_FORMAT, **top, "images": images}))
    return path


def test_malformed_gt_json(tmp_path, real_root):
    good = {"scene_id": 1, "im_id": 0, "gt_class_ids": [1], "gt_RTs": [np.eye(4).tolist()],
            "gt_scales": [[1, 1, 1]], "gt_handle_visibility": [1]}
    assert load_nocs_gt_json(_write_doc(tmp_path / "ok.json", [good])).n_gt == 1
    cases = [
        ({"gt_RTs": [np.eye(3).tolist()]}, r"field 'images\[0\].gt_RTs': expected shape Nx4x4, got 1x3x3"),
        ({"gt_class_ids": [9]}, r"field 'images\[0\].gt_class_ids': class ids must be in 1..6"),
        ({"gt_scales": [[1, 1, 1], [1, 1, 1]]}, r"'images\[0\].gt_scales': has 2 entries, expected 1"),
        ({"gt_scales": [["a", 1, 1]]}, r"'images\[0\].gt_scales': expected numbers"),
        ({"gt_RTs": [[[float("nan")] * 4] * 4]}, r"gt_RTs': contains non-finite values"),
        ({"gt_handle_visibility": [2]}, r"gt_handle_visibility': must be 0 or 1"),
        ({"im_id": -1}, r"'images\[0\].im_id': expected a non-negative integer"),
        ({"pred_scores": [0.5]}, r"'images\[0\].pred_class_ids': missing"),
    ]
    for change, pattern in cases:
        with pytest.raises(DataFormatError, match=pattern):
            load_nocs_gt_json(_write_doc(tmp_path / "bad.json", [{**good, **change}]))
    no_scales = {k: v for k, v in good.items() if k != "gt_scales"}
    with pytest.raises(DataFormatError, match=r"'images\[0\].gt_scales': missing"):
        load_nocs_gt_json(_write_doc(tmp_path / "bad.json", [no_scales]))
    with pytest.raises(DataFormatError, match=r"duplicate image scene 1 im 0"):
        load_nocs_gt_json(_write_doc(tmp_path / "bad.json", [good, good]))
    with pytest.raises(DataFormatError, match="field 'format'"):
        load_nocs_gt_json(_write_doc(tmp_path / "bad.json", [good], format="other"))
    (tmp_path / "syntax.json").write_text('{"images": [\n{,]}')
    with pytest.raises(DataFormatError, match=r"syntax.json:2: invalid JSON"):
        load_nocs_gt_json(tmp_path / "syntax.json")
    with pytest.raises(DataFormatError, match="gt_RTs"):
        write_nocs_gt_json(tmp_path / "w.json", [{**good, "gt_RTs": [[1, 2]]}])
    assert not (tmp_path / "w.json").exists()

    root, _, _ = real_root
    _write_doc(default_gt_path(root, "real", "test"), [good], subset="camera", split="val")
    with pytest.raises(DataFormatError, match="field 'subset': ground truth is for subset 'camera'"):
        NocsDataset(root).info()


def test_writer_rejects_bad_input(tmp_path):
    arrays = _make_image(np.random.default_rng(6), {1: (0, 0, 4, 4), 2: (5, 5, 9, 9)})
    with pytest.raises(ValueError, match=r"mask has instance ids without a meta line: \[2\]"):
        write_nocs_frame(tmp_path, "real", "test", 1, 0, meta=[(1, 1, "a")], **arrays)
    with pytest.raises(ValueError, match="whitespace"):
        write_nocs_frame(tmp_path, "real", "test", 1, 0, meta=[(1, 1, "a b"), (2, 1, "c")], **arrays)
    with pytest.raises(ValueError, match="depth_mm"):
        write_nocs_frame(tmp_path, "real", "test", 1, 0, meta=[(1, 1, "a"), (2, 1, "c")],
                         **{**arrays, "depth_mm": arrays["depth_mm"].astype(np.float32)})
    assert not any(tmp_path.rglob("*.png"))


# --------------------------------------------------------------------------- golden evaluation inputs

@pytest.mark.skipif(not GOLDEN.is_file(), reason="golden NOCS data not available")
def test_golden_inputs_load():
    gt = load_nocs_gt_json(GOLDEN, require_ids=False)
    assert len(gt.images) == 40 and gt.n_gt == 140
    counts = np.bincount(np.concatenate([im["gt_class_ids"] for im in gt.images]), minlength=7)
    assert counts[1:].tolist() == [22, 16, 31, 30, 16, 25]
    im = gt.images[0]
    assert im["pred_RTs"].dtype == np.float64 and im["pred_bboxes"].dtype == np.int32
    assert im["note"] == "normal" and len(im["pred_tags"]) == len(im["pred_class_ids"])
    assert sum(len(i["pred_class_ids"]) for i in gt.images) == 189
    with pytest.raises(DataFormatError, match=r"images\[0\].scene_id"):
        load_nocs_gt_json(GOLDEN)
