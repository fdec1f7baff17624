"""The PyTorch eager peer of any gir net: the net's layer-level train-mode forward graph
(`net.build(mode="train", loss=True)`, specialized to one batch and image size) run op by op with
torch / torch.nn.functional calls, differentiated by autograd and updated by torch.optim.

So every net in nets/ has a PyTorch version with the same layers, the same FLOPs and the same
initial values (the names and arrays of `gir.nn.params.init_params`), written once instead of once
per net. One rule per op in `TORCH_RULES` (as `JAX_RULES` in gir/lower/jax_backend.py); each does
what a PyTorch user's module would: batch norm is `F.batch_norm(training=True)` updating its running
statistics in place (nn.BatchNorm2d), attention is `F.scaled_dot_product_attention`, the loss is
`F.cross_entropy(label_smoothing=...)`. Dropout and drop path draw their masks with gir's own counter-based
generator (threefry2x32, gir/lower/decompose.py, run op by op here), so PyTorch drops the same units as IREE and
JAX and the three losses stay comparable; run op by op that costs far more than a PyTorch user's dropout, so
`native_random` switches to masks from torch's own generator for timing. Where gir's 'same' padding is asymmetric (XLA SAME with
stride 2), the input is padded with `F.pad` first. The optimizer is torch.optim's for the config
(SGD with momentum, Adam, AdamW, RMSprop), with gir's math (gir/train/optim.py): weight decay on
every parameter, RMSprop without momentum, global-norm clipping by `clip_grad_norm_`.

`TorchGraphBackend` has the interface of gir.train.backend's IreeBackend and JaxBackend (`load` and
`step`), so bench/catalogue.py steps all three alike. PyTorch is the `bench` extra.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from gir.ir import opdefs as od
from gir.ir.dtypes import DType
from gir.ir.graph import Graph, Node
from gir.ir.types import TensorType
from gir.lower.decompose import DECOMPOSITIONS
from gir.nn.builder import STEP
from gir.ir.ops import rule_registrar
from gir.nn.net import Net
from gir.shapes.emit import Emitter
from gir.shapes.padding import explicit_pads
from gir.shapes.specialize import specialize
from gir.train.backend import StepResult
from gir.train.config import TrainConfig

TORCH_RULES: dict[str, Callable] = {}


torch_rule = rule_registrar(TORCH_RULES, "PyTorch")
"""`@torch_rule("op", ...)` files `fn(attrs, *tensors)` as the PyTorch rule of each op."""


# ---- elementwise ops, and the primitives layer graphs use -----------------------------------

_UNARY = {"negate": torch.neg, "exp": torch.exp, "log": torch.log, "tanh": torch.tanh, "logistic": torch.sigmoid,
          "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "abs": torch.abs, "sine": torch.sin, "cosine": torch.cos,
          "relu": F.relu, "relu6": F.relu6, "swish": F.silu, "hard_swish": F.hardswish, "hard_sigmoid": F.hardsigmoid,
          "gelu": functools.partial(F.gelu, approximate="tanh")}
_BINARY = {"add": torch.add, "subtract": torch.sub, "multiply": torch.mul, "divide": torch.div,
           "maximum": torch.maximum, "minimum": torch.minimum}
for _name, _fn in _UNARY.items():
    TORCH_RULES[_name] = functools.partial(lambda fn, a, x: fn(x), _fn)
for _name, _fn in _BINARY.items():
    TORCH_RULES[_name] = functools.partial(lambda fn, a, x, y: fn(x, y), _fn)


TORCH_DTYPES = {DType.f32: torch.float32, DType.f64: torch.float64, DType.bf16: torch.bfloat16,
                DType.i32: torch.int32, DType.i1: torch.bool}
_COMPARE = {"EQ": torch.eq, "NE": torch.ne, "LT": torch.lt, "LE": torch.le, "GT": torch.gt, "GE": torch.ge}


@torch_rule("constant")
def _constant(a: od.ConstantAttrs):
    return torch.full(tuple(a.type.shape), a.value, dtype=TORCH_DTYPES[a.type.dtype])


@torch_rule("iota")
def _iota(a: od.IotaAttrs):
    shape = tuple(a.type.shape)
    along = [1] * len(shape)
    along[a.dim] = shape[a.dim]
    return torch.arange(shape[a.dim], dtype=TORCH_DTYPES[a.type.dtype]).reshape(along).expand(shape)


@torch_rule("convert")
def _convert(a: od.ConvertAttrs, x):
    return x.to(TORCH_DTYPES[a.dtype])


@torch_rule("compare")
def _compare(a: od.CompareAttrs, x, y):
    return _COMPARE[a.direction](x, y)


@torch_rule("select")
def _select(a, pred, x, y):
    return torch.where(pred, x, y)


@torch_rule("xor")
def _xor(a, x, y):
    return torch.bitwise_xor(x, y)


@torch_rule("or")
def _or(a, x, y):
    return torch.bitwise_or(x, y)


@torch_rule("shift_left")
def _shift_left(a, x, y):
    return torch.bitwise_left_shift(x, y)


@torch_rule("shift_right_logical")
def _shift_right_logical(a, x, y):
    """i32 read as 32 unsigned bits: shifted in int64, wrapped back."""
    return torch.bitwise_right_shift(x.to(torch.int64) & 0xFFFFFFFF, y.to(torch.int64)).to(torch.int32)


@functools.cache
def _random_bits_graph(a: od.RandomAttrs) -> Graph:
    """gir's decomposition of random_bits (threefry2x32 as xor, shifts and wrapping adds) as a graph of its own."""
    g = Graph("random_bits")
    key, step = (g.add_input(name, TensorType((), DType.i32), "data") for name in ("key", "step"))
    g.set_output("bits", DECOMPOSITIONS["random_bits"](Emitter(g), a, key, step))
    return g


@torch_rule("random_bits")
def _random_bits(a: od.RandomAttrs, key, step):
    """The same bits IREE and JAX draw for this key, step and salt."""
    g = _random_bits_graph(a)
    env = run_nodes(g.nodes, {g.inputs[0].id: key, g.inputs[1].id: step})
    return env[g.outputs["bits"].id]


@torch_rule("broadcast_in_dim")
def _broadcast_in_dim(a: od.BroadcastAttrs, x):
    """Operand dim i goes to result dim dims[i]: a view with size-1 dims, expanded (no copy)."""
    shape = [1] * len(a.shape)
    for i, d in enumerate(a.dims):
        shape[d] = x.shape[i]
    return x.reshape(shape).expand(*a.shape)


@torch_rule("reshape")
def _reshape(a: od.ReshapeAttrs, x):
    return x.reshape(a.shape)


@torch_rule("transpose")
def _transpose(a: od.TransposeAttrs, x):
    return x.permute(a.perm)


@torch_rule("slice")
def _slice(a: od.SliceAttrs, x):
    return x[tuple(slice(lo, hi, st) for lo, hi, st in zip(a.start, a.limit, a.strides))]


@torch_rule("concatenate")
def _concatenate(a: od.ConcatAttrs, *xs):
    return torch.cat(xs, a.dim)


@torch_rule("take")
def _take(a, table, ids):
    """An embedding lookup (F.embedding), ids clamped into the table as StableHLO's gather does."""
    return F.embedding(ids.long().clamp(0, table.shape[0] - 1), table)


@torch_rule("scatter_add")
def _scatter_add(a, operand, ids, updates):
    """index_add of the update rows at their ids (gir's graphs use it only in adjoints, which autograd replaces)."""
    return operand.index_add(0, ids.reshape(-1).long(), updates.reshape(-1, operand.shape[1]))


@torch_rule("reduce")
def _reduce(a: od.ReduceAttrs, x):
    return {"sum": torch.sum, "max": torch.amax, "min": torch.amin}[a.kind](x, a.dims)


# ---- layer ops ---------------------------------------------------------------------------------

@functools.cache
def _pads(padding, sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
          dilation: tuple[int, ...] = (1, 1)) -> tuple[tuple[int, int], ...]:
    """gir's padding policy as (lo, hi) per spatial dim (cached: the same layer asks every step)."""
    return tuple((int(lo), int(hi)) for lo, hi in explicit_pads(padding, sizes, kernel, stride, dilation))


def _symmetric(x, pads: tuple[tuple[int, int], ...], value: float = 0.0):
    """(x padded where the padding is asymmetric, the symmetric padding left for the op itself)."""
    if all(lo == hi for lo, hi in pads):
        return x, tuple(lo for lo, _ in pads)
    return F.pad(x, [p for lo_hi in reversed(pads) for p in lo_hi], value=value), (0,) * len(pads)


def _conv(a: od.ConvAttrs, x, w, groups: int):
    pads = _pads(a.padding, tuple(x.shape[2:]), tuple(w.shape[2:]), a.stride, a.dilation)
    x, pad = _symmetric(x, pads)
    return F.conv2d(x, w, None, a.stride, pad, a.dilation, groups)


@torch_rule("conv2d")
def _conv2d(a: od.ConvAttrs, x, w):
    return _conv(a, x, w, 1)


@torch_rule("depthwise_conv2d")
def _depthwise_conv2d(a: od.ConvAttrs, x, w):
    return _conv(a, x, w, x.shape[1])


@torch_rule("dense")
def _dense(a, x, w):
    return torch.matmul(x, w)


@torch_rule("bias_add")
def _bias_add(a: od.AxisAttrs, x, b):
    shape = [1] * x.dim()
    shape[a.axis] = -1
    return x + b.view(shape)


@torch_rule("batch_norm")
def _batch_norm(a: od.BatchNormAttrs, x, gamma, beta, running_mean=None, running_var=None):
    """nn.BatchNorm's F.batch_norm; in training it updates the running statistics in place (the
    step's `bn_mean`/`bn_var` outputs are not computed: nothing on the loss's path reads them)."""
    y = F.batch_norm(x, running_mean, running_var, gamma, beta, a.training, a.momentum, a.eps)
    return (y, None, None) if a.training else y


@torch_rule("layer_norm")
def _layer_norm(a: od.LayerNormAttrs, x, gamma, beta):
    return F.layer_norm(x, x.shape[-1:], gamma, beta, a.eps)


@torch_rule("max_pool")
def _max_pool(a: od.PoolAttrs, x):
    x, pad = _symmetric(x, _pads(a.padding, tuple(x.shape[2:]), a.window, a.stride), -math.inf)
    return F.max_pool2d(x, a.window, a.stride, pad)


@torch_rule("avg_pool")
def _avg_pool(a: od.PoolAttrs, x):
    """Padding not counted: count_include_pad=False, or for asymmetric padding the zero-padded mean
    over the mean of a padded field of ones."""
    pads = _pads(a.padding, tuple(x.shape[2:]), a.window, a.stride)
    padded, pad = _symmetric(x, pads)
    if padded is x:
        return F.avg_pool2d(x, a.window, a.stride, pad, count_include_pad=False)
    ones = _symmetric(torch.ones_like(x[:1, :1]), pads)[0]
    return F.avg_pool2d(padded, a.window, a.stride) / F.avg_pool2d(ones, a.window, a.stride)


@torch_rule("global_avg_pool")
def _global_avg_pool(a, x):
    return x.mean((2, 3))


@torch_rule("softmax")
def _softmax(a: od.AxisAttrs, x):
    return torch.softmax(x, a.axis)


@torch_rule("softmax_cross_entropy")
def _softmax_cross_entropy(a: od.XentAttrs, logits, labels):
    """F.cross_entropy over every position: logits [..., K] flattened to rows, labels [...] to a vector."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).long(),
                           label_smoothing=a.label_smoothing)


@torch_rule("attention")
def _attention(a: od.AttentionAttrs, q, k, v):
    """Heads split as [N, h, T, D/h], F.scaled_dot_product_attention (scale 1/sqrt(D/h), is_causal as the op), merged
    back."""
    n, t, d = q.shape
    q, k, v = (z.view(n, t, a.heads, d // a.heads).transpose(1, 2) for z in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, is_causal=a.causal).transpose(1, 2).reshape(n, t, d)


# ---- the optimizers ----------------------------------------------------------------------------

OPTIMIZERS: dict[str, Callable[[list[torch.Tensor], TrainConfig], torch.optim.Optimizer]] = {
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.learning_rate, momentum=c.momentum, weight_decay=c.weight_decay),
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.learning_rate, betas=(c.beta1, c.beta2), eps=c.eps,
                                          weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.learning_rate, betas=(c.beta1, c.beta2), eps=c.eps,
                                            weight_decay=c.weight_decay),
    "rmsprop": lambda p, c: torch.optim.RMSprop(p, lr=c.learning_rate, alpha=c.rms_decay, eps=c.eps,
                                                weight_decay=c.weight_decay),
}


# ---- the graph as a PyTorch train step ---------------------------------------------------------

def run_nodes(nodes, env: dict[int, torch.Tensor], extra: Callable[[Node], tuple] = lambda node: (),
              rules: Mapping[str, Callable] = TORCH_RULES) -> dict:
    """`env` (value id -> tensor) with every node's outputs added, node by node through `rules`."""
    for node in nodes:
        out = rules[node.op](node.attrs, *(env[v.id] for v in node.inputs), *extra(node))
        env.update(zip((v.id for v in node.outputs), out if isinstance(out, tuple) else (out,)))
    return env


class TorchGraphBackend:
    """The net's train step in PyTorch eager at one batch and image size (or sequence length); parameters are leaf tensors
    (requires_grad), BN running statistics plain tensors updated in place."""

    def __init__(self, net: Net, config: TrainConfig, batch: int, image: int | None, seq: int | None = None):
        g = specialize(net.build(mode="train", loss=True, label_smoothing=config.label_smoothing),
                       net.binding(batch=batch, image=image, seq=seq), net.constraints)
        running = {g.outputs[k].producer: k.split(":", 1)[1] for k in g.outputs if k.startswith("bn_mean:")}
        g.outputs = {"loss": g.outputs["loss"]}  # run only what the loss needs
        self.nodes = g.live_nodes()
        missing = sorted({n.op for n in self.nodes} - set(TORCH_RULES))
        if missing:
            raise NotImplementedError(f"net {net.name!r}: no PyTorch rule for op{'s' if len(missing) > 1 else ''} "
                                      f"{', '.join(missing)}; add one to TORCH_RULES in bench/torch_graph.py")
        self.graph, self.config, self.data = g, config, net.input_name
        self.running_stats = {node: (f"{path}.running_mean", f"{path}.running_var") for node, path in running.items()}
        self.tensors: dict[str, torch.Tensor] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.native_random = False   # True: masks from torch's generator, at the cost of nn.Dropout's (not gir's bits)
        self._generator = torch.Generator().manual_seed(config.seed)
        self._native_rules = {**TORCH_RULES, "random_bits": self._torch_bits}

    def _torch_bits(self, a: od.RandomAttrs, key, step):
        """32 random bits per element from torch's generator: the cost of a PyTorch user's dropout mask."""
        return torch.randint(-2**31, 2**31, tuple(a.shape), dtype=torch.int32, generator=self._generator)

    def load(self, values: Mapping[str, np.ndarray]) -> None:
        """Parameters and state from `values` by name (extra names, e.g. gir's optimizer slots, are
        ignored); the optimizer starts afresh."""
        self.tensors = {v.name: torch.tensor(np.asarray(values[v.name]), requires_grad=v.role == "param")
                        for v in self.graph.inputs if v.role in ("param", "state")}
        self.optimizer = OPTIMIZERS[self.config.optimizer]([self.tensors[v.name] for v in self.graph.params],
                                                           self.config)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, step: int = 1) -> torch.Tensor:
        """The graph's `loss`, node by node; `step` keys the random layers' masks."""
        env = {v.id: self.tensors[v.name] for v in self.graph.inputs if v.name in self.tensors}
        env[self.graph.input(self.data).id], env[self.graph.input("labels").id] = images, labels
        if any(v.name == STEP for v in self.graph.inputs):
            env[self.graph.input(STEP).id] = torch.tensor(step, dtype=torch.int32)
        rules = self._native_rules if self.native_random else TORCH_RULES
        return run_nodes(self.nodes, env, self._extra, rules)[self.graph.outputs["loss"].id]

    def _extra(self, node: Node) -> tuple[torch.Tensor, ...]:
        """A train-mode batch norm's running statistics, the buffers F.batch_norm updates."""
        names = self.running_stats.get(node)
        return tuple(self.tensors[n] for n in names) if names else ()

    def step(self, images: np.ndarray, labels: np.ndarray, lr: float, step: int) -> StepResult:
        """One train step at learning rate `lr` (`step` keys the random layers; torch.optim counts its own)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(torch.from_numpy(images), torch.from_numpy(labels), step)
        loss.backward()
        norm = None
        if self.config.clip_norm:
            norm = float(torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"],
                                                        self.config.clip_norm))
        self.optimizer.step()
        return StepResult(loss.item(), norm)
