"""Shape rules: coverage of every op, per-op results (checked against JAX for concrete shapes),
and the ShapeErrors they raise."""
import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from gir.ir import OPS, DType, TensorType, missing_rules
from gir.ir import opdefs as od
from gir.shapes import SHAPE_RULES, Constraints, H, N, ShapeError, W, ceildiv, dims_equal, floordiv, infer, sym
from gir.shapes.specialize import bind_dim

f32, i32, i1 = DType.f32, DType.i32, DType.i1
NONE = Constraints()
JNP = {f32: jnp.float32, i32: jnp.int32, i1: jnp.bool_}


def T(*shape, dtype=f32):
    return TensorType(shape, dtype)


def one(op, attrs, *types, c=NONE):
    outs = infer(op, attrs, tuple(types), c)
    assert len(outs) == 1, outs
    return outs[0]


def err(op, attrs, *types, c=NONE) -> str:
    with pytest.raises(ShapeError) as info:
        infer(op, attrs, tuple(types), c)
    return str(info.value)


def jax_shape(fn, *types):
    args = [jax.ShapeDtypeStruct(tuple(t.shape), JNP[t.dtype]) for t in types]
    return tuple(jax.eval_shape(fn, *args).shape)


def at(t: TensorType, **binding):
    """The shape of `t` with symbols bound by name."""
    b = {sym(k): v for k, v in binding.items()}
    return tuple(bind_dim(d, b) for d in t.shape)


def same_dim(a, b, c=NONE):
    return dims_equal(a, b, c) is True


# ---- coverage ------------------------------------------------------------------------------

def test_every_registered_op_has_a_shape_rule():
    missing = missing_rules(SHAPE_RULES, "shape rule")
    assert not missing, "\n".join(missing)
    assert set(OPS) <= set(SHAPE_RULES)


def test_infer_unknown_op_is_a_shape_error():
    assert "no shape rule for op 'conv3d'" in err("conv3d", None, T(1))


# ---- elementwise ---------------------------------------------------------------------------

def test_elementwise_binary_keeps_type():
    assert one("add", None, T(N, 3), T(N, 3)) == T(N, 3)
    assert one("maximum", None, T(2, H, dtype=i32), T(2, H, dtype=i32)) == T(2, H, dtype=i32)


def test_elementwise_binary_shape_mismatch():
    msg = err("add", None, T(N, 3), T(N, 4))
    assert "operand shapes differ, dim 1: 3 != 4" in msg and "lhs [N,3]" in msg and "rhs [N,4]" in msg
    assert "rank 2 != rank 1" in err("multiply", None, T(N, 3), T(N))
    assert "H != ceil(H/2)" in err("subtract", None, T(N, H), T(N, ceildiv(H, 2)))


def test_elementwise_binary_dtype_mismatch():
    assert "element types differ: f32, i32" in err("add", None, T(3), T(3, dtype=i32))


def test_unary_needs_float():
    assert one("exp", None, T(N, H)) == T(N, H)
    assert "needs a float operand, got i32" in err("tanh", None, T(3, dtype=i32))
    assert "needs a float operand" in err("relu", None, T(3, dtype=i1))


def test_compare_select_clamp_convert():
    assert one("compare", od.CompareAttrs("LT"), T(N, 3), T(N, 3)) == T(N, 3, dtype=i1)
    assert one("select", None, T(N, 3, dtype=i1), T(N, 3), T(N, 3)) == T(N, 3)
    assert one("select", None, T(dtype=i1), T(N, 3), T(N, 3)) == T(N, 3)  # scalar predicate
    assert "predicate must be i1, got f32" in err("select", None, T(N, 3), T(N, 3), T(N, 3))
    assert one("clamp", None, T(), T(N, 3), T()) == T(N, 3)
    assert "clamp bound" in err("clamp", None, T(3), T(N, 3), T())
    assert one("convert", od.ConvertAttrs(i32), T(N, 3)) == T(N, 3, dtype=i32)


def test_constant_and_iota():
    assert one("constant", od.ConstantAttrs(0.0, T(N, 4))) == T(N, 4)
    assert one("iota", od.IotaAttrs(1, T(3, 4, dtype=i32))) == T(3, 4, dtype=i32)
    assert "iota dim 2 out of range for rank 2" in err("iota", od.IotaAttrs(2, T(3, 4)))


# ---- conv2d / depthwise ----------------------------------------------------------------------

def _jax_conv2d(x, w, stride, padding, dilation=(1, 1)):
    pad = padding.upper() if isinstance(padding, str) else list(padding)
    return jax_shape(lambda a, b: lax.conv_general_dilated(a, b, stride, pad, rhs_dilation=dilation,
                                                           dimension_numbers=("NCHW", "OIHW", "NCHW")), x, w)


def test_conv2d_same_symbolic():
    y = one("conv2d", od.ConvAttrs(1, "same"), T(N, 3, H, W), T(16, 3, 3, 3))
    assert y == T(N, 16, H, W)
    y2 = one("conv2d", od.ConvAttrs(2, "same"), T(N, 3, H, W), T(16, 3, 3, 3))
    assert y2 == T(N, 16, ceildiv(H, 2), ceildiv(W, 2))
    y4 = one("conv2d", od.ConvAttrs(2, "same"), y2, T(8, 16, 3, 3))
    assert y4.short() == "[N,8,ceil(H/4),ceil(W/4)]"


def test_conv2d_valid_symbolic_needs_a_lower_bound():
    msg = err("conv2d", od.ConvAttrs(1, "valid"), T(N, 3, H, W), T(8, 3, 3, 3))
    assert "kernel 3 is larger than the spatial size H" in msg and "H >= 3" in msg
    c = Constraints().at_least(H, 3).at_least(W, 3)
    y = one("conv2d", od.ConvAttrs(1, "valid"), T(N, 3, H, W), T(8, 3, 3, 3), c=c)
    assert y == T(N, 8, H - 2, W - 2)


def test_conv2d_explicit_padding_strided_symbolic_matches_same():
    y = one("conv2d", od.ConvAttrs(2, ((1, 1), (1, 1))), T(N, 3, H, W), T(8, 3, 3, 3))
    assert y.shape[:2] == (N, 8)
    assert same_dim(y.shape[2], ceildiv(H, 2)) and same_dim(y.shape[3], ceildiv(W, 2))


@pytest.mark.parametrize("padding", ["same", "valid", ((1, 1), (1, 1)), ((0, 2), (3, 1))])
@pytest.mark.parametrize("stride", [1, 2, (2, 3)])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv2d_int_dims_match_jax(padding, stride, k):
    x, w = T(2, 4, 17, 12), T(6, 4, k, k)
    s = (stride, stride) if isinstance(stride, int) else stride
    assert one("conv2d", od.ConvAttrs(stride, padding), x, w).shape == _jax_conv2d(x, w, s, padding)


@pytest.mark.parametrize("padding", ["same", "valid", ((2, 0), (1, 1))])
def test_conv2d_symbolic_agrees_with_jax_at_each_size(padding):
    c = Constraints().at_least(H, 7).at_least(W, 7)
    y = one("conv2d", od.ConvAttrs((2, 3), padding, (2, 1)), T(N, 3, H, W), T(5, 3, 3, 3), c=c)
    for h, wd in [(7, 7), (8, 9), (13, 10), (32, 31), (33, 64)]:
        want = _jax_conv2d(T(2, 3, h, wd), T(5, 3, 3, 3), (2, 3), padding, (2, 1))
        assert at(y, N=2, H=h, W=wd) == want, (padding, h, wd)


def test_conv2d_errors():
    assert "input has 4 channels but the weight expects 3" in err(
        "conv2d", od.ConvAttrs(), T(N, 4, H, W), T(8, 3, 3, 3))
    assert "input (NCHW) must have rank 4, got rank 3" in err("conv2d", od.ConvAttrs(), T(N, 3, H), T(8, 3, 3, 3))
    assert "weight (OIHW) must have rank 4" in err("conv2d", od.ConvAttrs(), T(N, 3, H, W), T(8, 3, 3))
    assert "element types differ" in err("conv2d", od.ConvAttrs(), T(N, 3, H, W), T(8, 3, 3, 3, dtype=i32))
    assert "kernel 5 is larger than the spatial size 4" in err(
        "conv2d", od.ConvAttrs(1, "valid"), T(N, 3, 4, 4), T(8, 3, 5, 5))


def test_depthwise_conv2d():
    y = one("depthwise_conv2d", od.ConvAttrs(2, "same"), T(N, 16, H, W), T(16, 1, 3, 3))
    assert y == T(N, 16, ceildiv(H, 2), ceildiv(W, 2))
    x = T(2, 6, 11, 11)
    got = one("depthwise_conv2d", od.ConvAttrs(2, "valid"), x, T(6, 1, 3, 3)).shape
    want = jax_shape(lambda a, b: lax.conv_general_dilated(a, b, (2, 2), "VALID", feature_group_count=6,
                                                           dimension_numbers=("NCHW", "OIHW", "NCHW")),
                     x, T(6, 1, 3, 3))
    assert got == want


def test_depthwise_conv2d_errors():
    assert "depthwise weight must be [C, 1, kh, kw]" in err(
        "depthwise_conv2d", od.ConvAttrs(), T(N, 16, H, W), T(16, 2, 3, 3))
    assert "input has 8 channels but the depthwise weight has 16" in err(
        "depthwise_conv2d", od.ConvAttrs(), T(N, 8, H, W), T(16, 1, 3, 3))


# ---- dense, bias, norms ----------------------------------------------------------------------

def test_dense():
    assert one("dense", None, T(N, 128), T(128, 10)) == T(N, 10)
    assert one("dense", None, T(N, sym("T"), 64), T(64, 32)) == T(N, sym("T"), 32)
    assert "input has 64 features but the weight expects 128" in err("dense", None, T(N, 64), T(128, 10))
    assert "weight [in, out] must have rank 2" in err("dense", None, T(N, 64), T(64, 10, 1))


def test_bias_add():
    assert one("bias_add", od.AxisAttrs(1), T(N, 8, H, W), T(8)) == T(N, 8, H, W)
    assert one("bias_add", od.AxisAttrs(-1), T(N, 8), T(8)) == T(N, 8)
    assert "bias length vs input dim 1" in err("bias_add", od.AxisAttrs(1), T(N, 8, H, W), T(4))


def test_bias_add_axis_out_of_range_is_an_error():
    # axis 5 on a rank-4 input must not silently wrap around to axis 1
    assert "axis" in err("bias_add", od.AxisAttrs(5), T(N, 8, H, W), T(8))


def test_batch_norm_train_has_three_outputs():
    outs = infer("batch_norm", od.BatchNormAttrs(training=True), (T(N, 8, H, W), T(8), T(8)), NONE)
    assert outs == (T(N, 8, H, W), T(8), T(8))
    outs2 = infer("batch_norm", od.BatchNormAttrs(), (T(N, 8), T(8), T(8), T(8), T(8)), NONE)
    assert len(outs2) == 3


def test_batch_norm_eval_needs_five_inputs():
    a = od.BatchNormAttrs(training=False)
    assert infer("batch_norm", a, (T(N, 8, H, W), T(8), T(8), T(8), T(8)), NONE) == (T(N, 8, H, W),)
    assert "eval-mode batch_norm needs running_mean and running_var" in err("batch_norm", a, T(N, 8, H, W), T(8), T(8))


def test_batch_norm_errors():
    assert "gamma has 4 entries but the input has 8 channels" in err(
        "batch_norm", od.BatchNormAttrs(), T(N, 8, H, W), T(4), T(8))
    assert "running_var has 7 entries" in err(
        "batch_norm", od.BatchNormAttrs(training=False), T(N, 8), T(8), T(8), T(8), T(7))
    assert "input (NC or NCHW) must have rank 2 or 4, got rank 3" in err(
        "batch_norm", od.BatchNormAttrs(), T(N, 8, H), T(8), T(8))


def test_layer_norm():
    assert one("layer_norm", od.LayerNormAttrs(), T(N, sym("T"), 64), T(64), T(64)) == T(N, sym("T"), 64)
    assert "beta has 32 entries but the input's last dim is 64" in err(
        "layer_norm", od.LayerNormAttrs(), T(N, 64), T(64), T(32))


@pytest.mark.parametrize("op, types", [
    ("conv2d", (T(N, ceildiv(H, 4), 8, 8), T(4, floordiv(H, 4), 3, 3))),
    ("dense", (T(N, ceildiv(H, 4)), T(floordiv(H, 4), 10))),
    ("depthwise_conv2d", (T(N, ceildiv(H, 4), 8, 8), T(floordiv(H, 4), 1, 3, 3))),
    ("batch_norm", (T(N, ceildiv(H, 4)), T(floordiv(H, 4)), T(floordiv(H, 4)))),
    ("layer_norm", (T(N, ceildiv(H, 4)), T(floordiv(H, 4)), T(floordiv(H, 4)))),
])
def test_undecidable_channel_checks_are_shape_errors(op, types):
    # ceil(H/4) vs floor(H/4) is only decided by declaring H divisible by 4: every rule must
    # report that as a ShapeError (which the builder gives provenance), never a bare Undecidable.
    a = {"conv2d": od.ConvAttrs(), "depthwise_conv2d": od.ConvAttrs(), "batch_norm": od.BatchNormAttrs(),
         "layer_norm": od.LayerNormAttrs()}.get(op)
    assert "H divisible by 4" in err(op, a, *types)


# ---- pools ---------------------------------------------------------------------------------

def _jax_pool(x, window, stride, padding):
    pad = padding.upper() if isinstance(padding, str) else [(0, 0), (0, 0)] + list(padding)
    return jax_shape(lambda a: lax.reduce_window(a, -jnp.inf, lax.max, (1, 1) + window, (1, 1) + stride, pad), x)


@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
@pytest.mark.parametrize("window, stride, padding", [
    ((2, 2), (2, 2), "valid"), ((3, 3), (2, 2), "valid"), ((3, 3), (2, 2), "same"), ((3, 2), (1, 2), "same"),
    ((3, 3), (2, 2), ((1, 1), (1, 1))), ((2, 3), (3, 1), ((0, 1), (2, 0)))])
def test_pools_match_jax(op, window, stride, padding):
    x = T(2, 3, 15, 10)
    assert one(op, od.PoolAttrs(window, stride, padding), x).shape == _jax_pool(x, window, stride, padding)


def test_pool_symbolic():
    assert one("max_pool", od.PoolAttrs(3, 2, "same"), T(N, 8, H, W)) == T(N, 8, ceildiv(H, 2), ceildiv(W, 2))
    c = Constraints().at_least(H, 2).at_least(W, 2)
    y = one("avg_pool", od.PoolAttrs(2, 2, "valid"), T(N, 8, H, W), c=c)
    assert y == T(N, 8, floordiv(H, 2), floordiv(W, 2))


def test_pool_errors():
    msg = err("max_pool", od.PoolAttrs(3, 2), T(N, 8, H, W))
    assert "pool window 3 is larger than the spatial size H" in msg and "H >= 3" in msg
    assert "input (NCHW) must have rank 4" in err("max_pool", od.PoolAttrs(2, 2), T(N, 8, H))


def test_global_avg_pool():
    assert one("global_avg_pool", None, T(N, 1280, ceildiv(H, 32), ceildiv(W, 32))) == T(N, 1280)
    assert "must have rank 4, got rank 2" in err("global_avg_pool", None, T(N, 8))


# ---- heads -----------------------------------------------------------------------------------

def test_softmax():
    assert one("softmax", od.AxisAttrs(-1), T(N, 10)) == T(N, 10)
    assert "axis 2 out of range for rank 2" in err("softmax", od.AxisAttrs(2), T(N, 10))


def test_softmax_cross_entropy_is_a_scalar():
    y = one("softmax_cross_entropy", od.XentAttrs(0.1), T(N, 10), T(N, dtype=i32))
    assert y == T() and y.rank == 0


def test_softmax_cross_entropy_errors():
    assert "labels must be i32, got f32" in err("softmax_cross_entropy", od.XentAttrs(), T(N, 10), T(N))
    assert "batch of logits vs labels" in err("softmax_cross_entropy", od.XentAttrs(), T(8, 10), T(4, dtype=i32))
    assert "logits [N, classes] or [N, T, classes] must have rank 2 or 3" in err(
        "softmax_cross_entropy", od.XentAttrs(), T(N, 10, 1, 1), T(N, 10, 1, dtype=i32))
    assert "labels [N] must have rank 1" in err("softmax_cross_entropy", od.XentAttrs(), T(N, 10), T(N, 1, dtype=i32))
    assert "labels [N, T] must have rank 2" in err("softmax_cross_entropy", od.XentAttrs(), T(N, 7, 10), T(N, dtype=i32))
    assert "sequence length of logits vs labels: 7 != 6" in err(
        "softmax_cross_entropy", od.XentAttrs(), T(N, 7, 10), T(N, 6, dtype=i32))


def test_softmax_cross_entropy_per_token_is_a_scalar():
    seq = sym("T")
    assert one("softmax_cross_entropy", od.XentAttrs(0.1), T(N, seq, 65), T(N, seq, dtype=i32)) == T()


def test_take_and_scatter_add():
    seq = sym("T")
    assert one("take", None, T(65, 16), T(N, seq, dtype=i32)) == T(N, seq, 16)
    assert one("scatter_add", None, T(65, 16), T(N, seq, dtype=i32), T(N, seq, 16)) == T(65, 16)
    assert "ids must be i32, got f32" in err("take", None, T(65, 16), T(N, seq))
    assert "table [V, D] must have rank 2" in err("take", None, T(65), T(N, dtype=i32))
    assert "updates vs ids' shape plus the operand's row, dim 2: 8 != 16" in err(
        "scatter_add", None, T(65, 16), T(N, seq, dtype=i32), T(N, seq, 8))
    assert "ids must be i32" in err("scatter_add", None, T(65, 16), T(N, seq), T(N, seq, 16))


def test_attention():
    q = T(N, sym("T"), 192)
    assert one("attention", od.AttentionAttrs(3), q, q, q) == q
    assert "model dim 10 must be an int divisible by heads=3" in err(
        "attention", od.AttentionAttrs(3), T(N, 7, 10), T(N, 7, 10), T(N, 7, 10))
    assert "q and k shapes differ" in err("attention", od.AttentionAttrs(2), T(N, 7, 8), T(N, 6, 8), T(N, 7, 8))
    assert "q [N, T, D] must have rank 3" in err("attention", od.AttentionAttrs(2), T(N, 8), T(N, 8), T(N, 8))


# ---- shape primitives ------------------------------------------------------------------------

def test_broadcast_in_dim():
    assert one("broadcast_in_dim", od.BroadcastAttrs((N, 8, H, W), (1,)), T(8)) == T(N, 8, H, W)
    assert one("broadcast_in_dim", od.BroadcastAttrs((N, 4, 3), (0, 2)), T(1, 3)) == T(N, 4, 3)  # size-1 expands
    x = T(1, 3)
    want = jax_shape(lambda a: lax.broadcast_in_dim(a, (5, 4, 3), (0, 2)), x)
    assert one("broadcast_in_dim", od.BroadcastAttrs((5, 4, 3), (0, 2)), x).shape == want


def test_broadcast_in_dim_errors():
    assert "operand dim 1 broadcast to result dim 1: 3 != 4" in err(
        "broadcast_in_dim", od.BroadcastAttrs((N, 4, 3), (0, 1)), T(N, 3))
    assert "must name one result dim per operand dim" in err("broadcast_in_dim", od.BroadcastAttrs((N, 3), (1,)),
                                                             T(N, 3))
    assert "increasing" in err("broadcast_in_dim", od.BroadcastAttrs((3, 3), (1, 0)), T(3, 3))
    assert "below the result rank" in err("broadcast_in_dim", od.BroadcastAttrs((3, 3), (0, 2)), T(3, 3))


def test_reshape():
    assert one("reshape", od.ReshapeAttrs((N, 3 * H * W)), T(N, 3, H, W)) == T(N, 3 * H * W)
    assert one("reshape", od.ReshapeAttrs((6, 4)), T(2, 3, 4)) == T(6, 4)
    assert one("reshape", od.ReshapeAttrs((N, 2, 2 * H)), T(N, 4, H)) == T(N, 2, 2 * H)


def test_reshape_changing_element_count_is_an_error():
    msg = err("reshape", od.ReshapeAttrs((N, 3 * H)), T(N, 3, H, W))
    assert "reshape to [N,3*H] changes the element count" in msg
    assert "changes the element count: 6 != 7" in err("reshape", od.ReshapeAttrs((7,)), T(2, 3))


def test_transpose():
    assert one("transpose", od.TransposeAttrs((0, 2, 3, 1)), T(N, 3, H, W)) == T(N, H, W, 3)
    assert one("transpose", od.TransposeAttrs((2, 0, 1)), T(2, 3, 4)).shape == jax_shape(
        lambda a: lax.transpose(a, (2, 0, 1)), T(2, 3, 4))
    assert "(0, 0, 1) is not a permutation of rank 3" in err("transpose", od.TransposeAttrs((0, 0, 1)), T(2, 3, 4))
    assert "not a permutation of rank 2" in err("transpose", od.TransposeAttrs((0, 1, 2)), T(2, 3))


@pytest.mark.parametrize("start, limit, strides", [((0, 0), (4, 6), (1, 1)), ((1, 2), (4, 6), (2, 3)),
                                                   ((0, 5), (3, 6), (1, 1)), ((2, 0), (2, 6), (1, 4))])
def test_slice_matches_jax(start, limit, strides):
    x = T(4, 6)
    want = jax_shape(lambda a: lax.slice(a, start, limit, strides), x)
    assert one("slice", od.SliceAttrs(start, limit, strides), x).shape == want


def test_slice_symbolic():
    y = one("slice", od.SliceAttrs((0, 1), (N, H), (1, 2)), T(N, H))
    assert y.shape[0] == N and same_dim(y.shape[1], ceildiv(H - 1, 2))
    assert [bind_dim(y.shape[1], {H: h}) for h in (1, 2, 3, 4, 5)] == [0, 1, 1, 2, 2]


def test_slice_errors():
    assert "one entry per dim" in err("slice", od.SliceAttrs((0,), (4,), (1,)), T(4, 6))


@pytest.mark.parametrize("start, limit", [((0, 0), (8, 6)), ((3, 0), (1, 6)), ((0, 7), (4, 9))])
def test_slice_out_of_bounds_is_an_error(start, limit):
    # StableHLO (and lax.slice) require 0 <= start <= limit <= dim
    with pytest.raises(TypeError):
        jax_shape(lambda a: lax.slice(a, start, limit), T(4, 6))
    err("slice", od.SliceAttrs(start, limit, (1, 1)), T(4, 6))


@pytest.mark.parametrize("low, high, interior", [((0, 0), (0, 0), (0, 0)), ((1, 2), (3, 0), (0, 0)),
                                                 ((0, 1), (0, 1), (1, 2)), ((-1, 0), (2, -2), (1, 0))])
def test_pad_matches_jax(low, high, interior):
    x = T(5, 7)
    want = jax_shape(lambda a, v: lax.pad(a, v, list(zip(low, high, interior))), x, T())
    assert one("pad", od.PadAttrs(low, high, interior), x, T()).shape == want


def test_pad_symbolic_and_errors():
    y = one("pad", od.PadAttrs((0, 0, 1, 1), (0, 0, 1, 1), (0, 0, 0, 0)), T(N, 3, H, W), T())
    assert y == T(N, 3, H + 2, W + 2)
    y = one("pad", od.PadAttrs((0,), (0,), (1,)), T(H), T())
    assert y == T(2 * H - 1)
    assert "padding value must have rank 0, got rank 1" in err("pad", od.PadAttrs((0,), (0,), (0,)), T(3), T(1))
    assert "element types differ" in err("pad", od.PadAttrs((0,), (0,), (0,)), T(3), T(dtype=i32))
    assert "one entry per dim" in err("pad", od.PadAttrs((0,), (0,), (0,)), T(3, 3), T())


def test_concatenate():
    assert one("concatenate", od.ConcatAttrs(1), T(N, 3, H), T(N, 5, H)) == T(N, 8, H)
    assert one("concatenate", od.ConcatAttrs(0), T(N, 3), T(N, 3), T(2, 3)) == T(2 * N + 2, 3)
    assert one("concatenate", od.ConcatAttrs(0), T(N, 3)) == T(N, 3)
    xs = (T(2, 3), T(4, 3), T(1, 3))
    assert one("concatenate", od.ConcatAttrs(0), *xs).shape == jax_shape(
        lambda *a: lax.concatenate(a, 0), *xs)


def test_concatenate_errors():
    assert "operand 1 dim 0" in err("concatenate", od.ConcatAttrs(1), T(N, 3), T(4, 5))
    assert "operand 1 has rank 1, operand 0 rank 2" in err("concatenate", od.ConcatAttrs(1), T(N, 3), T(5))
    assert "concatenate dim 2 out of range for rank 2" in err("concatenate", od.ConcatAttrs(2), T(N, 3), T(N, 3))
    assert "element types differ" in err("concatenate", od.ConcatAttrs(1), T(N, 3), T(N, 3, dtype=i32))


@pytest.mark.parametrize("lhs, rhs, dn", [
    ((4, 5), (5, 6), ((), (), (1,), (0,))),
    ((2, 4, 5), (2, 5, 6), ((0,), (0,), (2,), (1,))),
    ((3, 2, 7, 5), (2, 5, 3, 4), ((1, 0), (0, 2), (3,), (1,))),
    ((4, 5), (6,), ((), (), (), ())),
])
def test_dot_general_matches_jax(lhs, rhs, dn):
    lb, rb, lc, rc = dn
    want = jax_shape(lambda a, b: lax.dot_general(a, b, ((lc, rc), (lb, rb))), T(*lhs), T(*rhs))
    got = one("dot_general", od.DotGeneralAttrs(lb, rb, lc, rc), T(*lhs), T(*rhs))
    assert got.shape == want


def test_dot_general_symbolic_and_errors():
    a = od.DotGeneralAttrs((0,), (0,), (2,), (1,))
    assert one("dot_general", a, T(N, sym("T"), 64), T(N, 64, sym("T"))) == T(N, sym("T"), sym("T"))
    assert "contracting dim lhs 2 vs rhs 1" in err("dot_general", a, T(N, 4, 64), T(N, 32, 4))
    assert "batch dim lhs 0 vs rhs 0" in err("dot_general", a, T(N, 4, 64), T(2 * N, 64, 4))
    assert "must pair up" in err("dot_general", od.DotGeneralAttrs((0,), (), (), ()), T(2, 3), T(2, 3))


def test_reduce():
    assert one("reduce", od.ReduceAttrs("sum", (2, 3)), T(N, 8, H, W)) == T(N, 8)
    assert one("reduce", od.ReduceAttrs("max", (0,)), T(N, 8)) == T(8)
    assert one("reduce", od.ReduceAttrs("sum", (1, 3)), T(2, 3, 4, 5)).shape == jax_shape(
        lambda a: jnp.sum(a, axis=(1, 3)), T(2, 3, 4, 5))
    assert "reduce dims (4,) invalid for rank 4" in err("reduce", od.ReduceAttrs("sum", (4,)), T(N, 8, H, W))
    assert "invalid" in err("reduce", od.ReduceAttrs("sum", (1, 1)), T(N, 8))


@pytest.mark.parametrize("window, strides, padding", [
    ((1, 1, 2, 2), (1, 1, 2, 2), ((0, 0),) * 4), ((1, 1, 3, 3), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 1), (1, 1))),
    ((2, 1, 3, 1), (1, 2, 3, 1), ((1, 0), (0, 2), (0, 0), (3, 3)))])
def test_reduce_window_matches_jax(window, strides, padding):
    x = T(3, 4, 11, 9)
    want = jax_shape(lambda a: lax.reduce_window(a, 0.0, lax.add, window, strides, padding), x)
    assert one("reduce_window", od.ReduceWindowAttrs("sum", window, strides, padding), x).shape == want


def test_reduce_window_symbolic_and_errors():
    a = od.ReduceWindowAttrs("max", (1, 1, 3, 3), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = one("reduce_window", a, T(N, 8, H, W))
    assert y.shape[:2] == (N, 8) and same_dim(y.shape[2], ceildiv(H, 2))
    assert "one entry per dim" in err("reduce_window", od.ReduceWindowAttrs("max", (2, 2), (2, 2), ((0, 0),) * 2),
                                      T(N, 8, H, W))
    msg = err("reduce_window", od.ReduceWindowAttrs("max", (1, 5), (1, 1), ((0, 0),) * 2), T(N, H))
    assert "window 5 is larger than the spatial size H" in msg and "H >= 5" in msg


# ---- convolution (the StableHLO op) ----------------------------------------------------------

def _conv_attrs(**kw):
    return od.ConvolutionAttrs(**kw)


def _jax_convolution(x, w, a: od.ConvolutionAttrs):
    return jax_shape(lambda l, r: lax.conv_general_dilated(
        l, r, a.window_strides, [tuple(p) for p in a.padding], lhs_dilation=a.lhs_dilation,
        rhs_dilation=a.rhs_dilation, dimension_numbers=(a.lhs_layout, a.rhs_layout, a.out_layout),
        feature_group_count=a.feature_group_count, batch_group_count=a.batch_group_count), x, w)


def test_convolution_default_layout_symbolic():
    a = _conv_attrs(window_strides=(2, 2), padding=((1, 1), (1, 1)))
    y = one("convolution", a, T(N, 4, H, W), T(8, 4, 3, 3))
    assert y.shape[:2] == (N, 8)
    assert same_dim(y.shape[2], ceildiv(H, 2)) and same_dim(y.shape[3], ceildiv(W, 2))


def test_convolution_nhwc_hwio_layout():
    a = _conv_attrs(window_strides=(2, 1), padding=((1, 1), (0, 0)), lhs_layout="NHWC", rhs_layout="HWIO",
                    out_layout="NHWC")
    x, w = T(2, 9, 8, 4), T(3, 3, 4, 16)
    y = one("convolution", a, x, w)
    assert y.shape == (2, 5, 6, 16) == _jax_convolution(x, w, a)
    ys = one("convolution", a, T(N, H, W, 4), w, c=Constraints().at_least(W, 3))
    assert ys.shape[0] == N and ys.shape[3] == 16
    assert same_dim(ys.shape[1], ceildiv(H, 2)) and ys.shape[2] == W - 2


def test_convolution_mixed_layouts():
    a = _conv_attrs(lhs_layout="NCHW", rhs_layout="HWIO", out_layout="NHWC")
    x, w = T(2, 4, 9, 7), T(3, 2, 4, 5)
    assert one("convolution", a, x, w).shape == _jax_convolution(x, w, a) == (2, 7, 6, 5)


def test_convolution_feature_groups():
    a = _conv_attrs(feature_group_count=4)
    x, w = T(2, 8, 6, 6), T(12, 2, 3, 3)
    assert one("convolution", a, x, w).shape == _jax_convolution(x, w, a) == (2, 12, 4, 4)
    msg = err("convolution", a, T(2, 8, 6, 6), T(12, 4, 3, 3))
    assert "feature_group_count (4)" in msg


def test_convolution_batch_groups():
    a = _conv_attrs(batch_group_count=2)
    x, w = T(4, 3, 6, 6), T(8, 3, 3, 3)
    assert one("convolution", a, x, w).shape == _jax_convolution(x, w, a) == (2, 8, 4, 4)
    msg = err("convolution", a, T(N, 3, 6, 6), w)
    assert "batch_group_count 2" in msg and "N divisible by 2" in msg
    y = one("convolution", a, T(N, 3, 6, 6), w, c=Constraints().divisible_by(N, 2))
    assert y == T(floordiv(N, 2), 8, 4, 4)


def test_convolution_lhs_dilation():
    a = _conv_attrs(lhs_dilation=(2, 3), rhs_dilation=(1, 2), padding=((1, 0), (2, 2)))
    x, w = T(1, 2, 5, 4), T(3, 2, 3, 3)
    assert one("convolution", a, x, w).shape == _jax_convolution(x, w, a)
    ys = one("convolution", _conv_attrs(lhs_dilation=(2, 2), window_strides=(2, 2), padding=((1, 1), (1, 1))),
             T(N, 2, H, W), T(3, 2, 3, 3))
    assert same_dim(ys.shape[2], H) and same_dim(ys.shape[3], W)  # a stride-2 "transposed" conv undone


def test_convolution_1d():
    a = _conv_attrs(window_strides=(2,), padding=((1, 1),), lhs_dilation=(1,), rhs_dilation=(1,),
                    lhs_layout="NCW", rhs_layout="OIW", out_layout="NCW")
    x, w = T(2, 4, 11), T(6, 4, 3)
    assert one("convolution", a, x, w).shape == _jax_convolution(x, w, a) == (2, 6, 6)


def test_convolution_errors():
    # a symbolic kernel (a weight gradient slides the output cotangent over the input) is fine when it fits
    assert infer("convolution", _conv_attrs(), (T(N, 4, H, 5), T(8, 4, H, 3)))[0].shape == (N, 8, 1, 3)
    assert "kernel 3 is larger than the spatial size W" in err("convolution", _conv_attrs(), T(N, 4, H, W),
                                                               T(8, 4, H, 3))
    assert "do not match ranks" in err("convolution", _conv_attrs(), T(N, 4, H), T(8, 4, 3, 3))
    assert "need 2 entries each" in err("convolution", _conv_attrs(window_strides=(1,)), T(N, 4, H, W), T(8, 4, 3, 3))
    assert "element types differ" in err("convolution", _conv_attrs(), T(N, 4, 8, 8), T(8, 4, 3, 3, dtype=i32))
    assert "kernel 3 is larger than the spatial size 2" in err("convolution", _conv_attrs(), T(1, 4, 2, 8),
                                                               T(8, 4, 3, 3))


@pytest.mark.parametrize("kw, jax_words", [(dict(feature_group_count=2), "multiple of feature_group_count"),
                                           (dict(batch_group_count=2), "multiple of batch_group_count")])
def test_convolution_output_features_must_divide_by_group_count(kw, jax_words):
    # StableHLO requires the kernel's output features to divide by both group counts; JAX rejects these.
    a = _conv_attrs(**kw)
    x = T(4, 4, 8, 8)
    w = T(3, 2 if "feature_group_count" in kw else 4, 3, 3)
    with pytest.raises(ValueError, match=jax_words):
        _jax_convolution(x, w, a)
    err("convolution", a, x, w)


_LAYOUTS = [("NCHW", "OIHW", "NCHW"), ("NHWC", "HWIO", "NHWC"), ("NCHW", "HWIO", "NHWC"), ("NHWC", "OIHW", "NCHW")]


@st.composite
def _conv_configs(draw):
    lhs_l, rhs_l, out_l = draw(st.sampled_from(_LAYOUTS))
    fgc = draw(st.sampled_from([1, 1, 2, 3]))
    bgc = 1 if fgc > 1 else draw(st.sampled_from([1, 1, 2]))
    n = bgc * draw(st.integers(1, 3))
    cin = fgc * draw(st.integers(1, 3))
    cout = fgc * bgc * draw(st.integers(1, 3))
    k = [draw(st.integers(1, 4)) for _ in range(2)]
    strides = tuple(draw(st.integers(1, 3)) for _ in range(2))
    ld = tuple(draw(st.integers(1, 3)) for _ in range(2))
    rd = tuple(draw(st.integers(1, 3)) for _ in range(2))
    pad = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
    sizes = []
    for i in range(2):
        eff = (k[i] - 1) * rd[i] + 1
        need = max(1, -(-(eff - pad[i][0] - pad[i][1] - 1) // ld[i]) + 1)  # smallest size whose window fits
        sizes.append(draw(st.integers(need, need + 12)))
    xd = {"N": n, "C": cin, "H": sizes[0], "W": sizes[1]}
    wd = {"O": cout, "I": cin // fgc, "H": k[0], "W": k[1]}
    x = T(*(xd[ch] for ch in lhs_l))
    w = T(*(wd[ch] for ch in rhs_l))
    a = _conv_attrs(window_strides=strides, padding=pad, lhs_dilation=ld, rhs_dilation=rd, feature_group_count=fgc,
                    batch_group_count=bgc, lhs_layout=lhs_l, rhs_layout=rhs_l, out_layout=out_l)
    return a, x, w


@settings(max_examples=60, deadline=None)
@given(cfg=_conv_configs())
def test_random_convolutions_match_jax(cfg):
    a, x, w = cfg
    assert one("convolution", a, x, w).shape == _jax_convolution(x, w, a), a


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 5), s=st.integers(1, 3), d=st.integers(1, 3), lo=st.integers(0, 3), hi=st.integers(0, 3),
       h=st.integers(1, 40))
def test_symbolic_convolution_binds_to_the_concrete_shape(k, s, d, lo, hi, h):
    eff = (k - 1) * d + 1
    c = Constraints().at_least(H, max(1, eff - lo - hi))
    a = _conv_attrs(window_strides=(s, 1), padding=((lo, hi), (0, 0)), rhs_dilation=(d, 1))
    y = one("convolution", a, T(N, 2, H, 4), T(3, 2, k, 1), c=c)
    if h < c.range(H)[0]:
        return
    concrete = one("convolution", a, T(2, 2, h, 4), T(3, 2, k, 1))
    assert at(y, N=2, H=h) == concrete.shape == _jax_convolution(T(2, 2, h, 4), T(3, 2, k, 1), a)


def test_infer_returns_a_tuple_of_types_and_is_repeatable():
    a = od.ConvAttrs(2, "same")
    t1 = infer("conv2d", a, (T(N, 3, H, W), T(8, 3, 3, 3)), NONE)
    t2 = infer("conv2d", a, (T(N, 3, H, W), T(8, 3, 3, 3)), NONE)
    assert isinstance(t1, tuple) and t1 == t2
    assert t1 == (T(N, 8, ceildiv(H, 2), ceildiv(W, 2)),)


def test_infer_is_keyed_on_constraints():
    a = od.ConvAttrs(1, "valid")
    with pytest.raises(ShapeError):
        infer("conv2d", a, (T(N, 3, H, W), T(8, 3, 3, 3)), NONE)
    c = Constraints().at_least(H, 3).at_least(W, 3)
    assert infer("conv2d", a, (T(N, 3, H, W), T(8, 3, 3, 3)), c) == (T(N, 8, H - 2, W - 2),)
