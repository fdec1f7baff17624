"""Numerical checks of one adjoint, in float64: against `jax.vjp` of the op's JAX rule, against a
central finite difference along a random direction, and (for ops linear in some inputs) the
dot-product test <J v, w> = <v, J^T w>."""
from __future__ import annotations

from typing import Any, Sequence

import attrs
import jax
import jax.numpy as jnp
import numpy as np

from gir.autodiff.reverse import backprop
from gir.ir.dtypes import DType
from gir.ir.graph import Graph, Loc
from gir.ir.types import TensorType
from gir.shapes.emit import Emitter
from gir.lower.jax_backend import JAX_RULES, as_jax_function, np_dtype

POSITIVE_INPUTS: dict[str, tuple[int, ...]] = {
    "log": (0,), "sqrt": (0,), "rsqrt": (0,), "divide": (1,), "batch_norm": (4,), "clamp": (2,)}
NEGATIVE_INPUTS: dict[str, tuple[int, ...]] = {"clamp": (0,)}
"""Inputs drawn away from zero with one sign: where the op is smooth (log, sqrt) or sensible (clamp's
lower bound below its upper bound)."""
KINKS: dict[str, tuple[float, ...]] = {"relu": (0.0,), "relu6": (0.0, 6.0), "abs": (0.0,), "hard_swish": (-3.0, 3.0),
                                     "hard_sigmoid": (-3.0, 3.0)}
"""Points where an op's first input is not differentiable: random inputs are kept 1e-3 away from them,
so a central difference never straddles one (the conventions there are tested separately)."""

_LINEAR: dict[str, tuple[tuple[int, ...], ...]] = {
    **{op: ((0,),) for op in ("negate", "broadcast_in_dim", "reshape", "transpose", "reverse", "slice",
                              "global_avg_pool", "avg_pool", "divide")},
    **{op: ((0, 1),) for op in ("add", "subtract", "pad", "bias_add")},
    **{op: ((0,), (1,)) for op in ("multiply", "dot_general", "convolution", "conv2d", "depthwise_conv2d",
                                   "dense")},
    "select": ((1, 2),),
    "take": ((0,),),
    "scatter_add": ((0, 2),),
}


def linear_groups(op: str, attrs_: Any, n_inputs: int) -> tuple[tuple[int, ...], ...]:
    """Groups of inputs in which the op is (jointly) linear while the other inputs stay fixed."""
    if op == "concatenate":
        return (tuple(range(n_inputs)),)
    if op in ("reduce", "reduce_window"):
        return ((0,),) if attrs_.kind == "sum" else ()
    if op == "convert":
        return ((0,),) if attrs_.dtype.is_float else ()
    return _LINEAR.get(op, ())


@attrs.frozen
class AdjointCheck:
    """Relative errors of one op's adjoint at one random point (None where a check does not apply)."""

    op: str
    loc: Loc
    vs_jax: float | None
    vs_fd: float | None
    linearity: float | None

    def failures(self, tol: float = 1e-4) -> list[str]:
        out = []
        for name, err in (("jax.vjp", self.vs_jax), ("finite differences", self.vs_fd),
                          ("dot-product test", self.linearity)):
            if err is not None and not err <= tol:
                out.append(f"adjoint of {self.op} at {self.loc}: {name} relative error {err:.2e} > {tol:g}")
        return out


def _f64(t: TensorType) -> TensorType:
    return t.with_dtype(DType.f64) if t.dtype.is_float else t


def _random(t: TensorType, rng: np.random.Generator, sign: int) -> np.ndarray:
    shape = tuple(t.shape)
    if t.dtype == DType.i1:
        return rng.random(shape) < 0.5
    if not t.dtype.is_float:
        return rng.integers(0, 2, shape).astype(np_dtype(t.dtype))
    x = rng.standard_normal(shape)
    return sign * (np.abs(x) + 0.5) if sign else x


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-12)
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0)) / scale


def _dot(xs: Sequence[Any], ys: Sequence[Any]) -> float:
    return float(sum(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in zip(xs, ys)))


def check_adjoint(op: str, attrs_: Any, in_types: Sequence[TensorType], loc: Loc = Loc(),
                  rng: np.random.Generator | None = None, eps: float = 1e-5,
                  values: Sequence[np.ndarray] | None = None) -> AdjointCheck:
    """Differentiates one static node at a random point (or at `values`) and compares, in float64."""
    rng = rng or np.random.default_rng(0)
    types = [_f64(t) for t in in_types]
    g = Graph(f"check_{op}")
    ins = [g.add_input(f"x{i}", t, "data") for i, t in enumerate(types)]
    node = Emitter(g, loc).node(op, ins, attrs_)
    floats_in = [i for i, t in enumerate(types) if t.dtype.is_float]
    floats_out = [j for j, o in enumerate(node.outputs) if o.type.dtype.is_float]
    cts = {j: g.add_input(f"ct{j}", node.outputs[j].type, "data") for j in floats_out}
    back = backprop(g, [node], {node.outputs[j]: cts[j] for j in floats_out}, [ins[i] for i in floats_in])
    for i in floats_in:
        grad = back.grads[ins[i]]
        g.set_output(f"g{i}", grad if grad is not None else Emitter(g).zeros(ins[i]))
    for j, o in enumerate(node.outputs):
        g.set_output(f"y{j}", o)

    sign = {i: 1 for i in POSITIVE_INPUTS.get(op, ())} | {i: -1 for i in NEGATIVE_INPUTS.get(op, ())}
    xs = list(values) if values is not None else [_random(t, rng, sign.get(i, 0)) for i, t in enumerate(types)]
    if values is None:
        for k in KINKS.get(op, ()):
            near = np.abs(xs[0] - k) < 1e-3
            xs[0] = np.where(near, xs[0] + 2e-3, xs[0])
    ws = {j: rng.standard_normal(tuple(node.outputs[j].type.shape)).astype(np_dtype(node.outputs[j].type.dtype))
          for j in floats_out}
    with jax.enable_x64(True):
        feed = {f"x{i}": x for i, x in enumerate(xs)} | {f"ct{j}": w for j, w in ws.items()}
        got = {k: np.asarray(v) for k, v in as_jax_function(g)(feed).items()}
        rule = JAX_RULES[op]

        def f(*fl):
            full = list(xs)
            for i, x in zip(floats_in, fl):
                full[i] = x
            out = rule(attrs_, *[jnp.asarray(x) for x in full])
            outs = out if isinstance(out, tuple) else (out,)
            return tuple(outs[j] for j in floats_out)

        primals = [jnp.asarray(xs[i]) for i in floats_in]
        _, pullback = jax.vjp(f, *primals)
        ref = pullback(tuple(jnp.asarray(ws[j]) for j in floats_out))
        vs_jax = max((_rel(got[f"g{i}"], r) for i, r in zip(floats_in, ref)), default=None)

        us = [rng.standard_normal(np.shape(xs[i])) for i in floats_in]

        def along(t: float) -> float:
            return _dot(f(*[p + t * u for p, u in zip(primals, us)]), [ws[j] for j in floats_out])

        fd = (along(eps) - along(-eps)) / (2 * eps)
        ad = _dot([got[f"g{i}"] for i in floats_in], us)
        vs_fd = abs(fd - ad) / max(abs(ad), abs(fd), 1e-8) if floats_in else None

    lin = []
    for group in linear_groups(op, attrs_, len(types)):
        lhs = _dot([got[f"y{j}"] for j in floats_out], [ws[j] for j in floats_out])  # <J v, w>, v = the group
        rhs = _dot([xs[i] for i in group], [got[f"g{i}"] for i in group])           # <v, J^T w>
        lin.append(abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-8))
    return AdjointCheck(op, loc, vs_jax, vs_fd, max(lin) if lin else None)
