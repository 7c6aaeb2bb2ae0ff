"""STORM's TOM: crops against analytic boxes, the tracking dataset's kinds/balance/IoUs/determinism, the
heads (cosine threshold, a toy matching task), BCE (Eq. 15), persistence and the Table 5 driver; crops in
disk memmaps and streamed features against the in-memory / precomputed paths, and the memory budgets."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("EGL_PLATFORM", "surfaceless")

from methods.common.backbones import BackboneOutput, FeatureExtractor, create_backbone
from methods.storm.tom import (
    KINDS,
    PRESETS,
    PairFeatures,
    TOMConfig,
    TrackingPairs,
    TrackingVerifier,
    box_crop,
    box_iou,
    build_tracking_pairs,
    crop_bytes,
    crops_on_disk,
    fit_threshold,
    segmented_crop,
    split_scenes,
    tom_loss,
    train_tom_variants,
    variant_config,
)
from repro.data.bop import BopDataset

FAST = {"timing_calls": 2, "timing_warmup": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny heads train far faster on one thread (and do not thrash a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class PatchColour(FeatureExtractor):
    """Frozen toy backbone: per-patch mean colour through a fixed random linear map (embed_dim 16)."""

    def __init__(self, patch_size: int = 8, embed_dim: int = 16):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_register_tokens = 0
        self.num_layers = 1
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Linear(3, embed_dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(embed_dim, 3, generator=g))
            self.proj.bias.zero_()

    def forward(self, images, layers=None, *, masks=None, norm_intermediates=True) -> BackboneOutput:
        x = F.avg_pool2d(images, self.patch_size)
        h, w = x.shape[-2:]
        tokens = self.proj(x.flatten(2).transpose(1, 2))
        return BackboneOutput(patch_tokens=tokens, cls_token=None, register_tokens=tokens[:, :0], grid=(h, w))


def _image(h: int = 80, w: int = 100) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)


def _hand_pairs(mem: np.ndarray, qry: np.ndarray, labels: np.ndarray) -> TrackingPairs:
    n = len(labels)
    kinds = np.where(labels == 1, "positive", "other_object")
    return TrackingPairs(memory_pool=mem, memory_index=np.arange(n), query_crops=qry, labels=labels.astype(np.uint8),
                         kinds=kinds, obj_ids=np.zeros(n, np.int64), query_obj_ids=np.zeros(n, np.int64),
                         query_boxes=np.zeros((n, 4)), reference_boxes=np.zeros((n, 4)))


# --------------------------------------------------------------------------- config


def test_config_defaults_are_the_paper_and_unknown_keys_fail():
    cfg = TOMConfig()
    assert (cfg.variant, cfg.layers, cfg.lr, cfg.batch_size, cfg.epochs) == ("attention", 1, 1e-4, 64, 10)
    assert (cfg.n_positive, cfg.n_negative, cfg.threshold) == (100_000, 100_000, 0.5)
    assert TOMConfig.from_mapping({"layers": 2}).layers == 2
    with pytest.raises(ValueError, match="bogus"):
        TOMConfig.from_mapping({"bogus": 1})
    with pytest.raises(ValueError, match="variant"):
        TOMConfig(variant="mlp")
    assert PRESETS["paper"] == TOMConfig()
    cpu = TOMConfig.preset("cpu")
    assert cpu.crop_size == 64 and cpu.n_positive == 2000 and cpu.lr == 1e-3
    assert TOMConfig.from_mapping(cpu.to_dict()) == cpu
    assert variant_config(cpu, "attention2").layers == 2 and variant_config(cpu, "cosine").variant == "cosine"


# --------------------------------------------------------------------------- crops


def test_box_iou_analytic():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_box_crop_inside_margin_and_padding():
    rgb = _image()
    np.testing.assert_array_equal(box_crop(rgb, (10, 20, 30, 30), 30, margin=0.0), rgb[20:50, 10:40])
    # 10x20 box, margin 0.25 -> side 30 square centred on (45, 50)
    np.testing.assert_array_equal(box_crop(rgb, (40, 40, 10, 20), 30, margin=0.25), rgb[35:65, 30:60])
    out = box_crop(rgb, (-10, -10, 20, 20), 20, margin=0.0)
    assert not out[:10].any() and not out[:, :10].any()
    np.testing.assert_array_equal(out[10:, 10:], rgb[:10, :10])
    out = box_crop(rgb, (90, 70, 20, 20), 20, margin=0.0)
    np.testing.assert_array_equal(out[:10, :10], rgb[70:80, 90:100])
    assert not out[10:].any() and not out[:, 10:].any()
    flat = np.full((80, 100, 3), 77, np.uint8)
    small = box_crop(flat, (0, 0, 64, 64), 16, margin=0.0)
    assert small.shape == (16, 16, 3) and small.dtype == np.uint8 and (small == 77).all()


def test_segmented_crop_masks_the_background():
    rgb = _image() | 1  # no zero pixels inside
    mask = np.zeros(rgb.shape[:2], bool)
    mask[30:50, 20:60] = True  # 40 wide, 20 high box
    mask[30, 20] = False
    out = segmented_crop(rgb, mask, 40, margin=0.0)  # square 40 centred on (40, 40): rows 20..59
    expect = np.where(mask[..., None], rgb, 0)[20:60, 20:60]
    np.testing.assert_array_equal(out, expect)
    assert not out[:10].any() and out[10:30].any() and out[10, 0].sum() == 0
    edge = np.zeros(rgb.shape[:2], bool)
    edge[:10, :10] = True
    out = segmented_crop(rgb, edge, 20, margin=0.5)  # side 20 at (-5, -5)
    np.testing.assert_array_equal(out[5:15, 5:15], rgb[:10, :10])
    assert out[:5].sum() == 0 and out[15:].sum() == 0
    with pytest.raises(ValueError):
        segmented_crop(rgb, np.zeros(rgb.shape[:2], bool), 16)


# --------------------------------------------------------------------------- the tracking dataset


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    from repro.data.synth.bop_synth import generate_bop_dataset

    root = tmp_path_factory.mktemp("tom_synth") / "ds"
    generate_bop_dataset(root, "smoke", seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def smoke_pairs(smoke_root) -> TrackingPairs:
    cfg = TOMConfig.preset("smoke", n_positive=80, n_negative=80)
    return build_tracking_pairs(BopDataset(smoke_root, split="train_pbr"), cfg, np.random.default_rng(0),
                                progress=False)


def test_pairs_kinds_balance_and_boxes(smoke_pairs):
    p = smoke_pairs
    assert len(p) == 160 and int(p.labels.sum()) == 80
    assert p.query_crops.shape == (160, 32, 32, 3) and p.memory_crops.shape == (160, 32, 32, 3)
    assert set(np.unique(p.kinds)) == set(KINDS)
    np.testing.assert_array_equal(p.labels == 1, p.kinds == "positive")
    other = p.kinds == "other_object"
    assert (p.obj_ids[other] != p.query_obj_ids[other]).all()
    assert (p.obj_ids[~other] == p.query_obj_ids[~other]).all()
    ious = np.array([box_iou(a, b) for a, b in zip(p.query_boxes, p.reference_boxes, strict=True)])
    assert (ious[p.kinds == "positive"] >= 0.7).all()
    assert (ious[p.kinds == "shifted"] < 0.3).all()
    assert (ious[p.kinds == "random_crop"] < 0.1).all()
    counts = np.bincount(p.obj_ids)[np.unique(p.obj_ids)]
    assert len(counts) == 4 and counts.min() >= 20  # uniform over the 4 objects
    # memory crops are segmented: each has background zeros, queries are plain image crops
    assert all((m.sum(-1) == 0).any() for m in p.memory_pool)
    assert p.query_crops.reshape(len(p), -1).any(axis=1).all()


def test_pairs_are_deterministic_under_a_seed(smoke_root):
    ds = BopDataset(smoke_root, split="train_pbr")
    cfg = TOMConfig.preset("smoke")
    a = build_tracking_pairs(ds, cfg, np.random.default_rng(3), progress=False)
    b = build_tracking_pairs(ds, cfg, np.random.default_rng(3), progress=False)
    c = build_tracking_pairs(ds, cfg, np.random.default_rng(4), progress=False)
    for f in dataclasses.fields(TrackingPairs):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
    assert not np.array_equal(a.query_boxes, c.query_boxes)


def test_split_scenes():
    tr, va = split_scenes([5, 1, 2, 3, 4], 0.2, seed=0)
    assert sorted(tr + va) == [1, 2, 3, 4, 5] and len(va) == 1 and not set(tr) & set(va)
    assert split_scenes([5, 1, 2, 3, 4], 0.2, seed=0) == (tr, va)
    assert split_scenes([7], 0.5, seed=0) == ([7], [])
    assert len(split_scenes(range(6), 0.01, seed=1)[1]) == 1


# --------------------------------------------------------------------------- heads and training


def test_bce_matches_equation_15():
    z = torch.tensor([2.0, -1.0, 0.5, -3.0])
    y = torch.tensor([1.0, 0.0, 0.0, 1.0])
    expect = np.mean([max(zi, 0) - zi * yi + math.log1p(math.exp(-abs(zi))) for zi, yi in zip(z.tolist(), y.tolist(),
                                                                                                  strict=True)])
    assert float(tom_loss(z, y)) == pytest.approx(expect, rel=1e-6)


def test_fit_threshold_separable():
    t, acc = fit_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]))
    assert acc == 1.0 and 0.2 < t < 0.8


def test_cosine_variant_separates_toy_features():
    g = torch.Generator().manual_seed(0)
    n, t, c = 40, 4, 16
    mem = torch.randn(n, t, c, generator=g)
    qry = torch.randn(n, t, c, generator=g)
    labels = np.arange(n) % 2
    qry[labels == 1] = mem[labels == 1] + 0.05 * torch.randn(int(labels.sum()), t, c, generator=g)
    crops = np.zeros((n, 32, 32, 3), np.uint8)
    pairs = _hand_pairs(crops, crops, labels)
    feats = PairFeatures(memory=mem, query=qry)
    bb = PatchColour(embed_dim=c)
    model = TrackingVerifier(bb, TOMConfig.preset("smoke", variant="cosine", **FAST))
    fit = model.fit(pairs, progress=False, train_features=feats)
    assert fit["history"][0]["train_accuracy"] == 1.0
    res = model.evaluate(pairs, feats)
    assert res["accuracy"] == 1.0 and res["precision"] == 1.0 and res["recall"] == 1.0
    assert res["seconds_per_frame"] > 0


def _pattern_crops(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops of two colour halves; positives repeat the memory's pattern (with noise), negatives differ."""
    palette = np.array([[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20], [20, 230, 230], [230, 20, 230]])

    def render(pattern: np.ndarray) -> np.ndarray:
        img = np.zeros((32, 32, 3), np.int64)
        img[:16] = palette[pattern[0]]
        img[16:] = palette[pattern[1]]
        return np.clip(img + rng.integers(-15, 16, img.shape), 0, 255).astype(np.uint8)

    labels = (np.arange(n) % 2).astype(np.uint8)
    mem, qry = [], []
    for i in range(n):
        p = rng.integers(0, len(palette), 2)
        q = p if labels[i] else rng.integers(0, len(palette), 2)
        while not labels[i] and np.array_equal(np.sort(q), np.sort(p)):
            q = rng.integers(0, len(palette), 2)
        mem.append(render(p))
        qry.append(render(q))
    return np.stack(mem), np.stack(qry), labels


def test_attention_head_learns_a_colour_pattern_task():
    rng = np.random.default_rng(0)
    train = _hand_pairs(*_pattern_crops(rng, 512))
    val = _hand_pairs(*_pattern_crops(rng, 200))
    cfg = TOMConfig.preset("smoke", dim=32, heads=2, lr=1e-3, batch_size=32, epochs=20, **FAST)
    model = TrackingVerifier(PatchColour(), cfg, seed=0)
    fit = model.fit(train, val, progress=False)
    assert fit["steps"] == 20 * 16
    assert fit["history"][-1]["loss"] < fit["history"][0]["loss"]
    res = model.evaluate(val)
    assert res["accuracy"] > 0.9, res


def test_save_load_round_trip(tmp_path, smoke_pairs):
    bb = create_backbone("vit_tiny_scratch", seed=0, depth=2, patch_size=8)
    cfg = TOMConfig.preset("smoke", **FAST)
    model = TrackingVerifier(bb, cfg, seed=1)
    model.fit(smoke_pairs, progress=False)
    feats = model.encode_pairs(smoke_pairs)
    before = model.pair_logits(feats, smoke_pairs.memory_index)
    model.save(tmp_path / "tom")
    loaded = TrackingVerifier.load(tmp_path / "tom", bb, expected=cfg)
    torch.testing.assert_close(loaded.pair_logits(feats, smoke_pairs.memory_index), before, rtol=0, atol=0)
    assert loaded.cfg == cfg
    with pytest.raises(ValueError, match="layers"):
        TrackingVerifier.load(tmp_path / "tom", bb, expected=dataclasses.replace(cfg, layers=2))
    with pytest.raises(ValueError, match="dim"):
        TrackingVerifier.load(tmp_path / "tom", PatchColour(patch_size=8, embed_dim=16))
    # verify: max over the memory pool
    q = smoke_pairs.query_crops[0]
    m1, m2 = (model.encode(smoke_pairs.memory_pool[i])[0] for i in (0, 1))
    assert model.verify(q, [m1, m2]) == pytest.approx(max(model.verify(q, [m1]), model.verify(q, [m2])), abs=1e-6)
    assert 0.0 <= model.verify(q, torch.stack([m1, m2])) <= 1.0


def test_train_tom_variants_reports_every_variant(smoke_pairs):
    bb = create_backbone("vit_tiny_scratch", seed=0, depth=2, patch_size=8)
    cfg = TOMConfig.preset("smoke", **FAST)
    train, val = smoke_pairs.subset(np.arange(0, 160, 2)), smoke_pairs.subset(np.arange(1, 160, 2))
    res = train_tom_variants(bb, train, val, cfg, seed=0, test_pairs=val, progress=False)
    assert list(res) == ["cosine", "no_attention", "attention1", "attention2"]
    for r in res.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["ms_per_frame"] > 0 and r["n"] == 80
        assert set(r["per_kind_accuracy"]) <= set(KINDS)
        assert r["test"]["accuracy"] == r["accuracy"]  # same pairs, same model
    assert "cos_threshold" in res["cosine"]["fit"] and res["attention2"]["fit"]["steps"] == 2 * 5


# --------------------------------------------------------------------------- memory budgets: memmaps, streaming


def test_cache_dir_pairs_equal_in_memory_pairs(smoke_root, tmp_path):
    ds = BopDataset(smoke_root, split="train_pbr")
    cfg = TOMConfig.preset("smoke")
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    a = build_tracking_pairs(ds, cfg, rng_a, progress=False)
    b = build_tracking_pairs(ds, cfg, rng_b, progress=False, cache_dir=tmp_path / "crops")
    for f in dataclasses.fields(TrackingPairs):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
    assert rng_a.integers(1 << 30) == rng_b.integers(1 << 30)  # the same draws
    assert sorted(p.name for p in (tmp_path / "crops").iterdir()) == ["memory_pool.npy", "query_crops.npy"]
    for name, arr in (("memory_pool", b.memory_pool), ("query_crops", b.query_crops)):
        assert isinstance(arr, np.memmap) and not arr.flags.writeable
        assert Path(arr.filename) == tmp_path / "crops" / f"{name}.npy"
        np.testing.assert_array_equal(np.load(tmp_path / "crops" / f"{name}.npy"), getattr(a, name))


def test_cache_dir_leaves_no_file_after_a_failure(smoke_root, tmp_path, monkeypatch):
    ds = BopDataset(smoke_root, split="train_pbr")
    calls = []

    def failing_load(*args, **kwargs):
        calls.append(args)
        if len(calls) > 2:
            raise OSError("disk gone")
        return BopDataset.load_frame(ds, *args, **kwargs)

    monkeypatch.setattr(ds, "load_frame", failing_load)
    with pytest.raises(OSError, match="disk gone"):
        build_tracking_pairs(ds, TOMConfig.preset("smoke"), np.random.default_rng(0), progress=False,
                             cache_dir=tmp_path / "crops")
    assert list((tmp_path / "crops").iterdir()) == []


@pytest.fixture(scope="module")
def cached_pairs(smoke_root, tmp_path_factory) -> TrackingPairs:
    """``smoke_pairs`` again, with the crops in read-only memmaps."""
    cfg = TOMConfig.preset("smoke", n_positive=80, n_negative=80)
    return build_tracking_pairs(BopDataset(smoke_root, split="train_pbr"), cfg, np.random.default_rng(0),
                                progress=False, cache_dir=tmp_path_factory.mktemp("tom_crops"))


@pytest.mark.parametrize("name", ["attention1", "cosine"])
def test_streamed_fit_matches_precomputed(name, smoke_pairs, cached_pairs):
    bb = create_backbone("vit_tiny_scratch", seed=0, depth=2, patch_size=8)
    cfg = variant_config(TOMConfig.preset("smoke", **FAST), name)
    pre = TrackingVerifier(bb, cfg, seed=0)
    fit_pre = pre.fit(smoke_pairs, smoke_pairs, progress=False)
    streamed = TrackingVerifier(bb, dataclasses.replace(cfg, feature_memory_gb=0.0), seed=0)
    fit_str = streamed.fit(cached_pairs, cached_pairs, progress=False)
    assert (fit_pre["features"], fit_str["features"]) == ("precomputed", "streamed")
    assert fit_pre["steps"] == fit_str["steps"] and len(fit_pre["history"]) == len(fit_str["history"])
    for a, b in zip(fit_pre["history"], fit_str["history"], strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], abs=1e-5), (k, a, b)
    proba_pre, proba_str = pre.predict_proba(smoke_pairs), streamed.predict_proba(cached_pairs)
    np.testing.assert_allclose(proba_str, proba_pre, rtol=0, atol=1e-5)
    np.testing.assert_allclose(pre.predict_proba(smoke_pairs, stream=True), proba_pre, rtol=0, atol=1e-5)
    acc_pre, acc_str = pre.evaluate(smoke_pairs)["accuracy"], streamed.evaluate(cached_pairs)["accuracy"]
    assert acc_pre == acc_str


def test_feature_estimate_and_choice(smoke_pairs, caplog):
    model = TrackingVerifier(PatchColour(patch_size=8, embed_dim=16), TOMConfig.preset("smoke", **FAST))
    assert model.token_shape() == (16, 16)  # 32 px crops, 8 px patches
    one = (len(smoke_pairs.memory_pool) + len(smoke_pairs)) * 16 * 16 * 4
    assert model.feature_bytes(smoke_pairs) == one and model.feature_bytes(smoke_pairs, None, smoke_pairs) == 2 * one
    with caplog.at_level(logging.INFO, logger="methods.storm.tom"):
        assert model.should_precompute(smoke_pairs)
        tiny = TrackingVerifier(model.backbone, TOMConfig.preset("smoke", feature_memory_gb=one / 2e9))
        assert not tiny.should_precompute(smoke_pairs)
    assert "precomputed" in caplog.records[0].getMessage()
    assert "streamed" in caplog.records[1].getMessage() and "budget" in caplog.records[1].getMessage()


def test_crop_estimate_and_choice():
    cpu, paper = TOMConfig.preset("cpu"), TOMConfig.preset("paper")
    assert crop_bytes(cpu) == 2 * 4000 * 64 * 64 * 3 and crop_bytes(cpu, 10) == 2 * 10 * 64 * 64 * 3
    assert crop_bytes(paper) == 2 * 200_000 * 224 * 224 * 3
    assert not crops_on_disk(cpu, 8000) and crops_on_disk(paper)
    assert crops_on_disk(dataclasses.replace(cpu, crop_memory_gb=0.0), 8000)
    with pytest.raises(ValueError, match="memory_gb"):
        TOMConfig(feature_memory_gb=-1.0)


@pytest.mark.parametrize("budget", [0.0, None])
def test_fit_tom_builds_crops_on_disk_above_the_budget(budget, monkeypatch):
    import methods.storm.method as storm_method

    tom = {} if budget is None else {"crop_memory_gb": budget}
    method = storm_method.StormMethod({"preset": "smoke", "tom": tom}, seed=0)
    seen: list[Path | None] = []

    def fake_build(dataset, cfg, rng, scene_ids=None, *, progress=True, cache_dir=None):
        seen.append(None if cache_dir is None else Path(cache_dir))
        assert cache_dir is None or Path(cache_dir).parent.is_dir()
        raise RuntimeError("stop here")

    class Data:
        def scene_ids(self) -> list[int]:
            return [1, 2, 3, 4]

    monkeypatch.setattr(storm_method, "build_tracking_pairs", fake_build)
    with pytest.raises(RuntimeError, match="stop here"):
        method._fit_tom(Data(), None, method.config.tom)
    if budget is None:
        assert seen == [None]
    else:
        assert seen[0].name == "train" and not seen[0].parent.exists()  # removed on the error too


def test_train_tom_variants_streams_above_the_budget(smoke_pairs):
    bb = create_backbone("vit_tiny_scratch", seed=0, depth=2, patch_size=8)
    cfg = TOMConfig.preset("smoke", **FAST)
    train, val = smoke_pairs.subset(np.arange(0, 160, 2)), smoke_pairs.subset(np.arange(1, 160, 2))
    names = ("cosine", "attention1")
    pre = train_tom_variants(bb, train, val, cfg, variants=names, seed=0, progress=False)
    streamed = train_tom_variants(bb, train, val, dataclasses.replace(cfg, feature_memory_gb=0.0), variants=names,
                                  seed=0, progress=False)
    for name in names:
        assert (pre[name]["fit"]["features"], streamed[name]["fit"]["features"]) == ("precomputed", "streamed")
        assert streamed[name]["accuracy"] == pre[name]["accuracy"]
