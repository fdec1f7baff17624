"""Every op gir knows: its attribute class and arity. Stages key their rule tables by these names.

Primitive ops mirror StableHLO ops one to one (elementwise ops need equal shapes,
broadcasting is explicit). Layer ops keep graphs readable and carry a
decomposition into primitives that the lowering applies.
"""
from __future__ import annotations

from typing import Union

import attrs
import sympy

from gir.ir.dtypes import DType
from gir.ir.ops import register_op
from gir.ir.types import Dim, TensorType, normalize_dim


def _pair(v) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or not all(isinstance(i, int) and i >= 1 for i in t):
        raise ValueError(f"expected a positive int or a pair of positive ints, got {v!r}")
    return t  # type: ignore[return-value]


def _ints(v) -> tuple[int, ...]:
    return tuple(int(i) for i in v)


def _dims(v) -> tuple[Dim, ...]:
    return tuple(normalize_dim(d) for d in v)


def _scalar(v):
    """A constant's value: Python numbers stay; a sympy number becomes one; a symbolic expression stays."""
    if isinstance(v, sympy.Basic):
        if v.free_symbols:
            return v
        return int(v) if v.is_Integer else float(v)
    return v


def _padding(v) -> Union[str, tuple[tuple[int, int], tuple[int, int]]]:
    """'same', 'valid', or explicit ((top, bottom), (left, right))."""
    if isinstance(v, str):
        if v not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid' or ((top, bottom), (left, right)), got {v!r}")
        return v
    pads = tuple((int(lo), int(hi)) for lo, hi in v)
    if len(pads) != 2 or any(p < 0 for pair in pads for p in pair):
        raise ValueError(f"explicit padding must be two non-negative (lo, hi) pairs, got {v!r}")
    return pads  # type: ignore[return-value]


def _pads(v) -> tuple[tuple[Dim, Dim], ...]:
    return tuple((normalize_dim(lo), normalize_dim(hi)) for lo, hi in v)


COMPARE_DIRECTIONS = ("EQ", "NE", "LT", "LE", "GT", "GE")
REDUCE_KINDS = ("sum", "max", "min")


# ---- attribute classes -------------------------------------------------------------------

@attrs.frozen
class ConvAttrs:
    """conv2d / depthwise_conv2d: NCHW input, OIHW kernel, a padding policy."""
    stride: tuple[int, int] = attrs.field(default=(1, 1), converter=_pair)
    padding: Union[str, tuple] = attrs.field(default="same", converter=_padding)
    dilation: tuple[int, int] = attrs.field(default=(1, 1), converter=_pair)


@attrs.frozen
class PoolAttrs:
    window: tuple[int, int] = attrs.field(converter=_pair)
    stride: tuple[int, int] = attrs.field(converter=_pair)
    padding: Union[str, tuple] = attrs.field(default="valid", converter=_padding)


@attrs.frozen
class BatchNormAttrs:
    """training=True: batch statistics, outputs (y, batch_mean, batch_var); else running stats, outputs y."""
    eps: float = 1e-5
    momentum: float = 0.1
    training: bool = True


@attrs.frozen
class LayerNormAttrs:
    eps: float = 1e-5


@attrs.frozen
class AxisAttrs:
    axis: int


@attrs.frozen
class XentAttrs:
    label_smoothing: float = attrs.field(default=0.0)

    @label_smoothing.validator
    def _check(self, _, v):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {v}")


@attrs.frozen
class AttentionAttrs:
    """`causal`: position i attends to positions <= i only (a language model's mask, built in the lowering)."""
    heads: int = attrs.field(validator=attrs.validators.gt(0))
    causal: bool = False


@attrs.frozen
class RandomAttrs:
    """`shape` of random bits; `salt` tells apart the generators that share a key (one per layer)."""
    shape: tuple[Dim, ...] = attrs.field(converter=_dims)
    salt: int = attrs.field(validator=[attrs.validators.instance_of(int), attrs.validators.in_(range(2**31))])


@attrs.frozen
class ConvolutionAttrs:
    """The StableHLO convolution: explicit padding, dilations, group counts, dimension numbers."""
    window_strides: tuple[int, ...] = attrs.field(default=(1, 1), converter=_ints)
    padding: tuple[tuple[Dim, Dim], ...] = attrs.field(default=((0, 0), (0, 0)), converter=_pads)
    lhs_dilation: tuple[int, ...] = attrs.field(default=(1, 1), converter=_ints)
    rhs_dilation: tuple[int, ...] = attrs.field(default=(1, 1), converter=_ints)
    feature_group_count: int = 1
    batch_group_count: int = 1
    lhs_layout: str = "NCHW"   # batch, feature, spatial...
    rhs_layout: str = "OIHW"   # out-feature, in-feature, spatial...
    out_layout: str = "NCHW"


@attrs.frozen
class DotGeneralAttrs:
    lhs_batch: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    rhs_batch: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    lhs_contract: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    rhs_contract: tuple[int, ...] = attrs.field(default=(), converter=_ints)


@attrs.frozen
class ReduceAttrs:
    kind: str = attrs.field(validator=attrs.validators.in_(REDUCE_KINDS))
    dims: tuple[int, ...] = attrs.field(converter=_ints)


@attrs.frozen
class ReduceWindowAttrs:
    kind: str = attrs.field(validator=attrs.validators.in_(REDUCE_KINDS))
    window: tuple[int, ...] = attrs.field(converter=_ints)
    strides: tuple[int, ...] = attrs.field(converter=_ints)
    padding: tuple[tuple[Dim, Dim], ...] = attrs.field(converter=_pads)


@attrs.frozen
class CompareAttrs:
    direction: str = attrs.field(validator=attrs.validators.in_(COMPARE_DIRECTIONS))


@attrs.frozen
class ConvertAttrs:
    dtype: DType


@attrs.frozen
class ConstantAttrs:
    """A splat constant: every element equals `value`. A value may be a sympy expression of dim
    symbols (e.g. 1/(N*H*W) for a mean); specialization turns it into a number."""
    value: Union[float, int, bool, sympy.Expr] = attrs.field(converter=_scalar)
    type: TensorType


@attrs.frozen
class IotaAttrs:
    dim: int
    type: TensorType


@attrs.frozen
class BroadcastAttrs:
    """broadcast_in_dim: operand dim i goes to result dim dims[i]."""
    shape: tuple[Dim, ...] = attrs.field(converter=_dims)
    dims: tuple[int, ...] = attrs.field(converter=_ints)


@attrs.frozen
class ReshapeAttrs:
    shape: tuple[Dim, ...] = attrs.field(converter=_dims)


@attrs.frozen
class TransposeAttrs:
    perm: tuple[int, ...] = attrs.field(converter=_ints)


@attrs.frozen
class ReverseAttrs:
    dims: tuple[int, ...] = attrs.field(converter=_ints)


@attrs.frozen
class SliceAttrs:
    start: tuple[Dim, ...] = attrs.field(converter=_dims)
    limit: tuple[Dim, ...] = attrs.field(converter=_dims)
    strides: tuple[int, ...] = attrs.field(converter=_ints)


@attrs.frozen
class PadAttrs:
    """pad(operand, padding_value): low/high edge padding and interior padding per dim."""
    low: tuple[Dim, ...] = attrs.field(converter=_dims)
    high: tuple[Dim, ...] = attrs.field(converter=_dims)
    interior: tuple[int, ...] = attrs.field(converter=_ints)


@attrs.frozen
class ConcatAttrs:
    dim: int


# ---- the registry ------------------------------------------------------------------------

ELEMENTWISE_UNARY = ("negate", "exp", "log", "tanh", "logistic", "sqrt", "rsqrt", "abs", "sine", "cosine")
ELEMENTWISE_BINARY = ("add", "subtract", "multiply", "divide", "maximum", "minimum")
ELEMENTWISE_BITWISE = ("xor", "or", "shift_left", "shift_right_logical")
"""Integer bit operations (i32 operands read as 32 raw bits): what a counter-based random generator is made of."""
ACTIVATIONS = ("relu", "relu6", "swish", "hard_swish", "hard_sigmoid", "gelu")

for _name in ELEMENTWISE_UNARY:
    register_op(_name, None, 1, "primitive", f"elementwise {_name}")
for _name in ELEMENTWISE_BINARY:
    register_op(_name, None, 2, "primitive", f"elementwise {_name}; operands have equal types")

for _name in ELEMENTWISE_BITWISE:
    register_op(_name, None, 2, "primitive", f"elementwise {_name} of integer bits; operands have equal types")
register_op("compare", CompareAttrs, 2, "primitive", "elementwise comparison; i1 result")
register_op("select", None, 3, "primitive", "select(pred, on_true, on_false), elementwise")
register_op("clamp", None, 3, "primitive", "clamp(min, x, max); min/max are scalars or x's shape")
register_op("convert", ConvertAttrs, 1, "primitive", "element type conversion")
register_op("constant", ConstantAttrs, 0, "primitive", "a splat constant")
register_op("iota", IotaAttrs, 0, "primitive", "0, 1, 2, ... along one dim")
register_op("broadcast_in_dim", BroadcastAttrs, 1, "primitive", "explicit broadcast")
register_op("reshape", ReshapeAttrs, 1, "primitive", "same elements, new shape")
register_op("transpose", TransposeAttrs, 1, "primitive", "permute dims")
register_op("reverse", ReverseAttrs, 1, "primitive", "reverse along dims")
register_op("optimization_barrier", None, 1, "primitive", "x itself, materialized: the compiler may not fuse "
            "across it (a matmul operand kept in the order it was built)")
register_op("slice", SliceAttrs, 1, "primitive", "static strided slice")
register_op("pad", PadAttrs, 2, "primitive", "pad(operand, scalar padding value)")
register_op("concatenate", ConcatAttrs, (1, None), "primitive", "join along one dim")
register_op("dot_general", DotGeneralAttrs, 2, "primitive", "batched contraction")
register_op("convolution", ConvolutionAttrs, 2, "primitive", "general convolution")
register_op("reduce", ReduceAttrs, 1, "primitive", "reduce over dims with sum, max or min")
register_op("reduce_window", ReduceWindowAttrs, 1, "primitive", "windowed reduction (pooling)")
register_op("take", None, 2, "primitive", "take(table[V, D], ids[...] i32) -> [..., D]: rows of a table "
            "(stablehlo.gather; an id outside [0, V) is clamped into it)")
register_op("scatter_add", None, 3, "primitive", "scatter_add(operand[V, D], ids[...] i32, updates[..., D]): "
            "operand with each update row added at row ids[...] (stablehlo.scatter; an id outside [0, V) is dropped)")

register_op("conv2d", ConvAttrs, 2, "layer", "2-D convolution x[N,C,H,W] * w[O,C,kh,kw]")
register_op("depthwise_conv2d", ConvAttrs, 2, "layer", "per-channel convolution x[N,C,H,W] * w[C,1,kh,kw] (no channel multiplier)")
register_op("dense", None, 2, "layer", "x[..., I] @ w[I, O]")
register_op("bias_add", AxisAttrs, 2, "layer", "x + b broadcast along `axis`")
register_op("batch_norm", BatchNormAttrs, (3, 5), "layer",
            "batch norm over N,H,W (NCHW) or N (NC); inputs x, gamma, beta[, running_mean, running_var]")
register_op("layer_norm", LayerNormAttrs, 3, "layer", "normalize the last axis; inputs x, gamma, beta")
for _name in ACTIVATIONS:
    register_op(_name, None, 1, "layer", f"{_name} activation")
register_op("max_pool", PoolAttrs, 1, "layer", "max pooling over H, W")
register_op("avg_pool", PoolAttrs, 1, "layer", "average pooling over H, W (padding not counted)")
register_op("global_avg_pool", None, 1, "layer", "mean over H, W: [N,C,H,W] -> [N,C]")
register_op("softmax", AxisAttrs, 1, "layer", "softmax along one axis")
register_op("softmax_cross_entropy", XentAttrs, 2, "layer",
            "mean label-smoothed cross-entropy of logits[..., K] against int labels[...] (per example [N] or "
            "per token [N, T])")
register_op("random_bits", RandomAttrs, 2, "layer",
            "32 random bits per element (i32), threefry2x32 keyed by two i32 scalars; element i of the flattened "
            "shape is word 0 of the block with counter (i, salt)")
register_op("attention", AttentionAttrs, 3, "layer",
            "multi-head scaled dot-product attention of q, k, v [N,T,D], causal or not")
