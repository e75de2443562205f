"""The independent PyTorch reference of BGE-M3: an XLM-RoBERTa encoder written from scratch
(position ids from padding id 1, one token-type row, post-LayerNorm layers, exact GELU) and the
dense, sparse and ColBERT heads, with random initialisation."""

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

