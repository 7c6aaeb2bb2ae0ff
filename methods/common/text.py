"""Text encoders: the ``TextEncoder`` interface, CLIP's text tower with its BPE tokenizer, and an
offline hashed bag-of-words encoder.

STORM encodes a VLM-written object description with CLIP (``e_t`` in its Eq. 1); the paper preset is
``clip_vit_b32`` with local weights, the offline default ``hashed_bow`` trains jointly with the model.

CLIP (Radford et al. 2021) text tower: token + learned positional embeddings, pre-norm transformer
with a causal mask (QuickGELU for OpenAI weights), final LayerNorm, the features at the
end-of-text token (the highest id, found by ``argmax`` as in CLIP) projected by ``text_projection``.
Parameter names follow open_clip / OpenAI; Hugging Face ``CLIPTextModelWithProjection`` and
``CLIPModel`` checkpoints are mapped with ``hf_to_openclip_text_state_dict``.
"""

from __future__ import annotations

import abc
import dataclasses
import gzip
import html
import itertools
import logging
import math
import re
import unicodedata
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from methods.common.checkpoint import (
    TRANSPOSE,
    CheckpointError,
    FusedQKV,
    StateDictMapping,
    WeightsNotFoundError,
    load_checked,
    load_state_dict_file,
    resolve_weights_file,
)
from methods.common.rng import seeded

log = logging.getLogger(__name__)

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
CLIP_VOCAB_FILES = ("bpe_simple_vocab_16e6.txt.gz", "merges.txt")
CLIP_MAX_MERGES = 49152 - 256 - 2


# --------------------------------------------------------------------------- tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 reversible byte -> printable unicode character table (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _is_letter(c: str) -> bool:
    return unicodedata.category(c).startswith("L")


def _is_number(c: str) -> bool:
    return unicodedata.category(c).startswith("N")


_SPECIALS = (SOT_TOKEN, EOT_TOKEN)
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def clip_pretokenize(text: str) -> list[str]:
    """CLIP's regex pre-tokenisation without the ``regex`` package.

    Scans like ``re.findall`` with CLIP's pattern ``<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|
    'd|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`` (case-insensitive): alternatives tried in order at each
    position, letters/numbers by Unicode category, whitespace skipped.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        match = next((s for s in _SPECIALS if text.startswith(s, i)), None)
        if match is None and c == "'":
            low = text[i : i + 3].lower()
            match = next((text[i : i + len(s)] for s in _CONTRACTIONS if low.startswith(s)), None)
        if match is not None:
            out.append(match)
            i += len(match)
        elif _is_letter(c):
            j = i + 1
            while j < n and _is_letter(text[j]):
                j += 1
            out.append(text[i:j])
            i = j
        elif _is_number(c):
            out.append(c)
            i += 1
        elif c.isspace():
            i += 1
        else:
            j = i + 1
            while j < n and not (text[j].isspace() or _is_letter(text[j]) or _is_number(text[j])):
                j += 1
            out.append(text[i:j])
            i = j
    return out


def _basic_clean(text: str) -> str:
    try:
        import ftfy
    except ImportError:
        text = unicodedata.normalize("NFC", text)
    else:
        text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def _whitespace_clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def read_bpe_merges(path: str | Path, max_merges: int = CLIP_MAX_MERGES) -> list[tuple[str, str]]:
    """BPE merges from CLIP's ``bpe_simple_vocab_16e6.txt.gz`` or a Hugging Face ``merges.txt``.

    The first line is a ``#version`` header and is skipped; at most ``max_merges`` merges are used
    (CLIP uses the first 48,894 lines, giving a 49,408-token vocabulary).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"CLIP BPE vocabulary not found at {path}; expected {' or '.join(CLIP_VOCAB_FILES)}"
        )
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    lines = raw.decode("utf-8").split("\n")
    if lines and "#version" in lines[0]:
        lines = lines[1:]
    merges: list[tuple[str, str]] = []
    for line in lines:
        if len(merges) >= max_merges:
            break
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"{path}: malformed merge line {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


class ClipTokenizer:
    """CLIP's byte-level BPE tokenizer (``simple_tokenizer.py`` algorithm), from a local merges file.

    Text is cleaned (``ftfy`` when installed, else NFC; HTML unescaped; whitespace collapsed),
    lower-cased, pre-tokenised (``clip_pretokenize``), mapped to byte-unicode characters and merged by
    BPE rank; words end in ``</w>``. ``__call__`` returns (B, context_length) ids framed by
    ``<|startoftext|>``/``<|endoftext|>`` and zero-padded (truncated with a final EOT when too long).
    """

    def __init__(self, vocab_path: str | Path, *, context_length: int = 77, max_merges: int = CLIP_MAX_MERGES):
        self.vocab_path = Path(vocab_path)
        self.context_length = context_length
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        merges = read_bpe_merges(vocab_path, max_merges)
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab.extend("".join(m) for m in merges)
        vocab.extend([SOT_TOKEN, EOT_TOKEN])
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.sot_token_id = self.encoder[SOT_TOKEN]
        self.eot_token_id = self.encoder[EOT_TOKEN]
        self._cache: dict[str, str] = {SOT_TOKEN: SOT_TOKEN, EOT_TOKEN: EOT_TOKEN}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, token: str) -> str:
        """Space-separated BPE pieces of one pre-token (already byte-unicode mapped)."""
        if token in self._cache:
            return self._cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, math.inf))
            if best not in self.bpe_ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        out = " ".join(word)
        self._cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no start/end tokens)."""
        text = _whitespace_clean(_basic_clean(text)).lower()
        ids: list[int] = []
        for token in clip_pretokenize(text):
            mapped = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(mapped).split(" "))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids; start tokens are dropped and decoding stops at the first end token (so the
        zero padding of ``__call__`` rows is ignored; id 0 itself is ``!``)."""
        pieces = []
        for i in (int(i) for i in ids):
            if i == self.eot_token_id:
                break
            if i != self.sot_token_id:
                pieces.append(self.decoder[i])
        text = "".join(pieces)
        data = bytearray(self.byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ").strip()

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None, *, truncate: bool = True
    ) -> torch.Tensor:
        """(B, context_length) int64 ids: SOT, tokens, EOT, zero padding."""
        if isinstance(texts, str):
            texts = [texts]
        ctx = context_length or self.context_length
        out = torch.zeros(len(texts), ctx, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > ctx:
                if not truncate:
                    raise ValueError(f"text {i} has {len(ids)} tokens, more than the context length {ctx}")
                ids = ids[:ctx]
                ids[-1] = self.eot_token_id
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


# --------------------------------------------------------------------------- interface


class TextEncoder(nn.Module, metaclass=abc.ABCMeta):
    """Interface of text encoders: ``encode(list[str]) -> (B, output_dim)`` float tensor."""

    output_dim: int
    weights_source: str = "random init"

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings (B, output_dim) of the texts, on the module's device."""

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode(texts)


# --------------------------------------------------------------------------- CLIP text tower


@dataclass(frozen=True)
class ClipTextConfig:
    """CLIP text tower architecture (defaults: ViT-B/32's text transformer, OpenAI weights)."""

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    heads: int = 8
    layers: int = 12
    embed_dim: int = 512
    act: Literal["quick_gelu", "gelu"] = "quick_gelu"
    norm_eps: float = 1e-5


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the activation of OpenAI's CLIP weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ClipAttention(nn.Module):
    """Causal multi-head self-attention with ``nn.MultiheadAttention``'s parameter names, on SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = (t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class ClipResidualBlock(nn.Module):
    """``x + attn(ln_1 x)``, ``x + mlp(ln_2 x)`` (open_clip ``ResidualAttentionBlock``)."""

    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        w = cfg.width
        self.ln_1 = nn.LayerNorm(w, eps=cfg.norm_eps)
        self.attn = ClipAttention(w, cfg.heads)
        self.ln_2 = nn.LayerNorm(w, eps=cfg.norm_eps)
        act: nn.Module = QuickGELU() if cfg.act == "quick_gelu" else nn.GELU()
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(w, 4 * w)), ("gelu", act), ("c_proj", nn.Linear(4 * w, w))])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.resblocks = nn.ModuleList(ClipResidualBlock(cfg) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.resblocks:
            x = blk(x)
        return x


_CLIP_IGNORED_PREFIXES = ("visual.", "vision_model.", "visual_projection.")
_CLIP_IGNORED_KEYS = ("logit_scale", "logit_bias", "input_resolution", "context_length", "vocab_size")


class ClipTextEncoder(TextEncoder):
    """CLIP text transformer (open_clip parameter names) + optional ``ClipTokenizer``."""

    def __init__(self, cfg: ClipTextConfig, tokenizer: ClipTokenizer | None = None, name: str = "clip_text"):
        super().__init__()
        if cfg.width % cfg.heads:
            raise ValueError(f"width {cfg.width} is not divisible by heads {cfg.heads}")
        if tokenizer is not None and tokenizer.vocab_size > cfg.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens, model vocabulary {cfg.vocab_size}")
        self.cfg = cfg
        self.name = name
        self.tokenizer = tokenizer
        self.output_dim = cfg.embed_dim
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = _Transformer(cfg)
        self.ln_final = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.embed_dim))
        self._init_weights()

    def _init_weights(self) -> None:
        """open_clip's text-tower initialisation."""
        w, n = self.cfg.width, self.cfg.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = w**-0.5 * (2 * n) ** -0.5
        for blk in self.transformer.resblocks:
            nn.init.normal_(blk.attn.in_proj_weight, std=w**-0.5)
            nn.init.normal_(blk.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(blk.mlp.c_fc.weight, std=(2 * w) ** -0.5)
            nn.init.normal_(blk.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=w**-0.5)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, embed_dim) projected features at the EOT (highest-id) token."""
        if tokens.shape[1] > self.cfg.context_length:
            raise ValueError(f"{tokens.shape[1]} tokens exceed the context length {self.cfg.context_length}")
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        x = self.ln_final(self.transformer(x))
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return pooled @ self.text_projection

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise WeightsNotFoundError(
                f"{self.name}: no tokenizer; build it with vocab=<path to {' or '.join(CLIP_VOCAB_FILES)}>"
            )
        tokens = self.tokenizer(list(texts), self.cfg.context_length).to(self.token_embedding.weight.device)
        return self.forward_tokens(tokens)

    def load_weights(self, source: str | Path | Mapping[str, torch.Tensor]) -> None:
        """Load the text tower from an open_clip/OpenAI or Hugging Face CLIP state dict, strictly.

        Vision-tower keys and ``logit_scale`` of full CLIP checkpoints are ignored; any other missing,
        unexpected or mis-shaped key raises ``CheckpointKeyError``.
        """
        what = f"{self.name} weights"
        if isinstance(source, str | Path):
            what = f"{self.name} weights from {source}"
            sd = load_state_dict_file(source)
            self.weights_source = str(source)
        else:
            sd = dict(source)
            self.weights_source = "state dict"
        if detect_clip_layout(sd) == "hf":
            if "text_projection.weight" not in sd:
                raise CheckpointError(
                    f"{what}: Hugging Face checkpoint without 'text_projection.weight' (a CLIPTextModel); "
                    "use the CLIPTextModelWithProjection or full CLIPModel checkpoint"
                )
            sd = hf_to_openclip_text_state_dict(sd)
        sd = {k: v for k, v in sd.items() if not _clip_ignored(k)}
        load_checked(self, sd, what)


def _clip_ignored(key: str) -> bool:
    return key.startswith(_CLIP_IGNORED_PREFIXES) or key in _CLIP_IGNORED_KEYS or key.endswith("position_ids")


def detect_clip_layout(sd: Mapping[str, torch.Tensor]) -> Literal["openclip", "hf"]:
    """``'hf'`` for Hugging Face CLIP keys (``text_model.*``), else ``'openclip'``."""
    return "hf" if any(k.startswith("text_model.") for k in sd) else "openclip"


CLIP_HF_TO_OPENCLIP_TEXT = StateDictMapping(
    renames={
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
        "text_projection.weight": "text_projection",
    },
    transforms={"text_projection.weight": TRANSPOSE},  # nn.Linear weight (out, in) <-> x @ P with P (in, out)
    source_layer="text_model.encoder.layers.{i}.",
    target_layer="transformer.resblocks.{i}.",
    layer_renames={
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "self_attn.out_proj": "attn.out_proj",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
    },
    qkv=FusedQKV(
        fused="attn.in_proj_{kind}",
        separate="self_attn.{part}_proj.{kind}",
        parts=("q", "k", "v"),
        fused_on="target",
    ),
)
"""Hugging Face CLIP text keys (source) <-> open_clip/OpenAI text keys (target)."""


def hf_to_openclip_text_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face CLIP text keys -> open_clip keys (q/k/v fused into ``in_proj_*``, projection transposed).

    Unknown keys pass through unchanged (the strict check reports them; vision keys are ignored later).
    """
    return CLIP_HF_TO_OPENCLIP_TEXT.forward(sd)


def openclip_to_hf_text_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of ``hf_to_openclip_text_state_dict`` (open_clip text keys -> ``CLIPTextModelWithProjection``)."""
    return CLIP_HF_TO_OPENCLIP_TEXT.inverse(sd)


# --------------------------------------------------------------------------- hashed bag of words


@dataclass(frozen=True)
class HashedBowConfig:
    """Offline text encoder: hashed word, word-bigram and character n-gram embeddings (fastText-like).

    Features are hashed into ``num_buckets`` rows with CRC-32 (deterministic across processes and
    machines, unlike Python's ``hash``), averaged by ``nn.EmbeddingBag`` and optionally projected to
    ``output_dim``.
    """

    num_buckets: int = 2**15
    embed_dim: int = 128
    char_ngrams: tuple[int, ...] = (3, 4, 5)
    word_bigrams: bool = True
    output_dim: int | None = None
    mode: Literal["mean", "sum"] = "mean"


class HashedBowEncoder(TextEncoder):
    """Hashed bag-of-features text encoder trained jointly with the model (offline ``hashed_bow``)."""

    def __init__(self, cfg: HashedBowConfig | None = None):
        super().__init__()
        self.cfg = cfg or HashedBowConfig()
        self.bag = nn.EmbeddingBag(self.cfg.num_buckets, self.cfg.embed_dim, mode=self.cfg.mode)
        nn.init.normal_(self.bag.weight, std=self.cfg.embed_dim**-0.5)
        self.proj = nn.Linear(self.cfg.embed_dim, self.cfg.output_dim) if self.cfg.output_dim else None
        self.output_dim = self.cfg.output_dim or self.cfg.embed_dim

    def features(self, text: str) -> list[str]:
        """The string features of a text: words, word bigrams, character n-grams of ``<word>``."""
        words = re.findall(r"\w+", unicodedata.normalize("NFC", text).lower())
        feats = [f"w:{w}" for w in words]
        if self.cfg.word_bigrams:
            feats += [f"b:{a} {b}" for a, b in itertools.pairwise(words)]
        for w in words:
            padded = f"<{w}>"
            for n in self.cfg.char_ngrams:
                feats += [f"c:{padded[i : i + n]}" for i in range(len(padded) - n + 1)]
        return feats

    def hash_ids(self, text: str) -> list[int]:
        """Bucket ids of the text's features (CRC-32 of the UTF-8 feature string, modulo buckets)."""
        return [zlib.crc32(f.encode("utf-8")) % self.cfg.num_buckets for f in self.features(text)]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, output_dim); a text without features (empty) embeds to the zero vector before projection."""
        device = self.bag.weight.device
        if not texts:
            return self.bag.weight.new_zeros(0, self.output_dim)
        ids = [self.hash_ids(t) for t in texts]
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
        lengths = torch.tensor([0] + [len(row) for row in ids[:-1]], dtype=torch.long)
        offsets = lengths.cumsum(0).to(device)
        x = self.bag(flat, offsets)
        return self.proj(x) if self.proj is not None else x


# --------------------------------------------------------------------------- presets & registry


@dataclass(frozen=True)
class TextPreset:
    """A named text encoder: kind, architecture, expected weight/vocabulary files."""

    name: str
    kind: Literal["clip", "hashed_bow"]
    config: ClipTextConfig | HashedBowConfig
    pretrained: bool
    weight_files: tuple[str, ...] = ()
    source: str = ""


def _text_presets() -> dict[str, TextPreset]:
    clip_files = (
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.bin",
        "model.safetensors",
        "pytorch_model.bin",
    )
    return {
        "clip_vit_b32": TextPreset(
            "clip_vit_b32",
            "clip",
            ClipTextConfig(),
            True,
            clip_files,
            "open_clip 'ViT-B-32' (pretrained='openai', hf-hub timm/vit_base_patch32_clip_224.openai) or the "
            "Hugging Face 'openai/clip-vit-base-patch32' CLIPModel / CLIPTextModelWithProjection checkpoint",
        ),
        "clip_vit_b16": TextPreset(
            "clip_vit_b16",
            "clip",
            ClipTextConfig(),
            True,
            clip_files,
            "open_clip 'ViT-B-16' (openai) or the Hugging Face 'openai/clip-vit-base-patch16' checkpoint",
        ),
        "clip_vit_l14": TextPreset(
            "clip_vit_l14",
            "clip",
            ClipTextConfig(width=768, heads=12, layers=12, embed_dim=768),
            True,
            clip_files,
            "open_clip 'ViT-L-14' (openai) or the Hugging Face 'openai/clip-vit-large-patch14' checkpoint",
        ),
        "hashed_bow": TextPreset(
            "hashed_bow",
            "hashed_bow",
            HashedBowConfig(),
            False,
            ("text_encoder.safetensors", "text_encoder.pt"),
            "a checkpoint saved from this project's hashed_bow encoder",
        ),
    }


TEXT_PRESETS: Mapping[str, TextPreset] = MappingProxyType(_text_presets())


def available_text_encoders() -> list[str]:
    """Names accepted by ``create_text_encoder``."""
    return sorted(TEXT_PRESETS)


def create_text_encoder(
    name: str,
    weights: str | Path | None = None,
    *,
    vocab: str | Path | None = None,
    random_init: bool = False,
    seed: int | None = None,
    **overrides: object,
) -> TextEncoder:
    """Build a text encoder preset, optionally loading local weights.

    CLIP presets need ``weights`` (file or folder; else ``WeightsNotFoundError`` names the expected
    files) unless ``random_init=True``, and a BPE vocabulary: ``vocab`` or, when ``weights`` is a
    folder, a ``bpe_simple_vocab_16e6.txt.gz``/``merges.txt`` inside it. ``overrides`` replace config
    fields; ``seed`` makes random initialisation deterministic without touching the global RNG.
    """
    if name not in TEXT_PRESETS:
        raise ValueError(f"unknown text encoder {name!r}; available: {', '.join(available_text_encoders())}")
    preset = TEXT_PRESETS[name]
    fields = {f.name for f in dataclasses.fields(preset.config)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown config field(s) for {name}: {unknown}; known: {sorted(fields)}")
    cfg = dataclasses.replace(preset.config, **overrides)  # type: ignore[arg-type]
    if preset.pretrained and weights is None and not random_init:
        raise WeightsNotFoundError(
            f"text encoder preset {name!r} needs pretrained weights: pass weights=<path> to the {preset.source} "
            f"(one of {', '.join(preset.weight_files)}; nothing is downloaded), or random_init=True"
        )
    with seeded(seed):
        if preset.kind == "hashed_bow":
            model: TextEncoder = HashedBowEncoder(cfg)  # type: ignore[arg-type]
        else:
            tokenizer = _clip_tokenizer(name, weights, vocab, cfg.context_length)  # type: ignore[union-attr]
            model = ClipTextEncoder(cfg, tokenizer, name=name)  # type: ignore[arg-type]
    model.weights_source = f"random init (seed={seed})"
    if weights is not None:
        path = resolve_weights_file(weights, preset.weight_files, f"text encoder {name!r} ({preset.source})")
        if isinstance(model, ClipTextEncoder):
            model.load_weights(path)
        else:
            sd = load_state_dict_file(path)
            load_checked(model, sd, f"{name} weights from {path}")
            model.weights_source = str(path)
        log.info("text encoder %s: loaded %s", name, path)
    elif preset.pretrained:
        log.warning("text encoder %s built with RANDOM weights (random_init=True): not the paper configuration", name)
    return model


def _clip_tokenizer(
    name: str, weights: str | Path | None, vocab: str | Path | None, context_length: int
) -> ClipTokenizer | None:
    if vocab is None and weights is not None and Path(weights).is_dir():
        vocab = next((Path(weights) / f for f in CLIP_VOCAB_FILES if (Path(weights) / f).is_file()), None)
    if vocab is None:
        if weights is not None:
            raise WeightsNotFoundError(
                f"text encoder {name!r}: CLIP BPE vocabulary not found; pass vocab=<path to "
                f"{' or '.join(CLIP_VOCAB_FILES)}> (open_clip ships bpe_simple_vocab_16e6.txt.gz)"
            )
        return None
    return ClipTokenizer(vocab, context_length=context_length)
