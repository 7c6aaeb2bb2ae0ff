"""The synthetic NOCS-layout dataset: readable by NocsDataset, geometrically consistent, deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from repro.data.nocs import NocsDataset, mask_bbox, nocs_box_to_xywh, read_camera_json
from repro.data.synth.nocs_synth import (
    CLASS_IDS,
    SYMMETRIC_CLASSES,
    NocsSynthConfig,
    PlacedObject,
    generate_nocs_dataset,
    make_category_mesh,
    render_nocs_view,
)
from repro.types import NOCS_CLASSES

SMOKE_FRAMES = 3



@pytest.fixture(scope="session")
def smoke(tmp_path_factory, renderer) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("nocs_synth") / "smoke"
    summary = generate_nocs_dataset(root, preset="smoke", seed=0, renderer=renderer)
    return root, summary


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _load_obj(path: Path) -> np.ndarray:
    return np.array([[float(w) for w in line.split()[1:4]] for line in path.read_text().splitlines()
                     if line.startswith("v ")])


def test_dataset_reader_loads_both_splits(smoke):
    root, summary = smoke
    for split in ("test", "train"):
        ds = NocsDataset(root, "real", split)
        info = ds.info()
        want = summary["splits"][f"real/{split}"]
        assert info["n_scenes"] == want["n_scenes"] == 1
        assert info["n_images"] == info["n_images_with_gt"] == SMOKE_FRAMES
        assert info["n_gt"] == want["n_gt"] > 0
        assert info["per_class"] == want["per_class"]
        assert set(info["classes"]) == set(NOCS_CLASSES)
        assert info["camera"]["fx"] == pytest.approx(591.0125) and info["camera"]["width"] == 640
        frames = list(ds.iter_frames(load_masks=True))
        assert [f.im_id for f, _ in frames] == list(range(SMOKE_FRAMES))
        for frame, targets in frames:
            assert frame.rgb.shape == (480, 640, 3) and frame.depth is not None
            assert frame.category_gt is not None and len(frame.category_gt) > 0
            assert set(targets.categories) == {g.class_id for g in frame.category_gt}
            mask = ds.load_mask(frame.scene_id, frame.im_id)
            meta = {m.inst_id: m for m in ds.load_meta(frame.scene_id, frame.im_id)}
            assert {g.inst_id for g in frame.category_gt} == set(np.unique(mask).tolist()) - {255}
            for g in frame.category_gt:
                assert meta[g.inst_id].class_id == g.class_id and g.model_id == meta[g.inst_id].model_id
                assert g.mask is not None and g.mask.any()
                assert tuple(g.bbox) == nocs_box_to_xywh(mask_bbox(g.mask))
                assert np.linalg.norm(g.scales) == pytest.approx(1.0)
                if g.class_id != CLASS_IDS["mug"]:
                    assert g.handle_visible
    assert (root / "README.md").read_text().count("synthetic") >= 1
    camera, depth_scale = read_camera_json(root / "camera.json")
    assert depth_scale == 1.0 and camera.cy == pytest.approx(244.11084)


def test_nocs_map_agrees_with_depth(smoke):
    """camera point = s R (nocs - 0.5) + t must match the back-projected depth at every mask pixel."""
    root, _ = smoke
    ds = NocsDataset(root, "real", "test")
    Kinv = np.linalg.inv(ds.camera.K)
    n_checked = 0
    for frame, _ in ds.iter_frames():
        coord = ds.load_coord(frame.scene_id, frame.im_id)
        mask = ds.load_mask(frame.scene_id, frame.im_id)
        for g in frame.category_gt:
            v, u = np.nonzero((mask == g.inst_id) & (frame.depth > 0))
            if len(u) < 50:
                continue
            z = frame.depth[v, u].astype(np.float64) / 1000.0
            observed = (np.column_stack([u, v, np.ones_like(u)]) @ Kinv.T) * z[:, None]
            predicted = (coord[v, u].astype(np.float64) - 0.5) @ g.RT[:3, :3].T + g.RT[:3, 3]
            err = np.linalg.norm(observed - predicted, axis=1)
            s = np.cbrt(np.linalg.det(g.RT[:3, :3]))
            assert err.mean() < 0.003, (g.class_id, err.mean())
            assert np.median(err) < s / 255 + 0.001
            n_checked += 1
    assert n_checked >= 10


def test_scales_match_the_meshes(smoke):
    root, _ = smoke
    for split in ("test", "train"):
        folder = root / "obj_models" / f"real_{split}"
        info = json.loads((folder / "models_info.json").read_text())
        gt = json.loads((root / "gts_json" / f"real_{split}.json").read_text())
        ds = NocsDataset(root, "real", split)
        for name, m in info.items():
            v = _load_obj(folder / f"{name}.obj")
            ext = v.max(axis=0) - v.min(axis=0)
            np.testing.assert_allclose(ext, m["scales"], atol=2e-6)
            np.testing.assert_allclose(ext * m["diagonal_m"], m["size_m"], atol=1e-5)
            np.testing.assert_allclose(0.5 * (v.max(axis=0) + v.min(axis=0)), 0.0, atol=2e-6)
        for im in gt["images"]:
            meta = {e.inst_id: e for e in ds.load_meta(im["scene_id"], im["im_id"])}
            for inst, RT, scales in zip(im["gt_inst_ids"], im["gt_RTs"], im["gt_scales"], strict=True):
                m = info[meta[inst].model_id]
                np.testing.assert_allclose(scales, m["scales"], atol=1e-12)
                assert np.cbrt(np.linalg.det(np.array(RT)[:3, :3])) == pytest.approx(m["diagonal_m"])


@pytest.mark.parametrize("cls", sorted(SYMMETRIC_CLASSES | {"mug"}))
def test_symmetry_axis_is_y(cls):
    for seed in range(3):
        obj = make_category_mesh(cls, np.random.default_rng(seed))
        faces = obj.mesh.faces[~obj.handle_faces]
        v = obj.mesh.vertices[np.unique(faces)]
        axis_x = 0.5 * (v[:, 0].max() + v[:, 0].min())
        if cls != "mug":
            assert axis_x == pytest.approx(0.0, abs=1e-9)
        else:
            assert axis_x < -0.005  # the bbox centre moves towards the handle (+x)
            hv = obj.mesh.vertices[np.unique(obj.mesh.faces[obj.handle_faces])]
            assert hv[:, 0].min() > axis_x and hv[:, 0].max() == pytest.approx(obj.mesh.bounds[1][0])
        centre = np.array([axis_x, 0.0, 0.0])
        tree = cKDTree(v)
        for k in (1, 5, 12, 31):  # revolved with 48 segments: invariant under these turns about y
            c, s = np.cos(2 * np.pi * k / 48), np.sin(2 * np.pi * k / 48)
            Ry = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
            assert tree.query((v - centre) @ Ry.T + centre)[0].max() < 1e-9


def test_category_sizes_are_real_scale_and_vary():
    heights = {"bottle": (0.15, 0.30)}
    for cls in NOCS_CLASSES:
        objs = [make_category_mesh(cls, np.random.default_rng(seed)) for seed in range(6)]
        sizes = np.array([o.size for o in objs])
        assert np.all(sizes > 0.005) and np.all(sizes < 0.6), cls
        assert np.ptp(sizes, axis=0).max() > 0.01, f"{cls}: no size variation"
        assert np.ptp([o.scales for o in objs], axis=0).max() > 0.01, f"{cls}: no shape variation"
        lo, hi = heights.get(cls, (0.0, 1.0))
        assert np.all((sizes[:, 1] >= lo - 1e-9) & (sizes[:, 1] <= hi + 1e-9)), cls


def test_intra_class_variation_in_dataset(smoke):
    root, _ = smoke
    sizes: dict[int, list] = {}
    for split in ("test", "train"):
        info = json.loads((root / "obj_models" / f"real_{split}" / "models_info.json").read_text())
        for m in info.values():
            sizes.setdefault(m["class_id"], []).append(m["size_m"])
    assert set(sizes) == set(CLASS_IDS.values())
    for cid, s in sizes.items():
        assert len(s) >= 2 and np.ptp(np.array(s), axis=0).max() > 0.005, cid


def _mug_view(renderer, handle_dir_cam: np.ndarray):
    """One mug 0.5 m in front of a level camera, its handle (+x) turned to ``handle_dir_cam``."""
    from repro.data.nocs import REAL275_CAMERA

    mug = make_category_mesh("mug", np.random.default_rng(7))
    y = np.array([0.0, -1.0, 0.0])  # canonical up -> image up
    x = handle_dir_cam / np.linalg.norm(handle_dir_cam)
    R = np.column_stack([x, y, np.cross(x, y)])
    view = render_nocs_view(renderer, REAL275_CAMERA, [PlacedObject(1, mug, R, np.array([0.0, 0.0, 0.5]))])
    return view, mug


def test_mug_handle_visibility(renderer):
    away, mug = _mug_view(renderer, np.array([0.0, 0.0, 1.0]))
    assert away.gt[0]["handle_visibility"] == 0
    assert away.handle_pixels[1][0] == 0 and away.handle_pixels[1][1] > 100
    for direction in ([1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]):
        view, _ = _mug_view(renderer, np.array(direction))
        assert view.gt[0]["handle_visibility"] == 1, direction
    RT = away.gt[0]["RT"]
    assert np.cbrt(np.linalg.det(RT[:3, :3])) == pytest.approx(mug.diagonal)
    np.testing.assert_allclose(away.gt[0]["scales"], mug.scales)


def test_sequences_move_smoothly(smoke):
    root, _ = smoke
    gt = json.loads((root / "gts_json" / "real_test.json").read_text())
    by_frame = {im["im_id"]: dict(zip(im["gt_inst_ids"], im["gt_RTs"], strict=True)) for im in gt["images"]}
    for a, b in zip(range(SMOKE_FRAMES - 1), range(1, SMOKE_FRAMES), strict=True):
        common = set(by_frame[a]) & set(by_frame[b])
        assert common
        for inst in common:
            RTa, RTb = np.array(by_frame[a][inst]), np.array(by_frame[b][inst])
            s = np.cbrt(np.linalg.det(RTa[:3, :3]))
            Ra, Rb = RTa[:3, :3] / s, RTb[:3, :3] / s
            angle = np.degrees(np.arccos(np.clip((np.trace(Ra.T @ Rb) - 1) / 2, -1, 1)))
            assert 0.5 < angle < 70.0
            assert np.linalg.norm(RTa[:3, 3] - RTb[:3, 3]) < 1.0


def test_deterministic_for_a_seed(smoke, renderer, tmp_path):
    root, _ = smoke
    again = tmp_path / "again"
    generate_nocs_dataset(again, preset="smoke", seed=0, renderer=renderer)
    assert _tree_hash(again) == _tree_hash(root)
    other = tmp_path / "other"
    generate_nocs_dataset(other, preset="smoke", seed=1, renderer=renderer)
    assert _tree_hash(other) != _tree_hash(root)
    generate_nocs_dataset(again, preset="smoke", seed=0, renderer=renderer)  # regenerating in place works
    assert _tree_hash(again) == _tree_hash(root)


def test_custom_config_and_bad_inputs(renderer, tmp_path):
    cfg = NocsSynthConfig(name="tiny", test_scenes=1, train_scenes=0, frames_per_scene=1, width=320, height=240,
                          write_models=False)
    summary = generate_nocs_dataset(tmp_path / "tiny", preset=cfg, seed=3, renderer=renderer)
    assert summary["n_images"] == 1 and list(summary["splits"]) == ["real/test"]
    ds = NocsDataset(tmp_path / "tiny", "real", "test")
    assert ds.camera.width == 320 and ds.camera.fx == pytest.approx(591.0125 / 2)
    assert next(ds.iter_frames())[0].rgb.shape == (240, 320, 3)
    with pytest.raises(ValueError, match="preset"):
        generate_nocs_dataset(tmp_path / "x", preset="huge")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_nocs_dataset(foreign, preset="smoke", renderer=renderer)
    with pytest.raises(ValueError, match="category"):
        make_category_mesh("chair", np.random.default_rng(0))
