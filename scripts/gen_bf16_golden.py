#!/usr/bin/python3
"""Reference outputs of the tiny model in `precision: 'bf16'` (test/fixtures/bf16-golden.json).

`precision: 'bf16'` promises: every Linear of the graph computes x · Wᵀ + b with x and W rounded
to bfloat16 (round to nearest even) and the products summed in fp32; the fused attention rounds
q and k for the scores, and the softmax weights e^(s - max) and v for the weighted sum (fp32 sums,
divided by the fp32 sum of the unrounded weights); everything else (embeddings, LayerNorm, the
softmax, GELU, the natively applied heads) stays fp32. This script computes exactly that in
PyTorch, from the same from-scratch reference model as golden.json, rebuilt from its seed (and
checked against golden.json first to 1e-6, so it is the same model):

  snapshot:      the encoder in bf16, the heads in fp32 (the BAAI layout, heads applied natively)
  graphAttention: the encoder's Linears in bf16, its attention in fp32 (fusedAttention: false)
  baked:         the heads' Linears in bf16 too (heads-baked exports carry them inside the graph)

Run from the repository root: scripts/torch-python.sh's python, e.g.
  /usr/bin/python3 scripts/gen_bf16_golden.py
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import math  # noqa: E402

import m3_reference_model  # noqa: E402
from gen_fixtures import build_model, f32, reference_outputs  # noqa: E402
from m3_fixture_tokenizer import PRESETS, build_pieces, tokenizer_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bf16(t):
    return t.to(torch.bfloat16).to(torch.float32)


def bf16_linear(self, x):
    return F.linear(bf16(x), bf16(self.weight), self.bias)


def bf16_attention_forward(self, x, key_bias):
    """m3_reference_model.Layer.forward with the fused attention's bf16 rounding."""
    b, n, hd = x.size(0), x.size(1), self.head_dim

    def split(t):
        return t.reshape(b, n, self.heads, hd).transpose(1, 2)

    q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
    scores = torch.matmul(bf16(q), bf16(k).transpose(-1, -2)) * (1.0 / math.sqrt(hd)) + key_bias
    e = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
    ctx = torch.matmul(bf16(e), bf16(v)) / e.sum(dim=-1, keepdim=True)
    ctx = ctx.transpose(1, 2).reshape(b, n, self.heads * hd)
    x = self.attn_ln(x + self.o(ctx))
    return self.ff_ln(x + self.ff_out(F.gelu(self.ff_in(x))))


def patch(modules):
    for m in modules:
        if isinstance(m, nn.Linear):
            m.forward = bf16_linear.__get__(m, nn.Linear)


def main():
    golden = json.load(open(os.path.join(REPO, "test", "fixtures", "golden.json"), encoding="utf-8"))
    tok = tokenizer_json(build_pieces(PRESETS["tiny"]["generated_pieces"]))
    _, encoder, heads = build_model("tiny", tok)
    # The rebuilt model must be golden.json's: fp32 outputs equal to its stored values (up to the
    # summation order of this machine's BLAS).
    for case in golden["cases"]:
        ref = reference_outputs(encoder, heads, case["ids"])
        assert np.abs(np.float32(case["dense"]) - ref["dense"]).max() < 1e-6, case["name"]

    patch(encoder.modules())
    out = {"note": "tiny model (demo-model) in precision bf16; see scripts/gen_bf16_golden.py",
           "model": golden["model"], "dim": golden["dim"], "cases": []}
    graph_attention = [reference_outputs(encoder, heads, c["ids"]) for c in golden["cases"]]
    m3_reference_model.Layer.forward = bf16_attention_forward
    snapshot = [reference_outputs(encoder, heads, c["ids"]) for c in golden["cases"]]
    patch(heads.modules())
    baked = [reference_outputs(encoder, heads, c["ids"]) for c in golden["cases"]]
    for case, s, g, b in zip(golden["cases"], snapshot, graph_attention, baked):
        row = {"name": case["name"], "ids": case["ids"]}
        for key, r in (("snapshot", s), ("graphAttention", g), ("baked", b)):
            row[key] = {"dense": f32(r["dense"]), "sparse": {k: f32([v])[0] for k, v in r["sparse"].items()},
                        "colbert": [f32(x) for x in r["colbert"]]}
        out["cases"].append(row)
    path = os.path.join(REPO, "test", "fixtures", "bf16-golden.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, separators=(",", ":"))
    d = max(float(np.abs(np.float32(s["dense"]) - np.float32(c["dense"])).max()) for s, c in zip(snapshot, golden["cases"]))
    print(f"{path}: {len(out['cases'])} cases; largest dense difference from fp32 {d:.2e}")


if __name__ == "__main__":
    main()
