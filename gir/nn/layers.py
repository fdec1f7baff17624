"""The layer vocabulary of the reference system, each a build function turned into a layer
constructor by `@layer`. Parameters are named by layer path: `stage3.block1.dw.conv.weight`."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from gir.ir import opdefs as od
from gir.ir.dtypes import DType
from gir.ir.graph import Init, Value
from gir.ir.types import Dim, format_dim
from gir.nn.builder import Builder
from gir.nn.init import resolve_init
from gir.shapes.dims import max_value
from gir.shapes.errors import ShapeError
from gir.nn.layer import Layer, layer

ZEROS, ONES = Init("zeros"), Init("ones")


def conv_init(oc: int, ic: int, k: int) -> Init:
    """He (Kaiming) normal over the kernel's fan-in: std sqrt(2 / fan_in)."""
    return Init("he_normal", fan_in=ic * k * k, fan_out=oc * k * k)


def dense_init(fan_in: int, fan_out: int) -> Init:
    """Uniform in +-1/sqrt(fan_in), the usual linear-layer default (a size below 1 is left to the
    parameter's shape check, which names the layer)."""
    return Init("uniform", scale=fan_in ** -0.5 if fan_in > 0 else 1.0, fan_in=fan_in, fan_out=fan_out)


def _need_rank(b: Builder, x: Value, rank: int, layer: str, layout: str) -> None:
    """A layer that unpacks its input's shape says which rank it wants instead of failing to unpack."""
    if x.type.rank != rank:
        raise ShapeError(f"{layer} needs a rank-{rank} {layout} input, got rank {x.type.rank}",
                         (("input", x.type),), layer, b.loc())


ACTIVATION_OPS = {"relu": "relu", "relu6": "relu6", "swish": "swish", "silu": "swish", "hard_swish": "hard_swish",
                  "hard_sigmoid": "hard_sigmoid", "gelu": "gelu", "sigmoid": "logistic", "tanh": "tanh"}


def activate(b: Builder, x: Value, act: str) -> Value:
    """Applies an activation by name; 'identity' (or None) emits nothing."""
    if act in (None, "identity", "linear"):
        return x
    try:
        op = ACTIVATION_OPS[act]
    except KeyError:
        raise ValueError(f"{b.loc()}: unknown activation {act!r}; choose one of identity, "
                         f"{', '.join(ACTIVATION_OPS)}") from None
    return b.unary(op, x)


# ---- containers ----------------------------------------------------------------------------

@layer("seq")
def sequential(b: Builder, x: Value, *layers: Layer) -> Value:
    """Builds `layers` in order, each under its own name."""
    for lay in layers:
        if not isinstance(lay, Layer):
            raise TypeError(f"{b.loc()}: sequential() takes layers, got {lay!r}")
        x = lay(b, x)
    return x


# ---- single layers -------------------------------------------------------------------------

def _conv_weight(b: Builder, oc: int, ic: int, k: int, init: str | Init | None) -> Value:
    """A conv kernel [oc, ic, k, k], initialized as `init` says (default: He normal over the fan-in)."""
    default = conv_init(oc, ic, k)
    return b.param("weight", (oc, ic, k, k), resolve_init(init, default.fan_in, default.fan_out, default))


@layer("conv")
def conv2d(b: Builder, x: Value, ic: int, oc: int, k: int = 3, stride: int = 1, padding="same",
           bias: bool = True, act: str = "identity", init: str | Init | None = None) -> Value:
    """Convolution with an optional bias, then an activation; `init` names the kernel's initializer."""
    w = _conv_weight(b, oc, ic, k, init)
    y = b.conv2d(x, w, stride, padding)
    if bias:
        y = b.bias_add(y, b.param("bias", (oc,), ZEROS), axis=1)
    return activate(b, y, act)


def _bn(b: Builder, x: Value, c: int, eps: float = 1e-5, momentum: float = 0.1,
        gamma_init: str | Init | None = None) -> Value:
    gamma = b.param("gamma", (c,), resolve_init(gamma_init, c, c, ONES))
    beta = b.param("beta", (c,), ZEROS)
    mean = b.param("running_mean", (c,), ZEROS, role="state")
    var = b.param("running_var", (c,), ONES, role="state")
    return b.batch_norm(x, gamma, beta, mean, var, eps, momentum)


@layer("bn")
def batch_norm(b: Builder, x: Value, c: int, eps: float = 1e-5, momentum: float = 0.1,
               gamma_init: str | Init | None = None) -> Value:
    """Batch norm over N (and H, W for images); running statistics are `state` inputs. `gamma_init="zeros"`
    starts a residual branch at zero."""
    return _bn(b, x, c, eps, momentum, gamma_init)


@layer("conv")
def conv_bn(b: Builder, x: Value, ic: int, oc: int, k: int = 3, stride: int = 1, padding="same",
            act: str = "relu", depthwise: bool = False, init: str | Init | None = None,
            gamma_init: str | Init | None = None) -> Value:
    """Convolution without bias (depthwise when `depthwise`), batch norm, activation; `init` and `gamma_init` name
    the kernel's and the BN scale's initializers."""
    with b.scope("conv"):
        if depthwise:
            if ic != oc:
                raise ValueError(f"{b.loc()}: a depthwise conv_bn keeps its channels, got {ic} -> {oc}")
            y = b.depthwise_conv2d(x, _conv_weight(b, ic, 1, k, init), stride, padding)
        else:
            y = b.conv2d(x, _conv_weight(b, oc, ic, k, init), stride, padding)
    with b.scope("bn"):
        y = _bn(b, y, oc, gamma_init=gamma_init)
    return activate(b, y, act)


@layer("dw")
def depthwise_conv(b: Builder, x: Value, c: int, k: int = 3, stride: int = 1, padding="same",
                   bias: bool = False, act: str = "identity", init: str | Init | None = None) -> Value:
    """Per-channel convolution (weight [C, 1, k, k]); `init` names the kernel's initializer."""
    y = b.depthwise_conv2d(x, _conv_weight(b, c, 1, k, init), stride, padding)
    if bias:
        y = b.bias_add(y, b.param("bias", (c,), ZEROS), axis=1)
    return activate(b, y, act)


@layer("dense")
def dense(b: Builder, x: Value, fan_in: int, fan_out: int, act: str = "identity", bias: bool = True,
          init: str | Init | None = None, bias_init: str | Init | None = None) -> Value:
    """x[..., fan_in] @ W + b, then an activation; `init` and `bias_init` name the initializers."""
    w = b.param("weight", (fan_in, fan_out), resolve_init(init, fan_in, fan_out, dense_init(fan_in, fan_out)))
    y = b.dense(x, w)
    if bias:
        default = Init("uniform", scale=fan_in ** -0.5)
        y = b.bias_add(y, b.param("bias", (fan_out,), resolve_init(bias_init, fan_in, fan_out, default)), axis=-1)
    return activate(b, y, act)


@layer("ln")
def layer_norm(b: Builder, x: Value, dim: int, eps: float = 1e-5) -> Value:
    """Normalizes the last axis with a learned scale and shift."""
    return b.layer_norm(x, b.param("gamma", (dim,), ONES), b.param("beta", (dim,), ZEROS), eps)


def _activation_layer(act: str):
    def build(b: Builder, x: Value) -> Value:
        return activate(b, x, act)
    build.__name__ = build.__qualname__ = act
    build.__doc__ = f"The {act} activation as a layer."
    return layer(act)(build)


relu, relu6, swish, hard_swish, hard_sigmoid, gelu, sigmoid, identity = (
    _activation_layer(a) for a in ("relu", "relu6", "swish", "hard_swish", "hard_sigmoid", "gelu", "sigmoid", "identity"))


@layer("pool")
def max_pool(b: Builder, x: Value, k: int = 2, stride: int | None = None, padding="valid") -> Value:
    """Max pooling with a k x k window (stride defaults to k)."""
    return b.max_pool(x, k, stride or k, padding)


@layer("pool")
def avg_pool(b: Builder, x: Value, k: int = 2, stride: int | None = None, padding="valid") -> Value:
    """Average pooling with a k x k window (stride defaults to k; padding is not counted)."""
    return b.avg_pool(x, k, stride or k, padding)


@layer("pool")
def global_avg_pool(b: Builder, x: Value) -> Value:
    """[N, C, H, W] -> [N, C]."""
    return b.global_avg_pool(x)


def _drop(b: Builder, x: Value, p: float, layer: str, mask_dims: tuple[int, ...]) -> Value:
    """Training: x / (1 - p) where a uniform draw over x's dims `mask_dims` is >= p (broadcast over the others),
    else 0; the backward pass reuses the same mask. Evaluation, or p = 0: x itself.
    The rate lives only in the mask (1 / (1 - p) or 0), which x is multiplied by: the ops that touch x are then the
    same in every block whatever its rate, and IREE compiles them once (EfficientNetV2-S: 40 rates)."""
    if not (isinstance(p, (int, float)) and 0 <= p < 1):
        raise ValueError(f"{layer}: p must be in [0, 1), got {p!r}")
    if b.mode == "eval" or p == 0:
        return x
    mask_shape = tuple(x.type.shape[d] for d in mask_dims)
    keep = b.emit("compare", (b.random_uniform(mask_shape), b.constant(p, mask_shape)), od.CompareAttrs("GE")).out
    scale = b.emit("select", (keep, b.constant(1.0 / (1.0 - p), mask_shape), b.constant(0.0, mask_shape)), None).out
    scale = b.broadcast_in_dim(scale, x.type.shape, mask_dims) if mask_shape != tuple(x.type.shape) else scale
    return b.multiply(x, scale)


@layer("drop")
def dropout(b: Builder, x: Value, p: float = 0.5) -> Value:
    """Training: each element zeroed with probability p, the rest scaled by 1/(1-p) (PyTorch's Dropout).
    Evaluation: the identity."""
    return _drop(b, x, p, "dropout", tuple(range(x.type.rank)))


@layer("drop_path")
def drop_path(b: Builder, x: Value, p: float = 0.1) -> Value:
    """Stochastic depth on a residual branch: each example's whole x zeroed with probability p, kept ones scaled by
    1/(1-p) (timm's DropPath). Evaluation: the identity."""
    return _drop(b, x, p, "drop_path", (0,))


@layer("flatten")
def flatten(b: Builder, x: Value) -> Value:
    """[N, ...] -> [N, prod(...)]."""
    return b.flatten(x)


# ---- blocks --------------------------------------------------------------------------------

def _shortcut(b: Builder, x: Value, ic: int, oc: int, stride: int) -> Value:
    """Identity, or a 1x1 conv + BN projection when channels or stride change."""
    if ic == oc and stride == 1:
        return x
    return conv_bn(ic, oc, k=1, stride=stride, act="identity")(b, x, name="proj")


@layer("block")
def residual_block(b: Builder, x: Value, ic: int, oc: int, stride: int = 1) -> Value:
    """Basic ResNet block: 3x3 conv-BN-ReLU, 3x3 conv-BN, add the shortcut, ReLU."""
    y = conv_bn(ic, oc, k=3, stride=stride)(b, x, name="conv1")
    y = conv_bn(oc, oc, k=3, act="identity")(b, y, name="conv2")
    return b.unary("relu", b.add(y, _shortcut(b, x, ic, oc, stride)))


@layer("block")
def bottleneck_block(b: Builder, x: Value, ic: int, oc: int, stride: int = 1) -> Value:
    """ResNet bottleneck (mid = oc/4): 1x1, 3x3 (strided), 1x1, add the shortcut, ReLU."""
    mid = oc // 4
    y = conv_bn(ic, mid, k=1)(b, x, name="conv1")
    y = conv_bn(mid, mid, k=3, stride=stride)(b, y, name="conv2")
    y = conv_bn(mid, oc, k=1, act="identity")(b, y, name="conv3")
    return b.unary("relu", b.add(y, _shortcut(b, x, ic, oc, stride)))


@layer("stage")
def residual_stage(b: Builder, x: Value, ic: int, oc: int, stride: int = 1, n: int = 1,
                   bottleneck: bool = False) -> Value:
    """n residual (or bottleneck) blocks; the first one strides and changes channels."""
    block = bottleneck_block if bottleneck else residual_block
    for i in range(n):
        x = block(ic if i == 0 else oc, oc, stride if i == 0 else 1)(b, x, name=f"block{i + 1}")
    return x


def make_divisible(v: float, divisor: int = 8) -> int:
    """v rounded to a multiple of `divisor` (at least `divisor`, never below 90% of v): how torchvision's MobileNets
    and timm's round channel counts."""
    rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


def _drop_rates(p: float | Sequence[float], n: int, layer: str) -> list[float]:
    """One drop-path rate per block of a stage: `p` for every block, or `p[i]` for block i (a schedule)."""
    if isinstance(p, (int, float)):
        return [float(p)] * n
    if not isinstance(p, (list, tuple)):
        raise ValueError(f"{layer}: drop_path must be a rate or a list of rates, one per block; got {p!r}")
    rates = list(p)
    if len(rates) != n:
        raise ValueError(f"{layer}: drop_path has {len(rates)} rates for {n} blocks; give one rate or one per block")
    return rates


def _residual(b: Builder, x: Value, y: Value, skip: bool, drop: float) -> Value:
    """x + y when `skip` (the block keeps stride 1 and its channels), y's examples dropped at rate `drop`
    (stochastic depth); y alone otherwise."""
    return b.add(x, _drop(b, y, drop, "drop_path", (0,))) if skip else y


def _blocks(b: Builder, x: Value, n: int, ic: int, oc: int, stride: int, drop_path: float | Sequence[float],
            layer: str, build: Callable[[Builder, Value, int, int, float], Value]) -> Value:
    """A stage: `build(b, x, in_channels, stride, drop_rate)` n times under block1..blockn; the first block takes ic
    channels and strides, the rest keep oc channels."""
    for i, rate in enumerate(_drop_rates(drop_path, n, layer)):
        with b.scope(b.child_name(None, "block")):
            x = build(b, x, ic if i == 0 else oc, stride if i == 0 else 1, rate)
    return x


@layer("se")
def squeeze_excite(b: Builder, x: Value, c: int, squeeze: int, act: str = "swish", gate: str = "sigmoid") -> Value:
    """Scales channels by gate(dense(act(dense(mean over H, W)))): EfficientNet's swish/sigmoid by default,
    MobileNetV3's act="relu", gate="hard_sigmoid"."""
    s = b.global_avg_pool(x)
    s = dense(c, squeeze, act=act)(b, s, name="reduce")
    s = dense(squeeze, c, act=gate)(b, s, name="expand")
    return b.multiply(x, b.broadcast_like(s, x, (0, 1)))


def _inverted_bottleneck(b: Builder, x: Value, ic: int, hidden: int, oc: int, k: int, stride: int, act: str,
                         squeeze: int = 0, se_act: str = "swish", se_gate: str = "sigmoid", drop: float = 0.0) -> Value:
    """MobileNetV2/V3's and EfficientNet's block: 1x1 expand to `hidden` (none when hidden == ic), k x k depthwise,
    squeeze-excite to `squeeze` channels (none for 0), 1x1 project; the residual when shapes match."""
    y = x
    if hidden != ic:
        y = conv_bn(ic, hidden, k=1, act=act)(b, y, name="expand")
    y = conv_bn(hidden, hidden, k=k, stride=stride, act=act, depthwise=True)(b, y, name="dw")
    if squeeze:
        y = squeeze_excite(hidden, squeeze, act=se_act, gate=se_gate)(b, y, name="se")
    y = conv_bn(hidden, oc, k=1, act="identity")(b, y, name="project")
    return _residual(b, x, y, stride == 1 and ic == oc, drop)


@layer("stage")
def inverted_residual(b: Builder, x: Value, ic: int, oc: int, t: int = 6, stride: int = 1, n: int = 1) -> Value:
    """MobileNetV2 stage of n blocks: 1x1 expand to ic*t (skipped for t=1), BN, ReLU6, 3x3
    depthwise (strided in the first block), BN, ReLU6, 1x1 project, BN; residual when shapes match."""
    return _blocks(b, x, n, ic, oc, stride, 0.0, "inverted_residual",
                   lambda b, x, c, s, _: _inverted_bottleneck(b, x, c, c * t, oc, 3, s, "relu6"))


@layer("block")
def inverted_bottleneck(b: Builder, x: Value, ic: int, oc: int, hidden: int, k: int = 3, stride: int = 1,
                        act: str = "relu", se: float = 0.0, se_act: str = "relu", se_gate: str = "hard_sigmoid",
                        drop_path: float = 0.0) -> Value:
    """MobileNetV3's block: 1x1 expand to `hidden` channels (none when hidden == ic), k x k depthwise, squeeze-excite
    to make_divisible(se * hidden) channels (none for se=0; MobileNetV3 uses 0.25 with ReLU and a hard-sigmoid gate),
    1x1 project; residual (with drop path) when shapes match."""
    squeeze = make_divisible(se * hidden) if se else 0
    return _inverted_bottleneck(b, x, ic, hidden, oc, k, stride, act, squeeze, se_act, se_gate, drop_path)


@layer("stage")
def mb_conv(b: Builder, x: Value, ic: int, oc: int, t: int = 6, k: int = 3, stride: int = 1, n: int = 1,
            se_ratio: float = 0.25, drop_path: float | Sequence[float] = 0.0) -> Value:
    """EfficientNet MBConv stage of n blocks: expand (t != 1), k x k depthwise, squeeze-excite
    (squeeze = ic * se_ratio of the block input), project; residual when shapes match, with drop path at
    `drop_path` (one rate, or one per block)."""
    def block(b: Builder, x: Value, c: int, s: int, drop: float) -> Value:
        squeeze = max(1, int(c * se_ratio)) if se_ratio else 0
        return _inverted_bottleneck(b, x, c, c * t, oc, k, s, "swish", squeeze, drop=drop)
    return _blocks(b, x, n, ic, oc, stride, drop_path, "mb_conv", block)


@layer("stage")
def fused_mb_conv(b: Builder, x: Value, ic: int, oc: int, t: int = 4, k: int = 3, stride: int = 1, n: int = 1,
                  drop_path: float | Sequence[float] = 0.0) -> Value:
    """EfficientNetV2's Fused-MBConv stage of n blocks: one k x k conv expanding to ic*t (strided, BN, swish) and a 1x1
    project (BN); for t=1 the k x k conv alone makes oc channels. Residual when shapes match, with drop path."""
    def block(b: Builder, x: Value, c: int, s: int, drop: float) -> Value:
        if t == 1:
            y = conv_bn(c, oc, k=k, stride=s, act="swish")(b, x, name="conv")
        else:
            y = conv_bn(c, c * t, k=k, stride=s, act="swish")(b, x, name="expand")
            y = conv_bn(c * t, oc, k=1, act="identity")(b, y, name="project")
        return _residual(b, x, y, s == 1 and c == oc, drop)
    return _blocks(b, x, n, ic, oc, stride, drop_path, "fused_mb_conv", block)


@layer("stage")
def uib(b: Builder, x: Value, ic: int, oc: int, t: float = 4, start_k: int = 0, mid_k: int = 3, stride: int = 1,
        n: int = 1, act: str = "relu", drop_path: float | Sequence[float] = 0.0) -> Value:
    """MobileNetV4's universal inverted bottleneck, n blocks: an optional start_k x start_k depthwise (BN), 1x1 expand
    to make_divisible(ic * t) (BN, act), an optional mid_k x mid_k depthwise (BN, act), 1x1 project (BN); residual
    when shapes match. Its four variants: ExtraDW (both depthwise), IB (mid only), ConvNeXt-like (start only), FFN
    (neither). The mid depthwise strides, else the start one; an FFN block cannot."""
    if stride != 1 and not start_k and not mid_k:
        raise ValueError(f"{b.loc()}: uib with start_k=0 and mid_k=0 (an FFN block) has no depthwise conv to "
                         f"stride {stride}")

    def block(b: Builder, x: Value, c: int, s: int, drop: float) -> Value:
        y = x
        if start_k:
            y = conv_bn(c, c, k=start_k, stride=1 if mid_k else s, act="identity", depthwise=True)(b, y, name="dw_start")
        hidden = make_divisible(c * t)
        y = conv_bn(c, hidden, k=1, act=act)(b, y, name="expand")
        if mid_k:
            y = conv_bn(hidden, hidden, k=mid_k, stride=s, act=act, depthwise=True)(b, y, name="dw_mid")
        y = conv_bn(hidden, oc, k=1, act="identity")(b, y, name="project")
        return _residual(b, x, y, s == 1 and c == oc, drop)
    return _blocks(b, x, n, ic, oc, stride, drop_path, "uib", block)


# ---- ConvNeXt ------------------------------------------------------------------------------

def _channels_last_norm(b: Builder, x: Value, c: int, eps: float) -> Value:
    """LayerNorm over the channels of [N, C, H, W]: to channels-last, normalize, back."""
    _need_rank(b, x, 4, "layer_norm2d", "[N, C, H, W]")
    y = layer_norm(c, eps)(b, b.transpose(x, (0, 2, 3, 1)), name="ln")
    return b.transpose(y, (0, 3, 1, 2))


@layer("norm")
def layer_norm2d(b: Builder, x: Value, c: int, eps: float = 1e-6) -> Value:
    """LayerNorm over the channels of each pixel of [N, C, H, W] (ConvNeXt's LayerNorm2d)."""
    return _channels_last_norm(b, x, c, eps)


@layer("down")
def convnext_downsample(b: Builder, x: Value, ic: int, oc: int, eps: float = 1e-6) -> Value:
    """ConvNeXt's downsampling between stages: LayerNorm over channels, then a 2x2 stride-2 conv with bias."""
    y = _channels_last_norm(b, x, ic, eps)
    return conv2d(ic, oc, k=2, stride=2, padding="valid", init="trunc_normal_0.02")(b, y, name="conv")


@layer("stage")
def convnext_stage(b: Builder, x: Value, dim: int, n: int = 1, drop_path: float | Sequence[float] = 0.0,
                   layer_scale: float = 1e-6, eps: float = 1e-6) -> Value:
    """n ConvNeXt blocks: 7x7 depthwise conv (bias), then channels-last LayerNorm, dim -> 4 dim (GELU) -> dim, each
    channel scaled by a learned factor starting at `layer_scale` (none for 0), drop path, residual."""
    def block(b: Builder, x: Value, c: int, s: int, drop: float) -> Value:
        y = depthwise_conv(dim, k=7, bias=True, init="trunc_normal_0.02")(b, x, name="dw")
        y = layer_norm(dim, eps)(b, b.transpose(y, (0, 2, 3, 1)), name="ln")
        y = dense(dim, 4 * dim, act="gelu", init="trunc_normal_0.02", bias_init="zeros")(b, y, name="fc1")
        y = dense(4 * dim, dim, init="trunc_normal_0.02", bias_init="zeros")(b, y, name="fc2")
        if layer_scale:
            gamma = b.param("layer_scale", (dim,), Init("constant", scale=layer_scale))
            y = b.multiply(y, b.broadcast_like(gamma, y, (3,)))
        return _residual(b, x, b.transpose(y, (0, 3, 1, 2)), True, drop)
    return _blocks(b, x, n, dim, dim, 1, drop_path, "convnext_stage", block)


# ---- transformer ---------------------------------------------------------------------------

@layer("embed")
def patch_embed(b: Builder, x: Value, ic: int, dim: int, patch: int = 16, class_token: bool = True) -> Value:
    """Image [N, C, H, W] -> tokens [N, T(+1), dim]: a patch x patch conv (stride patch), a learned
    class token and position embedding. Needs a fixed image size (T must be an int)."""
    _need_rank(b, x, 4, "patch_embed", "[N, C, H, W]")
    n, _, h, w = x.type.shape
    if not isinstance(h, int) or not isinstance(w, int):
        raise ValueError(f"{b.loc()}: patch_embed needs a fixed image size for its position embedding; "
                         f"declare the net's input as e.g. (N, 3, 224, 224)")
    y = conv2d(ic, dim, k=patch, stride=patch, padding="valid")(b, x, name="proj")
    t = (h // patch) * (w // patch)
    y = b.transpose(b.reshape(y, (n, dim, t)), (0, 2, 1))
    if class_token:
        cls = b.param("class_token", (1, 1, dim), Init("trunc_normal", scale=0.02))
        y = b.concatenate([b.broadcast_in_dim(cls, (n, 1, dim), (0, 1, 2)), y], dim=1)
        t += 1
    pos = b.param("pos_embed", (1, t, dim), Init("trunc_normal", scale=0.02))
    return b.add(y, b.broadcast_in_dim(pos, (n, t, dim), (0, 1, 2)))


def _slice_last(b: Builder, x: Value, start: int, stop: int) -> Value:
    """x[..., start:stop]."""
    shape = x.type.shape
    return b.slice(x, (0,) * (len(shape) - 1) + (start,), tuple(shape[:-1]) + (stop,))


def _encoder_block(b: Builder, x: Value, dim: int, heads: int, mlp: int, eps: float, causal: bool,
                   drop: float) -> Value:
    y = layer_norm(dim, eps)(b, x, name="ln1")
    qkv = dense(dim, 3 * dim)(b, y, name="qkv")
    with b.scope("attn"):
        q, k, v = (_slice_last(b, qkv, i * dim, (i + 1) * dim) for i in range(3))
        y = b.attention(q, k, v, heads, causal)
    y = dense(dim, dim)(b, y, name="proj")
    x = b.add(x, dropout(drop)(b, y, name="drop1") if drop else y)
    y = layer_norm(dim, eps)(b, x, name="ln2")
    y = dense(dim, mlp, act="gelu")(b, y, name="fc1")
    y = dense(mlp, dim)(b, y, name="fc2")
    return b.add(x, dropout(drop)(b, y, name="drop2") if drop else y)


@layer("encoder")
def transformer_encoder(b: Builder, x: Value, dim: int, heads: int, mlp: int, depth: int = 1,
                        eps: float = 1e-6, causal: bool = False, dropout: float = 0.0) -> Value:
    """`depth` pre-norm blocks: x + attention(LN(x)), then x + MLP(LN(x)) with GELU. `causal`: each position
    attends to itself and earlier ones only (a GPT block); `dropout`: on each residual branch before the add."""
    _need_rank(b, x, 3, "transformer_encoder", "[N, T, D]")
    for i in range(depth):
        with b.scope(f"block{i + 1}"):
            x = _encoder_block(b, x, dim, heads, mlp, eps, causal, dropout)
    return x


# ---- sequence models -----------------------------------------------------------------------

@layer("embed")
def token_embedding(b: Builder, x: Value, vocab: int, dim: int) -> Value:
    """Token ids [N, T] (i32) -> vectors [N, T, dim]: rows of a learned [vocab, dim] table (normal, std 0.02)."""
    if x.type.dtype != DType.i32:
        raise ShapeError(f"token_embedding needs integer token ids (i32), got {x.type.dtype}; declare the net's "
                         f"input with input_dtype=\"i32\"", (("input", x.type),), "token_embedding", b.loc())
    table = b.param("weight", (vocab, dim), Init("normal", scale=0.02, fan_in=vocab, fan_out=dim))
    return b.take(table, x)


def _sinusoids(b: Builder, t: Dim, dim: int) -> Value:
    """[t, dim]: sin(p / 10000^(2k/dim)) at column 2k, cos at 2k+1 (Vaswani et al. 2017), from iotas."""
    if dim % 2:
        raise ShapeError(f"sinusoidal position_embedding needs an even dim, got {dim}", (), "position_embedding",
                         b.loc())
    shape = (t, dim // 2, 2)   # position, frequency index k, sin or cos
    pos, k = (b.convert(b.iota(shape, d), b.dtype) for d in (0, 1))
    rate = b.unary("exp", b.multiply(k, b.constant(-2.0 * math.log(10000.0) / dim, shape)))
    angle = b.multiply(pos, rate)
    odd = b.compare(b.iota(shape, 2), b.constant(0, shape, DType.i32), "NE")
    table = b.select(odd, b.unary("cosine", angle), b.unary("sine", angle))
    return b.reshape(table, (t, dim))


def _fits_positions(b: Builder, x: Value, t: Dim, max_len: int) -> None:
    """T <= max_len for every T the net allows, or a ShapeError naming the constraint to declare."""
    top = max_value(t, b.constraints)
    if top is not None and top <= max_len:
        return
    if isinstance(t, int):
        fix = f"the sequence has {t} positions"
    else:
        bound = "no upper bound" if top is None else f"values up to {top}"
        syms = ", ".join(sorted(map(str, t.free_symbols)))
        fix = (f"{format_dim(t)} has {bound} (constraints now: {b.constraints.describe()}); declare "
               f"constraints=Constraints().at_most({syms}, {max_len})")
    raise ShapeError(f"position_embedding(max_len={max_len}) needs at most {max_len} positions, but {fix}",
                     (("input", x.type),), "position_embedding", b.loc())


@layer("pos")
def position_embedding(b: Builder, x: Value, max_len: int, dim: int, kind: str = "learned") -> Value:
    """x [N, T, dim] plus a vector per position: the first T rows of a learned [max_len, dim] table (normal, std
    0.02), or fixed sinusoids ("sinusoidal", no parameters). T must be at most max_len."""
    if kind not in ("learned", "sinusoidal"):
        raise ValueError(f"{b.loc()}: position_embedding kind must be 'learned' or 'sinusoidal', got {kind!r}")
    _need_rank(b, x, 3, "position_embedding", "[N, T, D]")
    _, t, d = x.type.shape
    if d != dim:
        raise ShapeError(f"position_embedding(dim={dim}) got vectors of size {format_dim(d)}", (("input", x.type),),
                         "position_embedding", b.loc())
    _fits_positions(b, x, t, max_len)
    if kind == "sinusoidal":
        pos = _sinusoids(b, t, dim)
    else:
        table = b.param("weight", (max_len, dim), Init("normal", scale=0.02, fan_in=max_len, fan_out=dim))
        pos = b.slice(table, (0, 0), (t, dim))
    return b.add(x, b.broadcast_in_dim(pos, x.type.shape, (1, 2)))


@layer("cls")
def class_token_pool(b: Builder, x: Value) -> Value:
    """Tokens [N, T, D] -> the first (class) token [N, D]."""
    _need_rank(b, x, 3, "class_token_pool", "[N, T, D]")
    n, _, d = x.type.shape
    return b.reshape(b.slice(x, (0, 0, 0), (n, 1, d)), (n, d))


def softmax_cross_entropy(b: Builder, logits: Value, labels: Value, label_smoothing: float = 0.0) -> Value:
    """Mean softmax cross-entropy against int labels, with label smoothing folded into the targets."""
    return b.softmax_cross_entropy(logits, labels, label_smoothing)
