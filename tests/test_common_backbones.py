"""Backbones: DINOv2-architecture ViT, both official checkpoint layouts, presets, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.common.backbones import (
    BACKBONE_PRESETS,
    VisionTransformer,
    available_backbones,
    create_backbone,
    detect_vit_layout,
    hf_to_hub_state_dict,
    hub_to_hf_state_dict,
    preprocess_images,
)
from methods.common.checkpoint import (
    TRANSPOSE,
    CheckpointKeyError,
    FusedQKV,
    StateDictMapping,
    WeightsNotFoundError,
    write_safetensors,
)

TINY = {"img_size": 56, "embed_dim": 32, "depth": 3, "num_heads": 2}


def tiny(name: str = "dinov2_vits14_reg", seed: int = 0, **kw) -> VisionTransformer:
    model = create_backbone(name, random_init=True, seed=seed, **{**TINY, **kw}).eval()
    with torch.no_grad():  # make LayerScale, norms and biases non-trivial so a mapping slip would show
        gen = torch.Generator().manual_seed(seed + 100)
        for n, p in model.named_parameters():
            if n.endswith(("bias", "gamma")) or "norm" in n:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def official_hub_keys(depth: int, registers: bool, swiglu: bool = False) -> set[str]:
    keys = {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    keys |= {"norm.weight", "norm.bias"} | ({"register_tokens"} if registers else set())
    ffn = ("mlp.w12", "mlp.w3") if swiglu else ("mlp.fc1", "mlp.fc2")
    for i in range(depth):
        for mod in ("norm1", "attn.qkv", "attn.proj", "norm2", *ffn):
            keys |= {f"blocks.{i}.{mod}.weight", f"blocks.{i}.{mod}.bias"}
        keys |= {f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"}
    return keys


def test_presets_have_the_official_key_layout():
    expected_dims = {"s": (384, 12), "b": (768, 12), "l": (1024, 24), "g": (1536, 40)}
    for letter, (dim, depth) in expected_dims.items():
        for reg in (False, True):
            name = f"dinov2_vit{letter}14" + ("_reg" if reg else "")
            with torch.device("meta"):
                model = VisionTransformer(BACKBONE_PRESETS[name].config, name=name)
            sd = model.state_dict()
            assert set(sd) == official_hub_keys(depth, reg, swiglu=letter == "g"), name
            assert sd["pos_embed"].shape == (1, 37 * 37 + 1, dim)
            assert sd["patch_embed.proj.weight"].shape == (dim, 3, 14, 14)
            if reg:
                assert sd["register_tokens"].shape == (1, 4, dim)
            if letter == "g":
                assert sd["blocks.0.mlp.w12.weight"].shape == (2 * 4096, dim)
            cfg = model.cfg
            assert (cfg.interpolate_offset, cfg.interpolate_antialias) == ((0.0, True) if reg else (0.1, False))
    assert "vit_tiny_scratch" in available_backbones()


def test_hub_and_hf_layouts_load_to_identical_outputs(tmp_path):
    ref = tiny(seed=1)
    hub_path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(ref.state_dict(), hub_path)
    hf_sd = hub_to_hf_state_dict(ref.state_dict())
    for key in (
        "embeddings.cls_token",
        "embeddings.position_embeddings",
        "embeddings.register_tokens",
        "embeddings.mask_token",
        "embeddings.patch_embeddings.projection.weight",
        "encoder.layer.0.norm1.weight",
        "encoder.layer.0.attention.attention.query.weight",
        "encoder.layer.0.attention.attention.key.bias",
        "encoder.layer.0.attention.attention.value.weight",
        "encoder.layer.0.attention.output.dense.weight",
        "encoder.layer.0.layer_scale1.lambda1",
        "encoder.layer.2.mlp.fc1.weight",
        "encoder.layer.2.mlp.fc2.bias",
        "encoder.layer.2.layer_scale2.lambda1",
        "encoder.layer.2.norm2.bias",
        "layernorm.weight",
    ):
        assert key in hf_sd, key
    assert detect_vit_layout(hf_sd) == "hf" and detect_vit_layout(ref.state_dict()) == "hub"
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    write_safetensors(hf_sd, hf_dir / "model.safetensors")
    prefixed = tmp_path / "prefixed.pt"
    torch.save({f"dinov2.{k}": v for k, v in hf_sd.items() if k != "embeddings.mask_token"}, prefixed)

    from_hub = create_backbone("dinov2_vits14_reg", weights=hub_path, **TINY).eval()
    from_hf = create_backbone("dinov2_vits14_reg", weights=hf_dir, **TINY).eval()
    from_prefixed = create_backbone("dinov2_vits14_reg", weights=prefixed, **TINY).eval()
    assert from_hf.weights_source.endswith("model.safetensors")
    x = torch.randn(2, 3, 56, 84, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [m(x, layers=[0, -1]) for m in (ref, from_hub, from_hf, from_prefixed)]
    for o in outs[1:]:
        torch.testing.assert_close(o.patch_tokens, outs[0].patch_tokens, atol=0, rtol=0)
        torch.testing.assert_close(o.cls_token, outs[0].cls_token, atol=0, rtol=0)
        torch.testing.assert_close(o.register_tokens, outs[0].register_tokens, atol=0, rtol=0)
        for a, b in zip(o.intermediates, outs[0].intermediates, strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_layout_mappings_are_inverse():
    sd = tiny("dinov2_vitg14", depth=2, embed_dim=24, num_heads=2).state_dict()
    back = hf_to_hub_state_dict(hub_to_hf_state_dict(sd))
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    assert "encoder.layer.1.mlp.weights_in.weight" in hub_to_hf_state_dict(sd)


def test_strict_loading_reports_bad_keys(tmp_path):
    sd = tiny().state_dict()
    bad = dict(sd)
    bad.pop("blocks.1.ls2.gamma")
    bad["classifier.weight"] = torch.zeros(2, 32)
    bad["norm.weight"] = torch.zeros(33)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(CheckpointKeyError) as info:
        create_backbone("dinov2_vits14_reg", weights=path, **TINY)
    msg = str(info.value)
    assert "blocks.1.ls2.gamma" in msg and "classifier.weight" in msg and "norm.weight" in msg
    no_reg = tiny("dinov2_vits14").state_dict()
    torch.save(no_reg, path)
    with pytest.raises(CheckpointKeyError, match="register_tokens"):
        create_backbone("dinov2_vits14_reg", weights=path, **TINY)


def test_missing_weights_name_the_expected_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"dinov2_vits14_reg4_pretrain\.pth"):
        create_backbone("dinov2_vits14_reg")
    with pytest.raises(WeightsNotFoundError, match=r"dinov2_vitb14_pretrain\.pth.*no such file"):
        create_backbone("dinov2_vitb14", weights=tmp_path / "nowhere", **TINY)
    with pytest.raises(WeightsNotFoundError, match=r"facebook/dinov2-with-registers-large"):
        create_backbone("dinov2_vitl14_reg", weights=tmp_path, **TINY)
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("resnet50")
    with pytest.raises(TypeError, match="unknown ViTConfig field"):
        create_backbone("vit_tiny_scratch", width=3)


def test_output_shapes_square_and_non_square():
    model = tiny()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224), layers=2)
        assert out.patch_tokens.shape == (2, 256, 32) and out.grid == (16, 16)
        assert out.cls_token.shape == (2, 32) and out.register_tokens.shape == (2, 4, 32)
        assert out.layers == (1, 2) and [t.shape for t in out.intermediates] == [(2, 256, 32)] * 2
        assert out.patch_map().shape == (2, 32, 16, 16)
        out = model(torch.randn(1, 3, 126, 196), layers=[-1, 0])
        assert out.grid == (9, 14) and out.patch_tokens.shape == (1, 126, 32)
        assert out.layers == (2, 0) and out.intermediate_maps()[0].shape == (1, 32, 9, 14)
        # the last block's normed intermediate is the final output
        torch.testing.assert_close(out.intermediates[0], out.patch_tokens)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(1, 3, 100, 112))
    with pytest.raises(ValueError, match="out of range"):
        model(torch.randn(1, 3, 56, 56), layers=[3])


def test_pos_embed_interpolation():
    for name in ("dinov2_vits14", "dinov2_vits14_reg"):
        model = tiny(name)
        m = model.cfg.grid_size
        assert model.interpolate_pos_encoding(m, m) is model.pos_embed
        with torch.no_grad():
            model.pos_embed[:, 1:] = 0.7
        const = model.interpolate_pos_encoding(3, 9)
        assert const.shape == (1, 28, 32)
        torch.testing.assert_close(const[:, 1:], torch.full((1, 27, 32), 0.7), atol=1e-5, rtol=0)
        with torch.no_grad():  # a field varying along rows only must stay so (no h/w transposition)
            rows = torch.arange(m, dtype=torch.float32).view(1, m, 1, 1).expand(1, m, m, 32)
            model.pos_embed[:, 1:] = rows.reshape(1, m * m, 32)
        grid = model.interpolate_pos_encoding(7, 3)[:, 1:].reshape(7, 3, 32)
        assert torch.allclose(grid, grid[:, :1], atol=1e-5)
        assert (grid[1:, 0, 0] > grid[:-1, 0, 0]).all()
    # without the offset kludge, resizing to the native size is the identity
    model = tiny("dinov2_vits14_reg")
    m = model.cfg.grid_size
    pos = model.pos_embed[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    same = torch.nn.functional.interpolate(pos, size=(m, m), mode="bicubic", antialias=True)
    torch.testing.assert_close(same, pos)


def test_masks_use_the_mask_token():
    model = tiny()
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        model.mask_token.fill_(3.0)
        plain = model(x).patch_tokens
        none = model(x, masks=torch.zeros(1, 16, dtype=torch.bool)).patch_tokens
        masked = model(x, masks=torch.ones(1, 16, dtype=torch.bool)).patch_tokens
    torch.testing.assert_close(none, plain)
    assert not torch.allclose(masked, plain)


def test_seeded_creation_is_deterministic():
    before = torch.random.get_rng_state()
    a = create_backbone("vit_tiny_scratch", seed=3, depth=1)
    b = create_backbone("vit_tiny_scratch", seed=3, depth=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert a.weights_source == "random init (seed=3)"


def test_vit_tiny_scratch_trains_and_roundtrips(tmp_path):
    model = create_backbone("vit_tiny_scratch", seed=0, embed_dim=64, depth=2, num_heads=2, patch_size=8)
    assert model.patch_size == 8 and model.num_register_tokens == 0
    x = torch.randn(2, 3, 64, 48)
    out = model(x, layers=[0, 1])
    assert out.patch_tokens.shape == (2, 48, 64) and out.register_tokens.shape == (2, 0, 64)
    (out.patch_tokens.square().mean() + out.intermediates[0].mean()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n != "mask_token")
    write_safetensors(model.state_dict(), tmp_path / "backbone.safetensors")
    again = create_backbone("vit_tiny_scratch", weights=tmp_path, embed_dim=64, depth=2, num_heads=2, patch_size=8)
    with torch.no_grad():
        torch.testing.assert_close(again(x).patch_tokens, model(x).patch_tokens)


def test_preprocess_dinov2_conventions():
    img = np.full((100, 150, 3), [124, 116, 104], dtype=np.uint8)  # ~ ImageNet mean
    x = preprocess_images(img, patch_size=14)
    assert x.shape == (1, 3, 98, 154)
    assert x.abs().max() < 0.02
    assert preprocess_images(img, patch_size=14, size=224).shape == (1, 3, 224, 336)
    assert preprocess_images(img, patch_size=14, size=(70, 70)).shape == (1, 3, 70, 70)
    batch = torch.rand(2, 3, 300, 400)
    crop = preprocess_images(batch, patch_size=14, mode="center_crop")
    assert crop.shape == (2, 3, 224, 224)
    grad = torch.linspace(0, 1, 400).expand(2, 3, 300, 400).contiguous()
    c = preprocess_images(grad, patch_size=14, mode="center_crop", mean=(0, 0, 0), std=(1, 1, 1))
    assert abs(c[0, 0, 0, 112].item() - 0.5) < 0.01  # centred crop
    model = tiny()
    out = model.extract([img, img], size=56)
    assert out.grid == (4, 6) and out.patch_tokens.shape == (2, 24, 32)
    with pytest.raises(ValueError, match="different sizes"):
        preprocess_images([img, img[:50]], patch_size=14)


# --------------------------------------------------------------------------- generic key-layout mapping

TOY = StateDictMapping(
    renames={"emb.w": "embed.weight", "head.w": "proj"},
    transforms={"head.w": TRANSPOSE},
    source_layer="enc.l.{i}.",
    target_layer="blocks.{i}.",
    layer_renames={"ln": "norm1", "ffn.up": "mlp.fc1", "scale.lam": "ls.gamma"},
    qkv=FusedQKV(fused="attn.qkv_{kind}", separate="att.{part}.{kind}", parts=("Q", "K", "V")),
    source_prefixes=("toy.",),
)


def toy_source(depth: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    sd = {"emb.w": torch.randn(5, 4, generator=gen), "head.w": torch.randn(3, 4, generator=gen)}
    for i in range(depth):
        p = f"enc.l.{i}."
        sd |= {p + "ln.weight": torch.randn(4, generator=gen), p + "ln.bias": torch.randn(4, generator=gen)}
        sd |= {p + "ffn.up.weight": torch.randn(8, 4, generator=gen), p + "scale.lam": torch.randn(4, generator=gen)}
        for part in "QKV":
            sd[f"{p}att.{part}.weight"] = torch.randn(4, 4, generator=gen)
            sd[f"{p}att.{part}.bias"] = torch.randn(4, generator=gen)
    return sd


def test_state_dict_mapping_toy_layout_round_trip_and_qkv():
    src = toy_source()
    tgt = TOY.forward(src)
    expected = {"embed.weight", "proj"}
    for i in range(2):
        expected |= {f"blocks.{i}.{k}" for k in ("norm1.weight", "norm1.bias", "mlp.fc1.weight", "ls.gamma")}
        expected |= {f"blocks.{i}.attn.qkv_weight", f"blocks.{i}.attn.qkv_bias"}
    assert set(tgt) == expected
    assert torch.equal(tgt["proj"], src["head.w"].t()) and tgt["proj"].is_contiguous()  # the transform
    assert torch.equal(tgt["blocks.1.ls.gamma"], src["enc.l.1.scale.lam"])  # exact sub-key rename
    qkv = tgt["blocks.1.attn.qkv_weight"]  # fused q, k, v along dim 0, in that order
    assert qkv.shape == (12, 4)
    for n, part in enumerate("QKV"):
        assert torch.equal(qkv[4 * n : 4 * (n + 1)], src[f"enc.l.1.att.{part}.weight"])
        assert torch.equal(tgt["blocks.0.attn.qkv_bias"][4 * n : 4 * (n + 1)], src[f"enc.l.0.att.{part}.bias"])
    back = TOY.inverse(tgt)
    assert set(back) == set(src) and all(torch.equal(back[k], v) for k, v in src.items())
    again = TOY.forward(back)
    assert set(again) == set(tgt) and all(torch.equal(again[k], v) for k, v in tgt.items())
    q = back["enc.l.0.att.Q.weight"]  # split parts are copies, not views of the fused tensor
    assert q.untyped_storage().data_ptr() != tgt["blocks.0.attn.qkv_weight"].untyped_storage().data_ptr()


def test_state_dict_mapping_prefixes_passthrough_and_partial_qkv():
    src = toy_source(depth=1)
    sd = {"toy." + k: v for k, v in src.items() if k != "enc.l.0.att.V.bias"}
    sd |= {"toy.unknown": torch.ones(1), "enc.l.0.mystery.weight": torch.ones(2), "enc.l.07.ln.bias": torch.ones(3)}
    out = TOY.forward(sd)
    assert torch.equal(out["blocks.0.attn.qkv_weight"], torch.cat([src[f"enc.l.0.att.{p}.weight"] for p in "QKV"]))
    assert "blocks.0.attn.qkv_bias" not in out
    # incomplete q/k/v stay separate (prefix stripped); unknown keys keep their original key
    assert {k for k in out if ".att." in k} == {"enc.l.0.att.Q.bias", "enc.l.0.att.K.bias"}
    assert torch.equal(out["enc.l.0.att.K.bias"], src["enc.l.0.att.K.bias"])
    assert "toy.unknown" in out and "enc.l.0.mystery.weight" in out
    assert torch.equal(out["blocks.7.norm1.bias"], torch.ones(3))  # layer index re-written as an int
    # q/k/v-derived keys come last, in the order their layer and kind first appeared
    assert list(out)[-3:] == ["blocks.0.attn.qkv_weight", "enc.l.0.att.Q.bias", "enc.l.0.att.K.bias"]
    assert list(TOY.inverse({"blocks.0.mlp.fc1.bias": torch.ones(1)})) == ["enc.l.0.ffn.up.bias"]
    with pytest.raises(ValueError, match=r"cannot split 'blocks\.0\.attn\.qkv_bias'"):
        TOY.inverse({"blocks.0.attn.qkv_bias": torch.ones(4)})


def test_state_dict_mapping_fused_on_source_along_dim_1():
    split_target = StateDictMapping(
        source_layer="layers.{i}.",
        target_layer="h.{i}.",
        qkv=FusedQKV(
            fused="in_proj_{kind}", separate="{part}_proj.{kind}", parts=("q", "k", "v"), fused_on="source", dim=1
        ),
    )
    w = torch.arange(24.0).reshape(2, 12)
    out = split_target.forward({"layers.3.in_proj_weight": w})
    assert set(out) == {"h.3.q_proj.weight", "h.3.k_proj.weight", "h.3.v_proj.weight"}
    assert torch.equal(out["h.3.k_proj.weight"], w[:, 4:8])
    assert torch.equal(split_target.inverse(out)["layers.3.in_proj_weight"], w)


def test_state_dict_mapping_rejects_ambiguous_specs():
    with pytest.raises(ValueError, match="not invertible"):
        StateDictMapping(renames={"a": "x", "b": "x"})
    with pytest.raises(ValueError, match="not renamed"):
        StateDictMapping(renames={"a": "x"}, transforms={"b": TRANSPOSE})
    with pytest.raises(ValueError, match="exactly once"):
        StateDictMapping(source_layer="layers.", target_layer="h.{i}.")
    with pytest.raises(ValueError, match="three distinct"):
        FusedQKV(fused="qkv.{kind}", separate="{part}.{kind}", parts=("q", "q", "v"))


def test_convnet_backbone_shapes_determinism_and_roundtrip(tmp_path):
    from methods.common.backbones import ConvNetBackbone, create_feature_extractor

    assert "convnet_small_scratch" in available_backbones()
    before = torch.random.get_rng_state()
    model = create_feature_extractor("convnet_small_scratch", seed=0, widths=(8, 16, 16), embed_dim=24)
    again = create_feature_extractor("convnet_small_scratch", seed=0, widths=(8, 16, 16), embed_dim=24)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters(), strict=True))
    assert isinstance(model, ConvNetBackbone) and model.patch_size == 8 and model.embed_dim == 24
    x = torch.randn(2, 3, 40, 64)
    out = model(x, layers=[0, -1])
    assert out.grid == (5, 8) and out.patch_tokens.shape == (2, 40, 24)
    assert out.register_tokens.shape == (2, 0, 24)
    torch.testing.assert_close(out.cls_token, out.patch_tokens.mean(1))
    assert [t.shape for t in out.intermediates] == [(2, 40, 24)] * 2 and out.layers == (0, 2)
    (out.patch_tokens.square().mean() + sum(t.mean() for t in out.intermediates)).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "laterals.1" not in n)
    with pytest.raises(ValueError, match="multiple of the stride"):
        model(torch.randn(1, 3, 30, 64))
    write_safetensors(model.state_dict(), tmp_path / "backbone.safetensors")
    loaded = create_feature_extractor("convnet_small_scratch", weights=tmp_path, widths=(8, 16, 16), embed_dim=24)
    model.eval()
    loaded.eval()
    torch.testing.assert_close(loaded(x).patch_tokens, model(x).patch_tokens)
    assert isinstance(create_feature_extractor("vit_tiny_scratch", seed=0, depth=1), VisionTransformer)
    with pytest.raises(ValueError, match="create_feature_extractor"):
        create_backbone("convnet_small_scratch")
    with pytest.raises(TypeError, match="unknown ConvNetConfig"):
        create_feature_extractor("convnet_small_scratch", depth=3)
