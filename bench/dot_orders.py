"""A dense weight gradient, dw[M, N] = sum over K of x[K, M] dy[K, N], alone on IREE's CPU in two forms: as autodiff
writes it (one dot_general contracting the leading dim of both operands) and as `weight_grad_matmul` rewrites it
(both operands transposed to [M, K] and [N, K] behind a barrier, one dot_general contracting their last
dims). With --forward, a dense forward y[M, N] = x[M, K] @ w[K, N] as written and as `large_rhs_matmul` rewrites it
(w copied to [N, K] behind a barrier, the copy timed too). Compiled with gir's CPU flags, median of 10 calls after 3;
which form wins depends on the operands' size, the reason for gir.rewrite.dot_forms.LARGE_OPERANDS. The modules are
printed by gir (gir.lower.stablehlo), so their barriers are the ones gir emits.

    python3 bench/dot_orders.py [MxNxK ...]            # default: ViT-Tiny's, ConvNeXt-T's and char_gpt's shapes
    python3 bench/dot_orders.py --forward [MxNxK ...]  # default: weights of 0.15 to 2.4 million elements
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from gir.ir import DType, Graph, TensorType, Value
from gir.ir import opdefs as od
from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.lower.stablehlo import print_module
from gir.rewrite.dot_forms import LARGE_OPERANDS
from gir.shapes.emit import Emitter

SHAPES = ("192x768x12608", "768x192x12608", "192x576x12608", "192x192x12608", "192x768x3152", "768x192x2048",
          "96x384x4096", "384x96x4096", "192x768x1576", "768x192x1576", "192x576x1576", "64x256x2048")
"""ViT-Tiny's blocks at batch 64 and 8 (12,608 and 1,576 tokens) and at 2,048 and 3,152; ConvNeXt-T's first stage at
b64@32 (4,096 positions); char_gpt's MLP (2,048 tokens)."""
FORWARD_SHAPES = ("64x768x3072", "64x3072x768", "256x768x3072", "1024x3072x768", "64x1536x1536", "256x768x1536",
                  "256x1536x768", "256x384x1536", "256x1536x384", "256x768x768", "4096x384x96", "64x768x192")
"""ConvNeXt-T's last stage (2.4 million weight elements) at 64 to 1,024 rows, weights of 1.2 and 0.6 million,
ConvNeXt-T's first stage and ViT-Tiny's MLP."""


def _dot(e: Emitter, a: Value, b: Value, a_dim: int, b_dim: int) -> Value:
    return e.op("dot_general", a, b, attrs=od.DotGeneralAttrs((), (), (a_dim,), (b_dim,)))


def _walled_transpose(e: Emitter, v: Value) -> Value:
    return e.op("optimization_barrier", e.transpose(v, (1, 0)))


FORMS: dict[str, tuple[Callable[[Emitter, Value, Value], Value], Callable[[Emitter, Value, Value], Value]]] = {
    "weight_grad": (lambda e, x, dy: _dot(e, x, dy, 0, 0),
                    lambda e, x, dy: _dot(e, _walled_transpose(e, x), _walled_transpose(e, dy), 1, 1)),
    "forward": (lambda e, x, w: _dot(e, x, w, 1, 0),
                lambda e, x, w: _dot(e, x, _walled_transpose(e, w), 1, 1)),
}
"""Per case, the form as autodiff writes it and as the pass rewrites it: (natural, transposed)."""


def module(form: Callable[[Emitter, Value, Value], Value], shapes: tuple[tuple[int, int], ...]) -> str:
    """`form` of two f32 inputs of `shapes` as gir prints it (its barriers as IREE's compute barriers)."""
    g = Graph("f")
    ins = [g.add_input(f"a{i}", TensorType(s, DType.f32), "data") for i, s in enumerate(shapes)]
    g.set_output("y", form(Emitter(g), *ins))
    return print_module({"f": g})


def time_ms(text: str, shapes: tuple[tuple[int, int], ...]) -> float:
    session = IreeSession(compile_text(text, "cpu"))
    rng = np.random.default_rng(0)
    args = [session.to_device(rng.standard_normal(s).astype(np.float32)) for s in shapes]
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
    ap.add_argument("shapes", nargs="*", help="MxNxK: output rows, output columns, contraction")
    ap.add_argument("--forward", action="store_true", help="a dense forward x[M, K] @ w[K, N], not a weight gradient")
    args = ap.parse_args()
    forms = FORMS["forward" if args.forward else "weight_grad"]
    print(f"| M x N x K | {'weight' if args.forward else 'operand'} elements | rewritten | natural ms | transposed ms "
          f"| natural / transposed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape in args.shapes or (FORWARD_SHAPES if args.forward else SHAPES):
        m, n, k = (int(d) for d in shape.split("x"))
        shapes = ((m, k), (k, n)) if args.forward else ((k, m), (k, n))
        a, b = (time_ms(module(form, shapes), shapes) for form in forms)
        size = k * n if args.forward else k * (m + n)
        print(f"| {shape} | {size:,} | {'yes' if size >= LARGE_OPERANDS else 'no'} | {a:.2f} | {b:.2f} | "
              f"{a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
