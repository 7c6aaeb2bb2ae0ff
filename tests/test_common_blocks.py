"""methods.common.blocks against naive reference implementations on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods.common.blocks import (
    AdaLNZero,
    AdaLNZeroLayer,
    AdaNormZero,
    DPTDecoder,
    DropPath,
    GeM,
    MSDeformableAttention,
    MultiHeadAttention,
    TransformerLayer,
    flatten_levels,
    gem,
    level_reference_points,
    ms_deform_attn_core,
)
from methods.common.rng import seeded


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed))


def naive_attention(
    mha: MultiHeadAttention,
    q_in: torch.Tensor,
    kv_in: torch.Tensor,
    allowed: torch.Tensor | None = None,
    additive: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + mask) V per head, masked rows -> 0; allowed/additive are (B, H, L, S)."""
    b, l, _ = q_in.shape
    s = kv_in.shape[1]
    h, d = mha.num_heads, mha.head_dim
    q = mha.q_proj(q_in).view(b, l, h, d).transpose(1, 2)
    k = mha.k_proj(kv_in).view(b, s, h, d).transpose(1, 2)
    v = mha.v_proj(kv_in).view(b, s, h, d).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d)
    if additive is not None:
        logits = logits + additive
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    w = torch.softmax(logits, dim=-1)
    w = torch.nan_to_num(w, nan=0.0)
    out = (w @ v).transpose(1, 2).reshape(b, l, h * d)
    return mha.out_proj(out)


@pytest.fixture
def mha() -> MultiHeadAttention:
    with seeded(0):
        return MultiHeadAttention(8, 2).eval()


def test_attention_matches_naive_without_mask(mha):
    x = randn(2, 5, 8)
    torch.testing.assert_close(mha(x), naive_attention(mha, x, x), atol=1e-5, rtol=1e-5)


def test_attention_bool_mask_and_padding(mha):
    x = randn(2, 5, 8)
    attn_mask = torch.rand(5, 5, generator=gen(1)) > 0.3
    attn_mask |= torch.eye(5, dtype=torch.bool)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 3:] = True
    allowed = attn_mask[None, None] & ~pad[:, None, None, :]
    out = mha(x, attn_mask=attn_mask, key_padding_mask=pad)
    torch.testing.assert_close(out, naive_attention(mha, x, x, allowed=allowed), atol=1e-5, rtol=1e-5)


def test_attention_float_mask_and_causal(mha):
    x = randn(1, 4, 8)
    bias = randn(4, 4, seed=3)
    torch.testing.assert_close(
        mha(x, attn_mask=bias), naive_attention(mha, x, x, additive=bias[None, None]), atol=1e-5, rtol=1e-5
    )
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    ref = naive_attention(mha, x, x, allowed=causal[None, None])
    torch.testing.assert_close(mha(x, is_causal=True), ref, atol=1e-5, rtol=1e-5)
    pad = torch.tensor([[False, False, False, True]])
    ref = naive_attention(mha, x, x, allowed=causal[None, None] & ~pad[:, None, None, :])
    torch.testing.assert_close(mha(x, is_causal=True, key_padding_mask=pad), ref, atol=1e-5, rtol=1e-5)


def test_cross_attention_and_fully_masked_rows():
    with seeded(0):
        mha = MultiHeadAttention(8, 2, kv_dim=6).eval()
    q = randn(2, 3, 8).requires_grad_()
    kv = randn(2, 7, 6, seed=1).requires_grad_()
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[0, 4:] = True
    pad[1, :] = True  # every key of sample 1 is padding
    out = mha(q, kv, key_padding_mask=pad)
    ref = naive_attention(mha, q, kv, allowed=~pad[:, None, None, :])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], mha.out_proj.bias.expand(3, 8))
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(kv.grad).all()
    assert not kv.grad[1].any()


def test_transformer_layer_matches_explicit_computation():
    with seeded(0):
        layer = TransformerLayer(8, 2, cross_attention=True, kv_dim=6, layerscale_init=0.5).eval()
    x = randn(2, 4, 8)
    mem = randn(2, 5, 6, seed=1)
    pos = randn(2, 4, 8, seed=2)
    mpos = randn(2, 5, 6, seed=3)
    h = layer.norm1(x)
    ref = x + 0.5 * naive_attention_qkv(layer.self_attn, h + pos, h + pos, h)
    h = layer.norm_cross(ref)
    m = layer.norm_memory(mem)
    ref = ref + 0.5 * naive_attention_qkv(layer.cross_attn, h + pos, m + mpos, m)
    h = layer.norm2(ref)
    ref = ref + 0.5 * layer.mlp.fc2(F.gelu(layer.mlp.fc1(h)))
    out = layer(x, mem, pos=pos, memory_pos=mpos)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def naive_attention_qkv(mha: MultiHeadAttention, q_in, k_in, v_in) -> torch.Tensor:
    b, l, _ = q_in.shape
    s = k_in.shape[1]
    h, d = mha.num_heads, mha.head_dim
    q = mha.q_proj(q_in).view(b, l, h, d).transpose(1, 2)
    k = mha.k_proj(k_in).view(b, s, h, d).transpose(1, 2)
    v = mha.v_proj(v_in).view(b, s, h, d).transpose(1, 2)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return mha.out_proj((w @ v).transpose(1, 2).reshape(b, l, h * d))


def test_transformer_layer_needs_memory_for_cross():
    layer = TransformerLayer(8, 2, self_attention=False, cross_attention=True)
    with pytest.raises(ValueError, match="memory"):
        layer(randn(1, 2, 8))


@pytest.mark.parametrize("cross", [False, True])
def test_adaln_zero_layer_is_identity_at_init(cross):
    with seeded(0):
        layer = AdaLNZeroLayer(8, 2, cond_dim=5, cross_attention=cross, kv_dim=8)
    x = randn(2, 4, 8)
    cond = randn(2, 5, seed=1)
    mem = randn(2, 3, 8, seed=2)
    torch.testing.assert_close(layer(x, cond, mem), x)
    # the zero init still lets gradients reach the modulation
    layer(x, cond, mem).pow(2).sum().backward()
    assert layer.ada.linear.weight.grad is not None and layer.ada.linear.weight.grad.abs().sum() > 0


def test_adaln_zero_modulation_chunks():
    ada = AdaLNZero(4, 3, num_blocks=2)
    mods = ada(randn(2, 3))
    assert len(mods) == 2 and all(len(m) == 3 for m in mods)
    assert all(t.shape == (2, 4) and not t.any() for m in mods for t in m)


def test_adanorm_zero_is_plain_norm_at_init_and_matches_eq1():
    with seeded(0):
        norm = AdaNormZero(6, 4)
    x = randn(2, 5, 6)
    e = randn(2, 4, seed=1)
    mu = x.mean(1, keepdim=True)
    sigma = x.var(1, unbiased=False, keepdim=True).sqrt()
    plain = (x - mu) / (sigma + 1e-5)
    torch.testing.assert_close(norm(x, e), plain)
    torch.testing.assert_close(norm(x), plain)
    with torch.no_grad():
        norm.to_gamma.weight.normal_(generator=gen(2))
        norm.to_beta.weight.normal_(generator=gen(3))
        norm.gamma.normal_(generator=gen(4))
    dg = e @ norm.to_gamma.weight.T
    db = e @ norm.to_beta.weight.T
    ref = (norm.gamma + dg)[:, None] * plain + (norm.beta + db)[:, None]
    torch.testing.assert_close(norm(x, e), ref)


def test_adanorm_zero_channel_stats_and_padding():
    norm = AdaNormZero(6, 4, stats="channels")
    x = randn(2, 5, 6)
    ref = (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True).sqrt() + 1e-5)
    torch.testing.assert_close(norm(x), ref)
    tok = AdaNormZero(6, 4)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[:, 3:] = True
    out = tok(x, key_padding_mask=pad)
    torch.testing.assert_close(out[:, :3], tok(x[:, :3]))


def naive_bilinear(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Bilinear sample of img (D, H, W) at normalised (x, y), align_corners=False, zero padding."""
    d, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def test_deformable_core_matches_naive_loop():
    shapes = [(3, 4), (2, 2)]
    b, heads, d, lq, points = 1, 2, 3, 2, 2
    s = sum(h * w for h, w in shapes)
    value = randn(b, s, heads, d)
    loc = torch.rand(b, lq, heads, len(shapes), points, 2, generator=gen(1)) * 1.4 - 0.2
    attw = torch.rand(b, lq, heads, len(shapes), points, generator=gen(2))
    out = ms_deform_attn_core(value, shapes, loc, attw)
    ref = torch.zeros(b, lq, heads * d)
    starts = [0, 12]
    for q in range(lq):
        for m in range(heads):
            acc = torch.zeros(d)
            for lvl, (h, w) in enumerate(shapes):
                img = value[0, starts[lvl] : starts[lvl] + h * w, m].T.reshape(d, h, w)
                for p in range(points):
                    x, y = loc[0, q, m, lvl, p].tolist()
                    acc += attw[0, q, m, lvl, p] * naive_bilinear(img, x, y)
            ref[0, q, m * d : (m + 1) * d] = acc
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_deformable_module_shapes_and_padding():
    with seeded(0):
        attn = MSDeformableAttention(16, num_heads=4, num_levels=2, num_points=3)
    feats = [randn(2, 16, 4, 6), randn(2, 16, 2, 3, seed=1)]
    value, shapes, start = flatten_levels(feats)
    assert value.shape == (2, 30, 16) and start.tolist() == [0, 24]
    ref_pts = level_reference_points(shapes)
    assert ref_pts.shape == (30, 2) and ((ref_pts > 0) & (ref_pts < 1)).all()
    query = randn(2, 5, 16, seed=2)
    ref2 = torch.rand(2, 5, 2, 2, generator=gen(3))
    out = attn(query, ref2, value, shapes)
    assert out.shape == (2, 5, 16)
    boxes = torch.cat([ref2, torch.full((2, 5, 2, 2), 0.2)], -1)
    assert attn(query, boxes, value, torch.tensor(shapes)).shape == (2, 5, 16)
    pad = torch.zeros(2, 30, dtype=torch.bool)
    pad[1] = True
    out = attn(query, ref2, value, shapes, value_padding_mask=pad)
    torch.testing.assert_close(out[1], attn.output_proj.bias.expand(5, 16))
    with pytest.raises(ValueError, match="spatial shapes"):
        attn(query, ref2, value[:, :20], shapes)


def test_gem_average_and_max_limits():
    x = torch.rand(2, 3, 4, 4, generator=gen(0), dtype=torch.float64) + 0.1
    torch.testing.assert_close(gem(x, 1.0), x.mean((-2, -1)))
    torch.testing.assert_close(gem(x, 500.0), x.amax((-2, -1)), rtol=1e-2, atol=0)
    pool = GeM(3.0)
    y = pool(x.float())
    assert y.shape == (2, 3)
    y.sum().backward()
    assert pool.p.grad is not None
    tokens = GeM(1.0, learnable=False, dim=(1,))(x.flatten(2).transpose(1, 2))
    torch.testing.assert_close(tokens, x.mean((-2, -1)))


@pytest.mark.parametrize("readout", ["ignore", "add", "project"])
def test_dpt_decoder_shapes_and_gradients(readout):
    with seeded(0):
        dec = DPTDecoder(16, features=8, level_channels=(4, 8, 8, 16), out_channels=3, head_hidden=4, readout=readout)
    grid = (3, 5)
    tokens = [randn(2, 15, 16, seed=i).requires_grad_() for i in range(4)]
    cls = [randn(2, 16, seed=10 + i) for i in range(4)]
    feat = dec.forward_features(tokens, grid, cls)
    assert feat.shape == (2, 8, 24, 40)
    out = dec(tokens, grid, cls)
    assert out.shape == (2, 3, 48, 80)
    out = dec(tokens, grid, cls, output_size=(42, 70))
    assert out.shape == (2, 3, 42, 70)
    out.square().mean().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tokens)
    for name, p in dec.named_parameters():
        assert p.grad is not None, name


def test_dpt_decoder_input_checks():
    dec = DPTDecoder(16, features=8, level_channels=(4, 8, 8, 16), readout="project")
    with pytest.raises(ValueError, match="CLS"):
        dec([randn(1, 4, 16)] * 4, (2, 2))
    with pytest.raises(ValueError, match="grid"):
        DPTDecoder(16, features=8, level_channels=(4, 8, 8, 16))([randn(1, 5, 16)] * 4, (2, 2))


def test_drop_path_identity_in_eval():
    dp = DropPath(0.5).eval()
    x = randn(4, 3)
    assert torch.equal(dp(x), x)
