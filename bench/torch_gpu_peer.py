#!/usr/bin/env python3
"""The PyTorch peer of the GPU encoder benchmark (bench/gpu_encode.ts): BGE-M3 the way
FlagEmbedding's BGEM3FlagModel.encode runs it on a GPU (or, with "device": "cpu", on the CPU).

Hugging Face transformers' XLMRobertaModel with SDPA attention in fp16 (fp32 on the CPU), holding the generator's
weights (scripts/gen_fixtures.py rebuilds them from the preset's seed, so they equal the ONNX
file's), and BGE-M3's heads: texts sorted by length (longest first) in batches of 32, each padded
to its longest text; the normalised <s> vector, the sparse head's ReLU weights kept as the max per
token id in a Python dict (special tokens dropped), and the ColBERT head on the rows after <s>,
normalised, copied to the host. Texts arrive as token ids (the same ids the Node side encodes), so
tokenization is not timed on either side.

stdin: {"model": dir, "runs": n, "batchSize": n, "device": "cuda" | "cpu", "threads": n (CPU),
        "workloads": [{"name", "ids": [[...], ...]}]}
stdout: one JSON object: {"peer", "weights", "rows": [{"name", "texts", "tokens", "seconds": [...],
        "peakBytes"}], "firstDense": [...] per workload}
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from m3_fixture_tokenizer import BOS, EOS, PAD, UNK, PRESETS  # noqa: E402


def hf_state_dict(encoder):
    """The reference encoder's parameters under XLMRobertaModel's names."""
    sd = encoder.state_dict()
    out = {
        "embeddings.word_embeddings.weight": sd["word.weight"],
        "embeddings.position_embeddings.weight": sd["position.weight"],
        "embeddings.token_type_embeddings.weight": sd["token_type.weight"],
        "embeddings.LayerNorm.weight": sd["emb_ln.weight"],
        "embeddings.LayerNorm.bias": sd["emb_ln.bias"],
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "o": "attention.output.dense", "attn_ln": "attention.output.LayerNorm",
             "ff_in": "intermediate.dense", "ff_out": "output.dense", "ff_ln": "output.LayerNorm"}
    for key, value in sd.items():
        if key.startswith("layers."):
            _, i, module, param = key.split(".")
            out[f"encoder.layer.{i}.{names[module]}.{param}"] = value
    return out


def load(model_dir, device, dtype):
    from transformers import XLMRobertaConfig, XLMRobertaModel

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    config = XLMRobertaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")})
    config._attn_implementation = "sdpa"
    model = XLMRobertaModel(config, add_pooling_layer=False)
    weights = "random"
    preset = next((n for n, p in PRESETS.items()
                   if p["hidden"] == cfg["hidden_size"] and p["layers"] == cfg["num_hidden_layers"]), None)
    colbert = torch.nn.Linear(cfg["hidden_size"], cfg["hidden_size"])
    sparse = torch.nn.Linear(cfg["hidden_size"], 1)
    if preset is not None:
        from gen_fixtures import build_model
        with open(os.path.join(model_dir, "tokenizer.json")) as f:
            tok = json.load(f)
        _, encoder, heads = build_model(preset, tok)
        missing, unexpected = model.load_state_dict(hf_state_dict(encoder), strict=False)
        if not unexpected and all("pooler" in m for m in missing):
            weights = f"the generator's ({preset} preset)"
        colbert.load_state_dict(heads.colbert.state_dict())
        sparse.load_state_dict(heads.sparse.state_dict())
        del encoder, heads
    model = model.to(device=device, dtype=dtype).eval()
    return model, colbert.to(device, dtype).eval(), sparse.to(device, dtype).eval(), weights


@torch.inference_mode()
def encode(model, colbert, sparse, ids, batch_size, device):
    """BGEM3FlagModel.encode's loop: dense, lexical weights and ColBERT vectors on the host."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    dense_out, lexical_out, colbert_out = [None] * len(ids), [None] * len(ids), [None] * len(ids)
    special = {BOS, EOS, PAD, UNK}
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        length = max(len(ids[i]) for i in idx)
        batch = torch.full((len(idx), length), PAD, dtype=torch.long)
        for b, i in enumerate(idx):
            batch[b, :len(ids[i])] = torch.tensor(ids[i])
        batch = batch.to(device, non_blocking=True)
        mask = batch.ne(PAD).long()
        h = model(input_ids=batch, attention_mask=mask).last_hidden_state
        dense = F.normalize(h[:, 0].float(), dim=-1)
        weights = torch.relu(sparse(h)).squeeze(-1).float()
        vecs = colbert(h[:, 1:]) * mask[:, 1:, None]
        vecs = F.normalize(vecs.float(), dim=-1)
        dense, weights, vecs, lengths = dense.cpu().numpy(), weights.cpu().numpy(), vecs.cpu().numpy(), mask.sum(1).tolist()
        for b, i in enumerate(idx):
            dense_out[i] = dense[b]
            lexical = {}
            for t, w in zip(ids[i], weights[b][:len(ids[i])]):
                if t not in special and w > 0 and w > lexical.get(t, 0):
                    lexical[t] = float(w)
            lexical_out[i] = lexical
            colbert_out[i] = vecs[b][:lengths[b] - 1]
    return dense_out, lexical_out, colbert_out


def main():
    request = json.load(sys.stdin)
    device = request.get("device", "cuda")
    gpu = device == "cuda"
    dtype = torch.float16 if gpu else torch.float32
    if not gpu:
        torch.set_num_threads(request.get("threads") or os.cpu_count())
        torch.set_flush_denormal(True)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    model, colbert, sparse, weights = load(request["model"], device, dtype)
    batch_size = request.get("batchSize", 32)
    rows = []
    for w in request["workloads"]:
        ids = w["ids"]
        encode(model, colbert, sparse, ids[:batch_size], batch_size, device)  # warm-up
        sync()
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        seconds, first = [], None
        for _ in range(request["runs"]):
            start = time.perf_counter()
            dense, _, _ = encode(model, colbert, sparse, ids, batch_size, device)
            sync()
            seconds.append(time.perf_counter() - start)
            first = dense[0]
        rows.append({"name": w["name"], "texts": len(ids), "tokens": sum(len(t) for t in ids), "seconds": seconds,
                     "peakBytes": torch.cuda.max_memory_allocated() if gpu else None, "firstDense": [float(x) for x in first]})
    import transformers
    print(json.dumps({"peer": f"transformers {transformers.__version__} XLMRobertaModel (SDPA, {'fp16' if gpu else 'fp32'}), torch {torch.__version__}",
                      "device": torch.cuda.get_device_name(0) if gpu else f"CPU, {torch.get_num_threads()} threads",
                      "weights": weights, "batchSize": batch_size, "rows": rows}))


if __name__ == "__main__":
    main()
