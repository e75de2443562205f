#!/usr/bin/python3
"""Generate tiny BGE-M3-shaped models and golden outputs for the test suite.

The encoder, the three heads and the score formulas are written here from scratch in PyTorch
after the published BGE-M3 semantics (FlagEmbedding's BGEM3FlagModel: XLM-RoBERTa encoder,
dense = normalised CLS, sparse = ReLU token weights max-pooled per id, ColBERT = projected rows
after <s>, </s> included). This reference shares no code with the C++ engine, so agreement between the
two is evidence that both follow the semantics rather than the same bug.

Presets:
  tiny  (default) -> demo-model/ (BAAI snapshot layout) and test/fixtures/ (safetensors copy,
                     heads-baked exports under both output namings, golden.json, bad weights)
  bench           -> .cache/bench-model/ (BAAI snapshot layout, realistic sizes, no golden)

Needs Debian's python3-torch, python3-onnx, python3-numpy and Node with the npm `tokenizers`
package (run from the repository root). Weights are random: the models are for tests only.
"""

import argparse
import copy
import json
import math
import os
import random
import shutil
import struct
import inspect
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

class Layer(nn.Module):
    def __init__(self, hidden, heads, intermediate):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))
        self.attn_ln = nn.LayerNorm(hidden, eps=LN_EPS)
        self.ff_in = nn.Linear(hidden, intermediate)
        self.ff_out = nn.Linear(intermediate, hidden)
        self.ff_ln = nn.LayerNorm(hidden, eps=LN_EPS)

    def forward(self, x, key_bias):
        # Batch and length stay symbolic in the trace; head sizes are Python ints (constants).
        b, n, hd = x.size(0), x.size(1), self.head_dim

        def split(t):  # [B, L, H] -> [B, heads, L, hd]
            return t.reshape(b, n, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd) + key_bias
        ctx = torch.matmul(scores.softmax(dim=-1), v).transpose(1, 2).reshape(b, n, self.heads * hd)
        x = self.attn_ln(x + self.o(ctx))
        return self.ff_ln(x + self.ff_out(F.gelu(self.ff_in(x))))  # exact erf GELU


class Encoder(nn.Module):
    """input_ids, attention_mask (int64 [B, L]) -> last_hidden_state [B, L, H]."""

    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        self.word = nn.Embedding(cfg["vocab_size"], h, padding_idx=PAD)
        self.position = nn.Embedding(cfg["max_position_embeddings"], h, padding_idx=PAD)
        self.token_type = nn.Embedding(1, h)
        self.emb_ln = nn.LayerNorm(h, eps=LN_EPS)
        self.layers = nn.ModuleList(
            Layer(h, cfg["num_attention_heads"], cfg["intermediate_size"])
            for _ in range(cfg["num_hidden_layers"]))

    def forward(self, input_ids, attention_mask):
        # Positions come from the ids, not the mask: real tokens count up from 2, pads get 1.
        real = input_ids.ne(PAD).long()
        positions = torch.cumsum(real, dim=1) * real + 1
        x = self.word(input_ids) + self.position(positions) + self.token_type.weight[0]
        x = self.emb_ln(x)
        # Additive mask over keys; the finite minimum (not -inf) is what HF uses and keeps
        # softmax defined even for rows whose keys are mostly padding.
        key_bias = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, key_bias)
        return x


class Heads(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.colbert = nn.Linear(hidden, hidden)
        self.sparse = nn.Linear(hidden, 1)


class BakedM3(nn.Module):
    """Encoder plus heads, with the outputs of common "heads baked in" exports."""

    def __init__(self, encoder, heads):
        super().__init__()
        self.encoder, self.heads = encoder, heads

    def forward(self, input_ids, attention_mask):
        h = self.encoder(input_ids, attention_mask)
        dense = F.normalize(h[:, 0], dim=-1)
        sparse = torch.relu(self.heads.sparse(h))
        colbert = self.heads.colbert(h[:, 1:]) * attention_mask[:, 1:, None].float()
        return dense, sparse, F.normalize(colbert, dim=-1)


class HiddenOnly(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids, attention_mask)


def init_random(encoder, heads, gen):
    """Random weights scaled so activations stay O(1): attention is neither uniform nor
    one-hot, LayerNorm gains and biases are visibly non-trivial."""
    def normal(t, std, mean=0.0):
        with torch.no_grad():
            t.copy_(torch.randn(t.shape, generator=gen) * std + mean)

    for m in list(encoder.modules()) + list(heads.modules()):
        if isinstance(m, nn.Linear):
            normal(m.weight, 1.0 / math.sqrt(m.in_features))
            normal(m.bias, 0.05)
        elif isinstance(m, nn.LayerNorm):
            normal(m.weight, 0.1, mean=1.0)
            normal(m.bias, 0.05)
    normal(encoder.word.weight, 1.0)
    normal(encoder.position.weight, 0.5)
    normal(encoder.token_type.weight, 0.1)
    with torch.no_grad():  # mirror nn.Embedding's padding_idx init; pad rows are masked anyway
        encoder.word.weight[PAD].zero_()
        encoder.position.weight[PAD].zero_()
    normal(heads.sparse.weight, 0.3 / math.sqrt(heads.sparse.in_features))


@torch.no_grad()
def calibrate_sparse_bias(encoder, heads, vocab_size, gen):
    """Set the sparse bias to minus the median pre-activation over random texts, so about half
    of the token weights survive the ReLU (both the cut and the max rule get exercised)."""
    ids = torch.randint(4, vocab_size - 1, (8, 24), generator=gen)
    ids[:, 0], ids[:, -1] = BOS, EOS
    h = encoder(ids, torch.ones_like(ids))[:, 1:-1]
    pre = (h @ heads.sparse.weight.T).flatten()
    heads.sparse.bias.fill_(-pre.median().item())


def round_heads_to_fp16(heads):
    """The published heads are fp16; loading them into an fp32 Linear upcasts exactly these
    values. Every layout and the reference use the rounded weights."""
    with torch.no_grad():
        for p in heads.parameters():
            p.copy_(p.half().float())


# ---------------------------------------------------------------------------------------------
# Writers.

def model_config(cfg):
    return {
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta",
        "hidden_size": cfg["hidden_size"], "num_hidden_layers": cfg["num_hidden_layers"],
        "num_attention_heads": cfg["num_attention_heads"],
        "intermediate_size": cfg["intermediate_size"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "vocab_size": cfg["vocab_size"], "type_vocab_size": 1, "pad_token_id": PAD,
        "bos_token_id": BOS, "eos_token_id": EOS, "layer_norm_eps": LN_EPS,
        "hidden_act": "gelu", "position_embedding_type": "absolute", "torch_dtype": "float32",
    }


def write_json(path, obj, indent=2):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def export_onnx(module, path, output_names, output_axes):
    """torch.onnx.export with int64 inputs and dynamic batch/sequence axes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ids = torch.tensor([[BOS, 10, 11, 12, 13, EOS], [BOS, 14, 15, EOS, PAD, PAD]])
    mask = ids.ne(PAD).long()
    seq_axes = {0: "batch", 1: "sequence"}
    # Newer torch defaults to the dynamo exporter, which turns small constants (Unsqueeze axes)
    # into initializers that ONNX Runtime cannot shape-infer once moved to external data; the
    # TorchScript exporter gives the same graph on every torch version.
    extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(
        module, (ids, mask), path, opset_version=14, do_constant_folding=True,
        input_names=["input_ids", "attention_mask"], output_names=output_names,
        dynamic_axes={"input_ids": seq_axes, "attention_mask": seq_axes, **output_axes}, **extra)


def move_weights_external(path):
    """Rewrite an exported graph the way the BAAI snapshot ships it: all initializers in one
    side file `model.onnx_data` next to `model.onnx`."""
    model = onnx.load(path)
    data = os.path.join(os.path.dirname(path), "model.onnx_data")
    if os.path.exists(data):
        os.remove(data)  # save_model appends to an existing data file
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx_data", size_threshold=0)


def rename_outputs(src, dst, mapping):
    model = onnx.load(src)
    for node in model.graph.node:
        node.output[:] = [mapping.get(o, o) for o in node.output]
        node.input[:] = [mapping.get(i, i) for i in node.input]
    for out in model.graph.output:
        out.name = mapping.get(out.name, out.name)
    onnx.save_model(model, dst)


def pin_last_dim(path, outputs, size):
    """torch 1.13's shape inference loses the static hidden size through F.normalize and
    declares it symbolic ('Div..._dim_1'); restore it so the graph states its width."""
    model = onnx.load(path)
    for out in model.graph.output:
        if out.name in outputs:
            out.type.tensor_type.shape.dim[-1].dim_value = size  # clears the dim_param
    onnx.save_model(model, path)


def check_onnx(path, inputs, outputs):
    onnx.checker.check_model(path)  # path form, so external data is resolved
    graph = onnx.load(path, load_external_data=False).graph
    assert [i.name for i in graph.input] == inputs, [i.name for i in graph.input]
    assert [o.name for o in graph.output] == outputs, [o.name for o in graph.output]


def save_pt_heads(heads, root):
    for name in ("colbert", "sparse"):
        linear = copy.deepcopy(getattr(heads, name))
        torch.save(linear.half().state_dict(), os.path.join(root, f"{name}_linear.pt"))


def write_safetensors(path, tensors):
    """Minimal safetensors writer: u64 LE header size, JSON header, raw little-endian data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        raw = tensors[name].detach().half().numpy().astype("<f2").tobytes()
        header[name] = {"dtype": "F16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # align the data section, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def write_snapshot(root, encoder, heads, cfg, tok, pt_heads=True):
    """BAAI/bge-m3 snapshot layout: onnx/model.onnx (+ external data) giving last_hidden_state,
    heads next to it as files, tokenizer.json and config.json at the root."""
    os.makedirs(root, exist_ok=True)
    onnx_path = os.path.join(root, "onnx", "model.onnx")
    export_onnx(HiddenOnly(encoder), onnx_path, ["last_hidden_state"],
                {"last_hidden_state": {0: "batch", 1: "sequence"}})
    move_weights_external(onnx_path)
    check_onnx(onnx_path, ["input_ids", "attention_mask"], ["last_hidden_state"])
    write_json(os.path.join(root, "tokenizer.json"), tok, indent=None)
    write_json(os.path.join(root, "config.json"), model_config(cfg))
    if pt_heads:
        save_pt_heads(heads, root)


def write_baked(root, encoder, heads, cfg, tok, alt_root):
    names = ["dense_vecs", "sparse_vecs", "colbert_vecs"]
    path = os.path.join(root, "model.onnx")
    export_onnx(BakedM3(encoder, heads), path, names, {
        "dense_vecs": {0: "batch"}, "sparse_vecs": {0: "batch", 1: "sequence"},
        "colbert_vecs": {0: "batch", 1: "colbert_rows"}})
    pin_last_dim(path, ["dense_vecs", "colbert_vecs"], cfg["hidden_size"])
    check_onnx(path, ["input_ids", "attention_mask"], names)
    alt_names = ["dense_embeddings", "sparse_weights", "colbert_vectors"]
    os.makedirs(alt_root, exist_ok=True)
    alt_path = os.path.join(alt_root, "model.onnx")
    rename_outputs(path, alt_path, dict(zip(names, alt_names)))
    check_onnx(alt_path, ["input_ids", "attention_mask"], alt_names)
    for d in (root, alt_root):
        write_json(os.path.join(d, "tokenizer.json"), tok, indent=None)
        write_json(os.path.join(d, "config.json"), model_config(cfg))


def write_safetensors_copy(snapshot, root, heads):
    """Same model as the snapshot, with the heads only as .safetensors."""
    os.makedirs(os.path.join(root, "onnx"), exist_ok=True)
    for rel in ("onnx/model.onnx", "onnx/model.onnx_data", "tokenizer.json", "config.json"):
        shutil.copyfile(os.path.join(snapshot, rel), os.path.join(root, rel))
    for name in ("colbert", "sparse"):
        write_safetensors(os.path.join(root, f"{name}_linear.safetensors"),
                          dict(getattr(heads, name).state_dict()))


DEMO_README = """# demo-model: a tiny BGE-M3-shaped model with RANDOM weights

This directory has the layout of the `BAAI/bge-m3` snapshot (`onnx/model.onnx` with external
weights in `onnx/model.onnx_data`, `colbert_linear.pt`, `sparse_linear.pt`, `tokenizer.json`,
`config.json`), but the weights are random and the vocabulary has about {vocab} pieces. Its
embeddings and scores carry no meaning: it exists so tests, examples and demos run without a
2 GB download. Dimension {dim}, at most {maxlen} tokens per text.

For real embeddings download the BAAI/bge-m3 repository from Hugging Face (for example
`huggingface-cli download BAAI/bge-m3 --local-dir ./bge-m3`) and point `BGEM3.load()` at that
directory instead; the engine reads the same files.

Regenerate with `scripts/gen-fixtures.sh` (needs python3-torch, python3-onnx, python3-numpy).
"""


# ---------------------------------------------------------------------------------------------
# Reference semantics (eager fp32, one text at a time, no padding).

@torch.no_grad()
def reference_outputs(encoder, heads, ids):
    t = torch.tensor([ids])
    h = encoder(t, torch.ones_like(t))[0]
    dense = F.normalize(h[0], dim=-1)
    token_weights = torch.relu(heads.sparse(h))[:, 0]
    sparse = {}
    for tid, w in zip(ids, token_weights.tolist()):  # float32 values, exactly
        if tid in (BOS, PAD, EOS, UNK) or w <= 0:
            continue
        if w > sparse.get(str(tid), 0.0):
            sparse[str(tid)] = w
    colbert = F.normalize(heads.colbert(h[1:]), dim=-1)  # every row after <s>, </s> included
    return {"dense": dense.numpy(), "sparse": sparse, "colbert": colbert.numpy(),
            "token_weights": token_weights.numpy()}


def pair_scores(q, p, weights):
    d = float(np.dot(q["dense"].astype(np.float64), p["dense"].astype(np.float64)))
    s = sum((float(w) * float(p["sparse"][k]) for k, w in q["sparse"].items()
             if k in p["sparse"]), 0.0)
    sim = q["colbert"].astype(np.float64) @ p["colbert"].astype(np.float64).T
    c = float(sim.max(axis=1).sum() / sim.shape[0])
    w0, w1, w2 = weights
    return {"dense": d, "sparse": s, "colbert": c,
            "sparse+dense": (w1 * s + w0 * d) / (w0 + w1),
            "colbert+sparse+dense": (w0 * d + w1 * s + w2 * c) / (w0 + w1 + w2)}


def f32(values):
    """Shortest decimal that round-trips each float32 (keeps golden.json small and exact)."""
    return [float(repr(np.float32(v))) for v in np.asarray(values, dtype=np.float32).ravel()]


README_Q = "What is BGE M3?"
README_P = ("BGE M3 is an embedding model supporting dense retrieval, lexical matching and "
            "multi-vector interaction.")
LONG_TEXT = (
    "Dense retrieval maps every text to one vector, while lexical matching keeps a weight for "
    "each token, and multi-vector interaction compares every query token with every passage "
    "token. A hybrid engine can recall candidates with the cheap routes and then rerank the "
    "union with all three scores, which is what this test text is long enough to exercise: it "
    "has many more tokens than the tiny model accepts, so the default truncation must keep the "
    "first sixty four tokens including the special ones.")
REPEATED = "the model and the model and the model"
MULTILINGUAL = "Привет, мир! 東京は日本の首都です。 مرحبا بالعالم नमस्ते दुनिया"

GOLDEN_CASES = [
    ("english", "The quick brown fox jumps over the lazy dog.", None),
    ("readme_query", README_Q, None),
    ("readme_passage", README_P, None),
    ("empty", "", None),
    ("whitespace", "   \t ", None),
    ("repeated", REPEATED, None),
    ("unknown_chars", "I love 🦜 parrots ✨ and ☃ snow", None),
    ("multilingual", MULTILINGUAL, None),
    ("digits_mixed", "BGE-M3 supports 100+ languages and 8192 tokens.", None),
    ("long_default", LONG_TEXT, None),
    ("long_max16", LONG_TEXT, 16),
]

SCORE_PAIRS = [
    [README_Q, README_P],
    ["an embedding model for lexical matching", "an embedding model for lexical matching"],
    ["cat", "Привет мир"],  # no shared token: lexical score exactly 0
    ["", README_P],
    [LONG_TEXT, "the quick brown fox"],  # query truncated to maxQueryLength
    ["東京", "東京は日本の首都です。"],
    ["model model", "model model model embedding"],
]
SCORE_WEIGHTS, QUERY_MAX, PASSAGE_MAX = [0.4, 0.2, 0.4], 16, 64


def check_tokenizer(tok_path):
    got = node_tokenize(tok_path, [("hello world", None), ("I love 🦜", None), ("", None)])
    assert got[0]["tokens"] == ["<s>", SPM + "hello", SPM + "world", "</s>"], got[0]
    assert got[1]["ids"][0] == BOS and got[1]["ids"][-1] == EOS, got[1]
    assert UNK in got[1]["ids"], got[1]
    assert got[2]["ids"] == [BOS, EOS], got[2]


def build_golden(encoder, heads, cfg, tok_path):
    default_max = cfg["max_position_embeddings"] - 2
    toks = node_tokenize(tok_path, [(t, m if m is not None else default_max)
                                    for _, t, m in GOLDEN_CASES])
    cases, per_token = [], {}
    for (name, text, max_len), tk in zip(GOLDEN_CASES, toks):
        ids = tk["ids"]
        assert ids[0] == BOS and ids[-1] == EOS, (name, ids)
        ref = reference_outputs(encoder, heads, ids)
        per_token[name] = (ids, ref["token_weights"])
        cases.append({"name": name, "text": text, "maxLength": max_len, "ids": ids,
                      "tokens": tk["tokens"], "dense": f32(ref["dense"]),
                      "sparse": {k: f32([v])[0] for k, v in ref["sparse"].items()},
                      "colbert": [f32(row) for row in ref["colbert"]]})
    by_name = {c["name"]: c for c in cases}
    assert len(by_name["long_default"]["ids"]) == default_max, "default truncation not hit"
    assert len(by_name["long_max16"]["ids"]) == 16
    assert UNK in by_name["unknown_chars"]["ids"]
    assert max_rule_matters(*per_token["repeated"]), "repeated ids all have equal weights"

    pair_items = [(q, QUERY_MAX) for q, _ in SCORE_PAIRS] + [(p, PASSAGE_MAX) for _, p in SCORE_PAIRS]
    pair_toks = node_tokenize(tok_path, pair_items)
    refs = [reference_outputs(encoder, heads, t["ids"]) for t in pair_toks]
    n = len(SCORE_PAIRS)

    def score_block(weights):
        block = {"weights": weights, "maxQueryLength": QUERY_MAX,
                 "maxPassageLength": PASSAGE_MAX, "pairs": SCORE_PAIRS}
        rows = [pair_scores(refs[i], refs[n + i], weights) for i in range(n)]
        for key in ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"):
            block[key] = [r[key] for r in rows]
        return block

    scores, scores_default = score_block(SCORE_WEIGHTS), score_block([1, 1, 1])
    assert scores["sparse"][1] > 0, "identical pair has no positive lexical weight"
    assert abs(scores["dense"][1] - 1) < 1e-5 and abs(scores["colbert"][1] - 1) < 1e-5
    shared = set(pair_toks[2]["ids"]) & set(pair_toks[n + 2]["ids"])
    assert shared <= {BOS, EOS} and scores["sparse"][2] == 0.0, "disjoint pair shares a token"
    assert len(pair_toks[4]["ids"]) == QUERY_MAX, "long query not truncated"
    weights = np.concatenate([w[1:-1] for _, w in per_token.values() if len(w) > 2])
    stats = {"positive_fraction": float((weights > 0).mean())}
    golden = {"model": model_config(cfg), "dim": cfg["hidden_size"],
              "defaultMaxLength": default_max, "cases": cases, "scores": scores,
              "scoresDefault": scores_default}
    return golden, stats


def max_rule_matters(ids, weights):
    """True when some id occurs at several positions and its largest weight is positive and
    at neither its first nor its last occurrence, so first-wins or last-wins would differ."""
    positions = {}
    for i, tid in enumerate(ids):
        if tid > UNK:
            positions.setdefault(tid, []).append(float(weights[i]))
    return any(len(ws) > 2 and max(ws) > 0 and max(ws) not in (ws[0], ws[-1])
               for ws in positions.values())


@torch.no_grad()
def check_batch_invariance(encoder, heads, golden):
    """The padded batched path (as exported) must reproduce the one-text reference."""
    cases = golden["cases"]
    width = max(len(c["ids"]) for c in cases)
    ids = torch.full((len(cases), width), PAD, dtype=torch.long)
    for i, c in enumerate(cases):
        ids[i, :len(c["ids"])] = torch.tensor(c["ids"])
    dense, token_weights, colbert = BakedM3(encoder, heads)(ids, ids.ne(PAD).long())
    for i, c in enumerate(cases):
        n = len(c["ids"])
        single = reference_outputs(encoder, heads, c["ids"])["token_weights"]
        assert np.allclose(token_weights[i, :n, 0].numpy(), single, atol=1e-5), c["name"]
        assert np.allclose(dense[i].numpy(), c["dense"], atol=1e-5), c["name"]
        assert np.allclose(colbert[i, :n - 1].numpy(), c["colbert"], atol=1e-5), c["name"]
        assert not colbert[i, n - 1:].any(), c["name"]


# ---------------------------------------------------------------------------------------------
# Malformed head files for the loader's error paths.

def write_bad_weights(root, hidden, sparse_pt):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(99)
    with open(os.path.join(root, "not_a_zip.pt"), "wb") as f:
        f.write(rng.integers(0, 256, 256, dtype=np.uint8).tobytes())
    with open(sparse_pt, "rb") as f:
        valid = f.read()
    with open(os.path.join(root, "truncated.pt"), "wb") as f:
        f.write(valid[: len(valid) // 2])
    # A torch-style zip whose pickle calls os.system on load: PROTO 2, GLOBAL 'os system',
    # MARK, BINUNICODE cmd, TUPLE, REDUCE, STOP. Written by hand so the GLOBAL names `os`
    # (pickling the function itself would record `posix`).
    cmd = b"echo pwned > /tmp/pwned"
    pkl = b"\x80\x02cos\nsystem\n(X" + struct.pack("<I", len(cmd)) + cmd + b"tR."
    with zipfile.ZipFile(os.path.join(root, "malicious.pt"), "w", zipfile.ZIP_STORED) as z:
        for name, data in (("malicious/data.pkl", pkl), ("malicious/version", b"3\n")):
            # Fixed timestamp so regenerating leaves the committed file byte-identical.
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    torch.save([1, 2, 3], os.path.join(root, "not_state_dict.pt"))
    torch.save({"weight": torch.zeros(hidden, hidden + 1, dtype=torch.float16),
                "bias": torch.zeros(hidden, dtype=torch.float16)},
               os.path.join(root, "wrong_shape_colbert.pt"))
    torch.save({"weight": torch.zeros(hidden, hidden, dtype=torch.float16)},
               os.path.join(root, "missing_bias.pt"))


# ---------------------------------------------------------------------------------------------

def build_model(preset, tok):
    p = PRESETS[preset]
    cfg = {"hidden_size": p["hidden"], "num_attention_heads": p["heads"],
           "num_hidden_layers": p["layers"], "intermediate_size": p["intermediate"],
           "max_position_embeddings": p["positions"],
           "vocab_size": len(tok["model"]["vocab"])}
    gen = torch.Generator().manual_seed(p["seed"])
    encoder, heads = Encoder(cfg).eval(), Heads(cfg["hidden_size"]).eval()
    init_random(encoder, heads, gen)
    calibrate_sparse_bias(encoder, heads, cfg["vocab_size"], gen)
    round_heads_to_fp16(heads)
    return cfg, encoder, heads


def dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-tokenizer-check", action="store_true",
                    help="do not tokenize probes with node (machines without Node.js; bench preset only)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--out", help="model directory (default: demo-model or .cache/bench-model)")
    ap.add_argument("--fixtures", default=os.path.join(REPO, "test", "fixtures"),
                    help="test fixture directory (tiny preset only)")
    args = ap.parse_args()
    preset = PRESETS[args.preset]
    out = args.out or os.path.join(REPO, preset["out"])
    torch.manual_seed(0)  # export tracing is deterministic, but keep any stray RNG use fixed
    # torch 1.13's exporter warns about missing shape inference for prim::Constant on every
    # export; the graphs are checked below and by the Node tests, so the noise is dropped.
    warnings.filterwarnings("ignore", message="The shape inference of prim::Constant")

    tok = tokenizer_json(build_pieces(preset["generated_pieces"]))
    cfg, encoder, heads = build_model(args.preset, tok)
    write_snapshot(out, encoder, heads, cfg, tok)
    tok_path = os.path.join(out, "tokenizer.json")
    if not args.skip_tokenizer_check:
        check_tokenizer(tok_path)
    summary = {out: dir_size(out)}

    if args.preset == "tiny":
        with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
            f.write(DEMO_README.format(vocab=cfg["vocab_size"], dim=cfg["hidden_size"],
                                       maxlen=cfg["max_position_embeddings"] - 2))
        fx = args.fixtures
        write_safetensors_copy(out, os.path.join(fx, "tiny-m3-safetensors"), heads)
        write_baked(os.path.join(fx, "tiny-m3-baked"), encoder, heads, cfg, tok,
                    os.path.join(fx, "tiny-m3-baked-alt"))
        golden, stats = build_golden(encoder, heads, cfg, tok_path)
        check_batch_invariance(encoder, heads, golden)
        write_json(os.path.join(fx, "golden.json"), golden, indent=None)
        write_bad_weights(os.path.join(fx, "bad-weights"), cfg["hidden_size"],
                          os.path.join(out, "sparse_linear.pt"))
        summary[fx] = dir_size(fx)
        print(f"cases: {len(golden['cases'])}, score pairs: {len(SCORE_PAIRS)}, "
              f"positive sparse fraction: {stats['positive_fraction']:.2f}")
        for c in golden["cases"]:
            print(f"  {c['name']:15s} {len(c['ids']):3d} ids {c['ids'][:12]}"
                  f"{' ...' if len(c['ids']) > 12 else ''}")
    print(f"vocab {cfg['vocab_size']}, hidden {cfg['hidden_size']}, layers "
          f"{cfg['num_hidden_layers']}, positions {cfg['max_position_embeddings']}")
    for d, size in summary.items():
        print(f"  {d}: {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
