#!/usr/bin/env python3
"""Turns the device check's logs (maxsim_cuda_test --bench, scripts/gpu_peers.py) into one JSON
document for bench/results: every figure with its shape, and the ratios the README reports.

    python3 scripts/device_results.py [--note TEXT] maxsim_cuda_bench.log peers.log > bench/results/cuda-....json
"""
import json
import re
import sys
from datetime import datetime, timezone

# bench bf16 default  16 queries x 32 rows vs 1048576 rows of 1024: kernels 4.234 ms median (best 4.231), 259.7 TFLOP/s,
#   507 GB/s of documents; call 5.705 ms median
OURS = re.compile(r"^bench bf16 (?P<kernel>.+?)\s+(?P<nq>\d+) queries x (?P<qrows>\d+) rows vs (?P<rows>\d+) rows of (?P<dim>\d+): "
                  r"kernels (?P<ms>[\d.]+) ms median \(best (?P<best>[\d.]+)\), (?P<tflops>[\d.]+) TFLOP/s, (?P<gbs>[\d.]+) GB/s "
                  r"of documents; call (?P<call>[\d.]+) ms median")
# peer torch maxsim bf16 16 queries x 32 rows vs 1048576 rows of 1024: 2.082 ms median (best 1.988), 528.2 TFLOP/s, 1032 GB/s ...
PEER_MAXSIM = re.compile(r"^peer torch maxsim bf16\s+(?P<nq>\d+) queries x (?P<qrows>\d+) rows vs (?P<rows>\d+) rows of (?P<dim>\d+): "
                         r"(?P<ms>[\d.]+) ms median \(best (?P<best>[\d.]+)\), (?P<tflops>[\d.]+) TFLOP/s")
# peer torch encoder fp16 (...) batch 64 x 256 tokens: 24.35 ms median, 672,981 tokens/s (694,370 best), 423 TFLOP/s
PEER_ENCODER = re.compile(r"^peer torch encoder (?P<what>.+?) batch (?P<batch>\d+) x (?P<length>\d+) tokens: (?P<ms>[\d.]+) ms median, "
                          r"(?P<tps>[\d,]+) tokens/s \((?P<best>[\d,]+) best\), (?P<tflops>[\d.]+) TFLOP/s")


def num(s):
    return float(s.replace(",", ""))


def main(paths, note=None):
    doc = {"kind": "cuda", "date": datetime.now(timezone.utc).isoformat(), "device": None, "maxsim": [], "peers": {"maxsim": [], "encoder": []}}
    for path in paths:
        for line in open(path, encoding="utf-8"):
            line = line.strip()
            if line.startswith("device: "):
                doc["device"] = line[len("device: "):]
            elif line.startswith("peer device: "):
                doc["peer_device"] = line[len("peer device: "):]
            elif m := OURS.match(line):
                doc["maxsim"].append({"kernel": m["kernel"], "queries": int(m["nq"]), "query_rows": int(m["qrows"]), "doc_rows": int(m["rows"]),
                                      "dim": int(m["dim"]), "kernel_ms_median": num(m["ms"]), "kernel_ms_best": num(m["best"]),
                                      "tflops": num(m["tflops"]), "doc_gb_per_s": num(m["gbs"]), "call_ms_median": num(m["call"])})
            elif m := PEER_MAXSIM.match(line):
                doc["peers"]["maxsim"].append({"peer": "torch (matmul + amax)", "queries": int(m["nq"]), "ms_median": num(m["ms"]),
                                               "ms_best": num(m["best"]), "tflops": num(m["tflops"])})
            elif m := PEER_ENCODER.match(line):
                doc["peers"]["encoder"].append({"peer": "torch " + m["what"], "batch": int(m["batch"]), "length": int(m["length"]),
                                                "ms_median": num(m["ms"]), "tokens_per_s": num(m["tps"]), "tokens_per_s_best": num(m["best"]),
                                                "tflops": num(m["tflops"])})
    # Ours over the peer: the default kernel and the fastest configuration measured.
    ratios = []
    for peer in doc["peers"]["maxsim"]:
        rows = [r for r in doc["maxsim"] if r["queries"] == peer["queries"]]
        if not rows:
            continue
        best = min(rows, key=lambda r: r["kernel_ms_median"])
        entry = {"queries": peer["queries"], "best_kernel": best["kernel"], "best_speedup_vs_torch": round(peer["ms_median"] / best["kernel_ms_median"], 3)}
        default = [r for r in rows if r["kernel"] == "default"]
        if default:
            entry["default_speedup_vs_torch"] = round(peer["ms_median"] / default[0]["kernel_ms_median"], 3)
        ratios.append(entry)
    doc["ratios"] = ratios
    # Per batch size, the fastest configuration against the default: what a new default would gain.
    fastest = []
    for nq in sorted({r["queries"] for r in doc["maxsim"]}):
        rows = [r for r in doc["maxsim"] if r["queries"] == nq]
        best = min(rows, key=lambda r: r["kernel_ms_median"])
        entry = {"queries": nq, "kernel": best["kernel"], "kernel_ms_median": best["kernel_ms_median"], "tflops": best["tflops"]}
        default = [r for r in rows if r["kernel"] == "default"]
        if default:
            entry["default_ms_median"] = default[0]["kernel_ms_median"]
            entry["speedup_over_default"] = round(default[0]["kernel_ms_median"] / best["kernel_ms_median"], 3)
        fastest.append(entry)
    doc["fastest"] = fastest
    if note:
        doc["note"] = note
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    note = None
    if len(args) >= 2 and args[0] == "--note":
        note, args = args[1], args[2:]
    if not args:
        sys.exit(__doc__)
    main(args, note)
