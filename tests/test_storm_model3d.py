"""STORM 3D model stage: TSDF / visual-hull fusion of rendered analytic shapes, the unaligned frame
(first camera), alignment back to the CAD frame, the onboarding loader, the SAM3D slot and config."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("EGL_PLATFORM", "surfaceless")

from methods.storm.model3d import (
    Model3DConfig,
    PosedView,
    Sam3dBackend,
    Sam3dUnavailableError,
    backproject,
    build_object_model,
    cache_key,
    chamfer_distance,
    fuse_views,
    load_onboarding_views,
    metric_scale_from_depth,
    prepare_sam3d_input,
    sample_surface,
    transform,
)
from repro.data.bop import BopImage, BopWriter
from repro.data.synth import shapes as S
from repro.errors import DatasetNotFoundError
from repro.geometry.rotations import geodesic_distance
from repro.render import BOP_SAMPLE_OFFSET, RenderInstance, RenderScene
from repro.render.viewpoints import fibonacci_sphere, look_at
from repro.types import CameraIntrinsics, GTInstance, ObjectModel

CAM = CameraIntrinsics(np.array([[160.0, 0.0, 79.5], [0.0, 160.0, 59.5], [0.0, 0.0, 1.0]]), 160, 120)
SYM = np.eye(4)
SYM[:3, :3] = np.diag([-1.0, -1.0, 1.0])


def _render_views(renderer, model: ObjectModel, n: int, distance: float) -> list[PosedView]:
    views = []
    for d in fibonacci_sphere(n):
        R, t = look_at(distance * d)
        scene = RenderScene(CAM, (RenderInstance(model, R, t),), background=(1.0, 1.0, 1.0),
                            sample_offset=BOP_SAMPLE_OFFSET)
        res = renderer.render(scene, {"depth", "ids", "rgb"})
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = R, t
        views.append(PosedView(rgb=res.rgb, depth=res.depth.astype(np.float32), mask=res.instance_ids == 0,
                               K=CAM.K, pose=pose))
    return views


@pytest.fixture(scope="module")
def sphere():
    return S.mesh_to_model(S.paint(S.icosphere(40.0, 4), (0.9, 0.1, 0.1)), 3, name="ball", description="a ball",
                           symmetries_discrete=(SYM,))


@pytest.fixture(scope="module")
def sphere_views(renderer, sphere):
    return _render_views(renderer, sphere, 12, 220.0)


@pytest.fixture(scope="module")
def lblock():
    """An asymmetric union of two boxes (no rigid self-symmetry), centred on its bounding box."""
    mesh = S.merge(S.box((70.0, 40.0, 30.0)), S.box((24.0, 24.0, 26.0), center=(23.0, 12.0, 27.0)))
    mesh = S.transform(mesh, t=-(mesh.vertices.min(axis=0) + mesh.vertices.max(axis=0)) / 2)
    return S.mesh_to_model(S.paint(mesh, (0.2, 0.5, 0.8)), 7, name="L block", description="two boxes",
                           symmetries_discrete=(SYM,))


@pytest.fixture(scope="module")
def lblock_views(renderer, lblock):
    return _render_views(renderer, lblock, 14, 260.0)


FUSED = Model3DConfig(backend="fused", voxel_size=2.0, align_starts=8)


# --------------------------------------------------------------------------- fusion


def test_tsdf_sphere_radius_and_chamfer(sphere, sphere_views):
    mesh, grid = fuse_views(sphere_views, FUSED)
    assert grid.size == 2.0
    # first camera frame: the sphere's centre is at T_0's translation
    centre = sphere_views[0].pose[:3, 3]
    r = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert abs(np.median(r) - 40.0) < 0.5 * grid.size
    assert np.abs(r - 40.0).max() < 2.0 * grid.size
    truth = transform(sphere.sample_points(4000, 0), sphere_views[0].pose)
    pts, _ = sample_surface(mesh.vertices, mesh.faces, 4000, np.random.default_rng(0))
    assert chamfer_distance(pts, truth) < 0.75 * grid.size
    # outward normals, colours from the red views
    assert np.mean(np.einsum("ij,ij->i", mesh.normals, (mesh.vertices - centre) / r[:, None])) > 0.95
    assert mesh.colors.min() >= 0 and mesh.colors.max() <= 1
    assert np.all(mesh.colors[:, 0] > 3 * mesh.colors[:, 1])


def test_visual_hull_sphere(sphere, sphere_views):
    cfg = Model3DConfig.from_mapping({"backend": "fused", "fusion": "visual_hull", "voxel_size": 2.0,
                                      "colors": "none"})
    mesh, grid = fuse_views(sphere_views, cfg)
    assert mesh.colors is None
    truth = transform(sphere.sample_points(4000, 0), sphere_views[0].pose)
    pts, _ = sample_surface(mesh.vertices, mesh.faces, 4000, np.random.default_rng(0))
    assert chamfer_distance(pts, truth) < 1.5 * grid.size


def test_voxel_fraction_and_cap(sphere_views):
    _, grid = fuse_views(sphere_views[:4], Model3DConfig(backend="fused", voxel_fraction=0.02, colors="none"))
    diag = math.sqrt(3) * 80.0
    assert 0.6 * 0.02 * diag < grid.size < 1.3 * 0.02 * diag
    _, capped = fuse_views(sphere_views[:4], Model3DConfig(backend="fused", voxel_size=0.5, max_voxels=20_000,
                                                           colors="none"))
    assert math.prod(capped.shape) <= 20_000 and capped.size > 0.5


def test_fusion_needs_poses(sphere_views):
    v = sphere_views[1]
    unposed = PosedView(rgb=v.rgb, depth=v.depth, mask=v.mask, K=v.K, pose=None)
    with pytest.raises(ValueError, match="pose"):
        fuse_views([sphere_views[0], unposed], FUSED)


# --------------------------------------------------------------------------- frames and alignment


def test_unaligned_frame_is_first_camera_and_alignment_recovers_it(lblock, lblock_views):
    rec = build_object_model(lblock, lblock_views, Model3DConfig.from_mapping({**FUSED.to_dict(), "align": False}),
                             seed=0)
    assert not rec.aligned and rec.backend == "fused"
    assert rec.model.obj_id == 7 and rec.model.name == "L block" and rec.model.description == "two boxes"
    assert rec.model.symmetries_discrete == () and rec.model.symmetries_continuous == ()
    # canonical frame: centred on the bounding box, axes of the first camera
    lo, hi = rec.model.vertices.min(axis=0), rec.model.vertices.max(axis=0)
    np.testing.assert_allclose(lo + hi, 0.0, atol=1e-9)
    T_true = np.asarray(rec.info["T_model_from_recon_poses"])
    np.testing.assert_allclose(T_true[:3, :3], lblock_views[0].pose[:3, :3].T, atol=1e-12)
    # the reconstruction in its own frame is far from the CAD; mapped by the true transform it fits
    cad_pts = lblock.sample_points(4000, 1)
    pts, _ = sample_surface(rec.model.vertices, rec.model.faces, 4000, np.random.default_rng(1))
    assert chamfer_distance(pts, cad_pts) > 5.0
    assert chamfer_distance(transform(pts, T_true), cad_pts) < 1.0 * FUSED.voxel_size
    # the estimated alignment matches the known transform
    T = rec.T_model_from_recon
    assert math.degrees(geodesic_distance(T[:3, :3], T_true[:3, :3])) < 1.0
    assert np.linalg.norm(T[:3, 3] - T_true[:3, 3]) < 1.0
    np.testing.assert_allclose(rec.T_align, T)
    assert rec.info["chamfer_after_mm"] < 1.0 * FUSED.voxel_size < rec.info["chamfer_before_mm"]
    assert abs(rec.model.diameter - lblock.diameter) < 2 * FUSED.voxel_size


def test_aligned_model_is_in_cad_frame(lblock, lblock_views):
    rec = build_object_model(lblock, lblock_views, FUSED, seed=0)
    assert rec.aligned
    np.testing.assert_array_equal(rec.T_model_from_recon, np.eye(4))
    pts, _ = sample_surface(rec.model.vertices, rec.model.faces, 4000, np.random.default_rng(2))
    assert chamfer_distance(pts, lblock.sample_points(4000, 2)) < 1.0 * FUSED.voxel_size
    assert len(rec.model.symmetries_discrete) == 1
    np.testing.assert_allclose(rec.model.symmetries_discrete[0], SYM)
    assert rec.info["n_views"] == len(lblock_views) and rec.info["voxel_size_mm"] == 2.0
    assert rec.info["align_rot_err_deg"] < 1.0 and rec.info["seconds"] > 0
    # normals rotated with the vertices stay outward-facing on the aligned mesh
    c = 0.5 * (rec.model.vertices.min(axis=0) + rec.model.vertices.max(axis=0))
    assert np.mean(np.einsum("ij,ij->i", rec.model.normals, rec.model.vertices - c) > 0) > 0.9


def test_max_views_and_min_views(lblock, lblock_views):
    with pytest.raises(ValueError, match="at least 3"):
        build_object_model(lblock, lblock_views[:2], Model3DConfig(backend="fused", min_views=3), seed=0)


def test_cad_backend_returns_model_unchanged(lblock):
    rec = build_object_model(lblock, None, Model3DConfig(backend="cad"), seed=0)
    assert rec.model is lblock and rec.aligned and rec.backend == "cad"
    np.testing.assert_array_equal(rec.T_model_from_recon, np.eye(4))


def test_cache_key(lblock, sphere, sphere_views):
    k = cache_key(lblock, FUSED, sphere_views)
    assert k == cache_key(lblock, FUSED, list(sphere_views))
    assert k != cache_key(sphere, FUSED, sphere_views)
    assert k != cache_key(lblock, Model3DConfig(backend="fused", voxel_size=3.0), sphere_views)
    assert k != cache_key(lblock, FUSED, sphere_views[:-1])


# --------------------------------------------------------------------------- onboarding loader


def test_load_onboarding_views_round_trip(tmp_path, sphere, sphere_views):
    writer = BopWriter(tmp_path / "ds")
    images = []
    for k, v in enumerate(sphere_views[:4]):
        images.append(BopImage(im_id=k, rgb=v.rgb, K=v.K, depth_mm=v.depth, depth_scale=0.1,
                               gt=[GTInstance(0, sphere.obj_id, v.pose[:3, :3], v.pose[:3, 3])],
                               masks=[v.mask], masks_visib=[v.mask]))
    writer.write_scene("onboarding", sphere.obj_id, images)
    views = load_onboarding_views(tmp_path / "ds", sphere.obj_id)
    assert len(views) == 4
    for got, want in zip(views, sphere_views[:4], strict=True):
        np.testing.assert_array_equal(got.rgb, want.rgb)
        np.testing.assert_array_equal(got.mask, want.mask)
        np.testing.assert_allclose(got.depth, want.depth, atol=0.051)
        np.testing.assert_allclose(got.pose, want.pose, atol=1e-9)
        np.testing.assert_allclose(got.K, want.K)
    two = load_onboarding_views(tmp_path / "ds", sphere.obj_id, max_views=2)
    np.testing.assert_allclose([v.pose for v in two], [sphere_views[0].pose, sphere_views[3].pose], atol=1e-9)
    with pytest.raises(DatasetNotFoundError, match="000009"):
        load_onboarding_views(tmp_path / "ds", 9)


# --------------------------------------------------------------------------- SAM3D slot


def test_sam3d_missing_is_a_clear_error(tmp_path, lblock, lblock_views):
    with pytest.raises(Sam3dUnavailableError, match="sam3d_dir"):
        Sam3dBackend(None)
    missing = tmp_path / "nowhere"
    with pytest.raises(Sam3dUnavailableError, match="nowhere"):
        Sam3dBackend(missing)
    (tmp_path / "checkout").mkdir()
    with pytest.raises(Sam3dUnavailableError, match="sam3d_objects"):
        Sam3dBackend(tmp_path / "checkout")
    (tmp_path / "checkout" / "sam3d_objects").mkdir()
    (tmp_path / "checkout" / "notebook").mkdir()
    (tmp_path / "checkout" / "notebook" / "inference.py").write_text("")
    with pytest.raises(Sam3dUnavailableError, match=r"pipeline\.yaml"):
        Sam3dBackend(tmp_path / "checkout")
    with pytest.raises(Sam3dUnavailableError, match="nowhere"):
        build_object_model(lblock, lblock_views, Model3DConfig(sam3d_dir=str(missing)), seed=0)


def test_sam3d_input_preparation(sphere_views):
    v = sphere_views[0]
    inp = prepare_sam3d_input(v)
    assert inp.rgba.shape == (*v.depth.shape, 4) and inp.rgba.dtype == np.uint8
    np.testing.assert_array_equal(inp.rgba[..., :3], v.rgb)
    np.testing.assert_array_equal(inp.rgba[..., 3] == 255, v.mask)
    pts_mm = backproject(v)
    valid = v.mask & (v.depth > 0)
    np.testing.assert_allclose(inp.pointmap[valid] * 1000.0, pts_mm, rtol=1e-5, atol=1e-3)
    assert np.all(np.isnan(inp.pointmap[v.depth <= 0]))


def test_metric_scale_from_depth(sphere, sphere_views):
    v = sphere_views[2]
    pts = transform(sphere.sample_points(20000, 0), v.pose)
    assert metric_scale_from_depth(pts, v) == pytest.approx(1.0, abs=0.01)
    assert metric_scale_from_depth(0.4 * pts, v) == pytest.approx(2.5, rel=0.01)


# --------------------------------------------------------------------------- config


def test_config_validation():
    assert Model3DConfig().backend == "sam3d" and Model3DConfig().align
    cfg = Model3DConfig.from_mapping({"backend": "fused", "voxel_size": 2.5, "max_views": 8})
    assert Model3DConfig.from_mapping(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="voxel_sise"):
        Model3DConfig.from_mapping({"voxel_sise": 2.0})
    for bad in ({"backend": "nerf"}, {"fusion": "poisson"}, {"colors": "rainbow"}, {"voxel_size": 0.0},
                {"voxel_fraction": 1.5}, {"truncation": 0.5}, {"min_views": 4, "max_views": 2}):
        with pytest.raises(ValueError):
            Model3DConfig.from_mapping(bad)


def test_posed_view_validation():
    rgb = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="rgb"):
        PosedView(rgb=rgb.astype(np.float32), depth=np.zeros((4, 5)), mask=np.zeros((4, 5), bool), K=np.eye(3))
    with pytest.raises(ValueError, match="depth"):
        PosedView(rgb=rgb, depth=np.zeros((4, 4)), mask=np.zeros((4, 5), bool), K=np.eye(3))
    v = PosedView(rgb=rgb, depth=np.zeros((4, 5)), mask=np.zeros((4, 5)), K=np.eye(3))
    assert v.depth.dtype == np.float32 and v.mask.dtype == bool and v.pose is None
    assert not v.depth.flags.writeable
