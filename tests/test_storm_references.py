"""STORM reference images: background thresholding, square crops, rendered and static references."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from methods.storm.references import (
    ReferenceSet,
    crop_square,
    estimate_background_color,
    load_static_references,
    mask_from_background,
    reference_viewpoints,
    render_references,
    square_box,
)
from repro.types import ObjectModel


def box_model(obj_id: int = 1, half: tuple[float, float, float] = (30.0, 20.0, 10.0)) -> ObjectModel:
    """A coloured box (mm) centred at (5, -3, 2), so 'centre' differs from the origin."""
    c = np.array([5.0, -3.0, 2.0])
    s = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    verts = c + s * np.asarray(half)
    faces = np.array(
        [
            [0, 1, 3],
            [0, 3, 2],
            [4, 6, 7],
            [4, 7, 5],
            [0, 4, 5],
            [0, 5, 1],
            [2, 3, 7],
            [2, 7, 6],
            [0, 2, 6],
            [0, 6, 4],
            [1, 5, 7],
            [1, 7, 3],
        ]
    )
    colors = 0.2 + 0.6 * (s + 1) / 2
    diameter = float(2 * np.linalg.norm(half))
    return ObjectModel(obj_id, verts, faces, diameter, colors=colors, name="box", description="a coloured box")


def test_mask_from_background_known_background():
    img = np.full((40, 50, 3), (235, 235, 235), np.uint8)
    img[10:20, 5:30] = (200, 30, 30)
    img[25:30, 40:45] = (230, 228, 233)  # within the tolerance: background
    truth = np.zeros((40, 50), bool)
    truth[10:20, 5:30] = True
    np.testing.assert_array_equal(mask_from_background(img), truth)
    np.testing.assert_array_equal(mask_from_background(img, (0.92, 0.92, 0.92)), truth)
    np.testing.assert_array_equal(mask_from_background(img, (235, 235, 235), tol=1.0), truth | (img != 235).any(-1))
    np.testing.assert_allclose(estimate_background_color(img), [235, 235, 235])


def test_square_box_and_crop_are_object_centred():
    mask = np.zeros((60, 80), bool)
    mask[10:30, 20:60] = True  # 40 wide, 20 high, centre (40, 20)
    x0, y0, side = square_box(mask, margin=0.0)
    assert (x0, y0, side) == (20, 0, 40)
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[mask] = 255
    img, m = crop_square(rgb, mask, 20, margin=0.0)
    assert img.shape == (20, 20, 3) and m.shape == (20, 20)
    assert m[5:15].all() and not m[:5].any() and not m[15:].any()
    # an object at the border is padded with the fill colour
    edge = np.zeros((60, 80), bool)
    edge[0:10, 0:10] = True
    img, m = crop_square(np.zeros((60, 80, 3), np.uint8), edge, 10, margin=0.5, fill=(9, 9, 9))
    assert m.sum() > 0 and (img[0, 0] == 9).all()
    assert square_box(np.zeros((5, 5), bool)) is None


def test_render_references_cover_object_and_are_deterministic(renderer):
    model = box_model()
    refs = render_references(model, n_views=16, size=48, renderer=renderer)
    assert isinstance(refs, ReferenceSet) and refs.images.shape == (16, 48, 48, 3) and refs.masks.shape == (16, 48, 48)
    assert refs.description == "a coloured box" and refs.obj_id == 1
    # object-centred: every mask is non-empty and its bounding box spans most of the crop
    for m in refs.masks:
        ys, xs = np.nonzero(m)
        assert max(xs.max() - xs.min(), ys.max() - ys.min()) + 1 >= 0.7 * 48
        assert abs((xs.min() + xs.max()) / 2 - 23.5) <= 3 and abs((ys.min() + ys.max()) / 2 - 23.5) <= 3
    # 16 distinct viewpoints: camera centres -R^T t lie on a sphere about the box centre, pairwise apart
    centre = np.array([5.0, -3.0, 2.0])
    cams = np.stack([-p[:3, :3].T @ p[:3, 3] for p in refs.poses]) - centre
    radii = np.linalg.norm(cams, axis=1)
    np.testing.assert_allclose(radii, radii[0], rtol=1e-9)
    dirs = cams / radii[:, None]
    np.testing.assert_allclose(dirs, reference_viewpoints(16), atol=1e-9)
    d = np.linalg.norm(dirs[:, None] - dirs[None], axis=-1) + 10 * np.eye(16)
    assert d.min() > 0.3
    again = render_references(model, n_views=16, size=48, renderer=renderer)
    np.testing.assert_array_equal(again.images, refs.images)
    rotated = render_references(model, n_views=16, size=48, renderer=renderer, seed=3)
    assert not np.allclose(rotated.poses, refs.poses)
    np.testing.assert_allclose(np.linalg.norm(reference_viewpoints(16, seed=3), axis=1), 1.0)


def _write_static(folder, n=3, with_masks=True, bg=(0.9, 0.9, 0.9)):
    folder.mkdir(parents=True)
    refs = []
    for k in range(n):
        img = np.full((60, 80, 3), np.round(np.array(bg) * 255).astype(np.uint8), np.uint8)
        img[20 : 40 + k, 30:50] = (10, 200, 40)
        cv2.imwrite(str(folder / f"ref_{k:04d}_rgb.png"), img[:, :, ::-1])
        if with_masks:
            m = np.zeros((60, 80), np.uint8)
            m[20 : 40 + k, 30:50] = 255
            cv2.imwrite(str(folder / f"ref_{k:04d}_mask.png"), m)
        refs.append({"ref_id": k, "cam_R_m2c": np.eye(3).ravel().tolist(), "cam_t_m2c": [0, 0, 100 + k]})
    meta = {
        "obj_id": 7,
        "name": "green block",
        "description": "a green block",
        "background_rgb": list(bg),
        "refs": refs,
    }
    (folder / "refs.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("with_masks", [True, False])
def test_load_static_references(tmp_path, with_masks):
    _write_static(tmp_path / "onboarding_static" / "obj_000007", with_masks=with_masks)
    refs = load_static_references(tmp_path, 7, size=32)
    assert refs.images.shape == (3, 32, 32, 3) and refs.description == "a green block"
    assert refs.poses.shape == (3, 4, 4) and refs.poses[2, 2, 3] == 102
    for m, img in zip(refs.masks, refs.images, strict=True):
        assert 0.2 < m.mean() < 0.9
        assert (img[m][:, 1] > 150).mean() > 0.9  # the green object is inside the mask
    same = load_static_references(tmp_path / "onboarding_static", 7, size=32)
    np.testing.assert_array_equal(same.masks, refs.masks)


def test_load_static_references_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"obj_000003.*refs\.json"):
        load_static_references(tmp_path, 3)
    folder = tmp_path / "onboarding_static" / "obj_000007"
    _write_static(folder)
    (folder / "ref_0001_rgb.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"ref_0001_rgb\.png"):
        load_static_references(tmp_path, 7)
