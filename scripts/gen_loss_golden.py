#!/usr/bin/python3
"""Golden values of BGE-M3's training objective (docs/semantics.md, "Training") for the tests:
written from the formulas with PyTorch autograd in float64, independently of the C++ code.
Writes test/fixtures/m3-loss-golden.json. Needs Debian's python3-torch."""
import json
import os

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def objective(dense, lex, colbert, target, temperature=0.02, w=(1.0, 0.1, 1.0), t=(1.0, 0.3, 1.0), self_distill=True):
    z = [s / temperature for s in (dense, lex, colbert)]
    ce = [F.cross_entropy(x, target) for x in z]
    inter = t[0] * z[0] + t[1] * z[1] + t[2] * z[2]
    ce_inter = F.cross_entropy(inter, target)
    teacher = torch.softmax(inter, dim=-1).detach()
    kd = [-(teacher * torch.log_softmax(x, dim=-1)).sum(-1).mean() for x in z]
    l = (w[0] * ce[0] + w[1] * ce[1] + w[2] * ce[2] + ce_inter) / 4
    l_distill = (w[0] * kd[0] + w[1] * kd[1] + w[2] * kd[2]) / 3
    loss = (l + l_distill) / 2 if self_distill else l
    return loss, l, l_distill, ce, ce_inter, kd


def main():
    gen = torch.Generator().manual_seed(20240402)
    cases = []
    variants = [
        {}, {"selfDistill": False}, {"temperature": 0.05, "weights": [0.5, 0.2, 2.0]},
        {"teacherWeights": [1.0, 0.5, 0.7], "temperature": 0.01},
    ]
    for i, (queries, passages) in enumerate([(1, 2), (2, 5), (3, 8), (4, 4), (2, 16)]):
        for v in variants:
            # Scores in the ranges the modes produce: cosines for dense / ColBERT, small lexical sums.
            dense = (torch.rand(queries, passages, generator=gen) * 1.2 - 0.2).float()
            lex = (torch.rand(queries, passages, generator=gen) * 0.4).float()
            colbert = (torch.rand(queries, passages, generator=gen) * 1.0).float()
            target = torch.randint(0, passages, (queries,), generator=gen)
            leaves = [x.double().requires_grad_(True) for x in (dense, lex, colbert)]
            loss, l, l_distill, ce, ce_inter, kd = objective(
                *leaves, target, temperature=v.get("temperature", 0.02), w=tuple(v.get("weights", (1.0, 0.1, 1.0))),
                t=tuple(v.get("teacherWeights", (1.0, 0.3, 1.0))), self_distill=v.get("selfDistill", True))
            loss.backward()
            cases.append({
                "queries": queries, "passages": passages, "options": v,
                "dense": dense.flatten().tolist(), "lex": lex.flatten().tolist(), "colbert": colbert.flatten().tolist(),
                "target": target.tolist(),
                "loss": loss.item(), "l": l.item(), "lDistill": l_distill.item(),
                "terms": {"dense": ce[0].item(), "lex": ce[1].item(), "colbert": ce[2].item(), "inter": ce_inter.item()},
                "distill": {"dense": kd[0].item(), "lex": kd[1].item(), "colbert": kd[2].item()},
                "grad": {"dense": leaves[0].grad.flatten().tolist(), "lex": leaves[1].grad.flatten().tolist(),
                         "colbert": leaves[2].grad.flatten().tolist()},
            })
    out = os.path.join(REPO, "test", "fixtures", "m3-loss-golden.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"cases": cases}, f)
    print(f"{len(cases)} cases -> {out}")


if __name__ == "__main__":
    main()
