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
  bench           -> .cache/bench-model/ (BAAI snapshot layout, 6 x 384, no golden)
  full            -> .cache/bench-model-full/ (BAAI snapshot layout, BGE-M3's 24 x 1024 shape with
                     250,002 embeddings, about 2.2 GB)
The bench presets also write the heads as .safetensors and a tokenizer_config.json (for the
JavaScript peers of the benchmark).

Needs Debian's python3-torch, python3-onnx, python3-numpy and Node with the npm `tokenizers`
package (run from the repository root). Weights are random: the models are for tests only.
"""


import argparse
import os
import sys

# The helper modules sit next to this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

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

from m3_fixture_tokenizer import *  # noqa: F401,F403,E402
from m3_reference_model import *  # noqa: F401,F403,E402
from m3_fixture_export import *  # noqa: F401,F403,E402

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
           "vocab_size": max(p.get("vocab", 0), len(tok["model"]["vocab"]))}
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
    if args.preset != "tiny":
        # For the JavaScript peers of the benchmark: heads they can read, and the tokenizer
        # config @huggingface/transformers looks for.
        for name in ("colbert", "sparse"):
            write_safetensors(os.path.join(out, f"{name}_linear.safetensors"), dict(getattr(heads, name).state_dict()))
        write_json(os.path.join(out, "tokenizer_config.json"), {
            "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": cfg["max_position_embeddings"] - 2,
            "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
            "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"})
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
        # fp16 / bf16 graph outputs (the encoder widens them): the same models, outputs rounded.
        write_half_outputs(os.path.join(fx, "tiny-m3-safetensors"), "onnx/model.onnx",
                           os.path.join(fx, "tiny-m3-fp16-hidden"), ["last_hidden_state"], onnx.TensorProto.FLOAT16)
        write_half_outputs(os.path.join(fx, "tiny-m3-baked"), "model.onnx", os.path.join(fx, "tiny-m3-baked-bf16"),
                           ["dense_vecs", "sparse_vecs", "colbert_vecs"], onnx.TensorProto.BFLOAT16)
        # int32 input_ids / attention_mask (the encoder feeds what the graph declares).
        write_int32_inputs(os.path.join(fx, "tiny-m3-safetensors"), "onnx/model.onnx", os.path.join(fx, "tiny-m3-int32-inputs"))
        # Attention exported in other styles (SDPA's pre-scaled q and k, Mul scales, mask on the
        # left), and a block the fused attention must leave alone.
        write_attention_variants(os.path.join(fx, "tiny-m3-safetensors"), "onnx/model.onnx",
                                 os.path.join(fx, "tiny-m3-attention-sdpa"), os.path.join(fx, "tiny-m3-attention-partial"))
        # Dense layers as exports without constant folding (Transpose) and 2-D exports (Gemm) give them.
        write_linear_variants(os.path.join(fx, "tiny-m3-safetensors"), "onnx/model.onnx",
                              os.path.join(fx, "tiny-m3-linear-variants"))
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
