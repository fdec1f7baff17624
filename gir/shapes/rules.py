"""Shape rules, one per op: from attributes and input types to output types, checking as they go."""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import sympy

from gir.ir import opdefs as od
from gir.ir.dtypes import DType
from gir.ir.types import Dim, TensorType, format_dim, normalize_dim
from gir.shapes.dims import (Constraints, Undecidable, ceildiv, differ_at, dims_equal, floordiv, min_value,
                             smallest_fitting)
from gir.shapes.errors import ShapeError

Types = Sequence[TensorType]


class ShapeCtx:
    """What a rule needs besides its inputs: the constraints that decide dim facts."""

    def __init__(self, constraints: Constraints, names: Sequence[str], types: Types):
        self.c = constraints
        self.named = tuple(zip(names, types))

    def fail(self, message: str) -> ShapeError:
        return ShapeError(message, self.named)

    def eq(self, a: Dim, b: Dim, what: str) -> None:
        """Requires a == b for all allowed symbol values; `what` says which dims these are."""
        try:
            ok = dims_equal(a, b, self.c)
        except Undecidable as e:
            raise self.fail(f"{what}: {e}") from None
        if not ok:
            raise self.fail(f"{what}: {format_dim(a)} != {format_dim(b)}{_witness(a, b, self.c)}")

    def equal(self, a: Dim, b: Dim) -> bool:
        """Whether a == b; an undecidable comparison becomes a ShapeError naming the fix."""
        try:
            return dims_equal(a, b, self.c)
        except Undecidable as e:
            raise self.fail(str(e)) from None

    def same_shape(self, a: TensorType, b: TensorType, what: str) -> None:
        if a.rank != b.rank:
            raise self.fail(f"{what}: rank {a.rank} != rank {b.rank}")
        for i, (x, y) in enumerate(zip(a.shape, b.shape)):
            self.eq(x, y, f"{what}, dim {i}")

    def same_dtype(self, *ts: TensorType) -> DType:
        if len({t.dtype for t in ts}) > 1:
            raise self.fail(f"element types differ: {', '.join(str(t.dtype) for t in ts)}")
        return ts[0].dtype

    def rank(self, t: TensorType, r: int | tuple[int, ...], what: str) -> None:
        allowed = (r,) if isinstance(r, int) else r
        if t.rank not in allowed:
            raise self.fail(f"{what} must have rank {' or '.join(map(str, allowed))}, got rank {t.rank}")

    def fits(self, size: Dim, window: int, what: str) -> None:
        """Requires a window of `window` to fit into `size` for every allowed symbol value."""
        lowest = min_value(size, self.c)
        if lowest >= window:
            return
        if isinstance(size, int):
            raise self.fail(f"{what} {window} is larger than the spatial size {size}")
        at = {s: self.c.smallest(s) for s in size.free_symbols}
        hint = smallest_fitting(size, window, self.c)
        fix = (" declare " + " and ".join(f"{s} >= {v}" for s, v in sorted(hint.items(), key=str))
               + " (the smallest that fits)") if hint else ""
        raise self.fail(f"{what} {window} is larger than the spatial size {format_dim(size)}, which is {lowest} at "
                        f"{', '.join(f'{s}={v}' for s, v in sorted(at.items(), key=str))};{fix}")


def _witness(a: Dim, b: Dim, c: Constraints) -> str:
    at = differ_at(a, b, c)
    if not at:
        return ""
    return " (e.g. at " + ", ".join(f"{s}={v}" for s, v in sorted(at.items(), key=str)) + ")"


Rule = Callable[..., "TensorType | tuple[TensorType, ...]"]
SHAPE_RULES: dict[str, Rule] = {}
INPUT_NAMES: dict[str, tuple[str, ...]] = {}


def shape_rule(*ops: str, inputs: tuple[str, ...] = ()):
    """Registers `fn(ctx, attrs, *input_types)` as the shape rule of each op; `inputs` names the
    operands for error messages."""
    def deco(fn: Rule) -> Rule:
        for op in ops:
            SHAPE_RULES[op] = fn
            INPUT_NAMES[op] = inputs
        return fn
    return deco


# ---- primitives --------------------------------------------------------------------------

@shape_rule(*od.ELEMENTWISE_UNARY, inputs=("x",))
def _unary(ctx: ShapeCtx, a: Any, x: TensorType) -> TensorType:
    if not x.dtype.is_float:
        raise ctx.fail(f"needs a float operand, got {x.dtype}")
    return x


@shape_rule(*od.ELEMENTWISE_BINARY, inputs=("lhs", "rhs"))
def _binary(ctx: ShapeCtx, a: Any, x: TensorType, y: TensorType) -> TensorType:
    ctx.same_shape(x, y, "operand shapes differ")
    ctx.same_dtype(x, y)
    return x


@shape_rule(*od.ELEMENTWISE_BITWISE, inputs=("lhs", "rhs"))
def _bitwise(ctx: ShapeCtx, a: Any, x: TensorType, y: TensorType) -> TensorType:
    ctx.same_shape(x, y, "operand shapes differ")
    ctx.same_dtype(x, y)
    if x.dtype != DType.i32:
        raise ctx.fail(f"needs i32 operands, got {x.dtype}")
    return x


@shape_rule("compare", inputs=("lhs", "rhs"))
def _compare(ctx: ShapeCtx, a: od.CompareAttrs, x: TensorType, y: TensorType) -> TensorType:
    ctx.same_shape(x, y, "operand shapes differ")
    ctx.same_dtype(x, y)
    return x.with_dtype(DType.i1)


@shape_rule("select", inputs=("pred", "on_true", "on_false"))
def _select(ctx: ShapeCtx, a: Any, p: TensorType, x: TensorType, y: TensorType) -> TensorType:
    if p.dtype != DType.i1:
        raise ctx.fail(f"predicate must be i1, got {p.dtype}")
    ctx.same_shape(x, y, "branch shapes differ")
    ctx.same_dtype(x, y)
    if p.rank:
        ctx.same_shape(p, x, "predicate and branch shapes differ")
    return x


@shape_rule("clamp", inputs=("min", "x", "max"))
def _clamp(ctx: ShapeCtx, a: Any, lo: TensorType, x: TensorType, hi: TensorType) -> TensorType:
    for bound in (lo, hi):
        if bound.rank:
            ctx.same_shape(bound, x, "clamp bound must be a scalar or x's shape")
    ctx.same_dtype(lo, x, hi)
    return x


@shape_rule("convert", inputs=("x",))
def _convert(ctx: ShapeCtx, a: od.ConvertAttrs, x: TensorType) -> TensorType:
    return x.with_dtype(a.dtype)


@shape_rule("constant")
def _constant(ctx: ShapeCtx, a: od.ConstantAttrs) -> TensorType:
    return a.type


@shape_rule("iota")
def _iota(ctx: ShapeCtx, a: od.IotaAttrs) -> TensorType:
    if not 0 <= a.dim < a.type.rank:
        raise ctx.fail(f"iota dim {a.dim} out of range for rank {a.type.rank}")
    return a.type


@shape_rule("broadcast_in_dim", inputs=("x",))
def _broadcast(ctx: ShapeCtx, a: od.BroadcastAttrs, x: TensorType) -> TensorType:
    if len(a.dims) != x.rank:
        raise ctx.fail(f"broadcast dims {a.dims} must name one result dim per operand dim ({x.rank})")
    if any(d >= len(a.shape) for d in a.dims) or list(a.dims) != sorted(set(a.dims)):
        raise ctx.fail(f"broadcast dims {a.dims} must be increasing and below the result rank {len(a.shape)}")
    for i, d in enumerate(a.dims):
        if x.shape[i] != 1:
            ctx.eq(x.shape[i], a.shape[d], f"operand dim {i} broadcast to result dim {d}")
    return TensorType(a.shape, x.dtype)


@shape_rule("reshape", inputs=("x",))
def _reshape(ctx: ShapeCtx, a: od.ReshapeAttrs, x: TensorType) -> TensorType:
    out = TensorType(a.shape, x.dtype)
    ctx.eq(x.num_elements(), out.num_elements(), f"reshape to {out.short()} changes the element count")
    return out


@shape_rule("transpose", inputs=("x",))
def _transpose(ctx: ShapeCtx, a: od.TransposeAttrs, x: TensorType) -> TensorType:
    if sorted(a.perm) != list(range(x.rank)):
        raise ctx.fail(f"{a.perm} is not a permutation of rank {x.rank}")
    return x.with_shape(x.shape[p] for p in a.perm)


@shape_rule("reverse", inputs=("x",))
def _reverse(ctx: ShapeCtx, a: od.ReverseAttrs, x: TensorType) -> TensorType:
    if any(not 0 <= d < x.rank for d in a.dims):
        raise ctx.fail(f"reverse dims {a.dims} out of range for rank {x.rank}")
    return x


@shape_rule("optimization_barrier", inputs=("x",))
def _optimization_barrier(ctx: ShapeCtx, a: None, x: TensorType) -> TensorType:
    return x


@shape_rule("slice", inputs=("x",))
def _slice(ctx: ShapeCtx, a: od.SliceAttrs, x: TensorType) -> TensorType:
    if not len(a.start) == len(a.limit) == len(a.strides) == x.rank:
        raise ctx.fail("slice start/limit/strides must each have one entry per dim")
    for i, (lo, hi, st, d) in enumerate(zip(a.start, a.limit, a.strides, x.shape)):
        if st < 1 or min_value(lo, ctx.c) < 0 or min_value(normalize_dim(sympy.sympify(hi - lo)), ctx.c) < 0 \
                or min_value(normalize_dim(sympy.sympify(d - hi)), ctx.c) < 0:
            raise ctx.fail(f"slice of dim {i} needs 0 <= start <= limit <= {format_dim(d)} and stride >= 1, got "
                           f"start {format_dim(lo)}, limit {format_dim(hi)}, stride {st}")
    return x.with_shape(ceildiv(hi - lo, s) for lo, hi, s in zip(a.start, a.limit, a.strides))


@shape_rule("pad", inputs=("x", "padding_value"))
def _pad(ctx: ShapeCtx, a: od.PadAttrs, x: TensorType, v: TensorType) -> TensorType:
    ctx.rank(v, 0, "padding value")
    ctx.same_dtype(x, v)
    if not len(a.low) == len(a.high) == len(a.interior) == x.rank:
        raise ctx.fail("pad low/high/interior must each have one entry per dim")
    return x.with_shape(lo + hi + d + (d - 1) * i for d, lo, hi, i in zip(x.shape, a.low, a.high, a.interior))


@shape_rule("concatenate", inputs=())
def _concat(ctx: ShapeCtx, a: od.ConcatAttrs, *xs: TensorType) -> TensorType:
    first = xs[0]
    if not 0 <= a.dim < first.rank:
        raise ctx.fail(f"concatenate dim {a.dim} out of range for rank {first.rank}")
    total: Dim = 0
    for k, t in enumerate(xs):
        if t.rank != first.rank:
            raise ctx.fail(f"operand {k} has rank {t.rank}, operand 0 rank {first.rank}")
        for i in range(first.rank):
            if i != a.dim:
                ctx.eq(t.shape[i], first.shape[i], f"operand {k} dim {i}")
        total = total + t.shape[a.dim]
    ctx.same_dtype(*xs)
    return first.with_shape(total if i == a.dim else d for i, d in enumerate(first.shape))


@shape_rule("dot_general", inputs=("lhs", "rhs"))
def _dot_general(ctx: ShapeCtx, a: od.DotGeneralAttrs, x: TensorType, y: TensorType) -> TensorType:
    if len(a.lhs_batch) != len(a.rhs_batch) or len(a.lhs_contract) != len(a.rhs_contract):
        raise ctx.fail("batch and contracting dims must pair up")
    for i, j in zip(a.lhs_batch, a.rhs_batch):
        ctx.eq(x.shape[i], y.shape[j], f"batch dim lhs {i} vs rhs {j}")
    for i, j in zip(a.lhs_contract, a.rhs_contract):
        ctx.eq(x.shape[i], y.shape[j], f"contracting dim lhs {i} vs rhs {j}")
    ctx.same_dtype(x, y)
    lfree = [d for i, d in enumerate(x.shape) if i not in a.lhs_batch + a.lhs_contract]
    rfree = [d for i, d in enumerate(y.shape) if i not in a.rhs_batch + a.rhs_contract]
    return TensorType([x.shape[i] for i in a.lhs_batch] + lfree + rfree, x.dtype)


def _window_out(ctx: ShapeCtx, size: Dim, window: Dim, stride: int, lo: Dim, hi: Dim, what: str,
                dilation: int = 1, base_dilation: int = 1) -> Dim:
    eff = normalize_dim(sympy.sympify((window - 1) * dilation + 1))
    padded = normalize_dim(sympy.sympify((size - 1) * base_dilation + 1 + lo + hi))
    if isinstance(eff, int):
        ctx.fits(padded, eff, what)
    else:  # a symbolic window (a weight gradient slides the output cotangent): compare the difference
        ctx.fits(normalize_dim(sympy.sympify(padded - eff + 1)), 1, what)
    return floordiv(normalize_dim(sympy.sympify(padded - eff)), stride) + 1


@shape_rule("convolution", inputs=("lhs", "rhs"))
def _convolution(ctx: ShapeCtx, a: od.ConvolutionAttrs, x: TensorType, w: TensorType) -> TensorType:
    nsp = len(a.lhs_layout) - 2
    if not (x.rank == w.rank == nsp + 2 and len(a.rhs_layout) == len(a.out_layout) == nsp + 2):
        raise ctx.fail(f"layouts {a.lhs_layout}/{a.rhs_layout}/{a.out_layout} do not match ranks {x.rank}/{w.rank}")
    if not (len(a.window_strides) == len(a.padding) == len(a.lhs_dilation) == len(a.rhs_dilation) == nsp):
        raise ctx.fail(f"strides, padding and dilations need {nsp} entries each")
    ctx.same_dtype(x, w)
    xd = {ch: x.shape[i] for i, ch in enumerate(a.lhs_layout)}
    wd = {ch: w.shape[i] for i, ch in enumerate(a.rhs_layout)}
    batch, feat, out_feat = xd["N"], xd["C"], wd["O"]
    spatial_x = [d for ch, d in zip(a.lhs_layout, x.shape) if ch not in "NC"]
    spatial_w = [d for ch, d in zip(a.rhs_layout, w.shape) if ch not in "OI"]
    ctx.eq(wd["I"] * a.feature_group_count, feat,
           f"kernel input features x feature_group_count ({a.feature_group_count}) vs input features")
    for name, count in (("feature_group_count", a.feature_group_count), ("batch_group_count", a.batch_group_count)):
        if count < 1 or (isinstance(out_feat, int) and out_feat % count):
            raise ctx.fail(f"kernel output features {format_dim(out_feat)} must divide by {name} {count}")
    if a.batch_group_count > 1:
        ctx.eq(floordiv(batch, a.batch_group_count) * a.batch_group_count, batch,
               f"batch must divide by batch_group_count {a.batch_group_count}")
        batch = floordiv(batch, a.batch_group_count)
    spatial = []
    for i in range(nsp):
        lo, hi = a.padding[i]
        spatial.append(_window_out(ctx, spatial_x[i], spatial_w[i], a.window_strides[i], lo, hi, "kernel",
                                   a.rhs_dilation[i], a.lhs_dilation[i]))
    by = {"N": batch, "C": out_feat}
    it = iter(spatial)
    return TensorType([by[ch] if ch in by else next(it) for ch in a.out_layout], x.dtype)


@shape_rule("reduce", inputs=("x",))
def _reduce(ctx: ShapeCtx, a: od.ReduceAttrs, x: TensorType) -> TensorType:
    if any(not 0 <= d < x.rank for d in a.dims) or len(set(a.dims)) != len(a.dims):
        raise ctx.fail(f"reduce dims {a.dims} invalid for rank {x.rank}")
    return x.with_shape(d for i, d in enumerate(x.shape) if i not in a.dims)


@shape_rule("reduce_window", inputs=("x",))
def _reduce_window(ctx: ShapeCtx, a: od.ReduceWindowAttrs, x: TensorType) -> TensorType:
    if not len(a.window) == len(a.strides) == len(a.padding) == x.rank:
        raise ctx.fail("reduce_window window/strides/padding need one entry per dim")
    return x.with_shape(_window_out(ctx, d, w, s, lo, hi, "window")
                        for d, w, s, (lo, hi) in zip(x.shape, a.window, a.strides, a.padding))


# ---- layer ops ---------------------------------------------------------------------------

def spatial_out(ctx: ShapeCtx, size: Dim, k: int, stride: int, dilation: int, padding, axis: int, what: str) -> Dim:
    """Output size of one spatial dim under a padding policy: 'same' gives ceil(size/stride)."""
    if padding == "same":
        return ceildiv(size, stride)
    lo, hi = (0, 0) if padding == "valid" else padding[axis]
    return _window_out(ctx, size, k, stride, lo, hi, what, dilation)


@shape_rule("conv2d", inputs=("input", "weight"))
def _conv2d(ctx: ShapeCtx, a: od.ConvAttrs, x: TensorType, w: TensorType) -> TensorType:
    ctx.rank(x, 4, "input (NCHW)")
    ctx.rank(w, 4, "weight (OIHW)")
    ctx.same_dtype(x, w)
    n, c, h, wd = x.shape
    o, i, kh, kw = w.shape
    if not ctx.equal(c, i):
        raise ctx.fail(f"input has {format_dim(c)} channels but the weight expects {format_dim(i)}")
    return TensorType((n, o, spatial_out(ctx, h, kh, a.stride[0], a.dilation[0], a.padding, 0, "kernel"),
                       spatial_out(ctx, wd, kw, a.stride[1], a.dilation[1], a.padding, 1, "kernel")), x.dtype)


@shape_rule("depthwise_conv2d", inputs=("input", "weight"))
def _depthwise(ctx: ShapeCtx, a: od.ConvAttrs, x: TensorType, w: TensorType) -> TensorType:
    ctx.rank(x, 4, "input (NCHW)")
    ctx.rank(w, 4, "weight (C,1,kh,kw)")
    ctx.same_dtype(x, w)
    n, c, h, wd = x.shape
    o, one, kh, kw = w.shape
    if one != 1:
        raise ctx.fail(f"depthwise weight must be [C, 1, kh, kw], got {w.short()}")
    if not ctx.equal(c, o):
        raise ctx.fail(f"input has {format_dim(c)} channels but the depthwise weight has {format_dim(o)}")
    return TensorType((n, o, spatial_out(ctx, h, kh, a.stride[0], a.dilation[0], a.padding, 0, "kernel"),
                       spatial_out(ctx, wd, kw, a.stride[1], a.dilation[1], a.padding, 1, "kernel")), x.dtype)


@shape_rule("dense", inputs=("input", "weight"))
def _dense(ctx: ShapeCtx, a: Any, x: TensorType, w: TensorType) -> TensorType:
    ctx.rank(w, 2, "weight [in, out]")
    if x.rank < 1:
        raise ctx.fail("input must have at least one dim")
    ctx.same_dtype(x, w)
    if not ctx.equal(x.shape[-1], w.shape[0]):
        raise ctx.fail(f"input has {format_dim(x.shape[-1])} features but the weight expects {format_dim(w.shape[0])}")
    return x.with_shape(x.shape[:-1] + (w.shape[1],))


@shape_rule("bias_add", inputs=("input", "bias"))
def _bias_add(ctx: ShapeCtx, a: od.AxisAttrs, x: TensorType, b: TensorType) -> TensorType:
    ctx.rank(b, 1, "bias")
    if not -x.rank <= a.axis < x.rank:
        raise ctx.fail(f"bias axis {a.axis} out of range for rank {x.rank}")
    axis = a.axis % x.rank
    ctx.eq(b.shape[0], x.shape[axis], f"bias length vs input dim {axis}")
    ctx.same_dtype(x, b)
    return x


@shape_rule("batch_norm", inputs=("input", "gamma", "beta", "running_mean", "running_var"))
def _batch_norm(ctx: ShapeCtx, a: od.BatchNormAttrs, x: TensorType, *stats: TensorType):
    ctx.rank(x, (2, 4), "input (NC or NCHW)")
    c = x.shape[1]
    for name, t in zip(("gamma", "beta", "running_mean", "running_var"), stats):
        ctx.rank(t, 1, name)
        if not ctx.equal(t.shape[0], c):
            raise ctx.fail(f"{name} has {format_dim(t.shape[0])} entries but the input has {format_dim(c)} channels")
    if not a.training and len(stats) != 4:
        raise ctx.fail("eval-mode batch_norm needs running_mean and running_var inputs")
    if a.training:
        return x, TensorType((c,), x.dtype), TensorType((c,), x.dtype)
    return x


@shape_rule("layer_norm", inputs=("input", "gamma", "beta"))
def _layer_norm(ctx: ShapeCtx, a: od.LayerNormAttrs, x: TensorType, g: TensorType, b: TensorType) -> TensorType:
    for name, t in (("gamma", g), ("beta", b)):
        ctx.rank(t, 1, name)
        if not ctx.equal(t.shape[0], x.shape[-1]):
            raise ctx.fail(f"{name} has {format_dim(t.shape[0])} entries but the input's last dim is "
                           f"{format_dim(x.shape[-1])}")
    return x


@shape_rule(*od.ACTIVATIONS, inputs=("x",))
def _activation(ctx: ShapeCtx, a: Any, x: TensorType) -> TensorType:
    return _unary(ctx, a, x)


@shape_rule("max_pool", "avg_pool", inputs=("input",))
def _pool(ctx: ShapeCtx, a: od.PoolAttrs, x: TensorType) -> TensorType:
    ctx.rank(x, 4, "input (NCHW)")
    n, c, h, w = x.shape
    return x.with_shape((n, c, spatial_out(ctx, h, a.window[0], a.stride[0], 1, a.padding, 0, "pool window"),
                         spatial_out(ctx, w, a.window[1], a.stride[1], 1, a.padding, 1, "pool window")))


@shape_rule("global_avg_pool", inputs=("input",))
def _gap(ctx: ShapeCtx, a: Any, x: TensorType) -> TensorType:
    ctx.rank(x, 4, "input (NCHW)")
    return x.with_shape(x.shape[:2])


@shape_rule("softmax", inputs=("x",))
def _softmax(ctx: ShapeCtx, a: od.AxisAttrs, x: TensorType) -> TensorType:
    if not -x.rank <= a.axis < x.rank:
        raise ctx.fail(f"axis {a.axis} out of range for rank {x.rank}")
    return _unary(ctx, a, x)


@shape_rule("softmax_cross_entropy", inputs=("logits", "labels"))
def _xent(ctx: ShapeCtx, a: od.XentAttrs, logits: TensorType, labels: TensorType) -> TensorType:
    ctx.rank(logits, (2, 3), "logits [N, classes] or [N, T, classes]")
    ctx.rank(labels, logits.rank - 1, f"labels [{', '.join(('N', 'T')[:logits.rank - 1])}]")
    if labels.dtype != DType.i32:
        raise ctx.fail(f"labels must be i32, got {labels.dtype}")
    for i, what in zip(range(labels.rank), ("batch", "sequence length")):
        ctx.eq(logits.shape[i], labels.shape[i], f"{what} of logits vs labels")
    return TensorType((), logits.dtype)


def _ids(ctx: ShapeCtx, ids: TensorType) -> None:
    if ids.dtype != DType.i32:
        raise ctx.fail(f"ids must be i32, got {ids.dtype}")


@shape_rule("take", inputs=("table", "ids"))
def _take(ctx: ShapeCtx, a: Any, table: TensorType, ids: TensorType) -> TensorType:
    ctx.rank(table, 2, "table [V, D]")
    _ids(ctx, ids)
    return TensorType((*ids.shape, table.shape[1]), table.dtype)


@shape_rule("scatter_add", inputs=("operand", "ids", "updates"))
def _scatter_add(ctx: ShapeCtx, a: Any, operand: TensorType, ids: TensorType, updates: TensorType) -> TensorType:
    ctx.rank(operand, 2, "operand [V, D]")
    _ids(ctx, ids)
    ctx.same_dtype(operand, updates)
    ctx.same_shape(updates, TensorType((*ids.shape, operand.shape[1]), updates.dtype),
                   "updates vs ids' shape plus the operand's row")
    return operand


@shape_rule("random_bits", inputs=("key0", "key1"))
def _random_bits(ctx: ShapeCtx, a: od.RandomAttrs, k0: TensorType, k1: TensorType) -> TensorType:
    for k in (k0, k1):
        if k.rank or k.dtype != DType.i32:
            raise ctx.fail(f"keys are i32 scalars, got {k}")
    return TensorType(a.shape, DType.i32)


@shape_rule("attention", inputs=("q", "k", "v"))
def _attention(ctx: ShapeCtx, a: od.AttentionAttrs, q: TensorType, k: TensorType, v: TensorType) -> TensorType:
    ctx.rank(q, 3, "q [N, T, D]")
    ctx.same_shape(q, k, "q and k shapes differ")
    ctx.same_shape(q, v, "q and v shapes differ")
    d = q.shape[-1]
    if not isinstance(d, int) or d % a.heads:
        raise ctx.fail(f"model dim {format_dim(d)} must be an int divisible by heads={a.heads}")
    return q


# ---- entry point -------------------------------------------------------------------------

@functools.lru_cache(maxsize=1 << 16)
def infer(op: str, attrs: Any, types: tuple[TensorType, ...], constraints: Constraints = Constraints()
          ) -> tuple[TensorType, ...]:
    """Output types of `op` applied to inputs of `types`; raises ShapeError (without provenance)."""
    try:
        rule = SHAPE_RULES[op]
    except KeyError:
        raise ShapeError(f"no shape rule for op {op!r}") from None
    names = INPUT_NAMES.get(op) or ()
    names = tuple(names[i] if i < len(names) else f"operand {i}" for i in range(len(types)))
    out = rule(ShapeCtx(constraints, names, types), attrs, *types)
    return out if isinstance(out, tuple) else (out,)


def infer_node(node, constraints: Constraints = Constraints()) -> list[TensorType]:
    """The rule's output types for an existing node (the verifier's type check)."""
    return list(infer(node.op, node.attrs, tuple(v.type for v in node.inputs), constraints))
