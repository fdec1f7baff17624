"""This machine's float32 FMA peak in GFLOP/s, the denominator of every "% of peak" in the catalogue.

Two measurements, a few seconds each:

  fma     a tight loop of independent 512-bit or 256-bit fused multiply-adds (C, compiled here with
          `cc -O3 -march=native`, the faster shape counted) on one core, times the number of cores: what the
          cores can issue.
          The same loop on every core at once is reported too; on a machine shared with other
          work it comes out lower, which is why the peak is the one-core rate times the cores;
  matmul  the best float32 2048^3 matmul of numpy and, when installed, PyTorch: what a tuned BLAS reaches.

The peak is the largest of these (the FMA loop, wherever a C compiler is found).

    python3 bench/peak.py
"""
from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np

# (lanes, chains): vectors of 16 float32 lanes (512-bit) or 8 (256-bit) in enough independent accumulators to cover
# FMA latency x FMA units, few enough to stay in registers: 16 zmm of AVX-512's 32, 12 ymm of AVX2's 16 (16 x 512-bit
# accumulators on an AVX2 core are 32 ymm and spill, a tenth of its peak). Each shape is timed; the best counts.
SHAPES = ((16, 16), (8, 12), (8, 8))
FMA_SOURCE = "".join(f"typedef float v{lanes} __attribute__((vector_size({4 * lanes})));\n"
                     for lanes in sorted({lanes for lanes, _ in SHAPES})) + "".join(f"""
float fma_loop_{lanes}_{chains}(long iters) {{
    v{lanes} acc[{chains}], a, b;
    for (int i = 0; i < {lanes}; i++) {{ a[i] = 0.999999f; b[i] = 1e-7f; }}
    for (int c = 0; c < {chains}; c++) acc[c] = a * (float)c;
    for (long n = 0; n < iters; n++)
        for (int c = 0; c < {chains}; c++) acc[c] = acc[c] * a + b;
    float s = 0;
    for (int c = 0; c < {chains}; c++) for (int i = 0; i < {lanes}; i++) s += acc[c][i];
    return s;
}}
""" for lanes, chains in SHAPES)


def _load_fma() -> dict[tuple[int, int], Callable[[int], float]]:
    """Each shape's FMA loop as a ctypes function (which releases the GIL); empty without a C compiler."""
    folder = tempfile.mkdtemp(prefix="gir-peak-")
    src, lib = os.path.join(folder, "fma.c"), os.path.join(folder, "fma.so")
    with open(src, "w") as f:
        f.write(FMA_SOURCE)
    try:
        subprocess.run(["cc", "-O3", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC", src, "-o", lib],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return {}
    loops = {}
    for lanes, chains in SHAPES:
        fn = getattr(ctypes.CDLL(lib), f"fma_loop_{lanes}_{chains}")
        fn.argtypes, fn.restype = [ctypes.c_long], ctypes.c_float
        loops[lanes, chains] = fn
    return loops


def fma_peaks(seconds: float = 0.4, reps: int = 5) -> dict[str, float]:
    """GFLOP/s of the fastest FMA loop shape on one core (times the cores) and on every core at once, each the best
    of `reps` runs of about `seconds`; empty without a C compiler."""
    loops = _load_fma()
    if not loops:
        return {}
    cores = os.cpu_count() or 1

    def rate(fn: Callable[[int], float], flops_per_iter: int, threads: int) -> float:
        iters = 1000
        while _wall(functools.partial(fn, iters)) < seconds / 4:
            iters *= 2
        iters *= 4
        best = min(_wall(functools.partial(_parallel, fn, iters, threads)) for _ in range(reps))
        return threads * iters * flops_per_iter / best / 1e9

    one = {shape: rate(fn, 2 * shape[0] * shape[1], 1) for shape, fn in loops.items()}
    lanes, chains = max(one, key=one.get)
    return {f"fma 1 core x {cores}": cores * one[lanes, chains],
            f"fma {cores} cores at once": rate(loops[lanes, chains], 2 * lanes * chains, cores)}


def _parallel(fn: Callable[[int], float], iters: int, threads: int) -> None:
    pool = [threading.Thread(target=fn, args=(iters,)) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def matmul_peak(n: int = 2048, reps: int = 6) -> dict[str, float]:
    """Best-of-`reps` GFLOP/s of an n x n x n float32 matmul in numpy and (if importable) PyTorch."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    runs: dict[str, Callable] = {"numpy matmul": lambda: a @ b}
    try:
        import torch
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        runs["torch matmul"] = lambda: ta @ tb
    except ImportError:
        pass
    out = {}
    for name, fn in runs.items():
        fn()
        out[name] = 2 * n ** 3 / min(_wall(fn) for _ in range(reps)) / 1e9
    return out


def _wall(fn: Callable) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure_peaks() -> dict[str, float]:
    """Every measurement by name: the FMA loop's (when a C compiler is found) and each library's matmul."""
    return {**fma_peaks(), **matmul_peak()}


def measure_peak() -> float:
    """This machine's float32 peak in GFLOP/s: the best of `measure_peaks`."""
    return max(measure_peaks().values())


if __name__ == "__main__":
    peaks = measure_peaks()
    print(", ".join(f"{k} {v:.1f}" for k, v in peaks.items()) + f" GFLOP/s; peak {max(peaks.values()):.1f} GFLOP/s "
          f"({os.cpu_count()} cores)")
