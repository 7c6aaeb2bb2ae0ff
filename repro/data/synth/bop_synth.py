"""Synthetic instance-level dataset in the BOP layout (millimetres), rendered with ``repro.render``.

What is generated (see ``card.py`` for the layout as documented in the dataset card):

* an object library of procedural meshes with dense vertex colours (textured boxes, mugs and
  cans; textureless blocks, prisms and brackets), exact ``models_info`` (diameter as the largest
  vertex distance, bounding box, discrete and continuous symmetries, plus ``name`` and
  ``description``), checked numerically by ``verify_symmetries`` before anything is written;
* ``test`` and ``train_pbr`` scenes: objects resting on a textured table with distractors,
  random lights and cameras; ``scene_gt_info`` and masks computed as bop_toolkit's
  ``calc_gt_info.py`` / ``calc_gt_masks.py`` do (``repro.render.verify.compute_gt_info``: 3x
  canvas for truncated objects, distance-image visibility test with tolerance ``delta`` in the
  ``bop19`` mode); ``test_targets_bop19.json``;
* ``video`` scenes for tracking with a sidecar ``scene_sequence.json`` (timestamps, a frame-drop
  protocol, a passing occluder with its masks, objects moving on the table);
  ``video_targets_bop19.json`` (every frame) and ``video_drop_targets_bop19.json`` (the frames a
  tracker sees under the drop protocol: the dropped frames are neither seen nor scored);
* onboarding data: posed object-centred views in a BOP-like ``onboarding/`` split and STORM-style
  masked references in ``onboarding_static/``.

Pixel sampling: everything stored (rgb, depth, masks, onboarding views and references) is
rendered with ``sample_offset=BOP_SAMPLE_OFFSET``, i.e. pixel ``(u, v)`` samples the image point
``(u + 0.5, v + 0.5)`` as bop_toolkit's renderer does for real BOP data, so ``repro data verify``
and the metrics' VSD renders reproduce the stored depth and masks.

Randomness: every scene, sequence and object draws from its own generator seeded by
``(seed, stream, index)``, so a dataset is a pure function of (preset, seed, renderer backend).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from repro.data.bop import BopImage, BopWriter
from repro.data.synth import shapes as S
from repro.data.synth.presets import SplitConfig, SynthConfig, VideoConfig, get_preset
from repro.fileio import atomic_write_image, atomic_write_json
from repro.render.scene import BOP_SAMPLE_OFFSET, Light, RenderInstance, RenderResult, RenderScene, pixel_rays
from repro.render.verify import compute_gt_info
from repro.render.viewpoints import fibonacci_sphere, look_at
from repro.types import CameraIntrinsics, ContinuousSymmetry, GTInstance, InstanceTarget, ObjectModel, Targets

if TYPE_CHECKING:
    from repro.render.base import Renderer

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.1.0"
LIBRARY_SEED = 20240601
"""Object meshes and textures depend on this constant only (not on the dataset seed), so the
object library is the same for every seed, like the objects of a real dataset."""

TABLE_ID = 900
DISTRACTOR_ID0 = 1000
OCCLUDER_ID = 2000
_STREAMS = {"objects": 1, "test": 2, "train_pbr": 3, "video": 4, "onboarding": 5, "static": 6}
SPLIT_TEST, SPLIT_TRAIN, SPLIT_VIDEO, SPLIT_ONBOARDING = "test", "train_pbr", "video", "onboarding"
STATIC_DIR = "onboarding_static"
SEQUENCE_SIDECAR = "scene_sequence.json"
OCCLUDER_MASK_DIR = "occluder_mask"
VIDEO_TARGETS = "video_targets_bop19.json"
VIDEO_DROP_TARGETS = "video_drop_targets_bop19.json"


def _rng(seed: int, stream: str, *index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAMS[stream], *[int(i) for i in index]])


# --------------------------------------------------------------------------- rotations


def rot_x(deg: float) -> np.ndarray:
    return S.rotation_about((1, 0, 0), math.radians(deg))


def rot_y(deg: float) -> np.ndarray:
    return S.rotation_about((0, 1, 0), math.radians(deg))


def rot_z(deg: float) -> np.ndarray:
    return S.rotation_about((0, 0, 1), math.radians(deg))


def _sym4(R: np.ndarray) -> np.ndarray:
    """A symmetry transformation as BOP stores it (4x4, rotation about the model origin)."""
    T = np.eye(4)
    T[:3, :3] = np.round(R, 15)
    return T


# --------------------------------------------------------------------------- object library


_Built = tuple[S.Mesh, list[np.ndarray], list[ContinuousSymmetry]]
"""What an object builder returns: the mesh, its discrete (4x4) and continuous symmetries."""


@dataclass(frozen=True)
class ObjectSpec:
    """A library entry. ``build(rng, max_edge)`` returns the mesh (any placement; it is centred
    on its bounding box afterwards, keeping symmetry axes through the origin) and its
    symmetries. ``rest_poses`` are model-to-world rotations in which it can lie on a table;
    ``segments`` is the angular sampling of revolved parts (for the symmetry check)."""

    key: str
    name: str
    kind: str
    description: str
    build: Callable[[np.random.Generator, float], _Built]
    rest_poses: tuple[np.ndarray, ...] = (np.eye(3),)
    segments: int = 0
    textured: bool = True


def _c(hex_colour: str) -> np.ndarray:
    h = hex_colour.lstrip("#")
    return np.array([int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)])


def _pal(*hex_colours: str) -> np.ndarray:
    return np.array([np.round(_c(h) * 255) for h in hex_colours], np.uint8)


def _radius_xy(v: np.ndarray) -> np.ndarray:
    return np.hypot(v[:, 0], v[:, 1])


def _override(mesh: S.Mesh, mask: np.ndarray, colour: np.ndarray) -> S.Mesh:
    colours = np.array(mesh.colors if mesh.colors is not None else np.full((mesh.n_vertices, 3), 0.5))
    colours[mask] = colour
    return replace(mesh, colors=colours)


_Z_AXIS = ContinuousSymmetry(axis=np.array([0.0, 0.0, 1.0]), offset=np.zeros(3))


def _build_mug(rng: np.random.Generator, me: float) -> _Built:
    body = S.revolve([(0, 0), (40, 0), (40, 95), (35, 95), (35, 6), (0, 6)], 96, max_edge=me)
    tex = S.procedural_texture(rng, "label", 768, palette=_pal("#b3202a", "#f4f1e8", "#1f1f1f", "#f2c14e", "#7a0f16"),
                               detail=2)
    body = S.apply_texture(body, tex)
    v = body.vertices
    body = _override(body, (_radius_xy(v) < 35.01) & (v[:, 2] > 5.99), _c("#efe6d2"))
    body = _override(body, v[:, 2] < 0.01, _c("#7a0f16"))
    handle = S.paint(S.transform(S.torus_arc(26, 4.5, -math.pi / 2, math.pi / 2, major_segments=40,
                                             minor_segments=16), t=(37.5, 0, 50)), _c("#b3202a"))
    return S.merge(body, handle), [], []


def _build_soda_can(rng: np.random.Generator, me: float) -> _Built:
    can = S.cylinder(33, 122, 64, max_edge=me)
    bands = S.band_colors([4, 40, 46, 56], [_c("#f5f5f5"), _c("#1d4fa3"), _c("#f5f5f5"), _c("#1d4fa3"),
                                            _c("#b9bcc2")])
    can = S.color_by(can, lambda v: bands(np.abs(v)))
    return can, [_sym4(rot_x(180))], [_Z_AXIS]


def _bottle_profile() -> list[tuple[float, float]]:
    shoulder = [(13 + 21 * (1 + math.cos(math.pi * t)) / 2, 150 + 45 * t) for t in np.linspace(0, 1, 9)]
    return [(0, 0), (34, 0), *shoulder, (13, 215), (15, 215), (15, 240), (0, 240)]


def _build_bottle(rng: np.random.Generator, me: float) -> _Built:
    bottle = S.revolve(_bottle_profile(), 64, max_edge=me)
    bands = S.band_colors([55, 60, 118, 123, 214.5], [_c("#1e6b3a"), _c("#c9a227"), _c("#f3efe0"), _c("#c9a227"),
                                                       _c("#1e6b3a"), _c("#c0392b")])
    return S.color_by(bottle, bands), [], [_Z_AXIS]


def _build_block(rng: np.random.Generator, me: float) -> _Built:
    block = S.paint(S.box((80, 50, 30), max_edge=10.0), _c("#8e9196"))
    return block, [_sym4(rot_x(180)), _sym4(rot_y(180)), _sym4(rot_z(180))], []


def _build_hex_prism(rng: np.random.Generator, me: float) -> _Built:
    prism = S.revolve([(0, -25), (40, -25), (40, 25), (0, 25)], 6, smooth=False, max_edge=10.0)
    prism = S.paint(prism, _c("#e0b31b"))
    syms = [_sym4(rot_z(60 * k)) for k in range(1, 6)]
    syms += [_sym4(S.rotation_about((math.cos(math.radians(30 * j)), math.sin(math.radians(30 * j)), 0), math.pi))
             for j in range(6)]
    return prism, syms, []


def _build_l_bracket(rng: np.random.Generator, me: float) -> _Built:
    base = S.box((120, 60, 10), center=(60, 0, 5), max_edge=8.0)
    upright = S.box((10, 60, 80), center=(5, 0, 40), max_edge=8.0)
    return S.paint(S.merge(base, upright), _c("#3b5b8c")), [], []


def _build_drill(rng: np.random.Generator, me: float) -> _Built:
    body = S.transform(S.cylinder(28, 150, 48, max_edge=me), R=rot_y(90), t=(0, 0, 170))
    tex = S.procedural_texture(rng, "label", 768, palette=_pal("#f2b705", "#1a1a1a", "#f7e08a", "#c97f00", "#ffffff"),
                               detail=2)
    body = S.apply_texture(body, tex)
    chuck = S.paint(S.transform(S.cone(17, 40, 32, top_radius=7), R=rot_y(90), t=(75, 0, 170)), _c("#6d7178"))
    handle = S.paint(S.transform(S.box((40, 42, 120), max_edge=8.0), R=rot_y(-15), t=(-28, 0, 95)), _c("#202020"))
    battery = S.paint(S.box((90, 70, 40), center=(-22, 0, 20), max_edge=8.0), _c("#2b2b2e"))
    trigger = S.paint(S.box((12, 14, 26), center=(2, 0, 132)), _c("#c0392b"))
    return S.merge(body, chuck, handle, battery, trigger), [], []


def _build_cereal_box(rng: np.random.Generator, me: float) -> _Built:
    box = S.box((55, 140, 200), max_edge=me)
    tex = S.procedural_texture(rng, "label", 1024, palette=_pal("#e8742a", "#fdf6e3", "#1b4f9c", "#d7263d", "#f6d743"),
                               detail=2)
    return S.apply_texture(box, tex), [], []


def _build_bowl(rng: np.random.Generator, me: float) -> _Built:
    prof = [(0, 0), (38, 0), (78, 55), (74, 55), (35, 5), (0, 5)]
    bowl = S.revolve(prof, 96, max_edge=me)
    lengths = np.linalg.norm(np.diff(np.asarray(prof, float), axis=0), axis=1)
    v_rim = lengths[:2].sum() / lengths.sum()
    colours = np.where((bowl.uv[:, 1] <= v_rim + 1e-9)[:, None], _c("#2856a3"), _c("#f4f4f0"))
    return replace(bowl, colors=colours), [], [_Z_AXIS]


def _build_soup_can(rng: np.random.Generator, me: float) -> _Built:
    can = S.cylinder(38, 100, 96, max_edge=me)
    tex = S.procedural_texture(rng, "label", 768, palette=_pal("#c8102e", "#ffffff", "#f1c232", "#222222", "#8a0b1f"),
                               detail=2)
    can = S.apply_texture(can, tex)
    v = can.vertices
    return _override(can, (np.abs(v[:, 2]) > 49.99) & (_radius_xy(v) < 37.99), _c("#b9bcc2")), [], []


def _build_traffic_cone(rng: np.random.Generator, me: float) -> _Built:
    base = S.paint(S.box((90, 90, 8), center=(0, 0, 4), max_edge=10.0), _c("#2a2a2a"))
    body = S.transform(S.cone(34, 100, 64, top_radius=6, max_edge=me), t=(0, 0, 8))
    body = S.color_by(body, S.band_colors([55, 75], [_c("#f26b1d"), _c("#f5f5f5"), _c("#f26b1d")]))
    return S.merge(base, body), [_sym4(rot_z(90 * k)) for k in (1, 2, 3)], []


_UPRIGHT = (np.eye(3),)
_BOX_RESTS = (np.eye(3), rot_x(90), rot_y(90))

OBJECT_LIBRARY: dict[str, ObjectSpec] = {s.key: s for s in (
    ObjectSpec("mug", "red mug", "mug", "a red mug with a handle and a printed pattern", _build_mug, _UPRIGHT, 96),
    ObjectSpec("soda_can", "striped soda can", "can", "a blue and white striped soda can with silver ends",
               _build_soda_can, (np.eye(3), rot_x(90)), 64, textured=False),
    ObjectSpec("bottle", "green bottle", "bottle", "a green bottle with a cream label band and a red cap",
               _build_bottle, _UPRIGHT, 64, textured=False),
    ObjectSpec("block", "grey block", "cuboid", "a plain grey rectangular block", _build_block, _BOX_RESTS,
               textured=False),
    ObjectSpec("hex_prism", "yellow hexagonal prism", "prism", "a plain yellow hexagonal prism",
               _build_hex_prism, (np.eye(3), rot_x(90)), 6, textured=False),
    ObjectSpec("l_bracket", "blue L-bracket", "bracket", "a plain blue L-shaped metal bracket", _build_l_bracket,
               _UPRIGHT, textured=False),
    ObjectSpec("drill", "yellow drill", "composite", "a yellow and black power drill with a grey chuck",
               _build_drill, _UPRIGHT),
    ObjectSpec("cereal_box", "cereal box", "box", "an orange cereal box with a colourful printed label",
               _build_cereal_box, _BOX_RESTS),
    ObjectSpec("bowl", "blue bowl", "bowl", "a blue bowl, white inside", _build_bowl, _UPRIGHT, 96,
               textured=False),
    ObjectSpec("soup_can", "soup can", "can", "a soup can with a red and white paper label", _build_soup_can,
               (np.eye(3), rot_x(90)), 96),
    ObjectSpec("traffic_cone", "traffic cone", "cone", "an orange traffic cone with a white band on a black base",
               _build_traffic_cone, _UPRIGHT, 64, textured=False),
)}


def _center(mesh: S.Mesh, revolved_about_z: bool) -> S.Mesh:
    lo, hi = mesh.bounds
    c = 0.5 * (lo + hi)
    if revolved_about_z:
        c[:2] = 0.0
    return S.transform(mesh, t=-c)


@functools.lru_cache(maxsize=64)
def build_object(key: str, obj_id: int, texture_max_edge: float = 3.0) -> tuple[ObjectModel, ObjectSpec]:
    """The library object ``key`` as an ``ObjectModel`` with id ``obj_id`` (mm, centred on its
    bounding box, symmetries verified). Cached: models are immutable."""
    try:
        spec = OBJECT_LIBRARY[key]
    except KeyError:
        raise ValueError(f"unknown synthetic object {key!r}; choose from {', '.join(OBJECT_LIBRARY)}") from None
    rng = np.random.default_rng([LIBRARY_SEED, zlib.crc32(key.encode())])
    mesh, disc, cont = spec.build(rng, texture_max_edge)
    mesh = _center(mesh, revolved_about_z=spec.segments > 0)
    model = S.mesh_to_model(mesh, obj_id, symmetries_discrete=disc, symmetries_continuous=cont, name=spec.name,
                            description=spec.description)
    problems = verify_symmetries(model, spec.segments)
    if problems:
        raise AssertionError(f"object {key}: symmetry annotation does not hold: {'; '.join(problems)}")
    return model, spec


def verify_symmetries(model: ObjectModel, segments: int = 0, *, n_angles: int = 7,
                      tol: float = 1e-3) -> list[str]:
    """Check every annotated symmetry numerically; returns the problems found (empty = fine).

    Discrete: each transformed vertex must coincide with a vertex (distance < ``tol`` mm) of
    the same colour (within one 8-bit step). Continuous: rotations by multiples of
    ``2 pi / segments`` must map vertices onto vertices the same way, and rotations by arbitrary
    angles must keep every vertex within half an angular step of a vertex.
    """
    from scipy.spatial import cKDTree

    v = model.vertices
    tree = cKDTree(v)
    cols = model.colors
    problems = []

    def check(R: np.ndarray, t: np.ndarray, what: str, max_dist: float, colour: bool) -> None:
        d, idx = tree.query(v @ R.T + t)
        if d.max() > max_dist:
            problems.append(f"{what}: vertex off the surface by {d.max():.4g} mm")
        elif colour and cols is not None and np.abs(cols[idx] - cols).max() > 1.5 / 255:
            problems.append(f"{what}: appearance differs (colour change {np.abs(cols[idx] - cols).max():.3f})")

    for i, T in enumerate(model.symmetries_discrete):
        check(T[:3, :3], T[:3, 3], f"symmetries_discrete[{i}]", tol, True)
    for i, c in enumerate(model.symmetries_continuous):
        if segments <= 0:
            problems.append(f"symmetries_continuous[{i}]: no angular sampling known to check it")
            continue
        r_max = float(np.linalg.norm(np.cross(v - c.offset, c.axis), axis=1).max())
        for k in (1, segments // 4 or 1, segments // 2 or 1):
            R = S.rotation_about(c.axis, 2 * math.pi * k / segments)
            check(R, c.offset - R @ c.offset, f"symmetries_continuous[{i}] at step {k}", tol, True)
        for a in np.linspace(0.37, 2 * math.pi - 0.37, n_angles):
            R = S.rotation_about(c.axis, float(a))
            check(R, c.offset - R @ c.offset, f"symmetries_continuous[{i}] at {math.degrees(a):.1f} deg",
                  math.pi * r_max / segments + tol, False)
    return problems


def build_objects(keys: Sequence[str], texture_max_edge: float = 3.0) -> tuple[list[ObjectModel], list[ObjectSpec]]:
    """Library objects with ids 1..len(keys) in the given order."""
    built = [build_object(k, i + 1, texture_max_edge) for i, k in enumerate(keys)]
    return [m for m, _ in built], [s for _, s in built]


def models_info_extra(models: Sequence[ObjectModel], specs: Sequence[ObjectSpec]) -> dict[int, dict[str, Any]]:
    """Extra ``models_info`` keys per object: ``name``, ``description`` (STORM's language
    prompt), ``kind``, ``textured`` and the library ``key``."""
    return {m.obj_id: {"name": s.name, "description": s.description, "kind": s.kind, "textured": s.textured,
                       "key": s.key} for m, s in zip(models, specs, strict=True)}


# --------------------------------------------------------------------------- camera


def make_camera(cfg: SynthConfig) -> CameraIntrinsics:
    f = cfg.focal_scale * cfg.width
    K = np.array([[f, 0.0, (cfg.width - 1) / 2.0], [0.0, f, (cfg.height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return CameraIntrinsics(K, cfg.width, cfg.height)


# --------------------------------------------------------------------------- scene layout


@dataclass(frozen=True)
class Placement:
    """A model placed in the world (table plane z = 0, z up): ``x_w = R @ x_m + t``."""

    model: ObjectModel
    R: np.ndarray
    t: np.ndarray
    annotated: bool
    radius: float


def _rest(model: ObjectModel, R_rest: np.ndarray, yaw_deg: float) -> tuple[np.ndarray, float, float]:
    R = rot_z(yaw_deg) @ R_rest
    v = model.vertices @ R.T
    return R, float(-v[:, 2].min()), float(np.hypot(v[:, 0], v[:, 1]).max())


def _place(rng: np.random.Generator, model: ObjectModel, rests: Sequence[np.ndarray], placed: list[Placement],
           radius: float, annotated: bool, tries: int = 60) -> Placement | None:
    """Drop ``model`` at a random free spot within ``radius`` of the table centre."""
    R_rest = rests[int(rng.integers(len(rests)))]
    R, lift, r = _rest(model, R_rest, float(rng.uniform(0, 360)))
    for k in range(tries):
        rad = radius * (1.0 + 0.5 * k / tries)
        p = rng.uniform(-rad, rad, 2)
        if all(np.hypot(*(p - q.t[:2])) >= 0.9 * (r + q.radius) + 5.0 for q in placed):
            return Placement(model, R, np.array([p[0], p[1], lift]), annotated, r)
    return None


def _random_distractor(rng: np.random.Generator, obj_id: int) -> ObjectModel:
    """A simple random primitive (sphere, box, cylinder, cone, ring) with a random colour or
    coarse texture: clutter that is never annotated."""
    kind = int(rng.integers(5))
    if kind == 0:
        mesh = S.icosphere(float(rng.uniform(20, 45)), 2)
    elif kind == 1:
        mesh = S.box(rng.uniform(25, 110, 3), max_edge=8.0)
    elif kind == 2:
        mesh = S.cylinder(float(rng.uniform(15, 40)), float(rng.uniform(30, 130)), 32, max_edge=8.0)
    elif kind == 3:
        mesh = S.cone(float(rng.uniform(20, 45)), float(rng.uniform(40, 110)), 32, max_edge=8.0)
    else:
        mesh = S.torus_arc(float(rng.uniform(25, 45)), float(rng.uniform(6, 14)), major_segments=32,
                           minor_segments=12)
    if rng.random() < 0.5 or kind in (0, 4):
        colour = rng.uniform(0.1, 0.95, 3)
        mesh = S.paint(mesh, colour)
    else:
        tex = S.procedural_texture(rng, str(rng.choice(["noise", "stripes", "checker", "blobs"])), 128)
        mesh = S.apply_texture(mesh, tex)
    return S.mesh_to_model(mesh, obj_id, name="distractor")


def layout_scene(rng: np.random.Generator, models: Sequence[ObjectModel], specs: Sequence[ObjectSpec],
                 n_objects: tuple[int, int], n_distractors: tuple[int, int], duplicate_prob: float,
                 radius: float) -> list[Placement]:
    """Annotated objects (distinct, occasionally a second instance) and distractors on the table."""
    n = int(rng.integers(min(n_objects[0], len(models)), min(n_objects[1], len(models)) + 1))
    chosen = [int(i) for i in rng.choice(len(models), size=n, replace=False)]
    if chosen and rng.random() < duplicate_prob:
        chosen.append(chosen[int(rng.integers(len(chosen)))])
    placed: list[Placement] = []
    for i in chosen:
        p = _place(rng, models[i], specs[i].rest_poses, placed, radius, True)
        if p is not None:
            placed.append(p)
    for k in range(int(rng.integers(n_distractors[0], n_distractors[1] + 1))):
        d = _random_distractor(rng, DISTRACTOR_ID0 + k)
        p = _place(rng, d, (np.eye(3),), placed, radius * 1.3, False)
        if p is not None:
            placed.append(p)
    return placed


# --------------------------------------------------------------------------- appearance of a scene


@dataclass(frozen=True)
class Environment:
    """Table texture (float RGB in [0, 1], covering the whole table once), image background and
    world-frame light of a scene."""

    table_texture: np.ndarray
    background: np.ndarray
    light_dir_world: np.ndarray
    ambient: float
    diffuse: float
    tint: np.ndarray


_TABLE_SIZE = 1600.0


def make_environment(rng: np.random.Generator, width: int, height: int) -> Environment:
    """Procedural table top (noise, stripes, checker, blobs), a gradient-plus-noise background
    for pixels beyond the table, and a random light."""
    kind = str(rng.choice(["noise", "stripes", "checker", "blobs", "noise"]))
    pal = np.clip(rng.uniform(40, 230, (5, 3)) * rng.uniform(0.5, 1.0), 0, 255).astype(np.uint8)
    table = S.procedural_texture(rng, kind, 1024, palette=pal, detail=int(rng.integers(2, 5)))
    a, b = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    g = (xx * math.cos(ang) + yy * math.sin(ang))
    g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    noise = S.value_noise(rng, (height, width), scales=(3, 6, 12, 24))
    bg = (a[None, None] * (1 - g[..., None]) + b[None, None] * g[..., None]) * (0.75 + 0.25 * noise[..., None])
    el, az = math.radians(rng.uniform(35, 85)), rng.uniform(0, 2 * math.pi)
    light = -np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return Environment(table.astype(np.float32) / 255.0, bg.astype(np.float32), light,
                       float(rng.uniform(0.25, 0.5)), float(rng.uniform(0.5, 0.85)), rng.uniform(0.92, 1.08, 3))


@functools.cache
def table_model() -> ObjectModel:
    """The table plane (z = 0, 1.6 m square); its colour is shaded per pixel from the texture."""
    return S.mesh_to_model(S.plane(_TABLE_SIZE, _TABLE_SIZE, segments=4), TABLE_ID, name="table")


@functools.lru_cache(maxsize=8)
def _rays(K: tuple[float, ...], width: int, height: int) -> np.ndarray:
    return pixel_rays(CameraIntrinsics(np.reshape(K, (3, 3)), width, height), BOP_SAMPLE_OFFSET)


def _table_colours(env: Environment, camera: CameraIntrinsics, depth: np.ndarray, R_w2c: np.ndarray,
                   t_w2c: np.ndarray) -> np.ndarray:
    """Texture colour of the table seen at every pixel (from the depth: camera ray -> world
    point on the table -> bilinear texture lookup), (H, W, 3) float32."""
    import cv2

    rays = _rays(tuple(camera.K.ravel()), camera.width, camera.height)
    pts_w = (rays * depth[..., None].astype(np.float64) - t_w2c) @ R_w2c
    th, tw = env.table_texture.shape[:2]
    mx = ((pts_w[..., 0] / _TABLE_SIZE + 0.5) * tw - 0.5).astype(np.float32)
    my = ((pts_w[..., 1] / _TABLE_SIZE + 0.5) * th - 0.5).astype(np.float32)
    return cv2.remap(env.table_texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@dataclass(frozen=True)
class RenderedView:
    rgb: np.ndarray
    depth_mm: np.ndarray
    instance_ids: np.ndarray


def render_view(renderer: Renderer, camera: CameraIntrinsics, R_w2c: np.ndarray, t_w2c: np.ndarray,
                placements: Sequence[Placement], env: Environment, rng: np.random.Generator,
                noise_sigma: float, extra: Sequence[Placement] = (), max_depth: float = 6000.0) -> RenderedView:
    """Render placements + table: colour (objects shaded by the renderer, the table textured
    per pixel, the background image elsewhere, a colour tint and sensor noise) and depth (mm,
    0 where nothing is within ``max_depth``). Instance indices follow ``[*placements, *extra,
    table]``."""
    insts = [RenderInstance(p.model, R_w2c @ p.R, R_w2c @ p.t + t_w2c) for p in (*placements, *extra)]
    insts.append(RenderInstance(table_model(), R_w2c, t_w2c))
    light = Light(direction=R_w2c @ env.light_dir_world, ambient=env.ambient, diffuse=env.diffuse)
    scene = RenderScene(camera, tuple(insts), light=light, near=20.0, far=max_depth * 1.5,
                        sample_offset=BOP_SAMPLE_OFFSET)
    res = renderer.render(scene, {"depth", "ids", "rgb"})
    ids = res.instance_ids
    rgb = res.rgb.astype(np.float32) / 255.0
    table_idx = len(insts) - 1
    tmask = ids == table_idx
    if tmask.any():
        n_cam = R_w2c[:, 2]
        shade = min(1.0, env.ambient + env.diffuse * max(0.0, -float(n_cam @ light.direction)))
        rgb[tmask] = _table_colours(env, camera, res.depth, R_w2c, t_w2c)[tmask] * shade
    rgb[ids < 0] = env.background[ids < 0]
    rgb = rgb * env.tint.astype(np.float32)
    if noise_sigma > 0:
        rgb = rgb + rng.normal(0.0, noise_sigma / 255.0, rgb.shape).astype(np.float32)
    rgb8 = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    depth = np.where(res.depth > max_depth, 0.0, res.depth).astype(np.float64)
    return RenderedView(rgb8, depth, ids)


def quantize_depth(depth_mm: np.ndarray, depth_scale: float) -> np.ndarray:
    """Depth in mm exactly as ``BopDataset`` reads it back from the uint16 PNG that
    ``BopWriter`` writes (rounded ``depth / scale``, times the scale in float32)."""
    png = np.round(np.asarray(depth_mm, np.float64) / depth_scale).astype(np.uint16)
    return (png.astype(np.float32) * np.float32(depth_scale)).astype(np.float64)


def annotate_view(renderer: Renderer, camera: CameraIntrinsics, view: RenderedView, R_w2c: np.ndarray,
                  t_w2c: np.ndarray, placements: Sequence[Placement], im_id: int, cfg: SynthConfig) -> BopImage:
    """A ``BopImage`` with GT poses, masks and gt_info of the annotated placements."""
    gts, poses = [], []
    for p in placements:
        if p.annotated:
            R, t = R_w2c @ p.R, R_w2c @ p.t + t_w2c
            gts.append(GTInstance(gt_id=len(gts), obj_id=p.model.obj_id, R=R, t=t))
            poses.append((p.model, R, t))
    depth_q = quantize_depth(view.depth_mm, cfg.depth_scale)
    anns = compute_gt_info(renderer, camera, depth_q, poses, delta=cfg.visib_delta)
    gts = [replace(g, visib_fract=a.visib_fract) for g, a in zip(gts, anns, strict=True)]
    return BopImage(im_id=im_id, rgb=view.rgb, K=camera.K, gt=gts, depth_mm=view.depth_mm,
                    depth_scale=cfg.depth_scale, cam_R_w2c=R_w2c, cam_t_w2c=t_w2c,
                    masks=[a.mask for a in anns], masks_visib=[a.mask_visib for a in anns],
                    gt_info=[a.info for a in anns])


def targets_of(images: Sequence[BopImage], min_visib: float) -> dict[int, Targets]:
    """BOP19 targets per image: per object, the number of instances with visib_fract >= min_visib."""
    out = {}
    for im in images:
        counts: dict[int, int] = {}
        for g, info in zip(im.gt, im.gt_info or (), strict=True):
            if info["visib_fract"] >= min_visib:
                counts[g.obj_id] = counts.get(g.obj_id, 0) + 1
        if counts:
            out[im.im_id] = Targets(instances=tuple(InstanceTarget(o, n) for o, n in sorted(counts.items())))
    return out


def _random_camera(rng: np.random.Generator, cfg: SynthConfig, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    el = math.radians(rng.uniform(*cfg.camera_elevation_deg))
    az = rng.uniform(0, 2 * math.pi)
    d = rng.uniform(*cfg.camera_distance)
    aim = target + np.append(rng.normal(0, 30, 2), 0.0)
    pos = aim + d * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return look_at(pos, aim, roll=math.radians(rng.uniform(-cfg.camera_roll_deg, cfg.camera_roll_deg)))


def _scene_target(placements: Sequence[Placement]) -> np.ndarray:
    ann = [p.t for p in placements if p.annotated] or [p.t for p in placements] or [np.zeros(3)]
    c = np.mean(ann, axis=0)
    return np.array([c[0], c[1], 40.0])


# --------------------------------------------------------------------------- splits


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False)


def generate_static_split(writer: BopWriter, renderer: Renderer, cfg: SynthConfig, split_cfg: SplitConfig, split: str,
                          models: Sequence[ObjectModel], specs: Sequence[ObjectSpec], seed: int,
                          first_scene_id: int, progress: bool) -> dict[str, Any]:
    """Static tabletop scenes of one split; returns counts and (for ``test``) the targets."""
    camera = make_camera(cfg)
    targets: dict[tuple[int, int], Targets] = {}
    n_gt = 0
    with _progress(split_cfg.n_scenes * split_cfg.n_images, split, progress) as bar:
        for s in range(split_cfg.n_scenes):
            scene_id = first_scene_id + s
            rng = _rng(seed, split, scene_id)
            placements = layout_scene(rng, models, specs, split_cfg.n_objects, split_cfg.n_distractors,
                                      split_cfg.duplicate_prob, split_cfg.placement_radius)
            target = _scene_target(placements)
            images = []
            for im_id in range(split_cfg.n_images):
                img_rng = _rng(seed, split, scene_id, im_id)
                env = make_environment(img_rng, cfg.width, cfg.height)
                R, t = _random_camera(img_rng, cfg, target)
                view = render_view(renderer, camera, R, t, placements, env, img_rng, cfg.rgb_noise_sigma)
                images.append(annotate_view(renderer, camera, view, R, t, placements, im_id, cfg))
                bar.update(1)
            writer.write_scene(split, scene_id, images)
            n_gt += sum(len(im.gt) for im in images)
            for im_id, tg in targets_of(images, cfg.min_visib_fract).items():
                targets[(scene_id, im_id)] = tg
    log.info("%s: %d scenes x %d images, %d GT instances", split, split_cfg.n_scenes, split_cfg.n_images, n_gt)
    return {"n_scenes": split_cfg.n_scenes, "n_images": split_cfg.n_scenes * split_cfg.n_images, "n_gt": n_gt,
            "targets": targets}


def _smooth(s: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * s)


def _plan_motion(rng: np.random.Generator, placements: list[Placement], n_moving: int
                 ) -> dict[int, tuple[np.ndarray, float]]:
    """Pick annotated placements to slide on the table: index -> (displacement mm, yaw deg),
    only where the swept footprint stays clear of the other objects."""
    motions: dict[int, tuple[np.ndarray, float]] = {}
    candidates = [i for i, p in enumerate(placements) if p.annotated]
    rng.shuffle(candidates)
    for i in candidates[:n_moving]:
        p = placements[i]
        for _ in range(20):
            ang = rng.uniform(0, 2 * math.pi)
            disp = rng.uniform(60, 130) * np.array([math.cos(ang), math.sin(ang), 0.0])
            others = [q for j, q in enumerate(placements) if j != i]
            if all(np.hypot(*(p.t[:2] + s * disp[:2] - q.t[:2])) >= p.radius + q.radius + 5.0
                   for s in np.linspace(0, 1, 9) for q in others):
                motions[i] = (disp, float(rng.uniform(-50, 50)))
                break
    return motions


def generate_video_split(writer: BopWriter, renderer: Renderer, cfg: SynthConfig, vcfg: VideoConfig,
                         models: Sequence[ObjectModel], specs: Sequence[ObjectSpec], seed: int,
                         progress: bool) -> dict[str, Any]:
    """Video sequences (scene per sequence, im_id = frame index) with sidecars and occluder masks."""
    camera = make_camera(cfg)
    targets: dict[tuple[int, int], Targets] = {}
    dropped: dict[int, list[int]] = {}
    n_gt = 0
    n = vcfg.n_frames
    with _progress(vcfg.n_sequences * n, SPLIT_VIDEO, progress) as bar:
        for s in range(vcfg.n_sequences):
            scene_id = s + 1
            rng = _rng(seed, SPLIT_VIDEO, scene_id)
            placements = layout_scene(rng, models, specs, vcfg.n_objects, vcfg.n_distractors, 0.0, 180.0)
            motions = _plan_motion(rng, placements, vcfg.n_moving)
            env = make_environment(rng, cfg.width, cfg.height)
            target = _scene_target(placements)
            az0 = rng.uniform(0, 2 * math.pi)
            sweep = math.radians(rng.uniform(*vcfg.orbit_deg)) * (1 if rng.random() < 0.5 else -1)
            el0 = rng.uniform(cfg.camera_elevation_deg[0] + 8, cfg.camera_elevation_deg[1] - 8)
            d0 = float(np.mean(cfg.camera_distance))
            el_amp, d_amp = rng.uniform(5, 12), rng.uniform(40, 120)
            occ_len = max(2, round(vcfg.occluder_window * n)) if vcfg.occluder else 0
            occ_start = int(rng.integers(0, max(1, n - occ_len + 1))) if occ_len else 0
            occ_frames = list(range(occ_start, min(n, occ_start + occ_len)))
            drop_len = max(2, round(vcfg.drop_window * n)) if vcfg.drop_window > 0 else 0
            drop_start = int(rng.integers(0, max(1, n - drop_len + 1))) if drop_len else 0
            drop = [i for i in range(drop_start, min(n, drop_start + drop_len))
                    if (i - drop_start) % vcfg.drop_keep_every != 0]
            occ_model = S.mesh_to_model(S.paint(S.cylinder(float(rng.uniform(28, 40)), 900.0, 32, max_edge=40.0),
                                                rng.uniform(0.2, 0.9, 3)), OCCLUDER_ID, name="occluder")
            occ_side = 1.0 if rng.random() < 0.5 else -1.0
            frames, occ_info, images = [], [], []
            for i in range(n):
                u = i / max(n - 1, 1)
                az = az0 + sweep * _smooth(u)
                el = math.radians(el0 + el_amp * math.sin(2 * math.pi * u))
                d = d0 + d_amp * math.sin(math.pi * u)
                pos = target + d * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
                R, t = look_at(pos, target)
                moved = list(placements)
                for k, (disp, yaw) in motions.items():
                    p = placements[k]
                    moved[k] = replace(p, R=rot_z(yaw * u) @ p.R, t=p.t + disp * u)
                extra: list[Placement] = []
                if i in occ_frames:
                    sp = (i - occ_start) / max(len(occ_frames) - 1, 1)
                    depth = 0.5 * d
                    half_w = depth * cfg.width / (2 * camera.fx)
                    centre_cam = np.array([occ_side * (2 * sp - 1) * 1.2 * half_w, 0.0, depth])
                    centre_w = R.T @ (centre_cam - t)
                    R_occ = R.T @ rot_x(90)
                    extra.append(Placement(occ_model, R_occ, centre_w, False, 0.0))
                frame_rng = _rng(seed, SPLIT_VIDEO, scene_id, i)
                view = render_view(renderer, camera, R, t, moved, env, frame_rng, cfg.rgb_noise_sigma, extra)
                im = annotate_view(renderer, camera, view, R, t, moved, i, cfg)
                images.append(im)
                occ_px = 0
                if extra:
                    occ_mask = view.instance_ids == len(moved)
                    occ_px = int(occ_mask.sum())
                    atomic_write_image(writer.root / SPLIT_VIDEO / f"{scene_id:06d}" / OCCLUDER_MASK_DIR
                                       / f"{i:06d}.png", occ_mask.astype(np.uint8) * 255)
                    occ_info.append(i)
                frames.append({"im_id": i, "timestamp": round(i / vcfg.fps, 6), "dropped": i in drop,
                               "occluder": bool(extra), "occluder_px_count": occ_px})
                bar.update(1)
            writer.write_scene(SPLIT_VIDEO, scene_id, images)
            ann = [k for k, p in enumerate(placements) if p.annotated]
            atomic_write_json(writer.root / SPLIT_VIDEO / f"{scene_id:06d}" / SEQUENCE_SIDECAR, {
                "scene_id": scene_id, "fps": vcfg.fps, "n_frames": n,
                "im_ids": list(range(n)), "timestamps": [f["timestamp"] for f in frames],
                "drop_protocol": {"description": "fast-motion simulation: a tracker run under this protocol skips "
                                                 "these frames (keeps one frame in drop_keep_every inside the window)",
                                  "window": [drop_start, drop_start + drop_len - 1] if drop_len else None,
                                  "keep_every": vcfg.drop_keep_every, "dropped_im_ids": drop},
                "occluder": {"description": "a distractor cylinder crossing between camera and objects, rendered "
                                            "into rgb and depth; masks are its visible pixels",
                             "obj_id": OCCLUDER_ID if occ_info else None, "im_ids": occ_info,
                             "mask_dir": OCCLUDER_MASK_DIR if occ_info else None},
                "moving_objects": [{"gt_id": ann.index(k), "obj_id": placements[k].model.obj_id,
                                    "displacement_mm": disp.tolist(), "yaw_deg": yaw}
                                   for k, (disp, yaw) in sorted(motions.items())],
                "camera_path": {"kind": "orbit", "azimuth_sweep_deg": math.degrees(sweep),
                                "mean_distance_mm": d0},
                "frames": frames})
            dropped[scene_id] = drop
            n_gt += sum(len(im.gt) for im in images)
            for im_id, tg in targets_of(images, cfg.min_visib_fract).items():
                targets[(scene_id, im_id)] = tg
    log.info("video: %d sequences x %d frames, %d GT instances", vcfg.n_sequences, n, n_gt)
    return {"n_scenes": vcfg.n_sequences, "n_images": vcfg.n_sequences * n, "n_gt": n_gt, "targets": targets,
            "dropped": dropped}


def drop_protocol_targets(targets: Mapping[tuple[int, int], Targets],
                          dropped: Mapping[int, Collection[int]]) -> dict[tuple[int, int], Targets]:
    """The video targets without the frames the drop protocol skips (``dropped``: scene -> im_ids)."""
    return {(s, im): t for (s, im), t in targets.items() if im not in dropped.get(s, ())}


def write_video_drop_targets(root: str | Path) -> Path:
    """Write ``video_drop_targets_bop19.json`` of a generated dataset from its
    ``video_targets_bop19.json`` and the ``scene_sequence.json`` sidecars (for datasets generated
    before the file existed; the generator writes the same bytes)."""
    from repro.data.bop import dumps_bop_json
    from repro.fileio import atomic_write_text, read_json

    root = Path(root)
    dropped = {int(p.parent.name): set(read_json(p)["drop_protocol"]["dropped_im_ids"])
               for p in sorted((root / SPLIT_VIDEO).glob(f"*/{SEQUENCE_SIDECAR}"))}
    rows = [r for r in read_json(root / VIDEO_TARGETS) if int(r["im_id"]) not in dropped.get(int(r["scene_id"]), ())]
    return atomic_write_text(root / VIDEO_DROP_TARGETS, dumps_bop_json(rows))


# --------------------------------------------------------------------------- onboarding


def object_view_pose(model: ObjectModel, direction: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Model-to-camera pose of a camera on ``direction`` (unit, model frame) at ``distance`` mm
    from the bounding-box centre, looking at it with model z up."""
    centre = 0.5 * (model.vertices.min(axis=0) + model.vertices.max(axis=0))
    return look_at(centre + distance * np.asarray(direction, dtype=np.float64), centre)


def _framing_distance(model: ObjectModel, camera: CameraIntrinsics, fill: float = 0.9) -> float:
    """Distance at which the model's bounding sphere (about its box centre) spans ``fill`` of
    the image's half field of view, so every view shows the whole object."""
    centre = 0.5 * (model.vertices.min(axis=0) + model.vertices.max(axis=0))
    rho = float(np.linalg.norm(model.vertices - centre, axis=1).max())
    half_fov = math.atan(min(camera.width, camera.height) / (2.0 * camera.fx))
    return rho / math.sin(fill * half_fov)


def _render_alone(renderer: Renderer, camera: CameraIntrinsics, model: ObjectModel, R: np.ndarray, t: np.ndarray,
                  background: Sequence[float]) -> RenderResult:
    scene = RenderScene(camera, (RenderInstance(model, R, t),), background=tuple(background),
                        light=Light(direction=(0.3, 0.4, 1.0), ambient=0.4, diffuse=0.6),
                        sample_offset=BOP_SAMPLE_OFFSET)
    return renderer.render(scene, {"depth", "ids", "rgb"})


def generate_onboarding(writer: BopWriter, renderer: Renderer, cfg: SynthConfig, models: Sequence[ObjectModel],
                        progress: bool) -> dict[str, Any]:
    """Posed views (BOP-like split ``onboarding``, scene id = object id) and STORM-style static
    references (``onboarding_static/obj_XXXXXX/ref_XXXX_{rgb,mask}.png``) per object."""
    ocfg = cfg.onboarding
    camera = make_camera(cfg)
    views = fibonacci_sphere(ocfg.n_views)
    static_views = fibonacci_sphere(ocfg.n_static, min_z=0.15, max_z=0.85)
    with _progress(len(models) * (ocfg.n_views + ocfg.n_static), SPLIT_ONBOARDING, progress) as bar:
        for model in models:
            dist = _framing_distance(model, camera)
            images = []
            for k, v in enumerate(views):
                R, t = object_view_pose(model, v, dist)
                res = _render_alone(renderer, camera, model, R, t, ocfg.background)
                depth = res.depth.astype(np.float64)
                (ann,) = compute_gt_info(renderer, camera, quantize_depth(depth, cfg.depth_scale),
                                         [(model, R, t)], delta=cfg.visib_delta)
                images.append(BopImage(im_id=k, rgb=res.rgb, K=camera.K,
                                       gt=[GTInstance(0, model.obj_id, R, t, visib_fract=ann.visib_fract)],
                                       depth_mm=depth, depth_scale=cfg.depth_scale, masks=[ann.mask],
                                       masks_visib=[ann.mask_visib], gt_info=[ann.info]))
                bar.update(1)
            writer.write_scene(SPLIT_ONBOARDING, model.obj_id, images)
            folder = writer.root / STATIC_DIR / f"obj_{model.obj_id:06d}"
            refs = []
            for k, v in enumerate(static_views):
                R, t = object_view_pose(model, v, dist)
                res = _render_alone(renderer, camera, model, R, t, ocfg.background)
                atomic_write_image(folder / f"ref_{k:04d}_rgb.png", np.ascontiguousarray(res.rgb[:, :, ::-1]))
                atomic_write_image(folder / f"ref_{k:04d}_mask.png", (res.instance_ids == 0).astype(np.uint8) * 255)
                refs.append({"ref_id": k, "cam_R_m2c": R.ravel().tolist(), "cam_t_m2c": t.tolist()})
                bar.update(1)
            atomic_write_json(folder / "refs.json", {
                "obj_id": model.obj_id, "name": model.name, "description": model.description,
                "background_rgb": list(ocfg.background), "cam_K": camera.K.ravel().tolist(),
                "width": camera.width, "height": camera.height, "refs": refs})
    log.info("onboarding: %d objects x (%d posed + %d static) views", len(models), ocfg.n_views, ocfg.n_static)
    return {"n_objects": len(models), "n_views": ocfg.n_views, "n_static": ocfg.n_static}


# --------------------------------------------------------------------------- entry point


def _symmetry_label(m: ObjectModel) -> str:
    parts = []
    if m.symmetries_continuous:
        parts.append("continuous about z")
    if m.symmetries_discrete:
        parts.append(f"{len(m.symmetries_discrete)} discrete")
    return " + ".join(parts) or "none"


def _prepare_output(out: Path) -> Path:
    """A fresh temporary folder beside ``out`` to generate into; ``out`` itself must be absent,
    empty, or a dataset this generator wrote (it is replaced only once the new one is complete)."""
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"output path exists and is not a directory: {out}")
        if any(out.iterdir()) and not (out / "synth_config.json").is_file():
            raise FileExistsError(f"refusing to overwrite {out}: it is not empty and holds no synthetic dataset "
                                  f"(synth_config.json); choose an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished dataset into place (the previous one, if any, is removed afterwards)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)


def generate_bop_dataset(out_dir: str | Path, preset: str | SynthConfig = "default", seed: int = 0,
                         renderer: Renderer | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Generate a synthetic BOP-layout dataset into ``out_dir``; returns a summary dict.

    ``preset`` is a preset name (``smoke``, ``default``, ``large``) or a ``SynthConfig``;
    ``renderer`` defaults to ``repro.render.get_renderer("auto")`` (closed afterwards). Same
    preset, seed and renderer backend give byte-identical files. The dataset is generated in a
    temporary folder beside ``out_dir`` and moved into place when complete, replacing a dataset
    previously generated there; a non-empty folder of anything else is refused
    (``FileExistsError``).
    """
    from repro.data.synth.card import write_card
    from repro.render import get_renderer

    cfg = get_preset(preset) if isinstance(preset, str) else preset
    out = Path(out_dir)
    tmp = _prepare_output(out)
    own_renderer = renderer is None
    t0 = time.perf_counter()
    try:
        renderer = get_renderer("auto") if own_renderer else renderer
        log.info("synthetic BOP dataset %s: preset %s, seed %d, renderer %s", out, cfg.name, seed, renderer.name)
        models, specs = build_objects(cfg.objects, cfg.texture_max_edge)
        writer = BopWriter(tmp, name=out.name)
        extra = models_info_extra(models, specs)
        writer.write_models(models, extra_info=extra)
        writer.write_camera(make_camera(cfg), cfg.depth_scale)
        splits: dict[str, dict[str, Any]] = {}
        for split, scfg, first in ((SPLIT_TEST, cfg.test, 1), (SPLIT_TRAIN, cfg.train, 0)):
            if scfg.n_scenes > 0 and scfg.n_images > 0:
                splits[split] = generate_static_split(writer, renderer, cfg, scfg, split, models, specs, seed,
                                                      first, progress)
        if cfg.video.n_sequences > 0 and cfg.video.n_frames > 0:
            splits[SPLIT_VIDEO] = generate_video_split(writer, renderer, cfg, cfg.video, models, specs, seed,
                                                       progress)
        if SPLIT_TEST in splits:
            writer.write_targets(splits[SPLIT_TEST]["targets"])
        if SPLIT_VIDEO in splits:
            video = splits[SPLIT_VIDEO]
            writer.write_targets(video["targets"], filename=VIDEO_TARGETS)
            writer.write_targets(drop_protocol_targets(video["targets"], video.pop("dropped")),
                                 filename=VIDEO_DROP_TARGETS)
        onboarding = generate_onboarding(writer, renderer, cfg, models, progress)
        split_summary = {}
        for name, s in splits.items():
            tg = s.pop("targets")
            split_summary[name] = {**s, "n_targets": sum(len(t.instances) for t in tg.values()),
                                   "n_target_instances": sum(t.n_instances for t in tg.values())}
        objects = [{"obj_id": m.obj_id, "key": sp.key, "name": sp.name, "kind": sp.kind,
                    "description": sp.description, "textured": sp.textured, "diameter": m.diameter,
                    "n_vertices": len(m.vertices), "symmetry": _symmetry_label(m),
                    "n_symmetries_discrete": len(m.symmetries_discrete),
                    "n_symmetries_continuous": len(m.symmetries_continuous)}
                   for m, sp in zip(models, specs, strict=True)]
        summary: dict[str, Any] = {
            "format": "bop", "name": out.name, "root": str(out), "preset": cfg.name, "seed": int(seed),
            "generator": "repro.data.synth.bop_synth", "generator_version": GENERATOR_VERSION,
            "renderer": renderer.name, "obj_ids": [m.obj_id for m in models], "objects": objects,
            "splits": split_summary, "onboarding": onboarding, "config": cfg.to_dict()}
        atomic_write_json(tmp / "synth_config.json", {k: v for k, v in summary.items() if k not in ("name", "root")})
        write_card(tmp, summary)
        _replace_dir(tmp, out)
    finally:
        if own_renderer and renderer is not None:
            renderer.close()
        if tmp.exists():
            shutil.rmtree(tmp)
    summary["seconds"] = time.perf_counter() - t0
    log.info("synthetic dataset written to %s in %.1f s", out, summary["seconds"])
    return summary
