#!/usr/bin/python3
"""Golden values for fine-tuning the sparse and ColBERT heads (docs/semantics.md): the heads'
forward pass on given hidden states, the M3 objective, the gradients of the loss with respect to
both heads' parameters (PyTorch autograd, float64) and the parameters after Adam steps
(torch.optim.Adam). Independent of the C++ code. Writes test/fixtures/head-grad-golden.json.
Needs Debian's python3-torch."""
import json
import os

import torch
import torch.nn.functional as F

from gen_loss_golden import objective

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIAL = {0, 1, 2, 3}


def lexical(ids, hidden, w, b):
    """Token id -> max ReLU weight over its positions; ids 0..3 and weights <= 0 dropped."""
    weights = torch.relu(hidden @ w + b)
    out = {}
    for t, i in enumerate(ids):
        if i in SPECIAL:
            continue
        out.setdefault(i, []).append(weights[t])
    return {i: torch.stack(v).max() for i, v in out.items() if torch.stack(v).max().item() > 0}


def colbert(hidden, w, b):
    return F.normalize(hidden[1:] @ w.T + b, dim=-1, eps=1e-12)


def scores(texts, queries, passages, params):
    sw, sb, cw, cb = params
    dense, lex, col = {}, {}, {}
    for k in set(queries) | set(passages):
        ids, h = texts[k]
        dense[k] = F.normalize(h[0], dim=-1, eps=1e-12)
        lex[k] = lexical(ids, h, sw, sb)
        col[k] = colbert(h, cw, cb)
    s_dense = torch.stack([torch.stack([dense[q] @ dense[p] for p in passages]) for q in queries])
    s_lex = torch.stack([torch.stack([sum((lex[q][i] * lex[p][i] for i in lex[q] if i in lex[p]), torch.zeros((), dtype=torch.float64))
                                      for p in passages]) for q in queries])
    s_col = torch.stack([torch.stack([(col[q] @ col[p].T).max(dim=1).values.mean() for p in passages]) for q in queries])
    return s_dense, s_lex, s_col


def main():
    gen = torch.Generator().manual_seed(20241127)
    hidden, dim, vocab = 24, 16, 18
    cases = []
    for case, (n_texts, queries, passages, target, options) in enumerate([
        (6, [0, 1], [2, 3, 4, 5], [0, 2], {}),
        (7, [0, 1, 2], [3, 4, 5, 6, 3], [1, 0, 4], {"selfDistill": False}),
        (5, [4], [0, 1, 2, 3], [2], {"temperature": 0.05, "weights": [1.0, 0.5, 1.0]}),
    ]):
        texts = []
        for _ in range(n_texts):
            n = int(torch.randint(4, 12, (1,), generator=gen))
            # Repeated ids (the max-per-token rule), and specials inside the text too.
            ids = [0] + torch.randint(4, vocab, (n - 2,), generator=gen).tolist() + [2]
            if n > 6:
                ids[3] = 3
                ids[4] = ids[2]
            h = torch.randn(n, hidden, generator=gen, dtype=torch.float64)
            h = h.float().double()  # exactly representable in the fp32 cache
            texts.append((ids, h))
        params = [
            (torch.randn(hidden, generator=gen, dtype=torch.float64) * 0.3).float().double(),
            torch.tensor(0.05, dtype=torch.float64),
            (torch.randn(dim, hidden, generator=gen, dtype=torch.float64) * 0.2).float().double(),
            (torch.randn(dim, generator=gen, dtype=torch.float64) * 0.05).float().double(),
        ]
        leaves = [p.clone().requires_grad_(True) for p in params]
        t = torch.tensor(target)
        loss_args = dict(temperature=options.get("temperature", 0.02), w=tuple(options.get("weights", (1.0, 0.1, 1.0))),
                         self_distill=options.get("selfDistill", True))
        loss, l, l_distill, ce, ce_inter, kd = objective(*scores(texts, queries, passages, leaves), t, **loss_args)
        loss.backward()
        grads = [x.grad.clone() if x.grad is not None else torch.zeros_like(x) for x in leaves]
        # Adam: three steps (eps large enough that updates are continuous in the gradient).
        adam_params = [p.clone().requires_grad_(True) for p in params]
        adam = torch.optim.Adam(adam_params, lr=1e-2, betas=(0.9, 0.999), eps=1e-3)
        for _ in range(3):
            adam.zero_grad()
            objective(*scores(texts, queries, passages, adam_params), t, **loss_args)[0].backward()
            adam.step()
        flat = lambda xs: torch.cat([x.detach().reshape(-1) for x in xs]).tolist()
        cases.append({
            "hidden": hidden, "dim": dim, "options": options,
            "ids": [ids for ids, _ in texts], "rows": [h.flatten().tolist() for _, h in texts],
            "queries": queries, "passages": passages, "target": target,
            "params": flat(params),
            "loss": loss.item(), "terms": {"dense": ce[0].item(), "lex": ce[1].item(), "colbert": ce[2].item(), "inter": ce_inter.item()},
            "grad": flat(grads),
            "adam": {"lr": 1e-2, "eps": 1e-3, "steps": 3, "params": flat(adam_params)},
        })
    out = os.path.join(REPO, "test", "fixtures", "head-grad-golden.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"cases": cases}, f)
    print(f"{len(cases)} cases -> {out}")


if __name__ == "__main__":
    main()
