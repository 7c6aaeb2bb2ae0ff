"""Synthetic BOP data generation: seconds per annotated image.

Run: ``pytest benchmarks/bench_synth.py --benchmark-only``. One "image" is a full test image:
layout-independent rendering (objects, distractors, textured table, background), BOP
annotation (each GT rendered alone, visibility, masks, ``scene_gt_info``) and the PNG encoding
``BopWriter`` does. ``..._smoke_dataset`` times the whole ``smoke`` preset;
``extra_info['s_per_image']`` divides by its number of scene images (test + train_pbr + video).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

os.environ.setdefault("EGL_PLATFORM", "surfaceless")

from repro.data.synth.bop_synth import (
    _random_camera,
    _rng,
    _scene_target,
    annotate_view,
    build_objects,
    generate_bop_dataset,
    layout_scene,
    make_camera,
    make_environment,
    render_view,
)
from repro.data.synth.presets import PRESETS, get_preset
from repro.render import get_renderer


@pytest.fixture(scope="module")
def renderer():
    r = get_renderer("auto")
    yield r
    r.close()


def _encode(image) -> int:
    n = len(cv2.imencode(".png", np.ascontiguousarray(image.rgb[:, :, ::-1]))[1])
    n += len(cv2.imencode(".png", np.round(image.depth_mm / image.depth_scale).astype(np.uint16))[1])
    for m in (*image.masks, *image.masks_visib):
        n += len(cv2.imencode(".png", m.astype(np.uint8) * 255)[1])
    return n


@pytest.mark.parametrize("size", ["320x240", "640x480"])
def test_bench_one_test_image(benchmark, renderer, size):
    width, height = (int(x) for x in size.split("x"))
    cfg = get_preset("smoke", width=width, height=height)
    models, specs = build_objects(cfg.objects, cfg.texture_max_edge)
    rng = _rng(0, "test", 1)
    placements = layout_scene(rng, models, specs, cfg.test.n_objects, cfg.test.n_distractors, 0.0, 200.0)
    camera = make_camera(cfg)
    counter = iter(range(10**9))

    def one_image():
        k = next(counter)
        img_rng = _rng(0, "test", 1, k)
        env = make_environment(img_rng, cfg.width, cfg.height)
        R, t = _random_camera(img_rng, cfg, _scene_target(placements))
        view = render_view(renderer, camera, R, t, placements, env, img_rng, cfg.rgb_noise_sigma)
        image = annotate_view(renderer, camera, view, R, t, placements, k, cfg)
        return _encode(image)

    benchmark.extra_info["renderer"] = renderer.name
    benchmark.extra_info["n_gt"] = sum(p.annotated for p in placements)
    benchmark.pedantic(one_image, rounds=8, warmup_rounds=1)


def test_bench_smoke_dataset(benchmark, renderer, tmp_path):
    cfg = PRESETS["smoke"]
    n_images = (cfg.test.n_scenes * cfg.test.n_images + cfg.train.n_scenes * cfg.train.n_images
                + cfg.video.n_sequences * cfg.video.n_frames)
    counter = iter(range(10**9))

    def run():
        generate_bop_dataset(tmp_path / f"ds{next(counter)}", "smoke", seed=0, renderer=renderer, progress=False)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    benchmark.extra_info["renderer"] = renderer.name
    benchmark.extra_info["n_scene_images"] = n_images
    benchmark.extra_info["s_per_image"] = benchmark.stats.stats.mean / n_images
