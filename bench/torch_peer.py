#!/usr/bin/python3
"""The PyTorch reference peer of the encoder benchmark: FlagEmbedding's computation on CPU.

BGEM3FlagModel.encode sorts texts by length (longest first), pads each batch to its longest
text, runs the XLM-R encoder in eager PyTorch, takes the normalised <s> vector, applies the
sparse head with a ReLU and keeps the max weight per token id in a Python dict (special tokens
dropped), and applies the ColBERT head to the rows after <s>, normalised. This script does the
same with the independent PyTorch model of scripts/m3_reference_model.py.

The weights are rebuilt from the generator's seed (scripts/gen_fixtures.py), so they equal the
ONNX file's without reading it back; the first dense vector is reported so the harness can check
that. Texts arrive tokenized (the npm `tokenizers` on the same tokenizer.json; Debian has no
Python binding), so tokenization time is not counted here.

stdin: {"model": dir, "threads": n, "runs": n, "batchSize": n,
        "workloads": [{"name", "maxLength", "ids": [[...], ...]}]}
stdout: one JSON object (rows like bench/encode_peers.ts).
"""
import json
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
    return dense_out


def main():
    job = json.load(sys.stdin)
    torch.set_num_threads(job["threads"])
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
    for w in job["workloads"]:
        ids = w["ids"]
        tokens = sum(len(x) for x in ids)
        for outputs in ("dense", "all"):
            first = encode(encoder, heads, ids, job["batchSize"], outputs)[0]
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
                "secondsBest": best, "runs": job["runs"], "firstDense": [float(x) for x in first[:8]],
            })
            print(f"torch        t{job['threads']} {w['name']:11s} {outputs:5s} bs {job['batchSize']:3d}  "
                  f"{tokens / med:7.0f} tok/s median  {tokens / best:7.0f} best", file=sys.stderr)
    json.dump({
        "engine": "torch", "engineVersion": torch.__version__, "threads": job["threads"], "preset": preset,
        "loadMs": init_s * 1000, "loadNote": "weights rebuilt from the generator's seed, not read from disk",
        "firstResultMs": first_s * 1000, "peakRssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
    }, sys.stdout)


if __name__ == "__main__":
    main()
