"""The train step as one graph: forward (train-mode BN), label-smoothed cross-entropy, the backward
pass from registered adjoints, optional global-norm clipping and the optimizer update (which reads large
gradients through an optimization barrier, LARGE_GRADIENT).

Inputs: parameters, optimizer state (`<slot>:<param>`, zeros at first), `images` (or i32 `tokens`),
`labels` ([N], or [N, T] for per-token logits), `lr` (f32) and `step` (i32, 1 for the first step).
Outputs: `loss`, `logits`, `bn_mean:<path>` and `bn_var:<path>` per BN layer (biased batch variance), `grad_norm`
when clipping, and for every parameter and state input an output of the same name holding its next value. BN running
statistics are state too: the step updates them, r = (1 - momentum) r + momentum s, with the unbiased batch variance
as PyTorch does, so they never leave the device.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import attrs
import sympy

from gir.autodiff import Backward, vjp
from gir.ir.dtypes import DType
from gir.ir.graph import Graph, Init, Loc, Value
from gir.ir.types import TensorType
from gir.lower.pipeline import LoweredModule, lower_graph
from gir.nn.builder import STEP
from gir.nn.net import Net
from gir.rewrite import Firing, passes_for
from gir.shapes.emit import Emitter
from gir.train.config import TrainConfig
from gir.train.optim import OPTIMIZERS, Hyper, bias_corrections, clip_by_global_norm


LARGE_GRADIENT = 2**19
"""A gradient of this many elements or more reaches the optimizer through an optimization barrier. Without it IREE
fuses the weight gradient's matmul with the parameter's update (AdamW's three outputs) into one dispatch that ran up to
25x slower than the two apart (ConvNeXt-T b64@32: 54 ms a call for a 768x3072 weight against about 2 and 5 ms; the
step 2-3x faster with barriers). Below it the fused dispatch is no slower, and a barrier on every gradient made the
MLP's step and EfficientNetV2-S's about 5-20% slower, its hundreds of small updates dispatches of their own
(docs/performance.md)."""


def walled(e: Emitter, grad: Value) -> Value:
    """`grad` as the optimizer reads it: through a barrier when it has LARGE_GRADIENT elements or more."""
    return e.op("optimization_barrier", grad) if math.prod(grad.type.shape) >= LARGE_GRADIENT else grad


@attrs.frozen
class TrainStep:
    """The train-step graph and what built it (the backward record, for invariant checks)."""
    graph: Graph
    backward: Backward
    forward_nodes: int


def build_train_step(net: Net, config: TrainConfig) -> TrainStep:
    g = net.build(mode="train", loss=True, label_smoothing=config.label_smoothing, seed=config.seed)
    g.name = f"{net.name}_train_step"
    forward_nodes = len(g.nodes)
    params = g.params
    seed = Emitter(g, Loc(path="loss"), None, net.constraints).const(1.0, g.outputs["loss"])
    back = vjp(g, {"loss": seed}, params, net.constraints)
    opt = OPTIMIZERS[config.optimizer]
    lr = g.add_input("lr", TensorType((), net.dtype), "hyper")
    step = g.input(STEP) if any(v.name == STEP for v in g.inputs) else g.add_input(STEP, TensorType((), DType.i32),
                                                                                     "hyper")
    e = Emitter(g, Loc(path="optimizer"), None, net.constraints)
    grads = [e.zeros(p) if back.grads[p] is None else walled(e, back.grads[p]) for p in params]
    if config.clip_norm:
        grads, norm = clip_by_global_norm(e, grads, config.clip_norm)
        g.set_output("grad_norm", norm)
    hyper = Hyper(lr, *bias_corrections(e, config, step, net.dtype)) if "adam_m" in opt.slots else Hyper(lr)
    for p, grad in zip(params, grads):
        state = tuple(g.add_input(f"{slot}:{p.name}", p.type, "state", Init("zeros")) for slot in opt.slots)
        new_p, new_state = opt.update(e.at(Loc(path=f"optimizer.{p.name}"), None), config, hyper, p, grad, state)
        g.set_output(p.name, new_p)
        for s, new in zip(state, new_state):
            g.set_output(s.name, new)
    _update_running_stats(g, net)
    return TrainStep(g, back, forward_nodes)


def _update_running_stats(g: Graph, net: Net) -> None:
    names = {v.name: v for v in g.inputs}
    for key in [k for k in g.outputs if k.startswith("bn_mean:")]:
        path = key.split(":", 1)[1]
        mean, var = g.outputs[key], g.outputs[f"bn_var:{path}"]
        bn = mean.producer
        x = bn.inputs[0]
        count = math.prod(x.type.shape[d] for d in range(x.type.rank) if d != 1)
        e = Emitter(g, bn.loc, None, net.constraints)
        # n/(n-1), a number once count is bound; a single value per channel has no spread to correct
        unbiased = e.mul_scalar(var, sympy.sympify(count) / sympy.Max(count - 1, 1))
        for stat, batch in (("running_mean", mean), ("running_var", unbiased)):
            r = names.get(f"{path}.{stat}")
            if r is not None:
                m = bn.attrs.momentum
                g.set_output(r.name, e.add(e.mul_scalar(r, 1 - m), e.mul_scalar(batch, m)))


def lower_train_step(net: Net, config: TrainConfig, batch: int | None = None, image: int | None = None,
                     check: bool = True, passes: str | Iterable[str] = "default",
                     trace: list[Firing] | None = None, seq: int | None = None) -> LoweredModule:
    """The `train_step` module at a concrete batch and image size (or sequence length `seq`, T; the net's
    default size when None), with `passes` plus the config's bf16 policy."""
    names = passes_for(passes, bf16=config.bf16, bf16_conv=config.bf16_conv)
    return lower_graph(build_train_step(net, config).graph, net.binding(batch=batch, image=image, seq=seq),
                       "train_step", net.constraints, check=check, passes=names, trace=trace)
