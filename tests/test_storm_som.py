"""STORM SOM: HSFA structure (Algorithm 1), language injection, losses, training, persistence, baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_storm_references import box_model

from methods.common.backbones import BackboneOutput, FeatureExtractor
from methods.common.checkpoint import CheckpointError
from methods.storm.references import ReferenceSet, render_references
from methods.storm.som import (
    HSFA,
    CosineMatchConfig,
    CosineMatchSegmenter,
    SegmentingObjectModule,
    SOMConfig,
    ema,
    largest_component,
    mask_iou,
    som_loss,
)
from repro.render import Light, RenderInstance, RenderScene
from repro.types import CameraIntrinsics, Frame, GTInstance


def smoke(**kw) -> SOMConfig:
    return SOMConfig.smoke(**kw)


def inputs(cfg: SOMConfig, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, 3, *cfg.query_size, generator=g)
    refs = torch.randn(b, cfg.n_refs, 3, cfg.ref_size, cfg.ref_size, generator=g)
    return q, refs


def test_config_presets_and_from_mapping():
    paper = SOMConfig()
    assert (paper.backbone, paper.text_encoder, paper.hsfa_layers, paper.n_refs) == (
        "dinov2_vits14_reg",
        "clip_vit_b32",
        3,
        16,
    )
    assert (paper.tversky_alpha, paper.tversky_beta, paper.focal_gamma, paper.lambda_tversky, paper.lambda_focal) == (
        0.3,
        0.7,
        2.0,
        1.0,
        0.2,
    )
    assert (paper.lr, paper.warmup_steps, paper.max_steps, paper.grad_clip, paper.weight_decay) == (
        0.01,
        5000,
        80000,
        0.1,
        0.0,
    )
    assert paper.freeze_backbone and paper.language and paper.augment
    cpu = SOMConfig.preset("cpu")
    assert cpu.backbone == "convnet_small_scratch" and not cpu.freeze_backbone and cpu.text_encoder == "hashed_bow"
    assert SOMConfig.from_mapping(cpu.to_dict()) == cpu
    with pytest.raises(ValueError, match="hsfa_layer"):
        SOMConfig.from_mapping({"hsfa_layer": 3})
    with pytest.raises(ValueError, match="loss"):
        SOMConfig(loss="dice")
    tc = paper.train_config(seed=1)
    assert (tc.optimizer, tc.lr, tc.warmup_steps, tc.max_steps, tc.grad_clip_norm) == ("sgd", 0.01, 5000, 80000, 0.1)


@pytest.mark.parametrize("n", [0, 3, 7])
def test_hsfa_block_counts(n):
    h = HSFA(32, 2, n, text_dim=8, mlp_ratio=2.0)
    if n == 0:
        assert h.plain is not None and len(h.layers) == 0
        assert h.plain.self_attn is None and h.plain.cross_attn is not None
    else:
        assert len(h.layers) == n
        assert all(
            layer.query_block.self_attn is not None and layer.query_block.cross_attn is not None for layer in h.layers
        )
        # references are refined after every layer but the last (whose refinement cannot reach the output)
        assert sum(layer.ref_self is not None for layer in h.layers) == n - 1
        assert sum(layer.ref_joint is not None for layer in h.layers) == n - 1
    q, r = torch.randn(2, 12, 32), torch.randn(2, 3, 4, 32)
    assert h(q, r, torch.randn(2, 8)).shape == (2, 12, 32)


def test_som_forward_shapes():
    for n in (0, 2):
        cfg = smoke(hsfa_layers=n)
        som = SegmentingObjectModule(cfg, seed=0)
        q, refs = inputs(cfg)
        out = som.model(q, refs, som.encode_text(["a red mug", "a blue box"]))
        assert out.shape == (2, 1, *cfg.query_size)
        tokens = som.model.encode_references(refs)
        assert tokens.tokens.shape[:2] == (2, cfg.n_refs)
        torch.testing.assert_close(
            som.model(q, tokens, som.encode_text(["a", "b"])), som.model(q, refs, som.encode_text(["a", "b"]))
        )


def test_first_layer_attends_to_raw_references_later_layers_to_refined():
    cfg = smoke(hsfa_layers=3)
    som = SegmentingObjectModule(cfg, seed=0)
    q, refs = inputs(cfg)
    seen = []
    hooks = [
        layer.query_block.register_forward_hook(lambda m, a, out: seen.append(a[1].detach().clone()))
        for layer in som.model.hsfa.layers
    ]
    with torch.no_grad():
        som.model(q, refs, som.encode_text(["x", "y"]))
        raw = som.model.proj(som.model.encode_references(refs).tokens)
    for h in hooks:
        h.remove()
    b, v, t, d = raw.shape
    torch.testing.assert_close(seen[0], raw.reshape(b, v * t, d))
    with torch.no_grad():
        r1 = som.model.hsfa.layers[0].ref_joint(
            som.model.hsfa.layers[0].ref_self(raw.reshape(b * v, t, d)).reshape(b, v * t, d)
        )
    torch.testing.assert_close(seen[1], r1)
    assert not torch.allclose(seen[1], seen[0])


def test_language_has_no_effect_at_init_but_does_after_a_step():
    cfg = smoke(hsfa_layers=2)
    som = SegmentingObjectModule(cfg, seed=0)
    q, refs = inputs(cfg, b=1)
    a, b = som.encode_text(["a red mug"]), som.encode_text(["a tiny green screw"])
    assert not torch.allclose(a, b)
    with torch.no_grad():
        torch.testing.assert_close(som.model(q, refs, a), som.model(q, refs, b))
    opt = torch.optim.SGD(som.parameters(), lr=0.1)
    target = (torch.rand(1, 1, *cfg.query_size, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    som_loss(som.model(q, refs, som.encode_text(["a red mug"])), target, cfg)["loss"].backward()
    opt.step()
    with torch.no_grad():
        a, b = som.encode_text(["a red mug"]), som.encode_text(["a tiny green screw"])
        assert (som.model(q, refs, a) - som.model(q, refs, b)).abs().max() > 1e-6
    off = SegmentingObjectModule(smoke(hsfa_layers=2, language=False), seed=0)
    assert off.encode_text(["a"]) is None


def test_losses_match_hand_computation():
    logits = torch.tensor([[[[0.0, math.log(3.0)], [-math.log(3.0), 0.0]]]])  # p = .5, .75, .25, .5
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    p = np.array([0.5, 0.75, 0.25, 0.5])
    t = np.array([1, 1, 0, 0])
    tp, fp, fn = (p * t).sum(), (p * (1 - t)).sum(), ((1 - p) * t).sum()  # 1.25, .75, .75
    tversky = 1 - (tp + 1) / (tp + 0.3 * fn + 0.7 * fp + 1)
    focal = np.mean(-((1 - p) ** 2) * t * np.log(p) - p**2 * (1 - t) * np.log(1 - p))
    out = som_loss(logits, target, SOMConfig())
    assert out["tversky"].item() == pytest.approx(tversky, rel=1e-5)
    assert out["focal"].item() == pytest.approx(focal, rel=1e-5)
    assert out["loss"].item() == pytest.approx(tversky + 0.2 * focal, rel=1e-5)
    pt = np.where(t == 1, p, 1 - p)
    focal_a = np.mean(np.where(t == 1, 0.25, 0.75) * (1 - pt) ** 2 * -np.log(pt))
    dice = 1 - (2 * tp + 1) / (2 * tp + fp + fn + 1)
    iou = 1 - (tp + 1) / (tp + fp + fn + 1)
    tv5 = 1 - (tp + 1) / (tp + 0.5 * fn + 0.5 * fp + 1)
    out = som_loss(logits, target, SOMConfig(loss="appendix"))
    assert out["loss"].item() == pytest.approx(20 * focal_a + dice + iou + 0.2 * tv5, rel=1e-5)


def test_ema_and_helpers():
    assert ema([2.0, 2.0, 2.0]) == pytest.approx(2.0)
    assert ema([10.0] + [1.0] * 500) == pytest.approx(1.0, abs=1e-3)
    m = np.zeros((10, 10), bool)
    m[0:2, 0:2] = True
    m[5:9, 5:9] = True
    assert largest_component(m).sum() == 16
    assert mask_iou(m, m) == 1.0 and mask_iou(m, np.zeros_like(m)) == 0.0


# --------------------------------------------------------------------------- tiny training set


class TinyDataset:
    """Two boxes rendered into 64x48 images on a textured background (in memory, BopDataset-like)."""

    def __init__(self, renderer, n_images: int = 1):
        self.models = {1: box_model(1, (30.0, 20.0, 12.0)), 2: box_model(2, (12.0, 12.0, 25.0))}
        object.__setattr__(self.models[2], "colors", np.tile([0.1, 0.3, 0.9], (8, 1)))
        object.__setattr__(self.models[2], "description", "a tall blue box")
        cam = CameraIntrinsics(np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]]), 64, 48)
        rng = np.random.default_rng(0)
        self.frames = []
        for k in range(n_images):
            R = np.eye(3)
            insts = (
                RenderInstance(self.models[1], R, [-20.0 + 5 * k, 0.0, 250.0]),
                RenderInstance(self.models[2], R, [40.0, 10.0, 300.0]),
            )
            res = renderer.render(RenderScene(cam, insts, light=Light()), {"ids", "rgb"})
            bg = (rng.uniform(0, 80, (48, 64, 3))).astype(np.uint8)
            fg = res.instance_ids >= 0
            rgb = np.where(fg[..., None], res.rgb, bg).astype(np.uint8)
            gts = tuple(
                GTInstance(i, m.obj_id, R, inst.t, visib_fract=1.0, mask_visib=res.instance_ids == i)
                for i, (m, inst) in enumerate(zip(self.models.values(), insts, strict=True))
            )
            self.frames.append(Frame(rgb=rgb, camera=cam, scene_id=0, im_id=k, gt=gts))

    def objects(self):
        return dict(self.models)

    def iter_frames(self, scene_ids=None, *, with_gt=True, load_masks=False):
        for f in self.frames:
            yield f, None


@pytest.fixture(scope="module")
def tiny(renderer):
    ds = TinyDataset(renderer)
    refs = {o: render_references(m, n_views=4, size=32, renderer=renderer) for o, m in ds.models.items()}
    return ds, refs


OVERFIT = {"augment": False, "optimizer": "adam", "lr": 1e-2, "max_steps": 100, "batch_size": 2, "grad_clip": None}


@pytest.fixture(scope="module")
def overfitted(tiny):
    ds, refs = tiny
    som = SegmentingObjectModule(smoke(**OVERFIT), seed=0)
    summary = som.fit(ds, progress=False, references=refs)
    return som, summary


def test_overfit_tiny_scene_and_segment(tiny, overfitted):
    ds, refs = tiny
    som, summary = overfitted
    curve = [v for _, v in summary["loss_curve"]]
    assert summary["steps"] == 100 and summary["n_samples"] == 2
    assert curve[-1] < 0.5 * curve[0]
    assert summary["ema_loss"] < curve[0]
    frame = ds.frames[0]
    for o, gt in zip((1, 2), frame.gt, strict=True):
        som.prepare(refs[o])
        res = som.segment(frame.rgb, o)
        assert res.mask.shape == (48, 64) and res.mask.dtype == bool and 0.0 <= res.score <= 1.0
        assert res.prob.shape == som.cfg.query_size and res.prob.dtype == np.float32
        assert mask_iou(res.mask, gt.mask_visib) > 0.5
    with pytest.raises(KeyError, match="prepare"):
        som.segment(frame.rgb, 99)


def test_save_load_roundtrip_and_config_mismatch(tmp_path, tiny, overfitted):
    ds, refs = tiny
    som, _ = overfitted
    som.save(tmp_path / "som")
    again = SegmentingObjectModule.from_checkpoint(tmp_path / "som")
    q, r = inputs(som.cfg, b=1)
    with torch.no_grad():
        t = som.encode_text(["a tall blue box"])
        torch.testing.assert_close(
            again.model(q, r, again.encode_text(["a tall blue box"])), som.model(q, r, t), rtol=0, atol=0
        )
    inplace = SegmentingObjectModule(som.cfg, seed=5)
    inplace.load(tmp_path / "som")
    for o in (1, 2):
        inplace.prepare(refs[o])
        som.prepare(refs[o])
        np.testing.assert_array_equal(inplace.segment(ds.frames[0].rgb, o).prob, som.segment(ds.frames[0].rgb, o).prob)
    other = SegmentingObjectModule(smoke(**{**OVERFIT, "hsfa_layers": 2}), seed=0)
    with pytest.raises(CheckpointError, match="hsfa_layers"):
        other.load(tmp_path / "som")
    with pytest.raises(FileNotFoundError, match=r"som_config\.json"):
        other.load(tmp_path / "nowhere")


def test_training_is_deterministic_under_a_seed(tiny):
    ds, refs = tiny
    runs = []
    for _ in range(2):
        som = SegmentingObjectModule(smoke(max_steps=3), seed=7)
        s = som.fit(ds, progress=False, references=refs)
        runs.append((s["loss_curve"], [p.detach().clone() for p in som.model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))
    other = SegmentingObjectModule(smoke(max_steps=3), seed=8)
    assert not all(torch.equal(a, b) for a, b in zip(other.model.parameters(), runs[0][1], strict=True))


# --------------------------------------------------------------------------- cosine baseline


class MeanColour(FeatureExtractor):
    """Features = mean colour of each 8x8 patch plus a constant (known cosine similarities)."""

    embed_dim = 4
    patch_size = 8
    num_register_tokens = 0
    num_layers = 1

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images, layers=None, *, masks=None, norm_intermediates=True):
        p = torch.nn.functional.avg_pool2d(images, 8)
        b, _, h, w = p.shape
        tokens = torch.cat([p, torch.full((b, 1, h, w), 0.1)], 1).flatten(2).transpose(1, 2)
        return BackboneOutput(tokens, tokens.mean(1), tokens[:, :0], (h, w))


def test_cosine_match_segments_the_reference_colour():
    seg = CosineMatchSegmenter(
        MeanColour(), CosineMatchConfig(threshold=0.6, query_size=(48, 64), ref_size=32, n_refs=2)
    )
    ref_img = np.zeros((2, 32, 32, 3), np.uint8)
    ref_img[:] = (30, 30, 30)
    ref_img[:, 8:24, 8:24] = (230, 20, 20)
    masks = np.zeros((2, 32, 32), bool)
    masks[:, 8:24, 8:24] = True
    seg.prepare(ReferenceSet(5, ref_img, masks, "red", None, "test"))
    query = np.zeros((96, 128, 3), np.uint8)
    query[:] = (20, 20, 200)
    query[32:64, 32:64] = (230, 20, 20)  # the object
    query[80:88, 110:118] = (230, 20, 20)  # a smaller distractor: dropped by the largest component
    res = seg.segment(query, 5)
    truth = np.zeros((96, 128), bool)
    truth[32:64, 32:64] = True
    assert res.mask.shape == (96, 128) and mask_iou(res.mask, truth) > 0.7
    assert not res.mask[80:88, 110:118].any() and res.score > 0.7
