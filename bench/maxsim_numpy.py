"""numpy + OpenBLAS baseline for bench/maxsim.ts: "GEMM then max" on the same shapes.

Reads {"nq", "dim", "rows": [rows per document], "runs"} as JSON on the first line of stdin and
prints {"seconds": [...], "numpy": version, "blas": ...} as JSON. One GEMM of the query against
every document row (the fastest way numpy has), then the max per document segment (reduceat) and
the mean over query rows. With "runs": 0 it stays up instead, for runs interleaved with the
native kernel: each further line "run" times one call and prints its seconds; "exit" ends it.
Run it with OPENBLAS_CORETYPE=SkylakeX and OPENBLAS_NUM_THREADS set.
"""
import json
import sys
import time

import numpy as np


def main():
    spec = json.loads(sys.stdin.readline())
    nq, dim, rows, runs = spec["nq"], spec["dim"], spec["rows"], spec["runs"]
    rng = np.random.default_rng(7)
    q = rng.standard_normal((nq, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d = rng.standard_normal((sum(rows), dim), dtype=np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)

    def once():
        t = time.perf_counter()
        sim = q @ d.T                                    # [nq, total rows]
        best = np.maximum.reduceat(sim, starts, axis=1)  # [nq, docs]
        scores = best.mean(axis=0)
        assert scores.shape == (len(rows),)
        return time.perf_counter() - t

    if runs == 0:
        once()
        print(json.dumps({"ready": True, "numpy": np.__version__, "blas": loaded_blas()}), flush=True)
        for line in sys.stdin:
            if line.strip() != "run":
                break
            print(json.dumps({"seconds": once()}), flush=True)
        return
    seconds = [once() for _ in range(runs + 1)]
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
