"""The fixture tokenizer: an XLM-R style SentencePiece Unigram tokenizer.json written from a
generated piece inventory, and tokenization through the npm `tokenizers` package (the same
library the engine uses), since Debian has no Python binding for it."""

import copy
import inspect
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in XLM-R; <mask> goes last
BOS, PAD, EOS, UNK = 0, 1, 2, 3
SPM = "\u2581"  # SentencePiece word-boundary marker
LN_EPS = 1e-5

PRESETS = {
    "tiny": dict(hidden=32, heads=4, layers=2, intermediate=64, positions=66, seed=1234,
                 generated_pieces=False, out="demo-model"),
    "bench": dict(hidden=384, heads=12, layers=6, intermediate=1536, positions=514, seed=4321,
                  generated_pieces=True, out=".cache/bench-model"),
    # BGE-M3's own shape (XLM-R large: 24 x 1024, 8192 usable positions, 250,002 embeddings;
    # about 2.2 GB of fp32 weights). The tokenizer is the bench one: its ids use only the
    # start of the embedding table, which costs the same per token.
    "full": dict(hidden=1024, heads=16, layers=24, intermediate=4096, positions=8194, seed=5678,
                 generated_pieces=True, vocab=250002, out=".cache/bench-model-full"),
}

# ---------------------------------------------------------------------------------------------
# Tokenizer: a small Unigram vocabulary in XLM-R's tokenizer.json layout.

CHARS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    ".,!?;:'\"()[]-_/&%$#@+=*<>~`。、"
    "абвгдежзийклмнопрстуфхцчшщыьэюяПМ"  # Cyrillic
    "αβγδεζηθικλμνξοπρστυφχψωΣΩ"  # Greek
    "的一是不了人我在有这中大国语言文字模型检索東京日本首都のはをにがでするとす"  # CJK + kana
    "ابتثجحخدذرزسشصضطظعغفقكلمنهوية"  # Arabic
    "अआइईउएओकखगचजटडणतथदधनपबभमयरलवशसहािीुूेैोौं्"  # Devanagari
)

WORDS = """
the of and to in is a that for it as with was on be by this are from at or an which but not
have has can more one all their they we you what how when where who why will would there
been were other into some than then them these its also only new after first two use used
model models embedding embeddings dense sparse lexical retrieval matching multi vector vectors
interaction supporting support search query queries passage passages document documents text
texts token tokens language languages word words score scores rank ranking index data learning
neural network training test fast native engine node server batch hybrid weight weights
quick brown fox jumps over lazy dog cat sat mat hello world love parrots snow bird fish
The What This It A In BGE
ing ed er es s ly tion al re un est ment ness able ity ive ize ous ation ter ent ar
""".split()

# A few multi-character pieces in other scripts, so those texts are not purely per-character.
OTHER_PIECES = [SPM + "При", "вет", SPM + "мир", "東京", "日本", SPM + "مرحبا", SPM + "नम", "स्ते"]


def piece_score(piece, rank):
    """Log-probability-like score: longer pieces score higher, so Viterbi prefers whole words.

    The tiny rank term keeps all scores distinct so segmentation never hinges on ties.
    """
    core = piece[1:] if piece.startswith(SPM) and len(piece) > 1 else piece
    n = len(core)
    if piece == SPM:
        base = -7.0
    elif n == 1:
        base = -10.7 if piece.startswith(SPM) else -11.0
    else:
        base = -8.0 + 0.5 * min(n, 8)
    return round(base - 1e-4 * rank, 5)


def build_pieces(generated):
    """Ordered, de-duplicated piece inventory (without the specials)."""
    pieces = [SPM]
    for ch in CHARS:
        pieces += [ch, SPM + ch]
    for w in WORDS:
        pieces += [SPM + w, w]
    pieces += OTHER_PIECES
    if generated:
        # Bench preset: a few thousand extra pieces so embedding tables and segmentations look
        # like a real (if small) vocabulary.
        rng = random.Random(7)
        letters = "abcdefghijklmnopqrstuvwxyz"
        for a in letters:
            for b in letters:
                pieces += [a + b, SPM + a + b]
        for _ in range(1200):
            tri = "".join(rng.choice(letters) for _ in range(3))
            pieces += [tri, SPM + tri]
    seen, out = set(SPECIALS + ["<mask>"]), []
    for p in pieces:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def tokenizer_json(pieces):
    vocab = [[s, 0.0] for s in SPECIALS]
    vocab += [[p, piece_score(p, i)] for i, p in enumerate(pieces)]
    vocab.append(["<mask>", 0.0])
    mask_id = len(vocab) - 1

    def added(i, content, lstrip=False):
        return {"id": i, "content": content, "single_word": False, "lstrip": lstrip,
                "rstrip": False, "normalized": False, "special": True}

    def special(name):
        return {"SpecialToken": {"id": name, "type_id": 0}}

    def seq(name):
        return {"Sequence": {"id": name, "type_id": 0}}

    metaspace = {"type": "Metaspace", "replacement": SPM, "prepend_scheme": "always", "split": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added(i, s) for i, s in enumerate(SPECIALS)]
        + [added(mask_id, "<mask>", lstrip=True)],
        # XLM-R ships a SentencePiece charsmap here; NFKC plus whitespace folding is a simple
        # stand-in with the same flavour (tabs/newlines become spaces, runs collapse).
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"},
            {"type": "Replace", "pattern": {"Regex": "[\t\n\r]"}, "content": " "},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ]},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("<s>"), seq("A"), special("</s>")],
            "pair": [special("<s>"), seq("A"), special("</s>"), special("</s>"), seq("B"),
                     special("</s>")],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [BOS], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [EOS], "tokens": ["</s>"]},
            },
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": UNK, "vocab": vocab, "byte_fallback": False},
    }


def node_tokenize(tokenizer_path, items):
    """[(text, maxLength or None)] -> [{"ids", "tokens"}] via the npm tokenizers package."""
    payload = json.dumps([{"text": t, "maxLength": m} for t, m in items])
    res = subprocess.run(
        ["node", os.path.join("scripts", "tokenize_fixture_texts.js"),
         os.path.abspath(tokenizer_path)],
        input=payload, capture_output=True, text=True, cwd=REPO, check=False)
    if res.returncode != 0:
        sys.exit(f"tokenizer helper failed:\n{res.stderr}")
    return json.loads(res.stdout)


# ---------------------------------------------------------------------------------------------
# Encoder: XLM-RoBERTa (post-LayerNorm) written out explicitly.

