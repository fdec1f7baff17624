"""Fuzzing the lowering (issue 7, item 2): random small static graphs go through `lower_graph` (the
default rewrite pipeline, decomposition, verification, the StableHLO printer), iree-compile must accept
the text for the CPU, and the compiled function must compute what the JAX backend computes.

The graphs (static shapes; f32 inputs a [2,3], c [2,3,4], img [2,3,5,4], tok [2,4,6], an i32 input
n [2,3] with values in [-4, 4], plus weights, scales, labels as steps need them) are 2-8 random steps
over a pool of f32, i32 and i1 values:
  * f32 primitives: unary ops (exp(tanh x), log/sqrt/rsqrt of x*x + 0.5, negate, tanh, logistic, abs),
    binary ops (add, subtract, multiply, divide by x*x + 0.5, maximum, minimum) with pool values, splats
    or broadcasts, clamp, select of compare, broadcast_in_dim, reshape, transpose, reverse, strided slice,
    pad (edge and interior), concatenate, reduce sum/max/min, reduce_window sum/max, dot_general with
    random batch and contracting dims, convolution (strides, padding, lhs and rhs dilation, feature
    groups), convert to bf16 and back;
  * layer ops: the activations, conv2d and depthwise_conv2d (kernel, stride, 'same'/'valid'/explicit
    padding, dilation), dense, bias_add, batch_norm in train and eval mode, layer_norm, max_pool,
    avg_pool, global_avg_pool, softmax, attention (causal or not), softmax_cross_entropy with i32 labels;
  * integers and booleans: i32 add, subtract, multiply, maximum, minimum, dot_general, iota, constants,
    reduce sum/max/min of i32 and i1, compare (-> i1), select on i1, convert i32 -> f32, f32 -> i32,
    i1 -> f32, and the shape ops on i32 and i1 values; outputs of every dtype.
Each graph has 1-3 outputs. Every example is compiled (`compile_text(text)`, target cpu, cached under
$GIR_CACHE_DIR by the text's hash) and run with `IreeSession`; its outputs are compared with
`gir.lower.jax_backend.evaluate` of the specialized layer-level graph (`LoweredModule.graph`) on the same
inputs: i32 and i1 outputs exactly, f32 ones with |iree - jax| <= 1e-5 * max(1, max|jax|) + 1e-5 * |jax|.
The f32 tolerance covers XLA and IREE's llvm-cpu using different exp/tanh/log approximations, the
rewrite passes reassociating scale chains and folding constants in NumPy, and sums taken in another
order (values are O(1); the largest difference measured over 700 graphs was 2.8e-7 of the scale).
Comparisons, f32 -> i32 conversions and bf16 round trips only take values computed exactly on both sides
(inputs, and what negate, abs, maximum, minimum, relu, select and shape ops make of them), so a one-ulp
difference cannot flip a comparison, an integer or a bf16 rounding.

This test found that lowering a max or min reduction of i32 values raised OverflowError in the StableHLO
printer (its init value was -inf/+inf printed with int()); fixed in ec444b2, and the strategy reduces i32
and i1 values with sum, max and min.

KNOWN BUGS, in IREE 3.13 (found by this test; gir's text is valid StableHLO; a flag keeps each out of the
strategy until IREE, or a workaround in gir's lowering, handles it):
  * IREE_WINDOW_BUG: a window op (stablehlo convolution or reduce_window: conv2d, max_pool, avg_pool, and
    depthwise_conv2d without the conv_forms pass) with an output spatial dim of 1 over a (padded) input
    dim larger than its window
    fails to compile ("'linalg.generic' op inferred input/output operand #1 has shape's dimension #0 to
    be 4, but found 3"): e.g. max_pool(k=2, stride=2, 'valid') of a 3x3 map, or a 3x3 stride-2 'valid'
    conv2d of a 4x4 one ('same' padding never makes such a window). The strategy uses stride 1 there.
  * IREE_SCALAR_BF16_BUG: on a rank-0 tensor, convert f32 -> bf16 -> f32 returns its input unrounded
    (1.59665, not bf16's 1.59375); rank >= 1 rounds. The strategy makes bf16 round trips of rank >= 1.

iree-compile takes 0.5-2 s per module on 2 cores: CI runs 12 examples (about 8 s with an empty cache),
`--slow` 300.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from fuzz_helpers import embeddings, static_shape
from hypothesis import given, note
from hypothesis import strategies as st

from gir.ir import opdefs as od
from gir.ir.dtypes import DType
from gir.ir.graph import Graph, Value
from gir.ir.printer import print_graph
from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.lower.jax_backend import evaluate, np_dtype
from gir.lower.pipeline import lower_graph
from gir.nn.builder import Builder
from gir.shapes.padding import explicit_pads

F32, I32, I1 = DType.f32, DType.i32, DType.i1
INPUTS = {"a": ((2, 3), F32), "c": ((2, 3, 4), F32), "img": ((2, 3, 5, 4), F32), "tok": ((2, 4, 6), F32),
          "n": ((2, 3), I32)}
UNARY = ("negate", "exp", "log", "tanh", "logistic", "sqrt", "rsqrt", "abs")
ACTIVATIONS = od.ACTIVATIONS
BINARY = ("add", "subtract", "multiply", "divide", "maximum", "minimum")
INT_BINARY = ("add", "subtract", "multiply", "maximum", "minimum")
DIRECTIONS = ("EQ", "NE", "LT", "LE", "GT", "GE")
EXACT_OPS = {"negate", "abs", "maximum", "minimum", "relu", "select", "broadcast_in_dim", "reshape", "transpose",
             "reverse", "slice", "concatenate", "convert", "constant", "iota", "compare"}
"""Ops whose f32 results are bit-exact functions of their inputs on any backend (convert: from i32/i1)."""
MAX_NODES = 30
RTOL, ATOL = 1e-5, 1e-5
IREE_WINDOW_BUG = True
IREE_SCALAR_BF16_BUG = True
"""The IREE bugs in the module docstring: set each to False once IREE (or a workaround in gir's lowering)
handles it, and the strategy makes the construct again."""


def _hits_window_bug(sizes, extents, strides, pads) -> bool:
    """Whether a window op (convolution, reduce_window) has an output dim of 1 over a (padded) input dim
    larger than its window: what iree-compile 3.13 rejects (module docstring)."""
    for size, k, s, (lo, hi) in zip(sizes, extents, strides, pads):
        padded = size + lo + hi
        if IREE_WINDOW_BUG and padded > k and (padded - k) // s + 1 == 1:
            return True
    return False


def _policy_hits_window_bug(sizes, k: int, strides, padding, dilation: int = 1) -> bool:
    """The same for conv2d, depthwise_conv2d and the pools under a padding policy."""
    strides = (strides, strides) if isinstance(strides, int) else strides
    pads = explicit_pads(padding, sizes, (k, k), strides, (dilation, dilation))
    return _hits_window_bug(sizes, ((k - 1) * dilation + 1,) * 2, strides, pads)


class _Gen:
    """Draws one graph: a pool of values of every dtype that steps read operands from and add results to."""

    def __init__(self, draw):
        self.draw = draw
        self.b = Builder("fuzz_iree", mode="train")
        self.kinds: dict[str, str] = {}
        self.pool: list[Value] = [self.input(n, s, dt) for n, (s, dt) in INPUTS.items()]
        self.exact: set[int] = {v.id for v in self.pool}

    # helpers -----------------------------------------------------------------------------------------
    def choice(self, xs):
        return self.draw(st.sampled_from(list(xs)))

    def flip(self) -> bool:
        return self.draw(st.booleans())

    def input(self, stem: str, shape, dtype: DType = F32, kind: str = "normal") -> Value:
        name = stem if stem not in self.kinds else f"{stem}{len(self.kinds)}"
        self.kinds[name] = kind
        return self.b.input(name, shape, dtype)

    def pick(self, dtype=F32, rank=None, shape=None, exact: bool = False) -> Value | None:
        ranks = (rank,) if isinstance(rank, int) else rank
        cands = [v for v in self.pool if v.type.dtype == dtype and (ranks is None or v.type.rank in ranks)
                 and (shape is None or static_shape(v) == tuple(shape)) and (not exact or v.id in self.exact)]
        return self.choice(cands) if cands else None

    def is_exact(self, v: Value) -> bool:
        """Computed bit-exactly on any backend from inputs that are: EXACT_OPS on floats, every integer and
        boolean op, converts but to or from bf16."""
        p = v.producer
        if p is None:
            return True
        if not all(x.id in self.exact for x in p.inputs):
            return False
        if p.op == "convert":
            return DType.bf16 not in (v.type.dtype, p.inputs[0].type.dtype)
        return p.op in EXACT_OPS or not v.type.dtype.is_float

    def push(self, v: Value) -> Value:
        if self.is_exact(v):
            self.exact.add(v.id)
        self.pool.append(v)
        return v

    def op(self, op: str, *xs: Value, attrs=None) -> Value:
        return self.b.emit(op, xs, attrs).out

    def splat(self, shape, dtype=F32) -> Value:
        values = {F32: (0.5, -1.5, 2.0, 0.25), I32: (0, 1, -3, 2), I1: (True, False)}[dtype]
        c = self.b.constant(self.choice(values), tuple(shape), dtype)
        self.exact.add(c.id)
        return c

    def positive(self, x: Value) -> Value:
        return self.b.add(self.b.multiply(x, x), self.b.constant(0.5, static_shape(x), F32))

    def partner(self, x: Value) -> Value:
        shape, dt = static_shape(x), x.type.dtype
        kind = self.choice(("pool", "pool", "splat", "bcast"))
        if kind == "splat":
            return self.splat(shape, dt)
        if kind == "bcast" and shape:
            opts = [(v, d) for v in self.pool if v.type.dtype == dt and v.type.rank < len(shape)
                    for d in embeddings(static_shape(v), shape)]
            if opts:
                v, dims = self.choice(opts)
                return self.push(self.b.broadcast_in_dim(v, shape, dims))
        return self.pick(dt, shape=shape) or self.splat(shape, dt)

    def any_dtype(self) -> DType:
        dts = [dt for dt in (F32, F32, F32, I32, I1) if any(v.type.dtype == dt for v in self.pool)]
        return self.choice(dts)

    # float steps ----------------------------------------------------------------------------------------
    def unary(self):
        x = self.pick()
        op = self.choice(UNARY + ACTIVATIONS)
        if op in ("log", "sqrt", "rsqrt"):
            x = self.positive(x)
        elif op == "exp":
            x = self.b.unary("tanh", x)
        self.push(self.b.unary(op, x))

    def binary(self):
        x = self.pick()
        y = self.partner(x)
        op = self.choice(BINARY)
        if op == "divide":
            self.push(self.b.divide(x, self.positive(y)))
        else:
            self.push(self.op(op, *((x, y) if self.flip() else (y, x))))

    def clamp(self):
        x = self.pick()
        self.push(self.op("clamp", self.b.constant(-0.5, (), F32), x, self.b.constant(0.7, (), F32)))

    def bf16_round_trip(self):
        # of an exact value: rounding to bf16 would turn a one-ulp difference into a bf16 ulp (2^-8)
        x = self.pick(rank=(1, 2, 3, 4) if IREE_SCALAR_BF16_BUG else None, exact=True)
        self.push(self.b.convert(self.b.convert(x, DType.bf16), F32))

    def reduce_window(self):
        x = self.pick(rank=(2, 3))
        if x is None:
            return
        window = tuple(self.draw(st.integers(1, min(d, 3))) for d in static_shape(x))
        strides = tuple(self.draw(st.integers(1, 2)) for _ in window)
        pads = tuple((self.draw(st.integers(0, min(1, k - 1))), self.draw(st.integers(0, min(1, k - 1))))
                     for k in window)   # never a window inside the padding alone (-inf for max)
        kind = self.choice(("sum", "max"))
        if _hits_window_bug(static_shape(x), window, strides, pads):
            strides = (1,) * len(window)
        self.push(self.op("reduce_window", x, attrs=od.ReduceWindowAttrs(kind, window, strides, pads)))

    def conv(self):
        x = self.pick(rank=4)
        if x is None:
            return
        _, c, h, w = static_shape(x)
        kind = self.choice(("conv2d", "depthwise", "convolution"))
        if kind == "convolution":
            groups = self.choice([g for g in (1, 2, 3) if c % g == 0])
            lhs_dil = (self.choice((1, 2)), self.choice((1, 2)))
            sizes = [(d - 1) * ld + 1 for d, ld in zip((h, w), lhs_dil)]
            kh, kw = (self.draw(st.integers(1, min(s, 3))) for s in sizes)
            pads = tuple((self.draw(st.integers(0, 2)), self.draw(st.integers(0, 1))) for _ in range(2))
            strides = (self.draw(st.integers(1, 2)), self.draw(st.integers(1, 2)))
            if _hits_window_bug(sizes, (kh, kw), strides, pads):
                strides = (1, 1)
            attrs = od.ConvolutionAttrs(strides, pads, lhs_dil, (1, 1), feature_group_count=groups)
            wt = self.input("conv_w", (groups * self.draw(st.integers(1, 2)), c // groups, kh, kw))
            self.push(self.op("convolution", x, wt, attrs=attrs))
            return
        k, dil = self.draw(st.integers(1, 3)), self.choice((1, 1, 2))
        padding = self.choice(("same", "valid", ((1, 0), (0, 2))))
        pads = ((0, 0), (0, 0)) if padding == "valid" else padding
        if padding != "same" and any((k - 1) * dil + 1 > d + lo + hi for d, (lo, hi) in zip((h, w), pads)):
            padding = "same"
        stride = self.choice((1, 2, (1, 2)))
        if _policy_hits_window_bug((h, w), k, stride, padding, dil):
            stride = 1
        if kind == "conv2d":
            wt = self.input("conv_w", (self.draw(st.integers(1, 4)), c, k, k))
            self.push(self.b.conv2d(x, wt, stride, padding, dil))
        else:
            self.push(self.b.depthwise_conv2d(x, self.input("dw_w", (c, 1, k, k)), stride, padding, dil))

    def pooling(self):
        x = self.pick(rank=4)
        if x is None:
            return
        kind = self.choice(("max_pool", "avg_pool", "global_avg_pool"))
        if kind == "global_avg_pool":
            self.push(self.b.global_avg_pool(x))
            return
        _, _, h, w = static_shape(x)
        k = self.draw(st.integers(1, min(h, w, 3)))
        stride, padding = self.draw(st.integers(1, 2)), self.choice(("valid", "same"))
        if _policy_hits_window_bug((h, w), k, stride, padding):
            stride = 1
        fn = self.b.max_pool if kind == "max_pool" else self.b.avg_pool
        self.push(fn(x, k, stride, padding))

    def dense(self):
        x = self.pick(rank=(2, 3))
        y = self.b.dense(x, self.input("dense_w", (static_shape(x)[-1], self.draw(st.integers(1, 5)))))
        if self.flip():
            y = self.b.bias_add(y, self.input("bias", (static_shape(y)[-1],)), axis=-1)
        self.push(y)

    def batch_norm(self):
        x = self.pick(rank=(2, 4))
        c = static_shape(x)[1]
        gamma, beta = self.input("gamma", (c,)), self.input("beta", (c,))
        if self.flip():
            for v in self.b.emit("batch_norm", (x, gamma, beta), od.BatchNormAttrs(1e-5, 0.1, True)).outputs:
                self.push(v)
        else:
            stats = (self.input("running_mean", (c,)), self.input("running_var", (c,), kind="positive"))
            self.push(self.op("batch_norm", x, gamma, beta, *stats, attrs=od.BatchNormAttrs(1e-3, 0.1, False)))

    def normalize(self):
        if self.flip():
            x = self.pick(rank=(2, 3))
            d = static_shape(x)[-1]
            self.push(self.b.layer_norm(x, self.input("ln_g", (d,)), self.input("ln_b", (d,))))
        else:
            x = self.pick(rank=(1, 2, 3, 4))
            if x is not None:
                self.push(self.b.softmax(x, self.draw(st.integers(-x.type.rank, x.type.rank - 1))))

    def attention(self):
        q = self.pick(rank=3)
        d = static_shape(q)[-1]
        k, v = self.pick(shape=static_shape(q)), self.pick(shape=static_shape(q))
        self.push(self.b.attention(q, k, v, self.choice([h for h in (1, 2, 3) if d % h == 0]), self.flip()))

    def xent(self):
        x = self.pick(rank=2)
        n, classes = static_shape(x)
        labels = self.input("labels", (n,), I32, f"labels:{classes}")
        self.push(self.b.softmax_cross_entropy(x, labels, self.choice((0.0, 0.1))))

    # any dtype ----------------------------------------------------------------------------------------
    def int_binary(self):
        x = self.pick(I32)
        self.push(self.op(self.choice(INT_BINARY), x, self.partner(x)))

    def compare_select(self):
        dt = self.choice((F32, I32))
        x = self.pick(dt, exact=True)
        y = self.pick(dt, shape=static_shape(x), exact=True) if self.flip() else None
        y = y if y is not None else self.splat(static_shape(x), dt)
        p = self.push(self.op("compare", x, y, attrs=od.CompareAttrs(self.choice(DIRECTIONS))))
        out_dt = self.any_dtype()
        t = self.pick(out_dt, shape=static_shape(x)) or self.splat(static_shape(x), out_dt)
        self.push(self.op("select", p, t, self.partner(t)))

    def convert(self):
        kind = self.choice(("i32_f32", "f32_i32", "i1_f32"))
        if kind == "i32_f32":
            self.push(self.b.convert(self.pick(I32), F32))
        elif kind == "f32_i32":
            self.push(self.b.convert(self.pick(F32, exact=True), I32))
        else:
            p = self.pick(I1)
            if p is not None:
                self.push(self.b.convert(p, F32))

    def iota(self):
        x = self.pick(I32) or self.pick()
        shape = static_shape(x)
        if not shape:
            return
        io = self.op("iota", attrs=od.IotaAttrs(self.draw(st.integers(0, len(shape) - 1)), x.type.with_dtype(I32)))
        self.push(io)

    def broadcast(self):
        x = self.pick(self.any_dtype(), rank=(0, 1, 2, 3))
        if x is None:
            return
        src = static_shape(x)
        targets = sorted({static_shape(v) for v in self.pool} | {(2, 3, 4), (3, 2)})
        opts = [(t, d) for t in targets if len(t) > len(src) for d in embeddings(src, t)]
        if opts:
            t, dims = self.choice(opts)
            self.push(self.b.broadcast_in_dim(x, t, dims))

    def reshape(self):
        x = self.pick(self.any_dtype(), rank=(1, 2, 3, 4))
        if x is None:
            return
        shape = static_shape(x)
        n = math.prod(shape)
        opts = sorted({(n,), (1, n), tuple(reversed(shape))} | {(d, n // d) for d in range(2, n) if n % d == 0})
        self.push(self.b.reshape(x, self.choice(opts)))

    def transpose(self):
        x = self.pick(self.any_dtype(), rank=(2, 3, 4))
        if x is not None:
            self.push(self.b.transpose(x, tuple(self.draw(st.permutations(range(x.type.rank))))))

    def reverse(self):
        x = self.pick(self.any_dtype(), rank=(1, 2, 3, 4))
        if x is None:
            return
        r = x.type.rank
        dims = tuple(self.draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r, unique=True)))
        self.push(self.op("reverse", x, attrs=od.ReverseAttrs(dims)))

    def slice(self):
        x = self.pick(self.any_dtype(), rank=(1, 2, 3, 4))
        if x is None:
            return
        start, limit, strides = [], [], []
        for d in static_shape(x):
            lo = self.draw(st.integers(0, d - 1))
            start.append(lo)
            limit.append(self.draw(st.integers(lo + 1, d)))
            strides.append(self.draw(st.integers(1, 2)))
        self.push(self.b.slice(x, start, limit, strides))

    def pad(self):
        dt = self.choice((F32, I32))
        x = self.pick(dt, rank=(1, 2, 3))
        if x is None:
            return

        def ints(hi):
            return tuple(self.draw(st.integers(0, hi)) for _ in range(x.type.rank))

        self.push(self.op("pad", x, self.splat((), dt), attrs=od.PadAttrs(ints(2), ints(2), ints(1))))

    def concatenate(self):
        x = self.pick(self.any_dtype(), rank=(1, 2, 3, 4))
        if x is None:
            return
        dim = self.draw(st.integers(0, x.type.rank - 1))
        same = [v for v in self.pool if v.type.rank == x.type.rank and v.type.dtype == x.type.dtype
                and all(a == b for i, (a, b) in enumerate(zip(static_shape(v), static_shape(x))) if i != dim)]
        self.push(self.b.concatenate([x] + [self.choice(same) for _ in range(self.draw(st.integers(1, 2)))], dim))

    def reduce(self):
        x = self.pick(self.choice((F32, F32, I32, I1)), rank=(1, 2, 3, 4))
        if x is None:
            return
        r = x.type.rank
        dims = tuple(sorted(self.draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r, unique=True))))
        self.push(self.b.reduce(x, self.choice(("sum", "max", "min")), dims))

    def dot(self):
        dt = self.choice((F32, F32, I32))
        x, y = self.pick(dt, rank=(1, 2, 3)), self.pick(dt, rank=(1, 2, 3))
        if x is None:
            return
        xs, ys = static_shape(x), static_shape(y)
        pairs = [(i, j) for i in range(len(xs)) for j in range(len(ys)) if xs[i] == ys[j]]
        chosen = self.draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=3,
                                    unique_by=(lambda p: p[0], lambda p: p[1]))) if pairs else []
        if not chosen:
            return
        nb = self.draw(st.integers(0, len(chosen) - 1))
        batch, contract = chosen[:nb], chosen[nb:]
        self.push(self.b.dot_general(x, y, [i for i, _ in batch], [j for _, j in batch],
                                     [i for i, _ in contract], [j for _, j in contract]))

    STEPS = ("unary", "unary", "binary", "binary", "clamp", "bf16_round_trip", "reduce_window", "conv", "conv",
             "pooling", "dense", "batch_norm", "normalize", "attention", "xent", "int_binary", "compare_select",
             "compare_select", "convert", "iota", "broadcast", "reshape", "transpose", "reverse", "slice", "pad",
             "concatenate", "reduce", "dot")

    def build(self) -> Graph:
        g = self.b.graph
        for _ in range(self.draw(st.integers(2, 8))):
            if len(g.nodes) >= MAX_NODES:
                break
            getattr(self, self.choice(self.STEPS))()
        made = [v for v in self.pool if v.producer is not None] or self.pool
        outs = [made[-1]] + self.draw(st.lists(st.sampled_from(made), max_size=2))
        for i, v in enumerate(outs):
            g.set_output(f"out{i}", v)
        return g


@st.composite
def graphs(draw):
    gen = _Gen(draw)
    return gen.build(), gen.kinds


def _feeds(g: Graph, kinds: dict[str, str], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for v in g.inputs:
        shape, kind, dt = static_shape(v), kinds[v.name], v.type.dtype
        if kind.startswith("labels:"):
            out[v.name] = rng.integers(0, int(kind.split(":")[1]), shape).astype(np.int32)
        elif dt == I32:
            out[v.name] = rng.integers(-4, 5, shape).astype(np.int32)
        else:
            x = rng.standard_normal(shape)
            out[v.name] = (np.abs(x) + 0.5 if kind == "positive" else x).astype(np_dtype(dt))
    return out


def check_lowered_graph_on_iree(g: Graph, kinds: dict[str, str], close: Callable, seed: int = 0) -> float:
    """Lowers, compiles, runs and compares; returns the largest f32 difference relative to its output's
    scale (for measuring the tolerance)."""
    note(print_graph(g))
    mod = lower_graph(g, {}, "f")
    note(mod.text)
    session = IreeSession(compile_text(mod.text, "cpu"), "cpu")
    feeds = _feeds(mod.graph, kinds, seed)
    got = session.call_numpy("f", *[feeds[v.name] for v in mod.primitive.inputs])
    want = evaluate(mod.graph, feeds)
    assert len(got) == len(mod.primitive.outputs) == len(want)
    worst = 0.0
    for (name, v), have in zip(mod.primitive.outputs.items(), got):
        ref = np.asarray(want[name])
        assert have.shape == ref.shape and have.dtype == ref.dtype, (name, have.shape, have.dtype, ref.shape, ref.dtype)
        if v.type.dtype != F32:
            np.testing.assert_array_equal(have, ref, err_msg=f"output {name}")
            continue
        worst = max(worst, close(have, ref, RTOL, ATOL, f"output {name}"))
    return worst


def test_random_graphs_compile_with_iree_and_match_jax(fuzz_settings, close_to_scale):
    @fuzz_settings(12, 300)
    @given(case=graphs(), seed=st.integers(0, 2**16))
    def check(case, seed):
        check_lowered_graph_on_iree(*case, close=close_to_scale, seed=seed)

    check()
