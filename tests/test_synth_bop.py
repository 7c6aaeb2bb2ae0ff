"""The synthetic BOP dataset: it loads with the BOP reader, its annotations follow bop_toolkit's
rules, its symmetries hold, it is deterministic, and the video and onboarding extras are coherent.

One ``smoke`` dataset is generated per session (a few seconds) and shared by the tests.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("EGL_PLATFORM", "surfaceless")

from repro.data.bop import BopDataset
from repro.data.synth import shapes as S
from repro.data.synth.bop_synth import (
    OBJECT_LIBRARY,
    OCCLUDER_MASK_DIR,
    SEQUENCE_SIDECAR,
    STATIC_DIR,
    VIDEO_TARGETS,
    build_object,
    generate_bop_dataset,
    verify_symmetries,
)
from repro.data.synth.presets import PRESETS, get_preset
from repro.fileio import read_image, read_json
from repro.render.scene import BOP_SAMPLE_OFFSET
from repro.render.verify import compute_gt_info, verify_dataset
from repro.types import CameraIntrinsics

SPLITS = ("test", "train_pbr", "video", "onboarding")



@pytest.fixture(scope="session")
def smoke(tmp_path_factory, renderer) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth_a") / "ds"
    summary = generate_bop_dataset(root, "smoke", seed=0, renderer=renderer, progress=False)
    return root, summary


@pytest.fixture(scope="session")
def root(smoke) -> Path:
    return smoke[0]


def _dataset(root: Path, split: str) -> BopDataset:
    targets = {"test": "auto", "video": VIDEO_TARGETS}.get(split)
    return BopDataset(root, split=split, targets=targets)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- loading


def test_summary_and_reader_agree(smoke):
    root, summary = smoke
    cfg = PRESETS["smoke"]
    assert summary["obj_ids"] == list(range(1, len(cfg.objects) + 1))
    for split in ("test", "train_pbr", "video"):
        info = _dataset(root, split).info()
        want = summary["splits"][split]
        assert (info["n_scenes"], info["n_images"], info["n_gt"]) == (want["n_scenes"], want["n_images"],
                                                                       want["n_gt"])
        assert info["obj_ids"] == summary["obj_ids"]
    test = _dataset(root, "test").info()
    assert test["targets_file"] == "test_targets_bop19.json"
    assert test["n_targets"] == summary["splits"]["test"]["n_targets"]
    assert test["n_images"] == cfg.test.n_scenes * cfg.test.n_images


@pytest.mark.parametrize("split", SPLITS)
def test_every_frame_loads_with_masks(root, split):
    ds = _dataset(root, split)
    n = 0
    for frame, targets in ds.iter_frames(load_masks=True):
        n += 1
        assert frame.rgb.dtype == np.uint8 and frame.depth is not None
        assert frame.rgb.shape[:2] == frame.depth.shape
        assert frame.gt, "every synthetic image has annotated objects"
        for g in frame.gt:
            assert g.mask is not None and g.mask_visib is not None
            assert g.mask.shape == frame.depth.shape
            assert not np.any(g.mask_visib & ~g.mask), "visible mask must lie inside the full mask"
            assert np.isclose(np.linalg.det(g.R), 1.0) and np.allclose(g.R @ g.R.T, np.eye(3), atol=1e-9)
        if split == "test":
            assert targets.instances
    assert n == len(ds.image_keys()) > 0


def test_objects_load_and_match_the_library(root):
    ds = _dataset(root, "test")
    cfg = PRESETS["smoke"]
    objects = ds.objects()
    assert sorted(objects) == list(range(1, len(cfg.objects) + 1))
    for obj_id, key in enumerate(cfg.objects, start=1):
        m = objects[obj_id]
        built, spec = build_object(key, obj_id, cfg.texture_max_edge)
        np.testing.assert_array_equal(m.vertices, built.vertices)  # PLY round trip is exact
        np.testing.assert_array_equal(m.faces, built.faces)
        np.testing.assert_array_equal(m.colors, built.colors)
        info = ds.models_info[obj_id]
        assert info["name"] == spec.name and info["description"] == spec.description and info["key"] == key
        lo, size = m.vertices.min(axis=0), m.vertices.max(axis=0) - m.vertices.min(axis=0)
        for i, ax in enumerate("xyz"):
            assert info[f"min_{ax}"] == pytest.approx(lo[i], abs=1e-9)
            assert info[f"size_{ax}"] == pytest.approx(size[i], abs=1e-9)
    eval_info = read_json(root / "models_eval" / "models_info.json")
    assert eval_info == read_json(root / "models" / "models_info.json")
    assert sorted(p.name for p in (root / "models_eval").glob("*.ply")) == [
        f"obj_{i:06d}.ply" for i in range(1, len(cfg.objects) + 1)]


def test_diameter_is_the_largest_vertex_distance(root):
    for m in _dataset(root, "test").objects().values():
        v = np.unique(m.vertices, axis=0)
        best = max(float(np.linalg.norm(v[i:i + 512, None] - v[None], axis=-1).max()) for i in range(0, len(v), 512))
        assert m.diameter == pytest.approx(best, abs=1e-9)


# --------------------------------------------------------------------------- BOP annotation rules


@pytest.mark.parametrize("split", SPLITS)
def test_gt_info_matches_written_masks(root, split):
    ds = _dataset(root, split)
    W, H = None, None
    for scene_id, im_id in ds.image_keys():
        frame = ds.load_frame(scene_id, im_id, load_masks=True)
        H, W = frame.depth.shape
        infos = ds.scene(scene_id).gt_info[im_id]
        for g, info in zip(frame.gt, infos, strict=True):
            assert info["px_count_visib"] == int(g.mask_visib.sum())
            assert info["px_count_valid"] == int((frame.depth[g.mask] > 0).sum())
            if info["px_count_all"] > 0:
                assert info["visib_fract"] == pytest.approx(info["px_count_visib"] / info["px_count_all"], abs=1e-9)
            else:
                assert info["visib_fract"] == 0.0
            assert info["px_count_all"] >= int(g.mask.sum())
            assert np.all(frame.depth[g.mask_visib] > 0), "stored depth must be valid at visible GT pixels"
            if info["px_count_visib"] == 0:
                assert info["bbox_obj"] == [-1, -1, -1, -1] and info["bbox_visib"] == [-1, -1, -1, -1]
                continue
            ys, xs = np.nonzero(g.mask_visib)
            assert info["bbox_visib"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
            x, y, w, h = info["bbox_obj"]
            if x >= 0 and y >= 0 and x + w < W and y + h < H:  # not truncated
                assert info["px_count_all"] == int(g.mask.sum())
                ys, xs = np.nonzero(g.mask)
                assert [x, y, w, h] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]


def test_gt_info_recomputed_from_files(root, renderer):
    """Re-render every GT of the first test image from the PLY models and the stored depth: the
    stored masks and scene_gt_info come out again, exactly."""
    ds = _dataset(root, "test")
    objects = ds.objects()
    scene_id, im_id = ds.image_keys()[0]
    frame = ds.load_frame(scene_id, im_id, load_masks=True)
    anns = compute_gt_info(renderer, frame.camera, frame.depth.astype(np.float64),
                           [(objects[g.obj_id], g.R, g.t) for g in frame.gt])
    assert [a.info for a in anns] == ds.scene(scene_id).gt_info[im_id]
    for g, a in zip(frame.gt, anns, strict=True):
        np.testing.assert_array_equal(g.mask, a.mask)
        np.testing.assert_array_equal(g.mask_visib, a.mask_visib)


@pytest.mark.parametrize("split", SPLITS)
def test_verify_reproduces_stored_annotations(root, renderer, split):
    """Everything is rendered with bop_toolkit's pixel sampling (BOP_SAMPLE_OFFSET), so
    ``repro data verify`` reproduces the stored depth, masks and visib_fract as for real BOP data."""
    summary = verify_dataset(root, split=split, renderer=renderer)
    assert summary["sample_offset"] == BOP_SAMPLE_OFFSET
    assert summary["n_gt"] > 0 and summary["n_masks_compared"] > 0
    assert summary["depth_within_1mm"] >= 0.999
    assert summary["mask_iou_min"] >= 0.99
    assert summary["visib_fract_max_abs_diff"] <= 1e-9


def test_visibility_rule_on_a_constructed_occlusion(renderer):
    """bop19 visibility: a pixel is visible when the object is at most delta behind the scene
    surface, or the scene has no depth there; pixels hidden by a nearer occluder are not."""
    model, _ = build_object("block", 1, 10.0)
    cam = CameraIntrinsics(np.array([[300.0, 0, 79.5], [0, 300.0, 59.5], [0, 0, 1]]), 160, 120)
    R, t = np.eye(3), np.array([0.0, 0.0, 500.0])
    from repro.render import RenderInstance, RenderScene

    depth = renderer.render(RenderScene(cam, (RenderInstance(model, R, t),), sample_offset=BOP_SAMPLE_OFFSET),
                            {"depth"}).depth.astype(np.float64)
    scene = depth.copy()
    scene[:, :80][scene[:, :80] > 0] -= 100.0  # an occluder 100 mm in front on the left half
    scene[:10] = 0.0  # missing depth on top rows
    scene[:, 100:][scene[:, 100:] > 0] -= 10.0  # something 10 mm in front (within delta) on the right
    (ann,) = compute_gt_info(renderer, cam, scene, [(model, R, t)], delta=15.0)
    full, vis = ann.mask, ann.mask_visib
    np.testing.assert_array_equal(full, depth > 0)
    np.testing.assert_array_equal(ann.depth, depth)
    expect = full.copy()
    expect[:, :80] = False
    expect[:10] |= full[:10]
    np.testing.assert_array_equal(vis, expect)
    assert ann.info["px_count_all"] == int(full.sum())
    assert ann.visib_fract == pytest.approx(expect.sum() / full.sum(), abs=1e-12)


def test_truncated_objects_count_pixels_outside_the_image(renderer):
    model, _ = build_object("block", 1, 10.0)
    cam = CameraIntrinsics(np.array([[300.0, 0, 79.5], [0, 300.0, 59.5], [0, 0, 1]]), 160, 120)
    R, t = np.eye(3), np.array([-120.0, 0.0, 500.0])  # centre at u = 7.5, 48 px wide: left part cut off
    from repro.render import RenderInstance, RenderScene

    depth = renderer.render(RenderScene(cam, (RenderInstance(model, R, t),), sample_offset=BOP_SAMPLE_OFFSET),
                            {"depth"}).depth.astype(np.float64)
    (ann,) = compute_gt_info(renderer, cam, depth, [(model, R, t)])
    x, _, w, h = ann.info["bbox_obj"]
    assert x < 0 and ann.info["px_count_all"] > ann.mask.sum()
    np.testing.assert_array_equal(ann.mask, depth > 0)  # the canvas crop is the image's own render
    assert ann.visib_fract == pytest.approx(ann.mask.sum() / ann.info["px_count_all"], abs=1e-12)
    # the whole silhouette: 80 x 50 mm, front face at 485 mm, f = 300 -> about 50 x 31 pixels
    assert w == pytest.approx(50, abs=3) and h == pytest.approx(31, abs=2)


@pytest.mark.parametrize("split,filename", [("test", "test_targets_bop19.json"), ("video", VIDEO_TARGETS)])
def test_targets_rule(root, split, filename):
    ds = _dataset(root, split)
    want = set()
    for scene_id in ds.scene_ids():
        scene = ds.scene(scene_id)
        for im_id, gts in scene.gt.items():
            counts: dict[int, int] = {}
            for g, info in zip(gts, scene.gt_info[im_id], strict=True):
                if info["visib_fract"] >= PRESETS["smoke"].min_visib_fract:
                    counts[g["obj_id"]] = counts.get(g["obj_id"], 0) + 1
            want |= {(scene_id, im_id, o, n) for o, n in counts.items()}
    got = {(t["scene_id"], t["im_id"], t["obj_id"], t["inst_count"]) for t in read_json(root / filename)}
    assert got == want and all(n > 0 for *_, n in got)


# --------------------------------------------------------------------------- symmetries


def _nearest(v: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.spatial import cKDTree

    return cKDTree(v).query(q)


@pytest.mark.parametrize("key", sorted(OBJECT_LIBRARY))
def test_symmetries_hold_numerically(key):
    model, spec = build_object(key, 1)
    v, cols = model.vertices, model.colors
    for T in model.symmetries_discrete:
        d, idx = _nearest(v, v @ T[:3, :3].T + T[:3, 3])
        assert d.max() < 1e-3
        assert np.abs(cols[idx] - cols).max() <= 1.5 / 255
    for c in model.symmetries_continuous:
        np.testing.assert_allclose(c.axis, [0, 0, 1])
        np.testing.assert_allclose(c.offset, [0, 0, 0])
        r_max = float(np.hypot(v[:, 0], v[:, 1]).max())
        for k in (1, 5, spec.segments // 3):
            Rk = S.rotation_about(c.axis, 2 * math.pi * k / spec.segments)
            d, idx = _nearest(v, v @ Rk.T)
            assert d.max() < 1e-3 and np.abs(cols[idx] - cols).max() <= 1.5 / 255
        for ang in (0.1234, 1.0, 2.5, 4.0):
            d, _ = _nearest(v, v @ S.rotation_about(c.axis, ang).T)
            assert d.max() <= math.pi * r_max / spec.segments + 1e-6
    assert verify_symmetries(model, spec.segments) == []


@pytest.mark.parametrize("key", sorted(k for k, s in OBJECT_LIBRARY.items()))
def test_no_unannotated_symmetry_of_the_box_group(key):
    """Rotations by 180 degrees about x, y, z and 90 about z that are *not* annotated must
    not map the object onto itself (shape and colour)."""
    model, _ = build_object(key, 1)
    if model.symmetries_continuous:
        return
    annotated = [T[:3, :3] for T in model.symmetries_discrete]
    v, cols = model.vertices, model.colors
    for axis, deg in (((1, 0, 0), 180), ((0, 1, 0), 180), ((0, 0, 1), 180), ((0, 0, 1), 90)):
        R = S.rotation_about(axis, math.radians(deg))
        if any(np.allclose(R, A, atol=1e-9) for A in annotated):
            continue
        d, idx = _nearest(v, v @ R.T)
        same = d.max() < 1e-3 and np.abs(cols[idx] - cols).max() <= 1.5 / 255
        assert not same, f"{key}: rotation {deg} deg about {axis} is a symmetry but is not annotated"


def test_symmetry_annotations_in_models_info(root):
    info = read_json(root / "models" / "models_info.json")
    by_key = {e["key"]: e for e in info.values()}
    assert len(by_key["soda_can"]["symmetries_discrete"]) == 1  # the flip
    assert by_key["soda_can"]["symmetries_continuous"] == [{"axis": [0.0, 0.0, 1.0], "offset": [0.0, 0.0, 0.0]}]
    assert len(by_key["block"]["symmetries_discrete"]) == 3
    assert "symmetries_continuous" not in by_key["mug"] and "symmetries_discrete" not in by_key["mug"]
    flip = np.reshape(by_key["soda_can"]["symmetries_discrete"][0], (4, 4))
    np.testing.assert_allclose(flip, np.diag([1.0, -1.0, -1.0, 1.0]), atol=1e-12)
    bottle, _ = build_object("bottle", 1)
    assert not bottle.symmetries_discrete and bottle.symmetries_continuous


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_and_other_seed_differs(smoke, tmp_path, renderer):
    root, _ = smoke
    again = tmp_path / "same" / root.name
    generate_bop_dataset(again, "smoke", seed=0, renderer=renderer, progress=False)
    first, second = _hashes(root), _hashes(again)
    assert first == second
    (again / "test" / "000001" / "stale.txt").write_text("left over")
    generate_bop_dataset(again, "smoke", seed=0, renderer=renderer, progress=False)  # replaces it whole
    assert _hashes(again) == first
    assert not list(again.parent.glob(".*")), "no temporary folders are left behind"
    other = tmp_path / "other" / root.name
    generate_bop_dataset(other, "smoke", seed=1, renderer=renderer, progress=False)
    third = _hashes(other)
    for split in ("test/", "train_pbr/", "video/"):
        a = {k: h for k, h in first.items() if k.startswith(split) and "/rgb/" in k}
        b = {k: h for k, h in third.items() if k.startswith(split) and "/rgb/" in k}
        assert a and not set(a.values()) & set(b.values()), f"{split} images repeat across seeds"
    assert third["models/models_info.json"] == first["models/models_info.json"]  # the library is seed-free


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_bop_dataset(tmp_path, "smoke", seed=0, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


# --------------------------------------------------------------------------- video


def test_video_sidecar_is_consistent(root):
    ds = _dataset(root, "video")
    cfg = PRESETS["smoke"].video
    for scene_id in ds.scene_ids():
        d = root / "video" / f"{scene_id:06d}"
        side = read_json(d / SEQUENCE_SIDECAR)
        im_ids = ds.scene(scene_id).im_ids
        assert side["im_ids"] == im_ids == list(range(cfg.n_frames))
        assert side["timestamps"] == [round(i / cfg.fps, 6) for i in im_ids]
        drop = side["drop_protocol"]["dropped_im_ids"]
        assert drop and set(drop) < set(im_ids)
        assert [f["im_id"] for f in side["frames"] if f["dropped"]] == drop
        occ_ids = side["occluder"]["im_ids"]
        assert occ_ids == [f["im_id"] for f in side["frames"] if f["occluder"]]
        occludes = False
        for f in side["frames"]:
            mask_path = d / OCCLUDER_MASK_DIR / f"{f['im_id']:06d}.png"
            assert mask_path.is_file() == f["occluder"]
            if not f["occluder"]:
                continue
            occ = read_image(mask_path) > 0
            assert int(occ.sum()) == f["occluder_px_count"]
            frame = ds.load_frame(scene_id, f["im_id"], load_masks=True)
            assert np.all(frame.depth[occ] > 0)
            for g in frame.gt:
                assert not np.any(g.mask_visib & occ), "occluder pixels must hide the objects behind"
                occludes |= bool(np.any(g.mask & occ))
        assert occludes, "the occluder should pass in front of at least one object"


def test_drop_protocol_targets_exclude_exactly_the_dropped_frames(root, tmp_path):
    from repro.data.synth.bop_synth import VIDEO_DROP_TARGETS, write_video_drop_targets

    full = {(t["scene_id"], t["im_id"], t["obj_id"], t["inst_count"]) for t in read_json(root / VIDEO_TARGETS)}
    kept = {(t["scene_id"], t["im_id"], t["obj_id"], t["inst_count"]) for t in read_json(root / VIDEO_DROP_TARGETS)}
    dropped = {(int(p.parent.name), i) for p in (root / "video").glob(f"*/{SEQUENCE_SIDECAR}")
               for i in read_json(p)["drop_protocol"]["dropped_im_ids"]}
    assert dropped and kept == {t for t in full if (t[0], t[1]) not in dropped}
    assert {(t[0], t[1]) for t in full} & dropped, "some dropped frame has targets"
    ds = BopDataset(root, split="video", targets=VIDEO_DROP_TARGETS)
    assert ds.target_map and not set(ds.target_map) & dropped
    assert set(ds.target_map) == {(t[0], t[1]) for t in full} - dropped
    frame = ds.load_frame(*next(iter(ds.target_map)), with_gt=False)
    assert frame.video and not BopDataset(root, split="test").load_frame(1, 0, with_gt=False).video
    # the helper for older datasets writes the same bytes as the generator
    copy = tmp_path / "old"
    (copy / "video").mkdir(parents=True)
    shutil.copy(root / VIDEO_TARGETS, copy / VIDEO_TARGETS)
    for p in (root / "video").glob(f"*/{SEQUENCE_SIDECAR}"):
        (copy / "video" / p.parent.name).mkdir()
        shutil.copy(p, copy / "video" / p.parent.name / SEQUENCE_SIDECAR)
    assert write_video_drop_targets(copy).read_bytes() == (root / VIDEO_DROP_TARGETS).read_bytes()


def test_video_object_motion_matches_sidecar(root):
    ds = _dataset(root, "video")
    for scene_id in ds.scene_ids():
        side = read_json(root / "video" / f"{scene_id:06d}" / SEQUENCE_SIDECAR)
        moving = {m["gt_id"]: np.array(m["displacement_mm"]) for m in side["moving_objects"]}
        cams = ds.scene(scene_id).camera
        n = side["n_frames"]
        world = {}
        for im_id in ds.scene(scene_id).im_ids:
            Rc = np.reshape(cams[im_id]["cam_R_w2c"], (3, 3))
            tc = np.asarray(cams[im_id]["cam_t_w2c"])
            for g in ds.gt_instances(scene_id, im_id):
                world.setdefault(g.gt_id, []).append(Rc.T @ (g.t - tc))
        for gt_id, ts in world.items():
            ts = np.array(ts)
            expect = ts[0] + np.outer(np.arange(n) / (n - 1), moving.get(gt_id, np.zeros(3)))
            np.testing.assert_allclose(ts, expect, atol=1e-6)


# --------------------------------------------------------------------------- onboarding


def test_onboarding_views_are_posed_and_masked(root):
    ds = _dataset(root, "onboarding")
    cfg = PRESETS["smoke"].onboarding
    objects = _dataset(root, "test").objects()
    assert ds.scene_ids() == sorted(objects)
    for obj_id in ds.scene_ids():
        assert ds.scene(obj_id).im_ids == list(range(cfg.n_views))
        centroid = objects[obj_id].vertices.mean(axis=0)
        for im_id in ds.scene(obj_id).im_ids:
            frame = ds.load_frame(obj_id, im_id, load_masks=True)
            (g,) = frame.gt
            assert g.obj_id == obj_id and frame.rgb.shape[:2] == (PRESETS['smoke'].height, PRESETS['smoke'].width)
            p = frame.K @ (g.R @ centroid + g.t)
            u, v = round(p[0] / p[2]), round(p[1] / p[2])
            assert g.mask[v, u], "the model centroid projects inside the object mask"
            assert g.visib_fract == 1.0 and not g.mask[0].any() and not g.mask[:, 0].any()


def test_onboarding_static_references(root):
    cfg = PRESETS["smoke"].onboarding
    bg = np.round(np.asarray(cfg.background) * 255)
    for obj_id in range(1, len(PRESETS["smoke"].objects) + 1):
        folder = root / STATIC_DIR / f"obj_{obj_id:06d}"
        refs = read_json(folder / "refs.json")
        assert refs["obj_id"] == obj_id and refs["description"]
        assert len(refs["refs"]) == cfg.n_static
        K = np.reshape(refs["cam_K"], (3, 3))
        for ref in refs["refs"]:
            rgb = read_image(folder / f"ref_{ref['ref_id']:04d}_rgb.png")[:, :, ::-1]
            mask = read_image(folder / f"ref_{ref['ref_id']:04d}_mask.png") > 0
            assert 0 < mask.mean() < 0.9
            assert np.all(rgb[~mask] == bg), "references are on a plain single-colour background"
            p = K @ np.asarray(ref["cam_t_m2c"])
            assert mask[round(p[1] / p[2]), round(p[0] / p[2])]


# --------------------------------------------------------------------------- card, presets, helpers


def test_dataset_card(smoke):
    root, summary = smoke
    card = (root / "README.md").read_text()
    assert "synthetic" in card.lower() and "procedural" in card.lower()
    for o in summary["objects"]:
        assert f"| {o['obj_id']} | {o['name']} |" in card
    assert "onboarding_static/" in card and SEQUENCE_SIDECAR in card
    assert "video_drop_targets_bop19.json" in card
    assert f"seed {summary['seed']}" in card and "`smoke`" in card
    config = read_json(root / "synth_config.json")
    assert config["seed"] == 0 and config["preset"] == "smoke" and "root" not in config


def test_presets():
    assert set(PRESETS) == {"smoke", "default", "large"}
    assert get_preset("default").objects and get_preset("smoke", width=64).width == 64
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        get_preset("huge")
    for cfg in PRESETS.values():
        assert all(k in OBJECT_LIBRARY for k in cfg.objects)


def test_primitives_are_closed_and_outward():
    def volume(m: S.Mesh) -> float:
        t = m.vertices[m.faces]
        return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6)

    assert volume(S.box((10, 20, 30), max_edge=3)) == pytest.approx(6000)
    assert volume(S.cylinder(5, 10, 256)) == pytest.approx(math.pi * 250, rel=1e-3)
    assert volume(S.cone(5, 12, 256)) == pytest.approx(math.pi * 100, rel=1e-3)
    assert volume(S.icosphere(2, 4)) == pytest.approx(4 / 3 * math.pi * 8, rel=1e-2)
    assert volume(S.torus_arc(10, 2, major_segments=128, minor_segments=64)) == pytest.approx(
        2 * math.pi ** 2 * 10 * 4, rel=1e-2)
    hexp = S.revolve([(0, -1), (2, -1), (2, 1), (0, 1)], 6, smooth=False)
    assert volume(hexp) == pytest.approx(3 * math.sqrt(3) / 2 * 4 * 2)
    for m in (S.box((1, 2, 3), max_edge=0.5), S.cylinder(1, 2), hexp, S.torus_arc(3, 1, 0, math.pi, capped=True)):
        f = m.faces
        fn = np.cross(m.vertices[f[:, 1]] - m.vertices[f[:, 0]], m.vertices[f[:, 2]] - m.vertices[f[:, 0]])
        assert np.all(np.einsum("ij,ij->i", fn, m.normals[f].sum(axis=1)) > 0)
    merged = S.merge(S.paint(S.box((1, 1, 1)), (1, 0, 0)), S.transform(S.box((1, 1, 1)), t=(5, 0, 0)))
    assert merged.n_vertices == 48 and np.allclose(merged.colors[24:], 0.5)
    assert S.mesh_diameter(merged.vertices) == pytest.approx(np.linalg.norm([6, 1, 1]))
