"""One-step oracles: gir's train step, run on IREE (llvm-cpu, the decomposed module) and on the JAX
backend (the layer-level graph), against an independent reference written here in plain jax.numpy /
jax.lax, differentiated with `jax.grad`, with its own optimizer update, from the same initialization.

The reference shares nothing with gir but the parameter names and the initial values: each small net
below is built from gir's layer vocabulary and mirrored by a hand-written forward (SAME padding from
lax's "SAME" string, batch norm, layer norm and attention by hand, ...). Per net and backend we check

- the issue's oracle: the loss at step 2, i.e. at the parameters gir's step 1 made (the `loss` of a
  second call with step=2), against the loss at the parameters the reference's step 1 made, within
  1e-5 (dense, conv), 1e-4 (BN, depthwise, inverted residual, MobileNetV3's block with squeeze-excite,
  fused MBConv and the four UIB forms, ConvNeXt, bottleneck, layer norm, attention) or 1e-3 (max-pool with ties);
- step 1 and step 2 in detail, each against the reference step from the same state: loss, logits,
  batch statistics, BN running statistics, optimizer slots, parameter updates, the clipped norm.

SGD (momentum, weight decay), Adam, AdamW and RMSProp, clipping and label smoothing all appear.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.lower.jax_backend import compile_jax
from gir.lower.pipeline import lower_graph
from gir.nn import (H, N, W, Constraints, Net, batch_norm, class_token_pool, conv2d, conv_bn, convnext_downsample,
                    convnext_stage, dense, depthwise_conv, flatten, fused_mb_conv, gelu, global_avg_pool,
                    inverted_bottleneck, inverted_residual, layer_norm, layer_norm2d, max_pool, patch_embed,
                    residual_block, residual_stage, transformer_encoder, uib)
from gir.nn.params import init_params
from gir.train.config import TrainConfig
from gir.train.step import build_train_step

HI = lax.Precision.HIGHEST
K = 10  # classes


# ---- the reference: a forward pass in plain jax, mirroring gir/nn/layers.py by hand -------------

class Ref:
    """One forward pass over parameters `p` (by gir's names); BN batch statistics land in `stats`."""

    def __init__(self, p: dict):
        self.p = p
        self.stats: dict[str, tuple] = {}  # bn path -> (mean, biased var, count)

    # single layers

    def conv(self, name, x, stride=1, padding="SAME", bias=True, groups=1):
        y = lax.conv_general_dilated(x, self.p[f"{name}.weight"], (stride, stride), padding,
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups,
                                     precision=HI)
        if bias:
            y = y + self.p[f"{name}.bias"][None, :, None, None]
        return y

    def bn(self, name, x, eps=1e-5):
        axes = (0, 2, 3) if x.ndim == 4 else (0,)
        shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
        mean = jnp.mean(x, axis=axes)
        centred = x - mean.reshape(shape)
        var = jnp.mean(centred * centred, axis=axes)
        self.stats[name] = (mean, var, math.prod(x.shape) // x.shape[1])
        return centred / jnp.sqrt(var.reshape(shape) + eps) * self.p[f"{name}.gamma"].reshape(shape) \
            + self.p[f"{name}.beta"].reshape(shape)

    def conv_bn(self, name, x, stride=1, act="relu", depthwise=False):
        y = self.conv(f"{name}.conv", x, stride, bias=False, groups=x.shape[1] if depthwise else 1)
        return ACT[act](self.bn(f"{name}.bn", y))

    def dense(self, name, x, act="identity"):
        y = jnp.matmul(x, self.p[f"{name}.weight"], precision=HI) + self.p[f"{name}.bias"]
        return ACT[act](y)

    def layer_norm(self, name, x, eps=1e-5):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + eps) * self.p[f"{name}.gamma"] + self.p[f"{name}.beta"]

    @staticmethod
    def max_pool(x, k, stride=None):
        stride = stride or k
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, k, k), (1, 1, stride, stride), "VALID")

    # blocks

    def bottleneck(self, name, x, ic, oc, stride):
        y = self.conv_bn(f"{name}.conv1", x)
        y = self.conv_bn(f"{name}.conv2", y, stride)
        y = self.conv_bn(f"{name}.conv3", y, act="identity")
        return jax.nn.relu(y + self._shortcut(name, x, ic, oc, stride))

    def basic_block(self, name, x, ic, oc, stride):
        y = self.conv_bn(f"{name}.conv1", x, stride)
        y = self.conv_bn(f"{name}.conv2", y, act="identity")
        return jax.nn.relu(y + self._shortcut(name, x, ic, oc, stride))

    def _shortcut(self, name, x, ic, oc, stride):
        if ic == oc and stride == 1:
            return x
        return self.conv_bn(f"{name}.proj", x, stride, act="identity")

    def inverted_residual(self, name, x, ic, oc, t, stride):
        y = x
        if t != 1:
            y = self.conv_bn(f"{name}.expand", y, act="relu6")
        y = self.conv_bn(f"{name}.dw", y, stride, act="relu6", depthwise=True)
        y = self.conv_bn(f"{name}.project", y, act="identity")
        return x + y if stride == 1 and ic == oc else y

    def _skip(self, x, y, ic, oc, stride):
        return x + y if stride == 1 and ic == oc else y

    def squeeze_excite(self, name, x, act, gate):
        s = self.dense(f"{name}.reduce", jnp.mean(x, axis=(2, 3)), act)
        return x * self.dense(f"{name}.expand", s, gate)[:, :, None, None]

    def bottleneck_v3(self, name, x, ic, hidden, oc, stride, act, se):
        """MobileNetV3's block: expand unless hidden == ic, depthwise, SE (ReLU, hard sigmoid), project."""
        y = self.conv_bn(f"{name}.expand", x, act=act) if hidden != ic else x
        y = self.conv_bn(f"{name}.dw", y, stride, act=act, depthwise=True)
        if se:
            y = self.squeeze_excite(f"{name}.se", y, "relu", "hard_sigmoid")
        return self._skip(x, self.conv_bn(f"{name}.project", y, act="identity"), ic, oc, stride)

    def fused_mb_conv(self, name, x, ic, oc, t, stride):
        if t == 1:
            y = self.conv_bn(f"{name}.conv", x, stride, act="swish")
        else:
            y = self.conv_bn(f"{name}.project", self.conv_bn(f"{name}.expand", x, stride, act="swish"), act="identity")
        return self._skip(x, y, ic, oc, stride)

    def uib(self, name, x, ic, oc, start_k, mid_k, stride):
        y = x
        if start_k:
            y = self.conv_bn(f"{name}.dw_start", y, 1 if mid_k else stride, act="identity", depthwise=True)
        y = self.conv_bn(f"{name}.expand", y)
        if mid_k:
            y = self.conv_bn(f"{name}.dw_mid", y, stride, depthwise=True)
        return self._skip(x, self.conv_bn(f"{name}.project", y, act="identity"), ic, oc, stride)

    def layer_norm2d(self, name, x, eps=1e-6):
        return jnp.transpose(self.layer_norm(name, jnp.transpose(x, (0, 2, 3, 1)), eps), (0, 3, 1, 2))

    def convnext_block(self, name, x):
        y = jnp.transpose(self.conv(f"{name}.dw", x, groups=x.shape[1]), (0, 2, 3, 1))
        y = self.dense(f"{name}.fc2", self.dense(f"{name}.fc1", self.layer_norm(f"{name}.ln", y, 1e-6), "gelu"))
        return x + jnp.transpose(y * self.p[f"{name}.layer_scale"], (0, 3, 1, 2))

    def patch_embed(self, name, x, patch):
        y = self.conv(f"{name}.proj", x, patch, padding="VALID")
        n, d = y.shape[:2]
        y = jnp.transpose(y.reshape(n, d, -1), (0, 2, 1))                      # [N, T, D]
        cls = jnp.broadcast_to(self.p[f"{name}.class_token"], (n, 1, d))
        return jnp.concatenate([cls, y], axis=1) + self.p[f"{name}.pos_embed"]

    def attention(self, q, k, v, heads):
        n, t, d = q.shape

        def split(z):  # [N, T, D] -> [N, heads, T, D/heads]
            return jnp.transpose(z.reshape(n, t, heads, d // heads), (0, 2, 1, 3))

        q, k, v = split(q), split(k), split(v)
        scores = jnp.matmul(q, jnp.swapaxes(k, -1, -2), precision=HI) / math.sqrt(d // heads)
        w = jax.nn.softmax(scores, axis=-1)
        return jnp.transpose(jnp.matmul(w, v, precision=HI), (0, 2, 1, 3)).reshape(n, t, d)

    def encoder_block(self, name, x, heads, eps):
        d = x.shape[-1]
        y = self.layer_norm(f"{name}.ln1", x, eps)
        qkv = self.dense(f"{name}.qkv", y)
        y = self.attention(qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:], heads)
        x = x + self.dense(f"{name}.proj", y)
        y = self.layer_norm(f"{name}.ln2", x, eps)
        y = self.dense(f"{name}.fc2", self.dense(f"{name}.fc1", y, act="gelu"))
        return x + y


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


# jax.nn.relu and jax.nn.relu6 take derivative 0 at their kinks (x = 0 and x = 6), the convention gir
# documents too. Exact zeros do reach ReLU6 here: a depthwise window over an all-zero patch of a ReLU
# output is exactly 0, so jnp.clip / jnp.maximum (derivative 1/2 at a tie) would not be a fair mirror.
_relu6 = jax.nn.relu6


ACT: dict[str, Callable] = {
    "identity": lambda x: x,
    "relu": jax.nn.relu,
    "relu6": _relu6,
    "swish": lambda x: x * jax.nn.sigmoid(x),
    "hard_swish": lambda x: x * _relu6(x + 3.0) / 6.0,
    "hard_sigmoid": lambda x: _relu6(x + 3.0) / 6.0,
    "sigmoid": jax.nn.sigmoid,
    "gelu": _gelu_tanh,
}


def ref_loss(logits, labels, ls):
    onehot = jax.nn.one_hot(labels, K, dtype=logits.dtype)
    target = (1.0 - ls) * onehot + ls / K
    return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1))


# ---- the nets: gir layers and the hand-written mirror of each -----------------------------------

def dense_net():
    return Net("oracle_dense", [
        flatten(name="flat"),
        dense(3 * 8 * 8, 32, act="relu", name="fc1"),
        dense(32, 24, act="sigmoid", name="fc2"),
        dense(24, K, name="head"),
    ], input_shape=(N, 3, 8, 8), num_classes=K)


def dense_ref(r: Ref, x):
    x = x.reshape(x.shape[0], -1)
    x = r.dense("fc1", x, act="relu")
    x = jax.nn.sigmoid(r.dense("fc2", x))
    return r.dense("head", x)


def conv_net():
    return Net("oracle_conv", [
        conv2d(3, 8, k=3, stride=2, act="relu", name="c1"),          # SAME, stride 2 on an even size: pad (0, 1)
        conv2d(8, 16, k=3, act="swish", name="c2"),
        conv2d(16, 16, k=2, stride=2, padding="valid", act="relu", name="c3"),
        global_avg_pool(name="gap"),
        dense(16, K, name="head"),
    ], input_shape=(N, 3, 16, 16), num_classes=K)


def conv_ref(r: Ref, x):
    x = jax.nn.relu(r.conv("c1", x, 2))
    x = ACT["swish"](r.conv("c2", x))
    x = jax.nn.relu(r.conv("c3", x, 2, padding="VALID"))
    return r.dense("head", jnp.mean(x, axis=(2, 3)))


def bn_net():
    return Net("oracle_bn", [
        conv_bn(3, 8, k=3, name="cb1"),
        conv_bn(8, 16, k=3, stride=2, act="swish", name="cb2"),
        global_avg_pool(name="gap"),
        batch_norm(16, name="bn"),                                   # BN over N only ([N, C])
        dense(16, K, name="head"),
    ], num_classes=K)


def bn_ref(r: Ref, x):
    x = r.conv_bn("cb1", x)
    x = r.conv_bn("cb2", x, 2, act="swish")
    x = r.bn("bn", jnp.mean(x, axis=(2, 3)))
    return r.dense("head", x)


def depthwise_net():
    return Net("oracle_depthwise", [
        conv_bn(3, 8, k=3, name="stem"),
        depthwise_conv(8, k=3, bias=True, act="relu6", name="dw"),
        conv_bn(8, 8, k=5, stride=2, act="hard_swish", depthwise=True, name="dwbn"),
        conv2d(8, 16, k=1, act="relu", name="pw"),
        global_avg_pool(name="gap"),
        dense(16, K, name="head"),
    ], num_classes=K)


def depthwise_ref(r: Ref, x):
    x = r.conv_bn("stem", x)
    x = _relu6(r.conv("dw", x, groups=x.shape[1]))
    x = r.conv_bn("dwbn", x, 2, act="hard_swish", depthwise=True)
    x = jax.nn.relu(r.conv("pw", x))
    return r.dense("head", jnp.mean(x, axis=(2, 3)))


def inverted_residual_net():
    return Net("oracle_inverted_residual", [
        conv_bn(3, 8, k=3, stride=2, act="relu6", name="stem"),
        inverted_residual(8, 8, t=1, name="s1"),                     # no expand; residual
        inverted_residual(8, 12, t=4, stride=2, n=2, name="s2"),     # strided block, then a residual one
        global_avg_pool(name="gap"),
        dense(12, K, name="head"),
    ], num_classes=K)


def inverted_residual_ref(r: Ref, x):
    x = r.conv_bn("stem", x, 2, act="relu6")
    x = r.inverted_residual("s1.block1", x, 8, 8, 1, 1)
    x = r.inverted_residual("s2.block1", x, 8, 12, 4, 2)
    x = r.inverted_residual("s2.block2", x, 12, 12, 4, 1)
    return r.dense("head", jnp.mean(x, axis=(2, 3)))


def mobilenet_v3_net():
    return Net("oracle_mobilenet_v3", [
        conv_bn(3, 8, k=3, stride=2, act="hard_swish", name="stem"),
        inverted_bottleneck(8, 8, hidden=8, k=3, se=0.25, name="b1"),                        # no expand; SE; residual
        inverted_bottleneck(8, 16, hidden=24, k=5, stride=2, act="hard_swish", se=0.25, name="b2"),
        global_avg_pool(name="gap"),
        dense(16, K, name="head"),
    ], num_classes=K)


def mobilenet_v3_ref(r: Ref, x):
    x = r.conv_bn("stem", x, 2, act="hard_swish")
    x = r.bottleneck_v3("b1", x, 8, 8, 8, 1, "relu", se=True)
    x = r.bottleneck_v3("b2", x, 8, 24, 16, 2, "hard_swish", se=True)
    return r.dense("head", jnp.mean(x, axis=(2, 3)))


def fused_uib_net():
    return Net("oracle_fused_uib", [
        conv_bn(3, 8, k=3, stride=2, act="swish", name="stem"),
        fused_mb_conv(8, 8, t=1, name="f1"),                          # one k x k conv; residual
        fused_mb_conv(8, 12, t=4, stride=2, n=2, name="f2"),          # expand + project, strided, then residual
        uib(12, 12, t=2, start_k=3, mid_k=3, name="u1"),              # ExtraDW
        uib(12, 16, t=2, start_k=0, mid_k=5, stride=2, name="u2"),    # IB, strided
        uib(16, 16, t=2, start_k=3, mid_k=0, name="u3"),              # ConvNeXt-like
        uib(16, 16, t=2, start_k=0, mid_k=0, name="u4"),              # FFN
        global_avg_pool(name="gap"),
        dense(16, K, name="head"),
    ], num_classes=K)


def fused_uib_ref(r: Ref, x):
    x = r.conv_bn("stem", x, 2, act="swish")
    x = r.fused_mb_conv("f1.block1", x, 8, 8, 1, 1)
    x = r.fused_mb_conv("f2.block1", x, 8, 12, 4, 2)
    x = r.fused_mb_conv("f2.block2", x, 12, 12, 4, 1)
    x = r.uib("u1.block1", x, 12, 12, 3, 3, 1)
    x = r.uib("u2.block1", x, 12, 16, 0, 5, 2)
    x = r.uib("u3.block1", x, 16, 16, 3, 0, 1)
    x = r.uib("u4.block1", x, 16, 16, 0, 0, 1)
    return r.dense("head", jnp.mean(x, axis=(2, 3)))


def convnext_net():
    return Net("oracle_convnext", [
        conv2d(3, 8, k=4, stride=4, padding="valid", name="stem"),
        layer_norm2d(8, name="stem_norm"),
        convnext_stage(8, n=2, layer_scale=0.5, name="s1"),          # layer scale well away from 1e-6: a real branch
        convnext_downsample(8, 16, name="down"),
        convnext_stage(16, n=1, layer_scale=0.5, name="s2"),
        global_avg_pool(name="gap"),
        layer_norm(16, eps=1e-6, name="head_norm"),
        dense(16, K, name="head"),
    ], num_classes=K, constraints=Constraints().at_least(H, 8).divisible_by(H, 8).at_least(W, 8).divisible_by(W, 8))


def convnext_ref(r: Ref, x):
    x = r.layer_norm2d("stem_norm.ln", r.conv("stem", x, 4, padding="VALID"))
    x = r.convnext_block("s1.block2", r.convnext_block("s1.block1", x))
    x = r.conv("down.conv", r.layer_norm2d("down.ln", x), 2, padding="VALID")
    x = r.convnext_block("s2.block1", x)
    return r.dense("head", r.layer_norm("head_norm", jnp.mean(x, axis=(2, 3)), 1e-6))


def bottleneck_net():
    return Net("oracle_bottleneck", [
        conv_bn(3, 8, k=3, name="stem"),
        residual_stage(8, 16, stride=2, n=2, bottleneck=True, name="s1"),   # projection, then identity
        residual_block(16, 16, name="basic"),
        global_avg_pool(name="gap"),
        dense(16, K, name="head"),
    ], num_classes=K)


def bottleneck_ref(r: Ref, x):
    x = r.conv_bn("stem", x)
    x = r.bottleneck("s1.block1", x, 8, 16, 2)
    x = r.bottleneck("s1.block2", x, 16, 16, 1)
    x = r.basic_block("basic", x, 16, 16, 1)
    return r.dense("head", jnp.mean(x, axis=(2, 3)))


def layer_norm_net():
    return Net("oracle_layer_norm", [
        flatten(name="flat"),
        dense(3 * 8 * 8, 32, name="fc1"),
        layer_norm(32, name="ln"),
        gelu(name="act"),
        dense(32, K, name="head"),
    ], input_shape=(N, 3, 8, 8), num_classes=K)


def layer_norm_ref(r: Ref, x):
    x = r.dense("fc1", x.reshape(x.shape[0], -1))
    x = _gelu_tanh(r.layer_norm("ln", x))
    return r.dense("head", x)


def attention_net():
    return Net("oracle_attention", [
        patch_embed(3, 16, patch=4, name="embed"),
        transformer_encoder(16, heads=2, mlp=32, depth=2, name="enc"),
        layer_norm(16, eps=1e-6, name="ln"),
        class_token_pool(name="cls"),
        dense(16, K, name="head"),
    ], input_shape=(N, 3, 16, 16), num_classes=K)


def attention_ref(r: Ref, x):
    x = r.patch_embed("embed", x, 4)
    for i in (1, 2):
        x = r.encoder_block(f"enc.block{i}", x, heads=2, eps=1e-6)
    x = r.layer_norm("ln", x, 1e-6)
    return r.dense("head", x[:, 0])


def max_pool_net():
    return Net("oracle_max_pool", [
        conv2d(3, 8, k=3, act="relu", name="c1"),
        max_pool(4, name="pool1"),
        conv2d(8, 16, k=3, act="relu", name="c2"),
        max_pool(2, name="pool2"),
        flatten(name="flat"),
        dense(16 * 2 * 2, K, name="head"),
    ], input_shape=(N, 3, 16, 16), num_classes=K)


def max_pool_ref(r: Ref, x):
    x = Ref.max_pool(jax.nn.relu(r.conv("c1", x)), 4)
    x = Ref.max_pool(jax.nn.relu(r.conv("c2", x)), 2)
    return r.dense("head", x.reshape(x.shape[0], -1))


# ---- data ------------------------------------------------------------------------------------

def normal_images(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def tied_images(rng, shape):
    """Piecewise-constant images: a 4x4 grid of cells, each 4x4 pixels of one of three levels.

    Ties in max_pool: at every position whose 3x3 neighbourhood lies inside one cell, conv c1 sees
    the same patch, so the 2x2 interior of each cell is four exactly equal values; pool1's 4x4
    windows are the cells, so a window whose max sits in the interior has a 4-way tie. ReLU zeros
    tie too (whole windows of 0 in pool1 and pool2). gir splits a tied window's cotangent evenly
    among its maxima; jax's reduce_window gradient gives it all to one of them. Both are valid
    subgradients, and here they give the same parameter gradients: tied positions of the first
    conv have identical input patches, so dW = sum(ct * patch) does not depend on how the
    cotangent is split, and windows tied at a ReLU zero pass no gradient at all. What remains is
    rounding, which is why the issue allows 1e-3 on the step-2 loss for this net."""
    n, c, h, w = shape
    cells = rng.integers(-1, 2, (n, c, h // 4, w // 4)).astype(np.float32)
    return np.repeat(np.repeat(cells, 4, axis=2), 4, axis=3)


# ---- the reference train step ------------------------------------------------------------------

def ref_update(cfg: TrainConfig, p, g, slots, lr, t):
    """One optimizer update of one parameter, written from the formulas (not from gir's graph)."""
    wd = cfg.weight_decay
    if cfg.optimizer == "sgd":
        v = cfg.momentum * slots["momentum"] + (g + wd * p)
        return p - lr * v, {"momentum": v}
    if cfg.optimizer in ("adam", "adamw"):
        gg = g + wd * p if cfg.optimizer == "adam" else g
        m = cfg.beta1 * slots["adam_m"] + (1 - cfg.beta1) * gg
        v = cfg.beta2 * slots["adam_v"] + (1 - cfg.beta2) * gg * gg
        direction = (m / (1 - cfg.beta1 ** t)) / (jnp.sqrt(v / (1 - cfg.beta2 ** t)) + cfg.eps)
        if cfg.optimizer == "adamw":
            direction = direction + wd * p
        return p - lr * direction, {"adam_m": m, "adam_v": v}
    assert cfg.optimizer == "rmsprop"
    gg = g + wd * p
    s = cfg.rms_decay * slots["rms"] + (1 - cfg.rms_decay) * gg * gg
    return p - lr * gg / (jnp.sqrt(s) + cfg.eps), {"rms": s}


SLOTS = {"sgd": ("momentum",), "adam": ("adam_m", "adam_v"), "adamw": ("adam_m", "adam_v"), "rmsprop": ("rms",)}


def make_ref_step(fwd, cfg: TrainConfig):
    """The reference train step, jitted: (params, state, images, labels, lr, t) -> loss, logits, BN
    stats, new params and state (slots and running statistics), the grad norm and the gradients the
    update acted on."""
    def loss_fn(p, images, labels):
        r = Ref(p)
        logits = fwd(r, images)
        return ref_loss(logits, labels, cfg.label_smoothing), (logits, r.stats)

    @jax.jit
    def step(params, state, images, labels, lr, t):
        (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images, labels)
        norm = jnp.sqrt(sum(jnp.sum(g * g) for g in grads.values()))
        if cfg.clip_norm:
            grads = {k: g * (cfg.clip_norm / jnp.maximum(norm, cfg.clip_norm)) for k, g in grads.items()}
        new_p, new_s = {}, dict(state)
        for k, p in params.items():
            slots = {s: state[f"{s}:{k}"] for s in SLOTS[cfg.optimizer]}
            new_p[k], upd = ref_update(cfg, p, grads[k], slots, lr, t)
            new_s.update({f"{s}:{k}": v for s, v in upd.items()})
        for path, (mean, var, count) in stats.items():
            new_s[f"{path}.running_mean"] = 0.9 * state[f"{path}.running_mean"] + 0.1 * mean
            new_s[f"{path}.running_var"] = 0.9 * state[f"{path}.running_var"] + 0.1 * var * (count / (count - 1))
        # the gradient the update acts on (clipped, with coupled weight decay): it decides the sign of
        # an Adam or RMSProp step, which is arbitrary where that gradient is at rounding level
        decay = 0.0 if cfg.optimizer == "adamw" else cfg.weight_decay
        effective = {k: grads[k] + decay * p for k, p in params.items()}
        return {"loss": loss, "logits": logits, "stats": {k: v[:2] for k, v in stats.items()}, "params": new_p,
                "state": new_s, "grad_norm": norm, "grads": effective}

    return step


# ---- the cases -------------------------------------------------------------------------------

@attrs.frozen
class Case:
    net: Callable[[], Net]
    fwd: Callable
    config: TrainConfig
    lr: float
    tol: float                      # the loss tolerance the issue states for this kind of net
    images: Callable = normal_images
    batch: int = 8
    image: int = 16                 # binds H and W where the net leaves them symbolic


CASES = {
    "dense": Case(dense_net, dense_ref, TrainConfig(optimizer="sgd", momentum=0.9, weight_decay=5e-4),
                  lr=0.1, tol=1e-5),
    "conv": Case(conv_net, conv_ref, TrainConfig(optimizer="adam", label_smoothing=0.1), lr=1e-2, tol=1e-5),
    "batch_norm": Case(bn_net, bn_ref, TrainConfig(optimizer="rmsprop", weight_decay=1e-4), lr=1e-3, tol=1e-4),
    "depthwise": Case(depthwise_net, depthwise_ref,
                      TrainConfig(optimizer="adamw", weight_decay=0.05, label_smoothing=0.1), lr=1e-2, tol=1e-4),
    "inverted_residual": Case(inverted_residual_net, inverted_residual_ref,
                              TrainConfig(optimizer="sgd", momentum=0.9, weight_decay=4e-5), lr=0.1, tol=1e-4),
    "bottleneck": Case(bottleneck_net, bottleneck_ref,
                       TrainConfig(optimizer="adam", weight_decay=1e-4, clip_norm=0.5), lr=1e-2, tol=1e-4),
    "mobilenet_v3": Case(mobilenet_v3_net, mobilenet_v3_ref,
                         TrainConfig(optimizer="rmsprop", weight_decay=1e-5, label_smoothing=0.1), lr=1e-3, tol=1e-4),
    "fused_mb_conv_and_uib": Case(fused_uib_net, fused_uib_ref,
                                  TrainConfig(optimizer="sgd", momentum=0.9, weight_decay=1e-4), lr=0.1, tol=1e-4),
    "convnext": Case(convnext_net, convnext_ref,
                     TrainConfig(optimizer="adamw", weight_decay=0.05, label_smoothing=0.1), lr=5e-3, tol=1e-4),
    "layer_norm": Case(layer_norm_net, layer_norm_ref, TrainConfig(optimizer="rmsprop", label_smoothing=0.1),
                       lr=1e-3, tol=1e-4),
    "attention": Case(attention_net, attention_ref,
                      TrainConfig(optimizer="adamw", weight_decay=0.05, label_smoothing=0.1, clip_norm=1.0),
                      lr=5e-3, tol=1e-4),
    "max_pool_ties": Case(max_pool_net, max_pool_ref, TrainConfig(optimizer="sgd", momentum=0.9, label_smoothing=0.1),
                          lr=0.1, tol=1e-3, images=tied_images),
}


def run_case(case: Case, seed: int = 0) -> dict:
    """Two train steps of gir, on IREE and on the JAX backend, and two of the reference, each chain
    from the same initial parameters and state; the step-2 call's `loss` is the loss at the
    parameters step 1 made."""
    net = case.net()
    train_step = build_train_step(net, case.config)
    image = case.image if net.image_sized else None   # fixed-size nets take no image
    mod = lower_graph(train_step.graph, net.binding(batch=case.batch, image=image), "train_step", net.constraints)
    init = init_params(mod.primitive, seed)
    rng = np.random.default_rng(seed + 1)
    images = case.images(rng, tuple(next(v for v in mod.primitive.inputs if v.name == "images").type.shape))
    labels = rng.integers(0, K, case.batch).astype(np.int32)
    params = {v.name: init[v.name] for v in mod.primitive.inputs if v.role == "param"}
    state = {v.name: init[v.name] for v in mod.primitive.inputs if v.role == "state"}
    carried = (*params, *state)

    def feed(vals: dict, t: int) -> dict:
        return {**vals, "images": images, "labels": labels, "lr": np.float32(case.lr), "step": np.int32(t)}

    session = IreeSession(compile_text(mod.text))
    in_names, out_names = [v.name for v in mod.primitive.inputs], list(mod.primitive.outputs)

    def iree_step(vals: dict, t: int) -> dict:
        inp = feed(vals, t)
        return dict(zip(out_names, session.call_numpy("train_step", *[inp[k] for k in in_names])))

    jax_step = compile_jax(mod.graph)  # the layer-level graph through the JAX rules; IREE runs the decomposition

    result = {"params0": params, "images": images}
    for backend, run in (("iree", iree_step), ("jax", lambda vals, t: jax_step(feed(vals, t)))):
        one = run({**params, **state}, 1)
        two = run({k: one[k] for k in carried}, 2)
        result[backend] = (one, two)
    ref_step = make_ref_step(case.fwd, case.config)
    lr = np.float32(case.lr)
    r1 = ref_step(params, state, images, labels, lr, np.float32(1))
    r2 = ref_step(r1["params"], r1["state"], images, labels, lr, np.float32(2))
    result["ref"] = tuple(jax.tree_util.tree_map(np.asarray, r) for r in (r1, r2))
    # Step 2 of the reference from each backend's step-1 state, to check step 2 itself (bias correction
    # at t = 2, accumulated slots) without the two chains' arbitrary Adam/RMSProp signs (see measure).
    for backend in ("iree", "jax"):
        one = result[backend][0]
        r = ref_step({k: one[k] for k in params}, {k: one[k] for k in state}, images, labels, lr, np.float32(2))
        result["ref2", backend] = jax.tree_util.tree_map(np.asarray, r)
    return result


def _rel(a, b, floor: float = 0.0) -> float:
    """max |a - b| relative to max |b|, or to `floor` when that is larger (exact zero if both are zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not b.size:
        return 0.0
    scale = max(float(np.max(np.abs(b))), floor)
    err = float(np.max(np.abs(a - b)))
    return err / scale if scale > 0 else err


FLOOR = 1e-2
"""Tensors are compared relative to their own largest entry, but never to less than FLOOR times the
largest entry of their kind over the whole net: some gradients are zero in exact arithmetic (a BN
beta whose output feeds another BN through a 1x1 conv, the key part of a qkv bias under softmax) and
are pure rounding in every implementation."""


def _family(tensors: dict) -> float:
    return max([float(np.max(np.abs(v))) for v in tensors.values()] or [0.0])


def measure(case: Case, res: dict) -> dict:
    """The differences the test asserts on: per backend, for step 1 (against the reference step from
    the same initialization) and step 2 (against the reference step from that backend's step-1
    state), and `loss2`, the issue's oracle: the loss at the parameters gir's step 1 made against the
    loss at the parameters the reference's step 1 made."""
    ref1, ref2 = res["ref"]
    out: dict = {"masked": 0}
    for backend in ("iree", "jax"):
        got1, got2 = res[backend]
        out[backend, "loss2"] = abs(float(got2["loss"]) - float(ref2["loss"]))
        for t, got, ref, before in ((1, got1, ref1, res["params0"]), (2, got2, res["ref2", backend], got1)):
            ref_delta = {k: ref["params"][k] - before[k] for k in res["params0"]}
            # Adam and RMSProp steps are normalized by the gradient's size: where the gradients seen so
            # far are at rounding level, the step's sign and size are arbitrary, and where they are
            # small, rounding in g is amplified by lr / |g|. Entries whose gradients stay below 1% of
            # their tensor's largest, or 0.01% of the net's, are left out of the update comparison
            # (they stay in the slot comparison, which is polynomial in g).
            if case.config.optimizer == "sgd":
                keep = {k: np.ones(d.shape, bool) for k, d in ref_delta.items()}
            else:
                seen = {k: np.maximum(np.abs(ref1["grads"][k]), np.abs(ref["grads"][k])) for k in ref_delta}
                keep = {k: (g > 1e-2 * g.max()) & (g > 1e-4 * _family(seen)) for k, g in seen.items()}
                out["masked"] = max(out["masked"], sum(int((~m).sum()) for m in keep.values()) /
                                    sum(m.size for m in keep.values()))
            slots = {s: {k: v for k, v in ref["state"].items() if k.startswith(f"{s}:")}
                     for s in SLOTS[case.config.optimizer]}
            running = {k: v for k, v in ref["state"].items() if ":" not in k}
            means = {p: mean for p, (mean, _) in ref["stats"].items()}
            delta_floor, run_floor, mean_floor = (FLOOR * _family(d) for d in (ref_delta, running, means))
            m = {
                "loss": abs(float(got["loss"]) - float(ref["loss"])),
                "logits": _rel(got["logits"], ref["logits"]),
                "update": max(_rel((got[k] - before[k])[keep[k]], d[keep[k]], delta_floor)
                              for k, d in ref_delta.items()),
                "slots": max(_rel(got[k], v, FLOOR * _family(d)) for d in slots.values() for k, v in d.items()),
                "running": max([_rel(got[k], v, run_floor) for k, v in running.items()] or [0.0]),
                "bn_stats": max([max(_rel(got[f"bn_mean:{p}"], mean, mean_floor), _rel(got[f"bn_var:{p}"], var))
                                 for p, (mean, var) in ref["stats"].items()] or [0.0]),
            }
            if case.config.clip_norm:
                m["grad_norm"] = abs(float(got["grad_norm"]) / float(ref["grad_norm"]) - 1)
            out[backend, t] = m
    return out


# ---- the tests -------------------------------------------------------------------------------

def _tied_windows(res: dict) -> float:
    """The fraction of pool1's 4x4 windows (at the initial parameters) whose positive max is tied."""
    params = {k: jnp.asarray(v) for k, v in res["params0"].items()}
    a = np.asarray(jax.nn.relu(Ref(params).conv("c1", jnp.asarray(res["images"]))))
    n, c, h, w = a.shape
    win = a.reshape(n, c, h // 4, 4, w // 4, 4).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 4, w // 4, 16)
    top = win.max(axis=-1)
    return float((((win == top[..., None]).sum(axis=-1) > 1) & (top > 0)).mean())


@pytest.mark.parametrize("name", list(CASES))
def test_one_step_matches_jax_grad_reference(name):
    case = CASES[name]
    res = run_case(case)
    diffs = measure(case, res)
    ref1, ref2 = res["ref"]
    # step 1 must move the loss by much more than the tolerance, or the step-2 check is vacuous
    assert abs(float(ref2["loss"]) - float(ref1["loss"])) > 20 * case.tol, (name, ref1["loss"], ref2["loss"])
    if case.images is tied_images:
        assert _tied_windows(res) > 0.2  # about 40% of the windows have a tied positive max
    for backend in ("iree", "jax"):
        assert diffs[backend, "loss2"] <= case.tol, (name, backend, diffs[backend, "loss2"])
        for t in (1, 2):
            d = diffs[backend, t]
            where = f"{name} on {backend}, step {t}: {d}"
            assert d["loss"] <= case.tol, where
            assert d["logits"] <= 1e-5, where
            assert d["bn_stats"] <= 1e-4, where
            assert d["running"] <= 1e-4, where
            assert d["slots"] <= 2e-4, where
            assert d["update"] <= 1e-3, where
            if "grad_norm" in d:
                assert d["grad_norm"] <= 1e-5, where
