"""BOP reader and writer: the golden dataset's known counts, round trips, located errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from repro.data import detect_format, open_dataset
from repro.data.bop import BopDataset, BopImage, BopWriter, dumps_bop_json
from repro.data.ply import PlyMesh, load_ply, save_ply
from repro.errors import DataFormatError, DatasetNotFoundError
from repro.types import CameraIntrinsics, ContinuousSymmetry, GTInstance, InstanceTarget, ObjectModel, Targets


def test_goldtoy_info_matches_readme(goldtoy_dataset):
    info = goldtoy_dataset.info()
    assert info["format"] == "bop"
    assert (info["n_scenes"], info["n_images"], info["n_gt"]) == (2, 9, 64)
    assert (info["n_targets"], info["n_target_instances"]) == (44, 56)
    assert info["obj_ids"] == [1, 2, 3, 4, 6, 9]
    assert info["scene_ids"] == [1, 3]


def test_goldtoy_frames_carry_gt_targets_and_visibility(goldtoy, goldtoy_dataset):
    frames = list(goldtoy_dataset.iter_frames(load_masks=True))
    assert [(f.scene_id, f.im_id) for f, _ in frames] == [(1, i) for i in range(5)] + [(3, i) for i in range(4)]
    for frame, targets in frames:
        d = goldtoy / "test" / f"{frame.scene_id:06d}"
        gt = json.loads((d / "scene_gt.json").read_text())[str(frame.im_id)]
        info = json.loads((d / "scene_gt_info.json").read_text())[str(frame.im_id)]
        cam = json.loads((d / "scene_camera.json").read_text())[str(frame.im_id)]
        np.testing.assert_array_equal(frame.K, np.reshape(cam["cam_K"], (3, 3)))
        assert frame.rgb.shape == (480, 640, 3) and frame.depth.shape == (480, 640)
        assert len(frame.gt) == len(gt)
        for g, ref, ri in zip(frame.gt, gt, info, strict=True):
            assert g.obj_id == ref["obj_id"]
            np.testing.assert_array_equal(g.R.ravel(), ref["cam_R_m2c"])
            np.testing.assert_array_equal(g.t, ref["cam_t_m2c"])
            assert g.visib_fract == ri["visib_fract"]
            assert g.mask.shape == (480, 640) and g.mask_visib.sum() == ri["px_count_visib"]
        if (frame.scene_id, frame.im_id) == (3, 2):
            assert targets == Targets()
        else:
            assert targets.instances
    assert sum(t.n_instances for _, t in frames) == 56
    only = list(goldtoy_dataset.iter_frames(with_gt=False, only_targets=True))
    assert len(only) == 8 and all(f.gt is None for f, _ in only)


def test_goldtoy_depth_is_scaled_to_mm(goldtoy, goldtoy_dataset):
    import cv2

    frame = goldtoy_dataset.load_frame(1, 0)
    raw = cv2.imread(str(goldtoy / "test/000001/depth/000000.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(frame.depth, raw * 0.1, rtol=1e-6)
    assert frame.depth.dtype == np.float32


def test_goldtoy_objects_and_symmetries(goldtoy_dataset):
    objs = goldtoy_dataset.objects()
    assert sorted(objs) == [1, 2, 3, 4, 6, 9]
    assert objs[1].vertices.shape == (745, 3) and objs[1].faces.shape == (1536, 3)
    assert objs[2].diameter == pytest.approx(115.67632417690321, abs=0)
    assert len(objs[2].symmetries_discrete) == 1 and len(objs[2].symmetries_continuous) == 1
    np.testing.assert_array_equal(objs[6].symmetries_continuous[0].offset, [4, -2, 0])
    np.testing.assert_array_equal(objs[9].symmetries_discrete[0][:3, 3], [6, 0, 0])
    assert not objs[1].is_symmetric and objs[3].is_symmetric
    assert objs[1].colors is not None and objs[1].normals is not None
    assert len({o.content_hash for o in objs.values()}) == 6


def test_detect_and_open(goldtoy):
    assert detect_format(goldtoy) == "bop"
    assert isinstance(open_dataset(goldtoy), BopDataset)


def _toy_model(obj_id: int) -> ObjectModel:
    v = np.array([[-10, -10, -10], [10, -10, -10], [10, 10, -10], [-10, 10, -10],
                  [-10, -10, 10], [10, -10, 10], [10, 10, 10], [-10, 10, 10]], float) * obj_id
    f = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                  [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])
    return ObjectModel(obj_id=obj_id, vertices=v, faces=f, diameter=float(np.linalg.norm(v[6] - v[0])),
                       colors=np.full((8, 3), 0.5), normals=v / np.linalg.norm(v, axis=1, keepdims=True),
                       symmetries_continuous=(ContinuousSymmetry(axis=[0, 0, 1], offset=[0, 0, 0]),) if obj_id == 2
                       else ())


def _write_toy(root: Path, rng: np.random.Generator) -> dict:
    K = np.array([[500.0, 0, 80], [0, 500.0, 60], [0, 0, 1]])
    w = BopWriter(root)
    models = [_toy_model(1), _toy_model(2)]
    w.write_models(models)
    w.write_camera(CameraIntrinsics(K, 160, 120), depth_scale=0.1)
    images, targets = {}, {}
    for scene_id in (0, 7):
        recs = []
        for im_id in range(3):
            rgb = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
            depth = np.round(rng.uniform(300, 900, (120, 160)), 1)
            gts = [GTInstance(gt_id=i, obj_id=o, R=np.eye(3), t=[i * 10.0, 0, 500]) for i, o in enumerate((1, 2, 2))]
            masks = [rng.random((120, 160)) > 0.5 for _ in gts]
            info = [{"visib_fract": 0.5 + 0.1 * i, "px_count_visib": int(m.sum())} for i, m in enumerate(masks)]
            recs.append(BopImage(im_id=im_id, rgb=rgb, K=K, gt=gts, depth_mm=depth, masks=masks,
                                 masks_visib=masks, gt_info=info))
            images[(scene_id, im_id)] = recs[-1]
            targets[(scene_id, im_id)] = Targets((InstanceTarget(1, 1), InstanceTarget(2, 2)))
        w.write_scene("test", scene_id, recs)
    w.write_targets(targets)
    return {"images": images, "models": models, "targets": targets}


def test_writer_reader_round_trip(tmp_path):
    written = _write_toy(tmp_path / "toy", np.random.default_rng(0))
    ds = BopDataset(tmp_path / "toy")
    assert ds.info()["n_images"] == 6 and ds.info()["n_target_instances"] == 18
    for frame, targets in ds.iter_frames(load_masks=True):
        ref = written["images"][(frame.scene_id, frame.im_id)]
        np.testing.assert_array_equal(frame.rgb, ref.rgb)
        np.testing.assert_allclose(frame.depth, ref.depth_mm, atol=1e-3)
        np.testing.assert_array_equal(frame.K, ref.K)
        assert targets == written["targets"][frame.key]
        for g, r, m in zip(frame.gt, ref.gt, ref.masks, strict=True):
            assert g.obj_id == r.obj_id
            np.testing.assert_array_equal(g.t, r.t)
            np.testing.assert_array_equal(g.mask_visib, m)
    for m in written["models"]:
        got = ds.objects()[m.obj_id]
        np.testing.assert_allclose(got.vertices, m.vertices, rtol=1e-6)
        np.testing.assert_array_equal(got.faces, m.faces)
        assert got.diameter == m.diameter
        assert len(got.symmetries_continuous) == len(m.symmetries_continuous)


def test_ply_round_trip_ascii_and_binary(tmp_path, goldtoy):
    ref = load_ply(goldtoy / "models" / "obj_000009.ply")
    for binary in (True, False):
        p = save_ply(tmp_path / f"m{binary}.ply", ref, binary=binary)
        got = load_ply(p)
        np.testing.assert_array_equal(got.vertices, ref.vertices)
        np.testing.assert_array_equal(got.faces, ref.faces)
        np.testing.assert_allclose(got.normals, ref.normals, atol=1e-6)
        np.testing.assert_array_equal(got.colors, ref.colors)
    uv = PlyMesh(ref.vertices, ref.faces, uv=np.zeros((len(ref.vertices), 2)), texture_file="tex.png")
    assert load_ply(save_ply(tmp_path / "uv.ply", uv)).texture_file == "tex.png"


@pytest.mark.parametrize("content, where", [
    (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n", "end_header"),
    (b"plx\n", "magic"),
    (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
     b"end_header\n1 2 3\n", "expected 2 lines"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
     b"property float z\nend_header\n\x00\x00", "truncated"),
])
def test_ply_errors(tmp_path, content, where):
    p = tmp_path / "bad.ply"
    p.write_bytes(content)
    with pytest.raises(DataFormatError, match=where) as exc:
        load_ply(p)
    assert "bad.ply" in str(exc.value)


@pytest.fixture
def toy_copy(goldtoy, tmp_path) -> Path:
    dst = tmp_path / "goldtoy"
    shutil.copytree(goldtoy, dst)
    return dst


def test_missing_root_and_split_messages(tmp_path, goldtoy):
    with pytest.raises(DatasetNotFoundError, match="expected a directory at"):
        BopDataset(tmp_path / "nope")
    with pytest.raises(DatasetNotFoundError, match="splits present: test"):
        BopDataset(goldtoy, split="test_primesense")
    empty = tmp_path / "empty"
    (empty / "test").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"models_info\.json"):
        BopDataset(empty).objects()
    with pytest.raises(DatasetNotFoundError, match="neither a BOP"):
        open_dataset(empty / "test")


def test_bad_scene_gt_field_is_located(toy_copy):
    p = toy_copy / "test/000001/scene_gt.json"
    data = json.loads(p.read_text())
    data["2"][1]["cam_R_m2c"] = [1, 0, 0]
    p.write_text(dumps_bop_json(data))
    ds = BopDataset(toy_copy)
    with pytest.raises(DataFormatError, match=r"scene_gt\.json: field '2\[1\]\.cam_R_m2c'"):
        list(ds.iter_frames())


def test_json_syntax_error_names_line(toy_copy):
    p = toy_copy / "test/000003/scene_camera.json"
    lines = p.read_text().splitlines()
    lines[2] = lines[2].replace(":", "", 1)
    p.write_text("\n".join(lines))
    with pytest.raises(DataFormatError, match=r"scene_camera\.json:3: invalid JSON"):
        BopDataset(toy_copy).scene(3)


def test_models_info_errors(toy_copy):
    p = toy_copy / "models" / "models_info.json"
    info = json.loads(p.read_text())
    info["3"]["diameter"] = -1
    p.write_text(json.dumps(info))
    with pytest.raises(DataFormatError, match=r"field '3\.diameter'"):
        BopDataset(toy_copy).objects()
    info["3"]["diameter"] = 10.0
    info["2"]["symmetries_discrete"] = [[1, 0, 0]]
    p.write_text(json.dumps(info))
    with pytest.raises(DataFormatError, match=r"field '2\.symmetries_discrete\[0\]'"):
        BopDataset(toy_copy).objects()


def test_gt_info_length_mismatch(toy_copy):
    p = toy_copy / "test/000001/scene_gt_info.json"
    info = json.loads(p.read_text())
    info["0"].pop()
    p.write_text(json.dumps(info))
    with pytest.raises(DataFormatError, match=r"scene_gt_info\.json: field '0'"):
        BopDataset(toy_copy).scene(1)


def test_bad_targets_entry(toy_copy):
    p = toy_copy / "test_targets_bop19.json"
    t = json.loads(p.read_text())
    del t[5]["im_id"]
    p.write_text(json.dumps(t))
    with pytest.raises(DataFormatError, match=r"field '\[5\]'"):
        BopDataset(toy_copy).info()


def test_bop24_targets_and_sensor_suffix(toy_copy):
    (toy_copy / "test_targets_bop19.json").unlink()
    (toy_copy / "test_targets_bop24.json").write_text(json.dumps([{"scene_id": 1, "im_id": 0}]))
    ds = BopDataset(toy_copy)
    assert ds.targets_for(1, 0).any_object and ds.targets_for(1, 1) == Targets()
    scene = toy_copy / "test/000003"
    for name in ("scene_camera", "scene_gt", "scene_gt_info"):
        (scene / f"{name}.json").rename(scene / f"{name}_cam1.json")
    for name in ("rgb", "depth", "mask", "mask_visib"):
        (scene / name).rename(scene / f"{name}_cam1")
    shutil.rmtree(toy_copy / "test/000001")
    frames = list(BopDataset(toy_copy, sensor="cam1", targets=None).iter_frames(load_masks=True))
    assert len(frames) == 4 and all(f.gt and f.gt[0].mask is not None for f, _ in frames)


def test_gray_images_become_rgb(toy_copy):
    import cv2

    scene = toy_copy / "test/000001"
    (scene / "gray").mkdir()
    for p in sorted((scene / "rgb").glob("*.png")):
        cv2.imwrite(str(scene / "gray" / p.name), cv2.imread(str(p), cv2.IMREAD_GRAYSCALE))
    shutil.rmtree(scene / "rgb")
    frame = BopDataset(toy_copy).load_frame(1, 2)
    assert frame.rgb.shape == (480, 640, 3)
    np.testing.assert_array_equal(frame.rgb[..., 0], frame.rgb[..., 2])


def test_textured_model_round_trip(tmp_path):
    base = _toy_model(1)
    rng = np.random.default_rng(2)
    tex = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
    uv = rng.random((len(base.vertices), 2))
    model = ObjectModel(obj_id=1, vertices=base.vertices, faces=base.faces, diameter=base.diameter, uv=uv, texture=tex)
    BopWriter(tmp_path).write_models([model])
    (tmp_path / "test" / "000000").mkdir(parents=True)
    got = BopDataset(tmp_path).objects()[1]
    np.testing.assert_array_equal(got.texture, tex)
    np.testing.assert_allclose(got.uv, uv, atol=1e-6)


def test_image_size_comes_from_the_images(toy_copy):
    import cv2

    scene = toy_copy / "test/000003"
    for p in sorted((scene / "rgb").glob("*.png")):
        cv2.imwrite(str(p), cv2.resize(cv2.imread(str(p)), (320, 240)))
    for p in sorted((scene / "depth").glob("*.png")):
        cv2.imwrite(str(p), cv2.resize(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), (320, 240)))
    ds = BopDataset(toy_copy)
    assert (ds.load_frame(3, 1).camera.width, ds.load_frame(1, 0).camera.width) == (320, 640)


def test_coco_gt_matches_bop_toolkit_layout(goldtoy, goldtoy_dataset, tmp_path):
    """Re-writing the golden scene with BopWriter gives the annotations calc_gt_coco.py wrote."""
    images = []
    for frame, _ in goldtoy_dataset.iter_frames([1], load_masks=True):
        info = json.loads((goldtoy / "test/000001/scene_gt_info.json").read_text())[str(frame.im_id)]
        images.append(BopImage(im_id=frame.im_id, rgb=frame.rgb, K=frame.K, gt=frame.gt,
                               masks_visib=[g.mask_visib for g in frame.gt], gt_info=info))
    w = BopWriter(tmp_path / "toy")
    w.obj_ids = [1, 2, 3, 4, 6, 9]
    d = w.write_scene("test", 1, images)
    for name in ("scene_gt_coco.json", "scene_gt_coco_modal.json"):
        ref = json.loads((goldtoy / "test/000001" / name).read_text())
        got = json.loads((d / name).read_text())
        assert [c["id"] for c in got["categories"]] == [c["id"] for c in ref["categories"]]
        assert len(got["annotations"]) == len(ref["annotations"])
        for a, b in zip(got["annotations"], ref["annotations"], strict=True):
            for key in ("id", "image_id", "category_id", "area", "bbox", "ignore", "iscrowd", "segmentation"):
                assert a[key] == b[key], (name, key)


def test_video_flag_auto_detects_the_sequence_sidecar_or_is_declared(toy_copy):
    from repro.data.bop import SEQUENCE_SIDECAR

    assert all(not f.video for f, _ in BopDataset(toy_copy).iter_frames(with_gt=False))
    declared = BopDataset(toy_copy, video=True)
    assert all(f.video for f, _ in declared.iter_frames(with_gt=False))
    (toy_copy / "test" / "000003" / SEQUENCE_SIDECAR).write_text("{}")
    auto = BopDataset(toy_copy)
    assert {f.scene_id: f.video for f, _ in auto.iter_frames(with_gt=False)} == {1: False, 3: True}
    assert auto.is_video(3) and not auto.is_video(1)
    assert not any(f.video for f, _ in BopDataset(toy_copy, video=False).iter_frames(with_gt=False))
