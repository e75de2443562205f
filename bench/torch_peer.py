#!/usr/bin/python3
"""The PyTorch peer of the encoder benchmark: FlagEmbedding's computation on CPU, run by the
hand-written PyTorch model of scripts/m3_reference_model.py (not Hugging Face transformers, which
Debian does not package; bench/torch_gpu_peer.py runs transformers' XLMRobertaModel on a GPU).

Tuned as a careful PyTorch user would: denormals flushed, and the attention as fast as the
installed torch allows: scaled_dot_product_attention (torch 2.0+), else the scale folded into the
query and the mask added inside the score product (baddbmm), so the [B, heads, L, L] scores are
written once and read once by softmax. The eager form (a product, a division, an addition and a
softmax over that tensor, each a full pass through memory) ran 2.3x slower per token at 512 tokens
than at 128 on one Zen 4 core, where the extra work per token is 1.2x; this form, 2.2x (those
passes dominate the profile at 512 tokens). torch's matrix products go through the system BLAS:
Debian's default libblas3 is the netlib reference implementation (about 5 GFLOP/s on one core,
30x below OpenBLAS), so the result states which BLAS ran ("blas"); install libopenblas0-pthread
for a fair figure.

BGEM3FlagModel.encode sorts texts by length (longest first), pads each batch to its longest
text, runs the XLM-R encoder in eager PyTorch, takes the normalised <s> vector, applies the
sparse head with a ReLU and keeps the max weight per token id in a Python dict (special tokens
dropped), and applies the ColBERT head to the rows after <s>, normalised. This script does the
same with the independent PyTorch model of scripts/m3_reference_model.py.

The weights are rebuilt from the generator's seed (scripts/gen_fixtures.py), so they equal the
ONNX file's without reading it back; every output is recorded so the harness can check
that. Texts arrive tokenized (the npm `tokenizers` on the same tokenizer.json; Debian has no
Python binding), so tokenization time is not counted here.

stdin: {"model": dir, "threads": n, "runs": n, "batchSize": n,
        "workloads": [{"name", "maxLength", "ids": [[...], ...]}]}
stdout: one JSON object (rows like bench/encode_peers.ts, and each workload's outputs recorded as
bench/agreement.ts reads them).
"""
import base64
import json
import math
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gen_fixtures import build_model  # noqa: E402
from m3_fixture_tokenizer import BOS, EOS, PAD, UNK, PRESETS, build_pieces, tokenizer_json  # noqa: E402
import m3_reference_model  # noqa: E402

COLBERT_SAMPLE = 8  # as bench/agreement.ts
SDPA = hasattr(F, "scaled_dot_product_attention")


def fast_layer_forward(self, x, key_bias):
    """m3_reference_model.Layer.forward with the attention computed in as few passes as torch allows."""
    b, n, hd = x.size(0), x.size(1), self.head_dim

    def split(t):
        return t.reshape(b, n, self.heads, hd).transpose(1, 2)

    q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
    if SDPA:
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias)
    else:
        scale = 1.0 / math.sqrt(hd)
        q3, k3 = (q * scale).reshape(b * self.heads, n, hd), k.reshape(b * self.heads, n, hd)
        bias = key_bias.expand(b, self.heads, n, n).reshape(b * self.heads, n, n)
        scores = torch.baddbmm(bias, q3, k3.transpose(1, 2))
        ctx = torch.bmm(torch.softmax(scores, dim=-1), v.reshape(b * self.heads, n, hd)).reshape(b, self.heads, n, hd)
    ctx = ctx.transpose(1, 2).reshape(b, n, self.heads * hd)
    x = self.attn_ln(x + self.o(ctx))
    return self.ff_ln(x + self.ff_out(F.gelu(self.ff_in(x))))


def blas():
    """Which BLAS torch's products use here: torch's own build note and the system library it loads."""
    info = torch.__config__.show()
    note = next((part.strip() for part in info.replace("\n", ",").split(",") if part.strip().startswith("BLAS_INFO=")), "BLAS_INFO unknown")
    try:
        lib = os.path.realpath("/etc/alternatives/libblas.so.3-x86_64-linux-gnu")
    except OSError:
        lib = ""
    return f"{note}; libblas.so.3 -> {lib}" if lib else note


def record(dense, sparse, colbert):
    """One workload's outputs as bench/agreement.ts records them."""
    f32 = lambda a: base64.b64encode(a.astype("<f4").tobytes()).decode()  # noqa: E731
    import numpy as np
    rec = {"dim": int(dense[0].shape[0]), "texts": len(dense), "dense": f32(np.stack(dense))}
    if sparse[0] is not None:
        rec["sparse"] = [[list(s.keys()), list(s.values())] for s in sparse]
        sample = colbert[:COLBERT_SAMPLE]
        rec["colbert"] = {"rows": [int(c.shape[0]) for c in sample], "data": f32(np.concatenate([c.reshape(-1) for c in sample]))}
    return rec


def preset_for(config):
    for name, p in PRESETS.items():
        if p["hidden"] == config["hidden_size"] and p["layers"] == config["num_hidden_layers"]:
            return name
    raise SystemExit(f"no generator preset has hidden {config['hidden_size']} and {config['num_hidden_layers']} layers")


@torch.inference_mode()
def encode(encoder, heads, ids, batch_size, outputs):
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    dense_out, sparse_out, colbert_out = [None] * len(ids), [None] * len(ids), [None] * len(ids)
    special = {BOS, EOS, PAD, UNK}
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        length = max(len(ids[i]) for i in idx)
        batch = torch.full((len(idx), length), PAD, dtype=torch.long)
        for b, i in enumerate(idx):
            batch[b, :len(ids[i])] = torch.tensor(ids[i])
        mask = batch.ne(PAD).long()
        h = encoder(batch, mask)
        dense = F.normalize(h[:, 0], dim=-1)
        if outputs == "all":
            weights = torch.relu(heads.sparse(h)).squeeze(-1)
            colbert = heads.colbert(h[:, 1:]) * mask[:, 1:, None]
            colbert = F.normalize(colbert, dim=-1)
        for b, i in enumerate(idx):
            dense_out[i] = dense[b].numpy()
            if outputs == "all":
                lexical = {}
                for tid, w in zip(ids[i], weights[b, :len(ids[i])].tolist()):
                    if tid in special or w <= 0:
                        continue
                    if w > lexical.get(tid, 0):
                        lexical[tid] = w
                sparse_out[i] = lexical
                colbert_out[i] = colbert[b, :len(ids[i]) - 1].numpy()
    return dense_out, sparse_out, colbert_out


def main():
    job = json.load(sys.stdin)
    torch.set_num_threads(job["threads"])
    torch.set_flush_denormal(True)
    m3_reference_model.Layer.forward = fast_layer_forward
    with open(os.path.join(job["model"], "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    preset = preset_for(config)
    start = time.perf_counter()
    tok = tokenizer_json(build_pieces(PRESETS[preset]["generated_pieces"]))
    _, encoder, heads = build_model(preset, tok)
    init_s = time.perf_counter() - start
    start = time.perf_counter()
    encode(encoder, heads, [[BOS, 10, 11, EOS]], 1, "dense")
    first_s = time.perf_counter() - start
    rows = []
    outputs_recorded = {}
    for w in job["workloads"]:
        ids = w["ids"]
        tokens = sum(len(x) for x in ids)
        for outputs in ("dense", "all"):
            result = encode(encoder, heads, ids, job["batchSize"], outputs)
            if outputs == "all":
                outputs_recorded[w["name"]] = record(*result)
            seconds = []
            for _ in range(job["runs"]):
                t = time.perf_counter()
                encode(encoder, heads, ids, job["batchSize"], outputs)
                seconds.append(time.perf_counter() - t)
            med, best = statistics.median(seconds), min(seconds)
            rows.append({
                "workload": w["name"], "maxLength": w["maxLength"], "texts": len(ids), "tokens": tokens,
                "outputs": outputs, "batchSize": job["batchSize"], "tokensPerSecMedian": tokens / med,
                "tokensPerSecBest": tokens / best, "docsPerSecMedian": len(ids) / med, "secondsMedian": med,
                "secondsBest": best, "runs": job["runs"],
            })
            print(f"torch        t{job['threads']} {w['name']:11s} {outputs:5s} bs {job['batchSize']:3d}  "
                  f"{tokens / med:7.0f} tok/s median  {tokens / best:7.0f} best", file=sys.stderr)
    json.dump({
        "engine": "torch", "engineVersion": torch.__version__, "threads": job["threads"], "preset": preset,
        "implementation": f"hand-written PyTorch model (scripts/m3_reference_model.py), torch {torch.__version__}, "
                          f"attention {'scaled_dot_product_attention' if SDPA else 'baddbmm + softmax'}, denormals flushed",
        "blas": blas(), "outputs": outputs_recorded,
        "loadMs": init_s * 1000, "loadNote": "weights rebuilt from the generator's seed, not read from disk",
        "firstResultMs": first_s * 1000, "peakRssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
    }, sys.stdout)


if __name__ == "__main__":
    main()
