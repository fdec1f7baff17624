"""The JAX backend: every op has a rule; each rule matches an independent NumPy reference (naive loops
or formulas, computed in float64); evaluate / compile_jax check their inputs and run whole nets.

Tolerances (float32 results against float64 references): elementwise ops rtol 1e-5, atol 1e-6;
ops that accumulate (conv, dot, pools, norms, softmax, cross-entropy, attention) rtol 1e-4, atol 1e-4;
exact ops (data movement, compare, select, max/min reductions, int math) must match exactly."""
from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np
import pytest

import gir.shapes
from gir.ir import OPS, DType, Init, missing_rules
from gir.ir import opdefs as od
from gir.lower import jax_backend as jb
from gir.shapes.padding import same_pads
from gir.lower.jax_backend import JAX_RULES, as_jax_function, compile_jax, evaluate
from gir.netfile import load_net_file
from gir.nn import Builder
from gir.nn.params import init_params

EW = dict(rtol=1e-5, atol=1e-6)     # elementwise
ACC = dict(rtol=1e-4, atol=1e-4)    # accumulating ops
NETS = Path(__file__).resolve().parents[2] / "nets"
DTYPES = {np.dtype(np.float32): DType.f32, np.dtype(np.float64): DType.f64, np.dtype(np.int32): DType.i32,
          np.dtype(np.bool_): DType.i1, np.dtype(jax.numpy.bfloat16): DType.bf16}


def rand(*shape: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def run(op: str, attrs, *arrays: np.ndarray, jit: bool = False):
    """Builds a one-node graph (shapes inferred by the builder) and runs it; one array or a tuple."""
    b = Builder("t")
    vals = [b.input(f"in{i}", a.shape, DTYPES[a.dtype]) for i, a in enumerate(arrays)]
    node = b.emit(op, vals, attrs)
    for i, v in enumerate(node.outputs):
        b.graph.set_output(f"out{i}", v)
    feeds = {f"in{i}": a for i, a in enumerate(arrays)}
    out = compile_jax(b.graph)(feeds) if jit else evaluate(b.graph, feeds)
    res = tuple(out[f"out{i}"] for i in range(len(node.outputs)))
    for r, v in zip(res, node.outputs):
        assert r.shape == tuple(v.type.shape)
    return res[0] if len(res) == 1 else res


# ---- coverage ---------------------------------------------------------------------------------

def test_every_op_has_a_jax_rule():
    missing = missing_rules(JAX_RULES, "JAX rule in gir.lower.jax_backend.JAX_RULES")
    assert not missing, "\n".join(missing)
    assert set(JAX_RULES) <= set(OPS), f"rules for unregistered ops: {sorted(set(JAX_RULES) - set(OPS))}"


def test_layer_rules_state_their_semantics_in_one_line():
    for name, op in OPS.items():
        if op.level == "layer":
            doc = (JAX_RULES[name].__doc__ or "").strip()
            assert doc and "\n" not in doc, f"JAX rule of layer op {name!r} needs a one-line docstring"


# ---- NumPy references -------------------------------------------------------------------------

def ref_same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def ref_pads(padding, hw, k, s, d=(1, 1)):
    if padding == "same":
        return [ref_same_pads(hw[i], k[i], s[i], d[i]) for i in range(2)]
    if padding == "valid":
        return [(0, 0), (0, 0)]
    return [tuple(p) for p in padding]


def ref_conv(x, w, stride, pads, dil=(1, 1), groups=1):
    """Naive grouped NCHW/OIHW cross-correlation: a loop over kernel taps over the zero-padded input."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    o, ci, kh, kw = w.shape
    assert c == ci * groups and o % groups == 0
    xp = np.pad(x, ((0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])))
    oh = (xp.shape[2] - (kh - 1) * dil[0] - 1) // stride[0] + 1
    ow = (xp.shape[3] - (kw - 1) * dil[1] - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for g in range(groups):
        xs, ws = xp[:, g * ci:(g + 1) * ci], w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dil[0], j * dil[1]
                patch = xs[:, :, r0:r0 + (oh - 1) * stride[0] + 1:stride[0], c0:c0 + (ow - 1) * stride[1] + 1:stride[1]]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out


def ref_pool(x, window, stride, pads, kind):
    """Loops over output cells; each window keeps only its in-bounds cells (padding never counts)."""
    n, c, h, w = x.shape
    oh = (h + sum(pads[0]) - window[0]) // stride[0] + 1
    ow = (w + sum(pads[1]) - window[1]) // stride[1] + 1
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride[0] - pads[0][0], j * stride[1] - pads[1][0]
            rows = [r for r in range(r0, r0 + window[0]) if 0 <= r < h]
            cols = [q for q in range(c0, c0 + window[1]) if 0 <= q < w]
            win = x[:, :, rows][:, :, :, cols].astype(np.float64)
            out[:, :, i, j] = win.max(axis=(2, 3)) if kind == "max" else win.mean(axis=(2, 3))
    return out


def ref_softmax(x, axis):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---- conv2d / depthwise_conv2d -------------------------------------------------------------------

@pytest.mark.parametrize("size,k,s,d,pads", [
    (8, 3, 2, 1, (0, 1)), (9, 3, 2, 1, (1, 1)), (7, 4, 2, 1, (1, 2)), (5, 3, 1, 2, (2, 2)),
    (9, 2, 2, 1, (0, 1)), (6, 3, 3, 1, (0, 0)), (10, 1, 2, 1, (0, 0)), (4, 5, 1, 1, (2, 2)),
])
def test_same_padding_is_xla_same(size, k, s, d, pads):
    """A hand-worked table: the smaller half of an odd total goes low."""
    assert ref_same_pads(size, k, s, d) == pads
    assert same_pads(size, k, s, d) == pads


CONV_CASES = [  # (H, W), k, stride, padding, dilation
    ((9, 9), 3, 2, "same", 1),          # odd size, stride 2: symmetric total 2
    ((8, 8), 3, 2, "same", 1),          # even size, stride 2: total 1, pads (0, 1)
    ((7, 9), 4, 2, "same", 1),          # even kernel, odd sizes: pads (1, 2) and (1, 1)
    ((7, 7), 3, 1, "same", 2),          # dilation 2
    ((11, 10), 3, (2, 1), "same", (2, 1)),
    ((9, 9), 3, 1, "valid", 1),
    ((8, 7), 3, 2, ((1, 2), (0, 1)), 1),  # explicit
    ((6, 6), 1, 2, "same", 1),
]


@pytest.mark.parametrize("hw,k,stride,padding,dilation", CONV_CASES)
def test_conv2d(hw, k, stride, padding, dilation):
    x, w = rand(2, 3, *hw, seed=1), rand(4, 3, k, k, seed=2)
    a = od.ConvAttrs(stride, padding, dilation)
    got = run("conv2d", a, x, w)
    want = ref_conv(x, w, a.stride, ref_pads(padding, hw, (k, k), a.stride, a.dilation), a.dilation)
    np.testing.assert_allclose(got, want, **ACC)


def test_conv2d_built_with_params():
    """The builder path, with a parameter input fed by name; odd input, 'same', stride 2."""
    b = Builder("t")
    x = b.input("x", (2, 3, 9, 9))
    w = b.param("w", (4, 3, 3, 3), Init("zeros"))
    b.graph.set_output("y", b.conv2d(x, w, stride=2, padding="same"))
    xs, ws = rand(2, 3, 9, 9, seed=3), rand(4, 3, 3, 3, seed=4)
    got = evaluate(b.graph, {"x": xs, "w": ws})["y"]
    assert got.shape == (2, 4, 5, 5)
    np.testing.assert_allclose(got, ref_conv(xs, ws, (2, 2), [(1, 1), (1, 1)]), **ACC)
    # the top-left output sees rows/cols -1..1, i.e. one padded row and column
    manual = np.einsum("nchw,ochw->no", xs[:, :, :2, :2].astype(np.float64), ws[:, :, 1:, 1:].astype(np.float64))
    np.testing.assert_allclose(got[:, :, 0, 0], manual, **ACC)


@pytest.mark.parametrize("hw,k,stride,padding,dilation", [
    ((9, 9), 3, 2, "same", 1), ((8, 8), 3, 2, "same", 1), ((7, 7), 5, 1, "same", 1),
    ((9, 8), 3, 1, "same", 2), ((8, 8), 3, 1, "valid", 1), ((7, 7), 3, 2, ((0, 1), (1, 0)), 1),
])
def test_depthwise_conv2d(hw, k, stride, padding, dilation):
    x, w = rand(2, 5, *hw, seed=5), rand(5, 1, k, k, seed=6)
    a = od.ConvAttrs(stride, padding, dilation)
    got = run("depthwise_conv2d", a, x, w)
    want = ref_conv(x, w, a.stride, ref_pads(padding, hw, (k, k), a.stride, a.dilation), a.dilation, groups=5)
    np.testing.assert_allclose(got, want, **ACC)
    # independent of the grouped reference: each channel is its own single-channel conv
    for ch in range(5):
        one = ref_conv(x[:, ch:ch + 1], w[ch:ch + 1], a.stride,
                       ref_pads(padding, hw, (k, k), a.stride, a.dilation), a.dilation)
        np.testing.assert_allclose(got[:, ch:ch + 1], one, **ACC)


def test_depthwise_rule_with_channel_multiplier():
    """w [C*m, 1, kh, kw]: output channel o reads input channel o // m (the rule, called directly)."""
    x, w = rand(2, 3, 7, 7, seed=7), rand(6, 1, 3, 3, seed=8)
    got = np.asarray(JAX_RULES["depthwise_conv2d"](od.ConvAttrs(2, "same"), x, w))
    for o in range(6):
        want = ref_conv(x[:, o // 2:o // 2 + 1], w[o:o + 1], (2, 2), [(1, 1), (1, 1)])
        np.testing.assert_allclose(got[:, o:o + 1], want, **ACC)


# ---- dense, bias_add, norms -----------------------------------------------------------------------

def test_dense():
    x, w = rand(2, 3, 5, seed=9), rand(5, 4, seed=10)
    np.testing.assert_allclose(run("dense", None, x, w), x.astype(np.float64) @ w, **ACC)


@pytest.mark.parametrize("shape,axis", [((2, 4, 3, 3), 1), ((2, 3, 4), -1), ((2, 3, 4), -2), ((5,), 0)])
def test_bias_add(shape, axis):
    x, b = rand(*shape, seed=11), rand(shape[axis], seed=12)
    bshape = [1] * len(shape)
    bshape[axis] = shape[axis]
    np.testing.assert_allclose(run("bias_add", od.AxisAttrs(axis), x, b), x + b.reshape(bshape), **EW)


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (6, 3)])
def test_batch_norm_training(shape):
    x = rand(*shape, seed=13, scale=3.0) + 2.0
    g, bt = rand(3, seed=14), rand(3, seed=15)
    y, mean, var = run("batch_norm", od.BatchNormAttrs(eps=1e-3), x, g, bt)
    axes = tuple(i for i in range(len(shape)) if i != 1)
    xd = x.astype(np.float64)
    m, v = xd.mean(axis=axes), xd.var(axis=axes)  # biased
    bc = (1, 3) + (1,) * (len(shape) - 2)
    want = g.reshape(bc) * (xd - m.reshape(bc)) / np.sqrt(v.reshape(bc) + 1e-3) + bt.reshape(bc)
    np.testing.assert_allclose(y, want, **ACC)
    np.testing.assert_allclose(mean, m, **ACC)
    np.testing.assert_allclose(var, v, **ACC)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (5, 3)])
def test_batch_norm_eval(shape):
    x, g, bt = rand(*shape, seed=16), rand(3, seed=17), rand(3, seed=18)
    rm, rv = rand(3, seed=19), np.abs(rand(3, seed=20)) + 0.5
    y = run("batch_norm", od.BatchNormAttrs(eps=1e-5, training=False), x, g, bt, rm, rv)
    bc = (1, 3) + (1,) * (len(shape) - 2)
    want = g.reshape(bc) * (x - rm.reshape(bc)) / np.sqrt(rv.reshape(bc).astype(np.float64) + 1e-5) \
        + bt.reshape(bc)
    np.testing.assert_allclose(y, want, **ACC)


def test_layer_norm():
    x, g, bt = rand(2, 5, 8, seed=21, scale=2.0) + 1.0, rand(8, seed=22), rand(8, seed=23)
    xd = x.astype(np.float64)
    m, v = xd.mean(-1, keepdims=True), xd.var(-1, keepdims=True)
    want = (xd - m) / np.sqrt(v + 1e-6) * g + bt
    np.testing.assert_allclose(run("layer_norm", od.LayerNormAttrs(1e-6), x, g, bt), want, **ACC)


# ---- activations ----------------------------------------------------------------------------------

ACT_REFS = {
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0), 6),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "hard_swish": lambda x: x * np.minimum(np.maximum(x + 3, 0), 6) / 6,
    "hard_sigmoid": lambda x: np.minimum(np.maximum(x + 3, 0), 6) / 6,
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
    "logistic": lambda x: 1 / (1 + np.exp(-x)),
}


@pytest.mark.parametrize("op", sorted(ACT_REFS))
def test_activation(op):
    x = np.concatenate([rand(50, seed=24, scale=4.0), np.array([-3, 0, 3, 6, 8], np.float32)])
    np.testing.assert_allclose(run(op, None, x), ACT_REFS[op](x.astype(np.float64)), **EW)


def test_gelu_is_the_tanh_approximation():
    """At x = 1 the tanh form gives 0.841192; the erf form would give 0.841345."""
    got = run("gelu", None, np.array([1.0], np.float32))
    assert abs(float(got[0]) - 0.8411920) < 1e-6


# ---- pools ---------------------------------------------------------------------------------------

POOL_CASES = [  # (H, W), window, stride, padding
    ((9, 9), 3, 2, "same"),          # odd, stride 2
    ((8, 8), 3, 2, "same"),          # asymmetric (0, 1)
    ((7, 8), 2, 2, "same"),
    ((8, 8), 2, 2, "valid"),
    ((7, 7), 3, 1, ((1, 1), (1, 1))),
    ((6, 7), 3, 2, ((1, 0), (0, 2))),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("hw,window,stride,padding", POOL_CASES)
def test_pool(kind, hw, window, stride, padding):
    x = rand(2, 3, *hw, seed=25) - 2.0  # mostly negative: padding must not act as zeros for max
    a = od.PoolAttrs(window, stride, padding)
    got = run(f"{kind}_pool", a, x)
    want = ref_pool(x, a.window, a.stride, ref_pads(padding, hw, a.window, a.stride), kind)
    np.testing.assert_allclose(got, want, **ACC)


def test_avg_pool_counts_only_real_cells():
    """3x3 'same' on a 4x4 of ones is all ones; the corner of an arange image averages 2x2 cells."""
    ones = np.ones((1, 1, 4, 4), np.float32)
    np.testing.assert_allclose(run("avg_pool", od.PoolAttrs(3, 1, "same"), ones), np.ones((1, 1, 4, 4)), **EW)
    img = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    got = run("avg_pool", od.PoolAttrs(3, 1, ((1, 1), (1, 1))), img)
    assert got[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)


def test_global_avg_pool():
    x = rand(2, 3, 5, 7, seed=26)
    np.testing.assert_allclose(run("global_avg_pool", None, x), x.astype(np.float64).mean(axis=(2, 3)), **ACC)


# ---- softmax, cross-entropy, attention --------------------------------------------------------------

@pytest.mark.parametrize("axis", [1, -1, 0])
def test_softmax(axis):
    x = rand(3, 4, 5, seed=27, scale=3.0) + 500.0  # large offset: must be computed stably
    got = run("softmax", od.AxisAttrs(axis), x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref_softmax(x, axis), **ACC)


@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_softmax_cross_entropy(ls):
    logits = rand(6, 5, seed=28, scale=3.0)
    labels = np.array([0, 4, 2, 2, 1, 3], np.int32)
    got = run("softmax_cross_entropy", od.XentAttrs(ls), logits, labels)
    assert got.shape == ()
    x = logits.astype(np.float64)
    logp = x - x.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    target = (1 - ls) * np.eye(5)[labels] + ls / 5
    np.testing.assert_allclose(got, -(target * logp).sum(1).mean(), **ACC)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_attention(heads):
    n, t, d = 2, 5, 8
    q, k, v = rand(n, t, d, seed=29), rand(n, t, d, seed=30), rand(n, t, d, seed=31)
    got = run("attention", od.AttentionAttrs(heads), q, k, v)
    dh = d // heads
    want = np.zeros((n, t, d))
    for b in range(n):
        for h in range(heads):
            cols = slice(h * dh, (h + 1) * dh)
            qh, kh, vh = (z[b, :, cols].astype(np.float64) for z in (q, k, v))
            want[b, :, cols] = ref_softmax(qh @ kh.T / np.sqrt(dh), -1) @ vh
    np.testing.assert_allclose(got, want, **ACC)


def test_softmax_cross_entropy_per_token_is_the_mean_over_every_token():
    logits = rand(2, 3, 5, seed=35, scale=3.0)
    labels = np.array([[0, 4, 2], [2, 1, 3]], np.int32)
    got = run("softmax_cross_entropy", od.XentAttrs(0.1), logits, labels)
    flat = run("softmax_cross_entropy", od.XentAttrs(0.1), logits.reshape(6, 5), labels.reshape(6))
    np.testing.assert_allclose(got, flat, **EW)


def test_causal_attention_weights_only_earlier_positions():
    n, t, d, heads = 2, 5, 8, 2
    q, k, v = rand(n, t, d, seed=36), rand(n, t, d, seed=37), rand(n, t, d, seed=38)
    got = run("attention", od.AttentionAttrs(heads, causal=True), q, k, v)
    dh = d // heads
    want = np.zeros((n, t, d))
    for b in range(n):
        for h in range(heads):
            cols = slice(h * dh, (h + 1) * dh)
            for i in range(t):   # query i over keys 0..i
                qi, kh, vh = (z.astype(np.float64) for z in (q[b, i, cols], k[b, :i + 1, cols], v[b, :i + 1, cols]))
                want[b, i, cols] = ref_softmax(kh @ qi / np.sqrt(dh), -1) @ vh
    np.testing.assert_allclose(got, want, **ACC)


def test_take_and_scatter_add_clamp_and_drop_out_of_range_ids_as_stablehlo_does():
    table = rand(4, 3, seed=39)
    ids = np.array([[0, 3, 3], [-1, 7, 1]], np.int32)
    np.testing.assert_array_equal(run("take", None, table, ids), table[np.clip(ids, 0, 3)])
    updates = rand(2, 3, 3, seed=40)
    want = table.astype(np.float64).copy()
    for i, u in zip(ids.ravel(), updates.reshape(-1, 3)):
        if 0 <= i < 4:
            want[i] += u   # repeats accumulate, out-of-range rows are dropped
    np.testing.assert_allclose(run("scatter_add", None, table, ids, updates), want, **EW)


# ---- primitives ---------------------------------------------------------------------------------------

UNARY_REFS = {"negate": np.negative, "exp": np.exp, "log": np.log, "tanh": np.tanh,
              "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x), "abs": np.abs, "sine": np.sin, "cosine": np.cos}
BINARY_REFS = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
               "maximum": np.maximum, "minimum": np.minimum}


@pytest.mark.parametrize("op", sorted(UNARY_REFS))
def test_unary(op):
    x = rand(3, 7, seed=32, scale=2.0)
    if op in ("log", "sqrt", "rsqrt"):
        x = np.abs(x) + 0.1
    np.testing.assert_allclose(run(op, None, x), UNARY_REFS[op](x.astype(np.float64)), **EW)


@pytest.mark.parametrize("op", sorted(BINARY_REFS))
def test_binary(op):
    x, y = rand(3, 4, seed=33), rand(3, 4, seed=34) + 3.0
    np.testing.assert_allclose(run(op, None, x, y), BINARY_REFS[op](x.astype(np.float64), y), **EW)


def test_integer_and_bf16_arithmetic():
    x, y = np.array([7, -7, 9], np.int32), np.array([2, 2, -4], np.int32)
    np.testing.assert_array_equal(run("divide", None, x, y), [3, -3, -2])  # truncating, as StableHLO
    bx = np.array([1.5, -2.0], jax.numpy.bfloat16)
    got = run("add", None, bx, bx)
    assert got.dtype == np.dtype(jax.numpy.bfloat16)
    np.testing.assert_array_equal(got.astype(np.float32), [3.0, -4.0])


@pytest.mark.parametrize("direction", od.COMPARE_DIRECTIONS)
def test_compare(direction):
    x, y = np.array([1, 2, 3, 2], np.float32), np.array([2, 2, 1, 5], np.float32)
    ref = {"EQ": np.equal, "NE": np.not_equal, "LT": np.less, "LE": np.less_equal, "GT": np.greater,
           "GE": np.greater_equal}[direction]
    got = run("compare", od.CompareAttrs(direction), x, y)
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, ref(x, y))


def test_select_and_clamp():
    p = np.array([[True, False, True]])
    x, y = rand(1, 3, seed=35), rand(1, 3, seed=36)
    np.testing.assert_array_equal(run("select", None, p, x, y), np.where(p, x, y))
    np.testing.assert_array_equal(run("select", None, np.array(False), x, y), y)  # scalar predicate
    v = rand(2, 5, seed=37, scale=3.0)
    lo, hi = np.array(-1.0, np.float32), np.array(0.5, np.float32)
    np.testing.assert_array_equal(run("clamp", None, lo, v, hi), np.clip(v, -1.0, 0.5))
    los, his = rand(2, 5, seed=38) - 1, rand(2, 5, seed=39) + 1
    np.testing.assert_array_equal(run("clamp", None, los, v, his), np.minimum(np.maximum(v, los), his))


def test_convert():
    x = np.array([-1.7, 2.5, 0.0, 3.999], np.float32)
    np.testing.assert_array_equal(run("convert", od.ConvertAttrs(DType.i32), x), [-1, 2, 0, 3])  # toward zero
    np.testing.assert_array_equal(run("convert", od.ConvertAttrs(DType.i1), x), x != 0)
    bf = run("convert", od.ConvertAttrs(DType.bf16), x)
    assert bf.dtype == np.dtype(jax.numpy.bfloat16)
    np.testing.assert_array_equal(bf, x.astype(jax.numpy.bfloat16))
    np.testing.assert_array_equal(run("convert", od.ConvertAttrs(DType.f32), np.array([3, -2], np.int32)), [3, -2])


def test_constant_and_iota():
    from gir.ir import TensorType
    for value, dtype in ((1.5, DType.f32), (7, DType.i32), (True, DType.i1)):
        got = run("constant", od.ConstantAttrs(value, TensorType((2, 3), dtype)))
        assert got.dtype == jb.np_dtype(dtype)
        np.testing.assert_array_equal(got, np.full((2, 3), value))
    got = run("iota", od.IotaAttrs(1, TensorType((2, 3, 4), DType.i32)))
    np.testing.assert_array_equal(got, np.broadcast_to(np.arange(3)[None, :, None], (2, 3, 4)))
    got = run("iota", od.IotaAttrs(1, TensorType((2, 4), DType.f32)))
    np.testing.assert_array_equal(got, np.broadcast_to(np.arange(4.0), (2, 4)))


def test_data_movement():
    x = rand(3, 1, seed=40)
    np.testing.assert_array_equal(run("broadcast_in_dim", od.BroadcastAttrs((2, 3, 4), (1, 2)), x),
                                  np.broadcast_to(x[None], (2, 3, 4)))
    y = rand(2, 3, 4, seed=41)
    np.testing.assert_array_equal(run("reshape", od.ReshapeAttrs((4, 6)), y), y.reshape(4, 6))
    np.testing.assert_array_equal(run("transpose", od.TransposeAttrs((2, 0, 1)), y), y.transpose(2, 0, 1))
    np.testing.assert_array_equal(run("reverse", od.ReverseAttrs((0, 2)), y), y[::-1, :, ::-1])
    np.testing.assert_array_equal(run("optimization_barrier", None, y), y)
    z = rand(7, 5, seed=42)
    np.testing.assert_array_equal(run("slice", od.SliceAttrs((1, 0), (6, 4), (2, 3)), z), z[1:6:2, 0:4:3])
    parts = [rand(2, k, 3, seed=43 + k) for k in (1, 2, 3)]
    np.testing.assert_array_equal(run("concatenate", od.ConcatAttrs(1), *parts), np.concatenate(parts, 1))


def test_pad_with_interior_and_negative_edges():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = run("pad", od.PadAttrs((1, -1), (2, 0), (1, 2)), x, np.array(-9, np.float32))
    inner = np.full((5, 10), -9.0)
    inner[::2, ::3] = x                                   # interior padding
    want = np.pad(inner, ((1, 2), (0, 0)), constant_values=-9.0)[:, 1:]  # low/high; -1 crops
    np.testing.assert_array_equal(got, want)


def test_dot_general():
    a, b = rand(2, 3, 4, seed=46), rand(2, 4, 5, seed=47)
    got = run("dot_general", od.DotGeneralAttrs((0,), (0,), (2,), (1,)), a, b)
    np.testing.assert_allclose(got, np.einsum("bij,bjk->bik", a.astype(np.float64), b), **ACC)
    c, d = rand(3, 2, 4, seed=48), rand(4, 5, 2, seed=49)  # batch dims not leading: result [batch, lhs, rhs]
    got = run("dot_general", od.DotGeneralAttrs((1,), (2,), (2,), (0,)), c, d)
    np.testing.assert_allclose(got, np.einsum("ibj,jkb->bik", c.astype(np.float64), d), **ACC)
    e, f = rand(3, 4, seed=50), rand(5, 4, seed=51)  # no batch, contract both last dims
    got = run("dot_general", od.DotGeneralAttrs((), (), (1,), (1,)), e, f)
    np.testing.assert_allclose(got, e.astype(np.float64) @ f.T, **ACC)


def ref_general_conv(lhs, rhs, a: od.ConvolutionAttrs):
    """StableHLO convolution: to N,C,spatial / O,I,spatial, dilate the input (zeros), then split by
    batch groups (contiguous lhs batch chunks with contiguous output-feature chunks) and feature groups."""
    def perm(layout, first, second):
        return [layout.index(first), layout.index(second)] + [i for i, ch in enumerate(layout)
                                                              if ch not in (first, second)]
    x = lhs.transpose(perm(a.lhs_layout, "N", "C")).astype(np.float64)
    w = rhs.transpose(perm(a.rhs_layout, "O", "I")).astype(np.float64)
    ld = a.lhs_dilation
    xd = np.zeros(x.shape[:2] + tuple((s - 1) * d + 1 for s, d in zip(x.shape[2:], ld)))
    xd[:, :, ::ld[0], ::ld[1]] = x
    bg = a.batch_group_count
    xs, ws = np.split(xd, bg, axis=0), np.split(w, bg, axis=0)
    out = np.concatenate([ref_conv(xi, wi, a.window_strides, a.padding, a.rhs_dilation, a.feature_group_count)
                          for xi, wi in zip(xs, ws)], axis=1)
    return out.transpose(np.argsort(perm(a.out_layout, "N", "C")))


@pytest.mark.parametrize("lhs_shape,rhs_shape,attrs", [
    ((2, 4, 7, 6), (3, 4, 3, 2), od.ConvolutionAttrs((2, 1), ((1, 0), (2, 1)), (1, 2), (2, 1))),
    ((2, 6, 5, 4), (3, 2, 2, 6), od.ConvolutionAttrs((1, 2), ((1, 1), (0, 1)), feature_group_count=2,
                                                     lhs_layout="NHWC", rhs_layout="HWIO", out_layout="NHWC")),
    ((2, 4, 6, 3), (6, 4, 3, 2), od.ConvolutionAttrs((1, 1), ((0, 0), (0, 0)), feature_group_count=1,
                                                     out_layout="NHWC", lhs_layout="NCHW", rhs_layout="OIHW")),
    ((4, 3, 6, 6), (4, 3, 3, 3), od.ConvolutionAttrs((1, 1), ((1, 1), (1, 1)), batch_group_count=2)),
])
def test_convolution(lhs_shape, rhs_shape, attrs):
    lhs, rhs = rand(*lhs_shape, seed=52), rand(*rhs_shape, seed=53)
    np.testing.assert_allclose(run("convolution", attrs, lhs, rhs), ref_general_conv(lhs, rhs, attrs), **ACC)


@pytest.mark.parametrize("kind", od.REDUCE_KINDS)
def test_reduce(kind):
    x = rand(3, 4, 5, seed=54)
    fn = {"sum": np.sum, "max": np.max, "min": np.min}[kind]
    got = run("reduce", od.ReduceAttrs(kind, (0, 2)), x)
    np.testing.assert_allclose(got, fn(x.astype(np.float64), axis=(0, 2)), **ACC)
    i = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    np.testing.assert_array_equal(run("reduce", od.ReduceAttrs(kind, (1,)), i), fn(i, axis=1))


@pytest.mark.parametrize("kind", od.REDUCE_KINDS)
def test_reduce_window(kind):
    x = rand(2, 3, 7, 6, seed=55) + (2.0 if kind == "min" else -2.0)  # padding must act as the identity
    window, strides, pads = (1, 2, 3, 2), (1, 1, 2, 1), ((0, 0), (1, 0), (1, 2), (0, 1))
    got = run("reduce_window", od.ReduceWindowAttrs(kind, window, strides, pads), x)
    init = {"sum": 0.0, "max": -np.inf, "min": np.inf}[kind]
    xp = np.pad(x.astype(np.float64), pads, constant_values=init)
    view = np.lib.stride_tricks.sliding_window_view(xp, window)[tuple(slice(None, None, s) for s in strides)]
    fn = {"sum": np.sum, "max": np.max, "min": np.min}[kind]
    np.testing.assert_allclose(got, fn(view, axis=(4, 5, 6, 7)), **ACC)


# ---- evaluate / compile_jax / as_jax_function --------------------------------------------------------

def small_graph():
    b = Builder("small")
    x = b.input("x", (2, 3))
    w = b.param("w", (3, 4), Init("zeros"))
    y = b.dense(x, w)
    b.graph.set_output("y", y)
    b.graph.set_output("r", b.unary("relu", y))
    return b.graph


def test_symbolic_graph_is_refused():
    from gir.shapes import N
    b = Builder("sym")
    x = b.input("x", (N, 3))
    b.graph.set_output("y", b.unary("relu", x))
    for fn in (lambda g: evaluate(g, {"x": np.zeros((2, 3), np.float32)}), compile_jax, as_jax_function):
        with pytest.raises(ValueError, match=r"symbols N\b.*gir\.shapes\.specialize"):
            fn(b.graph)
    gs = gir.shapes.specialize(b.graph, {N: 2})
    np.testing.assert_array_equal(evaluate(gs, {"x": -np.ones((2, 3), np.float32)})["y"], np.zeros((2, 3)))


@pytest.mark.parametrize("runner", ["evaluate", "jit"])
def test_bad_inputs_name_the_input(runner):
    g = small_graph()
    fn = compile_jax(g) if runner == "jit" else (lambda feeds: evaluate(g, feeds))
    x, w = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="missing input 'w'"):
        fn({"x": x})
    with pytest.raises(ValueError, match="unexpected input 'bogus'"):
        fn({"x": x, "w": w, "bogus": x})
    with pytest.raises(ValueError, match=r"input 'x' has shape \[3, 2\].*\[2, 3\]"):
        fn({"x": x.T, "w": w})
    with pytest.raises(ValueError, match="input 'w' has dtype float64.*float32"):
        fn({"x": x, "w": w.astype(np.float64)})
    out = fn({"x": x, "w": w})
    assert set(out) == {"y", "r"} and all(isinstance(v, np.ndarray) for v in out.values())
    np.testing.assert_array_equal(out["y"], np.full((2, 4), 3.0))


def test_multi_output_batch_norm_outputs_by_name():
    b = Builder("bn")
    x = b.input("x", (4, 3, 2, 2))
    g, bt = b.param("gamma", (3,), Init("ones")), b.param("beta", (3,), Init("zeros"))
    b.batch_norm(x, g, bt, None, None)  # train mode: running stats unused
    b.graph.set_output("mean", b.bn_stats[0][1])
    b.graph.set_output("var", b.bn_stats[0][2])
    xs = rand(4, 3, 2, 2, seed=56)
    out = evaluate(b.graph, {"x": xs, "gamma": np.ones(3, np.float32), "beta": np.zeros(3, np.float32)})
    np.testing.assert_allclose(out["mean"], xs.mean(axis=(0, 2, 3)), **ACC)
    np.testing.assert_allclose(out["var"], xs.astype(np.float64).var(axis=(0, 2, 3)), **ACC)


def test_compile_once_and_reuse(monkeypatch):
    traces = []
    relu = JAX_RULES["relu"]
    monkeypatch.setitem(JAX_RULES, "relu", lambda a, x: (traces.append(1), relu(a, x))[1])
    f = compile_jax(small_graph())
    feeds = {"x": rand(2, 3, seed=57), "w": rand(3, 4, seed=58)}
    first = f(feeds)
    second = f({"x": feeds["x"] * 2, "w": feeds["w"]})
    assert len(traces) == 1
    np.testing.assert_allclose(second["y"], 2 * first["y"], **EW)


def test_as_jax_function_works_with_vjp():
    fn = as_jax_function(small_graph())
    x, w = rand(2, 3, seed=59), rand(3, 4, seed=60)
    out, pull = jax.vjp(lambda x, w: fn({"x": x, "w": w})["y"], x, w)
    gx, gw = pull(np.ones((2, 4), np.float32))
    np.testing.assert_allclose(gx, np.ones((2, 4)) @ w.T, **ACC)
    np.testing.assert_allclose(gw, x.T @ np.ones((2, 4)), **ACC)


def mobilenet_feeds(mode: str):
    net, _ = load_net_file(str(NETS / "mobilenet_v2.py"))
    g = net.build(mode, loss=True, label_smoothing=0.1)
    gs = gir.shapes.specialize(g, net.binding(batch=2, image=32))
    feeds = init_params(gs)
    feeds["images"] = rand(2, 3, 32, 32, seed=61)
    feeds["labels"] = np.array([3, 7], np.int32)
    return gs, feeds


def test_mobilenet_v2_train_mode_runs_and_jit_agrees():
    gs, feeds = mobilenet_feeds("train")
    eager = evaluate(gs, feeds)
    jitted = compile_jax(gs)(feeds)
    assert set(eager) == set(jitted) == set(gs.outputs)
    assert eager["logits"].shape == (2, 10)
    assert eager["loss"].shape == ()
    for name, v in {**eager, **{f"jit {k}": v for k, v in jitted.items()}}.items():
        assert np.isfinite(v).all(), name
    # From stage 6 on the maps are 1x1, so train-mode BN normalizes 2 values per channel; channels where
    # both are (nearly) equal have a batch variance far below eps, and (x - mean) / sqrt(var + eps)
    # amplifies rounding differences by up to 1/sqrt(eps) per layer: eager and jit (which reassociate
    # sums differently) legitimately part ways there. Up to stage 5 they must agree closely.
    early = [k for k in eager if k.split(":")[-1].split(".")[0] in ("stem", "stage1", "stage2", "stage3", "stage4",
                                                                   "stage5")]
    assert len(early) == 2 * 39  # stem 1, stages 1-5: 2 + 6 + 9 + 12 + 9 BN layers
    for name in early:
        scale = max(1.0, float(np.abs(eager[name]).max()))
        np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-3, atol=1e-4 * scale, err_msg=name)


def test_mobilenet_v2_eval_mode_jit_agrees():
    gs, feeds = mobilenet_feeds("eval")
    eager = evaluate(gs, feeds)
    jitted = compile_jax(gs)(feeds)
    assert set(eager) == {"logits", "loss"}
    assert eager["logits"].shape == (2, 10) and np.isfinite(eager["logits"]).all()
    np.testing.assert_allclose(jitted["logits"], eager["logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(jitted["loss"], eager["loss"], rtol=1e-4, atol=1e-4)
