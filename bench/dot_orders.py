"""A dense weight gradient, dw[M, N] = sum over K of x[K, M] dy[K, N], alone on IREE's CPU in two forms: as autodiff
writes it (one dot_general contracting the leading dim of both operands) and as `weight_grad_matmul` rewrites it
(both operands transposed to [M, K] and [N, K] behind an optimization barrier, one dot_general contracting their last
dims). Compiled with gir's CPU flags, median of 10 calls after 3; which form wins depends on the operands' size, the
reason for gir.rewrite.dot_forms.LARGE_OPERANDS.

    python3 bench/dot_orders.py [MxNxK ...]      # default: ViT-Tiny's, ConvNeXt-T's and char_gpt's shapes
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.rewrite.dot_forms import LARGE_OPERANDS

SHAPES = ("192x768x12608", "768x192x12608", "192x576x12608", "192x192x12608", "192x768x3152", "768x192x2048",
          "96x384x4096", "384x96x4096", "192x768x1576", "768x192x1576", "192x576x1576", "64x256x2048")
"""ViT-Tiny's blocks at batch 64 and 8 (12,608 and 1,576 tokens) and at 2,048 and 3,152; ConvNeXt-T's first stage at
b64@32 (4,096 positions); char_gpt's MLP (2,048 tokens)."""


def natural(m: int, n: int, k: int) -> str:
    return f"""func.func public @f(%x: tensor<{k}x{m}xf32>, %dy: tensor<{k}x{n}xf32>) -> tensor<{m}x{n}xf32> {{
  %0 = stablehlo.dot_general %x, %dy, contracting_dims = [0] x [0] : (tensor<{k}x{m}xf32>, tensor<{k}x{n}xf32>)
       -> tensor<{m}x{n}xf32>
  return %0 : tensor<{m}x{n}xf32>
}}"""


def transposed(m: int, n: int, k: int) -> str:
    return f"""func.func public @f(%x: tensor<{k}x{m}xf32>, %dy: tensor<{k}x{n}xf32>) -> tensor<{m}x{n}xf32> {{
  %xt = stablehlo.transpose %x, dims = [1, 0] : (tensor<{k}x{m}xf32>) -> tensor<{m}x{k}xf32>
  %dyt = stablehlo.transpose %dy, dims = [1, 0] : (tensor<{k}x{n}xf32>) -> tensor<{n}x{k}xf32>
  %w:2 = stablehlo.optimization_barrier %xt, %dyt : tensor<{m}x{k}xf32>, tensor<{n}x{k}xf32>
  %0 = stablehlo.dot_general %w#0, %w#1, contracting_dims = [1] x [1] : (tensor<{m}x{k}xf32>, tensor<{n}x{k}xf32>)
       -> tensor<{m}x{n}xf32>
  return %0 : tensor<{m}x{n}xf32>
}}"""


def time_ms(text: str, m: int, n: int, k: int) -> float:
    session = IreeSession(compile_text(text, "cpu"))
    rng = np.random.default_rng(0)
    args = [session.to_device(rng.standard_normal(s).astype(np.float32)) for s in ((k, m), (k, n))]
    for _ in range(3):
        session.call("f", *args)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        session.call("f", *args)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shapes", nargs="*", default=SHAPES, help="MxNxK: output rows, output columns, contraction")
    args = ap.parse_args()
    print("| M x N x K | operand elements | rewritten | natural ms | transposed ms | natural / transposed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape in args.shapes:
        m, n, k = (int(d) for d in shape.split("x"))
        a, b = time_ms(natural(m, n, k), m, n, k), time_ms(transposed(m, n, k), m, n, k)
        size = k * (m + n)
        print(f"| {shape} | {size:,} | {'yes' if size >= LARGE_OPERANDS else 'no'} | {a:.2f} | {b:.2f} | "
              f"{a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
