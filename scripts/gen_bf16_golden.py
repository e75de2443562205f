#!/usr/bin/python3
"""Reference outputs of the tiny model with its dense layers in bf16 (test/fixtures/bf16-golden.json).

`precision: 'bf16'` promises: every Linear of the graph computes x · Wᵀ + b with x and W rounded
to bfloat16 (round to nearest even) and the products summed in fp32; everything else (embeddings,
LayerNorm, attention, GELU, the natively applied heads) stays fp32. This script computes exactly
that in PyTorch, from the same from-scratch reference model as golden.json, rebuilt from its seed
(and checked against golden.json first to 1e-6, so it is the same model):

  snapshot: the encoder's Linears in bf16, the heads in fp32 (the BAAI layout, heads applied natively)
  baked:    the heads' Linears in bf16 too (heads-baked exports carry them inside the graph)

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

from gen_fixtures import build_model, f32, reference_outputs  # noqa: E402
from m3_fixture_tokenizer import PRESETS, build_pieces, tokenizer_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bf16(t):
    return t.to(torch.bfloat16).to(torch.float32)


def bf16_linear(self, x):
    return F.linear(bf16(x), bf16(self.weight), self.bias)


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
    out = {"note": "tiny model (demo-model) with bf16 dense layers; see scripts/gen_bf16_golden.py",
           "model": golden["model"], "dim": golden["dim"], "cases": []}
    snapshot = [reference_outputs(encoder, heads, c["ids"]) for c in golden["cases"]]
    patch(heads.modules())
    baked = [reference_outputs(encoder, heads, c["ids"]) for c in golden["cases"]]
    for case, s, b in zip(golden["cases"], snapshot, baked):
        row = {"name": case["name"], "ids": case["ids"]}
        for key, r in (("snapshot", s), ("baked", b)):
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
