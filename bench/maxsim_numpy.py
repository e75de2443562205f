"""numpy + OpenBLAS baseline for bench/maxsim.ts: "GEMM then max" on the same shapes.

Reads {"nq", "dim", "rows": [rows per document], "runs"} as JSON on stdin and prints
{"seconds": [...], "numpy": version, "blas": ...} as JSON. One GEMM of the query against every
document row (the fastest way numpy has), then the max per document segment (reduceat) and the
mean over query rows. Run it with OPENBLAS_CORETYPE=SkylakeX and OPENBLAS_NUM_THREADS set.
"""
import json
import sys
import time

import numpy as np


def main():
    spec = json.load(sys.stdin)
    nq, dim, rows, runs = spec["nq"], spec["dim"], spec["rows"], spec["runs"]
    rng = np.random.default_rng(7)
    q = rng.standard_normal((nq, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d = rng.standard_normal((sum(rows), dim), dtype=np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    seconds = []
    for _ in range(runs + 1):
        t = time.perf_counter()
        sim = q @ d.T                                    # [nq, total rows]
        best = np.maximum.reduceat(sim, starts, axis=1)  # [nq, docs]
        scores = best.mean(axis=0)
        seconds.append(time.perf_counter() - t)
    assert scores.shape == (len(rows),)
    print(json.dumps({"seconds": seconds[1:], "numpy": np.__version__, "blas": loaded_blas()}))


def loaded_blas():
    """The BLAS library numpy actually loaded (Debian's reference BLAS is 25x slower than
    OpenBLAS: apt-get install libopenblas0-pthread)."""
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line}
        return sorted(libs)
    except OSError:
        return []


if __name__ == "__main__":
    main()
