"""Optimizer updates as graph nodes, one rule per optimizer: each names its state slots and emits,
for one parameter, the new parameter and the new slot values. Weight decay applies to every parameter
(coupled L2 for sgd, adam and rmsprop; decoupled for adamw)."""
from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from gir.ir.dtypes import DType
from gir.ir.graph import Value
from gir.shapes.emit import Emitter
from gir.train.config import TrainConfig


@attrs.frozen
class Hyper:
    """Per-step scalars shared by every parameter's update: the learning rate and Adam's bias corrections."""
    lr: Value
    correction1: Value | None = None   # 1 / (1 - beta1^t)
    correction2: Value | None = None   # 1 / (1 - beta2^t)


Update = Callable[[Emitter, TrainConfig, Hyper, Value, Value, tuple[Value, ...]], tuple[Value, tuple[Value, ...]]]


@attrs.frozen
class Optimizer:
    slots: tuple[str, ...]
    update: Update


def _scalar(e: Emitter, s: Value, like: Value) -> Value:
    return e.bcast(s, like.type.shape, ())


def _coupled_decay(e: Emitter, c: TrainConfig, p: Value, g: Value) -> Value:
    return e.add(g, e.mul_scalar(p, c.weight_decay)) if c.weight_decay else g


def _sgd(e: Emitter, c: TrainConfig, h: Hyper, p: Value, g: Value, state: tuple[Value, ...]):
    """v = momentum * v + g; p = p - lr * v (PyTorch's SGD with momentum)."""
    (v,) = state
    g = _coupled_decay(e, c, p, g)
    v = e.add(e.mul_scalar(v, c.momentum), g)
    return e.sub(p, e.mul(_scalar(e, h.lr, p), v)), (v,)


def _adam_step(e: Emitter, c: TrainConfig, h: Hyper, p: Value, g: Value, state: tuple[Value, ...]):
    m, v = state
    m = e.add(e.mul_scalar(m, c.beta1), e.mul_scalar(g, 1 - c.beta1))
    v = e.add(e.mul_scalar(v, c.beta2), e.mul_scalar(e.mul(g, g), 1 - c.beta2))
    mhat = e.mul(m, _scalar(e, h.correction1, p))
    vhat = e.mul(v, _scalar(e, h.correction2, p))
    return e.div(mhat, e.add(e.op("sqrt", vhat), e.const(c.eps, p))), (m, v)


def _adam(e: Emitter, c: TrainConfig, h: Hyper, p: Value, g: Value, state: tuple[Value, ...]):
    """Adam with bias correction; weight decay added to the gradient (L2)."""
    d, state = _adam_step(e, c, h, p, _coupled_decay(e, c, p, g), state)
    return e.sub(p, e.mul(_scalar(e, h.lr, p), d)), state


def _adamw(e: Emitter, c: TrainConfig, h: Hyper, p: Value, g: Value, state: tuple[Value, ...]):
    """AdamW: p = p - lr * (adam direction + weight_decay * p), decay decoupled from the moments."""
    d, state = _adam_step(e, c, h, p, g, state)
    if c.weight_decay:
        d = e.add(d, e.mul_scalar(p, c.weight_decay))
    return e.sub(p, e.mul(_scalar(e, h.lr, p), d)), state


def _rmsprop(e: Emitter, c: TrainConfig, h: Hyper, p: Value, g: Value, state: tuple[Value, ...]):
    """s = rho * s + (1 - rho) g^2; p = p - lr * g / (sqrt(s) + eps)."""
    (s,) = state
    g = _coupled_decay(e, c, p, g)
    s = e.add(e.mul_scalar(s, c.rms_decay), e.mul_scalar(e.mul(g, g), 1 - c.rms_decay))
    return e.sub(p, e.mul(_scalar(e, h.lr, p), e.div(g, e.add(e.op("sqrt", s), e.const(c.eps, p))))), (s,)


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer(("momentum",), _sgd),
    "adam": Optimizer(("adam_m", "adam_v"), _adam),
    "adamw": Optimizer(("adam_m", "adam_v"), _adamw),
    "rmsprop": Optimizer(("rms",), _rmsprop),
}


def bias_corrections(e: Emitter, c: TrainConfig, step: Value, dtype: DType = DType.f32) -> tuple[Value, Value]:
    """1 / (1 - beta^t) for both betas in `dtype` (the parameters'), with t the (1-based, i32) step:
    beta^t = exp(t * ln beta)."""
    t = e.convert(step, dtype)

    def corr(beta: float) -> Value:
        power = e.op("exp", e.mul_scalar(t, math.log(beta)))
        return e.div(e.scalar(1.0, dtype), e.sub(e.scalar(1.0, dtype), power))

    return corr(c.beta1), corr(c.beta2)


def clip_by_global_norm(e: Emitter, grads: list[Value], clip: float) -> tuple[list[Value], Value]:
    """Scales every gradient by clip / max(norm, clip), norm the global L2 norm; returns the norm too."""
    sq = None
    for g in grads:
        s = e.reduce(e.mul(g, g), "sum", tuple(range(g.type.rank)))
        sq = s if sq is None else e.add(sq, s)
    norm = e.op("sqrt", sq)
    scale = e.div(e.scalar(clip), e.op("maximum", norm, e.scalar(clip)))
    return [e.mul(g, _scalar(e, scale, g)) for g in grads], norm
