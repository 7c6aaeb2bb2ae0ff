"""Text encoders: CLIP BPE tokenizer on a tiny vocabulary, CLIP text tower layouts, hashed bag of words."""

from __future__ import annotations

import gzip

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from methods.common.checkpoint import CheckpointError, CheckpointKeyError, WeightsNotFoundError, write_safetensors
from methods.common.text import (
    ClipTextEncoder,
    ClipTokenizer,
    HashedBowConfig,
    HashedBowEncoder,
    bytes_to_unicode,
    clip_pretokenize,
    create_text_encoder,
    detect_clip_layout,
    hf_to_openclip_text_state_dict,
    openclip_to_hf_text_state_dict,
)

MERGES = ["h e", "l l", "l o</w>", "he ll", "hell o</w>", "m u", "mu g</w>"]
TINY_CLIP = {"width": 32, "heads": 2, "layers": 2, "embed_dim": 16}


@pytest.fixture(scope="module")
def vocab_gz(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("vocab") / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write('"bpe_simple_vocab_16e6.txt#version: 0.2\n' + "\n".join(MERGES) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def tok(vocab_gz) -> ClipTokenizer:
    return ClipTokenizer(vocab_gz)


def char_id(c: str, end: bool = False) -> int:
    return (256 if end else 0) + list(bytes_to_unicode().values()).index(c)


def test_bytes_to_unicode_is_a_printable_bijection():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"
    assert all(ch.isprintable() and not ch.isspace() for ch in table.values())


def test_tokenizer_vocabulary_and_bpe(tok):
    assert tok.vocab_size == 512 + len(MERGES) + 2
    assert (tok.sot_token_id, tok.eot_token_id) == (519, 520)
    assert tok.bpe("hello") == "hello</w>"
    assert tok.bpe("hellohello") == "hell o hello</w>"
    assert tok.decode(tok("!hello")[0].tolist()) == "! hello"  # id 0 is "!", not padding
    ids = tok.encode("  Hello   World! ")
    expected = [516, char_id("w"), char_id("o"), char_id("r"), char_id("l"), char_id("d", True), char_id("!", True)]
    assert ids == expected
    assert tok.decode(ids) == "hello world !"
    assert tok.encode("mug's &amp; MUG") == [518, char_id("'"), char_id("s", True), char_id("&", True), 518]


def test_tokenizer_reads_plain_merges_txt_like_the_gz(tmp_path, tok):
    path = tmp_path / "merges.txt"
    path.write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")
    assert ClipTokenizer(path).encode("hello mug ü") == tok.encode("hello mug ü")


def test_tokenize_framing_padding_and_truncation(tok):
    batch = tok(["hello", "hello mug"])
    assert batch.shape == (2, 77) and batch.dtype == torch.long
    assert batch[0, :3].tolist() == [519, 516, 520] and not batch[0, 3:].any()
    assert batch[1, :4].tolist() == [519, 516, 518, 520]
    long = tok(["hello " * 100], context_length=8)
    assert long.shape == (1, 8) and long[0, -1].item() == 520 and long[0, 0].item() == 519
    with pytest.raises(ValueError, match="context length"):
        tok(["hello " * 100], context_length=8, truncate=False)


def test_pretokenizer_follows_clip_pattern():
    expected = ["it", "'s", "a", "test", "'s", "1", "2", "3", "ab", "!!", "cd"]
    assert clip_pretokenize("it's a test's 123 ab!!cd") == expected
    assert clip_pretokenize("<|startoftext|>café ²x<|endoftext|>") == [
        "<|startoftext|>",
        "café",
        "²",
        "x",
        "<|endoftext|>",
    ]
    assert clip_pretokenize("we'll  ''d --'re") == ["we", "'ll", "''", "d", "--'", "re"]


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("abcdehlmoguzé ü!?.,'-0123 \t\n")), max_size=40))
def test_tokenizer_is_lossless_up_to_spacing(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size - 2 for i in ids)
    assert "".join(tok.decode(ids).split()) == "".join(text.lower().split())


def tiny_clip(vocab: str, seed: int = 0) -> ClipTextEncoder:
    tok = ClipTokenizer(vocab)
    model = create_text_encoder(
        "clip_vit_b32", random_init=True, seed=seed, vocab=vocab, vocab_size=tok.vocab_size, **TINY_CLIP
    )
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed + 1)
        for n, p in model.named_parameters():
            if n.endswith("bias") or "ln" in n:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def reference_clip(model: ClipTextEncoder, tokens: torch.Tensor) -> torch.Tensor:
    """The CLIP text forward written with nn.MultiheadAttention and an explicit -inf causal mask."""
    n = tokens.shape[1]
    x = model.token_embedding(tokens) + model.positional_embedding[:n]
    mask = torch.full((n, n), float("-inf")).triu(1)
    for blk in model.transformer.resblocks:
        mha = nn.MultiheadAttention(model.cfg.width, model.cfg.heads, batch_first=True)
        mha.load_state_dict(
            {
                "in_proj_weight": blk.attn.in_proj_weight,
                "in_proj_bias": blk.attn.in_proj_bias,
                "out_proj.weight": blk.attn.out_proj.weight,
                "out_proj.bias": blk.attn.out_proj.bias,
            }
        )
        h = blk.ln_1(x)
        x = x + mha(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = blk.mlp.c_fc(blk.ln_2(x))
        x = x + blk.mlp.c_proj(h * torch.sigmoid(1.702 * h))
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ model.text_projection


def test_clip_text_matches_reference_and_is_causal(vocab_gz):
    model = tiny_clip(vocab_gz)
    texts = ["hello mug", "a red mug on the table"]
    tokens = model.tokenizer(texts)
    with torch.no_grad():
        out = model.encode(texts)
        assert out.shape == (2, 16)
        torch.testing.assert_close(out, reference_clip(model, tokens), atol=1e-5, rtol=1e-5)
        junk = tokens.clone()
        eot = tokens.argmax(-1)
        for i in range(2):
            junk[i, eot[i] + 1 :] = 7  # anything after EOT must not matter (causal mask)
        torch.testing.assert_close(model.forward_tokens(junk), out)


def test_clip_openclip_and_hf_layouts_load_identically(tmp_path, vocab_gz):
    ref = tiny_clip(vocab_gz, seed=3)
    oc_path = tmp_path / "open_clip_pytorch_model.bin"
    full = dict(ref.state_dict())
    full["visual.conv1.weight"] = torch.zeros(4, 3, 2, 2)  # full CLIP checkpoints carry the image tower
    full["logit_scale"] = torch.tensor(4.6)
    torch.save(full, oc_path)
    hf_sd = openclip_to_hf_text_state_dict(ref.state_dict())
    for key in (
        "text_model.embeddings.token_embedding.weight",
        "text_model.embeddings.position_embedding.weight",
        "text_model.encoder.layers.0.self_attn.q_proj.weight",
        "text_model.encoder.layers.0.self_attn.k_proj.bias",
        "text_model.encoder.layers.1.self_attn.v_proj.weight",
        "text_model.encoder.layers.1.self_attn.out_proj.weight",
        "text_model.encoder.layers.1.layer_norm1.weight",
        "text_model.encoder.layers.1.layer_norm2.bias",
        "text_model.encoder.layers.0.mlp.fc1.weight",
        "text_model.encoder.layers.0.mlp.fc2.bias",
        "text_model.final_layer_norm.weight",
        "text_projection.weight",
    ):
        assert key in hf_sd, key
    assert hf_sd["text_projection.weight"].shape == (16, 32)
    assert detect_clip_layout(hf_sd) == "hf"
    back = hf_to_openclip_text_state_dict(hf_sd)
    assert set(back) == set(ref.state_dict()) and all(torch.equal(back[k], v) for k, v in ref.state_dict().items())
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    hf_full = dict(hf_sd)
    hf_full["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    hf_full["vision_model.embeddings.class_embedding"] = torch.zeros(8)
    hf_full["visual_projection.weight"] = torch.zeros(16, 8)
    write_safetensors(hf_full, hf_dir / "model.safetensors")
    (hf_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")

    kw = {"vocab_size": ref.cfg.vocab_size, **TINY_CLIP}
    a = create_text_encoder("clip_vit_b32", weights=oc_path, vocab=vocab_gz, **kw).eval()
    b = create_text_encoder("clip_vit_b32", weights=hf_dir, **kw).eval()  # vocab found in the folder
    texts = ["hello", "mug hello mug!"]
    with torch.no_grad():
        expected = ref.encode(texts)
        torch.testing.assert_close(a.encode(texts), expected, atol=0, rtol=0)
        torch.testing.assert_close(b.encode(texts), expected, atol=0, rtol=0)


def test_clip_errors(tmp_path, vocab_gz):
    with pytest.raises(WeightsNotFoundError, match=r"open_clip_model\.safetensors"):
        create_text_encoder("clip_vit_b32")
    ref = tiny_clip(vocab_gz)
    path = tmp_path / "w.pt"
    torch.save(ref.state_dict(), path)
    kw = {"vocab_size": ref.cfg.vocab_size, **TINY_CLIP}
    with pytest.raises(WeightsNotFoundError, match=r"bpe_simple_vocab_16e6\.txt\.gz"):
        create_text_encoder("clip_vit_b32", weights=path, **kw)
    bad = dict(ref.state_dict())
    bad.pop("text_projection")
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, path)
    with pytest.raises(CheckpointKeyError, match=r"text_projection.*extra\.weight"):
        create_text_encoder("clip_vit_b32", weights=path, vocab=vocab_gz, **kw)
    hf = openclip_to_hf_text_state_dict(ref.state_dict())
    hf.pop("text_projection.weight")
    torch.save(hf, path)
    with pytest.raises(CheckpointError, match="CLIPTextModelWithProjection"):
        create_text_encoder("clip_vit_b32", weights=path, vocab=vocab_gz, **kw)
    no_tok = create_text_encoder("clip_vit_b32", random_init=True, **TINY_CLIP)
    with pytest.raises(WeightsNotFoundError, match="vocab"):
        no_tok.encode(["x"])


def test_hashed_bow_is_deterministic_and_trainable(tmp_path):
    enc = HashedBowEncoder(HashedBowConfig(num_buckets=2**15, embed_dim=8))
    assert enc.features("Red mug")[:3] == ["w:red", "w:mug", "b:red mug"]
    ids = enc.hash_ids("red mug")
    assert {29244, 28392, 29274} <= set(ids)  # CRC-32 buckets of w:mug, c:<mu, b:red mug: stable forever
    a = create_text_encoder("hashed_bow", seed=1, embed_dim=8, output_dim=6)
    b = create_text_encoder("hashed_bow", seed=1, embed_dim=8, output_dim=6)
    texts = ["a red mug", "", "blue can"]
    out = a.encode(texts)
    assert out.shape == (3, 6)
    torch.testing.assert_close(out, b.encode(texts))
    torch.testing.assert_close(out[1], a.proj.bias)  # no features -> zero bag
    assert a.encode([]).shape == (0, 6)
    F.mse_loss(out, torch.ones_like(out)).backward()
    assert a.bag.weight.grad is not None and a.bag.weight.grad.abs().sum() > 0
    torch.save(a.state_dict(), tmp_path / "text_encoder.pt")
    c = create_text_encoder("hashed_bow", weights=tmp_path, embed_dim=8, output_dim=6)
    torch.testing.assert_close(c.encode(texts), a.encode(texts))
