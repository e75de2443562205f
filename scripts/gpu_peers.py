#!/usr/bin/env python3
"""PyTorch reference figures on a CUDA GPU, for the device check (scripts/device-check.sh).

1. MaxSim the way PyTorch ColBERT code computes it: one matrix product of all document rows with
   all query rows (the similarity matrix materialised in bf16), a max over each document's rows
   and a mean over each query's rows. Same shapes as `maxsim_cuda_test --bench`: 8,192 documents
   of 128 rows (1,048,576 rows of 1024-d bf16) against 1, 16 and 64 queries of 32 rows.
2. The attainable encoder rate: an XLM-RoBERTa model of BGE-M3's shape (24 layers, hidden 1024,
   16 heads, FFN 4096, vocabulary 250,002) with random weights, fp16, PyTorch's fused attention,
   batches of full-length texts. This is the encoder the ONNX Runtime CUDA provider would run.

Prints one line per figure, each starting with "peer".
"""
import argparse
import sys
import time

import torch


def cuda_ms(fn, runs):
    """Median and best milliseconds of `fn` over `runs` timed calls after two warm-ups."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(runs):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2], times[0]


def maxsim(runs):
    docs, doc_len, dim = 8192, 128, 1024
    g = torch.Generator(device="cuda").manual_seed(7)
    d = torch.nn.functional.normalize(torch.randn(docs * doc_len, dim, device="cuda", generator=g), dim=-1).to(torch.bfloat16)
    rows = docs * doc_len
    for nq in (1, 16, 64):
        q = torch.nn.functional.normalize(torch.randn(nq * 32, dim, device="cuda", generator=g), dim=-1).to(torch.bfloat16)

        def run():
            sim = d @ q.T  # [rows, nq * 32] bf16, materialised
            return sim.view(docs, doc_len, nq, 32).amax(dim=1).float().mean(dim=-1)  # [docs, nq]

        med, best = cuda_ms(run, runs)
        flops = 2.0 * nq * 32 * rows * dim
        print(f"peer torch maxsim bf16 {nq:2d} queries x 32 rows vs {rows} rows of {dim}: {med:.3f} ms median (best {best:.3f}), "
              f"{flops / med / 1e9:.1f} TFLOP/s, {rows * dim * 2 / med / 1e6:.0f} GB/s of documents", flush=True)
    del d
    torch.cuda.empty_cache()


def encoder(runs, batch, length):
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096, max_position_embeddings=8194, type_vocab_size=1,
                              attn_implementation="sdpa")
    with torch.device("cuda"):
        model = XLMRobertaModel(config, add_pooling_layer=False).half().eval()
    ids = torch.randint(5, 250000, (batch, length), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        med, best = cuda_ms(lambda: model(input_ids=ids, attention_mask=mask).last_hidden_state, runs)
    tokens = batch * length
    # Matrix-product FLOPs per token: 24 layers x (4 d^2 attention projections + 8 d^2 FFN) x 2,
    # plus attention scores and context: 24 x 4 x length x d.
    d = 1024
    flops = tokens * (24 * 2 * 12 * d * d + 24 * 4 * length * d)
    attn = getattr(model.config, "_attn_implementation", "?")
    print(f"peer torch encoder fp16 (XLM-R large shape, {attn} attention) batch {batch} x {length} tokens: {med:.2f} ms median, "
          f"{tokens / med * 1e3:,.0f} tokens/s ({tokens / best * 1e3:,.0f} best), {flops / med / 1e9:.0f} TFLOP/s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--skip-encoder", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("peer: no CUDA device visible to PyTorch")
        return 1
    print(f"peer device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    t0 = time.time()
    maxsim(args.runs)
    if not args.skip_encoder:
        try:
            for batch, length in ((64, 256), (16, 1024)):
                encoder(args.runs, batch, length)
        except ImportError as e:
            print(f"peer encoder skipped: {e}")
    print(f"peer: {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
