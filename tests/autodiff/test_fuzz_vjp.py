"""Fuzzing reverse mode (issue 7, item 2): gir's backward pass of random small graphs agrees with
`jax.vjp` of the same graphs run by the JAX backend.

The graphs (float64, static shapes; inputs a [2,3], c [2,3,4], img [2,3,5,4], tok [2,4,6], plus weights,
scales, scalars and labels made as steps need them) are 2-8 random steps, each adding values to a pool
that later steps read: elementwise unary ops (negate, exp(tanh x), log/sqrt/rsqrt of x*x + 0.5, tanh,
logistic, abs) and activations (relu, relu6, swish, hard_swish, hard_sigmoid, gelu); binary ops (add, subtract,
multiply, divide by x*x + 0.5, maximum, minimum), with pool values, splat constants or broadcasts;
select of compare; clamp with scalar bounds; convert through f32; broadcast_in_dim, reshape, transpose,
reverse, strided slice, pad (edge and interior, the padding value an input), concatenate; reduce sum,
max, min; reduce_window sum and max; dot_general (random batch and contracting dims) and dense,
bias_add; conv2d and depthwise_conv2d (random kernel, stride, 'same'/'valid'/explicit padding,
dilation), the primitive convolution (strides, padding, rhs dilation, feature groups); max_pool,
avg_pool, global_avg_pool; batch_norm in train mode (its mean and var outputs are values too) and in
eval mode; layer_norm, softmax, attention (causal or not), softmax_cross_entropy with i32 labels.

Two ways to differentiate, both through `gir.autodiff`:
  * `vjp(graph, {output: cotangent input}, wrt)` for 1-3 outputs, with random cotangents;
  * `grad(graph, "loss", wrt)` of loss = sum_i sum(out_i * m_i), a scalar made by reducing the outputs
    against random weights m_i (data inputs, not differentiated).
`wrt` is every float input but the cotangents and weights (some are not reached: gir gives None or zeros,
jax zeros). The reference is `jax.vjp` of `as_jax_function` of an untouched copy of the forward graph;
both run in float64 (`jax.enable_x64`) inside one `jax.jit`.

Tolerance: |gir - jax| <= 1e-11 * max(1, max|jax|) + 1e-9 * |jax| per gradient: the two sides compose
different but exact formulas (gir's adjoints vs JAX's transposition rules) in float64 on O(1) values
(divisors and square roots see x*x + 0.5, exp sees tanh(x)), so they differ by rounding only; measured
over 800 graphs, the largest difference was 2.2e-14 of the gradient's scale. (A convert through f32 rounds
both sides' cotangents to f32 alike; only a cotangent within 1e-16 of an f32 rounding boundary could
round differently, too rare to matter.)

Kinks: the graphs keep the ops at points where both sides agree. Values are random normals, so an
activation meets its kink only where the graph makes an exact value: relu/relu6/clamp outputs in their
flat parts (0, 6, a bound), where every derivative upstream is zero anyway, or x - x. Ties (the max or
min of equal values) are made by broadcast_in_dim, pad and concatenating a value with itself: both sides
split a tie evenly for maximum, minimum and reduce max/min (gir's documented convention is also JAX's),
but for max_pool and reduce_window max JAX gives a window's whole cotangent to one of its maxima while gir
splits it, so those (and batch/layer norm, whose variance such a value can make 0) only take values with
no broadcast, pad or concatenate upstream.

Bugs this test found, since fixed (the strategy keeps making both constructs):
  * `vjp` keyed its seeds by value, so of two output names bound to one value only the last name's
    cotangent counted (y1 = y2 = -x gave -c2, not -(c1 + c2)); now they are summed.
  * the layer ops differentiated through their decomposition (attention, layer_norm, ...) gave a value
    passed in k positions k times its gradient (attention(x, x, x): 3x); now the total is given once.
The primitive convolution's adjoint supports only the forms conv2d and depthwise_conv2d produce (no lhs
dilation, padding at most the dilated kernel extent - 1) and raises AdjointError saying so otherwise:
the strategy keeps to those forms.

CI runs 50 examples (about 10 s: one jit per example); `--slow` runs 500.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import jax
import numpy as np
from fuzz_helpers import embeddings, static_shape
from hypothesis import given, note
from hypothesis import strategies as st

from gir.autodiff import grad, vjp
from gir.ir import opdefs as od
from gir.ir.dtypes import DType
from gir.ir.graph import Graph, Value
from gir.ir.printer import print_graph
from gir.lower.jax_backend import as_jax_function, np_dtype
from gir.nn.builder import Builder
from gir.shapes.specialize import specialize

F64 = DType.f64
INPUTS = {"a": (2, 3), "c": (2, 3, 4), "img": (2, 3, 5, 4), "tok": (2, 4, 6)}
UNARY = ("negate", "exp", "log", "tanh", "logistic", "sqrt", "rsqrt", "abs")
ACTIVATIONS = od.ACTIVATIONS
BINARY = ("add", "subtract", "multiply", "divide", "maximum", "minimum")
SPLATS = (0.5, -1.5, 2.0, 0.25)
DIRECTIONS = ("EQ", "NE", "LT", "LE", "GT", "GE")
MAX_NODES = 40
RTOL, ATOL = 1e-9, 1e-11


def _fits(size: int, k: int, dilation: int, lo: int, hi: int) -> bool:
    """Whether a k-wide window with this dilation fits into size + lo + hi."""
    return (k - 1) * dilation + 1 <= size + lo + hi


class _Gen:
    """Draws one graph: a pool of f64 values that every step reads operands from and adds results to."""

    def __init__(self, draw):
        self.draw = draw
        self.b = Builder("fuzz_vjp", mode="train")
        self.kinds: dict[str, str] = {}          # input name -> "normal" | "positive" | "negative" | "labels:K"
        self.pool: list[Value] = [self.input(n, s) for n, s in INPUTS.items()]
        self.ties: set[int] = set()              # ids of values that may hold equal entries (see the docstring)
        self.count = 0

    # helpers -----------------------------------------------------------------------------------------
    def choice(self, xs):
        return self.draw(st.sampled_from(list(xs)))

    def flip(self) -> bool:
        return self.draw(st.booleans())

    def one_in(self, k: int) -> bool:
        return self.draw(st.integers(0, k - 1)) == 1

    def input(self, stem: str, shape, kind: str = "normal", dtype: DType = F64) -> Value:
        name = stem if stem not in self.kinds else f"{stem}{len(self.kinds)}"
        self.kinds[name] = kind
        return self.b.input(name, shape, dtype)

    def pick(self, rank=None, shape=None, no_ties: bool = False) -> Value | None:
        cands = [v for v in self.pool if (rank is None or v.type.rank in ((rank,) if isinstance(rank, int) else rank))
                 and (shape is None or static_shape(v) == tuple(shape)) and not (no_ties and v.id in self.ties)]
        return self.choice(cands) if cands else None

    def push(self, v: Value, *sources: Value, ties: bool = False) -> Value:
        if ties or any(s.id in self.ties for s in sources):
            self.ties.add(v.id)
        self.pool.append(v)
        return v

    def op(self, op: str, *xs: Value, attrs=None) -> Value:
        return self.b.emit(op, xs, attrs).out

    def splat(self, shape) -> Value:
        return self.b.constant(self.choice(SPLATS), tuple(shape), F64)

    def positive(self, x: Value) -> Value:
        """x * x + 0.5: a smooth, positive argument for log, sqrt, rsqrt and divisors."""
        return self.b.add(self.b.multiply(x, x), self.b.constant(0.5, static_shape(x), F64))

    def partner(self, x: Value) -> tuple[Value, bool]:
        """A value of x's shape: from the pool (maybe x itself), a splat, or a broadcast (which makes ties)."""
        shape = static_shape(x)
        kind = self.choice(("pool", "pool", "splat", "bcast"))
        if kind == "splat":
            return self.splat(shape), False
        if kind == "bcast" and shape:
            opts = [(v, d) for v in self.pool if v.type.rank < len(shape) for d in embeddings(static_shape(v), shape)]
            if opts:
                v, dims = self.choice(opts)
                return self.b.broadcast_in_dim(v, shape, dims), True
        return self.pick(shape=shape), False

    # steps ---------------------------------------------------------------------------------------------
    def unary(self):
        x = self.pick()
        op = self.choice(UNARY + ACTIVATIONS)
        if op in ("log", "sqrt", "rsqrt"):
            y = self.b.unary(op, self.positive(x))
        elif op == "exp":
            y = self.b.unary("exp", self.b.unary("tanh", x))
        else:
            y = self.b.unary(op, x)
        self.push(y, x)

    def binary(self):
        x = self.pick()
        y, tie = self.partner(x)
        op = self.choice(BINARY)
        if op == "divide":
            self.push(self.b.divide(x, self.positive(y)), x, y, ties=tie)
            return
        if self.flip():
            x, y = y, x
        self.push(self.op(op, x, y), x, y, ties=tie)

    def select(self):
        x = self.pick()
        y, tie = self.partner(x)
        p = self.op("compare", x, y, attrs=od.CompareAttrs(self.choice(DIRECTIONS)))
        t, tie2 = self.partner(x)
        self.push(self.op("select", p, t, self.pick(shape=static_shape(x))), t, ties=tie or tie2)

    def clamp(self):
        x = self.pick()
        lo = self.input("lo", (), "negative") if self.flip() else self.b.constant(-0.5, (), F64)
        hi = self.input("hi", (), "positive") if self.flip() else self.b.constant(0.7, (), F64)
        self.push(self.op("clamp", lo, x, hi), x)

    def convert(self):
        x = self.pick()
        self.push(self.b.convert(self.b.convert(x, DType.f32), F64), x)

    def broadcast(self):
        x = self.pick(rank=(0, 1, 2, 3))
        src = static_shape(x)
        targets = sorted({static_shape(v) for v in self.pool} | {(2, 3, 4), (2, 3, 5, 4), (3, 2)})
        opts = [(t, d) for t in targets if len(t) > len(src) for d in embeddings(src, t)]
        if opts:
            t, dims = self.choice(opts)
            self.push(self.b.broadcast_in_dim(x, t, dims), x, ties=True)

    def reshape(self):
        x = self.pick(rank=(1, 2, 3, 4))
        shape = static_shape(x)
        n = math.prod(shape)
        opts = sorted({(n,), (1, n), tuple(reversed(shape))} | {(d, n // d) for d in range(2, n) if n % d == 0})
        self.push(self.b.reshape(x, self.choice(opts)), x)

    def transpose(self):
        x = self.pick(rank=(2, 3, 4))
        self.push(self.b.transpose(x, tuple(self.draw(st.permutations(range(x.type.rank))))), x)

    def reverse(self):
        x = self.pick(rank=(1, 2, 3, 4))
        r = x.type.rank
        dims = tuple(self.draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r, unique=True)))
        self.push(self.op("reverse", x, attrs=od.ReverseAttrs(dims)), x)

    def slice(self):
        x = self.pick(rank=(1, 2, 3, 4))
        start, limit, strides = [], [], []
        for d in static_shape(x):
            lo = self.draw(st.integers(0, d - 1))
            start.append(lo)
            limit.append(self.draw(st.integers(lo + 1, d)))
            strides.append(self.draw(st.integers(1, 2)))
        self.push(self.b.slice(x, start, limit, strides), x)

    def pad(self):
        x = self.pick(rank=(1, 2, 3))
        r = x.type.rank

        def ints(hi):
            return tuple(self.draw(st.integers(0, hi)) for _ in range(r))

        value = self.input("padval", ()) if self.flip() else self.splat(())
        self.push(self.op("pad", x, value, attrs=od.PadAttrs(ints(2), ints(2), ints(1))), x, ties=True)

    def concatenate(self):
        x = self.pick(rank=(1, 2, 3, 4))
        dim = self.draw(st.integers(0, x.type.rank - 1))
        same = [v for v in self.pool if v.type.rank == x.type.rank
                and all(a == b for i, (a, b) in enumerate(zip(static_shape(v), static_shape(x))) if i != dim)]
        ys = [self.choice(same) for _ in range(self.draw(st.integers(1, 2)))]
        self.push(self.b.concatenate([x, *ys], dim), x, *ys, ties=any(y is x for y in ys))

    def reduce(self):
        x = self.pick(rank=(1, 2, 3, 4))
        r = x.type.rank
        dims = tuple(sorted(self.draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r, unique=True))))
        self.push(self.b.reduce(x, self.choice(("sum", "max", "min")), dims), x)

    def reduce_window(self):
        kind = self.choice(("sum", "max"))
        x = self.pick(rank=(2, 3), no_ties=kind == "max")
        if x is None:
            return
        shape = static_shape(x)
        window = tuple(self.draw(st.integers(1, min(d, 3))) for d in shape)
        strides = tuple(self.draw(st.integers(1, 2)) for _ in shape)
        # padding at most window - 1 per side: a window entirely in the padding would be -inf for max
        pads = tuple((self.draw(st.integers(0, min(1, k - 1))), self.draw(st.integers(0, min(1, k - 1))))
                     for k in window)
        self.push(self.op("reduce_window", x, attrs=od.ReduceWindowAttrs(kind, window, strides, pads)), x)

    def dot(self):
        x = self.pick(rank=(1, 2, 3))
        y = self.pick(rank=(1, 2, 3))
        xs, ys = static_shape(x), static_shape(y)
        pairs = [(i, j) for i in range(len(xs)) for j in range(len(ys)) if xs[i] == ys[j]]
        if not pairs:
            w = self.input("w", (xs[-1], self.draw(st.integers(1, 4))))
            self.push(self.b.dot_general(x, w, lhs_contract=(len(xs) - 1,), rhs_contract=(0,)), x)
            return
        chosen = self.draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=3,
                                    unique_by=(lambda p: p[0], lambda p: p[1])))
        nb = self.draw(st.integers(0, len(chosen) - 1))
        batch, contract = chosen[:nb], chosen[nb:]
        self.push(self.b.dot_general(x, y, [i for i, _ in batch], [j for _, j in batch],
                                     [i for i, _ in contract], [j for _, j in contract]), x, y)

    def dense(self):
        x = self.pick(rank=(2, 3))
        k = static_shape(x)[-1]
        y = self.b.dense(x, self.input("dense_w", (k, self.draw(st.integers(1, 5)))))
        if self.flip():
            y = self.b.bias_add(y, self.input("bias", (static_shape(y)[-1],)), axis=-1)
        self.push(y, x)

    def bias_add(self):
        x = self.pick(rank=(2, 3, 4))
        axis = self.draw(st.integers(0, x.type.rank - 1))
        self.push(self.b.bias_add(x, self.input("bias", (static_shape(x)[axis],)), axis), x)

    def conv(self):
        x = self.pick(rank=4)
        _, c, h, w = static_shape(x)
        kind = self.choice(("conv2d", "depthwise", "convolution"))
        if kind in ("conv2d", "depthwise"):
            k, dil = self.draw(st.integers(1, 3)), self.choice((1, 1, 2))
            padding = self.choice(("same", "valid", ((1, 0), (0, 2))))
            pads = ((0, 0), (0, 0)) if padding == "valid" else padding
            if padding != "same" and not all(_fits(d, k, dil, lo, hi) for d, (lo, hi) in zip((h, w), pads)):
                padding = "same"
            stride = self.choice((1, 2, (1, 2)))
            if kind == "conv2d":
                wt = self.input("conv_w", (self.draw(st.integers(1, 4)), c, k, k))
                y = self.b.conv2d(x, wt, stride, padding, dil)
            else:
                y = self.b.depthwise_conv2d(x, self.input("dw_w", (c, 1, k, k)), stride, padding, dil)
        else:
            # the primitive in the forms its adjoint supports (it raises AdjointError on others): no lhs
            # dilation, padding at most the dilated kernel extent - 1 per side
            groups = self.choice([g for g in (1, 2, 3) if c % g == 0])
            kh, kw = self.draw(st.integers(1, min(h, 3))), self.draw(st.integers(1, min(w, 3)))
            rhs_dil = (1, self.choice((1, 2)) if 2 * kw - 1 <= w else 1)
            extents = ((kh - 1) * rhs_dil[0] + 1, (kw - 1) * rhs_dil[1] + 1)
            pads = tuple((self.draw(st.integers(0, min(1, e - 1))), self.draw(st.integers(0, min(1, e - 1))))
                         for e in extents)
            strides = (self.draw(st.integers(1, 2)), self.draw(st.integers(1, 2)))
            attrs = od.ConvolutionAttrs(strides, pads, (1, 1), rhs_dil, feature_group_count=groups)
            out = groups * self.draw(st.integers(1, 2))
            y = self.op("convolution", x, self.input("conv_w", (out, c // groups, kh, kw)), attrs=attrs)
        self.push(y, x)

    def pooling(self):
        kind = self.choice(("max_pool", "avg_pool", "global_avg_pool"))
        x = self.pick(rank=4, no_ties=kind == "max_pool")
        if x is None:
            return
        if kind == "global_avg_pool":
            self.push(self.b.global_avg_pool(x), x)
            return
        _, _, h, w = static_shape(x)
        k = self.draw(st.integers(1, min(h, w, 3)))
        stride = self.draw(st.integers(1, 2))
        padding = self.choice(("valid", "same"))
        fn = self.b.max_pool if kind == "max_pool" else self.b.avg_pool
        self.push(fn(x, k, stride, padding), x)

    def batch_norm(self):
        x = self.pick(rank=(2, 4), no_ties=True)
        if x is None:
            return
        c = static_shape(x)[1]
        gamma = self.input("gamma", (c,))
        beta = gamma if self.one_in(4) else self.input("beta", (c,))   # one value as both: the adjoint sums
        if self.flip():
            y, mean, var = self.b.emit("batch_norm", (x, gamma, beta), od.BatchNormAttrs(1e-5, 0.1, True)).outputs
            self.push(y, x)
            self.push(mean, x)
            self.push(var, x)
        else:
            stats = (self.input("running_mean", (c,)), self.input("running_var", (c,), "positive"))
            self.push(self.op("batch_norm", x, gamma, beta, *stats, attrs=od.BatchNormAttrs(1e-3, 0.1, False)), x)

    def normalize(self):
        kind = self.choice(("layer_norm", "softmax", "softmax"))
        if kind == "layer_norm":
            x = self.pick(rank=(2, 3), no_ties=True)
            if x is None:
                return
            d = static_shape(x)[-1]
            gamma = self.input("ln_g", (d,))
            beta = gamma if self.flip() else self.input("ln_b", (d,))   # one value in two positions too
            self.push(self.b.layer_norm(x, gamma, beta), x)
        else:
            x = self.pick(rank=(1, 2, 3, 4))
            self.push(self.b.softmax(x, self.draw(st.integers(-x.type.rank, x.type.rank - 1))), x)

    def attention(self):
        x = self.pick(rank=3)
        d = static_shape(x)[-1]
        heads = self.choice([h for h in (1, 2, 3) if d % h == 0])
        k = self.pick(shape=static_shape(x))
        v = self.pick(shape=static_shape(x))
        self.push(self.b.attention(x, k, v, heads, self.flip()), x, k, v)

    def xent(self):
        x = self.pick(rank=2)
        n, classes = static_shape(x)
        labels = self.input("labels", (n,), f"labels:{classes}", DType.i32)
        self.push(self.b.softmax_cross_entropy(x, labels, self.choice((0.0, 0.1))), x)

    STEPS = ("unary", "unary", "binary", "binary", "select", "clamp", "convert", "broadcast", "reshape", "transpose",
             "reverse", "slice", "pad", "concatenate", "reduce", "reduce_window", "dot", "dense", "bias_add", "conv",
             "conv", "pooling", "pooling", "batch_norm", "normalize", "attention", "xent")

    def build(self) -> tuple[Builder, list[str]]:
        g = self.b.graph
        for _ in range(self.draw(st.integers(2, 8))):
            if len(g.nodes) >= MAX_NODES:
                break
            getattr(self, self.choice(self.STEPS))()
        made = [v for v in self.pool if v.producer is not None and v.type.dtype == F64]
        last = made[-1] if made else self.pool[0]
        outs = [last] + self.draw(st.lists(st.sampled_from(made or self.pool), max_size=2))  # may repeat a value
        names = []
        for i, v in enumerate(outs):
            g.set_output(f"out{i}", v)
            names.append(f"out{i}")
        return self.b, names


@st.composite
def graphs(draw):
    """(builder of the forward graph, output names, input kinds, mode) where mode is "vjp" or "grad"."""
    mode = draw(st.sampled_from(("vjp", "grad")))
    gen = _Gen(draw)
    b, outs = gen.build()
    return b, outs, gen.kinds, mode


def _feeds(g: Graph, kinds: dict[str, str], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for v in g.inputs:
        shape, kind = static_shape(v), kinds[v.name]
        if kind.startswith("labels:"):
            out[v.name] = rng.integers(0, int(kind.split(":")[1]), shape).astype(np.int32)
            continue
        x = rng.standard_normal(shape)
        if kind == "positive":
            x = np.abs(x) + 0.5
        elif kind == "negative":
            x = -np.abs(x) - 0.5
        out[v.name] = x.astype(np_dtype(v.type.dtype))
    return out


def check_vjp_against_jax(b: Builder, outs: list[str], kinds: dict[str, str], mode: str, close: Callable,
                          seed: int = 0) -> float:
    """Differentiates the graph with gir and compares with jax.vjp; returns the largest error relative to
    the gradient's scale (for measuring the tolerance)."""
    g = b.graph
    note(print_graph(g))
    wrt = [v for v in g.inputs if v.type.dtype.is_float]
    forward = specialize(g, {})        # an untouched copy for the reference
    seeds: dict[str, str] = {}         # output -> cotangent input name
    if mode == "vjp":
        cts = {name: b.input(f"ct_{name}", g.outputs[name].type.shape, F64) for name in outs}
        back = vjp(g, cts, wrt)
        grads = {v.name: back.grads[v] for v in wrt}
        seeds = {name: ct.name for name, ct in cts.items()}
        for v in wrt:
            if grads[v.name] is not None:
                g.set_output(f"grad:{v.name}", grads[v.name])
    else:
        total = None
        for name in outs:
            y = g.outputs[name]
            m = b.input(f"m_{name}", y.type.shape, F64)
            seeds[name] = m.name
            term = b.reduce(b.multiply(y, m), "sum", tuple(range(y.type.rank))) if y.type.rank else b.multiply(y, m)
            total = term if total is None else b.add(total, term)
        g.set_output("loss", total)
        back = grad(g, "loss", wrt)
    note(f"mode {mode}:\n{print_graph(g)}")

    feeds = _feeds(g, {**kinds, **{ct: "normal" for ct in seeds.values()}}, seed)
    gir_fn = as_jax_function(g)
    ref_fn = as_jax_function(forward)
    wrt_names = [v.name for v in wrt]

    def both(feeds):
        got = gir_fn(feeds)
        rest = {k: x for k, x in feeds.items() if k in {v.name for v in forward.inputs}}

        def f(*xs):
            out = ref_fn({**rest, **dict(zip(wrt_names, xs))})
            return [out[name] for name in outs]

        _, pullback = jax.vjp(f, *[feeds[n] for n in wrt_names])
        ref = pullback([feeds[seeds[name]] for name in outs])
        return {n: got.get(f"grad:{n}") for n in wrt_names}, dict(zip(wrt_names, ref))

    with jax.enable_x64(True):
        got, ref = jax.jit(both)(feeds)
    worst = 0.0
    for n in wrt_names:
        want = np.asarray(ref[n])
        have = np.zeros_like(want) if got[n] is None else np.asarray(got[n])
        worst = max(worst, close(have, want, RTOL, ATOL, f"gradient of {n} ({mode})"))
    if mode == "vjp":
        for v in wrt:   # an input reached by no cotangent has a zero reference gradient
            if back.grads[v] is None:
                assert not np.any(np.asarray(ref[v.name])), f"gir found no path to {v.name}, jax a nonzero gradient"
    return worst


def test_reverse_mode_agrees_with_jax_vjp(fuzz_settings, close_to_scale):
    @fuzz_settings(50, 500)
    @given(case=graphs(), seed=st.integers(0, 2**16))
    def check(case, seed):
        check_vjp_against_jax(*case, close=close_to_scale, seed=seed)

    check()
